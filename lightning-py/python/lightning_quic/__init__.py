"""lightning_quic: Lightning's QUIC transport for Bittensor, from Python.

A drop-in for btlightning's Python API; migrating is one import line::

    from lightning_quic import Lightning, LightningServer

See ``PARITY.md`` in the source distribution for the deliberate differences.
"""

from __future__ import annotations

from . import errors
from ._native import (
    PyStreamingResponse,
    RequestContext,
    RustLightning,
    RustLightningServer,
    decode_data,
    encode_data,
    hotkey_from_seed,
    sign_with_seed,
)
from ._aio import AsyncLightning, AsyncLightningServer, AsyncStreamingResponse, current_request
from ._sync import Lightning, LightningServer, QuicAxonInfo
from ._types import (
    AxonInfo,
    ClientConnectionStats,
    ClientMetrics,
    ServerConnectionStats,
    ServerMetrics,
    SynapseRequest,
    SynapseResponse,
)
from .errors import (
    HandshakeError,
    LightningConfigError,
    LightningConnectionError,
    LightningError,
    QueryTimeout,
    SigningError,
    StreamError,
)

LIGHTNING_AVAILABLE = True
"""Always True (btlightning's flag for "the native extension loaded")."""

__all__ = [
    "AsyncLightning",
    "AsyncLightningServer",
    "AsyncStreamingResponse",
    "AxonInfo",
    "ClientConnectionStats",
    "ClientMetrics",
    "HandshakeError",
    "LIGHTNING_AVAILABLE",
    "Lightning",
    "LightningConfigError",
    "LightningConnectionError",
    "LightningError",
    "LightningServer",
    "PyStreamingResponse",
    "QueryTimeout",
    "QuicAxonInfo",
    "RequestContext",
    "RustLightning",
    "RustLightningServer",
    "ServerConnectionStats",
    "ServerMetrics",
    "SigningError",
    "StreamError",
    "SynapseRequest",
    "SynapseResponse",
    "current_request",
    "decode_data",
    "encode_data",
    "errors",
    "hotkey_from_seed",
    "sign_with_seed",
]
