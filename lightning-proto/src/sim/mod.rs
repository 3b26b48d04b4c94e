//! A deterministic network simulator for sans-IO nodes.
//!
//! Nodes are anything driven through the endpoints' one surface, [`SansIo`]:
//! [`Client`](crate::endpoint::Client) and [`Server`](crate::endpoint::Server) as they are,
//! or small test doubles. The simulator never polls their events: those belong to
//! whoever drives the nodes, through [`Simulator::node_mut`]. Nodes are owned by a [`Simulator`] and
//! addressed by `SocketAddr`. The simulator keeps a virtual clock that jumps
//! from one event to the next -- a datagram arrival or a node timeout -- so a
//! minute of protocol time costs only the work done in it. Links between
//! addresses delay, lose, duplicate, reorder, rate-limit and MTU-filter
//! datagrams according to [`LinkConditions`], with every random decision drawn
//! from one ChaCha20 stream seeded by the caller. The same seed and the same
//! driver therefore produce the same run, which [`Simulator::trace_digest`]
//! lets a test assert, and [`run_seeds`] turns into a replayable failing seed.
//!
//! After every event, and before the clock moves, every node's
//! [`SansIo::poll_transmit`] is drained and only then its [`SansIo::poll_timeout`] read,
//! the drain contract of [`crate::endpoint`]; so a driver may mutate a node through
//! [`Simulator::node_mut`] and rely on its output leaving at the current instant.

mod link;
mod seeds;

pub use link::{Counter, LinkConditions, LinkStats};
pub use seeds::{run_seeds, seed_from_env, try_run_seeds, SeedFailure, BASE_SEED, SEED_ENV};

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use link::Fate;

use crate::endpoint::{Datagram, SansIo};

/// Handle to a node in a [`Simulator`]; never reused after removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(usize);

/// Why [`Simulator::run_until`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The virtual time limit passed with the condition still false.
    TimedOut {
        /// Virtual time elapsed since the simulation started.
        elapsed: Duration,
    },
    /// No datagram in flight and no timer armed: nothing can change any more.
    Idle {
        /// Virtual time elapsed since the simulation started.
        elapsed: Duration,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut { elapsed } => write!(f, "time limit reached at {elapsed:?}"),
            Self::Idle { elapsed } => write!(f, "nothing pending at {elapsed:?}"),
        }
    }
}

impl std::error::Error for SimError {}

/// More events than this at one instant means a node re-arms a timer that is
/// already due without making progress; failing loudly beats hanging a test.
const STALL_LIMIT: u64 = 1_000_000;

type Link = (SocketAddr, SocketAddr);

struct Slot<N> {
    addr: SocketAddr,
    node: N,
}

struct InFlight {
    at: Instant,
    seq: u64,
    dst: SocketAddr,
    datagram: Datagram,
}

// Ordered as a min-heap on (arrival, send order): `seq` makes ties between
// simultaneous arrivals deterministic and first-sent-first-delivered.
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for InFlight {}

#[derive(Clone, Copy)]
enum Event {
    Deliver,
    Timeout(NodeId),
}

/// The simulated network and the nodes attached to it.
pub struct Simulator<N: SansIo> {
    start: Instant,
    now: Instant,
    rng: ChaCha20Rng,
    nodes: Vec<Option<Slot<N>>>,
    by_addr: BTreeMap<SocketAddr, NodeId>,
    default_link: LinkConditions,
    links: BTreeMap<Link, LinkConditions>,
    partitioned: BTreeSet<Link>,
    busy_until: BTreeMap<Link, Instant>,
    in_flight: BinaryHeap<InFlight>,
    next_seq: u64,
    total: LinkStats,
    per_link: BTreeMap<Link, LinkStats>,
    digest: u64,
    events_at_now: u64,
    /// Where nodes write their transmits, reused.
    tx_buf: Vec<u8>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl<N: SansIo> Simulator<N> {
    /// An empty network with perfect links, its clock at `start`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            start,
            now: start,
            rng: ChaCha20Rng::seed_from_u64(seed),
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            default_link: LinkConditions::perfect(),
            links: BTreeMap::new(),
            partitioned: BTreeSet::new(),
            busy_until: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            total: LinkStats::default(),
            per_link: BTreeMap::new(),
            digest: FNV_OFFSET,
            events_at_now: 0,
            tx_buf: Vec::new(),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since [`Simulator::new`].
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A fresh generator derived from the simulation seed, for nodes that need
    /// their own randomness (keys, connection IDs) without breaking determinism.
    pub fn derive_rng(&mut self) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(self.rng.next_u64())
    }

