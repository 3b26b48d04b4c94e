//! Network behaviour of the deterministic simulator, observed through small
//! test nodes: a pinger that sends numbered datagrams on a timer, an echo
//! node, and a sink.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lightning_proto::endpoint::{Datagram, EcnCodepoint, SansIo, TimeoutReason, Transmit};
use lightning_proto::sim::{LinkConditions, LinkStats, SimError, Simulator};

/// A datagram (or GSO batch) a test node has queued to send.
struct Out {
    dst: SocketAddr,
    ecn: Option<EcnCodepoint>,
    payload: Bytes,
    segment_size: Option<usize>,
}

/// Hands a queued datagram over the way an endpoint does: bytes into the caller's buffer.
fn transmit(out: Out, buf: &mut Vec<u8>) -> Transmit {
    buf.clear();
    buf.extend_from_slice(&out.payload);
    Transmit {
        destination: out.dst,
        ecn: out.ecn,
        size: out.payload.len(),
        segment_size: out.segment_size,
        src_ip: None,
    }
}

const fn v4(last: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, last), port))
}

const A: SocketAddr = v4(1, 4000);
const B: SocketAddr = v4(2, 443);
const C: SocketAddr = v4(9, 5000);

/// The one real clock reading of a test: the simulation's epoch.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, Copy)]
struct Rx {
    at: Instant,
    src: SocketAddr,
    seq: u32,
    len: usize,
}

/// Sends `remaining` pings of `size` bytes to `target` every `interval`,
/// optionally echoes what it receives, and records every arrival.
#[derive(Default)]
struct Peer {
    target: Option<SocketAddr>,
    remaining: u32,
    next_seq: u32,
    size: usize,
    interval: Duration,
    next_send: Option<Instant>,
    echo: bool,
    outbox: VecDeque<Out>,
    received: Vec<Rx>,
}

impl Peer {
    fn sink() -> Self {
        Self::default()
    }

    fn echo() -> Self {
        Self {
            echo: true,
            ..Self::default()
        }
    }

    fn pinger(
        target: SocketAddr,
        count: u32,
        interval: Duration,
        size: usize,
        start: Instant,
    ) -> Self {
        Self {
            target: Some(target),
            remaining: count,
            size,
            interval,
            next_send: Some(start),
            ..Self::default()
        }
    }

    /// What a driver does between steps: hand the node something to send.
    fn queue(&mut self, dst: SocketAddr, payload: Vec<u8>, segment_size: Option<usize>) {
        self.outbox.push_back(Out {
            dst,
            ecn: None,
            payload: Bytes::from(payload),
            segment_size,
        });
    }

    fn seqs(&self) -> Vec<u32> {
        self.received.iter().map(|rx| rx.seq).collect()
    }
}

fn numbered(seq: u32, size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size.max(4)];
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    payload.truncate(size);
    payload
}

impl SansIo for Peer {
    type Event = ();

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        let seq = match datagram.payload.get(..4) {
            Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => u32::MAX,
        };
        self.received.push(Rx {
            at: now,
            src: datagram.remote,
            seq,
            len: datagram.payload.len(),
        });
        if self.echo {
            self.outbox.push_back(Out {
                dst: datagram.remote,
                ecn: datagram.ecn,
                payload: datagram.payload.freeze(),
                segment_size: None,
            });
        }
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        Some(transmit(self.outbox.pop_front()?, buf))
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }

    fn next_deadline(&mut self) -> Option<(Instant, TimeoutReason)> {
        self.next_send
            .filter(|_| self.remaining > 0)
            .map(|at| (at, TimeoutReason::Application))
    }

    fn set_max_gso_segments(&mut self, _: usize) {}

    fn handle_timeout(&mut self, now: Instant) {
        while let (Some(due), Some(target)) = (self.next_send, self.target) {
            if due > now || self.remaining == 0 {
                break;
            }
            let payload = numbered(self.next_seq, self.size);
            self.outbox.push_back(Out {
                dst: target,
                ecn: None,
                payload: Bytes::from(payload),
                segment_size: None,
            });
            self.next_seq += 1;
            self.remaining -= 1;
            self.next_send = Some(due + self.interval);
        }
    }
}

