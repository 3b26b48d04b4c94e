"""``Axon``: a miner serving synapse classes over Lightning, with bittensor's
``attach(forward_fn, blacklist_fn, priority_fn, verify_fn)``.

Every request runs on one asyncio event loop (the caller's with :meth:`Axon.astart`, a
thread of its own with :meth:`Axon.start`): the request's data is validated into the
synapse class, ``synapse.dendrite.hotkey`` is set to the hotkey the QUIC handshake
authenticated, then ``verify_fn``, ``blacklist_fn`` and ``priority_fn`` run (bittensor's
order), the request waits for one of ``max_workers`` slots (highest priority first), and
``forward_fn`` runs: ``async def`` functions on the loop, plain functions on a thread
pool. Refusals and failures answer ``success: false`` with ``"<status code> <message>"``
in ``error``; the text of an unexpected exception never leaves the miner.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import typing
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, Optional

from .._aio import AsyncLightningServer, Refusal, _offload
from .._native import RequestContext, ThreadPool
from .._sync import QuicAxonInfo
from ._errors import (
    BlacklistedException,
    NotVerifiedException,
    SynapseParsingError,
    status_for_exception,
)
from ._keys import identity
from .._metagraph import permitted_validators
from ._model import from_wire, set_fields, terminal_class, to_wire
from ._priority import PriorityGate
from ._status import encode_refusal

__all__ = ["Axon"]

_logger = logging.getLogger("lightning_quic.synapse")
_END = object()


@dataclass(frozen=True)
class _Attached:
    """The functions attached for one synapse class."""

    cls: type
    forward: Callable[..., Any]
    blacklist: Optional[Callable[..., Any]]
    priority: Optional[Callable[..., Any]]
    verify: Optional[Callable[..., Any]]
    streaming: bool
    forward_is_async: bool


def _synapse_class(forward_fn: Callable[..., Any]) -> type:
    """The class annotated on ``forward_fn``'s first parameter, as bittensor requires."""
    try:
        params = list(inspect.signature(forward_fn).parameters.values())
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot inspect forward_fn: {e}") from None
    if not params:
        raise TypeError("forward_fn must take the synapse as its first parameter")
    try:
        hints = typing.get_type_hints(forward_fn)
    except Exception:  # noqa: BLE001 - unresolvable string annotations: use the raw one
        hints = {}
    cls = hints.get(params[0].name, params[0].annotation)
    if not (inspect.isclass(cls) and hasattr(cls, "model_validate")):
        raise TypeError(
            "forward_fn's first parameter must be annotated with a Synapse subclass "
            f"(got {cls!r})"
        )
    return cls


def _is_streaming(cls: type) -> bool:
    # Ours or bittensor's StreamingSynapse, by name: bittensor need not be importable.
    return any(c.__name__ == "StreamingSynapse" for c in cls.__mro__)


async def _call(fn: Callable[..., Any], synapse: Any) -> Any:
    """Calls a blacklist/priority/verify function, awaiting it if it is a coroutine. Plain
    functions run on the loop, as bittensor runs them: keep them quick."""
    result = fn(synapse)
    if inspect.isawaitable(result):
        result = await result
    return result


def _chunk(item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"a streaming forward_fn must yield bytes or str, not {type(item).__name__}")


