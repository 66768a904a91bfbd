#!/usr/bin/env bash
# vidyn's GPU checks (figures: docs/speed.md, "GPU"), as parts that each have a time limit and a log, so
# one that fails or runs long leaves the others' results:
#   train     every model's training step through `vidyn train`'s own path, 32-true and bf16-mixed (240 s)
#   compiled  the recurrent models trained with task.args.compile_rollout=reduce-overhead (200 s)
#   workers   three quick configs with data.num_workers=4 (90 s)
#   side      the side-by-side table against OpenSTL and the official Vid-ODE (120 s)
#   graphs    the recurrent steps under torch.compile + CUDA graphs beside OpenSTL (150 s)
#   tf32      Vid-ODE beside the official code with TF32 off (90 s)
#   vidode    Vid-ODE beside the official code as a user runs it (TF32 as torch's defaults leave it) (90 s)
#   e2e       what users run, end to end on the GPU: short `vidyn train` runs of the quick configs (validation
#             rounds, checkpoint pick, final evaluation), then `vidyn evaluate`, `generate`, `predict`,
#             `interpolate` and `classify` on the exported models (300 s)
#   sdeprompt (not in the default PARTS) the sde_video quick config trained alone for SDE_STEPS (1,400; at
#             most SDE_SECONDS, 330; fp32; its shipped evaluation after), then benchmarks/diagnose_sde_prompt.py
#             on 64 test clips; SDE_SET: extra --set options (480 s)
# The default parts together run up to ~20 minutes on an H200 (compiling included): more than one 10-minute call
# of a lent machine, so choose with PARTS (default: all but sdeprompt, in this order) and the *_LIMIT variables.
#
#   PARTS="train compiled" OPENSTL=~/src/OpenSTL VID_ODE=~/src/Vid-ODE WHEELS=dir OUT=dir \
#       bash benchmarks/gpu_check.sh
#
# WHEELS (optional): a folder of wheels for packages the GPU machine lacks (av, torchsde, trampoline),
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

quiet() { grep -v "available:\|LOCAL_RANK\|Warning\|warped_x\|sol_out\|return Variable\|^$"; }
train_steps=(python3 benchmarks/bench_train_steps.py --device cuda --steps 20 --warmup 5)
side_by_side=(python3 benchmarks/bench_side_by_side.py --device cuda --threads 1 ${refs[@]+"${refs[@]}"})

# Short runs of the quick configs: 40 steps, a validation round every 20, the shipped evaluation after.
e2e() {
  local d="$OUT/e2e" short=(--set trainer.max_steps=40 --set trainer.val_check_interval=20)
  local v=(python3 -m vidyn)
  mkdir -p "$d"
  "${v[@]}" render shapes --out "$d/clip.mp4" --frames 24 --size 64 --channels 3 || return 1
  "${v[@]}" train -c generate/ode_gan_shapes_quick --out "$d/ode_gan" "${short[@]}" \
    --set trainer.precision=32-true --set eval.max_clips=64 &&
    "${v[@]}" evaluate "$d/ode_gan" --max-clips 64 --json "$d/ode_gan_eval.json" &&
    "${v[@]}" generate "$d/ode_gan" --num-samples 4 --prompt orbit --fps 20 --out "$d/ode_gan_gen" || return 1
  "${v[@]}" train -c generate/sde_video_shapes_quick --out "$d/sde_video" "${short[@]}" \
    --set trainer.precision=bf16-mixed &&
    "${v[@]}" generate "$d/sde_video" --num-samples 4 --initial-frames "$d/clip.mp4" --out "$d/sde_gen" || return 1
  "${v[@]}" train -c predict/demo --out "$d/convlstm" "${short[@]}" \
    --set task.args.compile_rollout=reduce-overhead &&
    "${v[@]}" predict "$d/convlstm" --input "$d/clip.mp4" --steps 10 --out "$d/convlstm_pred.mp4" || return 1
  "${v[@]}" train -c interpolate/vid_ode_shapes_quick --out "$d/vid_ode" "${short[@]}" \
    --set trainer.precision=bf16-mixed &&
    "${v[@]}" interpolate "$d/vid_ode" --input "$d/clip.mp4" --factor 2 --out "$d/vid_ode_x2.mp4" || return 1
  "${v[@]}" train -c recognize/cnn_rnn_shapes_quick --out "$d/cnn_rnn" "${short[@]}" --set data.num_workers=4 &&
    "${v[@]}" classify "$d/cnn_rnn" "$d/clip.mp4"
}

sdeprompt() {
  local d="$OUT/sdeprompt"
  mkdir -p "$d"
  python3 -m vidyn train -c generate/sde_video_shapes_quick --out "$d/run" --set trainer.precision=32-true \
    --set trainer.max_steps="${SDE_STEPS:-1400}" --set trainer.max_time="${SDE_SECONDS:-330}" \
    --set trainer.num_threads=4 \
    ${SDE_SET:-} && python3 benchmarks/diagnose_sde_prompt.py "$d/run" --clips 64 --samples 4
}

status=0
for part in ${PARTS:-train compiled workers side graphs tf32 vidode e2e}; do
  case $part in
    train) timeout "${TRAIN_LIMIT:-240}" "${train_steps[@]}" --json "$OUT/train_steps.json" ;;
    compiled) timeout "${COMPILED_LIMIT:-200}" "${train_steps[@]}" --models convlstm predrnn predrnn_v2 transformer \
      --precisions 32-true --set task.args.compile_rollout=reduce-overhead --json "$OUT/compiled.json" ;;
    workers) timeout "${WORKERS_LIMIT:-90}" "${train_steps[@]}" --scales quick --models convlstm cnn_rnn ode_gan \
      --precisions 32-true --set data.num_workers=4 --json "$OUT/workers.json" ;;
    side) timeout "${SIDE_LIMIT:-120}" "${side_by_side[@]}" --steps 10 --warmup 3 ;;
    graphs) timeout "${GRAPHS_LIMIT:-150}" "${side_by_side[@]}" --configs small --skip-vid-ode \
      --compile reduce-overhead --steps 10 --warmup 3 ;;
    vidode) timeout "${VIDODE_LIMIT:-90}" "${side_by_side[@]}" --models --steps 10 --warmup 3 ;;
    e2e) export -f e2e; export OUT; timeout "${E2E_LIMIT:-300}" bash -c e2e ;;
    sdeprompt) export -f sdeprompt; export OUT; timeout "${SDEPROMPT_LIMIT:-480}" bash -c sdeprompt ;;
    tf32) timeout "${TF32_LIMIT:-90}" "${side_by_side[@]}" --models --no-tf32 --steps 10 --warmup 3 ;;
    *) echo "gpu_check: unknown part $part (train compiled workers side graphs tf32 vidode e2e sdeprompt)"; false ;;
  esac 2>&1 | quiet | tee "$OUT/$part.log"
  status=$((status | PIPESTATUS[0]))
done
echo "gpu_check: exit status $status (0: every part ran)"
exit $status
