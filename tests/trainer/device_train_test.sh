#!/usr/bin/env bash
# tests/trainer/device_train_test.sh MOETRAIN [MODE]: the training loop's device path (issue
# 8; trainer/device_train.h) equals the CPU path bit for bit, without a GPU.
#
# Trains the layout tests' tiny DeepseekV3 (tests/parallel/tiny_moe.sh) for 20 steps with
# validation every 5 steps, a checkpoint every 10 and a generated sample, once with
# training.device=cpu (the module model) and once on the device path over CpuBackend
# (MOETRAIN_DEVICE_BACKEND=cpu): every step's losses, every validation loss, the sample and
# every tensor of both checkpoints (weights, biases, AdamW moments) must be identical. Then
# the device path resumed from the step-10 checkpoint must equal the uninterrupted device
# run the same way. The same pair in training.precision bf16 and fp8 (losses and checkpoints;
# fp8 with DeepSeek-V3's BF16 AdamW moments, optimizer.moment_dtype bf16).
# Also: training.device=cuda on a machine without a GPU (or a build
# without CUDA) fails with one error naming the key and the reason, and a bad
# MOETRAIN_DEVICE_BACKEND is refused.
#
# MODE dp, ep or pp (each its own CTest, run beside this one) runs the parallel layouts
# under mpirun instead: device_train_dp.sh (ZeRO-1), device_train_ep.sh (expert
# parallelism), device_train_pp.sh (1F1B pipeline stages), each against the CPU path with
# the same layout.
set -euo pipefail
BIN=$1
MODE=${2:-single}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3  # Debian's, with numpy and torch (compare_runs.py)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
W=$(mktemp -d /tmp/mt_devtrain_XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
LAUNCH=""  # the parallel modes: mpirun and its flags

source "$HERE/../parallel/tiny_moe.sh"
tiny_data "$BIN" "$W"
{
  tiny_model_yaml 32
  cat <<YAML
training:
  steps: 20
  seed: 77
  seq_len: 16
  micro_batch_size: 2
  global_batch_size: 8
  mtp_lambda: 0.3
  bias_update_speed: 0.01
  balance_loss_alpha: 0.001
  eval_interval: 5
  eval_batches: 2
  generate_tokens: 8
optimizer:
  lr: 3.0e-3
  weight_decay: 0.1
  grad_clip: 0.5
data:
  train_path: $W/tiny-train
  val_path: $W/tiny-val
  tokenizer: $W/tiny.model
checkpoint:
  interval: 10
  keep_last: 5
logging:
  interval: 1
YAML
} > "$W/cfg.yaml"

# train RUN [--set ...]: metrics in $W/RUN.jsonl, checkpoints under $W/RUN, output in RUN.log.
train() {
  local run=$1
  shift
  # $LAUNCH unquoted: mpirun and its flags.
  # shellcheck disable=SC2086
  if ! $LAUNCH "$BIN" train --config "$W/cfg.yaml" --set "logging.metrics_file=$W/$run.jsonl" \
      --set "checkpoint.dir=$W/$run" "$@" > "$W/$run.log" 2>&1; then
    echo "FAIL: $run:"
    cat "$W/$run.log"
    exit 1
  fi
}
expect_line() {  # expect_line RUN TEXT
  grep -qF -- "$2" "$W/$1.log" || { echo "FAIL: $1 did not print '$2':"; cat "$W/$1.log"; exit 1; }
}
# both NAME [--set ...]: the CPU path as cpu_NAME and the device path on the CPU backend as
# device_NAME, with the same settings.
both() {
  local name=$1
  shift
  MOETRAIN_DEVICE_BACKEND="" train "cpu_$name" --set training.device=cpu "$@"
  MOETRAIN_DEVICE_BACKEND=cpu train "device_$name" "$@"
  expect_line "device_$name" "[moetrain] device: the device path on the CPU backend"
}
# same RTOL RUN_A RUN_B STEP...: the two runs' logged steps and their checkpoints at each
# STEP agree (compare_runs.py; RTOL 0: to the last bit).
same() {
  local rtol=$1 a=$2 b=$3 step
  shift 3
  for step in "$@"; do
    echo "$b vs $a, $step:"
    "$PY" "$HERE/../parallel/compare_runs.py" --rtol "$rtol" "$W/$a.jsonl" "$W/$a/$step" \
      "$W/$b.jsonl" "$W/$b/$step"
  done
}
# resume FROM RUN [--set ...]: RUN starts from FROM's step-10 checkpoint; its steps 11-20
# and step-20 checkpoint must then equal FROM's own (to the last bit).
resume() {
  local from=$1 run=$2
  shift 2
  mkdir -p "$W/$run"
  cp -r "$W/$from/step-0000010" "$W/$run/"
  train "$run" "$@" --set checkpoint.resume=auto
  expect_line "$run" "resumed at step 10"
  echo "$run (resumed from $from's step 10) vs $from, step-0000020:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 --resumed "$W/$from.jsonl" \
    "$W/$from/step-0000020" "$W/$run.jsonl" "$W/$run/step-0000020"
}

case "$MODE" in
  dp | ep | pp)
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # shellcheck disable=SC2034  # the mode files use them
    MPI2="mpirun -n 2 --oversubscribe --mca btl self,vader -x MOETRAIN_DEVICE_BACKEND"
    # shellcheck disable=SC2034
    MPI4="mpirun -n 4 --oversubscribe --mca btl self,vader -x MOETRAIN_DEVICE_BACKEND"
    # shellcheck source=/dev/null
    source "$HERE/device_train_$MODE.sh"
    exit 0
    ;;
  single) ;;
  *) echo "device_train_test.sh: MODE $MODE: expected single, dp, ep or pp"; exit 2 ;;
