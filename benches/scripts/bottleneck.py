#!/usr/bin/env python3
"""Congestion controllers at a shared bottleneck: what each costs the path and the flows
beside it (issue 15: why Cubic stays the default and BBR is opt-in).

One `lightning serve` miner behind one `lightning-netem` relay whose link towards the miner
is rate-limited with a drop-tail queue (no random loss). Validators (`lightning query`)
upload `--size`-byte requests through it to a synapse the miner does not serve: the miner
reads each whole request and answers with a short error, so the bytes that cross the
bottleneck are sent under the validator's congestion controller (`--congestion`). Per
queue size, in rounds:

* each controller alone: its rate and the share of its packets the queue dropped;
* two validators started together, Cubic beside Cubic and Cubic beside BBR: how long each
  takes to move the same bytes. While both are busy the link is full, so the flow that
  finishes first at `t` took `its bytes / (rate alone * t)` of it.

The relay listens on this machine's network address, so both ends see a peer on another
host (Lightning's WAN settings, not its loopback ones).

    cargo build --release -p lightning-cli -p lightning-netem
    python3 benches/scripts/bottleneck.py [--rounds 2] [--queues 50000,100000,500000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"


def host_address() -> str:
    """This machine's own IPv4 network address (nothing is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        ip = probe.getsockname()[0]
    finally:
        probe.close()
    if ip.startswith("127.") or ip == "0.0.0.0":
        sys.exit("no non-loopback IPv4 address: the relay could not stand for another host")
    return ip


