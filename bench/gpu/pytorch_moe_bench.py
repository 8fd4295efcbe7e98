#!/usr/bin/env python3
"""PyTorch eager reference for issue 9's side-by-side benchmark (item 2(b)).

Trains the benchmark MoE of configs/gpu-bench-moe.yaml (the model moetrain trains in its
BF16 and FP8 runs) in plain PyTorch eager, and reports tokens/s, MFU and peak memory, so
that moetrain's figures have a baseline on the same GPU and the same model.

  python3 bench/gpu/pytorch_moe_bench.py [--config configs/gpu-bench-moe.yaml]
      [--device cuda] [--steps 10] [--warmup 3] [--batch B] [--seq S] [--json-out F]
  /usr/bin/python3 bench/gpu/pytorch_moe_bench.py --device cpu --tiny --steps 3   # CI
  python3 bench/gpu/pytorch_moe_bench.py --flops-only [--tiny]   # FLOPs/params, no training

What one step is (as a moetrain step): forward of the full objective (main cross-entropy,
MTP depth 1 with lambda, sequence-wise balance loss), backward, global-norm clipping, AdamW,
then the aux-loss-free router-bias update from the step's expert loads. The model code is
bench/gpu/deepseek_v3_fast.py (checked against the float64 reference in
tests/pytorch/gpu_bench_test.py).

Precision (--precision bf16, the default): torch.autocast(dtype=bfloat16) around the
forward, with fp32 parameters. So the GEMMs and attention run in BF16 with fp32
accumulation, the fp32 parameters are the master weights, gradients and AdamW moments are
fp32, and norms, softmax, the router and the losses stay fp32: the numerics of moetrain's
`precision: bf16` (fp32 master weights, BF16 compute). --precision fp32 turns autocast off.

Data: uniform random tokens from a fixed seed (--seed), drawn on the device each step. This
is a throughput benchmark: moetrain reads the same kind of stream (data.train_path of the
config holds uniform random tokens), not the same tokens; neither learns anything beyond
the unigram distribution, so only the speed and the memory are compared.

MFU: Megatron-LM's training FLOPs per token (training_flops_per_token below, an exact port
of trainer/flops.cc: causal attention at half the square, MTP counted), times tokens/s, over
the dense BF16 peak (--peak-tflops, default 989.4 for H100/H200; reference/perf.md §3),
for every precision, as DeepSeek reports it. Tokens per step = batch x seq (predicted
positions of the main model), as moetrain counts them. Timed over the steps after --warmup,
with the device synchronised at each step's end; peak memory is
torch.cuda.max_memory_allocated over the whole run (on the CPU: the process's peak RSS).

The last line of stdout is one JSON object (also written to --json-out):
  {"impl": "pytorch-eager", "tokens_per_s": ..., "mfu": ..., "peak_mem_bytes": ..., ...}
Exit status 1 if any loss is not finite.
"""

import argparse
import json
import math
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deepseek_v3_fast as fast  # noqa: E402
from deepseek_v3_fast import ref  # noqa: E402

DEFAULT_CONFIG = os.path.join(HERE, "..", "..", "configs", "gpu-bench-moe.yaml")
H200_BF16_DENSE_TFLOPS = 989.4  # = H100's, same GH100 die (reference/perf.md §3)

# --tiny: the same architecture at toy sizes (every feature kept: q LoRA, decoupled RoPE,
# 64 experts top-6 in 8 groups / top-4, one shared expert, one dense layer, MTP 1), so CI
# runs the whole benchmark path on the CPU in seconds.
TINY_MODEL = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
              "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 2, "q_lora_rank": 32, "kv_lora_rank": 32,
              "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
              "max_position_embeddings": 64}
TINY_SEQ, TINY_BATCH = 32, 2