esac

train cpu --set training.device=cpu
expect_line cpu "[moetrain] device: cpu (training.device cpu)"
MOETRAIN_DEVICE_BACKEND=cpu train device
expect_line device "[moetrain] device: the device path on the CPU backend (MOETRAIN_DEVICE_BACKEND=cpu)"
same 0 cpu device step-0000010 step-0000020
MOETRAIN_DEVICE_BACKEND=cpu resume device resumed

# Validation losses and the sample, exactly (the step losses and tensors: compare_runs.py).
"$PY" - "$W" <<'PY'
import json, re, sys
w = sys.argv[1]
def val(run):
    return {r["step"]: r["val_loss"] for r in map(json.loads, open(f"{w}/{run}.jsonl"))
            if r.get("event") == "validation"}
def sample(run):
    m = re.search(r"^\[moetrain\] sample: .*$", open(f"{w}/{run}.log").read(), re.M)
    return m.group(0) if m else None
bad = []
cpu, dev, res = val("cpu"), val("device"), val("resumed")
if not cpu or cpu != dev:
    bad.append(f"validation losses: cpu {cpu} vs device {dev}")
if not res or any(dev.get(s) != v for s, v in res.items()) or max(res) != 20:
    bad.append(f"validation losses: resumed {res} vs device {dev}")
if sample("cpu") is None or sample("cpu") != sample("device") or sample("device") != sample("resumed"):
    bad.append(f"samples differ: {sample('cpu')!r} / {sample('device')!r} / {sample('resumed')!r}")
for b in bad:
    print("MISMATCH", b)
print(f"validation at steps {sorted(dev)}: identical; samples identical" if not bad else "")
sys.exit(1 if bad else 0)
PY

# bf16 (BF16 GEMM operands on both paths) and fp8 (DeepSeek-V3's recipe): the same identity.
for p in bf16 fp8; do
  moments=fp32
  [ $p = fp8 ] && moments=bf16
  both $p --set training.precision=$p --set training.steps=10 --set optimizer.moment_dtype=$moments
  same 0 cpu_$p device_$p step-0000010
done

# training.device=cuda without a usable GPU: one error naming the key and the reason.
set +e
"$BIN" train --config "$W/cfg.yaml" --set training.device=cuda --set training.steps=1 \
  --set checkpoint.dir= --set logging.metrics_file= > "$W/cuda.log" 2>&1
rc=$?
set -e
if [ $rc -eq 0 ]; then
  expect_line cuda "[moetrain] device: cuda ("  # a GPU machine: it trained there
  echo "training.device=cuda: ran on a GPU"
else
  grep -Eq "training.device is cuda, but (no CUDA device visible|this build has no CUDA backend)" \
    "$W/cuda.log" || { echo "FAIL: training.device=cuda without a GPU:"; cat "$W/cuda.log"; exit 1; }
  echo "training.device=cuda here: $(grep -o "training.device is cuda, but [^;]*" "$W/cuda.log")"
fi
set +e
MOETRAIN_DEVICE_BACKEND=gpu "$BIN" train --config "$W/cfg.yaml" --set training.steps=1 \
  --set checkpoint.dir= --set logging.metrics_file= > "$W/badenv.log" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] && grep -q "MOETRAIN_DEVICE_BACKEND=gpu: expected cpu" "$W/badenv.log" ||
  { echo "FAIL: MOETRAIN_DEVICE_BACKEND=gpu was not refused:"; cat "$W/badenv.log"; exit 1; }
echo "device path: ok"
