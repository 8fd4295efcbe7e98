#!/usr/bin/env python3
"""Compares two training runs of the same config for layout equivalence (issue 5).

usage: compare_runs.py REF_METRICS REF_STEP_DIR GOT_METRICS GOT_STEP_DIR [--rtol 1e-5]
                       [--resumed]

--resumed: GOT is a run resumed from a checkpoint, whose metrics file holds only the steps
after it; those must be a non-empty subset of the reference's.

Per step, the main, MTP and balance losses must agree to rtol (relative); every tensor of
the final checkpoint (weights, router biases, both AdamW moments) must agree to rtol in the
norm-wise relative error ||got - ref|| / ||ref|| of that tensor. (Elementwise relative error
is meaningless for a weight matrix's near-zero entries, and AdamW's first steps move an
element by about lr whatever its gradient's size, so a gradient that is all rounding noise
can move one element by a visible amount without the tensor being different.) The largest
elementwise difference relative to the tensor's largest magnitude is printed as well.
Prints the worst figures and exits 1 on any mismatch, naming the step or tensor.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pytorch"))
import safetensors_io  # noqa: E402


def losses(path):
    out = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec and "step" in rec and "event" not in rec:
                out[rec["step"]] = [rec["loss"], rec["balance_loss"]] + list(rec["mtp_loss"])
    return out


def tensors(step_dir):
    out = {}
    for name in sorted(os.listdir(step_dir)):
        if name.endswith(".safetensors"):
            for key, t in safetensors_io.read(os.path.join(step_dir, name)).items():
                out[name.split("-0")[0].replace(".safetensors", "") + ":" + key] = (
                    t.float().numpy().astype(np.float64))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref_metrics")
    ap.add_argument("ref_dir")
    ap.add_argument("got_metrics")
    ap.add_argument("got_dir")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--resumed", action="store_true")
    ap.add_argument("--tensor-rtol", type=float, default=None,
                    help="bound on the tensors' norm-wise error (default: --rtol)")
    a = ap.parse_args()
    bad = []
    ref, got = losses(a.ref_metrics), losses(a.got_metrics)
    if a.resumed:
        ref = {k: v for k, v in ref.items() if k in got}
    if sorted(ref) != sorted(got) or not ref:
        bad.append(f"logged steps differ: {sorted(ref)} vs {sorted(got)}")
    worst_loss = 0.0
    for step in sorted(set(ref) & set(got)):
        for i, (r, g) in enumerate(zip(ref[step], got[step])):
            rel = abs(r - g) / max(abs(r), 1e-30)
            worst_loss = max(worst_loss, rel)
            if rel > a.rtol:
                what = ["loss", "balance_loss", "mtp_loss"][min(i, 2)]
                bad.append(f"step {step}: {what} {g!r} vs {r!r} (rel {rel:.2e})")
    rt, gt = tensors(a.ref_dir), tensors(a.got_dir)
    if sorted(rt) != sorted(gt):
        bad.append(f"tensor sets differ: only in reference {sorted(set(rt) - set(gt))[:5]}, "
                   f"only in run {sorted(set(gt) - set(rt))[:5]}")
    worst_tensor, worst_name, worst_max = 0.0, "", 0.0
    for key in sorted(set(rt) & set(gt)):
        r, g = rt[key], gt[key]
        if r.shape != g.shape:
            bad.append(f"{key}: shape {g.shape} vs {r.shape}")
            continue
        if r.size == 0:
            continue
        rel = float(np.linalg.norm(r - g) / max(np.linalg.norm(r), 1e-30))
        worst_max = max(worst_max, float(np.max(np.abs(r - g)) / max(np.max(np.abs(r)), 1e-30)))
        if rel > worst_tensor:
            worst_tensor, worst_name = rel, key
        if rel > (a.tensor_rtol if a.tensor_rtol is not None else a.rtol):
            bad.append(f"{key}: ||diff|| / ||ref|| = {rel:.2e}")
    print(f"compared {len(set(ref) & set(got))} steps and {len(rt)} tensors: worst loss rel "
          f"{worst_loss:.2e}, worst tensor rel {worst_tensor:.2e} ({worst_name}); largest "
          f"elementwise |diff| / max |ref| {worst_max:.2e}")
    for b in bad[:20]:
        print("MISMATCH", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