def start_miner() -> tuple[subprocess.Popen, str, int]:
    """A `lightning serve` on a free loopback port: the process, its hotkey, its port."""
    miner = subprocess.Popen(
        [str(RELEASE / "lightning"), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert miner.stdout is not None
    for line in miner.stdout:
        if line.startswith("{"):
            ready = json.loads(line)
            return miner, ready["hotkey"], ready["port"]
    sys.exit("lightning serve exited before it was ready")


def start_relay(host: str, miner_port: int, args: argparse.Namespace, queue: int):
    """A `lightning-netem` relay on `host` towards the miner: the bottleneck (both
    directions alike), and the port it listens on."""
    relay = subprocess.Popen(
        [
            str(RELEASE / "lightning-netem"),
            "--listen", f"{host}:0",
            "--to", f"127.0.0.1:{miner_port}",
            "--profile", "lan",
            "--delay-ms", str(args.rtt_ms / 2),
            "--rate-mbit", str(args.rate_mbit),
            "--queue-bytes", str(queue),
            "--mtu", "1500",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert relay.stdout is not None
    ready = json.loads(relay.stdout.readline())
    return relay, int(ready["listen"].rsplit(":", 1)[1])


def relay_drops(relay: subprocess.Popen) -> tuple[int, int]:
    """Interrupts the relay (it prints its counters and exits): datagrams towards the
    miner received and dropped by the full queue."""
    relay.send_signal(signal.SIGINT)
    _, err = relay.communicate(timeout=10)
    m = re.search(r"to server: received (\d+) .* queue (\d+)", err)
    if not m:
        sys.exit(f"no relay counters in: {err!r}")
    return int(m.group(1)), int(m.group(2))


def query(host: str, port: int, hotkey: str, congestion: str, args: argparse.Namespace):
    """One validator uploading `args.requests` requests through the relay under
    `congestion`, two at a time."""
    return subprocess.Popen(
        [
            str(RELEASE / "lightning"), "query",
            "--ip", host, "--port", str(port), "--hotkey", hotkey,
            "--synapse", "not-served",
            "--size", str(args.size), "-n", str(args.requests), "--concurrency", "2",
            "--congestion", congestion, "--timeout-ms", "120000", "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def finish(proc: subprocess.Popen) -> float:
    """The validator's elapsed seconds; every request must have crossed in full (the
    miner's answer is its 'unrecognized synapse' error, and nothing else)."""
    out, _ = proc.communicate(timeout=600)
    r = json.loads(out)
    err = r.get("first_error") or ""
    if not r.get("connected") or r["errors"] != r["requests"] or "unrecognized" not in err:
        sys.exit(f"unexpected validator result: {r}")
    return r["elapsed_s"]


def cell(host, args, queue, congestions):
    """Validators with these congestion controllers, started together through one
    bottleneck: each one's elapsed seconds, and the share of datagrams towards the miner
    that the queue dropped."""
    # A miner per cell: every validator reaches it from the relay's one address, and the
    # miner's per-address handshake rate limit would refuse a long run's later ones.
    miner, hotkey, miner_port = start_miner()
    try:
        relay, port = start_relay(host, miner_port, args, queue)
        try:
            procs = [query(host, port, hotkey, cc, args) for cc in congestions]
            times = [finish(p) for p in procs]
        finally:
            received, dropped = relay_drops(relay)
    finally:
        miner.terminate()
        miner.wait()
    return times, dropped / max(received, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--queues", default="50000,100000,500000", help="queue sizes, bytes")
    ap.add_argument("--rate-mbit", type=float, default=20.0)
    ap.add_argument("--rtt-ms", type=float, default=40.0)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args()

    host = host_address()
    bytes_per_flow = args.size * args.requests
    bdp = args.rate_mbit * 1e6 / 8 * args.rtt_ms / 1e3
    rows = []
    for queue in (int(q) for q in args.queues.split(",")):
        got: dict[str, list] = {k: [] for k in ("cubic", "bbr", "cc", "cb")}
        for _ in range(args.rounds):
            for cc in ("cubic", "bbr"):
                (t,), drop = cell(host, args, queue, [cc])
                got[cc].append((bytes_per_flow * 8 / t / 1e6, drop))
            for key, pair in (("cc", ["cubic", "cubic"]), ("cb", ["cubic", "bbr"])):
                times, drop = cell(host, args, queue, pair)
                got[key].append((times, drop))
        med = statistics.median
        alone = med(r for r, _ in got["cubic"] + got["bbr"])
        # The share of the link the first to finish took while both were busy.
        share = [
            bytes_per_flow * 8 / 1e6 / (alone * min(t)) for t, _ in got["cb"]
        ]
        winner = ["bbr" if t[1] < t[0] else "cubic" for t, _ in got["cb"]]
        rows.append(
            f"| {queue // 1000} KB ({queue / bdp:.1f} BDP) "
            f"| {med(r for r, _ in got['cubic']):.1f} Mbit/s, "
            f"{100 * med(d for _, d in got['cubic']):.1f}% dropped "
            f"| {med(r for r, _ in got['bbr']):.1f} Mbit/s, "
            f"{100 * med(d for _, d in got['bbr']):.1f}% dropped "
            f"| {' / '.join(f'{a:.1f}+{b:.1f} s' for (a, b), _ in got['cc'])} "
            f"| {' / '.join(f'{a:.1f}+{b:.1f} s' for (a, b), _ in got['cb'])} "
            f"| {' / '.join(f'{w} {100 * min(s, 1):.0f}%' for w, s in zip(winner, share))} "
            f"| {100 * med(d for _, d in got['cb']):.1f}% |"
        )
        print(rows[-1], flush=True)

    table = "\n".join(
        [
            f"Bottleneck {args.rate_mbit:g} Mbit/s, RTT {args.rtt_ms:g} ms (BDP "
            f"{bdp / 1000:.0f} KB), no random loss; each validator uploads "
            f"{args.requests} x {args.size} B at concurrency 2; {args.rounds} rounds; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
            "",
            "| queue | Cubic alone | BBR alone | Cubic + Cubic: seconds each "
            "| Cubic + BBR: seconds (Cubic+BBR) | first to finish: share taken "
            "| Cubic + BBR: dropped |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print()
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"\ntook {time.time() - start:.0f} s", file=sys.stderr)
