"""btlightning's published comparison (PROTOCOL.md section 12) remeasured in one run.

Systems (validator and miner in separate processes, loopback, echo handler):

* ``bittensor``: bittensor 10.5.0 ``bt.Dendrite`` -> ``bt.Axon``, the payload base64 in a
  ``str`` field (as the published table did);
* ``btlightning``: btlightning 0.2.15 Python, sync client (c=32: 32 threads);
* ``lq-sync``: ``lightning_quic.Lightning`` (c=32: 32 threads);
* ``lq-asyncio``: ``lightning_quic.AsyncLightning`` (c=32: 32 tasks);
* ``lq-synapse``: ``lightning_quic.synapse.Dendrite`` -> ``lightning_quic.synapse.Axon``
  (``bytes`` field, sync ``forward_fn``, the Axon's defaults: it runs on a thread pool);
* ``lq-synapse-loop``: the same with ``Axon(forward_in_threads=False)``: the sync
  ``forward_fn`` runs on the event loop, as bittensor's axon runs it;
* ``rust``: the workspace's ``lightning serve`` / ``lightning query``.

Per round every system runs once (the order rotates between rounds): connection setup
(new client + connect + handshake + first 64 B echo, against a running miner), then for
each payload size latency at c=1 (sequential, up to 1000 requests or ``--seconds``) and
throughput at c=32 for ``--seconds``. Medians over rounds are reported with the
min-max spread. Afterwards one pass measures bytes on the socket: each system's traffic
goes through a counting relay run by this script (UDP for QUIC, TCP for bittensor's HTTP)
and the bytes both ways between two marks are divided by the requests between them.

    python3 lightning-py/scripts/compare.py                # full run
    python3 lightning-py/scripts/compare.py --quick        # about 30 s

``--btvenv`` is a venv with bittensor 10.5.0 and lightning_quic, ``--btlvenv`` one with
btlightning 0.2.15, ``--lightning`` the release ``lightning`` binary. Writes
``compare.md``, ``compare.json`` and SVG charts to ``--out``. Outside CI; nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

MINER_SEED = bytes([1] * 32)
VALIDATOR_SEED = bytes([2] * 32)
SIZES = [256, 1024, 10240, 102400, 1048576]
QUICK_SIZES = [1024, 102400]
SETUP_SIZE = 64
CONCURRENCY = 32
MAX_LATENCY_REQUESTS = 1000
SYSTEMS = ["bittensor", "btlightning", "lq-sync", "lq-asyncio", "lq-synapse", "lq-synapse-loop", "rust"]
SYNAPSE_SYSTEMS = ("bittensor", "lq-synapse", "lq-synapse-loop")
LABELS = {
    "bittensor": "bittensor 10.5.0 (HTTP)",
    "btlightning": "btlightning 0.2.15 Python",
    "lq-sync": "lightning_quic sync",
    "lq-asyncio": "lightning_quic asyncio",
    "lq-synapse": "lightning_quic.synapse",
    "lq-synapse-loop": "lightning_quic.synapse, forward on loop",
    "rust": "Lightning Rust (CLI)",
}
COLORS = {
    "bittensor": "#d62728",
    "btlightning": "#7f7f7f",
    "lq-sync": "#1f77b4",
    "lq-asyncio": "#17becf",
    "lq-synapse": "#2ca02c",
    "lq-synapse-loop": "#9467bd",
    "rust": "#ff7f0e",
}
HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


# ------------------------------------------------------------------ pure helpers


def size_label(n: int) -> str:
    """256 -> '256 B', 1024 -> '1 KB', 1048576 -> '1 MB'."""
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KB"
    return f"{n} B"


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest rank at index round(p/100 * (n-1)) of the sorted samples (PROTOCOL.md 12)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[int(round(p / 100.0 * (len(ordered) - 1)))]


def spread(values: Sequence[float]) -> Dict[str, float]:
    """Median, min and max of the per-round values (NaN-free)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def rotated(items: Sequence[str], k: int) -> List[str]:
    """``items`` rotated left by ``k`` (the round's order)."""
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def fmt_ms(ms: float) -> str:
    if math.isnan(ms):
        return "-"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms * 1000:.0f} µs"


def fmt_rate(r: float) -> str:
    if math.isnan(r):
        return "-"
    if r >= 10000:
        return f"{r / 1000:.1f}k"
    if r >= 100:
        return f"{r:.0f}"
    return f"{r:.1f}"


def fmt_bytes(b: float) -> str:
    if math.isnan(b):
        return "-"
    if b >= 1 << 20:
        return f"{b / (1 << 20):.2f} MiB"
    if b >= 10240:
        return f"{b / 1024:.1f} KiB"
    return f"{b:.0f} B"


def with_spread(s: Dict[str, float], fmt: Callable[[float], str]) -> str:
    """'median (min–max)', or just the median when there is a single round."""
    if s["n"] == 0:
        return "-"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