/// Every datagram sent (plus every copy) is accounted for exactly once.
fn assert_conserved(s: &LinkStats) {
    let out = s.delivered.datagrams
        + s.unroutable.datagrams
        + s.lost.datagrams
        + s.dropped_mtu.datagrams
        + s.dropped_queue.datagrams
        + s.dropped_partition.datagrams;
    assert_eq!(s.sent.datagrams + s.duplicated.datagrams, out, "{s:?}");
}

fn drain(sim: &mut Simulator<Peer>) {
    while sim.step() {}
}

#[test]
fn perfect_link_latency_is_exact_and_can_change_mid_run() {
    let t0 = epoch();
    let mut sim = Simulator::new(1, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(10),
        ..LinkConditions::perfect()
    });
    let server = sim.add_node(B, Peer::echo());
    let client = sim.add_node(A, Peer::pinger(B, 5, ms(1), 100, t0));

    sim.run_until(|s| s.node(client).received.len() == 5, ms(100))
        .unwrap();
    for (i, rx) in sim.node(server).received.iter().enumerate() {
        assert_eq!(
            (rx.seq, rx.at, rx.src),
            (i as u32, t0 + ms(10 + i as u64), A)
        );
    }
    for (i, rx) in sim.node(client).received.iter().enumerate() {
        assert_eq!(
            (rx.seq, rx.at, rx.len),
            (i as u32, t0 + ms(20 + i as u64), 100)
        );
    }
    assert_eq!(sim.now(), t0 + ms(24));

    // A slower forward path applies to datagrams sent from now on.
    sim.set_link(
        A,
        B,
        LinkConditions {
            latency: ms(30),
            ..LinkConditions::perfect()
        },
    );
    sim.node_mut(client).queue(B, numbered(99, 10), None);
    let sent_at = sim.now();
    drain(&mut sim);
    assert_eq!(sim.node(server).received[5].at, sent_at + ms(30));
    assert_eq!(sim.node(client).received[5].at, sent_at + ms(40));
    assert_eq!(sim.link_stats(A, B).delivered.datagrams, 6);
    assert_eq!(sim.link_stats(B, A).delivered.bytes, 510);
    assert_conserved(sim.stats());
}

#[test]
fn run_until_reports_idle_and_time_limit() {
    let t0 = epoch();
    let mut sim = Simulator::new(1, t0);
    let pinger = sim.add_node(A, Peer::pinger(B, 3, Duration::from_secs(1), 8, t0));
    sim.add_node(B, Peer::sink());

    let err = sim.run_until(|_| false, ms(1500)).unwrap_err();
    assert_eq!(err, SimError::TimedOut { elapsed: ms(1500) });
    assert_eq!(sim.now(), t0 + ms(1500));
    assert_eq!(sim.node(pinger).remaining, 1);

    let err = sim
        .run_until(|_| false, Duration::from_secs(60))
        .unwrap_err();
    assert_eq!(err, SimError::Idle { elapsed: ms(2000) });
    assert!(!sim.step());

    sim.advance(ms(250));
    assert_eq!(sim.now(), t0 + ms(2250));
}

#[test]
fn jitter_stays_within_bounds() {
    let t0 = epoch();
    let mut sim = Simulator::new(2, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(10),
        jitter: ms(5),
        ..LinkConditions::perfect()
    });
    sim.add_node(A, Peer::pinger(B, 1000, ms(1), 20, t0));
    let sink = sim.add_node(B, Peer::sink());
    drain(&mut sim);

    let delays: Vec<Duration> = sim
        .node(sink)
        .received
        .iter()
        .map(|rx| rx.at - (t0 + ms(u64::from(rx.seq))))
        .collect();
    assert_eq!(delays.len(), 1000);
    assert!(delays.iter().all(|d| (ms(10)..=ms(15)).contains(d)));
    assert!(delays.iter().min().unwrap() < &Duration::from_micros(10_500));
    assert!(delays.iter().max().unwrap() > &Duration::from_micros(14_500));
}

