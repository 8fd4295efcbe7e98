#!/usr/bin/env bash
# tests/parallel/comm_stats_train_test.sh: MOETRAIN_COMM_STATS=1 (parallel/communicator_stats.h)
# on a 4-rank pp 2 x dp 2, ep 2 run of `moetrain train` changes no result (every logged loss
# and grad norm equals the run without it, exactly) and prints one comm_stats line: 4 ranks,
# the steps after the warm-up, bytes on every group this layout uses (pp, dp, ep, world) and
# none on expert_dp, which has one member here.
#
# usage: comm_stats_train_test.sh MOETRAIN
set -euo pipefail
BIN=$1
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
W=$(mktemp -d /tmp/mt_comm_stats_XXXXXX)
trap 'rm -rf "$W"' EXIT

"$PY" - "$W/corpus.txt" <<'PYEOF'
import random, sys
random.seed(2)
w = ("the cat sat on a mat and dog ran far away from home while birds sang in trees quiet "
     "river flows under old stone bridge").split()
with open(sys.argv[1], "w") as f:
    f.write("\n\n".join(" ".join(random.choice(w) for _ in range(random.randint(20, 80)))
                        for _ in range(200)))
PYEOF
"$BIN" prepare --input "$W/corpus.txt" --output "$W/tiny" --vocab-size 300 --val-fraction 0.1 \
  --split-blank-lines --seed 3 --no-progress > "$W/prepare.log" 2>&1 ||
  { echo "FAIL: prepare:"; cat "$W/prepare.log"; exit 1; }
cat > "$W/cfg.yaml" <<YAML
model:
  vocab_size: 320
  hidden_size: 32
  intermediate_size: 64
  moe_intermediate_size: 16
  num_hidden_layers: 4
  num_attention_heads: 2
  num_key_value_heads: 2
  n_routed_experts: 8
  n_shared_experts: 1
  num_experts_per_tok: 2
  n_group: 2
  topk_group: 1
  first_k_dense_replace: 1
  q_lora_rank: 16
  kv_lora_rank: 16
  qk_nope_head_dim: 8
  qk_rope_head_dim: 4
  v_head_dim: 8
  num_nextn_predict_layers: 1
  max_position_embeddings: 64
  rope_scaling: null
  bos_token_id: 1
  eos_token_id: 2
training:
  steps: 5
  seed: 5
  seq_len: 16
  micro_batch_size: 2
  global_batch_size: 16
  bias_update_speed: 0.01
  eval_batches: 1
  generate_tokens: 0
data:
  train_path: $W/tiny-train
  val_path: $W/tiny-val
  tokenizer: $W/tiny.model
checkpoint:
  dir: ""
logging:
  interval: 1
parallel:
  pp: 2
  dp: 2
  ep: 2
  timeout_s: 120
YAML

for run in off on; do
  if [ $run = on ]; then export MOETRAIN_COMM_STATS=1 MOETRAIN_COMM_STATS_WARMUP=2; fi
  if ! mpirun -n 4 --oversubscribe --mca btl self,vader "$BIN" train --config "$W/cfg.yaml" \
       --set "logging.metrics_file=$W/$run.jsonl" > "$W/$run.log" 2>&1; then
    echo "FAIL: the run with statistics $run:"
    cat "$W/$run.log"
    exit 1
  fi
done
if grep -q comm_stats "$W/off.log"; then echo "FAIL: comm_stats printed while off"; exit 1; fi

"$PY" - "$W" <<'PYEOF'
import json, sys
w = sys.argv[1]
def steps(run):
    out = []
    for line in open(f"{w}/{run}.jsonl"):
        r = json.loads(line)
        if "loss" in r and "step" in r:
            out.append({k: r[k] for k in ("step", "loss", "mtp_loss", "balance_loss", "grad_norm")
                        if k in r})
    return out
off, on = steps("off"), steps("on")
if len(off) != 5 or off != on:
    sys.exit(f"FAIL: the logged steps differ with statistics on:\n{off}\n{on}")
lines = [l for l in open(f"{w}/on.log") if l.startswith("[moetrain] comm_stats ")]
if len(lines) != 1:
    sys.exit(f"FAIL: expected one comm_stats line, got {len(lines)}")
s = json.loads(lines[0][len("[moetrain] comm_stats "):])
errors = []
if s["ranks"] != 4 or s["steps"] != 3 or s["warmup_steps"] != 2:
    errors.append(f"ranks/steps/warmup {s['ranks']}/{s['steps']}/{s['warmup_steps']}, want 4/3/2")
if len(s["step_s"]) != 4 or min(s["step_s"]) <= 0:
    errors.append(f"step_s {s['step_s']}")
for g, want in [("pp", True), ("dp", True), ("ep", True), ("world", True), ("expert_dp", False)]:
    b = s[g]["bytes_per_step"]
    if len(b) != 4 or (min(b) > 0) != want or (max(b) == 0) == want:
        errors.append(f"{g} bytes per step {b}: expected {'some' if want else 'none'} on every rank")
# Tokens reach the experts all-to-all-v; the pipeline sends activations forward, gradients back.
if "all_to_all_v" not in s["ep"]["ops"]:
    errors.append(f"ep ops {sorted(s['ep']['ops'])} lack all_to_all_v")
if "reduce_scatter" not in s["dp"]["ops"] or "all_gather" not in s["dp"]["ops"]:
    errors.append(f"dp ops {sorted(s['dp']['ops'])} lack ZeRO-1's reduce_scatter/all_gather")
total = [sum(s[g]["bytes_per_step"][r] for g in ("world", "pp", "dp", "ep", "expert_dp"))
         for r in range(4)]
# (%.9g in the JSON: equal to 1e-8)
if any(abs(a - b) > 1e-8 * b for a, b in zip(total, s["total"]["bytes_per_step"])):
    errors.append(f"total {s['total']['bytes_per_step']} is not the sum over groups {total}")
if errors:
    sys.exit("FAIL: " + "\n".join(errors) + "\n" + lines[0])
print(f"statistics on: 5 identical steps; bytes per rank per step {s['total']['bytes_per_step']}")
PYEOF