def training_flops_per_token(cfg, seq_len, with_mtp):
    """Port of mt::TrainingFlopsPerToken (trainer/flops.cc), term for term; the keys are
    those of `moetrain plan --json`'s flops_terms. Megatron-LM's formula, MLA branch."""
    h, H, V = cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size
    dn, dr, dv = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    s = float(seq_len)
    n_mtp = float(cfg.num_nextn_predict_layers) if with_mtp else 0.0
    n_moe = float(sum(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers)))
    n_dense = cfg.num_hidden_layers - n_moe
    n_moe_all = n_moe + n_mtp  # MTP layers are MoE layers
    layers = cfg.num_hidden_layers + n_mtp
    f = {}
    f["dense_mlp"] = 6.0 * h * 3 * cfg.intermediate_size * n_dense
    f["routed_experts"] = (6.0 * h * 3 * cfg.moe_intermediate_size * cfg.num_experts_per_tok
                           * n_moe_all)
    f["shared_experts"] = (6.0 * h * 3 * (cfg.moe_intermediate_size * cfg.n_shared_experts)
                           * n_moe_all)
    q = (cfg.q_lora_rank * (h + H * (dn + dr) + 1) if cfg.q_lora_rank > 0
         else float(h) * H * (dn + dr))
    kv = cfg.kv_lora_rank * (h + H * (dn + dv) + 1) + h * dr
    f["mla_projections"] = 6.0 * layers * (q + kv + H * dv * h)
    f["mla_core"] = 6.0 * layers * s * (H * (dn + dr) / 2 + H * dv / 2)
    f["mtp_glue"] = 6.0 * n_mtp * (3 * h + 2.0 * h * h)
    f["logits"] = 6.0 * h * V * (1 + n_mtp)
    # Summed in flops.h's order, so the total matches the C++ double bit for bit.
    f["total"] = (f["dense_mlp"] + f["routed_experts"] + f["shared_experts"]
                  + f["mla_projections"] + f["mla_core"] + f["mtp_glue"] + f["logits"])
    return f


def load_run_config(path, tiny):
    """(ModelConfig, model dict, training dict, optimizer dict) from our YAML run config."""
    import yaml  # PyYAML: Debian's python3-yaml here, in the GPU machine's image there
    with open(path) as f:
        doc = yaml.safe_load(f)
    model = dict(doc["model"])
    if tiny:
        model.update(TINY_MODEL)
    return (ref.ModelConfig.from_dict(model, path), model, doc.get("training", {}),
            doc.get("optimizer", {}))


def constant(section, key, default, path):
    """A schedule key that the benchmark needs as one number (constant schedules only)."""
    v = section.get(key, default)
    if not isinstance(v, (int, float)):
        sys.exit(f"{path}: {key} must be a constant for the benchmark, got {v!r}")
    return float(v)


