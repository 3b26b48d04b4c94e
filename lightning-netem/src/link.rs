//! One direction of the relay: the impairment decisions and the delay queue.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use socket2::SockRef;

use crate::{lock, Flow, Inner};

/// The impairments of one direction. The default impairs nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Each datagram's delay is drawn uniformly from `delay ± jitter` (never below zero).
    /// Unless [`reorder`](Self::reorder) is set, a datagram never leaves before the one
    /// that arrived before it, so jitter delays but does not reorder.
    pub jitter: Duration,
    /// Let jitter reorder datagrams.
    pub reorder: bool,
    /// Probability in `[0, 1]` that a datagram is dropped.
    pub loss: f64,
    /// Link rate in bits per second (IP and UDP headers included); `None` for no limit.
    pub rate_bits_per_s: Option<u64>,
    /// Bytes that may wait for the rate limit (headers included); a datagram that does not
    /// fit is dropped (drop-tail). Unused without a rate.
    pub queue_bytes: usize,
    /// Path MTU in bytes: datagrams whose payload plus IP and UDP headers (28 bytes on
    /// IPv4, 48 on IPv6) exceed it are dropped, as by a router that cannot fragment.
    /// `None` for no limit.
    pub mtu: Option<usize>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            loss: 0.0,
            rate_bits_per_s: None,
            queue_bytes: 1 << 20,
            mtu: None,
        }
    }
}

impl LinkConfig {
    /// Whether datagrams must wait in the delay queue (otherwise they are forwarded at once).
    fn delays(&self) -> bool {
        !self.delay.is_zero() || !self.jitter.is_zero() || self.rate_bits_per_s.is_some()
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that reached the relay.
    pub received: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// Datagrams sent on.
    pub forwarded: u64,
    /// Their payload bytes.
    pub forwarded_bytes: u64,
    /// Dropped by random loss.
    pub lost: u64,
    /// Dropped for exceeding the path MTU.
    pub mtu_dropped: u64,
    /// Dropped because the rate limit's queue was full.
    pub queue_dropped: u64,
    /// Dropped by a blackhole.
    pub blackholed: u64,
    /// Dropped because the relay could not map their source (too many clients, or no
    /// socket could be bound for it).
    pub no_mapping: u64,
    /// Sends the operating system refused.
    pub send_errors: u64,
    /// Delayed datagrams sent (the others went out at once, with no delay configured).
    pub delayed: u64,
    /// Total time delayed datagrams left after their due time, in microseconds: the
    /// emulator's own error (timer resolution, a busy machine). Divide by `delayed`.
    pub late_us_total: u64,
    /// The latest any delayed datagram left after its due time, in microseconds.
    pub late_us_max: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    received_bytes: AtomicU64,
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    lost: AtomicU64,
    mtu_dropped: AtomicU64,
    queue_dropped: AtomicU64,
    blackholed: AtomicU64,
    no_mapping: AtomicU64,
    send_errors: AtomicU64,
    delayed: AtomicU64,
    late_us_total: AtomicU64,
    late_us_max: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Where a datagram goes once it leaves the link.
#[derive(Debug)]
pub(crate) enum Dest {
    /// To the server, from the flow's current upstream socket.
    Server(Arc<Flow>),
    /// To this client, from the relay's listening socket.
    Client(std::net::SocketAddr),
}

/// What a link's delay thread receives.
#[derive(Debug)]
pub(crate) enum Queued {
    /// A datagram to send when it falls due.
    Datagram(Delayed),
    /// The relay stops: the thread ends, dropping what it still holds.
    Stop,
}

/// A datagram waiting in the delay queue, ordered by due time, then arrival.
#[derive(Debug)]
pub(crate) struct Delayed {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    dest: Dest,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug)]
struct State {
    rng: ChaCha8Rng,
    /// When the rate limiter's last queued bit leaves.
    free_at: Instant,
    /// Due time of the last datagram queued (to keep order under jitter).
    last_at: Instant,
    seq: u64,
}

impl State {
    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of a relay.
#[derive(Debug)]
pub(crate) struct Link {
    config: LinkConfig,
    overhead: usize,
    state: Mutex<State>,
    queue: Option<mpsc::Sender<Queued>>,
    counters: Counters,
}

impl Link {
    /// A link, and the receiving end of its delay queue when it delays datagrams.
    pub(crate) fn new(
        config: LinkConfig,
        seed: u64,
        overhead: usize,
    ) -> (Self, Option<mpsc::Receiver<Queued>>) {
        let now = Instant::now();
        let (queue, rx) = if config.delays() {
            let (tx, rx) = mpsc::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let link = Self {
            config,
            overhead,
            state: Mutex::new(State {
                rng: ChaCha8Rng::seed_from_u64(seed),
                free_at: now,
                last_at: now,
                seq: 0,
            }),
            queue,
            counters: Counters::default(),
        };
        (link, rx)
    }

    pub(crate) fn stats(&self) -> DirectionStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirectionStats {
            received: get(&c.received),
            received_bytes: get(&c.received_bytes),
            forwarded: get(&c.forwarded),
            forwarded_bytes: get(&c.forwarded_bytes),
            lost: get(&c.lost),
            mtu_dropped: get(&c.mtu_dropped),
            queue_dropped: get(&c.queue_dropped),
            blackholed: get(&c.blackholed),
            no_mapping: get(&c.no_mapping),
            send_errors: get(&c.send_errors),
            delayed: get(&c.delayed),
            late_us_total: get(&c.late_us_total),
            late_us_max: get(&c.late_us_max),
        }
    }

