"""Cross-implementation: the Python client against the ``lightning serve`` binary, and a
Python server under ``lightning query`` (both the Rust CLI of this workspace)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from conftest import MINER_HOTKEY, MINER_SEED, VALIDATOR_SEED, query

ROOT = Path(__file__).resolve().parents[2]


def cli_binary() -> Path:
    """``$LIGHTNING_BIN``, else the workspace's debug build of ``lightning`` (under
    ``$CARGO_TARGET_DIR`` when set)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = Path(os.environ.get("LIGHTNING_BIN", target / "debug" / "lightning"))
    if not path.exists():
        pytest.skip(f"{path} not built (cargo build -p lightning-cli)")
    return path


@pytest.fixture
def cli_server() -> Iterator[dict]:
    proc = subprocess.Popen(
        [str(cli_binary()), "serve", "--host", "127.0.0.1", "--port", "0", "--seed", MINER_SEED.hex()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    yield {"hotkey": ready["hotkey"], "ip": "127.0.0.1", "port": ready["port"]}
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_python_client_against_cli_server(cli_server, client) -> None:
    assert cli_server["hotkey"] == MINER_HOTKEY
    client.initialize_connections([cli_server])
    payload = bytes(range(256)) * 4
    r = query(client, cli_server, "echo", {"payload": payload, "n": [1, 2.5, None]})
    assert r["success"] is True, r
    assert r["data"] == {"payload": payload, "n": [1, 2.5, None]}
    chunks = list(
        client.query_axon_stream(cli_server, {"synapse_type": "stream", "data": {"n": 5, "chunk_size": 100}})
    )
    assert len(chunks) == 5 and all(len(c) == 100 for c in chunks)
    assert query(client, cli_server, "nope", {})["error"] == "unrecognized synapse type"
    with pytest.raises(RuntimeError, match="stream error"):
        list(client.query_axon_stream(cli_server, {"synapse_type": "stream", "data": {"bad": 1}}))


def test_cli_query_against_python_server(serve) -> None:
    binary = cli_binary()
    seen = []
    lock = threading.Lock()

    def echo(data):
        with lock:
            seen.append(len(data["payload"]))
        return data

    served = serve(lambda s: s.register_synapse_handler("echo", echo))
    out = subprocess.run(
        [
            str(binary),
            "query",
            "--ip",
            "127.0.0.1",
            "--port",
            str(served.server.port),
            "--hotkey",
            MINER_HOTKEY,
            "--seed",
            VALIDATOR_SEED.hex(),
            "-n",
            "20",
            "--concurrency",
            "4",
            "--size",
            "512",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary, out.stdout
    assert seen == [512] * 20