def parse_args(argv):
    ap = argparse.ArgumentParser(description="PyTorch eager training benchmark of the "
                                 "issue-9 MoE (tokens/s, MFU, peak memory)")
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="moetrain YAML run config")
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    ap.add_argument("--tiny", action="store_true", help="toy sizes of the same architecture")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed steps first (default 3; 1 with --tiny)")
    ap.add_argument("--batch", type=int, help="sequences per step (default: the config's "
                    "micro_batch_size)")
    ap.add_argument("--seq", type=int, help="tokens per sequence (default: the config's seq_len)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--seed", type=int, default=None, help="default: the config's training.seed")
    ap.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS,
                    help="MFU denominator (dense BF16 peak)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (CPU); 0 = keep")
    ap.add_argument("--json-out", help="also write the result object to this file")
    ap.add_argument("--flops-only", action="store_true",
                    help="print FLOPs per token and parameter counts as JSON; no training")
    args = ap.parse_args(argv)
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 3
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg, model, training, optim = load_run_config(args.config, args.tiny)
    seq = args.seq or (TINY_SEQ if args.tiny else int(training.get("seq_len", 4096)))
    batch = args.batch or (TINY_BATCH if args.tiny else int(training.get("micro_batch_size", 1)))
    seed = args.seed if args.seed is not None else int(training.get("seed", 1234))
    flops = training_flops_per_token(cfg, seq, with_mtp=True)
    flops_no_mtp = training_flops_per_token(cfg, seq, with_mtp=False)
    total, active = fast.count_params(cfg)
    summary = {"config": os.path.relpath(args.config), "tiny": args.tiny, "seq_len": seq,
               "batch": batch, "tokens_per_step": batch * seq, "params_total": total,
               "params_active": active, "flops_per_token": flops["total"],
               "flops_per_token_no_mtp": flops_no_mtp["total"], "flops_terms": flops}
    if args.flops_only:
        print(json.dumps(summary))
        return 0

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("pytorch_moe_bench: --device cuda but torch sees no GPU "
                 f"(torch {torch.__version__}); use --device cpu for the CPU path")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 GEMMs (router) as a user would run them
        torch.cuda.reset_peak_memory_stats(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"[pytorch] torch {torch.__version__} on {name}; {os.path.relpath(args.config)}"
          f"{' (--tiny)' if args.tiny else ''}: {total / 1e9:.3f}B parameters "
          f"({active / 1e9:.3f}B activated), {batch} x {seq} tokens a step, precision "
          f"{args.precision} ({'autocast bf16, fp32 master weights' if args.precision == 'bf16' else 'fp32'})",
          flush=True)
    print(f"[pytorch] MFU = {flops['total'] / 1e9:.4f} GFLOP/token (Megatron formula, causal, "
          f"with MTP) x tokens/s over {args.peak_tflops} TFLOPS (dense BF16 peak)", flush=True)

    t0 = time.perf_counter()
    params, biases = fast.init_params(cfg, seed, device)
    objective = ref.Objective(constant(training, "mtp_lambda", 0.3, args.config),
                              constant(training, "balance_loss_alpha", 1e-4, args.config))
    gamma = constant(training, "bias_update_speed", 1e-3, args.config)
    grad_clip = float(optim.get("grad_clip", 1.0))
    weights = list(params.values())
    opt_kw = {"lr": constant(optim, "lr", 2e-4, args.config),
              "betas": (float(optim.get("beta1", 0.9)), float(optim.get("beta2", 0.95))),
              "eps": float(optim.get("eps", 1e-8)),
              "weight_decay": float(optim.get("weight_decay", 0.1))}
    if device.type == "cuda":
        opt_kw["fused"] = True  # one kernel over all tensors: what a tuned eager run uses
    opt = torch.optim.AdamW(weights, **opt_kw)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    print(f"[pytorch] parameters on {device} in {time.perf_counter() - t0:.1f} s", flush=True)

    losses, timed_s = [], 0.0
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device, generator=gen)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=args.precision == "bf16"):
            out = fast.forward(cfg, params, biases, tokens, objective)
        out["loss"].backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(weights, grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        fast.update_biases(biases, out["expert_load"], gamma)
        loss = out["loss"].item()  # also the step's end on the device
        sync()
        dt = time.perf_counter() - start
        timed = step >= args.warmup
        if timed:
            timed_s += dt
            losses.append(loss)
        loads = torch.stack(out["expert_load"]).float()
        imbalance = (loads.max(-1).values / loads.mean(-1)).max().item()
        print(f"[pytorch] step {step + 1}/{args.warmup + args.steps}"
              f"{'' if timed else ' (warm-up)'}: loss {loss:.4f} (main "
              f"{out['main_loss'].item():.4f}), {dt * 1e3:.0f} ms, "
              f"{batch * seq / dt:,.0f} tokens/s, max/mean expert load {imbalance:.2f}",
              flush=True)
        if not math.isfinite(loss):
            print(f"[pytorch] FAILED: loss not finite at step {step + 1}", file=sys.stderr)
            return 1

    tokens_per_s = batch * seq * args.steps / timed_s
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    else:  # ru_maxrss is in KiB on Linux
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host peak RSS"
    result = {"impl": "pytorch-eager", "precision": args.precision, "device": name,
              "torch": torch.__version__, "steps": args.steps, "warmup": args.warmup,
              "step_ms": timed_s / args.steps * 1e3, "tokens_per_s": tokens_per_s,
              "mfu": tokens_per_s * flops["total"] / (args.peak_tflops * 1e12),
              "mfu_no_mtp": tokens_per_s * flops_no_mtp["total"] / (args.peak_tflops * 1e12),
              "peak_tflops": args.peak_tflops, "peak_mem_bytes": peak, "peak_mem_kind": peak_kind,
              "first_loss": losses[0], "last_loss": losses[-1], **summary}
    print(f"[pytorch] {tokens_per_s:,.0f} tokens/s, {result['step_ms']:.0f} ms/step, MFU "
          f"{100 * result['mfu']:.2f}% ({100 * result['mfu_no_mtp']:.2f}% without MTP), peak "
          f"memory {peak / 2**30:.2f} GiB ({peak_kind})", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f)
            f.write("\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
