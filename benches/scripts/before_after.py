#!/usr/bin/env python3
"""Runs two builds of the benchmark binary alternately and compares them cell by cell.

    benches/scripts/before_after.py BEFORE_BIN AFTER_BIN [--rounds 3] [--only SYSTEMS]
        [--out DIR] [-- extra benchmark arguments]

Each round runs BEFORE then AFTER (the order flips every other round) with `--quick`
and the same `--only`; every run writes its own report.json. For every cell (setup p50,
latency p50 per size, throughput per size) the report gives the median over rounds for
each build, the spread between rounds (max - min over both builds' round medians) and
whether the after median is worse than the before median by more than that spread.
Exits 1 if any cell is. Prints Markdown.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def cells(report):
    """(name, value, higher_is_better) for every comparable figure of one report."""
    out = []
    for s in report.get("setup", []):
        out.append((f"setup p50 µs {s['system']}", s["setup"]["p50_us"], False))
    for c in report.get("latency", []):
        out.append((f"p50 µs {c['system']} {c['size']} B", c["latency"]["p50_us"], False))
    for c in report.get("throughput", []):
        name = f"req/s {c['system']} {c['size']} B c={c['concurrency']}"
        out.append((name, c["rps"], True))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="lightning-tokio,lightning-smol,lightning-tokio-sync")
    ap.add_argument("--out", default="/tmp/before-after")
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    runs = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for which in order:
            out = os.path.join(args.out, f"{which}-{r}")
            os.makedirs(out, exist_ok=True)
            binary = getattr(args, which)
            cmd = [binary, "--quick", "--only", args.only, "--out", out, *args.extra]
            print(f"round {r + 1}: {which}", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(os.path.join(out, "report.json")) as f:
                runs[which].append(dict((n, (v, hib)) for n, v, hib in cells(json.load(f))))
    names = [n for n in runs["before"][0] if all(n in run for w in runs for run in runs[w])]
    worse = 0
    print("| cell | before (median) | after (median) | after/before | spread | worse beyond spread |")
    print("|---|---:|---:|---:|---:|---|")
    for n in names:
        hib = runs["before"][0][n][1]
        b = [run[n][0] for run in runs["before"]]
        a = [run[n][0] for run in runs["after"]]
        mb, ma = statistics.median(b), statistics.median(a)
        spread = max(b + a) - min(b + a)
        loss = (mb - ma) if hib else (ma - mb)
        bad = loss > spread
        worse += bad
        print(f"| {n} | {mb:.1f} | {ma:.1f} | {ma / mb:.2f} | {spread:.1f} | {'YES' if bad else 'no'} |")
    print(f"\n{len(names)} cells, {args.rounds} rounds each; {worse} worse beyond the spread")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
