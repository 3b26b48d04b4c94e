"""Exceptions raised by lightning_quic.

Every class also derives from the built-in exception btlightning raises in the same
situation, so ``except ConnectionError`` / ``except ValueError`` / ``except RuntimeError``
written for btlightning keeps working. Messages keep btlightning's ``"<kind> error: ..."``
prefixes.
"""

from __future__ import annotations

__all__ = [
    "LightningError",
    "LightningConnectionError",
    "HandshakeError",
    "QueryTimeout",
    "LightningConfigError",
    "StreamError",
    "SigningError",
]


class LightningError(Exception):
    """Base class of every lightning_quic error."""


class LightningConnectionError(LightningError, ConnectionError):
    """No usable connection: refused, unreachable, lost, closed, or a transport failure."""


class HandshakeError(LightningConnectionError):
    """The Lightning handshake failed or the peer refused it (wrong hotkey, no permit).

    A miner's refusal carries no reason on the wire, so the message then reads only
    ``Handshake rejected by miner``. Usual causes: the validator hotkey is not admitted by
    the miner, more than 30 handshakes a minute from one IP address (the default limit),
    or a clock more than 60 s ahead of the miner's or 300 s behind it. The miner counts
    refusals by reason (``LightningServer.metrics()["handshakes_refused"]``;
    ``lightning serve`` prints them).
    """


class QueryTimeout(LightningConnectionError, TimeoutError):
    """No complete answer within the query's ``timeout_secs``."""


class LightningConfigError(LightningError, ValueError):
    """A setting is out of range, or a key or wallet could not be loaded."""


class StreamError(LightningError, RuntimeError):
    """A streaming response failed (``"stream error: ..."``)."""


class SigningError(LightningError, RuntimeError):
    """No signer is configured, or signing failed (``"signing error: ..."``)."""
