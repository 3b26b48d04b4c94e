"""Metrics from Python: the server's and the client's snapshots and Prometheus text move
with the traffic a test sends (counts only, no timing)."""

from __future__ import annotations

import asyncio
import re
from typing import Optional

from conftest import VALIDATOR_HOTKEY, VALIDATOR_SEED, query

from lightning_quic import AsyncLightning

N = 12


def sample(text: str, series: str) -> Optional[float]:
    """The value of ``series`` (name and labels as printed) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line[len(series) + 1 :])
    return None


def test_server_and_client_metrics_count_queries(echo, client) -> None:
    before = echo.server.metrics()
    assert before["requests"]["echo"]["ok"] == 0
    for i in range(N):
        response = query(client, echo.axon, "echo", {"i": i})
        assert response["success"]
    for _ in range(3):
        response = query(client, echo.axon, "nope", {})
        assert not response["success"]

    m = echo.server.metrics()
    assert m["requests"]["echo"]["ok"] == N
    assert m["handler_seconds"]["echo"]["count"] == N
    buckets = m["handler_seconds"]["echo"]["buckets"]
    assert buckets[-1] == (float("inf"), N)
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)
    # Unknown names are one label, never the name the peer sent.
    assert m["requests"]["unknown"]["unrecognized_synapse"] == 3
    assert "nope" not in m["requests"]
    assert m["handshakes_accepted"] == 1
    assert m["connections"] == 1 and m["validators"] == 1
    assert m["udp"]["bytes_in"] > 0 and m["udp"]["bytes_out"] > 0
    assert m["udp"]["datagrams_in"] >= N and m["udp"]["datagrams_out"] >= N
    assert m["path"]["connections"] == 1 and m["path"]["rtt_max_seconds"] > 0
    assert set(m["admission_refusals"]) == {
        "allowlist",
        "unauthenticated_cap",
        "source_cap",
        "connection_cap",
        "rate_limit",
        "permit",
    }

    text = echo.server.metrics_text()
    assert sample(text, 'lightning_server_requests_total{synapse="echo",outcome="ok"}') == N
    unknown = 'lightning_server_requests_total{synapse="unknown",outcome="unrecognized_synapse"}'
    assert sample(text, unknown) == 3
    assert "nope" not in text
    assert re.search(r"^# TYPE lightning_server_handler_duration_seconds histogram$", text, re.M)

    c = client.metrics()
    assert c["requests"]["echo"]["ok"] == N
    assert c["requests"]["nope"]["error"] == 3
    assert c["latency_seconds"]["echo"]["count"] == N
    assert c["handshakes_accepted"] == 1
    assert c["connections"] == 1
    assert c["udp"]["bytes_out"] > 0
    ctext = client.metrics_text()
    assert sample(ctext, 'lightning_client_requests_total{synapse="echo",outcome="ok"}') == N


def test_metrics_before_start_are_zero() -> None:
    from conftest import make_server

    server = make_server()
    m = server.metrics()
    assert m["connections"] == 0 and m["requests"] == {"unknown": m["requests"]["unknown"]}
    assert "lightning_server_connections_accepted_total 0" in server.metrics_text()


def test_async_client_metrics(echo) -> None:
    async def main() -> None:
        c = AsyncLightning(VALIDATOR_HOTKEY)
        c.set_validator_keypair(VALIDATOR_SEED)
        await c.initialize_connections([])
        for i in range(4):
            r = await c.query_axon(echo.axon, {"synapse_type": "echo", "data": {"i": i}})
            assert r["success"]
        assert c.metrics()["requests"]["echo"]["ok"] == 4
        assert "lightning_client_requests_total" in c.metrics_text()
        await c.close()

    asyncio.run(main())
