"""The TypedDicts of btlightning's Python API (same names and keys)."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple, TypedDict

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


class HistogramSnapshot(TypedDict):
    """A latency histogram: ``buckets`` are ``(upper bound in seconds, cumulative count)``,
    the last bound ``inf``."""

    count: int
    sum: float
    buckets: List[Tuple[float, int]]


class UdpCounters(TypedDict):
    """Traffic through an endpoint's UDP socket."""

    datagrams_in: int
    datagrams_out: int
    bytes_in: int
    bytes_out: int
    send_errors: int


class PathSummary(TypedDict):
    """quinn's path figures summarised over the open connections."""

    connections: int
    rtt_min_seconds: float
    rtt_mean_seconds: float
    rtt_max_seconds: float
    cwnd_min_bytes: int
    cwnd_mean_bytes: int
    cwnd_max_bytes: int
    sent_packets: int
    lost_packets: int
    lost_bytes: int
    congestion_events: int


class ServerMetrics(TypedDict):
    """``LightningServer.metrics()``. ``requests`` maps each registered synapse (and
    ``"unknown"``, for requests the server answered itself) to counts per outcome."""

    connections: int
    unauthenticated_connections: int
    validators: int
    connections_accepted: int
    connections_closed: Dict[str, int]
    handshakes_accepted: int
    handshakes_refused: Dict[str, int]
    admission_refusals: Dict[str, int]
    retries: int
    evictions: int
    timeouts: Dict[str, int]
    requests: Dict[str, Dict[str, int]]
    handler_seconds: Dict[str, HistogramSnapshot]
    stream_chunks: Dict[str, Dict[str, int]]
    requests_in_flight: int
    queued_bytes: int
    reserved_request_bytes: int
    parked_streams: int
    replay_cache_nonces: int
    udp: UdpCounters
    path: PathSummary


class ClientMetrics(TypedDict):
    """``Lightning.metrics()``. ``requests`` maps each synapse name (the first 64; later
    names count as ``"other"``) to counts per outcome."""

    connections: int
    connections_closed: Dict[str, int]
    handshakes_accepted: int
    handshakes_failed: Dict[str, int]
    requests: Dict[str, Dict[str, int]]
    latency_seconds: Dict[str, HistogramSnapshot]
    stream_chunks: Dict[str, Dict[str, int]]
    requests_in_flight: int
    udp: UdpCounters
    path: PathSummary
