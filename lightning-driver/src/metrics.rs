//! Metrics shared by both roles: latency histograms, socket counters, the summary of
//! quinn's path figures over connections, close reasons, and the Prometheus text
//! exposition (through `prometheus-client`, never written by hand).
//!
//! The counters live in the endpoint task (plain integers, no atomics or locks: the task
//! is their only writer); a snapshot is copied out on request, like the stats, and
//! exposition works on that snapshot. No HTTP here: the CLI or the application serves the
//! text.

use std::time::Duration;

use lightning_proto::endpoint::ConnectionStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// `Content-Type` of the text that `metrics_text` returns (Prometheus text format 0.0.4).
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the latency histograms' buckets; a last `+Inf` bucket
/// holds the rest. From 50 µs (a loopback echo) to a minute (a slow model).
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// The same bounds in nanoseconds, so that an observation compares integers.
const BUCKET_NANOS: [u64; 20] = {
    let mut out = [0u64; 20];
    let mut i = 0;
    while i < 20 {
        out[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// A latency histogram with the fixed buckets of [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: [u64; 21],
    sum_nanos: u64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub(crate) fn observe(&mut self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKET_NANOS.partition_point(|&b| b < nanos);
        self.counts[i] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// `(upper bound in seconds, observations at or below it)`, cumulative as in
    /// Prometheus, ending with `(+Inf, count)`.
    pub fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts)
            .map(|(le, n)| {
                total += n;
                (le, total)
            })
            .collect()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), as Prometheus'
    /// `histogram_quantile` would bound it; `None` with no observation.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        self.cumulative_buckets()
            .into_iter()
            .find(|&(_, n)| n >= rank)
            .map(|(le, _)| le)
    }

    /// Adds another histogram's observations (same buckets).
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
        self.count += other.count;
    }

    fn per_bucket(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts)
            .collect()
    }
}

/// UDP traffic of one endpoint, counted at its socket (every datagram, QUIC's own
/// included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// UDP payload bytes received.
    pub bytes_in: u64,
    /// Datagrams sent (a GSO batch counts each of its segments).
    pub datagrams_out: u64,
    /// UDP payload bytes sent.
    pub bytes_out: u64,
    /// Sends the kernel refused (treated as losses).
    pub send_errors: u64,
}

impl IoCounters {
    #[inline]
    pub(crate) fn received(&mut self, datagrams: usize, bytes: usize) {
        self.datagrams_in += datagrams as u64;
        self.bytes_in += bytes as u64;
    }

    /// Adds another endpoint's traffic.
    pub(crate) fn merge(&mut self, other: &IoCounters) {
        self.datagrams_in += other.datagrams_in;
        self.bytes_in += other.bytes_in;
        self.datagrams_out += other.datagrams_out;
        self.bytes_out += other.bytes_out;
        self.send_errors += other.send_errors;
    }

    #[inline]
    pub(crate) fn sent(&mut self, size: usize, segment_size: Option<usize>) {
        let segment = segment_size.unwrap_or(size).max(1);
        self.datagrams_out += size.div_ceil(segment) as u64;
        self.bytes_out += size as u64;
    }
}

/// quinn's path figures summarised over the open connections at the time of the
/// snapshot (a connection's figures leave the summary when it closes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PathSummary {
    /// Connections summarised.
    pub connections: usize,
    /// Smallest smoothed RTT.
    pub rtt_min: Duration,
    /// Mean smoothed RTT.
    pub rtt_mean: Duration,
    /// Largest smoothed RTT.
    pub rtt_max: Duration,
    /// Smallest congestion window, bytes.
    pub cwnd_min: u64,
    /// Mean congestion window, bytes.
    pub cwnd_mean: u64,
    /// Largest congestion window, bytes.
    pub cwnd_max: u64,
    /// Packets sent, summed.
    pub sent_packets: u64,
    /// Packets declared lost, summed.
    pub lost_packets: u64,
    /// Bytes declared lost, summed.
    pub lost_bytes: u64,
    /// Congestion events, summed.
    pub congestion_events: u64,
}

