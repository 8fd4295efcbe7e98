#!/usr/bin/env bash
# tests/parallel/layout_equivalence_test.sh: one parallel layout of `moetrain train` under
# mpirun equals the single-process run (issue 5): 10 steps of a tiny DeepseekV3 (4 layers,
# 8 experts in 2 groups, MTP depth 1, bias update on) from the same seed; every step's
# losses and the final weights, router biases and AdamW moments agree to 1e-5 relative
# (tests/parallel/compare_runs.py).
#
# usage: layout_equivalence_test.sh MOETRAIN NAME NP [--set key=value ...]
#        layout_equivalence_test.sh MOETRAIN resume   (PP2 x EP2 checkpoint -> DP2 and 1 rank)
# The --set arguments after NP apply to the layout run only; LAYOUT_COMMON_SETS (e.g.
# "--set training.precision=fp8", split on whitespace) applies to every run, the
# single-process reference included.
#        layout_equivalence_test.sh MOETRAIN dualpipe_vs_1f1b   (DualPipe pp 2 x dp 2 x ep 2
#                                                   against 1F1B in the same layout)
#        layout_equivalence_test.sh MOETRAIN rank_death   (a SIGKILLed rank ends a PP2 x EP2
#                                                         job within 60 s, naming the rank)
set -euo pipefail
BIN=$1 NAME=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3  # Debian's, with numpy (a pyenv python3 may lack it)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
read -r -a COMMON <<< "${LAYOUT_COMMON_SETS:-}"
# LAYOUT_TENSOR_RTOL loosens the tensors' bound (losses stay at 1e-5): in fp8, a gradient
# summed in another order can cross an E4M3 rounding step, which AdamW's normalisation
# turns into a visible move of that one element.
W=$(mktemp -d /tmp/mt_layout_XXXXXX)
trap 'rm -rf "$W"' EXIT

source "$HERE/tiny_moe.sh"
tiny_data "$BIN" "$W"
{
  tiny_model_yaml 32
  cat <<YAML
training:
  steps: 10
  seed: 77
  seq_len: 16
  micro_batch_size: 2
  global_batch_size: 16
  mtp_lambda: 0.3
  bias_update_speed: 0.01
  balance_loss_alpha: 0.001
  eval_batches: 2
  generate_tokens: 0
  device: cpu  # the one-process reference is the CPU module model, even on a GPU machine
optimizer:
  lr: 1.0e-3
  weight_decay: 0.1
  grad_clip: 1.0
data:
  train_path: $W/tiny-train
  val_path: $W/tiny-val
  tokenizer: $W/tiny.model
logging:
  interval: 1
parallel:
  timeout_s: 120
YAML
} > "$W/cfg.yaml"

# train RUN NP [--set ...]: metrics in $W/RUN.jsonl, checkpoints under $W/RUN.
train() {
  local run=$1 np=$2
  shift 2
  local cmd=("$BIN" train --config "$W/cfg.yaml" --set "logging.metrics_file=$W/$run.jsonl"
             --set "checkpoint.dir=$W/$run" "${COMMON[@]}" "$@")
  if [ "$np" -gt 1 ]; then
    cmd=(mpirun -n "$np" --oversubscribe --mca btl self,vader "${cmd[@]}")
  fi
  if ! "${cmd[@]}" > "$W/$run.log" 2>&1; then
    echo "FAIL: $run (${cmd[*]}):"
    cat "$W/$run.log"
    exit 1
  fi
}

if [ "$NAME" = rank_death ]; then
  mpirun -n 4 --oversubscribe --mca btl self,vader "$BIN" train --config "$W/cfg.yaml" \
    --set training.steps=100000 --set parallel.pp=2 --set parallel.dp=2 --set parallel.ep=2 \
    > "$W/death.log" 2>&1 &
  job=$!
  for _ in $(seq 600); do grep -q "^step" "$W/death.log" && break; sleep 0.1; done
  grep -q "^step" "$W/death.log" || { echo "FAIL: the job never logged a step"; cat "$W/death.log"; kill -9 $job; exit 1; }
  victim=$(pgrep -f -- "--config $W/cfg.yaml" | grep -v "^$job\$" | sort -n | tail -1)
  kill -9 "$victim"
  for _ in $(seq 600); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
  if kill -0 $job 2>/dev/null; then
    echo "FAIL: the job still runs 60 s after rank pid $victim was killed"
    pkill -9 -f -- "--config $W/cfg.yaml"
    exit 1
  fi
  set +e
  wait $job
  rc=$?
  set -e
  [ $rc -ne 0 ] || { echo "FAIL: the job exited 0 after a rank was killed"; exit 1; }
  grep -Eq "rank [0-9]+" "$W/death.log" || { echo "FAIL: no rank named:"; cat "$W/death.log"; exit 1; }
  echo "killed pid $victim: the job exited $rc, naming: $(grep -Eo "process rank [0-9]+[^.]*" "$W/death.log" | head -1)"
  exit 0
fi

if [ "$NAME" = dualpipe_vs_1f1b ]; then
  layout=(--set parallel.pp=2 --set parallel.dp=2 --set parallel.ep=2)
  train f1b 4 "${layout[@]}"
  train dualpipe 4 "${layout[@]}" --set parallel.schedule=dualpipe
  echo "DualPipe vs 1F1B, both pp 2 x dp 2 x ep 2:"
  "$PY" "$HERE/compare_runs.py" "$W/f1b.jsonl" "$W/f1b/step-0000010" "$W/dualpipe.jsonl" \
    "$W/dualpipe/step-0000010"
  exit 0
fi

train ref 1
if [ "$NAME" = resume ]; then
  # Checkpoint of step 5 from PP2 x EP2, resumed as DP2 and as one process.
  train pp2ep2 4 --set training.steps=5 --set parallel.pp=2 --set parallel.dp=2 --set parallel.ep=2
  for layout in dp2 single; do
    rm -rf "$W/resume_$layout"
    mkdir -p "$W/resume_$layout"
    cp -r "$W/pp2ep2/step-0000005" "$W/resume_$layout/"
  done
  train resume_dp2 2 --set parallel.dp=2 --set checkpoint.resume=auto
  train resume_single 1 --set checkpoint.resume=auto
  grep -q "resumed at step 5" "$W/resume_dp2.log" || { echo "FAIL: DP2 did not resume"; exit 1; }
  for layout in dp2 single; do
    echo "PP2 x EP2 step 5 resumed as $layout:"
    "$PY" "$HERE/compare_runs.py" "$W/ref.jsonl" "$W/ref/step-0000010" \
      "$W/resume_$layout.jsonl" "$W/resume_$layout/step-0000010" --resumed
  done
  exit 0
fi
NP=$1
shift
train "$NAME" "$NP" "$@"
echo "$NAME on $NP ranks vs one process${COMMON[*]:+ (both with ${COMMON[*]})}:"
"$PY" "$HERE/compare_runs.py" ${LAYOUT_TENSOR_RTOL:+--tensor-rtol "$LAYOUT_TENSOR_RTOL"} \
  "$W/ref.jsonl" "$W/ref/step-0000010" "$W/$NAME.jsonl" \
  "$W/$NAME/step-0000010"
