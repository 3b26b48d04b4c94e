"""The drop-in sync API: ``Lightning`` (validator) and ``LightningServer`` (miner).

Same names, parameters, defaults, return shapes and exception types as btlightning 0.2.15;
see ``PARITY.md`` for the deliberate differences. Every blocking call releases the GIL and
wakes every 100 ms for signal handlers, so Ctrl-C interrupts ``serve_forever`` and long
queries.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, TypeVar, Union

from ._metagraph import permitted_validators, serving_axons
from ._native import PyStreamingResponse, RequestContext, RustLightning, RustLightningServer
from ._types import ClientMetrics, ServerMetrics, SynapseRequest, SynapseResponse

__all__ = ["Lightning", "LightningServer", "QuicAxonInfo"]

Axon = Union[Mapping[str, Any], Any]
"""A dict with ``hotkey``, ``ip``, ``port`` (``protocol`` optional), or any object with
those attributes (``QuicAxonInfo``, bittensor's ``AxonInfo``)."""

UnaryHandler = Callable[..., Dict[str, Any]]
StreamingHandler = Callable[..., Iterable[bytes]]
F = TypeVar("F", bound=Callable[..., Any])


class QuicAxonInfo:
    """A miner's serving record: hotkey, IP literal, UDP port and the chain's protocol tag.

    Unlike btlightning's, it can be passed to ``query_axon`` directly.
    """

    __slots__ = ("hotkey", "ip", "port", "protocol")

    def __init__(self, hotkey: str, ip: str, port: int, protocol: int) -> None:
        self.hotkey = hotkey
        self.ip = ip
        self.port = port
        self.protocol = protocol

    def __repr__(self) -> str:
        return (
            f"QuicAxonInfo(hotkey={self.hotkey!r}, ip={self.ip!r}, port={self.port!r}, "
            f"protocol={self.protocol!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuicAxonInfo):
            return NotImplemented
        return (self.hotkey, self.ip, self.port, self.protocol) == (
            other.hotkey,
            other.ip,
            other.port,
            other.protocol,
        )

    def __hash__(self) -> int:
        return hash((self.hotkey, self.ip, self.port, self.protocol))


class Lightning:
    """A validator's client: connects to miners and queries them.

    The QUIC endpoint is created by :meth:`initialize_connections` (as in btlightning);
    queries before it raise ``ConnectionError("connection error: QUIC endpoint not
    initialized")``. Configuration is validated here: ``ValueError("config error: ...")``.
    Safe to use from many threads at once.

    ``pipeline_first_requests`` (default on): against a Lightning miner, the first queries
    travel right behind the handshake and are answered one round trip sooner; a
    btlightning miner is never sent one early. Set it to ``False`` if query contents must
    reach only a miner that has proven its hotkey.

    ``congestion``: the congestion controller for what this validator sends, ``"cubic"``
    (default, as btlightning), ``"newreno"`` or ``"bbr"``, which keeps its rate on long
    paths with random loss (a 1 MB echo across an emulated 160 ms, 1%-loss path: about
    1 s against 11-15 s with cubic), but where a bottleneck's queue holds a round trip's
    worth or less loses 21-46% of its packets and crowds out other flows (README,
    "Long, lossy paths"). The miner chooses for its answers.

    ``max_udp_payload``: the largest packet path MTU discovery tries towards other hosts,
    in bytes (1200 to 65527; default 1452, an Ethernet path's). Raise it only where every
    path carries jumbo frames. Towards a miner on a loopback address packets are 64 KiB
    whatever this says (except with ``"bbr"``).
    """

    def __init__(
        self,
        wallet_hotkey: str,
        connect_timeout_secs: Optional[int] = None,
        idle_timeout_secs: Optional[int] = None,
        keep_alive_interval_secs: Optional[int] = None,
        reconnect_initial_backoff_secs: Optional[int] = None,
        reconnect_max_backoff_secs: Optional[int] = None,
        reconnect_max_retries: Optional[int] = None,
        max_frame_payload_bytes: Optional[int] = None,
        max_stream_payload_bytes: Optional[int] = None,
        *,
        max_connections: Optional[int] = None,
        stream_chunk_timeout_secs: Optional[int] = None,
        pipeline_first_requests: Optional[bool] = None,
        congestion: Optional[str] = None,
        max_udp_payload: Optional[int] = None,
    ) -> None:
        self.wallet_hotkey = wallet_hotkey
        self._native = RustLightning(
            wallet_hotkey,
            connect_timeout_secs=connect_timeout_secs,
            idle_timeout_secs=idle_timeout_secs,
            keep_alive_interval_secs=keep_alive_interval_secs,
            reconnect_initial_backoff_secs=reconnect_initial_backoff_secs,
            reconnect_max_backoff_secs=reconnect_max_backoff_secs,
            reconnect_max_retries=reconnect_max_retries,
            max_frame_payload_bytes=max_frame_payload_bytes,
            max_stream_payload_bytes=max_stream_payload_bytes,
            max_connections=max_connections,
            stream_chunk_timeout_secs=stream_chunk_timeout_secs,
            pipeline_first_requests=pipeline_first_requests,
            congestion=congestion,
            max_udp_payload=max_udp_payload,
        )

    def set_validator_keypair(self, keypair_seed: bytes) -> None:
        """Sign handshakes with the sr25519 key from a 32-byte seed.

        The key must belong to ``wallet_hotkey``; a mismatch is reported by
        :meth:`initialize_connections` (btlightning only fails the handshakes).
        """
        self._native.set_validator_keypair(bytes(keypair_seed))

    def set_python_signer(self, signer_callback: Callable[[bytes], bytes]) -> None:
        """Sign handshakes with ``signer_callback(message) -> 64-byte signature``.

        The callback runs during handshakes; keep it quick.
        """
        self._native.set_python_signer(signer_callback)

    def set_wallet(
        self,
        wallet_name: str = "default",
        wallet_path: str = "~/.bittensor/wallets",
        hotkey_name: str = "default",
    ) -> None:
        """Sign as the hotkey of a bittensor wallet (``~`` is expanded; unencrypted only)."""
        self._native.set_wallet(wallet_name, wallet_path, hotkey_name)

    def initialize_connections(self, miners: Sequence[Axon]) -> None:
        """Create the endpoint (first call) and connect to every miner concurrently.

        Failures are logged (logger ``lightning_quic``), not raised, as in btlightning.
        Without a signer: ``RuntimeError("signing error: No signer configured")``.
        """
        self._native.initialize_connections(miners)

    def query_axon(
        self,
        axon_info: Axon,
        request: SynapseRequest,
        timeout_secs: Optional[float] = None,
    ) -> SynapseResponse:
        """Send ``request`` to one miner and wait for its answer (GIL released).

        Returns ``{"data", "success", "latency_ms", "error"}``; a failing handler on the
        miner is ``success`` False, not an exception. Connection problems raise
        ``ConnectionError`` subclasses; ``timeout_secs`` firing raises ``QueryTimeout``.
        """
        return self._native.query_axon(axon_info, request, timeout_secs)  # type: ignore[no-any-return]

    def query_axons(
        self,
        axons: Sequence[Axon],
        request: SynapseRequest,
        timeout_secs: Optional[float] = None,
    ) -> List[SynapseResponse]:
        """Send one request to many miners at once (encoded once); responses in order.

        A miner that could not be queried gives ``success`` False with the error text.
        """
        return self._native.query_axons(axons, request, timeout_secs)  # type: ignore[no-any-return]

    def query_axon_stream(self, axon_info: Axon, request: SynapseRequest) -> PyStreamingResponse:
        """Query a streaming handler; iterate the result for ``bytes`` chunks."""
        return self._native.query_axon_stream(axon_info, request)

    def update_miner_registry(self, miners: Sequence[Axon]) -> None:
        """Reconcile the pool with a fresh miner list (drop, reset backoff, connect)."""
        self._native.update_miner_registry(miners)

    def sync_metagraph(self, metagraph: Any) -> None:
        """Reconcile the pool with a metagraph's serving axons (``metagraph.axons`` whose IP
        is set; IPv4 or IPv6). Call it after each metagraph sync; we never contact a chain."""
        self.update_miner_registry(serving_axons(metagraph))

    def get_connection_stats(self) -> Dict[str, str]:
        """``total_connections``, ``active_miners`` and ``connection_<ip>:<port>`` (strings)."""
        return dict(self._native.get_connection_stats())

    def metrics(self) -> ClientMetrics:
        """Counters and latency histograms of this client (see ``docs/metrics.md``)."""
        return self._native.metrics()  # type: ignore[return-value]

    def metrics_text(self) -> str:
        """The same metrics in the Prometheus text format (version 0.0.4)."""
        return self._native.metrics_text()

    def close(self) -> None:
        """Close every connection; later queries reconnect on demand."""
        self._native.close()

    def __enter__(self) -> "Lightning":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wants_context(handler: Callable[..., Any]) -> bool:
    """Whether a handler takes ``(data, ctx)``: two required positional parameters."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) >= 2


# Servers still serving; stopped before the interpreter joins its threads at exit.
_live_servers: "weakref.WeakSet[LightningServer]" = weakref.WeakSet()
_atexit_registered = False
_atexit_lock = threading.Lock()


def _stop_all_servers() -> None:
    for server in list(_live_servers):
        try:
            # The sync method explicitly: AsyncLightningServer.stop is a coroutine.
            LightningServer.stop(server)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def _register_atexit() -> None:
    global _atexit_registered
    with _atexit_lock:
        if _atexit_registered:
            return
        # Runs before non-daemon threads are joined, so a thread blocked in
        # serve_forever() returns and the interpreter can exit.
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(_stop_all_servers)
        else:  # pragma: no cover - not CPython
            import atexit

            atexit.register(_stop_all_servers)
        _atexit_registered = True


class LightningServer:
    """A miner's server: registers handlers and answers validators' queries.

    Handlers run on a pool of Python threads (``handler_threads``, default
    ``min(32, cpu_count + 4)``); streaming handlers on their own pool
    (``streaming_threads``, default 8). A handler that raises or returns something other
    than a dict is logged (logger ``lightning_quic``) with its traceback; the validator
    gets only ``request processing failed``.

    More threads help handlers that wait (I/O, a model server) or release the GIL (numpy,
    torch). For quick pure-Python handlers, ``handler_threads=1`` avoids GIL hand-offs
    between workers (20-30% more requests per second in ``scripts/bench.py``'s echo).

    ``drivers``: QUIC endpoint drivers serving the port, each a task of its own (spread
    over the runtime's threads) with its own connections (1 to 64; default one per
    available core, at most 8). Replay
    protection, rate and connection limits and budgets stay global to the server.

    ``congestion``: the congestion controller for the answers this miner sends,
    ``"cubic"`` (default, as btlightning), ``"newreno"`` or ``"bbr"`` (keeps its rate on
    long lossy paths; see :class:`Lightning`).

    ``max_udp_payload``: the path MTU discovery ceiling towards validators on other hosts
    (see :class:`Lightning`).
    """

    def __init__(
        self,
        miner_hotkey: str,
        host: str = "0.0.0.0",
        port: int = 8443,
        max_signature_age_secs: Optional[int] = None,
        idle_timeout_secs: Optional[int] = None,
        keep_alive_interval_secs: Optional[int] = None,
        nonce_cleanup_interval_secs: Optional[int] = None,
        max_nonce_entries: Optional[int] = None,
        max_frame_payload_bytes: Optional[int] = None,
        *,
        max_connections: Optional[int] = None,
        handshake_timeout_secs: Optional[int] = None,
        max_handshake_attempts_per_minute: Optional[int] = None,
        max_concurrent_bidi_streams: Optional[int] = None,
        handler_timeout_secs: Optional[int] = None,
        handler_threads: Optional[int] = None,
        streaming_threads: Optional[int] = None,
        require_validator_permit: Optional[bool] = None,
        validator_permit_refresh_secs: Optional[int] = None,
        drivers: Optional[int] = None,
        congestion: Optional[str] = None,
        max_udp_payload: Optional[int] = None,
    ) -> None:
        self.miner_hotkey = miner_hotkey
        self.host = host
        self._native = RustLightningServer(
            miner_hotkey,
            host,
            port,
            max_signature_age_secs=max_signature_age_secs,
            idle_timeout_secs=idle_timeout_secs,
            keep_alive_interval_secs=keep_alive_interval_secs,
            nonce_cleanup_interval_secs=nonce_cleanup_interval_secs,
            max_nonce_entries=max_nonce_entries,
            max_frame_payload_bytes=max_frame_payload_bytes,
            max_connections=max_connections,
            handshake_timeout_secs=handshake_timeout_secs,
            max_handshake_attempts_per_minute=max_handshake_attempts_per_minute,
            max_concurrent_bidi_streams=max_concurrent_bidi_streams,
            handler_timeout_secs=handler_timeout_secs,
            handler_threads=handler_threads,
            streaming_threads=streaming_threads,
            require_validator_permit=require_validator_permit,
            validator_permit_refresh_secs=validator_permit_refresh_secs,
            drivers=drivers,
            congestion=congestion,
            max_udp_payload=max_udp_payload,
        )

    @property
    def port(self) -> Optional[int]:
        """The bound UDP port once started (useful with ``port=0``), else ``None``."""
        addr = self._native.local_addr
        return None if addr is None else addr[1]

    @property
    def local_addr(self) -> Optional[tuple[str, int]]:
        """The bound ``(ip, port)`` once started, else ``None``."""
        return self._native.local_addr

    def set_miner_keypair(self, keypair_seed: bytes) -> None:
        """Sign handshakes with the sr25519 key from a 32-byte seed (the ``miner_hotkey``'s).

        A key that does not match ``miner_hotkey`` makes :meth:`start` fail.
        """
        self._native.set_miner_keypair(bytes(keypair_seed))

    def set_miner_wallet(
        self,
        wallet_name: str = "default",
        wallet_path: str = "~/.bittensor/wallets",
        hotkey_name: str = "default",
    ) -> None:
        """Sign as the hotkey of a bittensor wallet (``~`` is expanded; unencrypted only)."""
        self._native.set_miner_wallet(wallet_name, wallet_path, hotkey_name)

    def set_validator_permit_resolver(self, resolver: Callable[[], Iterable[str]]) -> None:
        """Only validators whose hotkey is in ``resolver()`` may authenticate.

        Called at :meth:`start` and every ``validator_permit_refresh_secs`` (1800) on a
        background thread; a failing call is logged and keeps the previous set.
        """
        self._native.set_validator_permit_resolver(lambda: set(resolver()))

    def admit_from_metagraph(self, metagraph: Any, min_stake: float = 0.0) -> None:
        """Admit only validators that ``metagraph`` gives a validator permit and at least
        ``min_stake`` total stake (``hotkeys``, ``validator_permit``, ``S``), checked at the
        handshake before any request is read, and re-read every
        ``validator_permit_refresh_secs``. Needs ``require_validator_permit=True``; takes
        effect at :meth:`start`."""
        self.set_validator_permit_resolver(lambda: permitted_validators(metagraph, min_stake))

    def register_synapse_handler(
        self,
        synapse_type: str,
        handler: UnaryHandler,
        *,
        with_context: Optional[bool] = None,
    ) -> None:
        """Answer ``synapse_type`` with ``handler(data) -> dict`` or ``handler(data, ctx)``.

        Allowed at any time, also while serving. ``with_context`` defaults to whether the
        handler has two required positional parameters; one-parameter handlers can call
        :func:`lightning_quic.current_request` for the :class:`RequestContext`.
        """
        if with_context is None:
            with_context = _wants_context(handler)
        self._native.register_synapse_handler(synapse_type, handler, with_context)

    def register_streaming_handler(
        self,
        synapse_type: str,
        handler: StreamingHandler,
        *,
        with_context: Optional[bool] = None,
    ) -> None:
        """Answer ``synapse_type`` with the chunks of ``handler(data)`` (an iterable of
        bytes-like objects; generators get back-pressure from slow validators)."""
        if with_context is None:
            with_context = _wants_context(handler)
        self._native.register_streaming_handler(synapse_type, handler, with_context)

    def synapse(self, synapse_type: str) -> Callable[[F], F]:
        """Decorator: register ``fn(data, ctx) -> dict`` for ``synapse_type``."""

        def register(fn: F) -> F:
            self.register_synapse_handler(synapse_type, fn, with_context=True)
            return fn

        return register

    def streaming(self, synapse_type: str) -> Callable[[F], F]:
        """Decorator: register a streaming ``fn(data, ctx)`` yielding bytes."""

        def register(fn: F) -> F:
            self.register_streaming_handler(synapse_type, fn, with_context=True)
            return fn

        return register

    def unregister_handler(self, synapse_type: str) -> bool:
        """Remove a handler (also while serving); returns whether it was registered."""
        return self._native.unregister_handler(synapse_type)

    def start(self) -> None:
        """Bind the UDP endpoint and start serving (a no-op if already started).

        Bad host/port: ``ValueError("config error: Invalid address: ...")``.
        """
        self._native.start()
        _live_servers.add(self)
        _register_atexit()

    def serve_forever(self) -> None:
        """Block until :meth:`stop` (GIL released; Ctrl-C raises ``KeyboardInterrupt``).

        Without :meth:`start`: ``ValueError("config error: server not started: ...")``.
        """
        self._native.serve_forever()

    def stop(self) -> None:
        """Close every connection and the endpoint; ``serve_forever`` returns. Idempotent."""
        _live_servers.discard(self)
        self._native.stop()

    def get_connection_stats(self) -> Dict[str, str]:
        """``total_connections``, ``verified_connections``, ``connection_<hotkey>`` (strings)."""
        return dict(self._native.get_connection_stats())

    def metrics(self) -> ServerMetrics:
        """Counters and histograms of this server (see ``docs/metrics.md``); zeros before
        ``start()``."""
        return self._native.metrics()  # type: ignore[return-value]

    def metrics_text(self) -> str:
        """The same metrics in the Prometheus text format (version 0.0.4), to serve as
        ``text/plain; version=0.0.4`` from the application's own HTTP endpoint."""
        return self._native.metrics_text()

    def cleanup_stale_connections(self, max_idle_seconds: int = 300) -> None:
        """Kept for btlightning compatibility; idle connections are closed automatically."""
        self._native.cleanup_stale_connections(max_idle_seconds)

    def __enter__(self) -> "LightningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

