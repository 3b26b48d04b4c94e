//! The one sans-IO surface both roles implement, and the rule for driving it.
//!
//! [`Client`](super::Client) and [`Server`](super::Server) are driven through [`SansIo`]
//! and nothing else: the driver's poll loop, the simulator and the fuzz harness all call
//! these six methods, so what the tests exercise is what production runs.
//!
//! The rule for driving it, the drive contract, is in [`SansIo`]'s documentation.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::{EcnCodepoint, Transmit};

use super::TimeoutReason;

/// One UDP datagram received from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Who sent it.
    pub remote: SocketAddr,
    /// The local address it arrived on, when the socket reports it (needed to answer
    /// from the same address on a multi-homed host).
    pub local_ip: Option<IpAddr>,
    /// Its ECN codepoint, if the socket reports one.
    pub ecn: Option<EcnCodepoint>,
    /// The UDP payload; mutable so it can be decrypted in place.
    pub payload: BytesMut,
}

/// The sans-IO surface of an endpoint: datagrams and timeouts in, datagrams, events and
/// one deadline out.
///
/// # The drive contract
///
/// Inputs are [`SansIo::handle_datagram`], [`SansIo::handle_timeout`] and the role's own
/// commands (`connect`, `request`, `respond`, …). Outputs are [`SansIo::poll_transmit`],
/// [`SansIo::poll_event`] and [`SansIo::poll_timeout`]. After any input:
///
/// * `poll_transmit` and `poll_event` may be drained in any order and interleaved
///   freely; acting on an event (issuing commands) is just another input;
/// * before sleeping, call `poll_transmit` until it returns `None`, and only **then**
///   `poll_timeout`: sending can arm or move a timer (loss detection, pacing), so a
///   deadline read earlier may be stale;
/// * call `handle_timeout(now)` once `now` reaches that deadline, then drain again.
///
/// Events left undrained are kept, in order, until polled; they cost memory, not
/// correctness. The endpoints never read a clock: `now` is whatever the caller says
/// (a virtual clock in tests, `Instant::now()` in production), and must not go
/// backwards. A simulator test (`drain_order` in `lightning-proto/tests/endpoint_sim.rs`)
/// drains in random legal orders and checks that every request is answered exactly once.
pub trait SansIo {
    /// What the endpoint reports to its application.
    type Event;

    /// Feeds one received datagram.
    fn handle_datagram(&mut self, now: Instant, datagram: Datagram);

    /// Runs everything due at `now`; call when the deadline from
    /// [`poll_timeout`](Self::poll_timeout) has passed.
    fn handle_timeout(&mut self, now: Instant);

    /// The next datagram (or GSO batch) to send, written into `buf` (cleared first).
    /// Call until `None`.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit>;

    /// The next application event. Call until `None`.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// When [`handle_timeout`](Self::handle_timeout) must run next, and what for. Read
    /// it after the last [`poll_transmit`](Self::poll_transmit).
    fn next_deadline(&mut self) -> Option<(Instant, TimeoutReason)>;

    /// [`next_deadline`](Self::next_deadline) without the reason.
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.next_deadline().map(|(at, _)| at)
    }

    /// How many datagrams one transmit may carry (UDP GSO); 1 without GSO.
    fn set_max_gso_segments(&mut self, n: usize);
}

/// Expands, inside `impl SansIo for` a role, to the four methods both roles answer the
/// same way from their fields `core` (the QUIC plumbing), `events` (a `VecDeque` of the
/// role's events) and `deadlines` (its application `Timers`).
macro_rules! shared_sans_io_methods {
    () => {
        fn poll_transmit(
            &mut self,
            now: Instant,
            buf: &mut Vec<u8>,
        ) -> Option<quinn_proto::Transmit> {
            self.core.poll_transmit(now, buf)
        }

        fn poll_event(&mut self) -> Option<Self::Event> {
            self.events.pop_front()
        }

        fn next_deadline(&mut self) -> Option<(Instant, super::TimeoutReason)> {
            super::earliest(
                self.core.poll_timeout(),
                self.deadlines.next().map(|(t, _)| t),
            )
        }

        fn set_max_gso_segments(&mut self, n: usize) {
            self.core.set_max_gso_segments(n);
        }
    };
}

pub(super) use shared_sans_io_methods;
