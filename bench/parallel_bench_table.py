#!/usr/bin/python3
"""bench/parallel_bench_table.py: the tables of bench/parallel_bench.sh.

Reads a list of runs (tab-separated: layout name, ranks, path of the JSON object that
`moetrain train` printed after "[moetrain] comm_stats ", see parallel/communicator_stats.h)
and prints two Markdown tables: cost per layout, and bytes per group. The first run is the
reference of the ratio column.

  parallel_bench_table.py RUNS --tokens-per-step N [--cores C]
"""
import argparse
import json
import sys

GROUPS = ["pp", "dp", "ep", "expert_dp", "world"]


def human_bytes(x):
    for unit in ["B", "KiB", "MiB", "GiB"]:
        if abs(x) < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--tokens-per-step", type=int, required=True)
    ap.add_argument("--cores", type=int, default=0)
    a = ap.parse_args()
    runs = []
    with open(a.runs) as f:
        for line in f:
            name, ranks, path = line.rstrip("\n").split("\t")
            with open(path) as j:
                text = j.read().strip()
            if not text:
                sys.exit(f"{name}: the run printed no comm_stats line")
            runs.append((name, int(ranks), json.loads(text)))

    # A step ends when its slowest rank ends it: the step time is the max over ranks.
    ref = max(runs[0][2]["step_s"])
    print(f"Measured over {runs[0][2]['steps']} steps per layout after "
          f"{runs[0][2]['warmup_steps']} warm-up steps, {a.tokens_per_step} tokens per step.")
    if a.cores:
        over = sum(r > a.cores for _, r, _ in runs)
        print(f"{a.cores} cores: " +
              (f"the {over} layouts with more than {a.cores} ranks oversubscribe them (ranks "
               "share cores), so their step times and comm shares are inflated."
               if over else "no layout oversubscribes them."))
    print("Comm share: time inside communicator calls (including waiting for peers) "
          "over step time.\n")
    print("| layout | ranks | step (s) | vs 1st | tokens/s | sent/rank/step mean | max "
          "| comm share mean | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, ranks, s in runs:
        step = max(s["step_s"])
        sent = s["total"]["bytes_per_step"]
        share = [c / t for c, t in zip(s["total"]["comm_s_per_step"], s["step_s"])]
        print(f"| {name} | {ranks} | {step:.3f} | {step / ref:.2f} | "
              f"{a.tokens_per_step / step:.0f} | {human_bytes(sum(sent) / len(sent))} | "
              f"{human_bytes(max(sent))} | {100 * sum(share) / len(share):.1f}% | "
              f"{100 * max(share):.1f}% |")

    print("\nBytes sent per rank per step by group (mean over ranks), and the operations:\n")
    print("| layout | " + " | ".join(GROUPS) + " |")
    print("|---|" + "---|" * len(GROUPS))
    for name, ranks, s in runs:
        cells = []
        for g in GROUPS:
            b = s[g]["bytes_per_step"]
            ops = ", ".join(sorted(s[g]["ops"])) if sum(b) > 0 else ""
            cells.append(f"{human_bytes(sum(b) / len(b))}" + (f" ({ops})" if ops else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
