"""btlightning 0.2.15's Python contract (the 33 cases of its own suite, in our words),
against a real server and client in this process."""

from __future__ import annotations

import pytest

from conftest import MINER_HOTKEY, VALIDATOR_HOTKEY, VALIDATOR_SEED, make_server, query
from lightning_quic import (
    LIGHTNING_AVAILABLE,
    Lightning,
    LightningServer,
    PyStreamingResponse,
    QuicAxonInfo,
)

# ----- client construction ------------------------------------------------------------------


def test_client_defaults_and_attribute() -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    assert c.wallet_hotkey == VALIDATOR_HOTKEY
    c.close()  # before initialize_connections: a no-op
    assert LIGHTNING_AVAILABLE is True


def test_client_custom_config() -> None:
    c = Lightning(
        wallet_hotkey=VALIDATOR_HOTKEY,
        connect_timeout_secs=5,
        idle_timeout_secs=30,
        keep_alive_interval_secs=10,
        reconnect_initial_backoff_secs=1,
        reconnect_max_backoff_secs=60,
        reconnect_max_retries=3,
        max_frame_payload_bytes=2 * 1024 * 1024,
        max_stream_payload_bytes=10 * 1024 * 1024,
    )
    assert c.wallet_hotkey == VALIDATOR_HOTKEY


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"keep_alive_interval_secs": 200}, "keep_alive"),
        ({"max_frame_payload_bytes": 1000}, "max_frame_payload_bytes"),
        ({"connect_timeout_secs": 0}, "connect_timeout"),
        (
            {"max_frame_payload_bytes": 4 << 20, "max_stream_payload_bytes": 2 << 20},
            "max_stream_payload_bytes",
        ),
    ],
)
def test_client_config_validated_in_constructor(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        Lightning(wallet_hotkey=VALIDATOR_HOTKEY, **kwargs)
    assert str(info.value).startswith("config error:")


def test_client_negative_int_is_overflow() -> None:
    with pytest.raises(OverflowError):
        Lightning(wallet_hotkey=VALIDATOR_HOTKEY, connect_timeout_secs=-1)


def test_set_validator_keypair_and_python_signer() -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    c.set_validator_keypair(VALIDATOR_SEED)
    calls = []
    c.set_python_signer(lambda msg: calls.append(msg) or b"\0" * 64)
    assert calls == []  # nothing is signed until a handshake
    with pytest.raises(ValueError):
        c.set_validator_keypair(b"short")


def test_client_stats_before_init() -> None:
    stats = Lightning(wallet_hotkey=VALIDATOR_HOTKEY).get_connection_stats()
    assert stats == {"total_connections": "0", "active_miners": "0"}


# ----- argument errors ------------------------------------------------------------------------

AXON = {"hotkey": MINER_HOTKEY, "ip": "127.0.0.1", "port": 1}


@pytest.mark.parametrize("missing", ["hotkey", "ip", "port"])
def test_missing_axon_field_is_key_error(missing: str) -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    axon = {k: v for k, v in AXON.items() if k != missing}
    # The axon is checked before the request (which is also bad here).
    with pytest.raises(KeyError, match=missing):
        c.query_axon(axon, {"data": {}})


def test_missing_synapse_type_is_key_error() -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    with pytest.raises(KeyError, match="synapse_type"):
        c.query_axon(AXON, {"data": {}})


def test_query_before_init_is_connection_error() -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    with pytest.raises(ConnectionError, match="endpoint not initialized"):
        query(c, AXON, "echo", {})


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf"), 1e12])
def test_invalid_timeout_is_value_error(bad: float) -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    with pytest.raises(ValueError, match="timeout_secs must be a finite positive number"):
        query(c, AXON, "echo", {}, timeout_secs=bad)


def test_wrong_argument_types() -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    with pytest.raises(TypeError):
        c.query_axon("not an axon", {"synapse_type": "echo", "data": {}})
    with pytest.raises(TypeError):
        c.query_axon(AXON, ["not", "a", "dict"])
    with pytest.raises(TypeError):
        c.query_axon(AXON, {"synapse_type": "echo", "data": [1, 2]})
    with pytest.raises(OverflowError):
        c.query_axon({**AXON, "port": 70000}, {"synapse_type": "echo", "data": {}})


def test_initialize_without_signer_is_signing_error() -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    with pytest.raises(RuntimeError, match="signing error: No signer configured"):
        c.initialize_connections([AXON])


def test_update_registry_before_init() -> None:
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
    c.set_validator_keypair(VALIDATOR_SEED)
    with pytest.raises(ConnectionError, match="endpoint not initialized"):
        c.update_miner_registry([AXON])


# ----- round trips ----------------------------------------------------------------------------


def test_echo_roundtrip(echo, client) -> None:
    client.initialize_connections([echo.axon])
    r = query(client, echo.axon, "echo", {"message": "hello"})
    assert r["success"] is True
    assert r["error"] is None
    assert r["data"] == {"message": "hello"}
    assert r["latency_ms"] >= 0
    assert list(r) == ["data", "success", "latency_ms", "error"]


def test_large_payload(echo, client) -> None:
    client.initialize_connections([echo.axon])
    blob = bytes(range(256)) * 400  # 100 KB
    r = query(client, echo.axon, "echo", {"blob": blob})
    assert r["success"] is True and r["data"]["blob"] == blob


def test_bad_hotkey_is_value_error_at_once(echo, client) -> None:
    client.initialize_connections([echo.axon])
    axon = dict(echo.axon, hotkey="notakey")
    with pytest.raises(ValueError, match="not a valid SS58 address"):
        query(client, axon, "echo", {"value": 1}, timeout_secs=30.0)


def test_request_over_the_frame_limit_is_value_error(echo) -> None:
    small = Lightning(wallet_hotkey=VALIDATOR_HOTKEY, max_frame_payload_bytes=1 << 20)
    small.set_validator_keypair(VALIDATOR_SEED)
    small.initialize_connections([echo.axon])
    try:
        with pytest.raises(ValueError, match="max_frame_payload_bytes"):
            query(small, echo.axon, "echo", {"blob": bytes(2 << 20)})
        # The connection is untouched: a request that fits still goes through.
        assert query(small, echo.axon, "echo", {"blob": bytes(100)})["success"] is True
    finally:
        small.close()


def test_query_with_timeout(echo, client) -> None:
    client.initialize_connections([echo.axon])
    r = query(client, echo.axon, "echo", {"value": 42}, timeout_secs=5.0)
    assert r["success"] is True and r["data"] == {"value": 42}


def test_sequential_queries(echo, client) -> None:
    client.initialize_connections([echo.axon])
    for i in range(10):
        assert query(client, echo.axon, "echo", {"i": i})["data"] == {"i": i}


def test_query_dials_on_demand_without_initialize_listing(echo, client) -> None:
    # Initialized with no miners: the endpoint exists, the miner is dialled on demand.
    client.initialize_connections([])
    assert query(client, echo.axon, "echo", {"x": 1})["data"] == {"x": 1}


def test_two_handlers_on_one_server(serve, client) -> None:
    def setup(s: LightningServer) -> None:
        s.register_synapse_handler("echo", lambda d: d)
        s.register_synapse_handler("upper", lambda d: {"text": d["text"].upper()})

    served = serve(setup)
    client.initialize_connections([served.axon])
    assert query(client, served.axon, "echo", {"text": "hi"})["data"] == {"text": "hi"}
    r = query(client, served.axon, "upper", {"text": "hi"})
    assert r["success"] is True and r["data"] == {"text": "HI"}


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, 42, -7, 3.14, "hello", "", b"\xde\xad\xbe\xef", [1, 2, 3], {"nested": {"key": "val"}}],
)
def test_value_types_roundtrip(echo, client, value) -> None:
    client.initialize_connections([echo.axon])
    r = query(client, echo.axon, "echo", {"v": value})
    assert r["success"] is True
    assert r["data"]["v"] == value
    assert type(r["data"]["v"]) is type(value)


