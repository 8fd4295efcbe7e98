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

"$PY" - "$W/corpus.txt" <<'PYEOF'
import random, sys
random.seed(1)
w = ("the cat sat on a mat and dog ran far away from home while birds sang in trees quiet "
     "river flows under old stone bridge").split()
with open(sys.argv[1], "w") as f:
    f.write("\n\n".join(" ".join(random.choice(w) for _ in range(random.randint(20, 80)))
                        for _ in range(400)))
PYEOF
"$BIN" prepare --input "$W/corpus.txt" --output "$W/tiny" --vocab-size 300 --val-fraction 0.1 \
  --split-blank-lines --seed 3 --no-progress > "$W/prepare.log" 2>&1
SEQ=32 GLOBAL=16
cat > "$W/cfg.yaml" <<YAML
model:
  vocab_size: 320
  hidden_size: 128
  intermediate_size: 256
  moe_intermediate_size: 64
  num_hidden_layers: 4
  num_attention_heads: 4
  num_key_value_heads: 4
  n_routed_experts: 8
  n_shared_experts: 1
  num_experts_per_tok: 2
  n_group: 2
  topk_group: 1
  first_k_dense_replace: 1
  q_lora_rank: 32
  kv_lora_rank: 32
  qk_nope_head_dim: 16
  qk_rope_head_dim: 8
  v_head_dim: 16
  num_nextn_predict_layers: 1
  max_position_embeddings: 64
  rope_scaling: null
  bos_token_id: 1
  eos_token_id: 2
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
