//! QUIC plumbing shared by the client and server roles, and the one connection table.
//!
//! `Core` owns the quinn-proto endpoint and its connections and hides the event shuttling
//! between them: connection→endpoint events, endpoint→connection events, per-connection
//! timers, and a fair queue of connections that may have datagrams to send. The roles only
//! see "this connection produced this application event".
//!
//! Each entry of the table holds the quinn connection, the serial that tells it apart from
//! earlier connections on the same (reused) quinn handle, and the role's own state `S` for
//! it (its streams included). The role's state lives from [`Core::insert`] until the role
//! lets go of the connection ([`Core::release`], at `ConnectionLost` or when it gives up
//! on it); the quinn connection lives on, closing, until quinn drains it.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use quinn_proto::{ConnectionHandle, DatagramEvent, EndpointConfig, Incoming, Transmit};
use rand_core::RngCore;

use super::clock::WallClock;
use super::error::ConnectionEnd;
use super::surface::Datagram;
use crate::idhash::{IdMap, IdSet};

/// Result of feeding one datagram to the endpoint.
pub(crate) enum Received {
    /// An existing connection consumed it; drive that connection.
    Conn(ConnectionHandle),
    /// A new connection attempt; the server decides what to do with it.
    Incoming(Box<Incoming>),
    /// Consumed by the endpoint itself (or dropped).
    Nothing,
}

/// What a connection has for its role after pumping endpoint events.
pub(crate) enum ConnPoll<S> {
    Event(quinn_proto::Event),
    Idle,
    /// Fully closed; the core has forgotten it. Carries the role's state if the role had
    /// not released it yet.
    Drained(Option<S>),
}

/// A connection as a role remembers it beyond the current call (in a deadline, say):
/// quinn's handle, which quinn gives to a new connection once the old one is gone, and
/// the serial of the connection that held it, which is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnRef {
    pub(crate) handle: ConnectionHandle,
    pub(crate) serial: u64,
}

/// One entry of the connection table.
struct Entry<S> {
    quic: quinn_proto::Connection,
    serial: u64,
    /// `None` once the role has released the connection (it is closing).
    state: Option<S>,
}

/// One GSO send is one UDP datagram to the kernel, so its total must fit in 65,507 bytes;
/// the kernel refuses larger ones with EMSGSIZE, which quinn-udp reports as a routine MTU
/// probe failure and drops silently. quinn-proto fills a transmit with as many segments as
/// it is allowed, so the cap lives here, per connection: as many datagrams of the
/// connection's current MTU as fit (44 of 1,452 bytes; one once a loopback path has grown
/// its packets to 64 KiB).
const MAX_GSO_BYTES: usize = 65_507;

/// Segments per GSO send whatever the MTU: the kernel's own limit is 64.
pub(crate) const MAX_GSO_SEGMENTS: usize = 44;

/// What a role (client or server) does with its connections; the core's shared loops
/// call it, so both roles drive connections the same way.
pub(crate) trait ConnRole {
    /// What the role keeps per connection (in the core's table).
    type State;

    fn core(&mut self) -> &mut Core<Self::State>;
    /// One QUIC event of connection `ch`.
    fn on_conn_event(&mut self, now: Instant, ch: ConnectionHandle, event: quinn_proto::Event);
    /// Connection `ch` is gone; `state` is what the role kept for it, already out of the
    /// table.
    fn on_conn_closed(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        state: Self::State,
        end: ConnectionEnd,
    );

    /// The role lets go of connection `ch` (it was lost, or the role gives up on it):
    /// its state leaves the table and [`on_conn_closed`](Self::on_conn_closed) sees it,
    /// once.
    fn lose(&mut self, now: Instant, ch: ConnectionHandle, end: ConnectionEnd) {
        if let Some(state) = self.core().release(ch) {
            self.on_conn_closed(now, ch, state, end);
        }
    }

    /// Delivers every pending event of connection `ch`.
    fn drive(&mut self, now: Instant, ch: ConnectionHandle) {
        loop {
            match self.core().poll_conn(ch) {
                ConnPoll::Event(ev) => self.on_conn_event(now, ch, ev),
                ConnPoll::Idle => break,
                ConnPoll::Drained(state) => {
                    if let Some(state) = state {
                        self.on_conn_closed(now, ch, state, ConnectionEnd::Drained);
                    }
                    break;
                }
            }
        }
    }

    /// Fires the QUIC timers due at `now` and drives the connections they belong to.
    fn drive_timers(&mut self, now: Instant) {
        for ch in self.core().handle_timeout(now) {
            self.drive(now, ch);
        }
    }