def test_streaming_handler(serve, client) -> None:
    chunks = [b"chunk-1", b"chunk-2", b"chunk-3"]
    served = serve(lambda s: s.register_streaming_handler("stream", lambda d: iter(chunks)))
    client.initialize_connections([served.axon])
    stream = client.query_axon_stream(served.axon, {"synapse_type": "stream", "data": {}})
    assert isinstance(stream, PyStreamingResponse)
    assert list(stream) == chunks
    # Finished streams keep raising StopIteration (btlightning: ConnectionError).
    assert list(stream) == []


# ----- server lifecycle -----------------------------------------------------------------------


def test_server_defaults_and_stop_without_start() -> None:
    s = LightningServer(miner_hotkey=MINER_HOTKEY, host="127.0.0.1", port=0)
    s.stop()
    s.stop()


def test_server_custom_config() -> None:
    LightningServer(
        miner_hotkey=MINER_HOTKEY,
        host="127.0.0.1",
        port=0,
        max_signature_age_secs=600,
        idle_timeout_secs=60,
        keep_alive_interval_secs=15,
        nonce_cleanup_interval_secs=30,
        max_nonce_entries=50_000,
        max_frame_payload_bytes=32 * 1024 * 1024,
    )


def test_server_config_validated_in_constructor() -> None:
    with pytest.raises(ValueError, match="config error"):
        LightningServer(MINER_HOTKEY, idle_timeout_secs=10, keep_alive_interval_secs=20)
    with pytest.raises(OverflowError):
        LightningServer(MINER_HOTKEY, port=70000)