#[test]
fn loss_rate_matches_configuration() {
    let t0 = epoch();
    let mut sim = Simulator::new(3, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(1),
        ..LinkConditions::lossy(0.1)
    });
    sim.add_node(A, Peer::pinger(B, 10_000, ms(1), 50, t0));
    let sink = sim.add_node(B, Peer::sink());
    drain(&mut sim);

    let received = sim.node(sink).received.len() as u64;
    // Expected 9000 with a standard deviation of 30.
    assert!((8_800..=9_200).contains(&received), "{received}");
    let stats = sim.link_stats(A, B);
    assert_eq!(stats.sent.datagrams, 10_000);
    assert_eq!(stats.lost.datagrams, 10_000 - received);
    assert_eq!(stats.lost.bytes, 50 * (10_000 - received));
    assert_eq!(&stats, sim.stats());
    assert_conserved(sim.stats());
}

#[test]
fn duplicates_are_delivered_and_counted() {
    let t0 = epoch();
    let mut sim = Simulator::new(4, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(2),
        duplicate: 0.05,
        ..LinkConditions::perfect()
    });
    sim.add_node(A, Peer::pinger(B, 10_000, ms(1), 40, t0));
    let sink = sim.add_node(B, Peer::sink());
    drain(&mut sim);

    let dups = sim.stats().duplicated.datagrams;
    assert!((350..=650).contains(&dups), "{dups}");
    let mut copies: BTreeMap<u32, u64> = BTreeMap::new();
    for seq in sim.node(sink).seqs() {
        *copies.entry(seq).or_default() += 1;
    }
    assert_eq!(copies.len(), 10_000);
    assert_eq!(copies.values().filter(|n| **n == 2).count() as u64, dups);
    assert_eq!(sim.stats().delivered.datagrams, 10_000 + dups);
    assert_conserved(sim.stats());
}

#[test]
fn reordering_holds_datagrams_back() {
    let t0 = epoch();
    let mut sim = Simulator::new(5, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(5),
        reorder: 0.1,
        reorder_delay: ms(20),
        ..LinkConditions::perfect()
    });
    sim.add_node(A, Peer::pinger(B, 10_000, ms(1), 40, t0));
    let sink = sim.add_node(B, Peer::sink());
    drain(&mut sim);

    let reordered = sim.stats().reordered.datagrams;
    assert!((800..=1_200).contains(&reordered), "{reordered}");
    let rx = &sim.node(sink).received;
    assert_eq!(rx.len(), 10_000);
    let mut highest = 0;
    let mut late = 0u64;
    for r in rx {
        if r.seq < highest {
            late += 1;
        }
        highest = highest.max(r.seq);
        let delay = r.at - (t0 + ms(u64::from(r.seq)));
        assert!((ms(5)..=ms(25)).contains(&delay), "{delay:?}");
    }
    // A held-back datagram arrives after some later one unless its extra delay
    // is under the send interval.
    assert!(
        late > reordered / 2 && late <= reordered,
        "{late} of {reordered}"
    );
    assert_conserved(sim.stats());
}

#[test]
fn oversize_datagrams_vanish_at_the_mtu() {
    let t0 = epoch();
    let mut sim = Simulator::new(6, t0);
    sim.set_default_link(LinkConditions {
        mtu: 1200,
        ..LinkConditions::perfect()
    });
    let client = sim.add_node(A, Peer::sink());
    let sink = sim.add_node(B, Peer::sink());
    for size in [1199, 1200, 1201, 9000] {
        sim.node_mut(client)
            .queue(B, numbered(size as u32, size), None);
    }
    drain(&mut sim);

    let lens: Vec<usize> = sim.node(sink).received.iter().map(|r| r.len).collect();
    assert_eq!(lens, [1199, 1200]);
    assert_eq!(sim.stats().dropped_mtu.datagrams, 2);
    assert_eq!(sim.stats().dropped_mtu.bytes, 10_201);
    assert_conserved(sim.stats());
}