    /// Attaches `node` at `addr`.
    ///
    /// # Panics
    /// If another node already listens on `addr`.
    pub fn add_node(&mut self, addr: SocketAddr, node: N) -> NodeId {
        if self.by_addr.contains_key(&addr) {
            panic!("simulator: address {addr} is already taken");
        }
        let id = NodeId(self.nodes.len());
        self.nodes.push(Some(Slot { addr, node }));
        self.by_addr.insert(addr, id);
        id
    }

    /// Detaches a node and hands it back. Datagrams still in flight to its
    /// address reach whichever node listens there when they arrive (a
    /// restarted server sees its predecessor's late packets), or none.
    pub fn remove_node(&mut self, id: NodeId) -> Option<N> {
        let slot = self.nodes.get_mut(id.0)?.take()?;
        self.by_addr.remove(&slot.addr);
        Some(slot.node)
    }

    /// Moves a node to a new address, as a NAT rebinding does. Link settings
    /// keyed by the old address no longer apply to it.
    ///
    /// # Panics
    /// If `id` was removed or `addr` is taken by another node.
    pub fn rebind(&mut self, id: NodeId, addr: SocketAddr) {
        if self.by_addr.get(&addr).is_some_and(|other| *other != id) {
            panic!("simulator: address {addr} is already taken");
        }
        let slot = self.slot_mut(id);
        let old = std::mem::replace(&mut slot.addr, addr);
        self.by_addr.remove(&old);
        self.by_addr.insert(addr, id);
    }

    /// The node with this id.
    ///
    /// # Panics
    /// If it was removed.
    pub fn node(&self, id: NodeId) -> &N {
        match self.nodes.get(id.0) {
            Some(Some(slot)) => &slot.node,
            _ => panic!("simulator: {id:?} was removed"),
        }
    }

    /// The node with this id, for the driver to act on. Its transmits are
    /// drained before the clock next moves.
    ///
    /// # Panics
    /// If it was removed.
    pub fn node_mut(&mut self, id: NodeId) -> &mut N {
        &mut self.slot_mut(id).node
    }

    /// The address a node listens on.
    ///
    /// # Panics
    /// If it was removed.
    pub fn addr(&self, id: NodeId) -> SocketAddr {
        match self.nodes.get(id.0) {
            Some(Some(slot)) => slot.addr,
            _ => panic!("simulator: {id:?} was removed"),
        }
    }

    /// The node listening on `addr`, if any.
    pub fn node_at(&self, addr: SocketAddr) -> Option<NodeId> {
        self.by_addr.get(&addr).copied()
    }

    /// Conditions for every link without its own setting.
    pub fn set_default_link(&mut self, conditions: LinkConditions) {
        self.default_link = conditions;
    }

    /// Conditions for datagrams from `src` to `dst` only; takes effect for
    /// datagrams sent from now on.
    pub fn set_link(&mut self, src: SocketAddr, dst: SocketAddr, conditions: LinkConditions) {
        self.links.insert((src, dst), conditions);
    }

    /// Drops every datagram sent between `a` and `b`, both ways, until
    /// [`Simulator::heal`]. Datagrams already in flight still arrive.
    pub fn partition(&mut self, a: SocketAddr, b: SocketAddr) {
        self.partitioned.insert((a, b));
        self.partitioned.insert((b, a));
    }

    /// Undoes [`Simulator::partition`].
    pub fn heal(&mut self, a: SocketAddr, b: SocketAddr) {
        self.partitioned.remove(&(a, b));
        self.partitioned.remove(&(b, a));
    }

    /// Fates of all datagrams so far.
    pub fn stats(&self) -> &LinkStats {
        &self.total
    }

    /// Fates of datagrams sent from `src` to `dst`.
    pub fn link_stats(&self, src: SocketAddr, dst: SocketAddr) -> LinkStats {
        self.per_link.get(&(src, dst)).copied().unwrap_or_default()
    }

    /// Datagrams scheduled but not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A hash of every datagram fate so far (time, addresses, length, fate).
    /// Equal digests mean, with overwhelming likelihood, identical runs.
    pub fn trace_digest(&self) -> u64 {
        self.digest
    }

