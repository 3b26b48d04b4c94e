"""Shared fixtures: a real miner on 127.0.0.1 (port 0) and a real validator client.

Everything runs over real UDP sockets with real TLS and sr25519 handshakes.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterator

import pytest

from lightning_quic import Lightning, LightningServer, hotkey_from_seed

MINER_SEED = bytes([1] * 32)
VALIDATOR_SEED = bytes([2] * 32)
MINER_HOTKEY = hotkey_from_seed(MINER_SEED)
VALIDATOR_HOTKEY = hotkey_from_seed(VALIDATOR_SEED)


class Served:
    """A started server with ``serve_forever`` running in a daemon thread."""

    def __init__(self, server: LightningServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def axon(self) -> Dict[str, Any]:
        return {"hotkey": MINER_HOTKEY, "ip": "127.0.0.1", "port": self.server.port}

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "serve_forever did not return after stop()"


def make_server(**kwargs: Any) -> LightningServer:
    server = LightningServer(MINER_HOTKEY, host="127.0.0.1", port=0, **kwargs)
    server.set_miner_keypair(MINER_SEED)
    return server


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(setup, **server_kwargs)``: a server, ``setup(server)`` to register handlers,
    started and serving; stopped at teardown."""
    running = []

    def start(setup: Callable[[LightningServer], None] = lambda s: None, **kwargs: Any) -> Served:
        server = make_server(**kwargs)
        setup(server)
        server.start()
        served = Served(server)
        running.append(served)
        return served

    yield start
    for served in running:
        served.stop()


@pytest.fixture
def echo(serve: Callable[..., Served]) -> Served:
    """A server answering ``echo`` with its request data."""
    return serve(lambda s: s.register_synapse_handler("echo", lambda data: data))


def make_client(seed: bytes = VALIDATOR_SEED, **kwargs: Any) -> Lightning:
    """A validator client signing with the key of ``seed``, configured by ``kwargs``, with
    its endpoint up (miners are dialled on demand). The caller closes it."""
    c = Lightning(wallet_hotkey=hotkey_from_seed(seed), **kwargs)
    c.set_validator_keypair(seed)
    c.initialize_connections([])
    return c


@pytest.fixture
def client() -> Iterator[Lightning]:
    """A validator client with its keypair and an endpoint (miners are dialled on demand)."""
    c = make_client()
    yield c
    c.close()


def query(client: Lightning, axon: Dict[str, Any], synapse: str, data: Any, **kw: Any) -> Any:
    return client.query_axon(axon, {"synapse_type": synapse, "data": data}, **kw)


def echo_mebibytes(client: Lightning, axon: Dict[str, Any], times: int = 3) -> None:
    """``times`` echoes of 1 MiB (plus a counter) through ``axon``, each answered intact."""
    blob = bytes(range(256)) * 4096
    for n in range(times):
        response = query(client, axon, "echo", {"n": n, "blob": blob})
        assert response["success"], response
        assert response["data"] == {"n": n, "blob": blob}
