"""Handlers and queries beyond btlightning's suite: failures, context, runtime
registration, streaming, timeouts, reconnects, concurrency."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List

import pytest

from conftest import (
    MINER_HOTKEY,
    MINER_SEED,
    VALIDATOR_HOTKEY,
    VALIDATOR_SEED,
    make_server,
    query,
)
from lightning_quic import (
    Lightning,
    LightningServer,
    QueryTimeout,
    RequestContext,
    StreamError,
    current_request,
    sign_with_seed,
)

LOGGER = "lightning_quic"


def test_handler_exception_logged_with_traceback(serve, client, caplog) -> None:
    def boom(data: Dict[str, Any]) -> Dict[str, Any]:
        raise ValueError("secret detail")

    served = serve(lambda s: s.register_synapse_handler("boom", boom))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        r = query(client, served.axon, "boom", {})
    assert r == {"data": {}, "success": False, "latency_ms": r["latency_ms"], "error": "request processing failed"}
    assert "secret detail" not in repr(r)
    records = [rec for rec in caplog.records if rec.name == LOGGER]
    assert any("'boom' raised" in rec.getMessage() for rec in records)
    tracebacks = [rec.exc_info for rec in records if rec.exc_info]
    assert tracebacks and tracebacks[0][0] is ValueError
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


@pytest.mark.parametrize(
    "result, logged",
    [
        (None, "returned NoneType, expected dict"),
        ([1, 2], "returned list, expected dict"),
        ({"s": {1, 2}}, "cannot be encoded"),
        ({1: "int key"}, "cannot be encoded"),
    ],
)
def test_bad_handler_results(serve, client, caplog, result: Any, logged: str) -> None:
    served = serve(lambda s: s.register_synapse_handler("bad", lambda d: result))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        r = query(client, served.axon, "bad", {})
    assert r["success"] is False and r["error"] == "request processing failed"
    assert logged in caplog.text


def test_unknown_synapse(echo, client) -> None:
    r = query(client, echo.axon, "nope", {})
    assert r["success"] is False and r["error"] == "unrecognized synapse type"


def test_two_argument_handler_gets_authenticated_context(serve, client) -> None:
    seen: List[RequestContext] = []

    def handler(data: Dict[str, Any], ctx: RequestContext) -> Dict[str, Any]:
        seen.append(ctx)
        return {
            "hotkey": ctx.validator_hotkey,
            "ip": ctx.remote[0],
            "synapse": ctx.synapse_type,
            "left": ctx.deadline - time.monotonic(),
            "cancelled": ctx.cancelled,
        }

    served = serve(lambda s: s.register_synapse_handler("ctx", handler), handler_timeout_secs=20)
    r = query(client, served.axon, "ctx", {})
    assert r["success"] is True, r
    assert r["data"]["hotkey"] == VALIDATOR_HOTKEY
    assert r["data"]["ip"] == "127.0.0.1"
    assert r["data"]["synapse"] == "ctx"
    assert 0 < r["data"]["left"] <= 20
    assert r["data"]["cancelled"] is False
    assert seen[0].request_id >= 0


def test_current_request_in_one_argument_handler(serve, client) -> None:
    assert current_request() is None
    served = serve(
        lambda s: s.register_synapse_handler(
            "who", lambda d: {"hotkey": current_request().validator_hotkey}
        )
    )
    assert query(client, served.axon, "who", {})["data"] == {"hotkey": VALIDATOR_HOTKEY}


def test_decorators(serve, client) -> None:
    def setup(s: LightningServer) -> None:
        @s.synapse("double")
        def double(data: Dict[str, Any], ctx: RequestContext) -> Dict[str, Any]:
            return {"x": data["x"] * 2, "by": ctx.validator_hotkey}

        @s.streaming("count")
        def count(data: Dict[str, Any], ctx: RequestContext):
            for i in range(data["n"]):
                yield str(i).encode()

    served = serve(setup)
    assert query(client, served.axon, "double", {"x": 4})["data"] == {"x": 8, "by": VALIDATOR_HOTKEY}
    stream = client.query_axon_stream(served.axon, {"synapse_type": "count", "data": {"n": 3}})
    assert list(stream) == [b"0", b"1", b"2"]


def test_register_replace_unregister_while_serving(echo, client) -> None:
    assert query(client, echo.axon, "late", {})["error"] == "unrecognized synapse type"
    echo.server.register_synapse_handler("late", lambda d: {"v": 1})
    assert query(client, echo.axon, "late", {})["data"] == {"v": 1}
    echo.server.register_synapse_handler("late", lambda d: {"v": 2})
    assert query(client, echo.axon, "late", {})["data"] == {"v": 2}
    echo.server.register_streaming_handler("late_stream", lambda d: [b"x", bytearray(b"y")])
    assert list(client.query_axon_stream(echo.axon, {"synapse_type": "late_stream", "data": {}})) == [b"x", b"y"]
    assert echo.server.unregister_handler("late") is True
    assert echo.server.unregister_handler("late") is False
    assert query(client, echo.axon, "late", {})["error"] == "unrecognized synapse type"


def test_handlers_survive_restart(serve, client) -> None:
    served = serve(lambda s: s.register_synapse_handler("echo", lambda d: d))
    port = served.server.port
    axon = served.axon
    served.stop()
    restarted = LightningServer(MINER_HOTKEY, host="127.0.0.1", port=port)
    restarted.set_miner_keypair(MINER_SEED)
    restarted.register_synapse_handler("echo", lambda d: d)
    restarted.start()
    try:
        # The client reconnects on demand to the new server at the same address.
        client.update_miner_registry([axon])
        assert query(client, axon, "echo", {"again": 1})["data"] == {"again": 1}
    finally:
        restarted.stop()


def test_same_server_object_restarts(serve, client) -> None:
    served = serve(lambda s: s.register_synapse_handler("echo", lambda d: d))
    assert query(client, served.axon, "echo", {"a": 1})["success"]
    served.stop()
    served.server.start()  # same object, same handlers, a new port
    t = threading.Thread(target=served.server.serve_forever, daemon=True)
    t.start()
    served.thread = t
    assert query(client, served.axon, "echo", {"b": 2})["data"] == {"b": 2}


# ----- streaming ------------------------------------------------------------------------------


def test_stream_failure_midway(serve, client, caplog) -> None:
    def gen(data: Dict[str, Any]):
        yield b"one"
        yield b"two"
        raise RuntimeError("generator broke")

    served = serve(lambda s: s.register_streaming_handler("s", gen))
    stream = client.query_axon_stream(served.axon, {"synapse_type": "s", "data": {}})
    got = []
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        with pytest.raises(RuntimeError, match="stream error: stream processing failed") as info:
            for chunk in stream:
                got.append(chunk)
    assert isinstance(info.value, StreamError)
    assert got == [b"one", b"two"]
    assert "generator broke" in caplog.text


def test_stream_rejects_str_chunks(serve, client, caplog) -> None:
    served = serve(lambda s: s.register_streaming_handler("s", lambda d: iter(["text"])))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        with pytest.raises(RuntimeError, match="stream processing failed"):
            list(client.query_axon_stream(served.axon, {"synapse_type": "s", "data": {}}))
    assert "not str" in caplog.text


def test_unknown_streaming_synapse(echo, client) -> None:
    with pytest.raises((RuntimeError, ConnectionError), match="unrecognized synapse type"):
        list(client.query_axon_stream(echo.axon, {"synapse_type": "nope", "data": {}}))


def test_stream_backpressure_with_slow_consumer(serve, client) -> None:
    produced = 0
    total = 2000

    def gen(data: Dict[str, Any]):
        nonlocal produced
        for i in range(total):
            produced += 1
            yield i.to_bytes(4, "big") * 256  # 1 KB

    served = serve(lambda s: s.register_streaming_handler("s", gen))
    stream = client.query_axon_stream(served.axon, {"synapse_type": "s", "data": {}})
    first = next(stream)
    assert first[:4] == (0).to_bytes(4, "big")
    # Give the producer every chance to run ahead, then check it is held back by credit
    # (server queue + client read-ahead), not by speed.
    time.sleep(0.5)
    ahead = produced
    assert ahead < total, "the generator ran to the end although nobody was reading"
    rest = list(stream)
    assert len(rest) == total - 1
    assert [int.from_bytes(c[:4], "big") for c in rest] == list(range(1, total))


def test_stream_close_cancels_generator(serve, client) -> None:
    closed = threading.Event()

    def gen(data: Dict[str, Any]):
        try:
            while True:
                yield b"x" * 1024
        finally:
            closed.set()

    served = serve(lambda s: s.register_streaming_handler("s", gen))
    with client.query_axon_stream(served.axon, {"synapse_type": "s", "data": {}}) as stream:
        assert next(stream) == b"x" * 1024
    assert closed.wait(10), "the generator was not closed after the client closed the stream"
    assert list(stream) == []


# ----- timeouts -------------------------------------------------------------------------------


def test_query_timeout_fires(serve, client) -> None:
    release = threading.Event()
    served = serve(lambda s: s.register_synapse_handler("slow", lambda d: release.wait(10) and {}))
    try:
        with pytest.raises(QueryTimeout) as info:
            query(client, served.axon, "slow", {}, timeout_secs=0.3)
        assert isinstance(info.value, ConnectionError) and isinstance(info.value, TimeoutError)
        assert str(info.value).startswith("transport error: query timed out")
    finally:
        release.set()


def test_handler_timeout_answers(serve, client) -> None:
    release = threading.Event()
    served = serve(
        lambda s: s.register_synapse_handler("slow", lambda d: release.wait(10) and {}),
        handler_timeout_secs=1,
    )
    try:
        r = query(client, served.axon, "slow", {})
        assert r["success"] is False and r["error"] == "handler timed out"
    finally:
        release.set()


# ----- client features ------------------------------------------------------------------------


def test_query_axons_fan_out(serve, client) -> None:
    a = serve(lambda s: s.register_synapse_handler("id", lambda d: {"port": a.server.port}))
    b = serve(lambda s: s.register_synapse_handler("id", lambda d: {"port": b.server.port}))
    dead = {"hotkey": MINER_HOTKEY, "ip": "127.0.0.1", "port": 9}
    client.initialize_connections([a.axon, b.axon])
    rs = client.query_axons([a.axon, b.axon, dead], {"synapse_type": "id", "data": {}}, timeout_secs=3)
    assert [r["success"] for r in rs] == [True, True, False]
    assert rs[0]["data"] == {"port": a.server.port} and rs[1]["data"] == {"port": b.server.port}
    assert rs[2]["error"] and rs[2]["data"] == {}


def test_request_over_own_frame_limit_refused_before_sending(serve) -> None:
    calls = []
    served = serve(lambda s: s.register_synapse_handler("echo", lambda d: calls.append(1) or d))
    c = Lightning(VALIDATOR_HOTKEY, max_frame_payload_bytes=1 << 20)
    c.set_validator_keypair(VALIDATOR_SEED)
    c.initialize_connections([served.axon])
    with pytest.raises(ValueError, match="exceeds max_frame_payload_bytes"):
        query(c, served.axon, "echo", {"blob": b"x" * (2 << 20)})
    assert calls == []
    assert query(c, served.axon, "echo", {"ok": 1})["success"]


def test_python_signer_signs_handshakes(echo) -> None:
    messages: List[bytes] = []

    def signer(message: bytes) -> bytes:
        messages.append(message)
        return sign_with_seed(VALIDATOR_SEED, message)

    c = Lightning(VALIDATOR_HOTKEY)
    c.set_python_signer(signer)
    c.initialize_connections([echo.axon])
    assert messages, "the signer was never called"
    assert query(c, echo.axon, "echo", {"s": 1})["data"] == {"s": 1}
    c.close()


def test_wrong_key_for_hotkey_is_reported(echo, caplog) -> None:
    c = Lightning(VALIDATOR_HOTKEY)
    c.set_validator_keypair(bytes([9] * 32))
    with pytest.raises(ValueError):
        c.initialize_connections([echo.axon])


def test_wallet_with_tilde(tmp_path, monkeypatch) -> None:
    import json

    hotkeys = tmp_path / ".bittensor" / "wallets" / "w" / "hotkeys"
    hotkeys.mkdir(parents=True)
    (hotkeys / "h").write_text(json.dumps({"secretSeed": "0x" + VALIDATOR_SEED.hex(), "ss58Address": VALIDATOR_HOTKEY}))
    monkeypatch.setenv("HOME", str(tmp_path))
    c = Lightning(VALIDATOR_HOTKEY)
    c.set_wallet("w", "~/.bittensor/wallets", "h")
    with pytest.raises(ValueError, match="config error: failed to load hotkey from wallet"):
        c.set_wallet("missing", "~/.bittensor/wallets", "h")


def test_close_then_query_reconnects(echo, client) -> None:
    client.initialize_connections([echo.axon])
    client.close()
    assert query(client, echo.axon, "echo", {"after": "close"})["data"] == {"after": "close"}


def test_threads_query_while_python_runs(serve, client) -> None:
    served = serve(lambda s: s.register_synapse_handler("echo", lambda d: d))
    client.initialize_connections([served.axon])
    stop = threading.Event()
    counter = [0]

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    errors: List[BaseException] = []
    windows = []

    def worker(n: int) -> None:
        try:
            before = counter[0]
            for i in range(40):
                r = query(client, served.axon, "echo", {"n": n, "i": i})
                assert r["data"] == {"n": n, "i": i}
            windows.append((before, counter[0]))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    stop.set()
    spinner.join()
    assert not errors, errors
    assert len(windows) == 8
    # The pure-Python thread kept running during every worker's queries: the waits
    # release the GIL.
    for before, after in windows:
        assert after > before


def test_validator_permit_resolver(serve) -> None:
    calls = []

    def permitted():
        calls.append(1)
        return [VALIDATOR_HOTKEY]

    def setup(s: LightningServer) -> None:
        s.register_synapse_handler("echo", lambda d: d)
        s.set_validator_permit_resolver(permitted)

    served = serve(setup)
    assert calls, "the resolver was not called at start"
    c = Lightning(VALIDATOR_HOTKEY)
    c.set_validator_keypair(VALIDATOR_SEED)
    c.initialize_connections([served.axon])
    assert query(c, served.axon, "echo", {"p": 1})["data"] == {"p": 1}

    refused = serve(
        lambda s: (s.register_synapse_handler("echo", lambda d: d), s.set_validator_permit_resolver(set))
    )
    other = Lightning(VALIDATOR_HOTKEY)
    other.set_validator_keypair(VALIDATOR_SEED)
    other.initialize_connections([])
    with pytest.raises(ConnectionError):
        query(other, refused.axon, "echo", {})


def test_require_permit_without_resolver_fails_at_start() -> None:
    s = make_server(require_validator_permit=True)
    with pytest.raises(ValueError, match="config error"):
        s.start()


def test_stream_payload_limit_enforced_while_iterating(serve) -> None:
    def big(data: Dict[str, Any]):
        for _ in range(48):
            yield b"\x07" * (64 * 1024)  # 3 MiB in all

    served = serve(lambda s: s.register_streaming_handler("big", big))
    c = Lightning(
        VALIDATOR_HOTKEY, max_frame_payload_bytes=1 << 20, max_stream_payload_bytes=1 << 20
    )
    c.set_validator_keypair(VALIDATOR_SEED)
    c.initialize_connections([served.axon])
    received = 0
    with pytest.raises((RuntimeError, ConnectionError)):
        for chunk in c.query_axon_stream(served.axon, {"synapse_type": "big", "data": {}}):
            received += len(chunk)
    assert received <= 1 << 20


def test_stream_chunk_timeout(serve) -> None:
    release = threading.Event()

    def stalls(data: Dict[str, Any]):
        yield b"first"
        release.wait(10)
        yield b"late"

    served = serve(lambda s: s.register_streaming_handler("stalls", stalls))
    c = Lightning(VALIDATOR_HOTKEY, stream_chunk_timeout_secs=1)
    c.set_validator_keypair(VALIDATOR_SEED)
    c.initialize_connections([served.axon])
    stream = c.query_axon_stream(served.axon, {"synapse_type": "stalls", "data": {}})
    try:
        assert next(stream) == b"first"
        with pytest.raises(StreamError, match="stream error: chunk read timed out"):
            next(stream)
    finally:
        release.set()


def test_waiting_handlers_run_concurrently(serve, client) -> None:
    # Four handlers that each wait for all four: this only completes if the pool runs
    # them at the same time (a handler waiting on I/O must not hold up the others).
    barrier = threading.Barrier(4, timeout=10)

    def meet(data: Dict[str, Any]) -> Dict[str, Any]:
        barrier.wait()
        return {"met": data["i"]}

    served = serve(lambda s: s.register_synapse_handler("meet", meet), handler_threads=4)
    results: List[Any] = [None] * 4

    def ask(i: int) -> None:
        results[i] = query(client, served.axon, "meet", {"i": i})

    askers = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in askers:
        t.start()
    for t in askers:
        t.join(20)
    assert [r["data"] for r in results] == [{"met": i} for i in range(4)], results
