//! The validator side: connections to miners, handshakes, requests and streams.

mod auth;
mod connections;
mod deadlines;
mod requests;
mod responses;
#[cfg(feature = "testing")]
mod testing;

use responses::pull;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Dir, Event, StreamEvent, StreamId, VarInt};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::clock::WallClock;
use super::config::ClientConfig;
use super::core::{ConnRef, ConnRole, Core};
use super::error::{
    ClientError, ConnectFailure, ConnectionEnd, HandshakeProtocolError, LocalError, ResponseError,
    StreamFailure,
};
use super::inq::{pull_chunk, Pulled};
use super::outq::{Flush, OutQueue};
use super::surface::{Datagram, SansIo};
use super::timers::Timers;
use super::QueryId;
use crate::frame::{FrameDecoder, FrameError, MessageType, FRAME_HEADER_LEN};
use crate::handshake::{self, HandshakeError};
use crate::identity::Signer;
use crate::idhash::IdMap;
use crate::message::{
    encode_synapse_packet, DataMap, EncodedFrame, HandshakeRequest, HandshakeResponse, StreamChunk,
    StreamEnd, SynapseResponse, WireMessage,
};
use crate::reconnect::ReconnectState;

/// Something the client wants the application to know.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A miner hotkey completed the handshake on the connection to `addr`.
    Authenticated {
        /// Miner address.
        addr: SocketAddr,
        /// Miner hotkey now usable for requests.
        hotkey: String,
    },
    /// A miner hotkey could not be authenticated at `addr`.
    HandshakeFailed {
        /// Miner address.
        addr: SocketAddr,
        /// Hotkey that failed.
        hotkey: String,
        /// Why.
        error: ClientError,
    },
    /// The QUIC connection to `addr` closed; its hotkeys need a new handshake.
    ConnectionLost {
        /// Miner address.
        addr: SocketAddr,
        /// How it ended.
        reason: ConnectionEnd,
    },
    /// A unary response arrived.
    Response {
        /// The request it answers.
        id: QueryId,
        /// The miner's response (`success == false` is an application-level error).
        response: SynapseResponse,
        /// From writing the request to receiving the response frame.
        latency: Duration,
    },
    /// One chunk of a streaming response, in order. Call [`Client::consume_chunks`] when the
    /// application has taken it, so that reading continues.
    Chunk {
        /// The streaming request.
        id: QueryId,
        /// Chunk bytes.
        data: Bytes,
    },
    /// A streaming response ended successfully.
    StreamEnd {
        /// The streaming request.
        id: QueryId,
        /// From writing the request to receiving the end frame.
        latency: Duration,
    },
    /// A request failed; no further events follow for it.
    RequestFailed {
        /// The request.
        id: QueryId,
        /// Why.
        error: ClientError,
    },
}

/// Options for one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOptions {
    /// Fail with [`ClientError::Timeout`] (and reset the stream) if no complete answer by
    /// then. `None` waits as long as the connection lives, like the reference's plain query.
    pub timeout: Option<Duration>,
    /// Read the answer as a stream of chunks (the miner's handler must be a streaming one).
    pub streaming: bool,
}

/// State of one miner hotkey at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotkeyStatus {
    /// Waiting for the connection before its handshake starts.
    Idle,
    /// Handshake in flight.
    Pending,
    /// Usable for requests.
    Authenticated,
    /// The last handshake failed; a reconnect or a new `connect` retries it.
    Failed,
}

/// A miner's address: its connection, its hotkeys and the requests waiting for them.
#[derive(Debug)]
struct Peer {
    link: Link,
    /// What the current connection has told the reconnect backoff.
    settled: Settled,
    hotkeys: BTreeMap<String, HotkeyStatus>,
    reconnect: ReconnectState,
    /// Requests waiting for this peer to authenticate their hotkey or for stream credit.
    waiting: VecDeque<QueryId>,
}

/// How far the client has got with the connection to a miner's address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// No connection: never dialed, or the last one ended.
    Down,
    /// QUIC and TLS under way.
    Dialing(ConnectionHandle),
    /// Established; `fingerprint` is the miner certificate's, which its handshake
    /// answers must sign (PROTOCOL §8). `pipelining`: the miner is a Lightning miner
    /// that holds requests sent right behind a handshake (`tls::PIPELINE_ALPN`).
    Up {
        ch: ConnectionHandle,
        fingerprint: String,
        pipelining: bool,
    },
}

