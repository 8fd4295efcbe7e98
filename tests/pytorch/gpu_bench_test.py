"""CPU tests of issue 9's PyTorch benchmark (bench/gpu/pytorch_moe_bench.py), run by CTest.

  /usr/bin/python3 tests/pytorch/gpu_bench_test.py --moetrain build/moetrain [--only PART]

Parts:
  flops   the Python port of Megatron's FLOPs per token equals the C++ figure
          (trainer/flops.cc, through `moetrain plan --json`) term by term, with and without
          MTP, for the benchmark config, its --tiny sizes, the CPU default and DeepSeek-V3
          671B; the parameter count it prints equals the planner's;
  parity  bench/gpu/deepseek_v3_fast.py's forward equals the float64 reference
          (tests/pytorch/deepseek_v3_ref.py) on the same weights and tokens: losses, expert
          loads and every gradient; under BF16 autocast its losses stay within BF16 error;
  bench   `pytorch_moe_bench.py --device cpu --tiny --steps 3` trains and reports a complete,
          consistent result object.
Each failure prints what differed and the exit status is 1.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "gpu"))
import deepseek_v3_fast as fast  # noqa: E402
import pytorch_moe_bench as bench  # noqa: E402
from deepseek_v3_fast import ref  # noqa: E402

BENCH_CONFIG = os.path.join(ROOT, "configs", "gpu-bench-moe.yaml")
CLUSTER = os.path.join(ROOT, "configs", "clusters", "h200-8gpu.yaml")
failures = []


def check(ok, what):
    print(("ok      " if ok else "FAILED  ") + what)
    if not ok:
        failures.append(what)


def close(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def plan(moetrain, config_path):
    out = subprocess.run([moetrain, "plan", "--model", config_path, "--cluster", CLUSTER,
                          "--gpus", "1", "--pp", "1", "--ep", "1", "--tokens", "1B",
                          "--precision", "bf16", "--schedule", "1f1b", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"moetrain plan {config_path}: exit {out.returncode}: {out.stderr}")
    return json.loads(out.stdout)


def test_flops(moetrain):
    import yaml
    with open(BENCH_CONFIG) as f:
        doc = yaml.safe_load(f)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = dict(doc, model={**doc["model"], **bench.TINY_MODEL},
                    training={**doc["training"], "seq_len": bench.TINY_SEQ})
        tiny_path = os.path.join(tmp, "tiny.yaml")
        with open(tiny_path, "w") as f:
            yaml.safe_dump(tiny, f)
        cases = [("gpu-bench-moe", BENCH_CONFIG, False), ("gpu-bench-moe --tiny", tiny_path, True),
                 ("default", os.path.join(ROOT, "configs", "default.yaml"), False),
                 ("deepseek-v3-671b", os.path.join(ROOT, "configs", "deepseek-v3-671b.yaml"),
                  False)]
        for name, path, is_tiny in cases:
            p = plan(moetrain, path)
            cfg, _, training, _ = bench.load_run_config(path, tiny=False)
            seq = p["layout"]["seq_len"]
            check(seq == int(training.get("seq_len", seq)), f"{name}: plan used seq_len {seq}")
            for mtp, key in ((True, "flops_terms"), (False, "flops_terms_no_mtp")):
                port = bench.training_flops_per_token(cfg, seq, mtp)
                bad = [f"{t}: python {port[t]!r} vs C++ {p[key][t]!r}" for t in p[key]
                       if not close(port[t], p[key][t], 1e-12)]
                check(not bad and set(port) == set(p[key]),
                      f"{name}: FLOPs/token {'with' if mtp else 'without'} MTP = "
                      f"{port['total'] / 1e9:.4f} GFLOP, every term as trainer/flops.cc"
                      + (f" ({'; '.join(bad)})" if bad else ""))
            # The planner counts the router biases as parameters; count_params does not.
            total, _ = fast.count_params(cfg)
            biases = cfg.n_routed_experts * sum(
                cfg.is_moe_layer(i) for i in range(cfg.num_layers_total))
            planner_total = int(p["params_total"] + p["params_mtp"]) - biases
            check(total == planner_total, f"{name}: {total:,} parameters (MTP included, router "
                  f"biases excluded), planner {planner_total:,}")
            if is_tiny:  # what the benchmark itself prints for --tiny
                out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu",
                                                                  "pytorch_moe_bench.py"),
                                      "--flops-only", "--tiny"], capture_output=True, text=True,
                                     timeout=60, check=True)
                printed = json.loads(out.stdout.strip().splitlines()[-1])
                check(close(printed["flops_per_token"], p["flops_per_token"], 1e-12),
                      f"{name}: --flops-only prints the C++ figure "
                      f"({printed['flops_per_token']:.0f} vs {p['flops_per_token']:.0f})")


def tiny_cfg():
    cfg, _, _, _ = bench.load_run_config(BENCH_CONFIG, tiny=True)
    return cfg


def _with_grad(t):
    c = t.detach().cpu()
    c.grad = t.grad.cpu()
    return c


def test_parity(device):
    """On `device` the fast model runs on copies of the weights (on a GPU: its fused attention
    and kernels, still in float64); the reference always runs on the CPU."""
    cfg = tiny_cfg()
    obj = ref.Objective(0.3, 1e-2)  # a large alpha, so the balance term's gradient shows
    params, biases = ref.init_params(cfg, seed=7)  # float64, router biases N(0, 0.01)
    tokens = torch.randint(0, cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(8))
    want = ref.forward(cfg, params, biases, tokens, obj)
    want["loss"].backward()
    # An expert no token reached has no gradient: zero, for both sides alike.
    grad = lambda t: t.grad.clone() if t.grad is not None else torch.zeros_like(t)  # noqa: E731
    want_grads = {n: grad(t) for n, t in params.items()}
    for t in params.values():
        t.grad = None
    dev = torch.device(device)
    on_dev = {n: t.detach().to(dev).requires_grad_(True) for n, t in params.items()}
    got = fast.forward(cfg, on_dev, {n: t.to(dev) for n, t in biases.items()}, tokens.to(dev),
                       obj)
    got["loss"].backward()
    params = {n: t.cpu() if t.grad is None else _with_grad(t) for n, t in on_dev.items()}
    for key in ("loss", "main_loss", "balance_loss"):
        a, b = got[key].item(), want[key].item()
        check(close(a, b, 1e-12), f"parity float64 on {device}: {key} {a:.15g} vs reference {b:.15g}")
    for k, (a, b) in enumerate(zip(got["mtp_loss"], want["mtp_loss"])):
        check(close(a.item(), b.item(), 1e-12), f"parity float64: mtp_loss[{k}] {a.item():.15g}")
    loads = [load.cpu().tolist() for load in got["expert_load"]]
    check(loads == want["expert_load"], f"parity: expert loads of {len(loads)} MoE layers equal")
    worst, worst_name = 0.0, ""
    for n, g in want_grads.items():
        d = ((grad(params[n]) - g).norm() / g.norm().clamp_min(1e-300)).item()
        if d > worst:
            worst, worst_name = d, n
    check(worst < 1e-10, f"parity float64: all {len(want_grads)} gradients, worst relative "
          f"error {worst:.1e} ({worst_name or 'none'})")
    # BF16 autocast on fp32 weights (the benchmark's precision): within BF16's error.
    p32 = {n: t.detach().float().to(dev).requires_grad_(True) for n, t in params.items()}
    b32 = {n: t.float().to(dev) for n, t in biases.items()}
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
        bf = fast.forward(cfg, p32, b32, tokens.to(dev), obj)
    bf["loss"].backward()
    check(close(bf["main_loss"].item(), want["main_loss"].item(), 2e-2),
          f"bf16 autocast: main loss {bf['main_loss'].item():.5f} vs float64 "
          f"{want['main_loss'].item():.5f} (within 2%)")
    reached = [n for n, g in want_grads.items() if g.abs().sum() > 0]
    check(all(p32[n].grad is not None and torch.isfinite(p32[n].grad).all() for n in reached),
          f"bf16 autocast: the {len(reached)} parameters with a float64 gradient have finite "
          "gradients")


def test_bench():
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.join(ROOT, "bench", "gpu", "pytorch_moe_bench.py"),
               "--device", "cpu", "--tiny", "--steps", "3", "--json-out", out_path]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        print(out.stdout[-2000:], out.stderr[-2000:], sep="")
        check(out.returncode == 0, f"bench --tiny on the CPU exits 0 (got {out.returncode})")
        if out.returncode != 0:
            return
        with open(out_path) as f:
            r = json.load(f)
        check(json.loads(out.stdout.strip().splitlines()[-1]) == r,
              "the last stdout line is the --json-out object")
        cfg = tiny_cfg()
        tps = r["tokens_per_step"]
        check(r["steps"] == 3 and tps == bench.TINY_SEQ * bench.TINY_BATCH,
              f"3 timed steps of {tps} tokens")
        check(close(r["tokens_per_s"], tps * 1e3 / r["step_ms"], 1e-9) and r["tokens_per_s"] > 0,
              f"tokens/s {r['tokens_per_s']:.0f} = tokens per step / step time")
        flops = bench.training_flops_per_token(cfg, bench.TINY_SEQ, True)["total"]
        check(close(r["mfu"], r["tokens_per_s"] * flops / 989.4e12, 1e-9),
              "MFU = tokens/s x Megatron FLOPs/token / 989.4 TFLOPS")
        check(math.isfinite(r["first_loss"]) and math.isfinite(r["last_loss"])
              and abs(r["first_loss"] - 1.3 * math.log(cfg.vocab_size)) < 1.0,
              f"losses finite and near 1.3 ln(vocab) for random tokens ({r['first_loss']:.3f})")
        check(r["peak_mem_bytes"] > 0, f"peak memory reported ({r['peak_mem_kind']})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moetrain", help="the moetrain binary (the flops part needs it)")
    ap.add_argument("--only", choices=["flops", "parity", "bench"])
    ap.add_argument("--device", default="cpu", help="where the parity part runs the fast model "
                    "(cuda on the GPU machine: bench/gpu/run_bench.sh)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.only in (None, "flops"):
        if not args.moetrain:
            ap.error("the flops part needs --moetrain")
        test_flops(os.path.abspath(args.moetrain))
    if args.only in (None, "parity"):
        test_parity(args.device)
    if args.only in (None, "bench"):
        test_bench()
    if failures:
        print(f"gpu_bench_test: {len(failures)} check(s) FAILED")
        return 1
    print("gpu_bench_test: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