class Axon:
    """A miner's server for synapse classes, shaped like bittensor 10.5's ``bt.Axon``.

    ``Axon(wallet=w)`` (a bittensor ``Wallet``, hotkey file unencrypted) or
    ``Axon(seed=32_bytes)``; ``host``/``ip`` and ``port`` (0 picks one: see
    :attr:`port`). ``max_workers`` requests run at once; more wait in priority order.
    With ``metagraph=``, only hotkeys with a validator permit and ``min_stake`` total
    stake complete the handshake, re-read every ``metagraph_refresh_secs``. Plain (not
    ``async``) functions run on a thread pool so that a slow one does not hold up the
    others; ``forward_in_threads=False`` runs them on the event loop as bittensor does
    (quicker for functions that return at once). Other keyword arguments go to
    :class:`lightning_quic.LightningServer` (``handler_timeout_secs``...).
    """

    def __init__(
        self,
        wallet: Any = None,
        *,
        seed: Optional[bytes] = None,
        host: Optional[str] = None,
        ip: Optional[str] = None,
        port: int = 8091,
        external_ip: Optional[str] = None,
        external_port: Optional[int] = None,
        max_workers: int = 10,
        metagraph: Any = None,
        min_stake: float = 0.0,
        metagraph_refresh_secs: int = 600,
        forward_in_threads: bool = True,
        **server_config: Any,
    ) -> None:
        self.hotkey, install = identity(wallet, seed)
        self.host = host or ip or "0.0.0.0"
        self.external_ip = external_ip
        self.external_port = external_port
        self.max_workers = max_workers
        self.forward_in_threads = forward_in_threads
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if metagraph is not None:
            server_config["require_validator_permit"] = True
            server_config["validator_permit_refresh_secs"] = metagraph_refresh_secs
        self._server = AsyncLightningServer(self.hotkey, self.host, port, **server_config)
        install(self._server._native)
        if metagraph is not None:
            self._server.set_validator_permit_resolver(
                lambda: permitted_validators(metagraph, min_stake)
            )
        self._attached: Dict[str, _Attached] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._gate: Optional[PriorityGate] = None
        self._pool: Optional[ThreadPool] = None
        self._addr_cache: Optional[tuple] = None
        self.started = False

    # ----------------------------------------------------------------- attach / info

    def attach(
        self,
        forward_fn: Callable[..., Any],
        blacklist_fn: Optional[Callable[..., Any]] = None,
        priority_fn: Optional[Callable[..., Any]] = None,
        verify_fn: Optional[Callable[..., Any]] = None,
    ) -> "Axon":
        """Serve the synapse class annotated on ``forward_fn``'s first parameter.

        ``forward_fn(synapse) -> synapse`` (for a ``StreamingSynapse``: a generator of
        ``bytes``/``str`` chunks), ``blacklist_fn(synapse) -> (bool, reason)``,
        ``priority_fn(synapse) -> float`` (higher first), ``verify_fn(synapse) -> None``
        (raise to refuse); each sync or ``async``. Allowed while serving; returns self.
        """
        for name, fn in (
            ("forward_fn", forward_fn),
            ("blacklist_fn", blacklist_fn),
            ("priority_fn", priority_fn),
            ("verify_fn", verify_fn),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable")
        cls = _synapse_class(forward_fn)
        entry = _Attached(
            cls, forward_fn, blacklist_fn, priority_fn, verify_fn, _is_streaming(cls),
            inspect.iscoroutinefunction(forward_fn),
        )
        self._attached[cls.__name__] = entry
        if self._loop is not None:
            loop = self._loop
            if _on_loop(loop):
                self._register(cls.__name__, entry)
            else:
                loop.call_soon_threadsafe(self._register, cls.__name__, entry)
        return self

    @property
    def port(self) -> Optional[int]:
        """The bound UDP port once started, else ``None``."""
        return self._server.port

    def info(self) -> QuicAxonInfo:
        """Where validators reach this axon: ``external_ip`` (else ``host``; the loopback
        address for a wildcard host) and ``external_port`` (else the bound port)."""
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
        ip = self.external_ip or wildcard.get(self.host, self.host)
        port = self.external_port or self.port or 0
        return QuicAxonInfo(self.hotkey, ip, port, 4)

    # ----------------------------------------------------------------- lifecycle

    async def astart(self) -> "Axon":
        """Start serving on the running event loop."""
        if self.started:
            return self
        self._loop = asyncio.get_running_loop()
        self._addr_cache = None  # the port may differ from the last start
        self._gate = PriorityGate(self.max_workers)
        # Made here, not in __init__: no threads before serving, and a fresh pool after stop().
        self._pool = ThreadPool("axon-forward", self.max_workers)
        for name, entry in self._attached.items():
            self._register(name, entry)
        await self._server.start()
        self.started = True
        return self

    async def astop(self) -> None:
        """Stop serving (connections close; waiting requests are cancelled)."""
        if self.started:
            await self._server.stop()
        self.started = False
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def start(self) -> "Axon":
        """Start serving on an event loop thread of the axon's own; returns self."""
        if self.started:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="axon-loop", daemon=True)
        thread.start()
        self._thread = thread
        asyncio.run_coroutine_threadsafe(self.astart(), loop).result()
        return self

    def stop(self) -> None:
        """Stop serving; with :meth:`start`, also ends the axon's loop thread."""
        loop, thread = self._loop, self._thread
        if thread is not None and loop is not None:
            asyncio.run_coroutine_threadsafe(self.astop(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._thread = None
            self._loop = None
        elif self.started:
            raise RuntimeError("started with astart(): use 'await axon.astop()'")

    async def __aenter__(self) -> "Axon":
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __enter__(self) -> "Axon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- serving

    def _register(self, name: str, entry: _Attached) -> None:
        assert self._loop is not None
        if entry.streaming:

            async def stream(data: Dict[str, Any], ctx: RequestContext) -> AsyncIterator[bytes]:
                async for chunk in self._stream(entry, data, ctx):
                    yield chunk

            self._server._register_coroutine(self._loop, name, stream, True, True)
        else:

            async def unary(data: Dict[str, Any], ctx: RequestContext) -> Dict[str, Any]:
                return await self._unary(entry, data, ctx)

            self._server._register_coroutine(self._loop, name, unary, True, False)

    def _public_addr(self) -> tuple:
        """``info()``'s ip and port, kept while ``external_ip``/``external_port``/``host``
        stay the same (the bound port is fixed while serving)."""
        key = (self.external_ip, self.external_port, self.host)
        cached = self._addr_cache
        if cached is None or cached[0] != key:
            info = self.info()
            cached = (key, (info.ip, info.port))
            self._addr_cache = cached
        return cached[1]

    def _prepare(self, entry: _Attached, data: Dict[str, Any], ctx: RequestContext) -> Any:
        """The request as a synapse, with the handshake's hotkey as the dendrite's."""
        remote_ip, remote_port = ctx.remote
        ip, port = self._public_addr()
        cls = entry.cls
        # The terminal infos and timeout go into the one validation of the request.
        base = {
            "dendrite": terminal_class(cls, "dendrite")(hotkey=ctx.validator_hotkey, ip=remote_ip, port=remote_port),
            "axon": terminal_class(cls, "axon")(hotkey=self.hotkey, ip=ip, port=port, status_code=100),
            # The caller's timeout does not travel; what is left is the server's handler deadline.
            "timeout": max(0.0, float(ctx.remaining())),
        }
        try:
            return from_wire(cls, data, base)
        except Exception as e:  # noqa: BLE001 - pydantic's ValidationError and friends
            raise self._refusal(SynapseParsingError(_parse_summary(e)), None) from None

    async def _admit(self, entry: _Attached, synapse: Any) -> float:
        """verify, blacklist, priority (bittensor's order); returns the priority."""
        if entry.verify is not None:
            try:
                await _call(entry.verify, synapse)
            except Exception as e:  # noqa: BLE001 - bittensor reports verify's message
                raise NotVerifiedException(f"Not Verified with error: {e}") from None
        if entry.blacklist is not None:
            blacklisted, reason = await _call(entry.blacklist, synapse)
            if blacklisted:
                raise BlacklistedException(f"Forbidden. Key is blacklisted: {reason}.")
        if entry.priority is not None:
            return float(await _call(entry.priority, synapse))
        return 0.0

    async def _forward(self, fn: Callable[..., Any], synapse: Any, is_async: bool) -> Any:
        if is_async:
            return await fn(synapse)
        if not self.forward_in_threads:
            # bittensor's way: quick plain functions run on the loop, no thread hop.
            result = fn(synapse)
            return await result if inspect.isawaitable(result) else result
        result = await self._offload(fn, synapse)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the forward pool."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("the axon is not serving")
        return await _offload(pool, fn, *args)

    def _refusal(self, exc: BaseException, synapse: Any) -> Refusal:
        code, message, expected = status_for_exception(exc)
        if not expected:
            _logger.error("%s for synapse %s", message, getattr(synapse, "name", "?"), exc_info=exc)
        if synapse is not None and synapse.axon is not None:
            synapse.axon.status_code = code
            synapse.axon.status_message = message
        return Refusal(encode_refusal(code, message))

    async def _unary(self, entry: _Attached, data: Dict[str, Any], ctx: RequestContext) -> Dict[str, Any]:
        started = time.perf_counter()
        synapse = self._prepare(entry, data, ctx)
        gate = self._gate
        assert gate is not None
        acquired = False
        try:
            priority = await self._admit(entry, synapse)
            await gate.acquire(priority)
            acquired = True
            result = await self._forward(entry.forward, synapse, entry.forward_is_async)
            answer = result if hasattr(result, "model_dump") else synapse
            wire = to_wire(answer)
        except Refusal:
            raise
        except Exception as e:  # noqa: BLE001 - mapped to a status code; CancelledError passes
            raise self._refusal(e, synapse) from None
        finally:
            if acquired:
                gate.release()
        set_fields(synapse.axon, {
            "status_code": 200, "status_message": "Success", "process_time": time.perf_counter() - started,
        })
        return wire

    async def _stream(self, entry: _Attached, data: Dict[str, Any], ctx: RequestContext) -> AsyncIterator[bytes]:
        synapse = self._prepare(entry, data, ctx)
        gate = self._gate
        assert gate is not None
        acquired = False
        try:
            priority = await self._admit(entry, synapse)
            await gate.acquire(priority)
            acquired = True
            fn = entry.forward
            if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
                produced = fn(synapse)  # creating a generator runs none of its code
            else:
                produced = await self._forward(fn, synapse, entry.forward_is_async)
            if hasattr(produced, "__aiter__"):
                async for item in produced:
                    yield _chunk(item)
            else:
                it = iter(produced)
                while True:
                    # Each step of a sync generator runs on the pool, not the loop.
                    item = await self._offload(next, it, _END)
                    if item is _END:
                        break
                    yield _chunk(item)
        except Refusal:
            raise
        except Exception as e:  # noqa: BLE001 - GeneratorExit/CancelledError pass through
            raise self._refusal(e, synapse) from None
        finally:
            if acquired:
                gate.release()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _parse_summary(e: Exception) -> str:
    """A short account of a validation failure: the fields and what was wrong, no values."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            parts = [
                f"{'.'.join(str(p) for p in err.get('loc', ())) or 'data'}: {err.get('msg', '')}"
                for err in errors(include_input=False)[:5]
            ]
            return "Invalid synapse data: " + "; ".join(parts)
        except Exception:  # noqa: BLE001 - fall through to the generic text
            pass
    return "Invalid synapse data"
