#!/usr/bin/env python3
"""Prints run_bench.sh's one summary table from the files its steps left in a folder.

  python3 bench/gpu/bench_table.py DIR

DIR/gemm.log       gemm_bench's stdout (its markdown table rows "| M | N | K | ... |")
DIR/train.jsonl    one JSON object per training benchmark row: {"name", "tokens_per_s",
                   "mfu", "peak_mem_bytes", "note"}; a row whose figures are null was not
                   measured, and its note says why (e.g. no GPU on this machine)
Anything missing is printed as not measured, never as a number.
"""

import json
import os
import re
import sys

ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|(.*)\|\s*$")


def gemm_rows(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                m = ROW.match(line.strip())
                if m:
                    rows.append((m.group(1), m.group(2), m.group(3),
                                 [c.strip() for c in m.group(4).split("|")]))
    return rows


def fmt(v, spec, scale=1.0):
    return "-" if v is None else format(v * scale, spec)


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: bench_table.py DIR")
    d = argv[1]
    print("| benchmark | tokens/s | MFU (Megatron, /989.4 TFLOPS) | peak memory GiB | "
          "GEMM TFLOPS BF16 / FP8 block / FP8 tensor | note |")
    print("|---|---|---|---|---|---|")
    gemms = gemm_rows(os.path.join(d, "gemm.log"))
    for m, n, k, cells in gemms:
        cells = (cells + ["-"] * 3)[:3]
        print(f"| GEMM M={m} N={n} K={k} | | | | {' / '.join(cells)} | |")
    if not gemms:
        print("| GEMM (gemm_bench) | | | | not measured | see gemm.log |")
    path = os.path.join(d, "train.jsonl")
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        print(f"| {r['name']} | {fmt(r.get('tokens_per_s'), ',.0f')} | "
              f"{fmt(r.get('mfu'), '.1f', 100)}{'' if r.get('mfu') is None else '%'} | "
              f"{fmt(r.get('peak_mem_bytes'), '.1f', 2.0 ** -30)} | | {r.get('note', '')} |")
    if not rows:
        print("| training step | - | - | - | | no training benchmark ran |")


if __name__ == "__main__":
    main(sys.argv)
