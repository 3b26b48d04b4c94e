//! The client's metrics: counters kept by the endpoint task, the [`ClientMetrics`]
//! snapshot, and its Prometheus exposition.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::error::LightningError;
use crate::metrics::{
    by_synapse, exposition, ClosedConnections, Families, Histogram, IoCounters, PathSummary,
    PerSynapse, ReasonCounts,
};

/// Distinct synapse names the client labels separately; queries for further names
/// count under [`OTHER_SYNAPSE_LABEL`], so the label set stays bounded whatever the
/// application sends.
pub const MAX_CLIENT_SYNAPSE_LABELS: usize = 64;

/// The label of synapse names past [`MAX_CLIENT_SYNAPSE_LABELS`].
pub const OTHER_SYNAPSE_LABEL: &str = "other";

/// How a query ended, as a label value.
pub const CLIENT_OUTCOMES: [&str; 10] = [
    "ok",
    "error",
    "timeout",
    "connect",
    "handshake",
    "connection_lost",
    "protocol",
    "stream",
    "cancelled",
    "local",
];

/// Index in [`CLIENT_OUTCOMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok = 0,
    Error = 1,
    Timeout = 2,
    Connect = 3,
    Handshake = 4,
    ConnectionLost = 5,
    Protocol = 6,
    Stream = 7,
    Cancelled = 8,
    Local = 9,
}

impl Outcome {
    pub(crate) fn of_error(e: &LightningError) -> Self {
        match e {
            LightningError::Connect(_) => Self::Connect,
            LightningError::Handshake(_) => Self::Handshake,
            LightningError::Timeout(_) => Self::Timeout,
            LightningError::ConnectionLost(_) => Self::ConnectionLost,
            LightningError::Remote(_) => Self::Error,
            LightningError::Protocol(_) => Self::Protocol,
            LightningError::Stream(_) | LightningError::StreamReset { .. } => Self::Stream,
            _ => Self::Local,
        }
    }
}

/// One synapse's figures on the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientSynapseMetrics {
    /// The synapse name, or [`OTHER_SYNAPSE_LABEL`].
    pub synapse: String,
    /// Queries that ended, per outcome, in the order of [`CLIENT_OUTCOMES`].
    pub outcomes: [u64; 10],
    /// End-to-end latency of answered queries (`ok` or `error`): from the query reaching
    /// the endpoint task (dialing and handshake included) to the whole answer.
    pub latency_seconds: Histogram,
    /// Chunks received on streaming queries.
    pub stream_chunks: u64,
    /// Bytes of those chunks.
    pub stream_chunk_bytes: u64,
}

impl PerSynapse for ClientSynapseMetrics {
    fn synapse(&self) -> &str {
        &self.synapse
    }
}

impl ClientSynapseMetrics {
    /// Queries that ended with outcome `name` (one of [`CLIENT_OUTCOMES`]).
    pub fn outcome(&self, name: &str) -> u64 {
        CLIENT_OUTCOMES
            .iter()
            .position(|o| *o == name)
            .map_or(0, |i| self.outcomes[i])
    }

    /// Queries that ended, whatever the outcome.
    pub fn requests(&self) -> u64 {
        self.outcomes.iter().sum()
    }
}

/// A snapshot of the client's metrics; see `docs/metrics.md` for the exposition.
#[derive(Debug, Clone, Default)]
pub struct ClientMetrics {
    /// Miner addresses with a live connection.
    pub connections: usize,
    /// Connections lost or closed, by reason.
    pub closed: ClosedConnections,
    /// Miner hotkeys authenticated (each successful handshake).
    pub handshakes_ok: u64,
    /// Handshakes that failed, by reason.
    pub handshakes_failed: ReasonCounts,
    /// Per synapse name (in first-use order).
    pub synapses: Vec<ClientSynapseMetrics>,
    /// Queries and streams in flight.
    pub requests_in_flight: usize,
    /// The socket's traffic.
    pub io: IoCounters,
    /// quinn's path figures over the open connections.
    pub path: PathSummary,
}

impl ClientMetrics {
    /// The figures of synapse `name`, if a query for it was made.
    pub fn synapse(&self, name: &str) -> Option<&ClientSynapseMetrics> {
        self.synapses.iter().find(|s| s.synapse == name)
    }

    /// The metrics in the Prometheus text format (0.0.4).
    pub fn to_prometheus(&self) -> String {
        exposition(Expose(self.clone()))
    }
}

#[derive(Debug)]
struct Expose(ClientMetrics);

