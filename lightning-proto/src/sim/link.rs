//! Link conditions, per-link accounting, and the random draws that decide a
//! datagram's fate.

use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

/// How a directed link treats the datagrams that cross it.
///
/// Fields are public so a scenario can start from a preset and override a
/// few: `LinkConditions { latency, ..LinkConditions::perfect() }`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConditions {
    /// One-way propagation delay every datagram experiences.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per datagram; jitter
    /// larger than the send interval reorders datagrams, as on a real path.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a datagram is lost.
    pub loss: f64,
    /// Probability in `[0, 1]` that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability in `[0, 1]` that a datagram is held back by an extra delay
    /// drawn uniformly from `[0, reorder_delay]`.
    pub reorder: f64,
    /// Upper bound of the hold-back applied to reordered datagrams.
    pub reorder_delay: Duration,
    /// Largest UDP payload the path carries. Larger datagrams vanish without
    /// notice, as they do behind a path-MTU black hole.
    pub mtu: usize,
    /// Bottleneck rate in bytes per second; `None` serializes instantly.
    /// With a rate, datagrams wait behind earlier ones in a tail-drop queue.
    pub bandwidth: Option<u64>,
    /// Bytes the bottleneck queue holds before it drops arrivals.
    pub queue_bytes: usize,
}

impl LinkConditions {
    /// No delay, loss, duplication, reordering or rate limit; carries any UDP
    /// payload size.
    pub fn perfect() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            mtu: 65_527,
            bandwidth: None,
            queue_bytes: 256 * 1024,
        }
    }

    /// A perfect link that loses each datagram with probability `p`.
    pub fn lossy(p: f64) -> Self {
        Self {
            loss: p,
            ..Self::perfect()
        }
    }
}

impl Default for LinkConditions {
    fn default() -> Self {
        Self::perfect()
    }
}

/// A number of datagrams and their total payload bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Datagrams counted.
    pub datagrams: u64,
    /// Sum of their UDP payload lengths.
    pub bytes: u64,
}

impl Counter {
    fn add(&mut self, len: usize) {
        self.datagrams += 1;
        self.bytes += len as u64;
    }
}

/// What happened to the datagrams of one link, or of all links together.
///
/// Once nothing is in flight, `sent + duplicated` equals `delivered +
/// unroutable + lost + dropped_mtu + dropped_queue + dropped_partition`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the link (GSO batches count per segment).
    pub sent: Counter,
    /// Datagrams handed to a node at the destination address.
    pub delivered: Counter,
    /// Datagrams lost at random.
    pub lost: Counter,
    /// Extra copies the link created.
    pub duplicated: Counter,
    /// Datagrams held back by the reorder delay (they are still delivered).
    pub reordered: Counter,
    /// Datagrams larger than the link MTU.
    pub dropped_mtu: Counter,
    /// Datagrams that found the bottleneck queue full.
    pub dropped_queue: Counter,
    /// Datagrams sent while the link was partitioned.
    pub dropped_partition: Counter,
    /// Datagrams that arrived where no node was listening.
    pub unroutable: Counter,
}

/// A datagram's fate, as recorded in stats, the trace digest and tracing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Sent,
    Scheduled,
    Reordered,
    Duplicated,
    Lost,
    DroppedMtu,
    DroppedQueue,
    Partitioned,
    Delivered,
    Unroutable,
}

impl LinkStats {
    pub(crate) fn count(&mut self, fate: Fate, len: usize) {
        let counter = match fate {
            Fate::Sent => &mut self.sent,
            Fate::Scheduled => return,
            Fate::Reordered => &mut self.reordered,
            Fate::Duplicated => &mut self.duplicated,
            Fate::Lost => &mut self.lost,
            Fate::DroppedMtu => &mut self.dropped_mtu,
            Fate::DroppedQueue => &mut self.dropped_queue,
            Fate::Partitioned => &mut self.dropped_partition,
            Fate::Delivered => &mut self.delivered,
            Fate::Unroutable => &mut self.unroutable,
        };
        counter.add(len);
    }
}

/// True with probability `p`; draws nothing when the outcome is certain, so a
/// perfect link leaves the random stream untouched.
pub(crate) fn chance(rng: &mut ChaCha20Rng, p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    if p >= 1.0 {
        return true;
    }
    // 53 random bits give every representable f64 in [0, 1) a fair share.
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    unit < p
}

/// A duration drawn uniformly from `[0, max]` at nanosecond resolution.
pub(crate) fn up_to(rng: &mut ChaCha20Rng, max: Duration) -> Duration {
    let span = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if span == 0 {
        return Duration::ZERO;
    }
    // Multiply-shift maps 64 random bits onto [0, span] without modulo bias
    // worth speaking of.
    let draw = (u128::from(rng.next_u64()) * (u128::from(span) + 1)) >> 64;
    Duration::from_nanos(draw as u64)
}
