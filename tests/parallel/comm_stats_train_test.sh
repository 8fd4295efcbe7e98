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

source "$(dirname "$0")/tiny_moe.sh"
tiny_data "$BIN" "$W" 200 2
{
  tiny_model_yaml 32
  cat <<YAML
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
} > "$W/cfg.yaml"

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