def svg_line_chart(
    title: str,
    y_label: str,
    x_labels: Sequence[str],
    series: Dict[str, Sequence[float]],
    colors: Dict[str, str],
    names: Dict[str, str],
) -> str:
    """A log-scale line chart, one line per series over categorical x positions."""
    w, h, left, right, top, bottom = 860, 420, 70, 300, 40, 50
    pw, ph = w - left - right, h - top - bottom
    vals = [v for s in series.values() for v in s if v and v > 0 and not math.isnan(v)]
    if not vals:
        vals = [1.0]
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    if hi <= lo:
        hi = lo * 10

    def x(i: int) -> float:
        return left + (pw * i / max(1, len(x_labels) - 1))

    def y(v: float) -> float:
        return top + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">{_esc(title)}</text>',
        f'<text x="16" y="{top + ph / 2}" transform="rotate(-90 16 {top + ph / 2})" '
        f'text-anchor="middle">{_esc(y_label)} (log)</text>',
    ]
    decade = lo
    while decade <= hi * 1.0001:
        yy = y(decade)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{_tick(decade)}</text>')
        decade *= 10
    for i, lab in enumerate(x_labels):
        out.append(f'<line x1="{x(i):.1f}" y1="{top}" x2="{x(i):.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x(i):.1f}" y="{top + ph + 20}" text-anchor="middle">{_esc(lab)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for k, (name, values) in enumerate(series.items()):
        color = colors.get(name, "#000")
        pts = [(x(i), y(v)) for i, v in enumerate(values) if v and v > 0 and not math.isnan(v)]
        if len(pts) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for px, py in pts:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>')
        ly = top + 14 + 20 * k
        out.append(f'<line x1="{left + pw + 15}" y1="{ly - 4}" x2="{left + pw + 35}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="3"/>')
        out.append(f'<text x="{left + pw + 40}" y="{ly}">{_esc(names.get(name, name))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _tick(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------ worker: clients


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def _echo_class(system: str) -> Any:
    if system == "bittensor":
        import bittensor as bt

        class Echo(bt.Synapse):
            payload: str = ""

        return Echo
    from lightning_quic.synapse import Synapse

    class Echo(Synapse):  # type: ignore[no-redef]
        payload: bytes = b""

    return Echo


def _bt_wallet(name: str, path: str) -> Any:
    import bittensor as bt

    w = bt.Wallet(name=name, path=path)
    w.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False, suppress=True)
    return w


class SyncClient:
    """btlightning / lightning_quic sync API: one client object, 32 threads for c=32."""

    is_async = False

    def __init__(self, system: str, port: int, miner_hotkey: str, validator_hotkey: str) -> None:
        if system == "btlightning":
            import btlightning as pkg  # type: ignore[import-not-found]
        else:
            import lightning_quic as pkg  # type: ignore[no-redef]
        self.pkg = pkg
        self.axon = {"hotkey": miner_hotkey, "ip": "127.0.0.1", "port": port}
        self.validator_hotkey = validator_hotkey

    def new(self) -> Any:
        c = self.pkg.Lightning(wallet_hotkey=self.validator_hotkey)
        c.set_validator_keypair(VALIDATOR_SEED)
        c.initialize_connections([self.axon])
        return c

    def payload(self, size: int) -> Any:
        return b"\x42" * size

    def echo(self, c: Any, payload: Any) -> None:
        r = c.query_axon(self.axon, {"synapse_type": "echo", "data": {"payload": payload}})
        if not r["success"] or r["data"].get("payload") != payload:
            raise RuntimeError(f"bad answer: {r.get('error')}")

    def close(self, c: Any) -> None:
        c.close()


class AsyncClient:
    """lightning_quic asyncio, lightning_quic.synapse and bittensor's dendrite."""

    is_async = True

    def __init__(self, system: str, port: int, miner_hotkey: str, validator_hotkey: str, wallets: str) -> None:
        self.system = system
        self.port = port
        self.miner_hotkey = miner_hotkey
        self.validator_hotkey = validator_hotkey
        if system == "bittensor":
            import bittensor as bt

            bt.utils.networking.get_external_ip = lambda: "127.0.0.1"  # no network lookups
            self.bt = bt
            self.wallet = _bt_wallet("validator", wallets)
            mk = _bt_wallet("miner", wallets)
            self.target: Any = bt.AxonInfo(
                version=1, ip="127.0.0.1", port=port, ip_type=4,
                hotkey=mk.hotkey.ss58_address, coldkey=mk.coldkeypub.ss58_address,
            )
            self.Echo = _echo_class(system)
        elif system in SYNAPSE_SYSTEMS:
            self.target = {"hotkey": miner_hotkey, "ip": "127.0.0.1", "port": port}
            self.Echo = _echo_class(system)
        else:
            self.target = {"hotkey": miner_hotkey, "ip": "127.0.0.1", "port": port}

    def payload(self, size: int) -> Any:
        raw = b"\x42" * size
        return _b64(raw) if self.system == "bittensor" else raw

    async def new(self) -> Any:
        if self.system == "bittensor":
            return self.bt.Dendrite(wallet=self.wallet)
        if self.system in SYNAPSE_SYSTEMS:
            from lightning_quic.synapse import Dendrite

            return Dendrite(seed=VALIDATOR_SEED)
        import lightning_quic

        c = lightning_quic.AsyncLightning(self.validator_hotkey)
        c.set_validator_keypair(VALIDATOR_SEED)
        await c.initialize_connections([self.target])
        return c

    async def echo(self, c: Any, payload: Any) -> None:
        if self.system in SYNAPSE_SYSTEMS:
            r = await c(self.target, self.Echo(payload=payload), timeout=60, deserialize=False)
            if r.dendrite.status_code != 200 or r.payload != payload:
                raise RuntimeError(f"bad answer: {r.dendrite.status_code} {r.dendrite.status_message}")
            return
        r = await c.query_axon(self.target, {"synapse_type": "echo", "data": {"payload": payload}})
        if not r["success"] or r["data"].get("payload") != payload:
            raise RuntimeError(f"bad answer: {r.get('error')}")

    async def close(self, c: Any) -> None:
        if self.system in SYNAPSE_SYSTEMS:
            await c.aclose_session()
        else:
            await c.close()


def _emit(obj: Dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def _latency_result(size: int, lat: List[float]) -> Dict[str, Any]:
    return {
        "kind": "latency", "size": size, "n": len(lat),
        "p50_ms": percentile(lat, 50) * 1e3, "p95_ms": percentile(lat, 95) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
    }


def _sync_throughput(client: "SyncClient", c: Any, payload: Any, seconds: float) -> Tuple[int, float]:
    """Echoes from CONCURRENCY threads sharing one client for ``seconds``."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    counts = [0] * CONCURRENCY
    end = time.perf_counter() + seconds
    lock = threading.Lock()
    errors: List[BaseException] = []

    def worker(i: int) -> None:
        try:
            while time.perf_counter() < end:
                client.echo(c, payload)
                counts[i] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(e)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(worker, range(CONCURRENCY)))
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts), elapsed


async def _async_throughput(client: "AsyncClient", c: Any, payload: Any, seconds: float) -> Tuple[int, float]:
    """Echoes from CONCURRENCY tasks sharing one client for ``seconds``."""
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await client.echo(c, payload)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done, time.perf_counter() - t0


def run_sync_validator(client: SyncClient, cfg: Dict[str, Any]) -> None:
    if cfg["mode"] == "bytes":
        c = client.new()
        client.echo(c, client.payload(SETUP_SIZE))
        _emit({"mark": "setup"})
        sys.stdin.readline()
        for size, n in cfg["bytes_plan"]:
            p = client.payload(size)
            for _ in range(n):
                client.echo(c, p)
            _emit({"mark": "size", "size": size, "n": n})
            sys.stdin.readline()
        client.close(c)
        return
    setup = []
    for _ in range(cfg["setup_samples"]):
        t = time.perf_counter()
        c = client.new()
        client.echo(c, client.payload(SETUP_SIZE))
        setup.append(time.perf_counter() - t)
        client.close(c)
    _emit({"kind": "setup", "p50_ms": percentile(setup, 50) * 1e3, "n": len(setup)})
    c = client.new()
    for size in cfg["sizes"]:
        p = client.payload(size)
        for _ in range(cfg["warmup"]):
            client.echo(c, p)
        lat: List[float] = []
        end = time.perf_counter() + cfg["seconds"]
        while len(lat) < MAX_LATENCY_REQUESTS and time.perf_counter() < end:
            t = time.perf_counter()
            client.echo(c, p)
            lat.append(time.perf_counter() - t)
        _emit(_latency_result(size, lat))
        done, elapsed = _sync_throughput(client, c, p, cfg["seconds"])
        _emit({"kind": "throughput", "size": size, "n": done, "rps": done / elapsed})
    client.close(c)


async def run_async_validator(client: AsyncClient, cfg: Dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    if cfg["mode"] == "bytes":
        c = await client.new()
        await client.echo(c, client.payload(SETUP_SIZE))
        _emit({"mark": "setup"})
        await loop.run_in_executor(None, sys.stdin.readline)
        for size, n in cfg["bytes_plan"]:
            p = client.payload(size)
            for _ in range(n):
                await client.echo(c, p)
            _emit({"mark": "size", "size": size, "n": n})
            await loop.run_in_executor(None, sys.stdin.readline)
        await client.close(c)
        return
    setup = []
    for _ in range(cfg["setup_samples"]):
        t = time.perf_counter()
        c = await client.new()
        await client.echo(c, client.payload(SETUP_SIZE))
        setup.append(time.perf_counter() - t)
        await client.close(c)
    _emit({"kind": "setup", "p50_ms": percentile(setup, 50) * 1e3, "n": len(setup)})
    c = await client.new()
    for size in cfg["sizes"]:
        p = client.payload(size)
        for _ in range(cfg["warmup"]):
            await client.echo(c, p)
        lat: List[float] = []
        end = time.perf_counter() + cfg["seconds"]
        while len(lat) < MAX_LATENCY_REQUESTS and time.perf_counter() < end:
            t = time.perf_counter()
            await client.echo(c, p)
            lat.append(time.perf_counter() - t)
        _emit(_latency_result(size, lat))
        done, elapsed = await _async_throughput(client, c, p, cfg["seconds"])
        _emit({"kind": "throughput", "size": size, "n": done, "rps": done / elapsed})
    await client.close(c)


def validator_main(cfg: Dict[str, Any]) -> None:
    system = cfg["system"]
    if system in ("btlightning", "lq-sync"):
        run_sync_validator(SyncClient(system, cfg["port"], cfg["miner_hotkey"], cfg["validator_hotkey"]), cfg)
    else:
        client = AsyncClient(system, cfg["port"], cfg["miner_hotkey"], cfg["validator_hotkey"], cfg["wallets"])
        asyncio.run(run_async_validator(client, cfg))


# ------------------------------------------------------------------ worker: miners


def miner_main(cfg: Dict[str, Any]) -> None:
    """Serves the echo on cfg['port'] until stdin closes."""
    import threading

    system, port = cfg["system"], cfg["port"]
    if system in SYNAPSE_SYSTEMS:
        Echo = _echo_class(system)

        def forward(synapse: Echo) -> Echo:  # type: ignore[valid-type]
            return synapse

        forward.__annotations__["synapse"] = Echo
        if system == "bittensor":
            import bittensor as bt

            axon: Any = bt.Axon(
                wallet=_bt_wallet("miner", cfg["wallets"]), ip="127.0.0.1", port=port, external_ip="127.0.0.1"
            )
        else:
            from lightning_quic.synapse import Axon

            extra: Dict[str, Any] = {}
            if system == "lq-synapse-loop":
                extra["forward_in_threads"] = False
            elif os.environ.get("COMPARE_FORWARD_IN_THREADS") in ("0", "1"):
                # For before/after runs of the default system only.
                extra["forward_in_threads"] = os.environ["COMPARE_FORWARD_IN_THREADS"] == "1"
            axon = Axon(seed=MINER_SEED, host="127.0.0.1", port=port, **extra)
        axon.attach(forward_fn=forward)
        axon.start()
        if system == "bittensor":
            # uvicorn starts listening on a thread of its own, a moment after start().
            for _ in range(400):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
        print("ready", flush=True)
        sys.stdin.read()
        axon.stop()
        return
    if system == "btlightning":
        import btlightning as pkg  # type: ignore[import-not-found]
    else:
        import lightning_quic as pkg  # type: ignore[no-redef]
    server = pkg.LightningServer(miner_hotkey=cfg["miner_hotkey"], host="127.0.0.1", port=port)
    server.set_miner_keypair(MINER_SEED)
    server.register_synapse_handler("echo", lambda data: data)
    server.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
    server.stop()


# ------------------------------------------------------------------ driver: processes


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Env:
    """Where each system's processes come from."""

    def __init__(self, args: argparse.Namespace, wallets: str) -> None:
        self.btvenv_py = os.path.join(args.btvenv, "bin", "python")
        self.btlvenv_py = os.path.join(args.btlvenv, "bin", "python")
        self.lightning = args.lightning
        self.wallets = wallets
        out = subprocess.run(
            [self.btvenv_py, "-c",
             "import sys; from lightning_quic import hotkey_from_seed as h; "
             "print(h(bytes([1]*32))); print(h(bytes([2]*32)))"],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        self.miner_hotkey, self.validator_hotkey = out[0], out[1]

    def python(self, system: str) -> str:
        return self.btlvenv_py if system == "btlightning" else self.btvenv_py

    def cfg(self, system: str, port: int, **extra: Any) -> Dict[str, Any]:
        return {
            "system": system, "port": port, "wallets": self.wallets,
            "miner_hotkey": self.miner_hotkey, "validator_hotkey": self.validator_hotkey, **extra,
        }


class Miner:
    """A miner process for one system on its own port."""

    def __init__(self, env: Env, system: str) -> None:
        self.system = system
        self.port = free_port(socket.SOCK_STREAM if system == "bittensor" else socket.SOCK_DGRAM)
        if system == "rust":
            cmd = [env.lightning, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--seed", MINER_SEED.hex()]
        else:
            cmd = [env.python(system), HERE, "_miner", json.dumps(env.cfg(system, self.port))]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            # `lightning serve` warns on stderr that it admits any validator.
            stderr=subprocess.DEVNULL if system == "rust" else None,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{system} miner exited before it was ready")

    def stop(self) -> None:
        if self.system == "rust":
            self.proc.terminate()
        else:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rust_query(env: Env, port: int, size: int, n: int, concurrency: int) -> Dict[str, Any]:
    out = subprocess.run(
        [env.lightning, "query", "--ip", "127.0.0.1", "--port", str(port), "--hotkey", env.miner_hotkey,
         "--seed", VALIDATOR_SEED.hex(), "--size", str(size), "-n", str(n),
         "--concurrency", str(concurrency), "--json"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"lightning query failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class RustPlan:
    """Request counts for the Rust CLI (count-based), sized from the previous round's rate."""

    def __init__(self) -> None:
        self.rate: Dict[Tuple[int, int], float] = {}

    def n(self, size: int, concurrency: int, seconds: float) -> int:
        rate = self.rate[(size, concurrency)]
        return int(max(100, min(500_000, rate * seconds)))

    def probe(self, env: "Env", port: int, size: int, concurrency: int) -> None:
        """A first, unrecorded run that sets the rate (once per cell)."""
        if (size, concurrency) not in self.rate:
            n = (2000 if size <= 10240 else 200 if size <= 102400 else 30) if concurrency > 1 else 100
            self.rate[(size, concurrency)] = rust_query(env, port, size, n, concurrency)["req_per_s"]


def run_rust_round(env: Env, miner: Miner, cfg: Dict[str, Any], plan: RustPlan) -> List[Dict[str, Any]]:
    results = []
    setup = []
    # Every `lightning query` is a new connection, and a miner admits 30 handshakes per
    # validator in a short window: the setup samples get a miner of their own.
    setup_miner = Miner(env, "rust")
    try:
        for _ in range(cfg["setup_samples"]):
            q = rust_query(env, setup_miner.port, SETUP_SIZE, 1, 1)
            setup.append(q["connect_ms"] + q["p50_us"] / 1e3)
    finally:
        setup_miner.stop()
    results.append({"kind": "setup", "p50_ms": percentile(setup, 50), "n": len(setup)})
    for size in cfg["sizes"]:
        plan.probe(env, miner.port, size, 1)
        plan.probe(env, miner.port, size, CONCURRENCY)
        n1 = min(MAX_LATENCY_REQUESTS, plan.n(size, 1, cfg["seconds"]))
        q = rust_query(env, miner.port, size, n1, 1)
        plan.rate[(size, 1)] = q["req_per_s"]
        results.append({"kind": "latency", "size": size, "n": n1, "p50_ms": q["p50_us"] / 1e3,
                        "p95_ms": q["p95_us"] / 1e3, "p99_ms": q["p99_us"] / 1e3})
        n32 = plan.n(size, CONCURRENCY, cfg["seconds"])
        q = rust_query(env, miner.port, size, n32, CONCURRENCY)
        plan.rate[(size, CONCURRENCY)] = q["req_per_s"]
        results.append({"kind": "throughput", "size": size, "n": n32, "rps": q["req_per_s"]})
    return results


def run_round(env: Env, system: str, cfg: Dict[str, Any], plan: RustPlan) -> List[Dict[str, Any]]:
    miner = Miner(env, system)
    try:
        if system == "rust":
            return run_rust_round(env, miner, cfg, plan)
        proc = subprocess.run(
            [env.python(system), HERE, "_validator", json.dumps(env.cfg(system, miner.port, mode="timed", **cfg))],
            capture_output=True, text=True, timeout=1800,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{system} validator failed:\n{proc.stderr[-3000:]}")
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    finally:
        miner.stop()


# ------------------------------------------------------------------ driver: counting relays


class Counter:
    def __init__(self) -> None:
        self.up = 0  # validator -> miner
        self.down = 0  # miner -> validator
        self.up_packets = 0
        self.down_packets = 0

    def snapshot(self) -> Tuple[int, int, int, int]:
        return self.up, self.down, self.up_packets, self.down_packets


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: "UdpRelay", client: Tuple[str, int]) -> None:
        self.relay, self.client = relay, client
        self.transport: Optional[asyncio.DatagramTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Tuple[str, int]) -> None:
        self.relay.counter.down += len(data)
        self.relay.counter.down_packets += 1
        assert self.relay.transport is not None
        self.relay.transport.sendto(data, self.client)


class UdpRelay(asyncio.DatagramProtocol):
    """Forwards datagrams between validators and a miner, counting UDP payload bytes
    (QUIC packets: headers, TLS, frames, ACKs) both ways; one upstream socket per client."""

    def __init__(self, target: Tuple[str, int], counter: Counter) -> None:
        self.target, self.counter = target, counter
        self.transport: Optional[asyncio.DatagramTransport] = None
        self.upstreams: Dict[Tuple[str, int], _Upstream] = {}
        self.pending: Dict[Tuple[str, int], List[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Tuple[str, int]) -> None:
        self.counter.up += len(data)
        self.counter.up_packets += 1
        up = self.upstreams.get(addr)
        if up is not None and up.transport is not None:
            up.transport.sendto(data)
            return
        if addr in self.pending:
            self.pending[addr].append(data)
            return
        self.pending[addr] = [data]
        asyncio.get_running_loop().create_task(self._open(addr))

    async def _open(self, addr: Tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, addr), remote_addr=self.target, sock=None
        )
        _big_buffers(proto.transport)
        self.upstreams[addr] = proto
        assert proto.transport is not None
        for d in self.pending.pop(addr, []):
            proto.transport.sendto(d)


def _big_buffers(transport: Any) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
            except OSError:
                pass


async def _tcp_pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Callable[[int], None]) -> None:
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            count(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


async def start_relay(system: str, target_port: int, counter: Counter) -> Tuple[int, Callable[[], None]]:
    """A counting relay in front of a miner; returns its port and a closer."""
    loop = asyncio.get_running_loop()
    if system == "bittensor":
        def up(n: int) -> None:
            counter.up += n
            counter.up_packets += 1

        def down(n: int) -> None:
            counter.down += n
            counter.down_packets += 1

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
            await asyncio.gather(_tcp_pipe(r, uw, up), _tcp_pipe(ur, w, down))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        return port, server.close
    transport, relay = await loop.create_datagram_endpoint(
        lambda: UdpRelay(("127.0.0.1", target_port), counter), local_addr=("127.0.0.1", 0)
    )
    _big_buffers(transport)

    def close() -> None:
        for u in relay.upstreams.values():
            if u.transport is not None:
                u.transport.close()
        transport.close()

    return transport.get_extra_info("sockname")[1], close


def bytes_plan(sizes: Sequence[int], quick: bool) -> List[Tuple[int, int]]:
    """Requests per size for the bytes pass: fewer for big payloads (the relay is Python)."""
    base = 20 if quick else 100
    return [(s, max(5, base if s <= 10240 else base // 5 if s <= 102400 else base // 20)) for s in sizes]


def _per_request(before: Tuple[int, ...], after: Tuple[int, ...], n: int) -> Dict[str, float]:
    up, down, upp, downp = (a - b for a, b in zip(after, before, strict=True))
    return {"up": up / n, "down": down / n, "total": (up + down) / n, "packets": (upp + downp) / n}


async def measure_bytes(env: Env, system: str, plan: List[Tuple[int, int]]) -> Dict[str, Any]:
    """Bytes on the socket per request for each size (and for connection setup)."""
    miner = Miner(env, system)
    counter = Counter()
    port, close = await start_relay(system, miner.port, counter)
    result: Dict[str, Any] = {}
    try:
        if system == "rust":
            loop = asyncio.get_running_loop()

            async def run(size: int, n: int) -> Tuple[int, ...]:
                before = counter.snapshot()
                await loop.run_in_executor(None, rust_query, env, port, size, n, 1)
                await asyncio.sleep(0.2)
                return tuple(a - b for a, b in zip(counter.snapshot(), before, strict=True))

            one = await run(SETUP_SIZE, 1)
            result["setup"] = float(one[0] + one[1])
            for size, n in plan:
                a = await run(size, 1)
                b = await run(size, n + 1)
                result[str(size)] = _per_request(a, b, n)
            return result
        cfg = env.cfg(system, port, mode="bytes", bytes_plan=plan)
        proc = await asyncio.create_subprocess_exec(
            env.python(system), HERE, "_validator", json.dumps(cfg),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        last = counter.snapshot()
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 600)
            if not line:
                break
            if not line.startswith(b"{"):
                continue
            mark = json.loads(line)
            await asyncio.sleep(0.2)  # let trailing ACKs pass
            now = counter.snapshot()
            if mark["mark"] == "setup":
                result["setup"] = float(now[0] + now[1])
            else:
                result[str(mark["size"])] = _per_request(last, now, mark["n"])
            last = counter.snapshot()
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        if await proc.wait() != 0:
            raise RuntimeError(f"{system} bytes pass failed")
        return result
    finally:
        close()
        miner.stop()


# ------------------------------------------------------------------ driver: report


def aggregate(raw: Dict[str, List[List[Dict[str, Any]]]], sizes: Sequence[int]) -> Dict[str, Any]:
    """Per system: setup, and per size latency/throughput spreads over rounds."""
    agg: Dict[str, Any] = {}
    for system, rounds in raw.items():
        entry: Dict[str, Any] = {"setup_ms": spread([r["p50_ms"] for rd in rounds for r in rd if r["kind"] == "setup"])}
        for size in sizes:
            lat = [r for rd in rounds for r in rd if r["kind"] == "latency" and r["size"] == size]
            tp = [r for rd in rounds for r in rd if r["kind"] == "throughput" and r["size"] == size]
            entry[str(size)] = {
                "p50_ms": spread([r["p50_ms"] for r in lat]),
                "p95_ms": spread([r["p95_ms"] for r in lat]),
                "p99_ms": spread([r["p99_ms"] for r in lat]),
                "rps": spread([r["rps"] for r in tp]),
                "latency_samples": [r["n"] for r in lat],
                "throughput_requests": [r["n"] for r in tp],
            }
        agg[system] = entry
    return agg


def paired_ratios(raw: Dict[str, List[List[Dict[str, Any]]]], a: str, b: str, size: int, kind: str, key: str) -> List[float]:
    """a/b per round for one metric (rounds pair up: same round, same machine state)."""
    out = []
    for ra, rb in zip(raw.get(a, []), raw.get(b, []), strict=False):
        va = [r[key] for r in ra if r["kind"] == kind and r.get("size") == size]
        vb = [r[key] for r in rb if r["kind"] == kind and r.get("size") == size]
        if va and vb and vb[0]:
            out.append(va[0] / vb[0])
    return out


def goals(raw: Dict[str, List[List[Dict[str, Any]]]], agg: Dict[str, Any]) -> Dict[str, Any]:
    """The issue's goal at 1 KB: synapse >= 100x bittensor's req/s, p50 <= 1/50 of it
    (for ``lq-synapse``, the Axon's defaults; ``lq-synapse-loop`` reported alongside)."""
    out: Dict[str, Any] = {}
    if "bittensor" not in agg or "1024" not in agg["bittensor"]:
        return out
    b = agg["bittensor"]["1024"]
    for system in ("lq-synapse", "lq-synapse-loop"):
        if system not in agg:
            continue
        s = agg[system]["1024"]
        tput = s["rps"]["median"] / b["rps"]["median"]
        lat = b["p50_ms"]["median"] / s["p50_ms"]["median"]
        out[system] = {
            "throughput_ratio": tput,
            "throughput_ratio_per_round": paired_ratios(raw, system, "bittensor", 1024, "throughput", "rps"),
            "throughput_goal": 100.0,
            "throughput_met": tput >= 100.0,
            "p50_ratio": lat,
            "p50_ratio_per_round": [1 / r for r in paired_ratios(raw, system, "bittensor", 1024, "latency", "p50_ms")],
            "p50_goal": 50.0,
            "p50_met": lat >= 50.0,
        }
    return out


def markdown(meta: Dict[str, Any], agg: Dict[str, Any], wire: Dict[str, Any], goal: Dict[str, Any], sizes: Sequence[int]) -> str:
    systems = [s for s in SYSTEMS if s in agg]
    head = "| | " + " | ".join(size_label(s) for s in sizes) + " |"
    sep = "|---|" + "---:|" * len(sizes)
    lines = [
        "# bittensor vs btlightning vs Lightning, one run",
        "",
        f"{meta['when']}; {meta['machine']}; {meta['rounds']} round(s), {meta['seconds']} s per cell; "
        "validator and miner in separate processes on loopback; medians over rounds with the "
        f"min–max spread in brackets. Load average {meta['load_before']} before, "
        f"{meta['load_after']} after. The run took {meta['duration_s']:.0f} s."
        + (f" {meta['note']}" if meta.get("note") else ""),
        "",
        "## Requests/s at c=32",
        "",
        head, sep,
    ]
    for s in systems:
        lines.append(f"| {LABELS[s]} | " + " | ".join(with_spread(agg[s][str(z)]["rps"], fmt_rate) for z in sizes) + " |")
    for title, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms")):
        lines += ["", f"## Latency {title} at c=1", "", head, sep]
        for s in systems:
            lines.append(f"| {LABELS[s]} | " + " | ".join(with_spread(agg[s][str(z)][key], fmt_ms) for z in sizes) + " |")
    lines += ["", "## Connection setup p50 (new client, connect, handshake, first 64 B echo)", "",
              "| system | p50 | setup bytes on the socket |", "|---|---:|---:|"]
    for s in systems:
        sb = wire.get(s, {}).get("setup", math.nan)
        lines.append(f"| {LABELS[s]} | {with_spread(agg[s]['setup_ms'], fmt_ms)} | {fmt_bytes(sb)} |")
    if wire:
        lines += ["", "## Bytes on the socket per request (both directions)", "",
                  "Counted by a relay in front of the miner: UDP payload bytes (QUIC packets) for the "
                  "QUIC systems, TCP stream bytes (HTTP) for bittensor; IP/UDP/TCP headers not included. "
                  "Datagrams per request in brackets.", "", head, sep]
        for s in systems:
            if s in wire:
                cells = []
                for z in sizes:
                    w = wire[s].get(str(z))
                    if not w:
                        cells.append("-")
                    elif s == "bittensor":
                        cells.append(fmt_bytes(w["total"]))
                    else:
                        cells.append(f"{fmt_bytes(w['total'])} ({w['packets']:.1f} datagrams)")
                lines.append(f"| {LABELS[s]} | " + " | ".join(cells) + " |")
    if goal:
        lines += ["", "## Goal at 1 KB: `synapse.Dendrite` -> `synapse.Axon` against bittensor", ""]
        for system, g in goal.items():
            tr, pr = g["throughput_ratio_per_round"], g["p50_ratio_per_round"]
            lines += [
                f"* {LABELS[system]}: throughput {g['throughput_ratio']:.0f}x bittensor's (goal >= 100x): "
                f"**{'met' if g['throughput_met'] else 'not met'}**"
                + (f" (per round {min(tr):.0f}–{max(tr):.0f}x)" if tr else "")
                + f"; p50 1/{g['p50_ratio']:.0f} of bittensor's (goal <= 1/50): "
                f"**{'met' if g['p50_met'] else 'not met'}**"
                + (f" (per round 1/{min(pr):.0f}–1/{max(pr):.0f})" if pr else ""),
            ]
    return "\n".join(lines) + "\n"


def charts(out: str, agg: Dict[str, Any], sizes: Sequence[int]) -> List[str]:
    xl = [size_label(s) for s in sizes]
    systems = [s for s in SYSTEMS if s in agg]
    written = []
    for fname, title, ylab, key in (
        ("compare_throughput.svg", "Requests/s at c=32 (median over rounds)", "requests/s", "rps"),
        ("compare_latency_p50.svg", "p50 latency at c=1 (median over rounds)", "ms", "p50_ms"),
        ("compare_latency_p99.svg", "p99 latency at c=1 (median over rounds)", "ms", "p99_ms"),
    ):
        series = {s: [agg[s][str(z)][key]["median"] for z in sizes] for s in systems}
        with open(os.path.join(out, fname), "w") as f:
            f.write(svg_line_chart(title, ylab, xl, series, COLORS, LABELS))
        written.append(fname)
    return written


def wire_chart(out: str, wire: Dict[str, Any], sizes: Sequence[int]) -> Optional[str]:
    if not wire:
        return None
    series = {s: [wire[s].get(str(z), {}).get("total", math.nan) for z in sizes] for s in SYSTEMS if s in wire}
    with open(os.path.join(out, "compare_wire_bytes.svg"), "w") as f:
        f.write(svg_line_chart("Bytes on the socket per request, both directions", "bytes",
                               [size_label(s) for s in sizes], series, COLORS, LABELS))
    return "compare_wire_bytes.svg"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def driver(args: argparse.Namespace) -> int:
    started = time.time()
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    systems = args.systems.split(",") if args.systems else SYSTEMS
    rounds = args.rounds if args.rounds else (1 if args.quick else 3)
    seconds = args.seconds if args.seconds else (0.5 if args.quick else 2.0)
    cfg = {"sizes": sizes, "seconds": seconds, "warmup": 20,
           "setup_samples": args.setup_samples or (3 if args.quick else 20)}
    os.makedirs(args.out, exist_ok=True)
    load_before = loadavg()
    raw: Dict[str, List[List[Dict[str, Any]]]] = {s: [] for s in systems}
    plan = RustPlan()
    with tempfile.TemporaryDirectory() as wallets:
        env = Env(args, wallets)
        if "bittensor" in systems:
            subprocess.run([env.btvenv_py, "-c", "import sys, json; sys.path.insert(0, %r); import compare; "
                            "[compare._bt_wallet(n, %r) for n in ('miner', 'validator')]" % (os.path.dirname(HERE), wallets)],
                           check=True, capture_output=True)
        for r in range(rounds):
            for system in rotated(systems, r):
                t = time.time()
                res = run_round(env, system, cfg, plan)
                raw[system].append(res)
                print(f"round {r + 1}/{rounds} {system}: {time.time() - t:.1f} s", file=sys.stderr, flush=True)
        wire: Dict[str, Any] = {}
        if not args.no_bytes:
            bp = bytes_plan(sizes, args.quick)
            for system in systems:
                t = time.time()
                wire[system] = asyncio.run(measure_bytes(env, system, bp))
                print(f"bytes {system}: {time.time() - t:.1f} s", file=sys.stderr, flush=True)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "note": args.note,
        "rounds": rounds, "seconds": seconds, "setup_samples": cfg["setup_samples"],
        "sizes": sizes, "concurrency": CONCURRENCY, "load_before": load_before, "load_after": loadavg(),
        "duration_s": time.time() - started, "quick": args.quick,
        "lq_synapse_forward_in_threads": os.environ.get("COMPARE_FORWARD_IN_THREADS", "default"),
    }
    return write_report(args.out, meta, raw, wire)


def write_report(out: str, meta: Dict[str, Any], raw: Dict[str, List[List[Dict[str, Any]]]], wire: Dict[str, Any]) -> int:
    """compare.json, compare.md and the charts from the raw per-round results."""
    sizes = meta["sizes"]
    agg = aggregate(raw, sizes)
    goal = goals(raw, agg)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump({"meta": meta, "summary": agg, "goal": goal, "wire_bytes": wire, "rounds": raw}, f, indent=1)
    md = markdown(meta, agg, wire, goal, sizes)
    files = charts(out, agg, sizes)
    wc = wire_chart(out, wire, sizes)
    if wc:
        files.append(wc)
    md += "\n" + "\n".join(f"![{f}]({f})" for f in files) + "\n"
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


def replot(path: str, out: str, note: str) -> int:
    """Rewrites the report from an earlier run's compare.json (no measuring); a non-empty
    ``note`` replaces the run's note."""
    with open(path) as f:
        old = json.load(f)
    os.makedirs(out, exist_ok=True)
    if note:
        old["meta"]["note"] = note
    return write_report(out, old["meta"], old["rounds"], old["wire_bytes"])


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] in ("_miner", "_validator"):
        cfg = json.loads(sys.argv[2])
        if sys.argv[1] == "_miner":
            miner_main(cfg)
        else:
            validator_main(cfg)
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 round, 0.5 s cells, 1 KB and 100 KB")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0.0, help="per latency and per throughput cell")
    p.add_argument("--setup-samples", type=int, default=0)
    p.add_argument("--sizes", default="", help="comma-separated payload sizes in bytes")
    p.add_argument("--systems", default="", help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--no-bytes", action="store_true", help="skip the bytes-on-the-socket pass")
    p.add_argument("--btvenv", default=os.path.join(ROOT, "target", "btvenv"))
    p.add_argument("--btlvenv", default="/tmp/btlvenv")
    p.add_argument("--lightning", default=os.path.join(ROOT, "target", "release", "lightning"))
    p.add_argument("--out", default=os.path.join(ROOT, "lightning-py", "bench-results"))
    p.add_argument("--note", default="", help="a sentence for the report (what else ran on the machine...)")
    p.add_argument("--replot", metavar="JSON", help="only rewrite the report from an earlier compare.json")
    args = p.parse_args()
    if args.replot:
        return replot(args.replot, args.out, args.note)
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
