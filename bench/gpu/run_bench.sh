#!/usr/bin/env bash
# bench/gpu/run_bench.sh: issue 9's speed comparison, run once on one GPU (about 3 minutes
# on an H200; GPU time is scarce, so everything is in this one script). Run it from a
# checkout (it needs bench/gpu/*.py, tests/pytorch/*.py, configs/) with the bundle of a CUDA
# build (launch/bundle.sh) or the build folder itself:
#
#   bash bench/gpu/run_bench.sh BUNDLE_OR_BUILD_DIR [OUT_DIR]
#
# Steps, each under a time limit, each printing its progress:
#   1. the PyTorch benchmark model against the float64 reference, on the GPU (tiny sizes);
#   2. gemm_bench: BF16 and FP8 (1x128/128x128 and per-tensor) GEMM TFLOPS, M = 4096 at
#      DeepSeek-V3's N x K;
#   3. moetrain's GPU training step on configs/gpu-bench-moe.yaml (bench/gpu/
#      device_train_bench) in fp32, bf16 and fp8;
#   4. the PyTorch eager reference (bench/gpu/pytorch_moe_bench.py) on the same config;
#   5. one table (bench/gpu/bench_table.py): name, tokens/s, MFU, peak memory; GEMM TFLOPS.
# OUT_DIR (default $OUT, else a fresh temporary folder) keeps every log, the JSON results
# and table.md. Exit status 0 only if every step that can run passed.
#
# Environment: PYTHON (default python3, the one with torch), BENCH_STEPS (timed training
# steps, default 10), BENCH_WARMUP (default 3), BENCH_DEVICE (default cuda; `cpu` together
# with BENCH_TINY=1 runs the whole script on a CPU machine: tests/pytorch's CTest does that).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${1:?usage: run_bench.sh BUNDLE_OR_BUILD_DIR [OUT_DIR]}
TARGET=$(cd "$TARGET" && pwd)
OUTDIR=${2:-${OUT:-$(mktemp -d /tmp/run_bench.XXXXXX)}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
PY=${PYTHON:-python3}
STEPS=${BENCH_STEPS:-10}
WARMUP=${BENCH_WARMUP:-3}
DEVICE=${BENCH_DEVICE:-cuda}
TINY=()
[ "${BENCH_TINY:-0}" = 1 ] && TINY=(--tiny)
CONFIG=$ROOT/configs/gpu-bench-moe.yaml
export PYTHONUNBUFFERED=1
cd "$ROOT"

# A binary from the bundle (its `run` launcher sets the library path) or the build folder.
bin() {
  local b=$1
  shift
  if [ -x "$TARGET/run" ]; then
    [ -x "$TARGET/bin/$b" ] || return 127
    "$TARGET/run" "$b" "$@"
    return
  fi
  local p
  for p in "$TARGET/$b" "$TARGET/bench/gpu/$b"; do
    if [ -x "$p" ]; then "$p" "$@"; return; fi
  done
  return 127
}
has_bin() {
  [ -x "$TARGET/bin/$1" ] || [ -x "$TARGET/$1" ] || [ -x "$TARGET/bench/gpu/$1" ]
}

failed=()
: >"$OUTDIR/train.jsonl"
row() {  # row NAME NOTE: a training row with no figures
  "$PY" -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "tokens_per_s": None,
"mfu": None, "peak_mem_bytes": None, "note": sys.argv[2]}))' "$1" "$2" >>"$OUTDIR/train.jsonl"
}
begin() {
  echo
  echo "==== $1"
  T0=$SECONDS
}
end() {  # end NAME RC
  echo "---- $1: $([ "$2" -eq 0 ] && echo ok || echo "FAILED (exit $2)") in $((SECONDS - T0)) s"
  [ "$2" -eq 0 ] || failed+=("$1")
}

echo "==== device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
else
  echo "nvidia-smi not found"
fi
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)'), $TARGET, $(date -u +%FT%TZ)"

begin "PyTorch benchmark model vs the float64 reference (on $DEVICE)"
timeout 180 "$PY" tests/pytorch/gpu_bench_test.py --only parity --device "$DEVICE" \
  2>&1 | tee "$OUTDIR/parity.log"
end "model parity" "${PIPESTATUS[0]}"

