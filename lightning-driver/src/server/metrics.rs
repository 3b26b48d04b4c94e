//! The server's metrics: counters kept by the endpoint task (plain integers; the task is
//! their only writer), the [`ServerMetrics`] snapshot, and its Prometheus exposition.

use std::time::Duration;

use lightning_proto::endpoint::{CancelReason, ServerStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::metrics::{
    by_synapse, exposition, ClosedConnections, Families, Histogram, IoCounters, PathSummary,
    PerSynapse, ReasonCounts,
};

/// The label under which requests the core answered itself (unknown synapse names,
/// unauthenticated or malformed requests) are counted: a peer cannot grow the label set.
pub const UNKNOWN_SYNAPSE_LABEL: &str = "unknown";

/// How a request delivered to a handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    TimedOut,
    PeerCancelled,
    ConnectionLost,
    PeerStalled,
}

impl From<CancelReason> for Outcome {
    fn from(reason: CancelReason) -> Self {
        match reason {
            CancelReason::TimedOut => Self::TimedOut,
            CancelReason::PeerCancelled => Self::PeerCancelled,
            CancelReason::ConnectionLost => Self::ConnectionLost,
            CancelReason::PeerStalled => Self::PeerStalled,
        }
    }
}

/// One registered synapse's figures (a synapse keeps its figures when unregistered, so
/// that counters never go down).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SynapseMetrics {
    /// The synapse name (as registered: never a name a peer chose).
    pub synapse: String,
    /// Whether a handler is registered under it now.
    pub registered: bool,
    /// Requests answered with the handler's result.
    pub ok: u64,
    /// Requests whose handler failed (or panicked).
    pub error: u64,
    /// Requests answered `handler timed out` by the core.
    pub timed_out: u64,
    /// Requests the validator dropped before the answer.
    pub peer_cancelled: u64,
    /// Requests whose connection closed before the answer.
    pub connection_lost: u64,
    /// Streams reset because the validator read none of the answer in time.
    pub peer_stalled: u64,
    /// Handler time (from delivery to the handler to its result reaching the endpoint
    /// task), for handlers that finished (ok or error).
    pub handler_seconds: Histogram,
    /// Chunks sent by a streaming handler.
    pub stream_chunks: u64,
    /// Bytes of those chunks.
    pub stream_chunk_bytes: u64,
}

impl PerSynapse for SynapseMetrics {
    fn synapse(&self) -> &str {
        &self.synapse
    }
}

impl SynapseMetrics {
    /// Requests that ended, whatever the outcome.
    pub fn requests(&self) -> u64 {
        self.ok
            + self.error
            + self.timed_out
            + self.peer_cancelled
            + self.connection_lost
            + self.peer_stalled
    }

    fn outcomes(&self) -> [(&'static str, u64); 6] {
        [
            ("ok", self.ok),
            ("error", self.error),
            ("timed_out", self.timed_out),
            ("peer_cancelled", self.peer_cancelled),
            ("connection_lost", self.connection_lost),
            ("peer_stalled", self.peer_stalled),
        ]
    }
}

/// A snapshot of the server's metrics; see `docs/metrics.md` for the exposition.
#[derive(Debug, Clone, Default)]
pub struct ServerMetrics {
    /// The core's counters.
    pub stats: ServerStats,
    /// Open QUIC connections.
    pub connections: usize,
    /// Connections with no authenticated validator yet, over all drivers (read in one
    /// step from the count `max_unauthenticated_connections` bounds).
    pub unauthenticated: usize,
    /// Validator hotkeys authenticated now.
    pub validators: usize,
    /// Connections closed, by reason.
    pub closed: ClosedConnections,
    /// Handshakes refused, by reason (`HandshakeError::reason_code`, and `malformed` for
    /// requests that did not decode).
    pub handshakes_refused: ReasonCounts,
    /// Per registered synapse (in registration order).
    pub synapses: Vec<SynapseMetrics>,
    /// Requests delivered to handlers and not finished yet.
    pub requests_in_flight: usize,
    /// Response bytes queued for sending.
    pub queued_bytes: usize,
    /// Request bytes reserved by requests being received.
    pub reserved_request_bytes: u64,
    /// Request streams waiting for that budget.
    pub parked_streams: usize,
    /// Nonces in the replay cache.
    pub active_nonces: usize,
    /// The socket's traffic.
    pub io: IoCounters,
    /// quinn's path figures over the open connections.
    pub path: PathSummary,
}

impl SynapseMetrics {
    fn merge(&mut self, other: &SynapseMetrics) {
        self.registered |= other.registered;
        self.ok += other.ok;
        self.error += other.error;
        self.timed_out += other.timed_out;
        self.peer_cancelled += other.peer_cancelled;
        self.connection_lost += other.connection_lost;
        self.peer_stalled += other.peer_stalled;
        self.handler_seconds.merge(&other.handler_seconds);
        self.stream_chunks += other.stream_chunks;
        self.stream_chunk_bytes += other.stream_chunk_bytes;
    }
}

impl ServerMetrics {
    /// The snapshots of the drivers of one port as one: counters and tables summed;
    /// figures of what the drivers share (nonces, reserved request bytes, unauthenticated
    /// connections) taken once: each driver reads the same shared total, so the largest
    /// reading stands for them all.
    pub(crate) fn merge(parts: Vec<ServerMetrics>) -> ServerMetrics {
        let mut parts = parts.into_iter();
        let mut total = parts.next().unwrap_or_default();
        for p in parts {
            total.stats.add(&p.stats);
            total.connections += p.connections;
            total.unauthenticated = total.unauthenticated.max(p.unauthenticated);
            total.validators += p.validators;
            total.closed.merge(&p.closed);
            total.handshakes_refused.merge(&p.handshakes_refused);
            for s in &p.synapses {
                match total.synapses.iter_mut().find(|t| t.synapse == s.synapse) {
                    Some(t) => t.merge(s),
                    None => total.synapses.push(s.clone()),
                }
            }
            total.requests_in_flight += p.requests_in_flight;
            total.queued_bytes += p.queued_bytes;
            total.reserved_request_bytes =
                total.reserved_request_bytes.max(p.reserved_request_bytes);
            total.parked_streams += p.parked_streams;
            total.active_nonces = total.active_nonces.max(p.active_nonces);
            total.io.merge(&p.io);
            total.path.merge(&p.path);
        }
        total
    }

