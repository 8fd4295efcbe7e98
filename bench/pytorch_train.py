#!/usr/bin/python3
"""PyTorch baseline for the training benchmark: the same DeepseekV3 model and objective as
moetrain (tests/pytorch/deepseek_v3_ref.py), float32, eager, AdamW, on the CPU.

  /usr/bin/python3 bench/pytorch_train.py --config config.json [--steps 10] [--warmup 2]
      [--batch 4] [--seq 128] [--threads 2] [--tokens batch.json] [--seed 0]

Each step: forward + backward of the full objective (main CE, MTP, balance loss), global
norm clipping, AdamW, and the aux-loss-free router-bias update from the step's expert loads,
as a moetrain step does. Batches are uniform random tokens (new each step) unless --tokens
gives a batch.json ({"tokens": [[S+1 ints], ...]}), which is then used every step and sets
the batch and sequence sizes. Tokens per step = batch * seq (the predicted positions).
The last line of stdout is one JSON object:
  {"impl": "pytorch", "tokens_per_s": ..., "step_ms": ..., "steps": ..., ...}
timed over the steps after --warmup.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "pytorch"))
import deepseek_v3_ref as ref  # noqa: E402


def parse_args(argv):
    ap = argparse.ArgumentParser(description="PyTorch DeepseekV3 training throughput (CPU)")
    ap.add_argument("--config", required=True, help="Hugging Face DeepseekV3 config.json")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    ap.add_argument("--batch", type=int, default=4, help="sequences per step")
    ap.add_argument("--seq", type=int, default=128, help="predicted positions per sequence")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--tokens", help="batch.json to train on instead of random tokens")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="global norm; 0 = off")
    ap.add_argument("--mtp-lambda", type=float, default=0.3)
    ap.add_argument("--balance-alpha", type=float, default=1e-4)
    ap.add_argument("--bias-gamma", type=float, default=1e-3, help="router-bias update speed")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.seq < 1 or args.threads < 1:
        ap.error("--steps, --batch, --seq, --threads must be >= 1 and --warmup >= 0")
    return args


def update_biases(biases, loads, gamma):
    """Aux-loss-free balancing: b_i += gamma * sign(mean load - load_i), per MoE layer."""
    names = sorted(biases, key=lambda n: int(n.split(".")[2]))  # = order of expert_load
    for name, load in zip(names, loads):
        load = torch.tensor(load, dtype=biases[name].dtype)
        biases[name] += gamma * torch.sign(load.mean() - load)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with open(args.config) as f:
        cfg = ref.ModelConfig.from_dict(json.load(f), args.config)
    fixed = ref.read_tokens(args.tokens) if args.tokens else None
    if fixed is not None:
        args.batch, args.seq = fixed.shape[0], fixed.shape[1] - 1
        if fixed.min() < 0 or fixed.max() >= cfg.vocab_size:
            sys.exit(f"{args.tokens}: token ids must be in [0, {cfg.vocab_size})")
    objective = ref.Objective(args.mtp_lambda, args.balance_alpha)
    params, biases = ref.init_params(cfg, args.seed, dtype=torch.float32)
    weights = list(params.values())
    opt = torch.optim.AdamW(weights, lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed + 1)
    losses = []
    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        tokens = fixed if fixed is not None else torch.randint(
            0, cfg.vocab_size, (args.batch, args.seq + 1), generator=gen)
        out = ref.forward(cfg, params, biases, tokens, objective)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(weights, args.grad_clip)
        opt.step()
        with torch.no_grad():
            update_biases(biases, out["expert_load"], args.bias_gamma)
        losses.append(out["loss"].item())
        if not math.isfinite(losses[-1]):
            sys.exit(f"step {step}: non-finite loss {losses[-1]}")
    elapsed = time.perf_counter() - start
    tokens_per_step = args.batch * args.seq
    print(json.dumps({
        "impl": "pytorch", "tokens_per_s": tokens_per_step * args.steps / elapsed,
        "step_ms": 1000 * elapsed / args.steps, "steps": args.steps, "warmup": args.warmup,
        "batch": args.batch, "seq": args.seq, "threads": args.threads,
        "params": sum(p.numel() for p in weights), "loss_first": losses[0],
        "loss_last": losses[-1], "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
