#!/usr/bin/python3
"""Checks the C++ trainer's losses and gradients against the float64 PyTorch reference.

Usage: /usr/bin/python3 tests/pytorch/check_parity.py D [--rtol 1e-5] [--grad-rtol R]

D holds config.json, objective.json, model.safetensors, batch.json (inputs) and the C++
results losses.json and grads.safetensors. Checks, each counted as one pass or fail:
  - every loss (loss, main_loss, mtp_loss[k], balance_loss): |cpp - ref| / max(|ref|, 1e-12)
  - every MoE layer's expert_load: equal as integers
  - every parameter's gradient: ||g_cpp - g_ref|| / max(||g_ref||, 1e-12); a parameter present
    on one side only is a failure (router biases get no gradient and must not appear). The
    MTP modules' copies of the shared embedding/head (model.layers.{L+k}.embed_tokens.weight,
    .shared_head.head.weight) are not parameters: accepted in either file and ignored.
Prints a table and `parity: N passed, M failed`. Exit status: 0 all passed, 1 some failed,
2 the inputs could not be read (one message naming the file).
"""

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_v3_ref as ref  # noqa: E402
import safetensors_io  # noqa: E402


class InputError(Exception):
    pass


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: {e}")


def compute_reference(D):
    """Runs the float64 reference on D's inputs. Returns (cfg, results, grads)."""
    cfg = ref.ModelConfig.from_dict(_load_json(os.path.join(D, "config.json")),
                                    os.path.join(D, "config.json"))
    obj = ref.Objective.from_dict(_load_json(os.path.join(D, "objective.json")),
                                  os.path.join(D, "objective.json"))
    params, biases = ref.load_params(cfg, os.path.join(D, "model.safetensors"), torch.float64)
    tokens = ref.read_tokens(os.path.join(D, "batch.json"))
    if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise InputError(f"{os.path.join(D, 'batch.json')}: token ids must be in "
                         f"[0, {cfg.vocab_size})")
    out = ref.forward(cfg, params, biases, tokens, obj)
    out["loss"].backward()
    results = {
        "loss": out["loss"].item(), "main_loss": out["main_loss"].item(),
        "mtp_loss": [x.item() for x in out["mtp_loss"]],
        "balance_loss": out["balance_loss"].item(),
        "expert_load": out["expert_load"], "min_margin": out["min_margin"],
    }
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
             for n, p in params.items()}
    return cfg, results, grads


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def compare(results, cpp_losses, cpp_grads, rtol, grad_rtol, lines, ignored=()):
    """Appends table lines to `lines`; returns (passed, failed). Gradients named in `ignored`
    (the MTP modules' copies of the shared embedding and head) are skipped with a note."""
    passed = failed = 0

    def record(ok):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        return "ok" if ok else "FAIL"

    lines.append(f"{'loss':<24}{'reference':>22}{'c++':>22}{'rel.err':>12}  status")
    scalars = [("loss", results["loss"]), ("main_loss", results["main_loss"])]
    scalars += [(f"mtp_loss[{k}]", v) for k, v in enumerate(results["mtp_loss"])]
    scalars.append(("balance_loss", results["balance_loss"]))
    cpp_mtp = cpp_losses.get("mtp_loss", [])
    if not isinstance(cpp_mtp, list) or len(cpp_mtp) != len(results["mtp_loss"]):
        lines.append(f"mtp_loss: c++ has {cpp_mtp!r}, expected a list of "
                     f"{len(results['mtp_loss'])}  {record(False)}")
        cpp_mtp = None
    for name, r in scalars:
        if name.startswith("mtp_loss"):
            if cpp_mtp is None:
                continue
            c = cpp_mtp[int(name[9:-1])]
        else:
            c = cpp_losses.get(name)
        if not isinstance(c, (int, float)):
            lines.append(f"{name:<24}{r:>22.15g}{'(missing)':>22}{'':>12}  {record(False)}")
            continue
        err = _rel(float(c), r)
        lines.append(f"{name:<24}{r:>22.15g}{float(c):>22.15g}{err:>12.3e}  "
                     f"{record(err <= rtol)}")

    loads = cpp_losses.get("expert_load")
    ref_loads = results["expert_load"]
    if not isinstance(loads, list) or len(loads) != len(ref_loads):
        lines.append(f"expert_load: c++ has {len(loads) if isinstance(loads, list) else loads!r}"
                     f" layers, reference {len(ref_loads)}  {record(False)}")
    else:
        for i, (c, r) in enumerate(zip(loads, ref_loads)):
            ok = (isinstance(c, list) and len(c) == len(r)
                  and all(isinstance(v, (int, float)) and v == w for v, w in zip(c, r)))
            detail = "equal" if ok else f"ref {r} c++ {c}"
            lines.append(f"expert_load[{i}] (MoE layer {i}): {detail}  {record(ok)}")
    lines.append(f"routing: smallest float64 decision margin {results['min_margin']:.3e} "
                 "(below ~1e-6 an fp32 implementation may legitimately pick other experts)")

    ref_grads = results["grads"]
    skipped = sorted(n for n in cpp_grads if n in ignored)
    if skipped:
        lines.append(f"note: ignored {len(skipped)} gradient(s) of the MTP copies of the "
                     f"shared embedding/head: {skipped}")
        cpp_grads = {n: g for n, g in cpp_grads.items() if n not in ignored}
    rows = []
    for name in sorted(set(ref_grads) | set(cpp_grads)):
        if name not in cpp_grads:
            lines.append(f"grad {name}: missing in grads.safetensors  {record(False)}")
        elif name not in ref_grads:
            lines.append(f"grad {name}: not a trainable parameter of the reference "
                         f"(unexpected in grads.safetensors)  {record(False)}")
        elif list(cpp_grads[name].shape) != list(ref_grads[name].shape):
            lines.append(f"grad {name}: shape {list(cpp_grads[name].shape)}, expected "
                         f"{list(ref_grads[name].shape)}  {record(False)}")
        else:
            g, r = cpp_grads[name].double(), ref_grads[name]
            rn = r.norm().item()
            err = (g - r).norm().item() / max(rn, 1e-12)
            if math.isnan(err):
                err = math.inf
            rows.append((err, name, rn, err <= grad_rtol))
    rows.sort(key=lambda t: -t[0])
    for _, _, _, ok in rows:
        record(ok)
    bad = sum(not ok for *_, ok in rows)
    lines.append(f"gradients: {len(rows)} tensors compared, {bad} above rtol {grad_rtol:g}; "
                 "worst 10:")
    lines.append(f"  {'tensor':<60}{'||g_ref||':>12}{'rel.err':>12}  status")
    shown = rows[:10] + [r for r in rows[10:] if not r[3]]
    for err, name, rn, ok in shown:
        lines.append(f"  {name:<60}{rn:>12.4e}{err:>12.3e}  {'ok' if ok else 'FAIL'}")
    return passed, failed