    /// The figures of synapse `name`, if it was ever registered.
    pub fn synapse(&self, name: &str) -> Option<&SynapseMetrics> {
        self.synapses.iter().find(|s| s.synapse == name)
    }

    /// Admission refusals by reason: `allowlist`, `unauthenticated_cap`, `source_cap`,
    /// `connection_cap`, `rate_limit`, `permit`.
    pub fn admission_refusals(&self) -> [(&'static str, u64); 6] {
        let s = &self.stats;
        let h = &self.handshakes_refused;
        [
            ("allowlist", s.ignored),
            ("unauthenticated_cap", s.refused_unauthenticated),
            ("source_cap", s.refused_per_source),
            ("connection_cap", s.refused_full + h.get("connection_limit")),
            ("rate_limit", h.get("rate_limited")),
            ("permit", h.get("not_permitted")),
        ]
    }

    /// The metrics in the Prometheus text format (0.0.4; serve it with
    /// [`METRICS_CONTENT_TYPE`](crate::METRICS_CONTENT_TYPE)).
    pub fn to_prometheus(&self) -> String {
        exposition(Expose(self.clone()))
    }
}

#[derive(Debug)]
struct Expose(ServerMetrics);

impl Collector for Expose {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        let s = &m.stats;
        let mut f = Families { enc: &mut encoder };
        f.gauges(
            "lightning_server_connections",
            "Open QUIC connections, by whether a validator has authenticated on them.",
            [
                (
                    vec![("state", "authenticated")],
                    m.connections.saturating_sub(m.unauthenticated) as f64,
                ),
                (vec![("state", "unauthenticated")], m.unauthenticated as f64),
            ],
        )?;
        f.gauge(
            "lightning_server_validators",
            "Validator hotkeys authenticated now.",
            m.validators as f64,
        )?;
        f.counter(
            "lightning_server_connections_accepted",
            "QUIC connections accepted.",
            s.accepted,
        )?;
        f.counters(
            "lightning_server_connections_closed",
            "QUIC connections closed, by reason.",
            m.closed
                .by_reason()
                .into_iter()
                .map(|(r, n)| (vec![("reason", r)], n)),
        )?;
        f.counter(
            "lightning_server_handshakes_accepted",
            "Validator handshakes accepted.",
            s.handshakes_ok,
        )?;
        f.counters(
            "lightning_server_handshakes_refused",
            "Validator handshakes refused, by reason.",
            m.handshakes_refused
                .iter()
                .map(|(r, n)| (vec![("reason", r)], n)),
        )?;
        f.counters(
            "lightning_server_admission_refusals",
            "Connections or handshakes refused by admission control, by reason.",
            m.admission_refusals()
                .into_iter()
                .map(|(r, n)| (vec![("reason", r)], n)),
        )?;
        f.counter(
            "lightning_server_retries",
            "QUIC Retry packets sent (address validation).",
            s.retried,
        )?;
        f.counter(
            "lightning_server_evictions",
            "Idle validators' connections closed to admit a new validator.",
            s.evicted,
        )?;
        f.counters(
            "lightning_server_timeouts",
            "Connections closed or streams reset by the server's deadlines.",
            [
                (vec![("kind", "auth")], s.auth_timeouts),
                (vec![("kind", "read")], s.read_timeouts),
                (vec![("kind", "send")], s.send_timeouts),
            ],
        )?;
        let mut requests = Vec::new();
        for syn in &m.synapses {
            for (outcome, n) in syn.outcomes() {
                requests.push((
                    vec![("synapse", syn.synapse.as_str()), ("outcome", outcome)],
                    n,
                ));
            }
        }
        for (outcome, n) in [
            ("unrecognized_synapse", s.unknown_synapse),
            ("unauthenticated", s.unauthenticated_requests),
            ("malformed", s.malformed_requests),
        ] {
            requests.push((
                vec![("synapse", UNKNOWN_SYNAPSE_LABEL), ("outcome", outcome)],
                n,
            ));
        }
        f.counters(
            "lightning_server_requests",
            "Requests that ended, by synapse and outcome.",
            requests,
        )?;
        f.histograms(
            "lightning_server_handler_duration_seconds",
            "Handler time of requests whose handler finished, by synapse.",
            by_synapse(&m.synapses, |syn| &syn.handler_seconds),
        )?;
        f.gauge(
            "lightning_server_requests_in_flight",
            "Requests delivered to handlers and not finished.",
            m.requests_in_flight as f64,
        )?;
        f.counters(
            "lightning_server_stream_chunks",
            "Chunks sent by streaming handlers, by synapse.",
            by_synapse(&m.synapses, |syn| syn.stream_chunks),
        )?;
        f.counters(
            "lightning_server_stream_chunk_bytes",
            "Bytes of chunks sent by streaming handlers, by synapse.",
            by_synapse(&m.synapses, |syn| syn.stream_chunk_bytes),
        )?;
        f.gauge(
            "lightning_server_queued_bytes",
            "Response bytes queued for sending.",
            m.queued_bytes as f64,
        )?;
        f.gauge(
            "lightning_server_reserved_request_bytes",
            "Request bytes reserved by requests being received.",
            m.reserved_request_bytes as f64,
        )?;
        f.gauge(
            "lightning_server_parked_streams",
            "Request streams waiting for read budget.",
            m.parked_streams as f64,
        )?;
        f.gauge(
            "lightning_server_replay_cache_nonces",
            "Handshake nonces held by the replay cache.",
            m.active_nonces as f64,
        )?;
        f.io("server", &m.io)?;
        f.path("server", &m.path)
    }
}

/// The counters the endpoint task keeps.
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    /// Indexed by `SynapseIndex::slot`.
    pub(crate) synapses: Vec<SynapseMetrics>,
    pub(crate) closed: ClosedConnections,
    pub(crate) handshakes_refused: ReasonCounts,
    pub(crate) io: IoCounters,
}