#[test]
fn gso_transmits_are_split_into_segments() {
    let t0 = epoch();
    let mut sim = Simulator::new(7, t0);
    // Segments are checked against the MTU one by one, not as a batch.
    sim.set_default_link(LinkConditions {
        mtu: 1200,
        latency: ms(3),
        ..LinkConditions::perfect()
    });
    let client = sim.add_node(A, Peer::sink());
    let sink = sim.add_node(B, Peer::sink());
    let batch: Vec<u8> = (0..10_000).map(|i| (i / 1200) as u8).collect();
    sim.node_mut(client).queue(B, batch, Some(1200));
    drain(&mut sim);

    let rx = &sim.node(sink).received;
    assert_eq!(rx.len(), 9);
    for (k, r) in rx.iter().enumerate() {
        let expected_len = if k < 8 { 1200 } else { 400 };
        let kb = k as u8;
        assert_eq!(r.len, expected_len);
        assert_eq!(r.seq, u32::from_be_bytes([kb, kb, kb, kb]));
        assert_eq!(r.at, t0 + ms(3));
    }
    assert_eq!(sim.stats().sent.datagrams, 9);
    assert_eq!(sim.stats().sent.bytes, 10_000);
    assert_conserved(sim.stats());
}

#[test]
fn bandwidth_serializes_and_tail_drops() {
    let t0 = epoch();
    let mut sim = Simulator::new(8, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(10),
        bandwidth: Some(1_000_000),
        queue_bytes: 10_000,
        ..LinkConditions::perfect()
    });
    let client = sim.add_node(A, Peer::sink());
    let sink = sim.add_node(B, Peer::sink());
    for seq in 0..100 {
        sim.node_mut(client).queue(B, numbered(seq, 1000), None);
    }
    drain(&mut sim);

    // 1000 bytes at 1 MB/s take 1 ms; ten of them fill the 10 kB queue.
    let rx = &sim.node(sink).received;
    assert_eq!(rx.len(), 10);
    for (k, r) in rx.iter().enumerate() {
        assert_eq!((r.seq, r.at), (k as u32, t0 + ms(11 + k as u64)));
    }
    assert_eq!(sim.stats().dropped_queue.datagrams, 90);
    assert_eq!(sim.stats().dropped_queue.bytes, 90_000);
    assert_conserved(sim.stats());
}

fn chaotic_run(seed: u64) -> (u64, LinkStats) {
    let t0 = epoch();
    let mut sim = Simulator::new(seed, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(20),
        jitter: ms(3),
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.05,
        reorder_delay: ms(10),
        ..LinkConditions::perfect()
    });
    sim.add_node(B, Peer::echo());
    sim.add_node(A, Peer::pinger(B, 2_000, ms(1), 64, t0));
    drain(&mut sim);
    (sim.trace_digest(), *sim.stats())
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let (digest, stats) = chaotic_run(7);
    assert_eq!(chaotic_run(7), (digest, stats));
    let (other, other_stats) = chaotic_run(8);
    assert_ne!(digest, other);
    assert_ne!(stats, other_stats);
    assert_conserved(&stats);
}

#[test]
fn the_digest_sees_timing_not_just_fates() {
    let run = |latency| {
        let t0 = epoch();
        let mut sim = Simulator::new(1, t0);
        sim.set_default_link(LinkConditions {
            latency,
            ..LinkConditions::perfect()
        });
        sim.add_node(A, Peer::pinger(B, 10, ms(1), 32, t0));
        sim.add_node(B, Peer::echo());
        drain(&mut sim);
        (sim.trace_digest(), *sim.stats())
    };
    let (slow, slow_stats) = run(ms(11));
    let (fast, fast_stats) = run(ms(10));
    assert_eq!(slow_stats, fast_stats);
    assert_ne!(slow, fast);
    assert_eq!(run(ms(10)).0, fast);
}

#[test]
fn every_datagram_is_accounted_for_across_seeds() {
    lightning_proto::sim::run_seeds(20, |seed| {
        let (_, stats) = chaotic_run(seed);
        let lossy = stats.lost.datagrams + stats.duplicated.datagrams + stats.reordered.datagrams;
        if lossy == 0 {
            return Err("a chaotic link behaved perfectly".into());
        }
        assert_conserved(&stats);
        Ok(())
    });
}