impl PathSummary {
    /// Summarises the stats of each connection.
    pub fn from_stats<'a>(stats: impl IntoIterator<Item = &'a ConnectionStats>) -> Self {
        let mut s = Self::default();
        let mut rtt_total = Duration::ZERO;
        let mut cwnd_total: u128 = 0;
        for c in stats {
            let p = &c.path;
            if s.connections == 0 {
                s.rtt_min = p.rtt;
                s.cwnd_min = p.cwnd;
            }
            s.connections += 1;
            s.rtt_min = s.rtt_min.min(p.rtt);
            s.rtt_max = s.rtt_max.max(p.rtt);
            rtt_total += p.rtt;
            s.cwnd_min = s.cwnd_min.min(p.cwnd);
            s.cwnd_max = s.cwnd_max.max(p.cwnd);
            cwnd_total += u128::from(p.cwnd);
            s.sent_packets += p.sent_packets;
            s.lost_packets += p.lost_packets;
            s.lost_bytes += p.lost_bytes;
            s.congestion_events += p.congestion_events;
        }
        if s.connections > 0 {
            s.rtt_mean = rtt_total / s.connections as u32;
            s.cwnd_mean = (cwnd_total / s.connections as u128) as u64;
        }
        s
    }
}

impl PathSummary {
    /// Combines the summaries of two disjoint sets of connections.
    pub(crate) fn merge(&mut self, other: &PathSummary) {
        if other.connections == 0 {
            return;
        }
        if self.connections == 0 {
            *self = *other;
            return;
        }
        let (a, b) = (self.connections as u128, other.connections as u128);
        let mean = |x: u128, y: u128| ((x * a + y * b) / (a + b)) as u64;
        self.rtt_mean =
            Duration::from_nanos(mean(self.rtt_mean.as_nanos(), other.rtt_mean.as_nanos()));
        self.cwnd_mean = mean(u128::from(self.cwnd_mean), u128::from(other.cwnd_mean));
        self.connections += other.connections;
        self.rtt_min = self.rtt_min.min(other.rtt_min);
        self.rtt_max = self.rtt_max.max(other.rtt_max);
        self.cwnd_min = self.cwnd_min.min(other.cwnd_min);
        self.cwnd_max = self.cwnd_max.max(other.cwnd_max);
        self.sent_packets += other.sent_packets;
        self.lost_packets += other.lost_packets;
        self.lost_bytes += other.lost_bytes;
        self.congestion_events += other.congestion_events;
    }
}

/// Why a connection closed, as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// This endpoint closed it (shutdown, eviction, handshake timeout, a refused
    /// handshake, replaced by a newer connection of the same hotkey, ...).
    Local,
    /// The peer closed it (application close).
    PeerClosed,
    /// The peer closed it with a transport error.
    PeerError,
    /// The idle timeout passed.
    IdleTimeout,
    /// The peer reset it (stateless reset).
    Reset,
    /// Anything else (a local transport error, version mismatch, ...).
    Other,
}