def test_start_stop_lifecycle_and_stats(echo) -> None:
    stats = echo.server.get_connection_stats()
    assert stats["total_connections"] == "0"
    assert stats["verified_connections"] == "0"
    echo.stop()
    echo.server.stop()  # twice is fine


def test_server_stats_count_validators(echo, client) -> None:
    client.initialize_connections([echo.axon])
    stats = echo.server.get_connection_stats()
    assert stats["total_connections"] == "1"
    assert stats["verified_connections"] == "1"
    assert f"connection_{VALIDATOR_HOTKEY}" in stats
    cstats = client.get_connection_stats()
    assert cstats["active_miners"] == "1"
    assert cstats[f"connection_127.0.0.1:{echo.server.port}"] == "active"


def test_serve_forever_without_start() -> None:
    with pytest.raises(ValueError, match="server not started"):
        make_server().serve_forever()


@pytest.mark.parametrize("host", ["not-an-ip", "localhost", "999.1.1.1"])
def test_bad_host_at_start(host: str) -> None:
    s = LightningServer(MINER_HOTKEY, host=host, port=0)
    s.set_miner_keypair(bytes([1] * 32))
    with pytest.raises(ValueError, match="config error: Invalid address"):
        s.start()


def test_start_without_key_is_signing_error() -> None:
    s = LightningServer(MINER_HOTKEY, host="127.0.0.1", port=0)
    with pytest.raises(RuntimeError, match="No signer configured"):
        s.start()


def test_port_in_use_at_start(echo) -> None:
    other = LightningServer(MINER_HOTKEY, host="127.0.0.1", port=echo.server.port)
    other.set_miner_keypair(bytes([1] * 32))
    with pytest.raises(ValueError, match="config error: Failed to create QUIC endpoint"):
        other.start()


def test_axon_objects_accepted(echo, client) -> None:
    axon = QuicAxonInfo(MINER_HOTKEY, "127.0.0.1", echo.server.port, 4)
    client.initialize_connections([axon])
    assert query(client, axon, "echo", {"a": 1})["data"] == {"a": 1}

    class BittensorLikeAxon:  # any object with hotkey, ip, port
        hotkey = MINER_HOTKEY
        ip = "127.0.0.1"
        port = echo.server.port

    assert query(client, BittensorLikeAxon(), "echo", {"b": 2})["data"] == {"b": 2}
