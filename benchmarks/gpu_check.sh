#!/usr/bin/env bash
# The GPU checks of vidyn in one short run (docs/speed.md, "GPU"): every model's training step through
# `vidyn train`'s own path in 32-true and bf16-mixed, the recurrent models trained with
# task.args.compile_rollout=reduce-overhead (CUDA graphs), the side-by-side table against the reference
# code, and the recurrent steps under torch.compile with CUDA graphs beside it. Each part has its own time
# limit and log, so one that fails or runs long leaves the others' results. The whole script takes about
# 12 minutes on an H200 (compiling included); set the *_LIMIT variables to fit a shorter lease.
# Carry av, torchsde and trampoline as wheels where the machine lacks them (WHEELS).
#
#   OPENSTL=~/src/OpenSTL VID_ODE=~/src/Vid-ODE WHEELS=dir OUT=dir bash benchmarks/gpu_check.sh
#
# WHEELS (optional): a folder of wheels for packages the GPU machine lacks (e.g. torchsde, trampoline),
# installed with --no-deps into /tmp/site. Results go to $OUT (default /tmp/vidyn-gpu-check).
set -u
OUT=${OUT:-/tmp/vidyn-gpu-check}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl
fi
export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
refs=()
[ -n "${OPENSTL:-}" ] && refs+=(--openstl "$OPENSTL")
[ -n "${VID_ODE:-}" ] && refs+=(--vid-ode "$VID_ODE")

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning, torchdiffeq, torchsde, torchmetrics
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(),
      'lightning', lightning.__version__, 'torchdiffeq', torchdiffeq.__version__, 'torchmetrics',
      torchmetrics.__version__)" | tee -a "$OUT/gpu.txt"

status=0
timeout "${TRAIN_LIMIT:-240}" python3 benchmarks/bench_train_steps.py --device cuda --steps 20 --warmup 5 \
  --json "$OUT/train_steps.json" 2>&1 | grep -v "available:\|LOCAL_RANK\|^$" | tee "$OUT/train_steps.log"
status=$((status | PIPESTATUS[0]))
timeout "${COMPILED_TRAIN_LIMIT:-200}" python3 benchmarks/bench_train_steps.py --device cuda --steps 20 --warmup 5 \
  --models convlstm predrnn predrnn_v2 transformer --precisions 32-true \
  --set task.args.compile_rollout=reduce-overhead --json "$OUT/train_steps_compiled.json" 2>&1 \
  | grep -v "available:\|LOCAL_RANK\|^$" | tee "$OUT/train_steps_compiled.log"
status=$((status | PIPESTATUS[0]))
timeout "${SIDE_LIMIT:-120}" python3 benchmarks/bench_side_by_side.py --device cuda --threads 1 "${refs[@]}" \
  --steps 10 --warmup 3 2>&1 | grep -v "Warning\|warped_x\|sol_out\|return Variable" | tee "$OUT/side_by_side.log"
status=$((status | PIPESTATUS[0]))
timeout "${COMPILE_LIMIT:-150}" python3 benchmarks/bench_side_by_side.py --device cuda --threads 1 "${refs[@]}" \
  --configs small --skip-vid-ode --compile reduce-overhead --steps 10 --warmup 3 2>&1 \
  | grep -v "Warning\|warped_x\|sol_out\|return Variable" | tee "$OUT/compiled.log"
status=$((status | PIPESTATUS[0]))
timeout "${TF32_LIMIT:-90}" python3 benchmarks/bench_side_by_side.py --device cuda --threads 1 "${refs[@]}" \
  --models --no-tf32 --steps 10 --warmup 3 2>&1 | grep -v "Warning\|warped_x\|sol_out\|return Variable" \
  | tee "$OUT/vid_ode_no_tf32.log"
status=$((status | PIPESTATUS[0]))
echo "gpu_check: exit status $status (0: every part ran)"
exit $status