#[test]
fn partition_drops_everything_until_healed() {
    let t0 = epoch();
    let mut sim = Simulator::new(9, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(10),
        ..LinkConditions::perfect()
    });
    let client = sim.add_node(A, Peer::sink());
    let server = sim.add_node(B, Peer::echo());

    // Already on the wire when the partition starts: still arrives.
    sim.node_mut(client).queue(B, numbered(0, 30), None);
    sim.advance(ms(5));
    sim.partition(A, B);
    for seq in 1..=50 {
        sim.node_mut(client).queue(B, numbered(seq, 30), None);
    }
    drain(&mut sim);
    assert_eq!(sim.node(server).seqs(), [0]);
    // The echo of datagram 0 was sent into the partition too.
    assert!(sim.node(client).received.is_empty());
    assert_eq!(sim.link_stats(A, B).dropped_partition.datagrams, 50);
    assert_eq!(sim.link_stats(B, A).dropped_partition.datagrams, 1);

    sim.heal(A, B);
    sim.node_mut(client).queue(B, numbered(51, 30), None);
    drain(&mut sim);
    assert_eq!(sim.node(server).seqs(), [0, 51]);
    assert_eq!(sim.node(client).seqs(), [51]);
    assert_conserved(sim.stats());
}

#[test]
fn a_replaced_node_takes_over_its_address() {
    let t0 = epoch();
    let mut sim = Simulator::new(10, t0);
    sim.set_default_link(LinkConditions {
        latency: ms(1),
        ..LinkConditions::perfect()
    });
    let client = sim.add_node(A, Peer::pinger(B, 20, ms(10), 16, t0));
    let first = sim.add_node(B, Peer::echo());

    sim.advance(ms(95));
    let old = sim.remove_node(first).unwrap();
    assert_eq!(old.seqs(), (0..10).collect::<Vec<_>>());
    assert!(sim.remove_node(first).is_none());
    assert_eq!(sim.node_at(B), None);

    // Ping 10 arrives at 101 ms while nobody listens.
    sim.advance(ms(10));
    let second = sim.add_node(B, Peer::echo());
    assert_ne!(first, second);
    assert_eq!(sim.node_at(B), Some(second));
    drain(&mut sim);

    assert_eq!(sim.node(second).seqs(), (11..20).collect::<Vec<_>>());
    assert_eq!(sim.stats().unroutable.datagrams, 1);
    let echoed = sim.node(client).seqs();
    assert_eq!(echoed.len(), 19);
    assert!(!echoed.contains(&10));
    assert_conserved(sim.stats());
}

#[test]
fn rebinding_moves_a_node_to_a_new_address() {
    let t0 = epoch();
    let mut sim = Simulator::new(11, t0);
    let client = sim.add_node(A, Peer::sink());
    let server = sim.add_node(B, Peer::echo());
    sim.node_mut(client).queue(B, numbered(1, 8), None);
    drain(&mut sim);
    sim.rebind(client, C);
    assert_eq!(sim.addr(client), C);
    sim.node_mut(client).queue(B, numbered(2, 8), None);
    drain(&mut sim);

    let srcs: Vec<SocketAddr> = sim.node(server).received.iter().map(|r| r.src).collect();
    assert_eq!(srcs, [A, C]);
    assert_eq!(sim.node(client).seqs(), [1, 2]);
}

/// A node that keeps asking for a timeout that is already due.
struct Stuck(Instant);

impl SansIo for Stuck {
    type Event = ();
    fn handle_datagram(&mut self, _: Instant, _: Datagram) {}
    fn poll_transmit(&mut self, _: Instant, _: &mut Vec<u8>) -> Option<Transmit> {
        None
    }
    fn poll_event(&mut self) -> Option<()> {
        None
    }
    fn next_deadline(&mut self) -> Option<(Instant, TimeoutReason)> {
        Some((self.0, TimeoutReason::Application))
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn set_max_gso_segments(&mut self, _: usize) {}
}

#[test]
#[should_panic(expected = "without the clock moving")]
fn a_livelocked_timer_fails_instead_of_hanging() {
    let t0 = epoch();
    let mut sim = Simulator::new(12, t0);
    sim.add_node(A, Stuck(t0));
    let _ = sim.run_until(|_| false, ms(1));
}
