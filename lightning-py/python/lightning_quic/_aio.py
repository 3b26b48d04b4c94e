"""The asyncio API: ``AsyncLightning`` (validator) and ``AsyncLightningServer`` (miner).

Methods are real coroutines: ``asyncio.gather`` of many queries runs them concurrently,
and cancelling a task cancels its query on the wire. Results reach the event loop through
a *loop bridge* (one per loop): Rust tasks queue completions without the GIL and wake the
loop through a socket it watches with ``add_reader``; the loop thread converts the results.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import weakref
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

from . import _native
from ._metagraph import serving_axons
from ._native import LoopBridge, PyStreamingResponse, RequestContext, RustLightning
from ._sync import Axon, LightningServer, _wants_context
from ._types import ClientMetrics, SynapseRequest, SynapseResponse

__all__ = ["AsyncLightning", "AsyncLightningServer", "AsyncStreamingResponse", "current_request"]

_logger = logging.getLogger("lightning_quic")
_current: contextvars.ContextVar[Optional[RequestContext]] = contextvars.ContextVar(
    "lightning_quic_request", default=None
)
_bridges: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBridge]" = (
    weakref.WeakKeyDictionary()
)


def current_request() -> Optional[RequestContext]:
    """The :class:`RequestContext` of the request the calling handler serves, or ``None``.

    Works in sync handlers (on their worker thread) and in coroutine handlers (through a
    context variable), so one-argument btlightning-style handlers can learn the caller.
    """
    ctx = _current.get()
    return ctx if ctx is not None else _native.current_request()


def _bridge(loop: asyncio.AbstractEventLoop) -> LoopBridge:
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = LoopBridge()
        loop.add_reader(bridge.fileno(), bridge.drain)
        _bridges[loop] = bridge
    return bridge


# The last running loop of each thread, with its bridge.
_recent = threading.local()


def _running() -> "tuple[asyncio.AbstractEventLoop, LoopBridge]":
    """The running loop and its bridge, for a coroutine of that loop.

    On Python 3.11, ``asyncio.get_running_loop()`` makes a ``getpid()`` system call (its
    fork check): 8% of an asyncio validator's time at c=32 on a VM. A thread runs one loop
    at a time, and asyncio's own loops (``BaseEventLoop``) mark the thread they run on
    (``_thread_id``, set for exactly as long as ``run_forever`` runs), so the loop this
    thread used last is still the running one when it says it runs here. Other loops
    (uvloop) are not remembered and take the general way every time.
    """
    recent = getattr(_recent, "pair", None)
    if recent is not None and recent[0]._thread_id == threading.get_ident():
        return recent  # type: ignore[no-any-return]
    loop = asyncio.get_running_loop()
    pair = (loop, _bridge(loop))
    if isinstance(loop, asyncio.BaseEventLoop):
        _recent.pair = pair
    return pair


async def _run(start: Callable[[LoopBridge, "asyncio.Future[Any]"], Any]) -> Any:
    """Starts a native task that resolves a fresh future, and awaits it; cancelling the
    awaiting task cancels the native one."""
    loop, bridge = _running()
    fut = loop.create_future()
    ticket = start(bridge, fut)
    try:
        return await fut
    except asyncio.CancelledError:
        ticket.cancel()
        raise


async def _offload(pool: "_native.ThreadPool", fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a native ``ThreadPool``, awaited on the running loop: one native job,
    the result back through the loop bridge (cheaper than ``run_in_executor``). A call
    cancelled before a pool thread takes it is skipped."""
    loop, bridge = _running()
    fut = loop.create_future()
    pool.submit(bridge, fut, fn, args)
    return await fut


