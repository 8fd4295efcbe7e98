#!/usr/bin/env bash
# tests/trainer/device_train_test.sh MOETRAIN: the training loop's device path (issue 8;
# trainer/device_train.h) equals the CPU path bit for bit, without a GPU.
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
# With a second argument `dp` (its own CTest, run beside this one): data parallelism on the
# device path (ZeRO-1 over the flat buffers) under mpirun -n 2, parallel.dp=2, against the
# CPU path's ZeroAdamW with the same layout, and resumed from its step-10 checkpoint; and
# the same pair with BF16 moments.
#
# With `ep`: expert parallelism on the device path (trainer/device_moe_ep.cc) under mpirun
# -n 2, parallel {ep: 2, dp: 2}, against the CPU path's EP run in fp32 and in fp8 with BF16
# moments (losses and checkpoints to the last bit), top-3 routing over both EP ranks, each
# path resumed from the other's checkpoint, and dp 4 x ep 2 under mpirun -n 4.
#
# With `pp`: pipeline parallelism on the device path (trainer/device_pipeline.h) under
# mpirun -n 2, parallel.pp=2 with the 1F1B schedule (4 micro-batches per step, so forwards
# run ahead of backwards), against the CPU path: losses, grad norms, validation losses and
# checkpoints to the last bit in fp32 and in fp8 with BF16 moments, each path resumed from
# the other's checkpoint; then pp 2 x dp 2 x ep 2 and pp 4 under mpirun -n 4; and DualPipe
# refused with one error naming parallel.schedule.
set -euo pipefail
BIN=$1
MODE=${2:-single}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3  # Debian's, with numpy and torch (compare_runs.py)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
W=$(mktemp -d /tmp/mt_devtrain_XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT

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
  # $BIN unquoted: the dp mode prefixes it with mpirun and its flags.
  # shellcheck disable=SC2086
  if ! $BIN train --config "$W/cfg.yaml" --set "logging.metrics_file=$W/$run.jsonl" \
      --set "checkpoint.dir=$W/$run" "$@" > "$W/$run.log" 2>&1; then
    echo "FAIL: $run:"
    cat "$W/$run.log"
    exit 1
  fi
}
expect_line() {  # expect_line RUN TEXT
  grep -qF -- "$2" "$W/$1.log" || { echo "FAIL: $1 did not print '$2':"; cat "$W/$1.log"; exit 1; }
}