begin "GEMM benchmark (M = 4096, DeepSeek-V3 shapes)"
if has_bin gemm_bench; then
  timeout 180 bash -c "$(declare -f bin); TARGET='$TARGET'; bin gemm_bench --iters 30 --warmup 5" \
    2>&1 | tee "$OUTDIR/gemm.log"
  end "gemm_bench" "${PIPESTATUS[0]}"
else
  echo "gemm_bench is not in $TARGET (a build with the CUDA backend has it)" | tee "$OUTDIR/gemm.log"
  end "gemm_bench" 127
fi

begin "moetrain training step on configs/gpu-bench-moe.yaml"
# The GPU training step (trainer/device_model.h), measured by device_train_bench.
if [ "$DEVICE" != cuda ] || ! has_bin device_train_bench; then
  why=$([ "$DEVICE" != cuda ] && echo "BENCH_DEVICE=$DEVICE" || echo "no device_train_bench in $TARGET")
  echo "moetrain fp32, bf16, fp8: not measured ($why)"
  for p in fp32 bf16 fp8; do row "moetrain $p" "NOT AVAILABLE here ($why): needs a CUDA build on a GPU"; done
  end "moetrain (not measured, reported)" 0
else
  rc_all=0
  for p in fp32 bf16 fp8; do
    timeout 300 bash -c "$(declare -f bin); TARGET='$TARGET'; bin device_train_bench \
      --config '$CONFIG' --precision $p --steps $STEPS --warmup $WARMUP" 2>&1 |
      tee "$OUTDIR/moetrain-$p.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || rc_all=$rc
    "$PY" - "$OUTDIR/moetrain-$p.log" "$CONFIG" "$p" >>"$OUTDIR/train.jsonl" <<'PYEOF'
import json, sys
sys.path.insert(0, "bench/gpu")
import pytorch_moe_bench as b
log, config, prec = sys.argv[1], sys.argv[2], sys.argv[3]
recs = [json.loads(l) for l in open(log) if l.startswith("{")]
row = {"name": f"moetrain {prec}", "tokens_per_s": None, "mfu": None, "peak_mem_bytes": None,
       "note": "device_train_bench printed no result"}
if recs:
    r = recs[-1]
    cfg, _, tr, _ = b.load_run_config(config, False)
    flops = b.training_flops_per_token(cfg, int(tr["seq_len"]), True)["total"]
    # One MFU basis for every row (the BF16 dense peak), whatever the step's precision.
    row.update(tokens_per_s=r["tokens_per_s"], peak_mem_bytes=r["peak_mem_bytes"],
               mfu=r["tokens_per_s"] * flops / (b.H200_BF16_DENSE_TFLOPS * 1e12),
               note="MFU against the BF16 dense peak, as the other rows")
print(json.dumps(row))
PYEOF
  done
  end "moetrain" "$rc_all"
fi

begin "PyTorch eager reference (bench/gpu/pytorch_moe_bench.py, bf16 autocast)"
timeout 360 "$PY" bench/gpu/pytorch_moe_bench.py --config "$CONFIG" --device "$DEVICE" \
  --steps "$STEPS" --warmup "$WARMUP" "${TINY[@]}" --json-out "$OUTDIR/pytorch.json" \
  2>&1 | tee "$OUTDIR/pytorch.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ] && [ -s "$OUTDIR/pytorch.json" ]; then
  "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(json.dumps({"name": "pytorch eager bf16" + (" (--tiny)" if r["tiny"] else ""),
  "tokens_per_s": r["tokens_per_s"], "mfu": r["mfu"], "peak_mem_bytes": r["peak_mem_bytes"],
  "note": "torch %s, %d x %d tokens/step, %s" % (r["torch"], r["batch"], r["seq_len"],
  r["peak_mem_kind"])}))' "$OUTDIR/pytorch.json" >>"$OUTDIR/train.jsonl"
else
  row "pytorch eager bf16" "FAILED (exit $rc): see pytorch.log"
fi
end "PyTorch reference" "$rc"

echo
echo "==== summary (also $OUTDIR/table.md)"
"$PY" bench/gpu/bench_table.py "$OUTDIR" | tee "$OUTDIR/table.md"
echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "run_bench.sh: all steps passed; logs in $OUTDIR"
  exit 0
fi
echo "run_bench.sh: FAILED: ${failed[*]}; logs in $OUTDIR"
exit 1