impl Link {
    /// The connection, established or not.
    fn handle(&self) -> Option<ConnectionHandle> {
        match self {
            Link::Down => None,
            Link::Dialing(ch) | Link::Up { ch, .. } => Some(*ch),
        }
    }

    /// The connection, once established.
    fn up(&self) -> Option<ConnectionHandle> {
        match self {
            Link::Up { ch, .. } => Some(*ch),
            _ => None,
        }
    }
}

/// Each connection settles the reconnect backoff once: a success as soon as one hotkey
/// authenticates, a failure when it ends (or gives up) before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Nothing counted yet.
    No,
    /// A hotkey authenticated: the backoff was reset.
    Succeeded,
    /// Every hotkey failed its handshake: the failure was counted and the connection
    /// closed; its close must not count it again or report the hotkeys again.
    FailureCounted,
}

impl Peer {
    fn new() -> Self {
        Self {
            link: Link::Down,
            settled: Settled::No,
            hotkeys: BTreeMap::new(),
            reconnect: ReconnectState::default(),
            waiting: VecDeque::new(),
        }
    }
}

#[derive(Debug)]
struct HandshakeStream {
    addr: SocketAddr,
    hotkey: String,
    nonce: String,
    fingerprint: String,
    out: OutQueue,
    decoder: FrameDecoder,
}

#[derive(Debug)]
enum ReqState {
    /// Not yet on a stream: the frame waits for authentication or stream credit.
    Waiting(EncodedFrame),
    Open {
        ch: ConnectionHandle,
        stream: StreamId,
        out: OutQueue,
        decoder: FrameDecoder,
        fin: bool,
    },
}

#[derive(Debug)]
struct Request {
    addr: SocketAddr,
    hotkey: String,
    streaming: bool,
    state: ReqState,
    started: Instant,
    timeout: Option<Duration>,
    /// Chunks delivered and not yet consumed by the application.
    outstanding: usize,
    stream_bytes: u64,
}

/// What one of our streams on a connection carries.
#[derive(Debug)]
enum OpenStream {
    /// A hotkey's handshake, with its state.
    Handshake(Box<HandshakeStream>),
    /// A request (its state is in `Client::requests`).
    Request(QueryId),
}

