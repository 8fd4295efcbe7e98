#!/usr/bin/env bash
# tests/pytorch/run_bench_cpu_test.sh: bench/gpu/run_bench.sh end to end on the CPU
# (BENCH_DEVICE=cpu BENCH_TINY=1), so the one-invocation GPU script is known to run before
# GPU time is spent on it. Checks: the parity step passed, the moetrain rows say NOT
# AVAILABLE here (they are measured only on a GPU, by device_train_bench), the PyTorch
# row has figures, and the table printed. gemm_bench needs a GPU and is not judged here.
#   run_bench_cpu_test.sh BUILD_DIR
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: run_bench_cpu_test.sh BUILD_DIR}
out=$(mktemp -d /tmp/run_bench_cpu_test.XXXXXX)
trap 'rm -rf "$out"' EXIT
BENCH_DEVICE=cpu BENCH_TINY=1 BENCH_STEPS=2 BENCH_WARMUP=1 PYTHON=/usr/bin/python3 \
  bash "$ROOT/bench/gpu/run_bench.sh" "$build" "$out" >"$out/stdout" 2>&1
cat "$out/stdout"
fail=0
expect() {  # expect FILE REGEX WHAT
  if grep -Eq "$2" "$1"; then echo "ok      $3"; else echo "FAILED  $3"; fail=1; fi
}
expect "$out/parity.log" "^gpu_bench_test: all checks passed" "parity step passed"
expect "$out/stdout" "^---- PyTorch reference: ok" "PyTorch step passed"
expect "$out/table.md" '^\| pytorch eager bf16 \(--tiny\) \| [0-9,]+ \| [0-9.]+% \| [0-9.]+ \|' \
  "table has the PyTorch row with tokens/s, MFU and peak memory"
for p in bf16 fp8; do
  expect "$out/table.md" "^\| moetrain $p \| (- \| - \| - \| \| NOT AVAILABLE|[0-9,]+ \| [0-9.]+%)" \
    "table has the moetrain $p row, NOT AVAILABLE or measured"
done
expect "$out/table.md" '^\| GEMM' "table has the GEMM rows"
exit $fail