impl ServerCounters {
    /// A handler was registered at `slot` under `name`.
    pub(crate) fn register(&mut self, slot: usize, name: &str) {
        if self.synapses.len() <= slot {
            self.synapses.resize_with(slot + 1, SynapseMetrics::default);
        }
        let s = &mut self.synapses[slot];
        if s.synapse != name {
            s.synapse = name.to_string();
        }
        s.registered = true;
    }

    pub(crate) fn unregister(&mut self, slot: usize) {
        if let Some(s) = self.synapses.get_mut(slot) {
            s.registered = false;
        }
    }

    /// A request at `slot` ended; `handler` is its handler time if the handler finished.
    #[inline]
    pub(crate) fn record(&mut self, slot: usize, outcome: Outcome, handler: Option<Duration>) {
        let Some(s) = self.synapses.get_mut(slot) else {
            return;
        };
        match outcome {
            Outcome::Ok => s.ok += 1,
            Outcome::Error => s.error += 1,
            Outcome::TimedOut => s.timed_out += 1,
            Outcome::PeerCancelled => s.peer_cancelled += 1,
            Outcome::ConnectionLost => s.connection_lost += 1,
            Outcome::PeerStalled => s.peer_stalled += 1,
        }
        if let Some(d) = handler {
            s.handler_seconds.observe(d);
        }
    }

    #[inline]
    pub(crate) fn chunk(&mut self, slot: usize, bytes: u64) {
        if let Some(s) = self.synapses.get_mut(slot) {
            s.stream_chunks += 1;
            s.stream_chunk_bytes += bytes;
        }
    }

    /// The synapses that were ever registered (slots of names never registered, if
    /// any, are skipped).
    pub(crate) fn synapses(&self) -> Vec<SynapseMetrics> {
        self.synapses
            .iter()
            .filter(|s| !s.synapse.is_empty())
            .cloned()
            .collect()
    }
}
