#!/usr/bin/env bash
# tests/gpu/check.sh: the GPU check of issue 8, one script on one GPU machine (< 6 minutes
# on an H200). Run it from a bundle (launch/bundle.sh):   bash BUNDLE/check.sh
# or from a checkout with a CUDA build:                  bash tests/gpu/check.sh [BUILD_DIR]
#
# Prints: the device; every CUDA op against its CPU reference (the table-driven test,
# tests/gpu/op_table.cc: error and tolerance per comparison); the attention core's path per
# shape (cuDNN SDPA's graphs built and self-checked on the device, or why not); the runtime, allocator,
# GEMM-plan and NCCL tests; the whole model on the GPU against the CPU and 200 GPU training
# steps (device_model_gpu_test); `moetrain train` of the default config on the GPU in fp32,
# bf16 and fp8 (train_gpu.sh); the GEMM benchmark table (BF16 and FP8 TFLOPS at
# DeepSeek-V3's shapes, bench/gpu/gemm_bench); and the fp32, bf16 and fp8 training steps'
# time, tokens/s and MFU (bench/gpu/device_train_bench). Exit status: 0 only if every part passed.
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
step() {  # step NAME SECONDS BINARY [ARGS...]
  local name=$1 limit=$2
  shift 2
  echo
  echo "==== $name"
  local t0=$SECONDS
  timeout "$limit" bash -c "$(declare -f run); $(declare -p here build 2>/dev/null); run $*"
  local rc=$?
  echo "---- $name: $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || failed+=("$name")
}

train_step() {  # train_step NAME SECONDS PRECISION: tests/gpu/train_gpu.sh
  local name=$1 limit=$2
  echo
  echo "==== $name"
  local t0=$SECONDS script=$here/train_gpu.sh
  [ -f "$script" ] || script=$here/tests/gpu/train_gpu.sh
  timeout "$limit" bash -c "$(declare -f run); $(declare -p here build 2>/dev/null); \
    source '$script' $3"
  local rc=$?
  echo "---- $name: $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || failed+=("$name")
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
if [ ${#failed[@]} -eq 0 ]; then
  echo "check.sh: all parts passed"
  exit 0
fi
echo "check.sh: FAILED: ${failed[*]}"
exit 1
