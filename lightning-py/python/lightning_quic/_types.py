"""The TypedDicts of btlightning's Python API (same names and keys)."""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, TypedDict

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover - Python 3.10
    from typing_extensions import NotRequired

__all__ = [
    "AxonInfo",
    "SynapseRequest",
    "SynapseResponse",
    "ClientConnectionStats",
    "ServerConnectionStats",
]


class AxonInfo(TypedDict):
    """Where a miner serves and which hotkey it must prove. ``protocol`` defaults to 4."""

    hotkey: str
    ip: str
    port: int
    protocol: NotRequired[int]


class SynapseRequest(TypedDict):
    """A query: the handler name on the miner and its data."""

    synapse_type: str
    data: Dict[str, Any]


class SynapseResponse(TypedDict):
    """A miner's answer. A handler failure is ``success`` False with the peer's ``error``."""

    success: bool
    data: Dict[str, Any]
    latency_ms: float
    error: Optional[str]


class ClientConnectionStats(TypedDict):
    """``Lightning.get_connection_stats()``; per-address ``connection_<ip>:<port>`` keys too."""

    total_connections: str
    active_miners: str


class ServerConnectionStats(TypedDict):
    """``LightningServer.get_connection_stats()``; per-validator ``connection_<hotkey>`` keys too."""

    total_connections: str
    verified_connections: str
