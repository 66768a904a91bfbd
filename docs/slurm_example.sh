#!/bin/bash
# vidyn on a SLURM cluster: one torchrun per node, which starts one training process per GPU; torchrun's
# c10d rendezvous on the first node joins them (README "Scaling up"). Submit with
#   CONFIG=predict/demo OUT=runs/demo-2x4 sbatch docs/slurm_example.sh [--set key=value ...]
# Arguments after the script go to `vidyn train`. tests/engine/test_slurm_example.py runs this file on CPU
# with stand-ins for srun and scontrol (two "nodes" on 127.0.0.1).
#SBATCH --job-name=vidyn
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
set -euo pipefail

CONFIG=${CONFIG:-predict/demo}
OUT=${OUT:-runs/slurm-${SLURM_JOB_ID}}  # rank 0 writes here; use a shared filesystem to resume from it
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
PORT=${PORT:-29500}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)  # hosts the rendezvous

# --kill-on-bad-exit: a node that fails ends the job; the others also stop on their own within
# trainer.dist_timeout (600 s by default) with a one-line error naming the checkpoint to resume from.
srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:$PORT" --rdzv-id "$SLURM_JOB_ID" \
    -m vidyn train -c "$CONFIG" --out "$OUT" "$@"