    /// Feeds one datagram; a new connection attempt goes to `incoming`.
    fn drive_datagram(
        &mut self,
        now: Instant,
        datagram: Datagram,
        incoming: impl FnOnce(&mut Self, Incoming),
    ) {
        match self.core().handle_datagram(now, datagram) {
            Received::Conn(ch) => self.drive(now, ch),
            Received::Incoming(attempt) => incoming(self, *attempt),
            Received::Nothing => {}
        }
    }
}

pub(crate) struct Core<S> {
    pub(crate) endpoint: quinn_proto::Endpoint,
    /// The connection table. A quinn connection is reached only through
    /// [`Core::conn_mut`] / [`Core::parts_mut`] (or the core's own methods), which mark it
    /// dirty: whatever changed, its transmits and timer are looked at again.
    conns: IdMap<ConnectionHandle, Entry<S>>,
    /// Serial of the latest connection inserted (the first is 1).
    last_serial: u64,
    /// Entries whose role state is still in the table.
    live: usize,
    pub(crate) clock: WallClock,
    /// Stateless datagrams (Retry, refusal, version negotiation, reset).
    responses: VecDeque<(Transmit, Vec<u8>)>,
    send_queue: VecDeque<ConnectionHandle>,
    in_send_queue: IdSet<ConnectionHandle>,
    timer_dirty: IdSet<ConnectionHandle>,
    timers: BTreeSet<(Instant, ConnectionHandle)>,
    timer_of: IdMap<ConnectionHandle, Instant>,
    max_gso_segments: usize,
    scratch: Vec<u8>,
}

impl<S> Core<S> {
    pub(crate) fn new(
        rng: &mut impl RngCore,
        server: Option<Arc<quinn_proto::ServerConfig>>,
        clock: WallClock,
        allow_mtud: bool,
    ) -> Self {
        Self::with_reset_secret(rng, server, clock, allow_mtud, None, None)
    }

