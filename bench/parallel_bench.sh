#!/usr/bin/env bash
# bench/parallel_bench.sh: what communication costs a training step in each parallel layout
# (issue 5 "Benchmark"). Trains the same small DeepseekV3 (the model of
# tests/parallel/layout_equivalence_test.sh, widened so a step takes some 0.1 s) for STEPS
# steps in each layout, with MOETRAIN_COMM_STATS=1 (parallel/communicator_stats.h), and
# prints, per layout: step time and its ratio to the one-process run of the same
# invocation, tokens/s, bytes sent per rank per step (mean and max over ranks), the share of
# step time spent inside communicator calls (mean and max over ranks), and bytes per group.
# The first WARMUP steps of each run are left out. Nothing is asserted.
#
#   bench/parallel_bench.sh [BUILD_DIR (default build)] [STEPS (default 20)] [WARMUP (default 3)]
#
# Layouts run under `mpirun --oversubscribe`: with fewer cores than ranks, the ranks share
# cores, so step times (and the time a rank spends blocked in a call while its peer computes)
# are inflated; the bytes do not depend on the machine.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath -m "${1:-$REPO/build}")
STEPS=${2:-20}
WARMUP=${3:-3}
BIN="$BUILD/moetrain"
[ -x "$BIN" ] || { echo "$0: build $BIN first (cmake --build $BUILD --target moetrain)" >&2; exit 1; }
PY=/usr/bin/python3
CORES=$(nproc)  # before OMP_NUM_THREADS=1, which GNU nproc reports instead
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export MOETRAIN_COMM_STATS=1 MOETRAIN_COMM_STATS_WARMUP=$WARMUP
W=$(mktemp -d /tmp/mt_parallel_bench_XXXXXX)
trap 'rm -rf "$W"' EXIT

source "$REPO/tests/parallel/tiny_moe.sh"
tiny_data "$BIN" "$W" 400 1
SEQ=32 GLOBAL=16
{
  tiny_model_yaml 128
  cat <<YAML
training:
  steps: $STEPS
  seed: 77
  seq_len: $SEQ
  micro_batch_size: 2
  global_batch_size: $GLOBAL
  mtp_lambda: 0.3
  bias_update_speed: 0.01
  balance_loss_alpha: 0.001
  eval_interval: 0
  eval_batches: 1
  generate_tokens: 0
optimizer:
  lr: 1.0e-3
  weight_decay: 0.1
  grad_clip: 1.0
data:
  train_path: $W/tiny-train
  val_path: $W/tiny-val
  tokenizer: $W/tiny.model
checkpoint:
  dir: ""
logging:
  interval: 1000
parallel:
  timeout_s: 300
YAML
} > "$W/cfg.yaml"

# name | ranks | --set arguments
LAYOUTS=(
  "1 process|1|"
  "pp 2 (1F1B)|2|parallel.pp=2"
  "dp 2|2|parallel.dp=2"
  "dp 2, ep 2|2|parallel.dp=2 parallel.ep=2"
  "pp 2 x dp 2, ep 2 (1F1B)|4|parallel.pp=2 parallel.dp=2 parallel.ep=2"
  "pp 2 x dp 2, ep 2 (DualPipe)|4|parallel.pp=2 parallel.dp=2 parallel.ep=2 parallel.schedule=dualpipe"
)
echo "[parallel_bench] $CORES cores (load average $(cut -d' ' -f1 /proc/loadavg) before the" \
  "runs); $STEPS steps per layout, the first $WARMUP left out; global batch $GLOBAL x $SEQ" \
  "tokens" >&2
i=0
: > "$W/runs.txt"
for entry in "${LAYOUTS[@]}"; do
  IFS='|' read -r name np sets <<< "$entry"
  cmd=("$BIN" train --config "$W/cfg.yaml")
  for s in $sets; do cmd+=(--set "$s"); done
  if [ "$np" -gt 1 ]; then
    cmd=(mpirun -n "$np" --oversubscribe --mca btl self,vader "${cmd[@]}")
  fi
  echo "[parallel_bench] $name: ${cmd[*]}" >&2
  if ! "${cmd[@]}" > "$W/run$i.log" 2>&1; then
    echo "FAIL: $name (${cmd[*]}):" >&2
    cat "$W/run$i.log" >&2
    exit 1
  fi
  grep -m1 '^\[moetrain\] comm_stats {' "$W/run$i.log" | sed 's/^\[moetrain\] comm_stats //' \
    > "$W/run$i.json"
  printf '%s\t%s\t%s\n' "$name" "$np" "$W/run$i.json" >> "$W/runs.txt"
  i=$((i + 1))
done
"$PY" "$REPO/bench/parallel_bench_table.py" "$W/runs.txt" --tokens-per-step $((GLOBAL * SEQ)) \
  --cores "$CORES"