impl Collector for Expose {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        let mut f = Families { enc: &mut encoder };
        f.gauge(
            "lightning_client_connections",
            "Miner addresses with a live QUIC connection.",
            m.connections as f64,
        )?;
        f.counters(
            "lightning_client_connections_closed",
            "QUIC connections to miners closed, by reason.",
            m.closed
                .by_reason()
                .into_iter()
                .map(|(r, n)| (vec![("reason", r)], n)),
        )?;
        f.counter(
            "lightning_client_handshakes_accepted",
            "Miner hotkeys authenticated.",
            m.handshakes_ok,
        )?;
        f.counters(
            "lightning_client_handshakes_failed",
            "Miner handshakes that failed, by reason.",
            m.handshakes_failed
                .iter()
                .map(|(r, n)| (vec![("reason", r)], n)),
        )?;
        let mut requests = Vec::new();
        for syn in &m.synapses {
            for (outcome, n) in CLIENT_OUTCOMES.iter().zip(syn.outcomes) {
                requests.push((
                    vec![("synapse", syn.synapse.as_str()), ("outcome", *outcome)],
                    n,
                ));
            }
        }
        f.counters(
            "lightning_client_requests",
            "Queries that ended, by synapse and outcome.",
            requests,
        )?;
        f.histograms(
            "lightning_client_request_duration_seconds",
            "End-to-end latency of answered queries, by synapse.",
            by_synapse(&m.synapses, |syn| &syn.latency_seconds),
        )?;
        f.gauge(
            "lightning_client_requests_in_flight",
            "Queries and streams in flight.",
            m.requests_in_flight as f64,
        )?;
        f.counters(
            "lightning_client_stream_chunks",
            "Chunks received on streaming queries, by synapse.",
            by_synapse(&m.synapses, |syn| syn.stream_chunks),
        )?;
        f.counters(
            "lightning_client_stream_chunk_bytes",
            "Bytes of chunks received on streaming queries, by synapse.",
            by_synapse(&m.synapses, |syn| syn.stream_chunk_bytes),
        )?;
        f.io("client", &m.io)?;
        f.path("client", &m.path)
    }
}

/// The counters the endpoint task keeps.
#[derive(Debug, Default)]
pub(crate) struct ClientCounters {
    slots: HashMap<String, usize>,
    pub(crate) synapses: Vec<ClientSynapseMetrics>,
    pub(crate) closed: ClosedConnections,
    pub(crate) handshakes_ok: u64,
    pub(crate) handshakes_failed: ReasonCounts,
    pub(crate) io: IoCounters,
}

impl ClientCounters {
    /// The slot that counts queries for `synapse`.
    #[inline]
    pub(crate) fn slot(&mut self, synapse: &str) -> usize {
        if let Some(&slot) = self.slots.get(synapse) {
            return slot;
        }
        let label = if self.slots.len() < MAX_CLIENT_SYNAPSE_LABELS {
            synapse
        } else {
            OTHER_SYNAPSE_LABEL
        };
        let slot = match self.synapses.iter().position(|s| s.synapse == label) {
            Some(slot) => slot,
            None => {
                self.synapses.push(ClientSynapseMetrics {
                    synapse: label.to_string(),
                    ..Default::default()
                });
                self.synapses.len() - 1
            }
        };
        if label == synapse {
            self.slots.insert(synapse.to_string(), slot);
        }
        slot
    }

    #[inline]
    pub(crate) fn record(&mut self, slot: usize, outcome: Outcome, latency: Option<Duration>) {
        if let Some(s) = self.synapses.get_mut(slot) {
            s.outcomes[outcome as usize] += 1;
            if let Some(d) = latency {
                s.latency_seconds.observe(d);
            }
        }
    }

    #[inline]
    pub(crate) fn chunk(&mut self, slot: usize, bytes: usize) {
        if let Some(s) = self.synapses.get_mut(slot) {
            s.stream_chunks += 1;
            s.stream_chunk_bytes += bytes as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_labels_are_bounded() {
        let mut c = ClientCounters::default();
        let first = c.slot("echo");
        assert_eq!(c.slot("echo"), first);
        for i in 0..(MAX_CLIENT_SYNAPSE_LABELS * 2) {
            let slot = c.slot(&format!("name{i}"));
            c.record(slot, Outcome::Ok, None);
        }
        assert_eq!(c.synapses.len(), MAX_CLIENT_SYNAPSE_LABELS + 1);
        let other = c
            .synapses
            .iter()
            .find(|s| s.synapse == OTHER_SYNAPSE_LABEL)
            .map(|s| s.outcomes[Outcome::Ok as usize]);
        assert_eq!(other, Some(MAX_CLIENT_SYNAPSE_LABELS as u64 + 1));
    }
}