class AsyncStreamingResponse:
    """The chunks of a streaming query: ``async for chunk in stream``; ``async with`` or
    :meth:`close` cancels the rest on the wire."""

    def __init__(self, native: PyStreamingResponse) -> None:
        self._native = native

    def __aiter__(self) -> "AsyncStreamingResponse":
        return self

    async def __anext__(self) -> bytes:
        chunk = await _run(self._native.next_async)
        if chunk is None:
            raise StopAsyncIteration
        return chunk  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop reading; the stream is cancelled on the wire."""
        self._native.close()

    async def __aenter__(self) -> "AsyncStreamingResponse":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class AsyncLightning:
    """The validator client for asyncio; same constructor and configuration as
    :class:`lightning_quic.Lightning`. Setters stay plain methods."""

    def __init__(self, wallet_hotkey: str, **config: Any) -> None:
        self.wallet_hotkey = wallet_hotkey
        self._native = RustLightning(wallet_hotkey, **config)

    def set_validator_keypair(self, keypair_seed: bytes) -> None:
        """Sign handshakes with the sr25519 key from a 32-byte seed."""
        self._native.set_validator_keypair(bytes(keypair_seed))

    def set_python_signer(self, signer_callback: Callable[[bytes], bytes]) -> None:
        """Sign handshakes with ``signer_callback(message) -> 64-byte signature``."""
        self._native.set_python_signer(signer_callback)

    def set_wallet(
        self,
        wallet_name: str = "default",
        wallet_path: str = "~/.bittensor/wallets",
        hotkey_name: str = "default",
    ) -> None:
        """Sign as the hotkey of a bittensor wallet (unencrypted hotkey files only)."""
        self._native.set_wallet(wallet_name, wallet_path, hotkey_name)

    async def initialize_connections(self, miners: Sequence[Axon]) -> List[str]:
        """Create the endpoint (first call) and connect to every miner; returns the hotkeys
        that authenticated (failures are logged)."""
        return await _run(lambda b, f: self._native.initialize_connections_async(b, f, miners))  # type: ignore[no-any-return]

    async def update_miner_registry(self, miners: Sequence[Axon]) -> List[str]:
        """Reconcile the pool with a fresh miner list; returns the authenticated hotkeys."""
        return await _run(lambda b, f: self._native.update_miner_registry_async(b, f, miners))  # type: ignore[no-any-return]

    async def query_axon(
        self, axon_info: Axon, request: SynapseRequest, timeout_secs: Optional[float] = None
    ) -> SynapseResponse:
        """Query one miner; cancelling the awaiting task cancels the query on the wire."""
        return await _run(  # type: ignore[no-any-return]
            lambda b, f: self._native.query_axon_async(b, f, axon_info, request, timeout_secs)
        )

    async def query_axons(
        self,
        axons: Sequence[Axon],
        request: SynapseRequest,
        timeout_secs: Optional[float] = None,
    ) -> List[SynapseResponse]:
        """Query many miners concurrently; a miner that could not be queried gives
        ``success`` False with the error text."""

        async def one(axon: Axon) -> SynapseResponse:
            try:
                return await self.query_axon(axon, request, timeout_secs)
            except (ConnectionError, RuntimeError) as e:
                return {"data": {}, "success": False, "latency_ms": 0.0, "error": str(e)}

        return list(await asyncio.gather(*(one(a) for a in axons)))

    async def query_axon_stream(
        self, axon_info: Axon, request: SynapseRequest
    ) -> AsyncStreamingResponse:
        """Open a streaming query; ``async for`` over the result."""
        native = await _run(
            lambda b, f: self._native.query_axon_stream_async(b, f, axon_info, request)
        )
        return AsyncStreamingResponse(native)

    async def sync_metagraph(self, metagraph: Any) -> List[str]:
        """Reconcile the pool with a metagraph's serving axons; returns the hotkeys that
        authenticated."""
        return await self.update_miner_registry(serving_axons(metagraph))

    def get_connection_stats(self) -> Dict[str, str]:
        """As :meth:`lightning_quic.Lightning.get_connection_stats` (answers at once)."""
        return dict(self._native.get_connection_stats())

    def metrics(self) -> ClientMetrics:
        """As :meth:`lightning_quic.Lightning.metrics` (answers at once)."""
        return self._native.metrics()  # type: ignore[return-value]

    def metrics_text(self) -> str:
        """As :meth:`lightning_quic.Lightning.metrics_text` (answers at once)."""
        return self._native.metrics_text()

    async def close(self) -> None:
        """Close every connection; later queries reconnect on demand."""
        await _run(self._native.close_async)

    async def __aenter__(self) -> "AsyncLightning":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Refusal(Exception):
    """Raised by a coroutine handler (or async generator) to answer ``success: false`` with
    its message in ``error``, sent to the peer as is (at most 1024 bytes). Internal to the
    package: the synapse layer uses it for its status-coded refusals."""


async def _serve_one(
    handler: Callable[..., Awaitable[Any]],
    with_context: bool,
    synapse: str,
    data: Dict[str, Any],
    ctx: RequestContext,
    responder: Any,
) -> None:
    token = _current.set(ctx)
    try:
        result = await (handler(data, ctx) if with_context else handler(data))
    except asyncio.CancelledError:
        raise
    except Refusal as refusal:
        responder.reject(str(refusal))
        return
    except BaseException:  # noqa: BLE001 - logged, the peer gets the generic string
        _logger.exception("handler for synapse '%s' raised an exception", synapse)
        responder.fail()
        return
    finally:
        _current.reset(token)
    responder.respond(result)


async def _stream_one(
    handler: Callable[..., Any],
    with_context: bool,
    synapse: str,
    data: Dict[str, Any],
    ctx: RequestContext,
    sink: Any,
) -> None:
    token = _current.set(ctx)
    agen = None
    try:
        agen = handler(data, ctx) if with_context else handler(data)
        async for chunk in agen:
            sent = await _run(lambda b, f: sink.send_async(b, f, chunk))
            if not sent:
                # The stream is gone (timed out, closed): stop the generator now.
                await agen.aclose()
                return
    except asyncio.CancelledError:
        # The request was cancelled: close the generator now (its finally blocks run)
        # rather than whenever it is garbage-collected.
        if agen is not None:
            await agen.aclose()
        raise
    except Refusal as refusal:
        sink.reject(str(refusal))
        return
    except BaseException:  # noqa: BLE001 - logged, the peer gets the generic string
        _logger.exception("streaming handler for synapse '%s' raised an exception", synapse)
        sink.fail()
        return
    finally:
        _current.reset(token)
    sink.finish()


class AsyncLightningServer(LightningServer):
    """The miner server for asyncio: coroutine handlers (``async def``) and async
    generators run as tasks on the loop that called :meth:`start`; plain functions and sync
    generators run on the worker threads as in :class:`lightning_quic.LightningServer`.

    ``start``, ``serve_forever`` and ``stop`` are coroutines. Do not call the blocking
    sync API (``Lightning.query_axon`` …) on this loop's thread: it would hold up the
    coroutine handlers it may be waiting for; use :class:`AsyncLightning` there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._pending: Dict[str, tuple[Callable[..., Any], bool, bool]] = {}

    def register_synapse_handler(
        self,
        synapse_type: str,
        handler: Callable[..., Any],
        *,
        with_context: Optional[bool] = None,
    ) -> None:
        """Register a handler: ``async def`` handlers run on the server's event loop,
        plain functions on worker threads. Allowed at any time."""
        if not inspect.iscoroutinefunction(handler):
            super().register_synapse_handler(synapse_type, handler, with_context=with_context)
            return
        self._register_on_loop(synapse_type, handler, with_context, streaming=False)

    def register_streaming_handler(
        self,
        synapse_type: str,
        handler: Callable[..., Any],
        *,
        with_context: Optional[bool] = None,
    ) -> None:
        """Register a streaming handler: an async generator runs on the server's event loop
        (each chunk waits for room without blocking the loop); a sync generator or function
        returning an iterable runs on the streaming threads."""
        if not inspect.isasyncgenfunction(handler):
            super().register_streaming_handler(synapse_type, handler, with_context=with_context)
            return
        self._register_on_loop(synapse_type, handler, with_context, streaming=True)

    def _register_on_loop(
        self,
        synapse_type: str,
        handler: Callable[..., Any],
        with_context: Optional[bool],
        streaming: bool,
    ) -> None:
        if with_context is None:
            with_context = _wants_context(handler)
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                # No loop yet: registered by start().
                self._pending[synapse_type] = (handler, with_context, streaming)
                return
        self._register_coroutine(loop, synapse_type, handler, with_context, streaming)

    def _register_coroutine(
        self,
        loop: asyncio.AbstractEventLoop,
        synapse_type: str,
        handler: Callable[..., Any],
        with_context: bool,
        streaming: bool,
    ) -> None:
        run = _stream_one if streaming else _serve_one

        def spawn(data: Dict[str, Any], ctx: RequestContext, answer: Any) -> "asyncio.Task[None]":
            return loop.create_task(run(handler, with_context, synapse_type, data, ctx, answer))

        if streaming:
            self._native.register_coroutine_streaming_handler(synapse_type, spawn, _bridge(loop))
        else:
            self._native.register_coroutine_handler(synapse_type, spawn, _bridge(loop))

    async def start(self) -> None:  # type: ignore[override]
        """Bind and start serving; coroutine handlers run on the current event loop."""
        self._loop = asyncio.get_running_loop()
        for name, (handler, with_context, streaming) in self._pending.items():
            self._register_coroutine(self._loop, name, handler, with_context, streaming)
        self._pending.clear()
        LightningServer.start(self)

    async def serve_forever(self) -> None:  # type: ignore[override]
        """Wait until the server is stopped."""
        await _run(self._native.serve_forever_async)

    async def stop(self) -> None:  # type: ignore[override]
        """Stop serving (closes every connection and the endpoint)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, LightningServer.stop, self)

    async def __aenter__(self) -> "AsyncLightningServer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
