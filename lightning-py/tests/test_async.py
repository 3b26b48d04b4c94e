"""The asyncio API: AsyncLightning against both servers, coroutine handlers,
cancellation on the wire, streams with ``async for``."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Dict

import pytest

from conftest import MINER_HOTKEY, MINER_SEED, VALIDATOR_HOTKEY, VALIDATOR_SEED
from lightning_quic import (
    AsyncLightning,
    AsyncLightningServer,
    QueryTimeout,
    RequestContext,
    current_request,
)

pytestmark = pytest.mark.asyncio


async def make_client() -> AsyncLightning:
    c = AsyncLightning(VALIDATOR_HOTKEY)
    c.set_validator_keypair(VALIDATOR_SEED)
    await c.initialize_connections([])  # the endpoint; miners are dialled on demand
    return c


def axon_of(server: Any) -> Dict[str, Any]:
    return {"hotkey": MINER_HOTKEY, "ip": "127.0.0.1", "port": server.port}


async def start_async_server(setup) -> AsyncLightningServer:
    s = AsyncLightningServer(MINER_HOTKEY, host="127.0.0.1", port=0)
    s.set_miner_keypair(MINER_SEED)
    setup(s)
    await s.start()
    return s


async def test_async_client_against_sync_server(echo) -> None:
    async with await make_client() as c:
        assert await c.initialize_connections([echo.axon]) == [MINER_HOTKEY]
        r = await c.query_axon(echo.axon, {"synapse_type": "echo", "data": {"a": [1, "b"]}})
        assert r == {"data": {"a": [1, "b"]}, "success": True, "latency_ms": r["latency_ms"], "error": None}


async def test_gather_many_queries(echo) -> None:
    c = await make_client()
    await c.initialize_connections([echo.axon])
    rs = await asyncio.gather(
        *(c.query_axon(echo.axon, {"synapse_type": "echo", "data": {"i": i}}) for i in range(300))
    )
    assert [r["data"]["i"] for r in rs] == list(range(300))
    await c.close()


async def test_coroutine_handlers_and_context() -> None:
    async def double(data: Dict[str, Any]) -> Dict[str, Any]:
        await asyncio.sleep(0)
        return {"x": data["x"] * 2, "by": current_request().validator_hotkey}

    async def who(data: Dict[str, Any], ctx: RequestContext) -> Dict[str, Any]:
        return {"hotkey": ctx.validator_hotkey, "synapse": ctx.synapse_type}

    def setup(s: AsyncLightningServer) -> None:
        s.register_synapse_handler("double", double)
        s.register_synapse_handler("who", who)
        s.register_synapse_handler("sync", lambda d: {"sync": True})
        s.register_streaming_handler("chunks", lambda d: [b"a", b"b"])

    server = await start_async_server(setup)
    serving = asyncio.create_task(server.serve_forever())
    c = await make_client()
    ax = axon_of(server)
    await c.initialize_connections([ax])
    assert (await c.query_axon(ax, {"synapse_type": "double", "data": {"x": 4}}))["data"] == {
        "x": 8,
        "by": VALIDATOR_HOTKEY,
    }
    assert (await c.query_axon(ax, {"synapse_type": "who", "data": {}}))["data"] == {
        "hotkey": VALIDATOR_HOTKEY,
        "synapse": "who",
    }
    assert (await c.query_axon(ax, {"synapse_type": "sync", "data": {}}))["data"] == {"sync": True}
    stream = await c.query_axon_stream(ax, {"synapse_type": "chunks", "data": {}})
    assert [chunk async for chunk in stream] == [b"a", b"b"]

    # Registered while serving, on the running loop.
    async def late(data: Dict[str, Any]) -> Dict[str, Any]:
        return {"late": 1}

    server.register_synapse_handler("late", late)
    assert (await c.query_axon(ax, {"synapse_type": "late", "data": {}}))["data"] == {"late": 1}

    await server.stop()
    await asyncio.wait_for(serving, 5)
    await c.close()


async def test_coroutine_handler_failures_logged(caplog) -> None:
    async def boom(data: Dict[str, Any]) -> Dict[str, Any]:
        raise KeyError("hidden")

    async def none(data: Dict[str, Any]) -> None:
        return None

    def setup(s: AsyncLightningServer) -> None:
        s.register_synapse_handler("boom", boom)
        s.register_synapse_handler("none", none)

    server = await start_async_server(setup)
    c = await make_client()
    ax = axon_of(server)
    with caplog.at_level(logging.ERROR, logger="lightning_quic"):
        for synapse in ["boom", "none"]:
            r = await c.query_axon(ax, {"synapse_type": synapse, "data": {}})
            assert r["success"] is False and r["error"] == "request processing failed"
    assert "'boom' raised" in caplog.text and "hidden" in caplog.text
    assert "returned NoneType, expected dict" in caplog.text
    await server.stop()


async def test_cancelling_the_query_cancels_the_handler() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(data: Dict[str, Any]) -> Dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    server = await start_async_server(lambda s: s.register_synapse_handler("slow", slow))
    c = await make_client()
    ax = axon_of(server)
    await c.initialize_connections([ax])
    task = asyncio.create_task(c.query_axon(ax, {"synapse_type": "slow", "data": {}}))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancel went over the wire and the server cancelled the handler's task.
    await asyncio.wait_for(cancelled.wait(), 5)
    # The connection is still good.
    server.register_synapse_handler("echo", lambda d: d)
    assert (await c.query_axon(ax, {"synapse_type": "echo", "data": {"ok": 1}}))["success"]
    await server.stop()


async def test_async_query_timeout(serve) -> None:
    release = threading.Event()
    served = serve(lambda s: s.register_synapse_handler("slow", lambda d: release.wait(10) and {}))
    c = await make_client()
    try:
        with pytest.raises(QueryTimeout):
            await c.query_axon(served.axon, {"synapse_type": "slow", "data": {}}, timeout_secs=0.3)
    finally:
        release.set()


async def test_async_stream_cancel_and_errors(serve) -> None:
    closed = threading.Event()

    def endless(data: Dict[str, Any]):
        try:
            while True:
                yield b"z" * 512
        finally:
            closed.set()

    def broken(data: Dict[str, Any]):
        yield b"one"
        raise ValueError("nope")

    def setup(s: Any) -> None:
        s.register_streaming_handler("endless", endless)
        s.register_streaming_handler("broken", broken)

    served = serve(setup)
    c = await make_client()
    async with await c.query_axon_stream(served.axon, {"synapse_type": "endless", "data": {}}) as stream:
        assert await stream.__anext__() == b"z" * 512
    assert await asyncio.get_running_loop().run_in_executor(None, closed.wait, 10)

    stream = await c.query_axon_stream(served.axon, {"synapse_type": "broken", "data": {}})
    got = []
    with pytest.raises(RuntimeError, match="stream processing failed"):
        async for chunk in stream:
            got.append(chunk)
    assert got == [b"one"]


async def test_query_axons_async(echo) -> None:
    c = await make_client()
    dead = {"hotkey": MINER_HOTKEY, "ip": "127.0.0.1", "port": 9}
    rs = await c.query_axons([echo.axon, dead], {"synapse_type": "echo", "data": {"q": 1}}, timeout_secs=3)
    assert rs[0]["data"] == {"q": 1} and rs[0]["success"]
    assert rs[1]["success"] is False and rs[1]["error"]


async def test_many_loops_sequentially(echo) -> None:
    # A new event loop gets its own bridge, also in a thread whose previous loop has
    # ended (the façade remembers each thread's last loop: it must not serve the next).
    def in_new_loops() -> list:
        async def go(t: int) -> Dict[str, Any]:
            c = await make_client()
            return await c.query_axon(echo.axon, {"synapse_type": "echo", "data": {"t": t}})

        return [asyncio.run(go(1)), asyncio.run(go(2))]

    first, second = await asyncio.get_running_loop().run_in_executor(None, in_new_loops)
    assert first["data"] == {"t": 1}
    assert second["data"] == {"t": 2}


async def test_async_generator_streaming_with_backpressure() -> None:
    produced = 0
    closed = asyncio.Event()

    async def tokens(data: Dict[str, Any], ctx: RequestContext):
        nonlocal produced
        try:
            for i in range(data["n"]):
                produced += 1
                yield i.to_bytes(4, "big") * 256
        finally:
            closed.set()

    async def failing(data: Dict[str, Any]):
        yield b"first"
        raise RuntimeError("async generator broke")

    def setup(s: AsyncLightningServer) -> None:
        s.register_streaming_handler("tokens", tokens)
        s.register_streaming_handler("failing", failing)

    server = await start_async_server(setup)
    try:
        c = await make_client()
        ax = axon_of(server)
        stream = await c.query_axon_stream(ax, {"synapse_type": "tokens", "data": {"n": 2000}})
        first = await stream.__anext__()
        assert first[:4] == (0).to_bytes(4, "big")
        await asyncio.sleep(0.5)  # every chance to run ahead; credit must hold it back
        assert produced < 2000
        rest = [chunk async for chunk in stream]
        assert [int.from_bytes(c[:4], "big") for c in rest] == list(range(1, 2000))
        await asyncio.wait_for(closed.wait(), 5)

        # A client that stops reading: the generator is closed on the server.
        closed.clear()
        async with await c.query_axon_stream(ax, {"synapse_type": "tokens", "data": {"n": 10**6}}) as s2:
            await s2.__anext__()
        await asyncio.wait_for(closed.wait(), 5)

        stream = await c.query_axon_stream(ax, {"synapse_type": "failing", "data": {}})
        got = []
        with pytest.raises(RuntimeError, match="stream processing failed"):
            async for chunk in stream:
                got.append(chunk)
        assert got == [b"first"]
    finally:
        await server.stop()