impl CloseReason {
    /// Every reason, in exposition order.
    pub const ALL: [CloseReason; 6] = [
        Self::Local,
        Self::PeerClosed,
        Self::PeerError,
        Self::IdleTimeout,
        Self::Reset,
        Self::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::PeerClosed => "peer_closed",
            Self::PeerError => "peer_error",
            Self::IdleTimeout => "idle_timeout",
            Self::Reset => "reset",
            Self::Other => "other",
        }
    }

    /// Classifies the close reason text the core reports (quinn's `ConnectionError`
    /// display, or the role's text for a connection drained after a local close). The
    /// text may carry a peer's reason phrase; only its fixed prefix is looked at.
    pub fn classify(reason: &str) -> Self {
        if matches!(reason, "drained" | "connection drained" | "closed") {
            Self::Local
        } else if reason.starts_with("closed by peer") {
            Self::PeerClosed
        } else if reason.starts_with("aborted by peer") {
            Self::PeerError
        } else if reason == "timed out" {
            Self::IdleTimeout
        } else if reason == "reset by peer" {
            Self::Reset
        } else {
            Self::Other
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Connections closed, per [`CloseReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClosedConnections([u64; 6]);

impl ClosedConnections {
    #[inline]
    pub(crate) fn record(&mut self, reason: &str) {
        self.0[CloseReason::classify(reason).index()] += 1;
    }

    /// Connections closed for `reason`.
    pub fn get(&self, reason: CloseReason) -> u64 {
        self.0[reason.index()]
    }

    /// Connections closed, all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds another endpoint's closures.
    pub(crate) fn merge(&mut self, other: &ClosedConnections) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// `(label, count)` for every reason.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        CloseReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.get(*r)))
            .collect()
    }
}

/// Counts by a `&'static str` reason code (a bounded set: the codes come from enums).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonCounts(Vec<(&'static str, u64)>);

impl ReasonCounts {
    pub(crate) fn add(&mut self, reason: &'static str, n: u64) {
        match self.0.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.0.push((reason, n)),
        }
    }

    /// Adds another endpoint's counts.
    pub(crate) fn merge(&mut self, other: &ReasonCounts) {
        for (reason, n) in other.iter() {
            self.add(reason, n);
        }
    }

    /// The count for `reason` (0 if never seen).
    pub fn get(&self, reason: &str) -> u64 {
        self.0
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, c)| *c)
    }

    /// Sum over the reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, c)| c).sum()
    }

    /// `(reason, count)` pairs, in the order first seen.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().copied()
    }
}

// ----- exposition --------------------------------------------------------------------------

