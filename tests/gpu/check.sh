#!/usr/bin/env bash
# tests/gpu/check.sh: the GPU check of issue 8, one script on one GPU machine (under
# CHECK_BUDGET_S, 400 s by default, on an H200). Run it from a bundle (launch/bundle.sh):
#   bash BUNDLE/check.sh
# or from a checkout with a CUDA build:   bash tests/gpu/check.sh [BUILD_DIR]
#
# Prints: the device; every CUDA op against its CPU reference (the table-driven test,
# tests/gpu/op_table.cc: error and tolerance per comparison); the attention core's path per
# shape (cuDNN SDPA's graphs built and self-checked on the device, or why not); the runtime, allocator,
# GEMM-plan and NCCL tests; the whole model on the GPU against the CPU and 200 GPU training
# steps (device_model_gpu_test); `moetrain train` of the default config on the GPU in fp32,
# bf16 and fp8 (train_gpu.sh), and on several GPUs against one where the machine has them
# (train_multi_gpu.sh); the GEMM benchmark table (BF16 and FP8 TFLOPS at
# DeepSeek-V3's shapes, bench/gpu/gemm_bench); and the fp32, bf16 and fp8 training steps'
# time, tokens/s and MFU (bench/gpu/device_train_bench). Exit status: 0 only if every part passed.
#
# Device time is scarce (a task gets minutes, and a command that overruns loses its whole
# output), so the check has one budget: each part runs under the smaller of its own limit
# and what is left of CHECK_BUDGET_S; once less than CHECK_MIN_PART_S (20) is left, the
# parts after are reported as not run. Each part's whole output also goes to
# CHECK_LOG_DIR/NN.log (default: $OUT when set, so a device session fetches the op table's
# long listing as a file), and a summary of one line per part ends the output.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -x "$here/run" ]; then
  run() { "$here/run" "$@"; }
else
  build=$(cd "${1:-$here/../../build}" && pwd)
  run() {
    local b=$1
    shift
    local p
    for p in "$build/tests/gpu/$b" "$build/bench/gpu/$b" "$build/$b"; do
      if [ -x "$p" ]; then "$p" "$@"; return; fi
    done
    echo "check.sh: $b not built in $build" >&2
    return 127
  }
fi

# configs/ (the model test and the step benchmark read configs/*.yaml from the working dir)
if [ -d "$here/configs" ]; then cd "$here"; else cd "$here/../.."; fi
export MOETRAIN_REQUIRE_GPU=1  # the op table fails, not skips, without a device
failed=()
summary=()
budget=${CHECK_BUDGET_S:-400}
min_part=${CHECK_MIN_PART_S:-20}
log_dir=${CHECK_LOG_DIR:-${OUT:-}}
[ -z "$log_dir" ] || mkdir -p "$log_dir"
parts=0
part() {  # part NAME SECONDS COMMAND: COMMAND (a string) under the time limit and the budget
  local name=$1 limit=$2 command=$3
  local left=$((budget - SECONDS))
  parts=$((parts + 1))
  echo
  echo "==== $name"
  if [ "$left" -lt "$min_part" ]; then
    echo "---- $name: NOT RUN (${left} s of the ${budget} s budget left)"
    failed+=("$name (not run)")
    summary+=("$(printf '%-8s %4s s  %s' 'NOT RUN' - "$name")")
    return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  local t0=$SECONDS log=/dev/null
  [ -z "$log_dir" ] || log=$(printf '%s/%02d.log' "$log_dir" "$parts")
  timeout "$limit" bash -c "$(declare -f run); $(declare -p here build 2>/dev/null); $command" \
    2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]} status=ok
  if [ "$rc" -eq 124 ]; then
    status="FAILED (timed out after $limit s)"
  elif [ "$rc" -ne 0 ]; then
    status="FAILED (exit $rc)"
  fi
  echo "---- $name: $status in $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || failed+=("$name")
  summary+=("$(printf '%-8s %4d s  %s' "$([ "$rc" -eq 0 ] && echo ok || echo FAILED)" \
    $((SECONDS - t0)) "$name")")
}
step() {  # step NAME SECONDS BINARY [ARGS...]
  local name=$1 limit=$2
  shift 2
  part "$name" "$limit" "run $*"
}
train_step() {  # train_step NAME SECONDS PRECISION [SCRIPT]: tests/gpu/train_gpu.sh
  local script=$here/${4:-train_gpu.sh}
  [ -f "$script" ] || script=$here/tests/gpu/${4:-train_gpu.sh}
  part "$1" "$2" "source '$script' $3"
}

echo "==== device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
else
  echo "nvidia-smi not found"
fi

step "CUDA ops vs CPU reference (op table)" 150 ops_gpu_test
step "attention: cuDNN SDPA graphs and first-use self-check on this device" 120 \
  attention_choice_test
step "CUDA backend vs CPU backend (every kernels/backend.h op)" 120 backend_table_test
step "runtime: device, streams, events, pinned memory" 30 runtime_test
step "caching allocator bookkeeping" 30 device_allocator_test
step "GEMM plan cache keys" 30 gemm_plan_cache_test
step "NCCL communicator (one rank)" 60 communicator_nccl_test
step "whole model on the GPU vs the CPU model; 200 GPU training steps" 180 device_model_gpu_test
step "GEMM benchmark (M = 4096, DeepSeek-V3 shapes)" 120 gemm_bench --iters 30 --warmup 5
for p in fp32 bf16 fp8; do
  train_step "moetrain train configs/default.yaml on the GPU, $p (100 steps)" 90 $p
done
# Several GPUs (a machine lent with 2, 4 or 8): NCCL between the ranks, each layout's losses
# against one GPU's (tests/gpu/train_multi_gpu.sh); on one GPU it says so and passes.
for p in fp32 fp8; do
  train_step "several GPUs vs one ($p): dp2 x ep2, pp2, pp2 x dp2 x ep2" 90 $p \
    train_multi_gpu.sh
done
for p in fp32 bf16 fp8; do
  step "$p training step, default config" 45 device_train_bench --config configs/default.yaml \
    --precision $p --steps 10 --warmup 2
done
for p in bf16 fp8; do
  step "$p training step, gpu-bench-moe config (2.5B)" 90 device_train_bench \
    --config configs/gpu-bench-moe.yaml --precision $p --steps 3 --warmup 1
done

echo
echo "==== not in this check"
echo "  Speed side by side with the PyTorch eager reference: bench/gpu/run_bench.sh BUNDLE_DIR"
echo "  (docs/gpu-results.md)."

echo
echo "==== summary (${SECONDS} s of the ${budget} s budget)"
printf '%s\n' "${summary[@]}"
[ -z "$log_dir" ] || echo "  each part's output: $log_dir/NN.log, NN = its line above"
echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "check.sh: all parts passed"
  exit 0
fi
echo "check.sh: FAILED: ${#failed[@]} of $parts parts failed or were not run (the summary above)"
exit 1
