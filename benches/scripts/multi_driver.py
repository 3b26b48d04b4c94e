#!/usr/bin/env python3
"""A miner with 1 and with N endpoint drivers under many validators, each validator its own
process (issue 16).

Runs the release `lightning` binary: `lightning serve --drivers D` as the miner and V
`lightning query` processes (distinct hotkeys, so distinct connections) at once. Per cell
and driver count, alternating in rounds: requests/s over all validators (answers / the
slowest validator's time), and the miner's CPU per request (utime + stime of its process
over the cell, from /proc, divided by the answers).

    cargo build --release -p lightning-cli
    python3 benches/scripts/multi_driver.py [--rounds 3] [--drivers 1,2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "lightning"
TICK = os.sysconf("SC_CLK_TCK")

# (label, payload bytes, validators, concurrency per validator, requests per validator)
CELLS = [
    ("1 KB, 1 validator, c=32", 1024, 1, 32, 60000),
    ("1 KB, 8 validators, c=8", 1024, 8, 8, 8000),
    # At most 30 handshakes a minute per IP by default: 24 validators from 127.0.0.1.
    ("1 KB, 24 validators, c=4", 1024, 24, 4, 2500),
    ("1 MB, 4 validators, c=2", 1 << 20, 4, 2, 100),
    ("1 MB, 16 validators, c=1", 1 << 20, 16, 1, 25),
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_cell(drivers: int, size: int, validators: int, conc: int, n: int) -> dict:
    miner = subprocess.Popen(
        [str(BIN), "serve", "--host", "127.0.0.1", "--port", "0", "--seed", "01" * 32,
         "--drivers", str(drivers)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = json.loads(miner.stdout.readline())
        assert ready["drivers"] == drivers, ready
        cpu0 = cpu_seconds(miner.pid)
        procs = []
        for v in range(validators):
            seed = f"{0x10 + v:02x}" * 32
            procs.append(subprocess.Popen(
                [str(BIN), "query", "--port", str(ready["port"]), "--hotkey", ready["hotkey"],
                 "--seed", seed, "-n", str(n), "--size", str(size), "--concurrency", str(conc),
                 "--timeout-ms", "60000", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            results.append(json.loads(out.strip().splitlines()[-1]))
        cpu1 = cpu_seconds(miner.pid)
    finally:
        miner.send_signal(signal.SIGINT)
        try:
            miner.wait(timeout=10)
        except subprocess.TimeoutExpired:
            miner.kill()
    ok = sum(r["ok"] for r in results)
    failed = validators * n - ok
    slowest = max(r["elapsed_s"] for r in results)
    return {
        "rps": ok / slowest,
        "cpu_us": (cpu1 - cpu0) / max(ok, 1) * 1e6,
        "failed": failed,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--drivers", default="1,2")
    ap.add_argument("--quick", action="store_true", help="a tenth of the requests")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", help="run the cells whose label contains this text")
    args = ap.parse_args()
    if not BIN.exists():
        print(f"build it first: cargo build --release -p lightning-cli ({BIN})", file=sys.stderr)
        return 2
    counts = [int(d) for d in args.drivers.split(",")]
    rows = []
    for label, size, v, c, n in CELLS:
        if args.only and args.only not in label:
            continue
        n = max(n // 10, 10) if args.quick else n
        samples = {d: [] for d in counts}
        for r in range(args.rounds):
            order = counts if r % 2 == 0 else counts[::-1]
            for d in order:
                samples[d].append(run_cell(d, size, v, c, n))
                s = samples[d][-1]
                print(f"{label} drivers={d}: {s['rps']:.0f} req/s, miner {s['cpu_us']:.1f} µs/req,"
                      f" {s['failed']} failed", file=sys.stderr)
        rows.append((label, samples))

    lines = [
        f"# One miner, 1 against {'/'.join(map(str, counts[1:]))} endpoint drivers, validators in processes of their own",
        "",
        f"`benches/scripts/multi_driver.py`, {args.rounds} alternated rounds, medians (min–max);"
        f" {os.cpu_count()} cores; `lightning serve --drivers D` and one `lightning query`"
        " process per validator (distinct hotkeys), all on loopback.",
        "",
        "| cell | drivers | req/s | miner CPU µs/req | failed |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, samples in rows:
        for d in counts:
            rps = [s["rps"] for s in samples[d]]
            cpu = [s["cpu_us"] for s in samples[d]]
            failed = sum(s["failed"] for s in samples[d])
            lines.append(
                f"| {label} | {d} | {statistics.median(rps):,.0f} ({min(rps):,.0f}–{max(rps):,.0f})"
                f" | {statistics.median(cpu):.1f} ({min(cpu):.1f}–{max(cpu):.1f}) | {failed} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
