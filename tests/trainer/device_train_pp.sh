# shellcheck shell=bash disable=SC2034  # LAUNCH: read by train()
# tests/trainer/device_train_pp.sh: device_train_test.sh's `pp` mode (sourced by it, which
# defines train, both, same, resume, MPI2, MPI4). Pipeline parallelism on the device path
# (trainer/device_pipeline.h) under mpirun -n 2, parallel.pp=2 with the 1F1B schedule (4
# micro-batches per step, so forwards run ahead of backwards), against the CPU path: losses,
# grad norms, validation losses and checkpoints to the last bit in fp32 and in fp8 with BF16
# moments, each path resumed from the other's checkpoint; then pp 2 x dp 2 x ep 2 and pp 4
# under mpirun -n 4; pp 4 and pp 2 with NCCL's point-to-point order emulated; and DualPipe
# refused with one error naming parallel.schedule.
LAUNCH=$MPI2
# Stage 0: the embedding and layers 0-1; stage 1: layers 2-3, the head and the MTP module
# with its copy of the embedding (whose gradient both stages sum).
pp=(--set parallel.pp=2 --set training.generate_tokens=0)
both pp "${pp[@]}"
# same_steps RUN_A RUN_B: every step's losses and grad norm, and every validation loss, equal.
same_steps() {
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
same_steps cpu_pp device_pp
same 0 cpu_pp device_pp step-0000010 step-0000020
# Across paths: each resumed from the other's step-10 checkpoint (each stage its tensors).
MOETRAIN_DEVICE_BACKEND=cpu resume cpu_pp resumed_pp "${pp[@]}"
MOETRAIN_DEVICE_BACKEND="" resume device_pp cpu_from_device_pp --set training.device=cpu "${pp[@]}"
# fp8 (DeepSeek-V3's recipe) with BF16 moments.
both pp8 "${pp[@]}" --set training.precision=fp8 --set optimizer.moment_dtype=bf16 \
  --set training.steps=10
same_steps cpu_pp8 device_pp8
same 0 cpu_pp8 device_pp8 step-0000010
# pp 2 x dp 2 x ep 2 over four ranks: each stage's dense gradients reduce-scattered over
# its DP pair, its experts split over its EP pair (2 micro-batches per rank and step).
LAUNCH=$MPI4
both pp2dp2 "${pp[@]}" --set parallel.dp=2 --set parallel.ep=2 --set training.steps=10 \
  --set optimizer.moment_dtype=bf16
# The losses and tensors exactly; the norm's partial sums are grouped by each path's ZeRO
# shards (as in the dp mode): it may differ in the last bits, too little to move
# clipping's FP32 scale.
same 0 cpu_pp2dp2 device_pp2dp2 step-0000010
# pp 4: one decoder layer per stage, two middle stages passing activations and gradients.
both pp4 --set parallel.pp=4 --set training.generate_tokens=0 --set training.steps=10
same_steps cpu_pp4 device_pp4
same 0 cpu_pp4 device_pp4 step-0000010
# Point to point as NcclCommunicator does it (parallel/p2p_group.h): untagged, so messages
# match by order, and each rank's sends held for its next receive and waited for with it.
# Over this MPI the activations' 4 KiB messages are above the shared-memory eager limit and
# complete only once received, as NCCL's do: a wrong order hangs or mixes messages up.
MOETRAIN_EMULATE_NCCL_P2P=1 MOETRAIN_DEVICE_BACKEND=cpu train nccl_pp4 --set parallel.pp=4 \
  --set training.generate_tokens=0 --set training.steps=10
expect_line nccl_pp4 "pipeline stages over grouped-mpi:pp"
same_steps cpu_pp4 nccl_pp4
LAUNCH=$MPI2
MOETRAIN_EMULATE_NCCL_P2P=1 MOETRAIN_DEVICE_BACKEND=cpu train nccl_pp "${pp[@]}"
same_steps cpu_pp nccl_pp
same 0 cpu_pp nccl_pp step-0000020
# DualPipe stays on the CPU path: one error naming parallel.schedule.
set +e
# shellcheck disable=SC2086
MOETRAIN_DEVICE_BACKEND=cpu $LAUNCH "$BIN" train --config "$W/cfg.yaml" "${pp[@]}" \
  --set parallel.schedule=dualpipe --set training.device=cuda --set training.steps=1 \
  --set checkpoint.dir= --set logging.metrics_file= > "$W/dualpipe.log" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] && grep -q "parallel.schedule is dualpipe" "$W/dualpipe.log" ||
  { echo "FAIL: DualPipe on the device path was not refused:"; cat "$W/dualpipe.log"; exit 1; }
echo "dualpipe: $(grep -o "cuda, but parallel.schedule is dualpipe[^;]*" "$W/dualpipe.log" | head -1)"
echo "device path, pp=2: ok"