/// What the validator keeps per connection, in the core's connection table.
#[derive(Debug)]
pub(crate) struct CConn {
    /// The miner's address: the key of its `Peer`.
    addr: SocketAddr,
    /// Our streams on it, until their answer is read or they are given up.
    streams: IdMap<StreamId, OpenStream>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// Connection deadlines carry a [`ConnRef`]: quinn hands a closed connection's handle to
/// the next one, and a deadline left over from the old connection must not fire on the
/// new one.
enum Deadline {
    Dial(ConnRef),
    Handshake(ConnRef, StreamId),
    Request(QueryId),
}

/// The validator-side endpoint: a sans-IO state machine.
///
/// See the [crate documentation](crate) for the drive loop.
pub struct Client {
    /// The connection table: each entry holds the quinn connection and its `CConn`.
    core: Core<CConn>,
    config: ClientConfig,
    hotkey: String,
    signer: Arc<dyn Signer>,
    rng: ChaCha20Rng,
    /// quinn's settings for connections to other hosts.
    quic: quinn_proto::ClientConfig,
    /// The same for a miner on a loopback address: a higher MTU discovery ceiling.
    quic_loopback: quinn_proto::ClientConfig,
    peers: HashMap<SocketAddr, Peer>,
    requests: IdMap<QueryId, Request>,
    deadlines: Timers<Deadline>,
    events: VecDeque<ClientEvent>,
    next_request: u64,
    /// Buffers of large answers, kept for reuse (`crate::pool`).
    pool: crate::pool::BufferPool,
}

/// Takes request `id` out of the table and cancels its deadline: the one way a request
/// ends, so that no deadline outlives its request.
fn take_request(
    requests: &mut IdMap<QueryId, Request>,
    deadlines: &mut Timers<Deadline>,
    id: QueryId,
) -> Option<Request> {
    deadlines.cancel(&Deadline::Request(id));
    requests.remove(&id)
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hotkey", &self.hotkey)
            .field("peers", &self.peers.len())
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Creates a client endpoint.
    ///
    /// * `hotkey` is the validator's SS58 hotkey, used verbatim in handshakes; if the signer
    ///   knows its public key, the two must match (the reference never checks, §13.7).
    /// * `seed` drives every random choice the core makes (nonces, connection IDs).
    /// * `now` and `unix_ms` anchor the wall clock used for handshake timestamps.
    pub fn new(
        config: ClientConfig,
        hotkey: impl Into<String>,
        signer: Arc<dyn Signer>,
        seed: [u8; 32],
        now: Instant,
        unix_ms: u64,
    ) -> Result<Self, super::config::ConfigError> {
        config.validate()?;
        let hotkey = hotkey.into();
        super::check_signer_matches(&hotkey, signer.as_ref())?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let crypto = crate::tls::client_crypto()
            .map_err(|e| super::config::ConfigError::Tls(e.to_string()))?;
        let mut quic = quinn_proto::ClientConfig::new(crypto);
        let mut quic_loopback = quic.clone();
        // The server never opens streams towards us.
        quic.transport_config(config.transport.build(0, false));
        quic_loopback.transport_config(config.transport.build(0, true));
        let core = Core::new(
            &mut rng,
            None,
            WallClock::new(now, unix_ms),
            config.transport.mtu_discovery,
        );
        Ok(Self {
            core,
            config,
            hotkey,
            signer,
            rng,
            quic,
            quic_loopback,
            peers: HashMap::new(),
            requests: IdMap::default(),
            deadlines: Timers::default(),
            events: VecDeque::new(),
            next_request: 0,
            pool: crate::pool::BufferPool::default(),
        })
    }

    /// The validator hotkey this client authenticates as.
    pub fn hotkey(&self) -> &str {
        &self.hotkey
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    // ----- inputs -------------------------------------------------------------------------

    // ----- outputs ------------------------------------------------------------------------

    // ----- inspection ---------------------------------------------------------------------

    /// Status of `hotkey` at `addr`, if the client knows that pair.
    pub fn hotkey_status(&self, addr: SocketAddr, hotkey: &str) -> Option<HotkeyStatus> {
        self.peers.get(&addr)?.hotkeys.get(hotkey).copied()
    }

    /// Every (address, hotkey) pair that is authenticated now.
    pub fn authenticated(&self) -> impl Iterator<Item = (SocketAddr, &str)> + '_ {
        self.peers.iter().flat_map(|(addr, p)| {
            p.hotkeys
                .iter()
                .filter(|(_, s)| **s == HotkeyStatus::Authenticated)
                .map(move |(hk, _)| (*addr, hk.as_str()))
        })
    }

    /// Addresses the client knows, with whether a QUIC connection is up.
    pub fn peers(&self) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
        self.peers.iter().map(|(a, p)| (*a, p.link.up().is_some()))
    }

    /// Hotkeys registered at `addr` (any status).
    pub fn peer_hotkeys(&self, addr: SocketAddr) -> Vec<String> {
        self.peers
            .get(&addr)
            .map(|p| p.hotkeys.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Requests in flight.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// QUIC statistics of the connection to `addr`.
    pub fn connection_stats(&self, addr: SocketAddr) -> Option<quinn_proto::ConnectionStats> {
        let ch = self.peers.get(&addr)?.link.handle()?;
        Some(self.core.conn(ch)?.stats())
    }

    // ----- internals ----------------------------------------------------------------------
}

impl SansIo for Client {
    type Event = ClientEvent;

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        // A client accepts no connections.
        self.drive_datagram(now, datagram, |c, incoming| {
            c.core.endpoint.ignore(incoming)
        });
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.drive_timers(now);
        while let Some((_, deadline)) = self.deadlines.pop_due(now) {
            self.on_deadline(now, deadline);
        }
    }

    super::surface::shared_sans_io_methods!();
}