def run(D, rtol=1e-5, grad_rtol=None, out=sys.stdout):
    """Returns the exit status (0 pass, 1 fail, 2 bad input) and prints the report."""
    grad_rtol = rtol if grad_rtol is None else grad_rtol
    try:
        cfg, results, grads = compute_reference(D)
        cpp_losses = _load_json(os.path.join(D, "losses.json"))
        if not isinstance(cpp_losses, dict):
            raise InputError(f"{os.path.join(D, 'losses.json')}: expected a JSON object")
        cpp_grads = safetensors_io.read(os.path.join(D, "grads.safetensors"))
    except (InputError, ref.ConfigError, safetensors_io.SafetensorsError, OSError) as e:
        print(f"check_parity: {e}", file=out)
        return 2
    results["grads"] = grads
    lines = [f"parity check of {D} (reference: float64 PyTorch {torch.__version__})"]
    passed, failed = compare(results, cpp_losses, cpp_grads, rtol, grad_rtol, lines,
                             ignored=ref.mtp_copy_names(cfg))
    lines.append(f"parity: {passed} passed, {failed} failed")
    print("\n".join(lines), file=out)
    return 0 if failed == 0 else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="exchange directory (inputs + the C++ results)")
    ap.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (losses)")
    ap.add_argument("--grad-rtol", type=float, default=None,
                    help="relative tolerance of gradient norms (default: --rtol)")
    args = ap.parse_args(argv)
    return run(args.dir, args.rtol, args.grad_rtol)


if __name__ == "__main__":
    sys.exit(main())
