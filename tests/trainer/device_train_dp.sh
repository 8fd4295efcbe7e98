# shellcheck shell=bash disable=SC2034  # LAUNCH: read by train()
# tests/trainer/device_train_dp.sh: device_train_test.sh's `dp` mode (sourced by it, which
# defines train, both, same, resume, MPI2). Data parallelism on the device path (ZeRO-1 over
# the flat buffers) under mpirun -n 2, parallel.dp=2, against the CPU path's ZeroAdamW with
# the same layout, resumed from its step-10 checkpoint; and the same pair with BF16 moments.
LAUNCH=$MPI2
# Samples need the whole model on one rank and a DP run samples with `generate`: none here.
dp=(--set parallel.dp=2 --set training.generate_tokens=0)
both dp "${dp[@]}"
# The gradients are summed over two ranks on both paths (a + b: the same bits), but the
# norm's partial sums are grouped by each path's shards, so clipping may differ in the
# last bit: a tolerance far below any real difference, not 0.
same 1e-6 cpu_dp device_dp step-0000010 step-0000020
MOETRAIN_DEVICE_BACKEND=cpu resume device_dp resumed_dp "${dp[@]}"
# BF16 moments, sharded: each rank's shard of BF16 bit patterns, gathered for checkpoints.
both dp16 "${dp[@]}" --set optimizer.moment_dtype=bf16 --set training.steps=10
same 1e-6 cpu_dp16 device_dp16 step-0000010
echo "device path, dp=2: ok"
