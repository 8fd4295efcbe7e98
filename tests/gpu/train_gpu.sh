#!/usr/bin/env bash
# tests/gpu/train_gpu.sh: `moetrain train` on the GPU, the trainer's own device path
# (training.device=cuda): configs/default.yaml for 100 steps on the Brown corpus, as the
# README's first command trains it. Passes when the run says it trains on CUDA, its loss
# falls by more than 1 nat and it prints a sample. tests/gpu/check.sh runs it; the corpus
# comes from data/cache (launch/bundle.sh copies the prepared files into the bundle).
#   train_gpu.sh PRECISION   (fp32 | bf16 | fp8), from a bundle or a checkout, with `run`
#                            defined by the caller (check.sh) to start a binary
set -uo pipefail
precision=${1:-fp32}
if [ ! -f data/cache/brown-train.idx ]; then
  echo "data/cache/brown-* missing here: prepare it (data/prepare_brown.sh) before bundling"
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run moetrain train --config configs/default.yaml --set training.device=cuda \
  --set training.precision="$precision" --set training.steps=100 --set checkpoint.dir= \
  --set logging.tensorboard_dir= --set training.eval_interval=0 \
  --set logging.metrics_file="$work/metrics.jsonl" --set training.generate_tokens=16 \
  >"$work/out.txt" 2>&1
rc=$?
cat "$work/out.txt"
[ $rc -eq 0 ] || { echo "train_gpu: moetrain exited $rc"; exit 1; }
fail=0
grep -q '^\[moetrain\] device: cuda' "$work/out.txt" || { echo "FAIL: not on the CUDA device"; fail=1; }
grep -q '^\[moetrain\] sample: ' "$work/out.txt" || { echo "FAIL: no sample printed"; fail=1; }
# The first and last logged training losses (metrics lines with tokens_per_s).
losses=$(grep '"tokens_per_s"' "$work/metrics.jsonl" | grep -o '"loss":[-0-9.e+]*' | cut -d: -f2)
first=$(echo "$losses" | head -1)
last=$(echo "$losses" | tail -1)
if ! awk -v a="$first" -v b="$last" 'BEGIN { exit !(a != "" && b != "" && b < a - 1.0) }'; then
  echo "FAIL: the training loss did not fall by more than 1 nat ($first -> $last)"
  fail=1
fi
echo "train_gpu $precision: loss $first -> $last: $([ $fail -eq 0 ] && echo ok || echo FAILED)"
exit $fail