    /// Counts a datagram dropped because its source could not be mapped.
    pub(crate) fn refuse_unmapped(&self, len: usize) {
        add(&self.counters.received, 1);
        add(&self.counters.received_bytes, len as u64);
        add(&self.counters.no_mapping, 1);
    }

    /// Ends the link's delay thread, if it has one.
    pub(crate) fn stop(&self) {
        if let Some(queue) = &self.queue {
            let _ = queue.send(Queued::Stop);
        }
    }

    /// Takes one datagram that just arrived: drops it, forwards it, or queues it.
    pub(crate) async fn submit(&self, inner: &Inner, data: &[u8], dest: Dest) {
        let c = &self.counters;
        add(&c.received, 1);
        add(&c.received_bytes, data.len() as u64);
        let now = Instant::now();
        if inner.blackholed(now) {
            add(&c.blackholed, 1);
            return;
        }
        let wire = data.len() + self.overhead;
        if self.config.mtu.is_some_and(|mtu| wire > mtu) {
            add(&c.mtu_dropped, 1);
            return;
        }
        let decision = {
            let mut st = lock(&self.state);
            self.decide(&mut st, now, wire)
        };
        let Some((at, seq)) = decision else {
            return;
        };
        match &self.queue {
            Some(queue) => {
                let delayed = Delayed {
                    at,
                    seq,
                    data: data.to_vec(),
                    dest,
                };
                // The receiver lives as long as the relay; a closed queue means stopping.
                let _ = queue.send(Queued::Datagram(delayed));
            }
            None => self.send(inner, data, &dest).await,
        }
    }

