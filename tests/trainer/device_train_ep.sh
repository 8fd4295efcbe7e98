# shellcheck shell=bash disable=SC2034  # LAUNCH: read by train()
# tests/trainer/device_train_ep.sh: device_train_test.sh's `ep` mode (sourced by it, which
# defines train, both, same, resume, MPI2, MPI4). Expert parallelism on the device path
# (trainer/device_moe_ep.cc) under mpirun -n 2, parallel {ep: 2, dp: 2}, against the CPU
# path's EP run in fp32 and in fp8 with BF16 moments (losses and checkpoints to the last
# bit), top-3 routing over both EP ranks, each path resumed from the other's checkpoint, and
# dp 4 x ep 2 under mpirun -n 4.
LAUNCH=$MPI2
# Two EP ranks of 4 of the tiny model's 8 experts each (one expert group per rank), which
# also form the DP group: dense gradients reduced over both, each expert's over its rank.
ep=(--set parallel.dp=2 --set parallel.ep=2 --set training.generate_tokens=0)
both ep "${ep[@]}"
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
same 0 cpu_ep device_ep step-0000010 step-0000020
# Across paths, each resumed from the other's step-10 checkpoint (each rank reads its own
# experts' tensors and moments) against the other's uninterrupted run.
MOETRAIN_DEVICE_BACKEND=cpu resume cpu_ep resumed_ep "${ep[@]}"
MOETRAIN_DEVICE_BACKEND="" resume device_ep cpu_from_device_ep --set training.device=cpu "${ep[@]}"
# fp8 (DeepSeek-V3's recipe: the E4M3 dispatch, BF16 combine) with BF16 moments, at hidden
# 160 so that a dispatched row carries two 1x128 scale tiles (the second one partial).
both ep8 "${ep[@]}" --set training.precision=fp8 --set optimizer.moment_dtype=bf16 \
  --set training.steps=10 --set model.hidden_size=160
same 0 cpu_ep8 device_ep8 step-0000010
# Top-3 of both expert groups: tokens with several slots on one EP rank and slots on both.
# The device path sends such a token to a rank once and sums its input gradient there per
# rank, then over the ranks (trainer/device_moe_ep_plan.h), to the CPU path's bits.
both ep3 "${ep[@]}" --set model.num_experts_per_tok=3 --set model.topk_group=2 \
  --set training.steps=10
same 0 cpu_ep3 device_ep3 step-0000010
# Four ranks, dp 4 x ep 2: two expert-DP replicas, so the experts' region is reduced and
# gathered over a group of its own, and BF16 moments sharded in both regions.
LAUNCH=$MPI4
both dp4ep2 --set parallel.dp=4 --set parallel.ep=2 --set training.generate_tokens=0 \
  --set training.steps=10 --set optimizer.moment_dtype=bf16
expect_line device_dp4ep2 "(ep 2, expert-dp 2) over 4 ranks"
same 0 cpu_dp4ep2 device_dp4ep2 step-0000010
echo "device path, ep=2: ok"
