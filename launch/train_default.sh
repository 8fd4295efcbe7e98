#!/usr/bin/env bash
# launch/train_default.sh: the README's first command. On a fresh Debian 12 machine it
# installs and builds everything (launch/setup.sh), prepares the embedded Brown corpus once
# (cached in data/cache/), and trains configs/default.yaml on the CPU (the GPU path arrives
# with the CUDA backend), then writes the run's report (runs/default/report.html: loss
# curves, expert-load heatmaps) and prints its path. Extra arguments go to `moetrain train`
# (e.g. --set training.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
BIN=${MOETRAIN_BUILD_DIR:-build}/moetrain
bash data/prepare_brown.sh "$BIN" data/cache
RUN_DIR=runs/default
mkdir -p "$RUN_DIR"
echo "[train_default] training configs/default.yaml (logs: $RUN_DIR/)"
"$BIN" train --config configs/default.yaml "$@"
# configs/default.yaml logs to $RUN_DIR/metrics.jsonl, expert loads included.
"$BIN" report "$RUN_DIR" --out "$RUN_DIR/report.html"
echo "[train_default] report of this run: $(realpath "$RUN_DIR/report.html")"
