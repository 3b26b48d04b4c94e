"""1 KB echo benchmark of a Python validator against a Python miner in another process.

Outside CI; numbers are reported, not asserted. Runs against lightning_quic, or against
btlightning with ``--impl theirs`` (sync API only: btlightning has no asyncio API):

    python bench.py --impl ours   [--seconds 5]
    python bench.py --impl theirs [--seconds 5]

Workloads: the sync API from 1 and 16 threads, and (ours only) the asyncio API at
concurrency 32. Prints p50/p99 latency and requests per second for each.

``--miner rust`` serves the echo with the Rust CLI (``lightning serve``, from
``target/release`` or ``target/debug``; build it first) instead of a Python miner, so the
figures measure the Python validator alone.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

MINER_SEED = bytes([1] * 32)
VALIDATOR_SEED = bytes([2] * 32)
PAYLOAD = {"payload": b"x" * 1024}


def package(impl: str) -> Any:
    if impl == "ours":
        import lightning_quic as pkg
    else:
        import btlightning as pkg  # type: ignore[import-not-found, no-redef]
    return pkg


def serve(impl: str, hotkey: str, port: int, handler_threads: int = 0) -> None:
    pkg = package(impl)
    extra = {"handler_threads": handler_threads} if handler_threads else {}
    server = pkg.LightningServer(miner_hotkey=hotkey, host="127.0.0.1", port=port, **extra)
    server.set_miner_keypair(MINER_SEED)
    server.register_synapse_handler("echo", lambda data: data)
    server.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
    server.stop()


def rust_miner(port: int) -> subprocess.Popen:
    """`lightning serve` with the miner seed on `port`, once it says it is ready."""
    root = Path(__file__).resolve().parents[2]
    for profile in ("release", "debug"):
        exe = root / "target" / profile / "lightning"
        if exe.exists():
            break
    else:
        raise SystemExit("no lightning CLI under target/: cargo build --release -p lightning-cli")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--seed", MINER_SEED.hex(), "--drivers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # the ready line
    return proc


def percentile(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, latencies: List[float], elapsed: float) -> None:
    print(
        json.dumps(
            {
                "workload": label,
                "requests": len(latencies),
                "p50_us": round(percentile(latencies, 0.50) * 1e6, 1),
                "p99_us": round(percentile(latencies, 0.99) * 1e6, 1),
                "req_per_s": round(len(latencies) / elapsed),
            }
        ),
        flush=True,
    )


def sync_threads(client: Any, axon: dict, threads: int, seconds: float) -> None:
    request = {"synapse_type": "echo", "data": PAYLOAD}
    latencies: List[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        local = []
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = client.query_axon(axon, request)
            local.append(time.perf_counter() - t0)
            assert r["success"], r
        with lock:
            latencies.extend(local)

    start = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    report(f"sync x{threads} threads", latencies, time.perf_counter() - start)


def asyncio_concurrency(pkg: Any, axon: dict, validator: str, concurrency: int, seconds: float) -> None:
    import asyncio

    async def run() -> None:
        client = pkg.AsyncLightning(validator)
        client.set_validator_keypair(VALIDATOR_SEED)
        await client.initialize_connections([axon])
        request = {"synapse_type": "echo", "data": PAYLOAD}
        latencies: List[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.query_axon(axon, request)
                latencies.append(time.perf_counter() - t0)
                assert r["success"], r

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        report(f"asyncio c={concurrency}", latencies, time.perf_counter() - start)
        await client.close()

    asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["ours", "theirs"], default="ours")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--miner-hotkey", help="SS58 of seed [1]*32 (computed with lightning_quic if omitted)")
    parser.add_argument("--validator-hotkey", help="SS58 of seed [2]*32")
    parser.add_argument("--handler-threads", type=int, default=0, help="our miner's handler_threads (default: its own)")
    parser.add_argument("--miner", choices=["python", "rust"], default="python",
                        help="the miner: a Python server of --impl, or the Rust CLI's `lightning serve`")
    args = parser.parse_args()
    if args.miner_hotkey is None or args.validator_hotkey is None:
        from lightning_quic import hotkey_from_seed

        args.miner_hotkey = hotkey_from_seed(MINER_SEED)
        args.validator_hotkey = hotkey_from_seed(VALIDATOR_SEED)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if args.miner == "rust":
        miner = rust_miner(port)
    else:
        miner = subprocess.Popen(
            [sys.executable, __file__, "_serve", args.impl, args.miner_hotkey, str(port), str(args.handler_threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert miner.stdout is not None and miner.stdin is not None
        assert miner.stdout.readline().strip() == "ready"
    try:
        pkg = package(args.impl)
        axon = {"hotkey": args.miner_hotkey, "ip": "127.0.0.1", "port": port}
        client = pkg.Lightning(wallet_hotkey=args.validator_hotkey)
        client.set_validator_keypair(VALIDATOR_SEED)
        client.initialize_connections([axon])
        for _ in range(200):  # warm-up
            client.query_axon(axon, {"synapse_type": "echo", "data": PAYLOAD})
        sync_threads(client, axon, 1, args.seconds)
        sync_threads(client, axon, 16, args.seconds)
        if args.impl == "ours":
            asyncio_concurrency(pkg, axon, args.validator_hotkey, 32, args.seconds)
    finally:
        if args.miner == "rust":
            miner.terminate()
        else:
            assert miner.stdin is not None
            miner.stdin.close()
        miner.wait(10)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(main())
