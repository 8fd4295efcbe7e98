#!/usr/bin/env bash
# tests/gpu/train_multi_gpu.sh: `moetrain train` on several GPUs of one machine, NCCL between
# the ranks, against the same run on one GPU. Each layout that fits the visible GPUs trains
# configs/default.yaml for a few steps on the device path (training.device=cuda):
#   dp2_ep2       2 ranks: ZeRO-1 over 2, experts split over 2 (all-to-all-v dispatch)
#   pp2           2 ranks: two pipeline stages, 1F1B (activations over NCCL send/recv)
#   pp2_dp2_ep2   4 ranks (4 GPUs or more): all three
# and passes when every run says it trained on the device over its ranks and each step's loss
# equals the one-GPU run's within a tolerance (the layouts change only the order of sums).
# One GPU: nothing to compare, so it says so and passes. tests/gpu/check.sh runs it.
#
#   train_multi_gpu.sh PRECISION [BUILD_DIR]   (fp32 | fp8), from the repository root or a
#       bundle: sourced by check.sh, with its `run`, `here` and `build` (a bundle's ranks start
#       under `run mpirun`, the bundle's Open MPI; a checkout's under the machine's mpirun),
#       or alone, with BUILD_DIR's moetrain
# MULTI_GPU_BACKEND=cpu runs the same on the CPU backend (MOETRAIN_DEVICE_BACKEND=cpu, MPI
# between the ranks, 3 short steps) with 4 ranks: how CI tests this script without a GPU.
set -uo pipefail
precision=${1:-fp32}
cpu=0
[ "${MULTI_GPU_BACKEND:-cuda}" = cpu ] && cpu=1
if ! declare -F run >/dev/null; then
  build=$(cd "${2:-build}" && pwd)
  run() {
    local b=$1
    shift
    "$build/$b" "$@"
  }
fi
if [ ! -f data/cache/brown-train.idx ]; then
  echo "data/cache/brown-* missing here: prepare it (data/prepare_brown.sh) before bundling"
  # CTest's CPU run: skipped (77) unless the corpus is required, as in CI.
  [ $cpu = 1 ] && [ "${MOETRAIN_REQUIRE_NPM_FIXTURES:-0}" != 1 ] && exit 77
  exit 1
fi
# Open MPI refuses root unless told (GPU machines and CI run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ $cpu = 1 ]; then
  gpus=4
  export MOETRAIN_DEVICE_BACKEND=cpu
  steps=3
  extra=(--set training.seq_len=32)
  tol=1e-5  # the CPU backend's layouts equal the one-process run to 1e-5 (layout tests)
else
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  steps=20
  extra=()
  # fp32: sums in another order, 20 steps on; fp8: such a change can cross an E4M3 step.
  tol=$([ "$precision" = fp32 ] && echo 2e-3 || echo 2e-2)
fi
if [ "${gpus:-0}" -lt 2 ]; then
  echo "train_multi_gpu: ${gpus:-0} GPU(s) visible: the multi-GPU layouts need 2 or more (skipped)"
  exit 0
fi
# launch NP ARGS...: NP ranks of `moetrain ARGS` (one rank: no mpirun).
launch() {
  local np=$1
  shift
  if [ "$np" = 1 ]; then
    run moetrain "$@"
  elif [ -n "${here:-}" ] && [ -f "$here/run" ]; then
    run mpirun -n "$np" --oversubscribe moetrain "$@"
  else
    mpirun -n "$np" --oversubscribe "$build/moetrain" "$@"
  fi
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# train NAME NP [--set ...]: the layout's run; its per-step losses go to $work/NAME.losses.
train() {
  local name=$1 np=$2
  shift 2
  launch "$np" train --config configs/default.yaml --set training.device=cuda \
    --set training.precision="$precision" --set training.steps=$steps \
    --set training.micro_batch_size=8 --set checkpoint.dir= --set logging.tensorboard_dir= \
    --set training.eval_interval=0 --set training.eval_batches=1 \
    --set training.generate_tokens=0 --set logging.interval=1 \
    --set logging.metrics_file="$work/$name.jsonl" "${extra[@]}" "$@" >"$work/$name.txt" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    tail -n 20 "$work/$name.txt"
    echo "FAIL: $name: moetrain exited $rc"
    return 1
  fi
  grep '^\[moetrain\] \(device\|layout\|done\)' "$work/$name.txt"
  local want="cuda"
  [ $cpu = 1 ] && want="MOETRAIN_DEVICE_BACKEND=cpu"
  grep -q "^\[moetrain\] device: .*$want" "$work/$name.txt" ||
    { echo "FAIL: $name: not on the device path ($want)"; return 1; }
  if [ "$np" -gt 1 ] && ! grep -q "^\[moetrain\] layout: .* over $np ranks" "$work/$name.txt"; then
    echo "FAIL: $name: not over $np ranks"
    return 1
  fi
  grep '"tokens_per_s"' "$work/$name.jsonl" | grep -o '"loss":[-0-9.e+]*' | cut -d: -f2 \
    >"$work/$name.losses"
  [ "$(wc -l <"$work/$name.losses")" -eq "$steps" ] ||
    { echo "FAIL: $name: $(wc -l <"$work/$name.losses") logged steps, expected $steps"; return 1; }
}
fail=0
train one 1 || fail=1
layouts=("dp2_ep2 2 --set parallel.dp=2 --set parallel.ep=2" "pp2 2 --set parallel.pp=2")
[ "$gpus" -ge 4 ] &&
  layouts+=("pp2_dp2_ep2 4 --set parallel.pp=2 --set parallel.dp=2 --set parallel.ep=2")
for l in "${layouts[@]}"; do
  read -r -a a <<<"$l"
  train "${a[@]}" || { fail=1; continue; }
  [ -f "$work/one.losses" ] || continue
  # Worst relative difference of a step's loss from the one-GPU run's.
  worst=$(paste "$work/one.losses" "$work/${a[0]}.losses" |
    awk '{ d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1; r = d / (m > 1 ? m : 1);
           if (r > w) w = r } END { printf "%.3g", w }')
  if awk -v w="$worst" -v t="$tol" 'BEGIN { exit !(w <= t) }'; then
    echo "${a[0]} ($precision, ${a[1]} ranks): every step's loss within $worst of one GPU's (tolerance $tol): ok"
  else
    echo "FAIL: ${a[0]} ($precision): a step's loss differs from one GPU's by $worst (tolerance $tol)"
    paste "$work/one.losses" "$work/${a[0]}.losses" | head -n "$steps"
    fail=1
  fi
done
echo "train_multi_gpu $precision: $([ $fail -eq 0 ] && echo ok || echo FAILED)"
exit $fail