    /// Like [`new`](Self::new), with stateless-reset tokens keyed by `reset_secret` when
    /// given (stable across restarts) instead of by random bytes, and connection IDs from
    /// `cids` when the endpoint shares its port with others (see `cid`).
    pub(crate) fn with_reset_secret(
        rng: &mut impl RngCore,
        server: Option<Arc<quinn_proto::ServerConfig>>,
        clock: WallClock,
        allow_mtud: bool,
        reset_secret: Option<&[u8; 32]>,
        cids: Option<super::cid::EndpointCids>,
    ) -> Self {
        // Drawn even when unused, so a seeded endpoint makes the same choices either way.
        let mut reset_key = [0u8; 64];
        rng.fill_bytes(&mut reset_key);
        let mut endpoint_seed = [0u8; 32];
        rng.fill_bytes(&mut endpoint_seed);
        let key: &[u8] = match reset_secret {
            Some(secret) => secret,
            None => &reset_key,
        };
        let mut config =
            EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key)));
        if let Some(secret) = reset_secret {
            // quinn answers with a stateless reset only packets whose connection ID its
            // generator validates: the generator's key must outlive a restart too.
            let tag = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
                b"lightning connection ID key",
            );
            let mut cid_key = [0u8; 8];
            cid_key.copy_from_slice(&tag.as_ref()[..8]);
            let cid_key = u64::from_le_bytes(cid_key);
            config.cid_generator(move || -> Box<dyn quinn_proto::ConnectionIdGenerator> {
                Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
            });
        }
        if let Some(cids) = cids {
            // quinn asks its factory once, when the endpoint is created.
            config.cid_generator(move || -> Box<dyn quinn_proto::ConnectionIdGenerator> {
                Box::new(cids.clone())
            });
        }
        config.rng_seed(Some(endpoint_seed));
        // What the peer may send us: anything the driver's 64 KiB receive slots hold.
        // It only lifts the peer's own ceiling, so a peer with quinn's defaults (the
        // reference) still stops at 1,452 bytes.
        let _ = config.max_udp_payload_size(super::config::MAX_UDP_PAYLOAD);
        Self {
            endpoint: quinn_proto::Endpoint::new(Arc::new(config), server, allow_mtud, None),
            conns: IdMap::default(),
            last_serial: 0,
            live: 0,
            clock,
            responses: VecDeque::new(),
            send_queue: VecDeque::new(),
            in_send_queue: IdSet::default(),
            timer_dirty: IdSet::default(),
            timers: BTreeSet::new(),
            timer_of: IdMap::default(),
            max_gso_segments: 1,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn set_max_gso_segments(&mut self, n: usize) {
        self.max_gso_segments = n.clamp(1, MAX_GSO_SEGMENTS);
    }

    pub(crate) fn handle_datagram(&mut self, now: Instant, d: Datagram) -> Received {
        self.clock.observe(now);
        self.scratch.clear();
        match self.endpoint.handle(
            now,
            d.remote,
            d.local_ip,
            d.ecn,
            d.payload,
            &mut self.scratch,
        ) {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => match self.conns.get_mut(&ch) {
                Some(entry) => {
                    entry.quic.handle_event(event);
                    self.touch(ch);
                    Received::Conn(ch)
                }
                None => Received::Nothing,
            },
            Some(DatagramEvent::NewConnection(incoming)) => Received::Incoming(Box::new(incoming)),
            Some(DatagramEvent::Response(t)) => {
                let bytes = self.scratch[..t.size].to_vec();
                self.responses.push_back((t, bytes));
                Received::Nothing
            }
            None => Received::Nothing,
        }
    }

    /// Queues a stateless response produced by accept/refuse/retry.
    pub(crate) fn push_response(&mut self, t: Transmit, buf: &[u8]) {
        let bytes = buf[..t.size].to_vec();
        self.responses.push_back((t, bytes));
    }

    /// Adds a new connection with the role's state for it; returns its reference.
    pub(crate) fn insert(
        &mut self,
        ch: ConnectionHandle,
        quic: quinn_proto::Connection,
        state: S,
    ) -> ConnRef {
        self.last_serial += 1;
        let serial = self.last_serial;
        if let Some(old) = self.conns.insert(
            ch,
            Entry {
                quic,
                serial,
                state: Some(state),
            },
        ) {
            // quinn hands out a handle only once its connection is drained, which removes
            // it here first; keep the count right if that ever changes.
            if old.state.is_some() {
                self.live -= 1;
            }
        }
        self.live += 1;
        self.touch(ch);
        ConnRef { handle: ch, serial }
    }

    /// The serial the next [`insert`](Self::insert) will give (never reused).
    pub(crate) fn next_serial(&self) -> u64 {
        self.last_serial + 1
    }

    /// The reference of connection `ch`, while the role holds it.
    pub(crate) fn conn_ref(&self, ch: ConnectionHandle) -> Option<ConnRef> {
        self.conns
            .get(&ch)
            .filter(|e| e.state.is_some())
            .map(|e| ConnRef {
                handle: ch,
                serial: e.serial,
            })
    }

    /// The handle of `conn` if that very connection is still held by the role (not a
    /// later one on the same handle).
    pub(crate) fn resolve(&self, conn: ConnRef) -> Option<ConnectionHandle> {
        self.conns
            .get(&conn.handle)
            .filter(|e| e.serial == conn.serial && e.state.is_some())
            .map(|_| conn.handle)
    }

    /// The role's state of connection `ch`, until released.
    pub(crate) fn state(&self, ch: ConnectionHandle) -> Option<&S> {
        self.conns.get(&ch)?.state.as_ref()
    }

    /// The role's state of connection `ch`, for changing; the quinn connection is left
    /// alone, so it is not marked dirty.
    pub(crate) fn state_mut(&mut self, ch: ConnectionHandle) -> Option<&mut S> {
        self.conns.get_mut(&ch)?.state.as_mut()
    }

    /// Every connection the role holds, with its state.
    pub(crate) fn states(&self) -> impl Iterator<Item = (ConnectionHandle, &S)> + '_ {
        self.conns
            .iter()
            .filter_map(|(ch, e)| e.state.as_ref().map(|s| (*ch, s)))
    }

    /// How many connections the role holds.
    pub(crate) fn live_count(&self) -> usize {
        self.live
    }

    /// The role lets go of connection `ch`: its state leaves the table (returned, once);
    /// the quinn connection stays until it is drained.
    pub(crate) fn release(&mut self, ch: ConnectionHandle) -> Option<S> {
        let state = self.conns.get_mut(&ch)?.state.take();
        if state.is_some() {
            self.live -= 1;
        }
        state
    }

    /// Closes connection `ch` with an application close (code 0) carrying `reason`,
    /// the one way either role closes a connection.
    pub(crate) fn close(&mut self, now: Instant, ch: ConnectionHandle, reason: &[u8]) {
        if let Some(conn) = self.conn_mut(ch) {
            conn.close(
                now,
                quinn_proto::VarInt::from_u32(0),
                bytes::Bytes::copy_from_slice(reason),
            );
        }
    }

    /// The quinn connection, for reading.
    pub(crate) fn conn(&self, ch: ConnectionHandle) -> Option<&quinn_proto::Connection> {
        self.conns.get(&ch).map(|e| &e.quic)
    }

    /// The quinn connection, for changing. Marks it dirty first, so nobody has to remember
    /// to: any change may leave datagrams to send or move its timer.
    pub(crate) fn conn_mut(
        &mut self,
        ch: ConnectionHandle,
    ) -> Option<&mut quinn_proto::Connection> {
        if !self.conns.contains_key(&ch) {
            return None;
        }
        self.touch(ch);
        self.conns.get_mut(&ch).map(|e| &mut e.quic)
    }

    /// The quinn connection and the role's state together, for changing both (marks the
    /// connection dirty). `None` once the role has released it.
    pub(crate) fn parts_mut(
        &mut self,
        ch: ConnectionHandle,
    ) -> Option<(&mut quinn_proto::Connection, &mut S)> {
        if self.conns.get(&ch).is_none_or(|e| e.state.is_none()) {
            return None;
        }
        self.touch(ch);
        let entry = self.conns.get_mut(&ch)?;
        Some((&mut entry.quic, entry.state.as_mut()?))
    }

    /// Marks a connection as possibly having datagrams to send and a new deadline.
    fn touch(&mut self, ch: ConnectionHandle) {
        if self.in_send_queue.insert(ch) {
            self.send_queue.push_back(ch);
        }
        self.timer_dirty.insert(ch);
    }

    /// Shuttles endpoint events, then returns the connection's next application event.
    pub(crate) fn poll_conn(&mut self, ch: ConnectionHandle) -> ConnPoll<S> {
        if !self.conns.contains_key(&ch) {
            return ConnPoll::Drained(None);
        }
        // Handling endpoint events and polling may queue datagrams or move the timer.
        self.touch(ch);
        let Some(Entry { quic: conn, .. }) = self.conns.get_mut(&ch) else {
            return ConnPoll::Drained(None);
        };
        let mut drained = false;
        while let Some(ev) = conn.poll_endpoint_events() {
            if ev.is_drained() {
                drained = true;
            }
            if let Some(back) = self.endpoint.handle_event(ch, ev) {
                conn.handle_event(back);
            }
        }
        if let Some(ev) = conn.poll() {
            return ConnPoll::Event(ev);
        }
        if drained {
            let state = self.conns.remove(&ch).and_then(|e| e.state);
            if state.is_some() {
                self.live -= 1;
            }
            if let Some(at) = self.timer_of.remove(&ch) {
                self.timers.remove(&(at, ch));
            }
            self.timer_dirty.remove(&ch);
            return ConnPoll::Drained(state);
        }
        ConnPoll::Idle
    }

    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some((t, bytes)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Some(t);
        }
        while let Some(ch) = self.send_queue.pop_front() {
            let Some(Entry { quic: conn, .. }) = self.conns.get_mut(&ch) else {
                self.in_send_queue.remove(&ch);
                continue;
            };
            buf.clear();
            let fit = MAX_GSO_BYTES / usize::from(conn.current_mtu()).max(1);
            let t = conn.poll_transmit(now, self.max_gso_segments.min(fit).max(1), buf);
            self.timer_dirty.insert(ch);
            match t {
                Some(t) => {
                    // Round robin: a busy connection goes to the back of the line.
                    self.send_queue.push_back(ch);
                    return Some(t);
                }
                None => {
                    self.in_send_queue.remove(&ch);
                }
            }
        }
        None
    }

    fn refresh_timers(&mut self) {
        for ch in self.timer_dirty.drain() {
            if let Some(at) = self.timer_of.remove(&ch) {
                self.timers.remove(&(at, ch));
            }
            if let Some(at) = self.conns.get_mut(&ch).and_then(|e| e.quic.poll_timeout()) {
                self.timers.insert((at, ch));
                self.timer_of.insert(ch, at);
            }
        }
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.refresh_timers();
        self.timers.first().map(|(at, _)| *at)
    }

    /// Fires every connection timer due at `now`; returns the connections to drive.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<ConnectionHandle> {
        self.clock.observe(now);
        self.refresh_timers();
        let mut fired = Vec::new();
        while let Some(&(at, ch)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, ch));
            self.timer_of.remove(&ch);
            if let Some(entry) = self.conns.get_mut(&ch) {
                entry.quic.handle_timeout(now);
                fired.push(ch);
            }
        }
        for &ch in &fired {
            self.touch(ch);
        }
        fired
    }
}
