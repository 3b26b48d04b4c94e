"""Echo benchmark of the synapse layer: ``lightning_quic.synapse`` Dendrite -> Axon, or
bittensor 10.5.0's own ``bt.Dendrite`` -> ``bt.Axon``, validator and miner in separate
processes on loopback. Outside CI; numbers are reported, not asserted.

    target/btvenv/bin/python lightning-py/scripts/bench_synapse.py --impl lightning
    target/btvenv/bin/python lightning-py/scripts/bench_synapse.py --impl bittensor

The payload is ``--size`` random bytes: a ``bytes`` field over Lightning (MessagePack
binary), base64 text in a ``str`` field for bittensor (its JSON body cannot hold bytes, as
btlightning's published comparison did). Reports p50/p95/p99 latency at concurrency 1 and
requests per second at concurrency 32 with the CPU time each process spent per request,
one JSON line each.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, List

MINER_SEED = bytes([1] * 32)
VALIDATOR_SEED = bytes([2] * 32)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo_class(impl: str) -> Any:
    """The benchmark's synapse for one implementation."""
    if impl == "bittensor":
        import bittensor as bt

        class Echo(bt.Synapse):
            payload: str = ""

        return Echo
    from lightning_quic.synapse import Synapse

    class Echo(Synapse):  # type: ignore[no-redef]
        payload: bytes = b""

    return Echo


def wallet(name: str, path: str) -> Any:
    import bittensor as bt

    w = bt.Wallet(name=name, path=path)
    w.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False, suppress=True)
    return w


def miner(impl: str, port: int, wallets: str) -> None:
    """Serves the echo until stdin closes."""
    Echo = echo_class(impl)

    mode = os.environ.get("BENCH_FORWARD", "sync")

    def forward(synapse: Echo) -> Echo:  # type: ignore[valid-type]
        return synapse

    async def forward_async(synapse: Echo) -> Echo:  # type: ignore[valid-type]
        return synapse

    if mode == "async" and impl != "bittensor":
        forward = forward_async  # type: ignore[assignment]
    forward.__annotations__["synapse"] = Echo
    if impl == "bittensor":
        import bittensor as bt

        axon = bt.Axon(wallet=wallet("miner", wallets), ip="127.0.0.1", port=port, external_ip="127.0.0.1")
    else:
        from lightning_quic.synapse import Axon

        axon = Axon(
            seed=MINER_SEED, host="127.0.0.1", port=port,
            forward_in_threads=mode != "loop",
        )
    axon.attach(forward_fn=forward)
    axon.start()
    if impl == "bittensor":
        # uvicorn starts listening on a thread of its own, a moment after start().
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
    print("ready", flush=True)
    sys.stdin.read()
    axon.stop()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all threads (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def validator(impl: str, port: int, wallets: str, size: int, seconds: float, miner_pid: int) -> None:
    Echo = echo_class(impl)
    raw = os.urandom(size)
    payload: Any = base64.b64encode(raw).decode() if impl == "bittensor" else raw
    if impl == "bittensor":
        import bittensor as bt

        bt.utils.networking.get_external_ip = lambda: "127.0.0.1"  # no network lookups
        mk = wallet("miner", wallets)
        target: Any = bt.AxonInfo(
            version=1, ip="127.0.0.1", port=port, ip_type=4,
            hotkey=mk.hotkey.ss58_address, coldkey=mk.coldkeypub.ss58_address,
        )
        dendrite: Any = bt.Dendrite(wallet=wallet("validator", wallets))
    else:
        from lightning_quic import hotkey_from_seed
        from lightning_quic.synapse import Dendrite

        target = {"hotkey": hotkey_from_seed(MINER_SEED), "ip": "127.0.0.1", "port": port}
        dendrite = Dendrite(seed=VALIDATOR_SEED)

    async def one() -> float:
        t = time.perf_counter()
        r = await dendrite(target, Echo(payload=payload), timeout=12, deserialize=False)
        if r.dendrite.status_code != 200 or r.payload != payload:
            raise RuntimeError(f"bad answer: {r.dendrite.status_code} {r.dendrite.status_message}")
        return time.perf_counter() - t

    t0 = time.perf_counter()
    await one()  # connection setup (bittensor: aiohttp session; ours: QUIC + handshake)
    setup = time.perf_counter() - t0
    for _ in range(20):
        await one()
    lat: List[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        lat.append(await one())
    print(json.dumps({
        "impl": impl, "size": size, "workload": "c=1", "first_call_ms": round(setup * 1e3, 2),
        "p50_ms": round(pct(lat, 0.5) * 1e3, 3), "p95_ms": round(pct(lat, 0.95) * 1e3, 3),
        "p99_ms": round(pct(lat, 0.99) * 1e3, 3), "n": len(lat),
    }), flush=True)

    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await one()
            done += 1

    t = time.perf_counter()
    cpu = (cpu_seconds(os.getpid()), cpu_seconds(miner_pid))
    await asyncio.gather(*(worker() for _ in range(32)))
    elapsed = time.perf_counter() - t
    used = (cpu_seconds(os.getpid()) - cpu[0], cpu_seconds(miner_pid) - cpu[1])
    print(json.dumps({
        "impl": impl, "size": size, "workload": "c=32", "rps": round(done / elapsed, 1), "n": done,
        "validator_cpu_us": round(used[0] / max(done, 1) * 1e6, 1),
        "miner_cpu_us": round(used[1] / max(done, 1) * 1e6, 1),
    }), flush=True)
    close = getattr(dendrite, "aclose_session", None)
    if close is not None:
        await close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--impl", choices=["lightning", "bittensor"], default="lightning")
    p.add_argument("--size", type=int, nargs="+", default=[1024])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--role", choices=["both", "miner"], default="both")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--wallets", default="")
    a = p.parse_args()
    if a.role == "miner":
        miner(a.impl, a.port, a.wallets)
        return
    with tempfile.TemporaryDirectory() as wallets:
        port = free_port()
        if a.impl == "bittensor":
            wallet("miner", wallets)
            wallet("validator", wallets)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--impl", a.impl, "--role", "miner", "--port", str(port), "--wallets", wallets],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stdout is not None
            while proc.stdout.readline().strip() != "ready":
                if proc.poll() is not None:
                    raise SystemExit("miner exited")
            for size in a.size:
                asyncio.run(validator(a.impl, port, wallets, size, a.seconds, proc.pid))
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)


if __name__ == "__main__":
    main()