    /// Loss, rate limit and delay for one datagram of `wire` bytes: its due time, or
    /// `None` if it is dropped (and counted).
    fn decide(&self, st: &mut State, now: Instant, wire: usize) -> Option<(Instant, u64)> {
        let cfg = &self.config;
        let c = &self.counters;
        if cfg.loss > 0.0 && st.uniform() < cfg.loss {
            add(&c.lost, 1);
            return None;
        }
        let mut depart = now;
        if let Some(rate) = cfg.rate_bits_per_s.filter(|r| *r > 0) {
            let free = st.free_at.max(now);
            let backlog = free.duration_since(now).as_secs_f64() * rate as f64 / 8.0;
            if backlog + wire as f64 > cfg.queue_bytes as f64 {
                add(&c.queue_dropped, 1);
                return None;
            }
            st.free_at = free + Duration::from_secs_f64(wire as f64 * 8.0 / rate as f64);
            depart = st.free_at;
        }
        let mut at = depart + cfg.delay;
        if !cfg.jitter.is_zero() {
            let offset = cfg.jitter.mul_f64(st.uniform() * 2.0);
            at = (at + offset)
                .checked_sub(cfg.jitter)
                .unwrap_or(depart)
                .max(depart);
        }
        if !cfg.reorder {
            at = at.max(st.last_at);
            st.last_at = at;
        }
        st.seq += 1;
        Some((at, st.seq))
    }

    /// Sends at once (links without delay), waiting for socket buffer space.
    async fn send(&self, inner: &Inner, data: &[u8], dest: &Dest) {
        self.count_forwarded(data.len());
        let sent = match dest {
            Dest::Server(flow) => flow.upstream().send_to(data, inner.target()).await,
            Dest::Client(addr) => inner.listen().send_to(data, *addr).await,
        };
        if sent.is_err() {
            self.uncount_forwarded(data.len());
        }
    }

    /// Sends from the delay thread: one non-blocking system call on the relay's socket,
    /// outside tokio (a full socket buffer drops the datagram, as a full router queue
    /// would, and counts it in `send_errors`).
    fn send_from_thread(&self, inner: &Inner, data: &[u8], dest: &Dest) {
        self.count_forwarded(data.len());
        let sent = match dest {
            Dest::Server(flow) => {
                SockRef::from(&*flow.upstream()).send_to(data, &inner.target().into())
            }
            Dest::Client(addr) => SockRef::from(inner.listen()).send_to(data, &(*addr).into()),
        };
        if sent.is_err() {
            self.uncount_forwarded(data.len());
        }
    }

    /// Counted before the send, so a peer that has the datagram always finds it counted.
    fn count_forwarded(&self, len: usize) {
        add(&self.counters.forwarded, 1);
        add(&self.counters.forwarded_bytes, len as u64);
    }

    /// Takes back [`count_forwarded`](Self::count_forwarded) when the send failed.
    fn uncount_forwarded(&self, len: usize) {
        self.counters.forwarded.fetch_sub(1, Ordering::Relaxed);
        self.counters
            .forwarded_bytes
            .fetch_sub(len as u64, Ordering::Relaxed);
        add(&self.counters.send_errors, 1);
    }
}

/// The delay thread of one direction: sends each queued datagram when it falls due.
///
/// A thread of its own rather than a tokio task because tokio's timer ticks in whole
/// milliseconds: on the timer, every delayed datagram left 0.8-1 ms late on average, which
/// added about 4 ms to a 2-RTT connection setup. A blocking wait with a timeout wakes
/// within the kernel's timer slack (about 50 us).
pub(crate) fn deliver(inner: Arc<Inner>, to_server: bool, rx: mpsc::Receiver<Queued>) {
    let mut heap: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    loop {
        let received = match heap.peek() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(Reverse(next)) => {
                let wait = next.at.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    Err(RecvTimeoutError::Timeout)
                } else {
                    rx.recv_timeout(wait)
                }
            }
        };
        match received {
            Ok(Queued::Datagram(delayed)) => {
                heap.push(Reverse(delayed));
                continue;
            }
            Ok(Queued::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let link = inner.link(to_server);
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = heap.pop() else {
                break;
            };
            if inner.blackholed(now) {
                add(&link.counters.blackholed, 1);
                continue;
            }
            let late = now.saturating_duration_since(d.at).as_micros() as u64;
            add(&link.counters.delayed, 1);
            add(&link.counters.late_us_total, late);
            link.counters.late_us_max.fetch_max(late, Ordering::Relaxed);
            link.send_from_thread(&inner, &d.data, &d.dest);
        }
    }
}
