"""``Dendrite``: a validator calling synapse classes on Lightning miners, shaped like
bittensor 10.5's ``bt.Dendrite``.

``await dendrite(axons, synapse, timeout=12, deserialize=True)`` sends the synapse to one
axon or a list of them (concurrently; results in order). Each call works on a copy of the
synapse: the miner's answer updates the copy's fields, and ``copy.dendrite.status_code`` /
``status_message`` say how it went, as bittensor sets them (200 ``Success``; 408 ``Request
timeout after <t> seconds``; 503 ``Service unavailable at <ip>:<port>/<name>``; the miner's
own code and message for a refusal; 422 for an answer that does not validate).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, List, Optional, Sequence, Tuple, Union

from .._aio import AsyncLightning
from .._sync import QuicAxonInfo
from ..errors import LightningConnectionError, QueryTimeout, StreamError
from ._keys import identity
from .._metagraph import serving_axons
from ._model import apply_wire, set_fields, terminal, to_wire
from ._status import SUCCESS, decode_refusal

__all__ = ["Dendrite"]


def _target(axon: Any) -> Any:
    """An axon to query: bittensor's ``AxonInfo``, our ``Axon`` (its ``info()``), a
    ``QuicAxonInfo`` or a dict with ``hotkey``, ``ip``, ``port``."""
    if isinstance(axon, dict):
        return QuicAxonInfo(axon["hotkey"], axon["ip"], int(axon["port"]), int(axon.get("protocol", 4)))
    if callable(getattr(axon, "info", None)) and not hasattr(axon, "ip"):
        return axon.info()
    return axon


class Dendrite:
    """A validator's client for synapse classes.

    ``Dendrite(wallet=w)`` (bittensor ``Wallet``) or ``Dendrite(seed=32_bytes)``; other
    keyword arguments go to :class:`lightning_quic.AsyncLightning`. Use from coroutines;
    ``async with Dendrite(...) as d`` closes the connections on exit.
    """

    def __init__(self, wallet: Any = None, *, seed: Optional[bytes] = None, external_ip: Optional[str] = None, **client_config: Any) -> None:
        self.hotkey, install = identity(wallet, seed)
        self.external_ip = external_ip
        self._client = AsyncLightning(self.hotkey, **client_config)
        install(self._client._native)
        self._ready = False

    @property
    def client(self) -> AsyncLightning:
        """The underlying :class:`lightning_quic.AsyncLightning`."""
        return self._client

    async def _ensure_endpoint(self) -> None:
        # btlightning creates the endpoint in initialize_connections; later queries dial
        # miners on demand.
        if not self._ready:
            await self._client.initialize_connections([])
            self._ready = True

    async def sync_metagraph(self, metagraph: Any) -> List[str]:
        """Keep the connection pool in step with a metagraph's serving axons (connect new
        ones, drop the gone); returns the hotkeys that authenticated."""
        await self._ensure_endpoint()
        return await self._client.update_miner_registry(serving_axons(metagraph))

    def _prepare(self, target: Any, synapse: Any, timeout: float) -> Tuple[Any, dict]:
        local = synapse.model_copy()
        # The terminal infos are validated when built; setting them (and the float timeout)
        # through __dict__ skips a second validation of the whole synapse for each (a third
        # of a call's pydantic time).
        set_fields(local, {
            "timeout": float(timeout),
            "dendrite": terminal(local, "dendrite", hotkey=self.hotkey, ip=self.external_ip),
            "axon": terminal(
                local,
                "axon",
                hotkey=getattr(target, "hotkey", None),
                ip=str(getattr(target, "ip", "")),
                port=int(getattr(target, "port", 0)),
            ),
        })
        return local, {"synapse_type": type(local).__name__, "data": to_wire(local)}

    @staticmethod
    def _finish(local: Any, code: int, message: str, started: float, from_axon: bool) -> None:
        status = {"status_code": int(code), "status_message": str(message)}
        if from_axon:
            set_fields(local.axon, status)
        set_fields(local.dendrite, {**status, "process_time": time.perf_counter() - started})

    @staticmethod
    def _failure(local: Any, exc: BaseException, timeout: float) -> Tuple[int, str]:
        """bittensor's dendrite codes for a call that got no answer."""
        if isinstance(exc, (QueryTimeout, asyncio.TimeoutError, TimeoutError)):
            return 408, f"Request timeout after {timeout} seconds"
        if isinstance(exc, ConnectionError):
            return 503, f"Service unavailable at {local.axon.ip}:{local.axon.port}/{type(local).__name__}"
        return 422, f"Failed to parse response: {exc}"

    async def call(self, target_axon: Any, synapse: Any, timeout: float = 12.0, deserialize: bool = True) -> Any:
        """Send ``synapse`` to one axon; returns the updated copy (or its ``deserialize()``)."""
        started = time.perf_counter()
        target = _target(target_axon)
        local, request = self._prepare(target, synapse, timeout)
        try:
            await self._ensure_endpoint()
            response = await self._client.query_axon(target, request, timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a status, as in bittensor
            code, message = self._failure(local, e, timeout)
            self._finish(local, code, message, started, from_axon=False)
        else:
            if response["success"]:
                try:
                    apply_wire(local, response["data"])
                except Exception as e:  # noqa: BLE001 - an answer that does not validate
                    self._finish(local, 422, f"Failed to parse response: {e}", started, from_axon=False)
                else:
                    self._finish(local, *SUCCESS, started, from_axon=True)
            else:
                code, message = decode_refusal(response.get("error") or "")
                self._finish(local, code, message, started, from_axon=True)
        return local.deserialize() if deserialize else local

    async def call_stream(
        self, target_axon: Any, synapse: Any, timeout: float = 12.0, deserialize: bool = True
    ) -> AsyncIterator[Any]:
        """Yield a streaming synapse's chunks (``bytes``) as they arrive, then the synapse
        (or its ``deserialize()``) with its status set. ``timeout`` bounds the whole
        stream; breaking out of the loop cancels the stream on the wire."""
        started = time.perf_counter()
        target = _target(target_axon)
        local, request = self._prepare(target, synapse, timeout)
        deadline = time.monotonic() + timeout
        try:
            await self._ensure_endpoint()
            stream = await asyncio.wait_for(self._client.query_axon_stream(target, request), timeout)
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    try:
                        chunk = await asyncio.wait_for(stream.__anext__(), remaining)
                    except StopAsyncIteration:
                        break
                    yield chunk
            finally:
                stream.close()
        except StreamError as e:
            text = str(e)
            prefix = "stream error: "
            code, message = decode_refusal(text[len(prefix):] if text.startswith(prefix) else text)
            self._finish(local, code, message, started, from_axon=True)
        except (asyncio.TimeoutError, TimeoutError, LightningConnectionError, ConnectionError) as e:
            code, message = self._failure(local, e, timeout)
            self._finish(local, code, message, started, from_axon=False)
        else:
            self._finish(local, *SUCCESS, started, from_axon=True)
        yield local.deserialize() if deserialize else local

    async def forward(
        self,
        axons: Union[Any, Sequence[Any]],
        synapse: Any,
        timeout: float = 12.0,
        deserialize: bool = True,
        run_async: bool = True,
        streaming: bool = False,
    ) -> Any:
        """Send ``synapse`` to one axon (one result) or a list (a list, in order), all at
        once (``run_async=False``: one after another). With ``streaming=True`` the results
        are the async generators of :meth:`call_stream`."""
        single = not isinstance(axons, (list, tuple))
        targets = [axons] if single else list(axons)
        if streaming:
            gens = [self.call_stream(a, synapse, timeout, deserialize) for a in targets]
            return gens[0] if single else gens
        if len(targets) == 1:
            # One axon: await the call itself (no task and gather, two loop turns fewer).
            results = [await self.call(targets[0], synapse, timeout, deserialize)]
        elif run_async:
            results = list(await asyncio.gather(*(self.call(a, synapse, timeout, deserialize) for a in targets)))
        else:
            results = [await self.call(a, synapse, timeout, deserialize) for a in targets]
        return results[0] if single else results

    def query(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`forward` for code without an event loop (bittensor's ``query``); raises
        ``RuntimeError`` when called from a running loop (await :meth:`forward` there)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.forward(*args, **kwargs))
        raise RuntimeError("Dendrite.query() inside a running event loop: use 'await dendrite(...)'")

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Same as :meth:`forward`."""
        return await self.forward(*args, **kwargs)

    async def aclose_session(self) -> None:
        """Close every connection (later calls reconnect on demand)."""
        await self._client.close()

    async def __aenter__(self) -> "Dendrite":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose_session()

    def __repr__(self) -> str:
        return f"dendrite({self.hotkey})"