if [ "$MODE" = pp ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  mpi=(mpirun -n 2 --oversubscribe --mca btl self,vader -x MOETRAIN_DEVICE_BACKEND)
  # Stage 0: the embedding and layers 0-1; stage 1: layers 2-3, the head and the MTP module
  # with its copy of the embedding (whose gradient both stages sum).
  pp=(--set parallel.pp=2 --set training.generate_tokens=0)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_pp --set training.device=cpu "${pp[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train device_pp "${pp[@]}"
  expect_line device_pp "[moetrain] device: the device path on the CPU backend"
  # compare RUN_A RUN_B: every step's losses and grad norm, and every validation loss, equal.
  compare() {
    "$PY" - "$W/$1.jsonl" "$W/$2.jsonl" <<'PY'
import json, sys
def records(path):
    return list(map(json.loads, open(path)))
cpu, dev = records(sys.argv[1]), records(sys.argv[2])
steps = [{r["step"]: r for r in rs if "loss" in r and "event" not in r} for rs in (cpu, dev)]
bad = [f"step {s} {k}" for s in steps[0] for k in ("loss", "mtp_loss", "balance_loss", "grad_norm")
       if steps[0][s][k] != steps[1].get(s, {}).get(k)]
val = [{r["step"]: r["val_loss"] for r in rs if r.get("event") == "validation"}
       for rs in (cpu, dev)]
if not val[0] or val[0] != val[1]:
    bad.append(f"validation {val[0]} vs {val[1]}")
if not steps[0] or steps[0].keys() != steps[1].keys():
    bad.append("steps")
print(f"steps {min(steps[0])}-{max(steps[0])}: losses and grad norms identical; validation at "
      f"steps {sorted(val[1])} identical" if not bad else f"MISMATCH in {bad[:5]}")
sys.exit(1 if bad else 0)
PY
  }
  echo "pp=2: device path (CPU backend) vs training.device=cpu:"
  compare cpu_pp device_pp
  for step in step-0000010 step-0000020; do
    echo "pp=2: device path vs training.device=cpu, $step:"
    "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_pp.jsonl" "$W/cpu_pp/$step" \
      "$W/device_pp.jsonl" "$W/device_pp/$step"
  done
  # Across paths: each resumed from the other's step-10 checkpoint (each stage its tensors).
  mkdir -p "$W/resumed_pp" "$W/cpu_from_device_pp"
  cp -r "$W/cpu_pp/step-0000010" "$W/resumed_pp/"
  cp -r "$W/device_pp/step-0000010" "$W/cpu_from_device_pp/"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train resumed_pp "${pp[@]}" \
    --set checkpoint.resume=auto
  expect_line resumed_pp "resumed at step 10"
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_from_device_pp \
    --set training.device=cpu "${pp[@]}" --set checkpoint.resume=auto
  expect_line cpu_from_device_pp "resumed at step 10"
  echo "pp=2: device path resumed from the CPU path's step 10 vs the CPU path:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 --resumed "$W/cpu_pp.jsonl" \
    "$W/cpu_pp/step-0000020" "$W/resumed_pp.jsonl" "$W/resumed_pp/step-0000020"
  echo "pp=2: CPU path resumed from the device path's step 10 vs the device path:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 --resumed "$W/device_pp.jsonl" \
    "$W/device_pp/step-0000020" "$W/cpu_from_device_pp.jsonl" \
    "$W/cpu_from_device_pp/step-0000020"
  # fp8 (DeepSeek-V3's recipe) with BF16 moments.
  fp8=(--set training.precision=fp8 --set optimizer.moment_dtype=bf16 --set training.steps=10)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_pp8 --set training.device=cpu \
    "${pp[@]}" "${fp8[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train device_pp8 "${pp[@]}" "${fp8[@]}"
  echo "pp=2, fp8: device path vs training.device=cpu:"
  compare cpu_pp8 device_pp8
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_pp8.jsonl" \
    "$W/cpu_pp8/step-0000010" "$W/device_pp8.jsonl" "$W/device_pp8/step-0000010"
  # pp 2 x dp 2 x ep 2 over four ranks: each stage's dense gradients reduce-scattered over
  # its DP pair, its experts split over its EP pair (2 micro-batches per rank and step).
  mpi4=(mpirun -n 4 --oversubscribe --mca btl self,vader -x MOETRAIN_DEVICE_BACKEND)
  p4=("${pp[@]}" --set parallel.dp=2 --set parallel.ep=2 --set training.steps=10
    --set optimizer.moment_dtype=bf16)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi4[*]} $BIN" train cpu_pp2dp2 --set training.device=cpu \
    "${p4[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi4[*]} $BIN" train device_pp2dp2 "${p4[@]}"
  # The losses and tensors exactly; the norm's partial sums are grouped by each path's ZeRO
  # shards (as in the dp mode): it may differ in the last bits, too little to move
  # clipping's FP32 scale.
  echo "pp=2, dp=2, ep=2, bf16 moments: device path vs training.device=cpu, step-0000010:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_pp2dp2.jsonl" \
    "$W/cpu_pp2dp2/step-0000010" "$W/device_pp2dp2.jsonl" "$W/device_pp2dp2/step-0000010"
  # pp 4: one decoder layer per stage, two middle stages passing activations and gradients.
  p4s=(--set parallel.pp=4 --set training.generate_tokens=0 --set training.steps=10)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi4[*]} $BIN" train cpu_pp4 --set training.device=cpu \
    "${p4s[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi4[*]} $BIN" train device_pp4 "${p4s[@]}"
  echo "pp=4: device path vs training.device=cpu:"
  compare cpu_pp4 device_pp4
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_pp4.jsonl" \
    "$W/cpu_pp4/step-0000010" "$W/device_pp4.jsonl" "$W/device_pp4/step-0000010"
  # DualPipe stays on the CPU path: one error naming parallel.schedule.
  set +e
  # shellcheck disable=SC2086
  MOETRAIN_DEVICE_BACKEND=cpu ${mpi[*]} "$BIN" train --config "$W/cfg.yaml" "${pp[@]}" \
    --set parallel.schedule=dualpipe --set training.device=cuda --set training.steps=1 \
    --set checkpoint.dir= --set logging.metrics_file= > "$W/dualpipe.log" 2>&1
  rc=$?
  set -e
  [ $rc -ne 0 ] && grep -q "parallel.schedule is dualpipe" "$W/dualpipe.log" ||
    { echo "FAIL: DualPipe on the device path was not refused:"; cat "$W/dualpipe.log"; exit 1; }
  echo "dualpipe: $(grep -o "cuda, but parallel.schedule is dualpipe[^;]*" "$W/dualpipe.log" | head -1)"
  echo "device path, pp=2: ok"
  exit 0
fi

if [ "$MODE" = ep ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  mpi=(mpirun -n 2 --oversubscribe --mca btl self,vader -x MOETRAIN_DEVICE_BACKEND)
  # Two EP ranks of 4 of the tiny model's 8 experts each (one expert group per rank), which
  # also form the DP group: dense gradients reduced over both, each expert's over its rank.
  ep=(--set parallel.dp=2 --set parallel.ep=2 --set training.generate_tokens=0)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_ep --set training.device=cpu "${ep[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train device_ep "${ep[@]}"
  expect_line device_ep "[moetrain] device: the device path on the CPU backend"
  # The expert exchange reproduces the CPU path's expert batches and sums (device_moe_ep.cc),
  # so the losses, weights and moments are equal to the last bit. Only the gradient norm's
  # partial sums are grouped by each path's ZeRO shards (as in the dp mode): it may differ in
  # the last bits (1e-12 relative here), too little to move clipping's FP32 scale.
  # Validation (every rank runs the same number of forwards for the exchange) exactly too.
  "$PY" - "$W/cpu_ep.jsonl" "$W/device_ep.jsonl" <<'PY'
import json, sys
def records(path):
    return list(map(json.loads, open(path)))
cpu, dev = records(sys.argv[1]), records(sys.argv[2])
a, b = [next(r for r in rs if r.get("step") == 1 and "loss" in r and "event" not in r)
        for rs in (cpu, dev)]
bad = [k for k in ("loss", "mtp_loss", "balance_loss") if a[k] != b[k]]
if abs(a["grad_norm"] - b["grad_norm"]) > 1e-12 * a["grad_norm"]:
    bad.append("grad_norm")
val = [{r["step"]: r["val_loss"] for r in rs if r.get("event") == "validation"}
       for rs in (cpu, dev)]
if not val[0] or val[0] != val[1]:
    bad.append(f"validation {val[0]} vs {val[1]}")
print(f"ep=2, step 1: loss {a['loss']!r}, mtp {a['mtp_loss']!r}, balance {a['balance_loss']!r}",
      f"identical; grad norm {a['grad_norm']!r} vs {b['grad_norm']!r};",
      f"validation at steps {sorted(val[1])} identical" if not bad else f"MISMATCH in {bad}")
sys.exit(1 if bad else 0)
PY
  for step in step-0000010 step-0000020; do
    echo "ep=2: device path (CPU backend) vs training.device=cpu, $step:"
    "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_ep.jsonl" "$W/cpu_ep/$step" \
      "$W/device_ep.jsonl" "$W/device_ep/$step"
  done
  # Across paths: the device path resumed from the CPU path's step-10 checkpoint (each rank
  # reads its own experts' tensors and moments) against the CPU path's uninterrupted run.
  mkdir -p "$W/resumed_ep"
  cp -r "$W/cpu_ep/step-0000010" "$W/resumed_ep/"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train resumed_ep "${ep[@]}" \
    --set checkpoint.resume=auto
  expect_line resumed_ep "resumed at step 10"
  echo "ep=2: device path resumed from the CPU path's step 10 vs the CPU path:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 --resumed "$W/cpu_ep.jsonl" \
    "$W/cpu_ep/step-0000020" "$W/resumed_ep.jsonl" "$W/resumed_ep/step-0000020"
  # And the CPU path resumed from the device path's step-10 checkpoint.
  mkdir -p "$W/cpu_from_device_ep"
  cp -r "$W/device_ep/step-0000010" "$W/cpu_from_device_ep/"
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_from_device_ep \
    --set training.device=cpu "${ep[@]}" --set checkpoint.resume=auto
  expect_line cpu_from_device_ep "resumed at step 10"
  echo "ep=2: CPU path resumed from the device path's step 10 vs the device path:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 --resumed "$W/device_ep.jsonl" \
    "$W/device_ep/step-0000020" "$W/cpu_from_device_ep.jsonl" \
    "$W/cpu_from_device_ep/step-0000020"
  # fp8 (DeepSeek-V3's recipe: the E4M3 dispatch, BF16 combine) with BF16 moments, at hidden
  # 160 so that a dispatched row carries two 1x128 scale tiles (the second one partial).
  fp8=(--set training.precision=fp8 --set optimizer.moment_dtype=bf16 --set training.steps=10
    --set model.hidden_size=160)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_ep8 --set training.device=cpu \
    "${ep[@]}" "${fp8[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train device_ep8 "${ep[@]}" "${fp8[@]}"
  echo "ep=2, fp8: device path vs training.device=cpu, step-0000010:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_ep8.jsonl" \
    "$W/cpu_ep8/step-0000010" "$W/device_ep8.jsonl" "$W/device_ep8/step-0000010"
  # Top-3 of both expert groups: tokens with several slots on one EP rank and slots on both,
  # whose input gradients the two paths sum per rank, then over the ranks
  # (Backend::UnpermuteSumByRank), to the same bits.
  k3=(--set model.num_experts_per_tok=3 --set model.topk_group=2 --set training.steps=10)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_ep3 --set training.device=cpu \
    "${ep[@]}" "${k3[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train device_ep3 "${ep[@]}" "${k3[@]}"
  echo "ep=2, top-3 over both groups: device path vs training.device=cpu, step-0000010:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_ep3.jsonl" \
    "$W/cpu_ep3/step-0000010" "$W/device_ep3.jsonl" "$W/device_ep3/step-0000010"
  # Four ranks, dp 4 x ep 2: two expert-DP replicas, so the experts' region is reduced and
  # gathered over a group of its own, and BF16 moments sharded in both regions.
  mpi4=(mpirun -n 4 --oversubscribe --mca btl self,vader -x MOETRAIN_DEVICE_BACKEND)
  dp4=(--set parallel.dp=4 --set parallel.ep=2 --set training.generate_tokens=0
    --set training.steps=10 --set optimizer.moment_dtype=bf16)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi4[*]} $BIN" train cpu_dp4ep2 --set training.device=cpu \
    "${dp4[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi4[*]} $BIN" train device_dp4ep2 "${dp4[@]}"
  expect_line device_dp4ep2 "(ep 2, expert-dp 2) over 4 ranks"
  echo "dp=4, ep=2, bf16 moments: device path vs training.device=cpu, step-0000010:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_dp4ep2.jsonl" \
    "$W/cpu_dp4ep2/step-0000010" "$W/device_dp4ep2.jsonl" "$W/device_dp4ep2/step-0000010"
  echo "device path, ep=2: ok"
  exit 0
fi

if [ "$MODE" = dp ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  mpi=(mpirun -n 2 --oversubscribe --mca btl self,vader -x MOETRAIN_DEVICE_BACKEND)
  # Samples need the whole model on one rank and a DP run samples with `generate`: none here.
  dp=(--set parallel.dp=2 --set training.generate_tokens=0)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_dp --set training.device=cpu "${dp[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train device_dp "${dp[@]}"
  expect_line device_dp "[moetrain] device: the device path on the CPU backend"
  mkdir -p "$W/resumed_dp"
  cp -r "$W/device_dp/step-0000010" "$W/resumed_dp/"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train resumed_dp "${dp[@]}" \
    --set checkpoint.resume=auto
  expect_line resumed_dp "resumed at step 10"
  # The gradients are summed over two ranks on both paths (a + b: the same bits), but the
  # norm's partial sums are grouped by each path's shards, so clipping may differ in the
  # last bit: a tolerance far below any real difference, not 0.
  for step in step-0000010 step-0000020; do
    echo "dp=2: device path (CPU backend) vs training.device=cpu, $step:"
    "$PY" "$HERE/../parallel/compare_runs.py" --rtol 1e-6 "$W/cpu_dp.jsonl" "$W/cpu_dp/$step" \
      "$W/device_dp.jsonl" "$W/device_dp/$step"
  done
  echo "dp=2: device path resumed at step 10 vs uninterrupted:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 --resumed "$W/device_dp.jsonl" \
    "$W/device_dp/step-0000020" "$W/resumed_dp.jsonl" "$W/resumed_dp/step-0000020"
  # BF16 moments, sharded: each rank's shard of BF16 bit patterns, gathered for checkpoints.
  bf16=(--set optimizer.moment_dtype=bf16 --set training.steps=10)
  MOETRAIN_DEVICE_BACKEND= BIN="${mpi[*]} $BIN" train cpu_dp16 --set training.device=cpu \
    "${dp[@]}" "${bf16[@]}"
  MOETRAIN_DEVICE_BACKEND=cpu BIN="${mpi[*]} $BIN" train device_dp16 "${dp[@]}" "${bf16[@]}"
  echo "dp=2, bf16 moments: device path vs training.device=cpu, step-0000010:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 1e-6 "$W/cpu_dp16.jsonl" \
    "$W/cpu_dp16/step-0000010" "$W/device_dp16.jsonl" "$W/device_dp16/step-0000010"
  echo "device path, dp=2: ok"
  exit 0
fi

train cpu --set training.device=cpu
expect_line cpu "[moetrain] device: cpu (training.device cpu)"
MOETRAIN_DEVICE_BACKEND=cpu train device
expect_line device "[moetrain] device: the device path on the CPU backend (MOETRAIN_DEVICE_BACKEND=cpu)"
mkdir -p "$W/resumed"
cp -r "$W/device/step-0000010" "$W/resumed/"
MOETRAIN_DEVICE_BACKEND=cpu train resumed --set checkpoint.resume=auto
expect_line resumed "resumed at step 10"

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
for step in step-0000010 step-0000020; do
  echo "device path (CPU backend) vs training.device=cpu, $step:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu.jsonl" "$W/cpu/$step" \
    "$W/device.jsonl" "$W/device/$step"
done
echo "device path resumed at step 10 vs uninterrupted:"
"$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 --resumed "$W/device.jsonl" \
  "$W/device/step-0000020" "$W/resumed.jsonl" "$W/resumed/step-0000020"

# bf16 (BF16 GEMM operands on both paths) and fp8 (DeepSeek-V3's recipe): the same identity.
for p in bf16 fp8; do
  moments=fp32
  [ $p = fp8 ] && moments=bf16
  train cpu_$p --set training.device=cpu --set training.precision=$p --set training.steps=10 \
    --set optimizer.moment_dtype=$moments
  MOETRAIN_DEVICE_BACKEND=cpu train device_$p --set training.precision=$p \
    --set training.steps=10 --set optimizer.moment_dtype=$moments
  expect_line device_$p "[moetrain] device: the device path on the CPU backend"
  echo "$p: device path (CPU backend) vs training.device=cpu, step-0000010:"
  "$PY" "$HERE/../parallel/compare_runs.py" --rtol 0 "$W/cpu_$p.jsonl" "$W/cpu_$p/step-0000010" \
    "$W/device_$p.jsonl" "$W/device_$p/step-0000010"
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