    /// Processes the next event: drains all transmits, moves the clock to the
    /// earliest arrival or node timeout, handles it, drains again. Returns
    /// false, without moving the clock, when nothing is pending.
    ///
    /// # Panics
    /// If a node livelocks the clock (over a million events at one instant).
    pub fn step(&mut self) -> bool {
        match self.next_event() {
            Some((at, event)) => {
                self.process(at, event);
                true
            }
            None => false,
        }
    }

    /// Steps until `done` holds. Fails when the next event lies beyond
    /// `limit` of virtual time from now (the clock is left at the limit) or
    /// when nothing is pending.
    ///
    /// # Panics
    /// If a node livelocks the clock.
    pub fn run_until<F>(&mut self, mut done: F, limit: Duration) -> Result<(), SimError>
    where
        F: FnMut(&mut Self) -> bool,
    {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return Ok(());
            }
            match self.next_event() {
                None => {
                    return Err(SimError::Idle {
                        elapsed: self.elapsed(),
                    })
                }
                Some((at, _)) if at > deadline => {
                    self.set_now(deadline);
                    return Err(SimError::TimedOut {
                        elapsed: self.elapsed(),
                    });
                }
                Some((at, event)) => self.process(at, event),
            }
        }
    }

    /// Processes every event up to `now + d` and leaves the clock there.
    ///
    /// # Panics
    /// If a node livelocks the clock.
    pub fn advance(&mut self, d: Duration) {
        let deadline = self.now + d;
        while let Some((at, event)) = self.next_event() {
            if at > deadline {
                break;
            }
            self.process(at, event);
        }
        self.set_now(deadline);
    }

    fn slot_mut(&mut self, id: NodeId) -> &mut Slot<N> {
        match self.nodes.get_mut(id.0) {
            Some(Some(slot)) => slot,
            _ => panic!("simulator: {id:?} was removed"),
        }
    }

    fn set_now(&mut self, at: Instant) {
        if at > self.now {
            self.now = at;
            self.events_at_now = 0;
        }
    }

    /// Drains output, then finds the earliest event. Arrivals win ties with
    /// timers, and lower node ids win ties among timers.
    fn next_event(&mut self) -> Option<(Instant, Event)> {
        self.drain_all();
        let mut best = self.in_flight.peek().map(|p| (p.at, Event::Deliver));
        for (index, slot) in self.nodes.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if let Some(at) = slot.node.poll_timeout() {
                if best.is_none_or(|(earliest, _)| at < earliest) {
                    best = Some((at, Event::Timeout(NodeId(index))));
                }
            }
        }
        // A deadline already in the past fires now; the clock never runs back.
        best.map(|(at, event)| (at.max(self.now), event))
    }

    fn process(&mut self, at: Instant, event: Event) {
        self.set_now(at);
        self.events_at_now += 1;
        if self.events_at_now > STALL_LIMIT {
            panic!(
                "simulator: over {STALL_LIMIT} events at {:?} without the clock moving; \
                 a node keeps re-arming a due timer or echoing without delay",
                self.elapsed()
            );
        }
        let now = self.now;
        match event {
            Event::Deliver => {
                let Some(packet) = self.in_flight.pop() else {
                    return;
                };
                let datagram = packet.datagram;
                let link = (datagram.remote, packet.dst);
                let len = datagram.payload.len();
                match self.by_addr.get(&packet.dst).copied() {
                    Some(id) => {
                        self.record(link, len, Fate::Delivered, now);
                        self.slot_mut(id).node.handle_datagram(now, datagram);
                    }
                    None => self.record(link, len, Fate::Unroutable, now),
                }
            }
            Event::Timeout(id) => self.slot_mut(id).node.handle_timeout(now),
        }
        self.drain_all();
    }

    fn drain_all(&mut self) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.tx_buf);
        for index in 0..self.nodes.len() {
            while let Some(slot) = self.nodes[index].as_mut() {
                let Some(transmit) = slot.node.poll_transmit(now, &mut buf) else {
                    break;
                };
                let src = slot.addr;
                let size = transmit.size.min(buf.len());
                self.route(src, &transmit, &buf[..size]);
            }
        }
        self.tx_buf = buf;
    }

    /// Splits a GSO batch and puts each datagram on its link.
    fn route(&mut self, src: SocketAddr, transmit: &quinn_proto::Transmit, bytes: &[u8]) {
        // One copy out of the node's buffer; each split segment then stays uniquely
        // owned and mutable for the receiver.
        let mut rest = BytesMut::from(bytes);
        let segment = transmit.segment_size.filter(|s| *s > 0);
        loop {
            let payload = match segment {
                Some(s) if rest.len() > s => rest.split_to(s),
                _ => std::mem::take(&mut rest),
            };
            let last = rest.is_empty();
            let datagram = Datagram {
                remote: src,
                local_ip: Some(transmit.destination.ip()),
                ecn: transmit.ecn,
                payload,
            };
            self.send_one(transmit.destination, datagram);
            if last {
                break;
            }
        }
    }

    fn send_one(&mut self, dst: SocketAddr, datagram: Datagram) {
        let link = (datagram.remote, dst);
        let len = datagram.payload.len();
        let now = self.now;
        let cond = *self.links.get(&link).unwrap_or(&self.default_link);
        self.record(link, len, Fate::Sent, now);

        if self.partitioned.contains(&link) {
            return self.record(link, len, Fate::Partitioned, now);
        }
        if len > cond.mtu {
            return self.record(link, len, Fate::DroppedMtu, now);
        }
        if link::chance(&mut self.rng, cond.loss) {
            return self.record(link, len, Fate::Lost, now);
        }
        let Some(departure) = self.enqueue(link, len, &cond) else {
            return self.record(link, len, Fate::DroppedQueue, now);
        };
        let copy = link::chance(&mut self.rng, cond.duplicate).then(|| datagram.clone());
        self.schedule(departure, dst, datagram, &cond);
        if let Some(copy) = copy {
            self.record(link, len, Fate::Duplicated, now);
            self.schedule(departure, dst, copy, &cond);
        }
    }

    /// Admits a datagram to the link's bottleneck and returns when its last
    /// byte leaves, or `None` when the queue is full.
    fn enqueue(&mut self, link: Link, len: usize, cond: &LinkConditions) -> Option<Instant> {
        let Some(rate) = cond.bandwidth else {
            return Some(self.now);
        };
        if rate == 0 {
            return None;
        }
        let busy_until = self.busy_until.get(&link).copied().unwrap_or(self.now);
        let start = busy_until.max(self.now);
        let backlog = (start - self.now).as_nanos() * u128::from(rate) / 1_000_000_000;
        if backlog + len as u128 > cond.queue_bytes as u128 {
            return None;
        }
        let nanos = (len as u128 * 1_000_000_000).div_ceil(u128::from(rate));
        let departure = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.busy_until.insert(link, departure);
        Some(departure)
    }

    fn schedule(
        &mut self,
        departure: Instant,
        dst: SocketAddr,
        datagram: Datagram,
        cond: &LinkConditions,
    ) {
        let link = (datagram.remote, dst);
        let len = datagram.payload.len();
        let mut at = departure + cond.latency + link::up_to(&mut self.rng, cond.jitter);
        let fate = if link::chance(&mut self.rng, cond.reorder) {
            at += link::up_to(&mut self.rng, cond.reorder_delay);
            Fate::Reordered
        } else {
            Fate::Scheduled
        };
        self.record(link, len, fate, at);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push(InFlight {
            at,
            seq,
            dst,
            datagram,
        });
    }

    fn record(&mut self, link: Link, len: usize, fate: Fate, at: Instant) {
        tracing::trace!(
            target: "lightning::sim",
            at = ?(at - self.start),
            src = %link.0,
            dst = %link.1,
            len,
            ?fate,
            "datagram"
        );
        self.total.count(fate, len);
        self.per_link.entry(link).or_default().count(fate, len);
        let mut hash = self.digest;
        let mut eat = |bytes: &[u8]| {
            for byte in bytes {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
            }
        };
        eat(&(at - self.start).as_nanos().to_le_bytes());
        for addr in [link.0, link.1] {
            match addr.ip() {
                IpAddr::V4(ip) => eat(&ip.octets()),
                IpAddr::V6(ip) => eat(&ip.octets()),
            }
            eat(&addr.port().to_le_bytes());
        }
        eat(&(len as u64).to_le_bytes());
        eat(&[fate as u8]);
        self.digest = hash;
    }
}