/// Encodes a snapshot with `prometheus-client`'s Prometheus text encoder.
pub(crate) fn exposition(collector: impl Collector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// Helpers that write one metric family each; counter names are given without
/// `_total`, which the encoder appends.
pub(crate) struct Families<'a, 'b> {
    pub(crate) enc: &'b mut DescriptorEncoder<'a>,
}

type Labels<'l> = Vec<(&'static str, &'l str)>;

/// A row of per-synapse metrics (the client's and the server's have different fields).
pub(crate) trait PerSynapse {
    /// The synapse label of the row.
    fn synapse(&self) -> &str;
}

/// One series per row, labelled by its synapse, with the value `value` picks.
pub(crate) fn by_synapse<'l, T: PerSynapse, V>(
    rows: &'l [T],
    value: impl Fn(&'l T) -> V + 'l,
) -> impl Iterator<Item = (Labels<'l>, V)> + 'l {
    rows.iter()
        .map(move |row| (vec![("synapse", row.synapse())], value(row)))
}

impl Families<'_, '_> {
    pub(crate) fn counter(&mut self, name: &str, help: &str, v: u64) -> std::fmt::Result {
        let m = ConstCounter::new(v);
        m.encode(
            self.enc
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    pub(crate) fn gauge(&mut self, name: &str, help: &str, v: f64) -> std::fmt::Result {
        let m = ConstGauge::new(v);
        m.encode(
            self.enc
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    pub(crate) fn counters<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels<'l>, u64)>,
    ) -> std::fmt::Result {
        let mut enc = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in series {
            ConstCounter::new(v).encode(enc.encode_family(&labels)?)?;
        }
        Ok(())
    }

    pub(crate) fn gauges<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels<'l>, f64)>,
    ) -> std::fmt::Result {
        let mut enc = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in series {
            ConstGauge::new(v).encode(enc.encode_family(&labels)?)?;
        }
        Ok(())
    }

    pub(crate) fn histograms<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels<'l>, &'l Histogram)>,
    ) -> std::fmt::Result {
        let mut enc = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in series {
            encode_histogram(enc.encode_family(&labels)?, h)?;
        }
        Ok(())
    }

    pub(crate) fn io(&mut self, role: &str, io: &IoCounters) -> std::fmt::Result {
        self.counters(
            &format!("lightning_{role}_udp_datagrams"),
            "UDP datagrams through the endpoint's socket.",
            [
                (vec![("direction", "in")], io.datagrams_in),
                (vec![("direction", "out")], io.datagrams_out),
            ],
        )?;
        self.counters(
            &format!("lightning_{role}_udp_bytes"),
            "UDP payload bytes through the endpoint's socket.",
            [
                (vec![("direction", "in")], io.bytes_in),
                (vec![("direction", "out")], io.bytes_out),
            ],
        )?;
        self.counter(
            &format!("lightning_{role}_udp_send_errors"),
            "Datagrams the kernel refused to send (QUIC retransmits them).",
            io.send_errors,
        )
    }

    pub(crate) fn path(&mut self, role: &str, p: &PathSummary) -> std::fmt::Result {
        let stat = |s: &'static str| vec![("stat", s)];
        self.gauge(
            &format!("lightning_{role}_path_connections"),
            "Open connections summarised by the lightning_*_path_* figures.",
            p.connections as f64,
        )?;
        self.gauges(
            &format!("lightning_{role}_path_rtt_seconds"),
            "Smoothed RTT over open connections (min, mean, max).",
            [
                (stat("min"), p.rtt_min.as_secs_f64()),
                (stat("mean"), p.rtt_mean.as_secs_f64()),
                (stat("max"), p.rtt_max.as_secs_f64()),
            ],
        )?;
        self.gauges(
            &format!("lightning_{role}_path_cwnd_bytes"),
            "Congestion window over open connections (min, mean, max).",
            [
                (stat("min"), p.cwnd_min as f64),
                (stat("mean"), p.cwnd_mean as f64),
                (stat("max"), p.cwnd_max as f64),
            ],
        )?;
        self.gauge(
            &format!("lightning_{role}_path_sent_packets"),
            "QUIC packets sent, summed over open connections.",
            p.sent_packets as f64,
        )?;
        self.gauge(
            &format!("lightning_{role}_path_lost_packets"),
            "QUIC packets declared lost, summed over open connections.",
            p.lost_packets as f64,
        )?;
        self.gauge(
            &format!("lightning_{role}_path_lost_bytes"),
            "Bytes declared lost, summed over open connections.",
            p.lost_bytes as f64,
        )?;
        self.gauge(
            &format!("lightning_{role}_path_congestion_events"),
            "Congestion events, summed over open connections.",
            p.congestion_events as f64,
        )
    }
}

fn encode_histogram(mut enc: MetricEncoder<'_>, h: &Histogram) -> std::fmt::Result {
    enc.encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &h.per_bucket(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_bounded() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        assert_eq!(h.count(), 4);
        let b = h.cumulative_buckets();
        assert_eq!(b.len(), LATENCY_BUCKETS.len() + 1);
        // 10 µs and exactly 50 µs are both at or below the first bound.
        assert_eq!(b[0], (0.00005, 2));
        assert_eq!(b.last().copied(), Some((f64::INFINITY, 4)));
        assert_eq!(h.quantile_upper_bound(0.5), Some(0.00005));
        assert_eq!(h.quantile_upper_bound(0.75), Some(0.005));
        assert!((h.sum_seconds() - 100.00306).abs() < 1e-9);
    }

    #[test]
    fn close_reasons_are_bounded() {
        assert_eq!(CloseReason::classify("drained"), CloseReason::Local);
        assert_eq!(
            CloseReason::classify("connection drained"),
            CloseReason::Local
        );
        assert_eq!(
            CloseReason::classify("closed by peer: 0 (anything a peer writes)"),
            CloseReason::PeerClosed
        );
        assert_eq!(
            CloseReason::classify("aborted by peer: PROTOCOL_VIOLATION"),
            CloseReason::PeerError
        );
        assert_eq!(CloseReason::classify("timed out"), CloseReason::IdleTimeout);
        assert_eq!(CloseReason::classify("reset by peer"), CloseReason::Reset);
        assert_eq!(CloseReason::classify("whatever"), CloseReason::Other);
    }

    #[test]
    fn datagrams_of_a_gso_batch_are_counted_each() {
        let mut io = IoCounters::default();
        io.sent(3000, Some(1200));
        io.sent(100, None);
        assert_eq!(io.datagrams_out, 4);
        assert_eq!(io.bytes_out, 3100);
    }
}
