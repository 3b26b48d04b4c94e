"""Interop between lightning_quic and the published btlightning Python package, both ways.

Outside CI (btlightning has no Linux wheel; building its sdist takes minutes). Needs two
interpreters: one with lightning_quic installed, one with btlightning 0.2.15 (they may be
the same if both are installed). Each side runs in its own process:

    python interop_btlightning.py --ours target/pyvenv/bin/python --theirs /path/to/btl/bin/python

For each direction it starts a miner with one package and queries it with the other:
unary echo of mixed values, a handler that raises, an unknown synapse, and a stream.
Exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from typing import Any, Dict, List

MINER_SEED = bytes([1] * 32)
VALIDATOR_SEED = bytes([2] * 32)
CHUNKS = [b"chunk-1", b"chunk-2", b"chunk-3"]
DATA = {"text": "hello", "n": 42, "neg": -7, "f": 3.5, "blob": b"\x00\xff" * 5000, "list": [1, "a", None, True], "map": {"k": {"v": 1}}}


def package(impl: str) -> Any:
    # LIGHTNING_INTEROP_SELF=1 runs both sides on lightning_quic (a check of this script).
    if impl == "ours" or os.environ.get("LIGHTNING_INTEROP_SELF") == "1":
        import lightning_quic as pkg
    else:
        import btlightning as pkg  # type: ignore[import-not-found, no-redef]
    return pkg


def serve(impl: str, hotkey: str, port: int) -> None:
    pkg = package(impl)
    server = pkg.LightningServer(miner_hotkey=hotkey, host="127.0.0.1", port=port)
    server.set_miner_keypair(MINER_SEED)
    server.register_synapse_handler("echo", lambda data: data)

    def boom(data: Dict[str, Any]) -> Dict[str, Any]:
        raise ValueError("not for the wire")

    server.register_synapse_handler("boom", boom)
    server.register_streaming_handler("stream", lambda data: iter(CHUNKS))
    server.start()
    print("ready", flush=True)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


def query(impl: str, miner_hotkey: str, validator_hotkey: str, port: int) -> None:
    pkg = package(impl)
    client = pkg.Lightning(wallet_hotkey=validator_hotkey)
    client.set_validator_keypair(VALIDATOR_SEED)
    axon = {"hotkey": miner_hotkey, "ip": "127.0.0.1", "port": port}
    client.initialize_connections([axon])
    results: Dict[str, Any] = {}
    r = client.query_axon(axon, {"synapse_type": "echo", "data": DATA}, timeout_secs=10)
    results["echo"] = r["success"] is True and r["data"] == DATA and r["error"] is None
    r = client.query_axon(axon, {"synapse_type": "boom", "data": {}}, timeout_secs=10)
    results["handler_error"] = (r["success"], r["error"]) == (False, "request processing failed")
    r = client.query_axon(axon, {"synapse_type": "nope", "data": {}}, timeout_secs=10)
    results["unknown_synapse"] = (r["success"], r["error"]) == (False, "unrecognized synapse type")
    chunks: List[bytes] = list(client.query_axon_stream(axon, {"synapse_type": "stream", "data": {}}))
    results["stream"] = chunks == CHUNKS
    try:
        list(client.query_axon_stream(axon, {"synapse_type": "nope", "data": {}}))
        results["stream_unknown"] = False
    except (RuntimeError, ConnectionError) as e:
        results["stream_unknown"] = "unrecognized synapse type" in str(e)
    client.close()
    print(json.dumps(results), flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", required=True, help="python with lightning_quic")
    parser.add_argument("--theirs", required=True, help="python with btlightning 0.2.15")
    args = parser.parse_args()
    from lightning_quic import hotkey_from_seed

    miner, validator = hotkey_from_seed(MINER_SEED), hotkey_from_seed(VALIDATOR_SEED)
    python = {"ours": args.ours, "theirs": args.theirs}
    ok = True
    for server_impl, client_impl in [("ours", "theirs"), ("theirs", "ours")]:
        port = free_port()
        srv = subprocess.Popen(
            [python[server_impl], __file__, "_serve", server_impl, miner, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert srv.stdout is not None and srv.stdin is not None
        assert srv.stdout.readline().strip() == "ready"
        out = subprocess.run(
            [python[client_impl], __file__, "_query", client_impl, miner, validator, str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        srv.stdin.close()
        srv.wait(10)
        label = f"{server_impl} server <- {client_impl} client"
        try:
            results = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            print(f"{label}: FAILED to run\n{out.stderr}")
            ok = False
            continue
        print(f"{label}: {results}")
        ok = ok and all(results.values())
    print("interop:", "all checks passed" if ok else "FAILURES")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_query":
        query(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(main())
