//! The validator side: connections to miners, handshakes, requests and streams.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{
    ConnectionHandle, Dir, Event, ReadError, StreamEvent, StreamId, Transmit, VarInt,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::clock::WallClock;
use super::config::ClientConfig;
use super::core::{ConnPoll, Core, Received};
use super::error::ClientError;
use super::outq::{Flush, OutQueue};
use super::surface::{Datagram, SansIo};
use super::timers::Timers;
use super::{RequestId, TimeoutReason};
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
        /// Close reason as reported by QUIC.
        reason: String,
    },
    /// A unary response arrived.
    Response {
        /// The request it answers.
        id: RequestId,
        /// The miner's response (`success == false` is an application-level error).
        response: SynapseResponse,
        /// From writing the request to receiving the response frame.
        latency: Duration,
    },
    /// One chunk of a streaming response, in order. Call [`Client::consume_chunks`] when the
    /// application has taken it, so that reading continues.
    Chunk {
        /// The streaming request.
        id: RequestId,
        /// Chunk bytes.
        data: Bytes,
    },
    /// A streaming response ended successfully.
    StreamEnd {
        /// The streaming request.
        id: RequestId,
        /// From writing the request to receiving the end frame.
        latency: Duration,
    },
    /// A request failed; no further events follow for it.
    RequestFailed {
        /// The request.
        id: RequestId,
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

#[derive(Debug)]
struct Peer {
    conn: Option<ConnectionHandle>,
    connected: bool,
    fingerprint: Option<String>,
    hotkeys: BTreeMap<String, HotkeyStatus>,
    reconnect: ReconnectState,
    /// Requests waiting for this peer to authenticate their hotkey or for stream credit.
    waiting: VecDeque<RequestId>,
    /// Whether the current connection ever authenticated a hotkey (for backoff accounting).
    authenticated_once: bool,
}

impl Peer {
    fn new() -> Self {
        Self {
            conn: None,
            connected: false,
            fingerprint: None,
            hotkeys: BTreeMap::new(),
            reconnect: ReconnectState::default(),
            waiting: VecDeque::new(),
            authenticated_once: false,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamRole {
    Handshake,
    Request(RequestId),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
/// Connection deadlines carry the connection's serial as well as its handle: quinn hands
/// a closed connection's handle to the next one, and a deadline left over from the old
/// connection must not fire on the new one.
enum Deadline {
    Dial(ConnectionHandle, u64),
    Handshake(ConnectionHandle, u64, StreamId),
    Request(RequestId),
}

/// The validator-side endpoint: a sans-IO state machine.
///
/// See the [crate documentation](crate) for the drive loop.
pub struct Client {
    core: Core,
    config: ClientConfig,
    hotkey: String,
    signer: Arc<dyn Signer>,
    rng: ChaCha20Rng,
    quic: quinn_proto::ClientConfig,
    peers: HashMap<SocketAddr, Peer>,
    conn_addr: IdMap<ConnectionHandle, SocketAddr>,
    /// Serial of the connection holding each handle now (see [`Deadline`]).
    conn_serial: IdMap<ConnectionHandle, u64>,
    next_conn_serial: u64,
    streams: HashMap<(ConnectionHandle, StreamId), StreamRole>,
    handshakes: HashMap<(ConnectionHandle, StreamId), HandshakeStream>,
    requests: IdMap<RequestId, Request>,
    deadlines: Timers<Deadline>,
    events: VecDeque<ClientEvent>,
    next_request: u64,
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
            .map_err(|e| super::config::ConfigError(format!("TLS: {e}")))?;
        let mut quic = quinn_proto::ClientConfig::new(crypto);
        // The server never opens streams towards us.
        quic.transport_config(config.transport.build(0));
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
            peers: HashMap::new(),
            conn_addr: IdMap::default(),
            conn_serial: IdMap::default(),
            next_conn_serial: 0,
            streams: HashMap::new(),
            handshakes: HashMap::new(),
            requests: IdMap::default(),
            deadlines: Timers::default(),
            events: VecDeque::new(),
            next_request: 0,
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

    /// Connects to the miner at `addr` and authenticates each of `hotkeys` on that one
    /// connection (PROTOCOL §8.2). Hotkeys already authenticated there are left alone.
    ///
    /// Progress arrives as [`ClientEvent::Authenticated`] / [`ClientEvent::HandshakeFailed`].
    pub fn connect<I, S>(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        hotkeys: I,
    ) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if !self.peers.contains_key(&addr) && self.peers.len() >= self.config.max_connections {
            return Err(ClientError::TooManyConnections(self.config.max_connections));
        }
        let peer = self.peers.entry(addr).or_insert_with(Peer::new);
        for hk in hotkeys {
            let hk = hk.into();
            let status = peer.hotkeys.entry(hk).or_insert(HotkeyStatus::Idle);
            if *status == HotkeyStatus::Failed {
                *status = HotkeyStatus::Idle;
            }
        }
        if peer.conn.is_none() {
            self.dial(now, addr)
        } else {
            if peer.connected {
                self.start_handshakes(now, addr);
            }
            Ok(())
        }
    }

    /// Sends `synapse_type` with `data` to `hotkey` at `addr`.
    ///
    /// If the connection is down, it is re-established on demand under the reconnect policy
    /// (an error is returned at once while in backoff). The request waits for the hotkey's
    /// handshake and for stream credit; its deadline counts from now.
    pub fn request(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        hotkey: &str,
        synapse_type: &str,
        data: DataMap,
        opts: RequestOptions,
    ) -> Result<RequestId, ClientError> {
        let frame = encode_synapse_packet(synapse_type, &data, self.core.clock.unix_secs(now))
            .map_err(|e| ClientError::Local(format!("request cannot be encoded: {e}")))?;

        let peer = match self.peers.get(&addr) {
            Some(p) => p,
            None => {
                // Like the reference, a query to an unknown miner dials and registers it;
                // unlike it, the connection cap still applies.
                self.connect(now, addr, [hotkey])?;
                self.peers
                    .get(&addr)
                    .ok_or_else(|| ClientError::Local("peer vanished".into()))?
            }
        };
        let status = peer.hotkeys.get(hotkey).copied();
        let conn_live = peer.conn.is_some();
        match (conn_live, status) {
            (true, None) => {
                return Err(ClientError::NoRoute {
                    hotkey: hotkey.to_string(),
                    addr,
                })
            }
            (true, Some(HotkeyStatus::Failed)) => {
                return Err(ClientError::NoRoute {
                    hotkey: hotkey.to_string(),
                    addr,
                })
            }
            (false, _) => {
                // Reconnect on demand; the hotkey joins the set handshaken on the new connection.
                let peer = self
                    .peers
                    .get_mut(&addr)
                    .ok_or_else(|| ClientError::Local("peer vanished".into()))?;
                peer.hotkeys
                    .entry(hotkey.to_string())
                    .or_insert(HotkeyStatus::Idle);
                self.dial(now, addr)?;
            }
            _ => {}
        }

        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.requests.insert(
            id,
            Request {
                addr,
                hotkey: hotkey.to_string(),
                streaming: opts.streaming,
                state: ReqState::Waiting(frame),
                started: now,
                timeout: opts.timeout,
                outstanding: 0,
                stream_bytes: 0,
            },
        );
        if let Some(t) = opts.timeout {
            self.deadlines.schedule(now + t, Deadline::Request(id));
        }
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.waiting.push_back(id);
        }
        self.pump_waiting(now, addr);
        Ok(id)
    }

    /// Abandons a request: its stream is reset and stopped, so the miner sees the
    /// cancellation and can stop working. No further events are emitted for it.
    pub fn cancel(&mut self, now: Instant, id: RequestId) {
        if let Some(req) = self.requests.remove(&id) {
            self.abort_stream(now, &req, 0);
        }
    }

    /// The application consumed `n` chunks of streaming request `id`; reading resumes when
    /// fewer than `stream_read_ahead_chunks` are outstanding.
    pub fn consume_chunks(&mut self, now: Instant, id: RequestId, n: usize) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        req.outstanding = req.outstanding.saturating_sub(n);
        if let ReqState::Open { ch, stream, .. } = req.state {
            self.read_request(now, ch, stream, id);
        }
    }

    /// Closes the connection to `addr` with `reason` and forgets the peer.
    pub fn disconnect(&mut self, now: Instant, addr: SocketAddr, reason: &str) {
        if let Some(peer) = self.peers.remove(&addr) {
            if let Some(ch) = peer.conn {
                self.close_conn(now, ch, reason);
            }
            for id in peer.waiting {
                if let Some(req) = self.requests.remove(&id) {
                    self.abort_stream(now, &req, 0);
                    self.events.push_back(ClientEvent::RequestFailed {
                        id,
                        error: ClientError::ConnectionLost(reason.to_string()),
                    });
                }
            }
        }
    }

    /// Stops using `hotkey` at `addr`; closes the connection if no hotkey is left there.
    pub fn forget_hotkey(&mut self, now: Instant, addr: SocketAddr, hotkey: &str, reason: &str) {
        let empty = match self.peers.get_mut(&addr) {
            Some(peer) => {
                peer.hotkeys.remove(hotkey);
                peer.hotkeys.is_empty()
            }
            None => return,
        };
        if empty {
            self.disconnect(now, addr, reason);
        }
    }

    /// Clears reconnect backoff for `addr` (the registry was refreshed, PROTOCOL §8.3).
    pub fn reset_backoff(&mut self, addr: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.reconnect.reset();
        }
    }

    /// Closes every connection with reason `client_shutdown` and forgets all peers.
    pub fn close_all(&mut self, now: Instant) {
        let addrs: Vec<SocketAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            self.disconnect(now, addr, "client_shutdown");
        }
    }

    /// Sends a request on the live QUIC connection to `addr` without any handshake.
    ///
    /// Exists only so tests can check how servers treat unauthenticated requests; a real
    /// client never does this.
    #[doc(hidden)]
    pub fn send_unauthenticated_for_testing(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        synapse_type: &str,
        data: DataMap,
    ) -> Result<RequestId, ClientError> {
        let ch = self
            .peers
            .get(&addr)
            .and_then(|p| p.conn.filter(|_| p.connected))
            .ok_or_else(|| ClientError::Connect("not connected".into()))?;
        let timestamp = self.core.clock.unix_secs(now);
        let conn = self
            .core
            .conn_mut(ch)
            .ok_or_else(|| ClientError::Connect("not connected".into()))?;
        let stream = conn
            .streams()
            .open(Dir::Bi)
            .ok_or_else(|| ClientError::Local("no stream credit".into()))?;
        let mut out = OutQueue::default();
        out.push(
            encode_synapse_packet(synapse_type, &data, timestamp)
                .map_err(|e| ClientError::Local(format!("request cannot be encoded: {e}")))?,
        );
        out.finish_after_drain();
        let _ = out.flush(conn.send_stream(stream));
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.requests.insert(
            id,
            Request {
                addr,
                hotkey: String::new(),
                streaming: false,
                state: ReqState::Open {
                    ch,
                    stream,
                    out,
                    decoder: FrameDecoder::new(self.config.max_frame_payload_bytes),
                    fin: false,
                },
                started: now,
                timeout: None,
                outstanding: 0,
                stream_bytes: 0,
            },
        );
        self.streams.insert((ch, stream), StreamRole::Request(id));
        Ok(id)
    }

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
        self.peers
            .iter()
            .map(|(a, p)| (*a, p.conn.is_some() && p.connected))
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
        let ch = self.peers.get(&addr)?.conn?;
        Some(self.core.conn(ch)?.stats())
    }

    // ----- internals ----------------------------------------------------------------------

    fn dial(&mut self, now: Instant, addr: SocketAddr) -> Result<(), ClientError> {
        let policy = self.config.reconnect;
        let peer = self
            .peers
            .get_mut(&addr)
            .ok_or_else(|| ClientError::Local("unknown peer".into()))?;
        if peer.conn.is_some() {
            return Ok(());
        }
        peer.reconnect
            .check(now, &policy)
            .map_err(ClientError::Reconnect)?;
        let server_name = addr.ip().to_string();
        let (ch, conn) = self
            .core
            .endpoint
            .connect(now, self.quic.clone(), addr, &server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        peer.reconnect.begin();
        peer.conn = Some(ch);
        peer.connected = false;
        peer.fingerprint = None;
        peer.authenticated_once = false;
        for status in peer.hotkeys.values_mut() {
            *status = HotkeyStatus::Idle;
        }
        self.conn_addr.insert(ch, addr);
        self.next_conn_serial += 1;
        let serial = self.next_conn_serial;
        self.conn_serial.insert(ch, serial);
        self.core.insert(ch, conn);
        self.deadlines.schedule(
            now + self.config.connect_timeout,
            Deadline::Dial(ch, serial),
        );
        Ok(())
    }

    fn drive(&mut self, now: Instant, ch: ConnectionHandle) {
        loop {
            match self.core.poll_conn(ch) {
                ConnPoll::Event(ev) => self.on_conn_event(now, ch, ev),
                ConnPoll::Idle => break,
                ConnPoll::Drained => {
                    self.on_conn_closed(now, ch, "connection drained".into());
                    break;
                }
            }
        }
    }

    fn on_conn_event(&mut self, now: Instant, ch: ConnectionHandle, ev: Event) {
        match ev {
            Event::Connected => {
                let Some(&addr) = self.conn_addr.get(&ch) else {
                    return;
                };
                let fp = self
                    .core
                    .conn(ch)
                    .and_then(crate::tls::peer_leaf_der)
                    .map(|der| handshake::cert_fingerprint(&der));
                match fp {
                    Some(fp) => {
                        if let Some(peer) = self.peers.get_mut(&addr) {
                            peer.connected = true;
                            peer.fingerprint = Some(fp);
                        }
                        self.start_handshakes(now, addr);
                    }
                    None => {
                        self.close_conn(now, ch, "no peer certificate");
                        self.fail_peer(
                            now,
                            addr,
                            ClientError::Connect(
                                "peer certificate not available for fingerprinting".into(),
                            ),
                        );
                    }
                }
            }
            Event::ConnectionLost { reason } => {
                self.on_conn_closed(now, ch, reason.to_string());
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                match self.streams.get(&(ch, id)).copied() {
                    Some(StreamRole::Handshake) => self.read_handshake(now, ch, id),
                    Some(StreamRole::Request(rid)) => self.read_request(now, ch, id, rid),
                    None => {}
                }
            }
            Event::Stream(StreamEvent::Writable { id }) => self.flush_stream(now, ch, id),
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {
                if let Some(&addr) = self.conn_addr.get(&ch) {
                    self.start_handshakes(now, addr);
                    self.pump_waiting(now, addr);
                }
            }
            Event::Stream(StreamEvent::Finished { id })
            | Event::Stream(StreamEvent::Stopped { id, .. }) => {
                // Our send side is done (acknowledged, or the miner stopped reading because
                // it has the whole frame). The stream lives on until the answer is read.
                if let Some(h) = self.handshakes.get_mut(&(ch, id)) {
                    h.out = OutQueue::default();
                }
            }
            _ => {}
        }
    }

    fn on_conn_closed(&mut self, now: Instant, ch: ConnectionHandle, reason: String) {
        self.conn_serial.remove(&ch);
        let Some(addr) = self.conn_addr.remove(&ch) else {
            return;
        };
        self.streams.retain(|(c, _), _| *c != ch);
        self.handshakes.retain(|(c, _), _| *c != ch);
        let policy = self.config.reconnect;
        let mut failed = Vec::new();
        if let Some(peer) = self.peers.get_mut(&addr) {
            if peer.conn == Some(ch) {
                peer.conn = None;
                peer.connected = false;
                if !peer.authenticated_once {
                    peer.reconnect.on_failure(now, &policy);
                }
                for (hk, status) in peer.hotkeys.iter_mut() {
                    if *status == HotkeyStatus::Pending || *status == HotkeyStatus::Idle {
                        failed.push(hk.clone());
                    }
                    if *status != HotkeyStatus::Failed {
                        *status = HotkeyStatus::Idle;
                    }
                }
                // Requests that never reached a stream cannot be sent any more.
                let waiting: Vec<RequestId> = peer.waiting.drain(..).collect();
                for id in waiting {
                    if self.requests.remove(&id).is_some() {
                        self.events.push_back(ClientEvent::RequestFailed {
                            id,
                            error: ClientError::ConnectionLost(reason.clone()),
                        });
                    }
                }
            }
            if !peer.authenticated_once {
                for hotkey in failed {
                    self.events.push_back(ClientEvent::HandshakeFailed {
                        addr,
                        hotkey,
                        error: ClientError::Connect(reason.clone()),
                    });
                }
            }
        }
        let lost: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| matches!(r.state, ReqState::Open { ch: c, .. } if c == ch))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.requests.remove(&id);
            self.events.push_back(ClientEvent::RequestFailed {
                id,
                error: ClientError::ConnectionLost(reason.clone()),
            });
        }
        self.events
            .push_back(ClientEvent::ConnectionLost { addr, reason });
    }

    fn close_conn(&mut self, now: Instant, ch: ConnectionHandle, reason: &str) {
        if let Some(conn) = self.core.conn_mut(ch) {
            conn.close(
                now,
                VarInt::from_u32(0),
                Bytes::copy_from_slice(reason.as_bytes()),
            );
        }
    }

    /// Fails every hotkey and waiting request of `addr` after a connection-level failure.
    fn fail_peer(&mut self, now: Instant, addr: SocketAddr, error: ClientError) {
        let policy = self.config.reconnect;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(ch) = peer.conn.take() {
            self.conn_addr.remove(&ch);
            self.conn_serial.remove(&ch);
            if let Some(conn) = self.core.conn_mut(ch) {
                conn.close(
                    now,
                    VarInt::from_u32(0),
                    Bytes::from_static(b"connect_failed"),
                );
            }
        }
        peer.connected = false;
        peer.reconnect.on_failure(now, &policy);
        let mut events = Vec::new();
        for (hk, status) in peer.hotkeys.iter_mut() {
            if *status != HotkeyStatus::Failed {
                *status = HotkeyStatus::Idle;
                events.push(ClientEvent::HandshakeFailed {
                    addr,
                    hotkey: hk.clone(),
                    error: error.clone(),
                });
            }
        }
        let waiting: Vec<RequestId> = peer.waiting.drain(..).collect();
        for id in waiting {
            if self.requests.remove(&id).is_some() {
                events.push(ClientEvent::RequestFailed {
                    id,
                    error: error.clone(),
                });
            }
        }
        self.events.extend(events);
    }

    fn start_handshakes(&mut self, now: Instant, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let (Some(ch), true, Some(fp)) = (peer.conn, peer.connected, peer.fingerprint.clone())
        else {
            return;
        };
        let idle: Vec<String> = peer
            .hotkeys
            .iter()
            .filter(|(_, s)| **s == HotkeyStatus::Idle)
            .map(|(hk, _)| hk.clone())
            .collect();
        for hotkey in idle {
            let Some(conn) = self.core.conn_mut(ch) else {
                return;
            };
            let Some(stream) = conn.streams().open(Dir::Bi) else {
                // Out of stream credit: `Available` will call us again.
                break;
            };
            let nonce = handshake::generate_nonce(&mut self.rng);
            let timestamp = self.core.clock.unix_secs(now);
            let Some(conn) = self.core.conn_mut(ch) else {
                return;
            };
            let message = handshake::request_message(&self.hotkey, timestamp, &nonce, &fp);
            let signature = match self.signer.sign(message.as_bytes()) {
                Ok(sig) => handshake::encode_signature(&sig),
                Err(e) => {
                    let _ = conn.send_stream(stream).reset(VarInt::from_u32(0));
                    if let Some(peer) = self.peers.get_mut(&addr) {
                        peer.hotkeys.insert(hotkey.clone(), HotkeyStatus::Failed);
                    }
                    self.events.push_back(ClientEvent::HandshakeFailed {
                        addr,
                        hotkey,
                        error: ClientError::Handshake(HandshakeError::Signing(e)),
                    });
                    continue;
                }
            };
            let request = HandshakeRequest {
                validator_hotkey: self.hotkey.clone(),
                timestamp,
                nonce: nonce.clone(),
                signature,
            };
            let mut out = OutQueue::default();
            match request.encode() {
                Ok(frame) => out.push(frame),
                Err(e) => {
                    tracing::warn!(%e, "handshake request cannot be encoded");
                    continue;
                }
            }
            out.finish_after_drain();
            let _ = out.flush(conn.send_stream(stream));
            self.streams.insert((ch, stream), StreamRole::Handshake);
            self.handshakes.insert(
                (ch, stream),
                HandshakeStream {
                    addr,
                    hotkey: hotkey.clone(),
                    nonce,
                    fingerprint: fp.clone(),
                    out,
                    decoder: FrameDecoder::new(self.config.max_frame_payload_bytes),
                },
            );
            if let Some(peer) = self.peers.get_mut(&addr) {
                peer.hotkeys.insert(hotkey, HotkeyStatus::Pending);
            }
            let serial = self.conn_serial.get(&ch).copied().unwrap_or(0);
            self.deadlines.schedule(
                now + self.config.connect_timeout,
                Deadline::Handshake(ch, serial, stream),
            );
        }
    }

    fn read_handshake(&mut self, now: Instant, ch: ConnectionHandle, stream: StreamId) {
        let Some(conn) = self.core.conn_mut(ch) else {
            return;
        };
        let Some(hs) = self.handshakes.get_mut(&(ch, stream)) else {
            return;
        };
        let fin = match pull(conn, stream, &mut hs.decoder) {
            Ok(fin) => fin,
            Err(e) => {
                let msg = e;
                self.finish_handshake(now, ch, stream, Err(ClientError::Transport(msg)));
                return;
            }
        };
        let outcome = match hs.decoder.next_frame() {
            Ok(Some(frame)) => {
                if frame.ty != MessageType::HandshakeResponse {
                    Some(Err(ClientError::HandshakeProtocol(format!(
                        "Expected HandshakeResponse, got {:?}",
                        frame.ty
                    ))))
                } else {
                    Some(match HandshakeResponse::decode(&frame.payload) {
                        Ok(resp) => handshake::verify_response(
                            &(&resp).into(),
                            &hs.hotkey,
                            &self.hotkey,
                            &hs.nonce,
                            &hs.fingerprint,
                        )
                        .map_err(ClientError::Handshake),
                        Err(e) => Err(ClientError::HandshakeProtocol(format!(
                            "Failed to parse HandshakeResponse: {e}"
                        ))),
                    })
                }
            }
            Ok(None) if fin => Some(Err(ClientError::Transport(
                hs.decoder
                    .finish()
                    .err()
                    .unwrap_or(FrameError::Truncated {
                        received: 0,
                        expected: FRAME_HEADER_LEN,
                    })
                    .to_string(),
            ))),
            Ok(None) => None,
            Err(e) => Some(Err(ClientError::Transport(e.to_string()))),
        };
        if let Some(result) = outcome {
            self.finish_handshake(now, ch, stream, result);
        }
    }

    fn finish_handshake(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
        result: Result<(), ClientError>,
    ) {
        self.streams.remove(&(ch, stream));
        let Some(hs) = self.handshakes.remove(&(ch, stream)) else {
            return;
        };
        if let Some(conn) = self.core.conn_mut(ch) {
            let _ = conn.recv_stream(stream).stop(VarInt::from_u32(0));
        }
        let addr = hs.addr;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if peer.conn != Some(ch) {
            return;
        }
        match result {
            Ok(()) => {
                peer.hotkeys
                    .insert(hs.hotkey.clone(), HotkeyStatus::Authenticated);
                peer.authenticated_once = true;
                peer.reconnect.on_success();
                self.events.push_back(ClientEvent::Authenticated {
                    addr,
                    hotkey: hs.hotkey,
                });
                self.pump_waiting(now, addr);
            }
            Err(error) => {
                if peer.hotkeys.contains_key(&hs.hotkey) {
                    peer.hotkeys.insert(hs.hotkey.clone(), HotkeyStatus::Failed);
                }
                // Requests for this hotkey cannot be served on this connection.
                let mut failed = Vec::new();
                peer.waiting.retain(|id| match self.requests.get(id) {
                    Some(r) if r.hotkey == hs.hotkey => {
                        failed.push(*id);
                        false
                    }
                    _ => true,
                });
                let none_left = peer.hotkeys.values().all(|s| *s == HotkeyStatus::Failed);
                self.events.push_back(ClientEvent::HandshakeFailed {
                    addr,
                    hotkey: hs.hotkey,
                    error: error.clone(),
                });
                for id in failed {
                    self.requests.remove(&id);
                    self.events.push_back(ClientEvent::RequestFailed {
                        id,
                        error: error.clone(),
                    });
                }
                if none_left && !peer.authenticated_once {
                    let policy = self.config.reconnect;
                    peer.reconnect.on_failure(now, &policy);
                    peer.authenticated_once = true; // failure already counted
                    self.close_conn(now, ch, "no_authenticated_hotkeys");
                }
            }
        }
    }

    /// Puts waiting requests of `addr` on streams where their hotkey is authenticated.
    fn pump_waiting(&mut self, now: Instant, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(ch) = peer.conn else {
            return;
        };
        let mut still = VecDeque::new();
        while let Some(id) = peer.waiting.pop_front() {
            let Some(req) = self.requests.get_mut(&id) else {
                continue;
            };
            if peer.hotkeys.get(&req.hotkey) != Some(&HotkeyStatus::Authenticated) {
                still.push_back(id);
                continue;
            }
            let Some(conn) = self.core.conn_mut(ch) else {
                still.push_back(id);
                break;
            };
            let Some(stream) = conn.streams().open(Dir::Bi) else {
                still.push_back(id);
                still.extend(peer.waiting.drain(..));
                break;
            };
            let frame = match std::mem::replace(
                &mut req.state,
                ReqState::Open {
                    ch,
                    stream,
                    out: OutQueue::default(),
                    decoder: FrameDecoder::new(self.config.max_frame_payload_bytes),
                    fin: false,
                },
            ) {
                ReqState::Waiting(frame) => frame,
                ReqState::Open { .. } => continue,
            };
            req.started = now;
            if let ReqState::Open { out, .. } = &mut req.state {
                out.push(frame);
                out.finish_after_drain();
                let _ = out.flush(conn.send_stream(stream));
            }
            self.streams.insert((ch, stream), StreamRole::Request(id));
        }
        peer.waiting = still;
    }

    fn flush_stream(&mut self, _now: Instant, ch: ConnectionHandle, stream: StreamId) {
        let Some(conn) = self.core.conn_mut(ch) else {
            return;
        };
        match self.streams.get(&(ch, stream)) {
            Some(StreamRole::Handshake) => {
                if let Some(hs) = self.handshakes.get_mut(&(ch, stream)) {
                    let _ = hs.out.flush(conn.send_stream(stream));
                }
            }
            Some(StreamRole::Request(id)) => {
                if let Some(Request {
                    state: ReqState::Open { out, .. },
                    ..
                }) = self.requests.get_mut(id)
                {
                    if out.flush(conn.send_stream(stream)) == Flush::Closed {
                        // The miner stopped reading; its answer (or silence) decides.
                        *out = OutQueue::default();
                    }
                }
            }
            None => {}
        }
    }

    fn read_request(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
        id: RequestId,
    ) {
        let read_ahead = self.config.stream_read_ahead_chunks;
        let max_stream = self.config.max_stream_payload_bytes;
        loop {
            let Some(req) = self.requests.get_mut(&id) else {
                return;
            };
            let ReqState::Open {
                decoder,
                fin,
                ch: rch,
                stream: rstream,
                ..
            } = &mut req.state
            else {
                return;
            };
            if *rch != ch || *rstream != stream {
                return;
            }
            // Deliver what is already decoded, within the read-ahead budget.
            let mut outcome: Option<Result<ClientEvent, ClientError>> = None;
            while outcome.is_none() && (!req.streaming || req.outstanding < read_ahead) {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        outcome = handle_response_frame(
                            now,
                            id,
                            req.streaming,
                            req.started,
                            &mut req.stream_bytes,
                            max_stream,
                            frame,
                        );
                        if outcome.is_none() {
                            // A chunk was delivered (events pushed below via the queue).
                        }
                        if let Some(Ok(ClientEvent::Chunk { .. })) = &outcome {
                            req.outstanding += 1;
                            if let Some(Ok(ev)) = outcome.take() {
                                self.events.push_back(ev);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => outcome = Some(Err(ClientError::Transport(e.to_string()))),
                }
            }
            if let Some(result) = outcome {
                self.complete_request(now, id, result);
                return;
            }
            if req.streaming && req.outstanding >= read_ahead {
                // Paused: leave data in quinn so flow control pushes back on the miner.
                return;
            }
            if *fin {
                let err = decoder.finish().err().unwrap_or(FrameError::Truncated {
                    received: 0,
                    expected: FRAME_HEADER_LEN,
                });
                self.complete_request(now, id, Err(ClientError::Transport(err.to_string())));
                return;
            }
            let Some(conn) = self.core.conn_mut(ch) else {
                return;
            };
            let before = decoder.buffered_len();
            match pull(conn, stream, decoder) {
                Ok(f) => *fin = f,
                Err(e) => {
                    self.complete_request(now, id, Err(ClientError::Transport(e)));
                    return;
                }
            }
            let Some(Request {
                state: ReqState::Open { decoder, fin, .. },
                ..
            }) = self.requests.get(&id)
            else {
                return;
            };
            if decoder.buffered_len() == before && !*fin {
                return;
            }
        }
    }

    fn complete_request(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<ClientEvent, ClientError>,
    ) {
        let Some(req) = self.requests.remove(&id) else {
            return;
        };
        match result {
            Ok(ev) => {
                self.finish_stream_quietly(&req);
                self.events.push_back(ev);
            }
            Err(error) => {
                self.abort_stream(now, &req, 0);
                self.events
                    .push_back(ClientEvent::RequestFailed { id, error });
            }
        }
    }

    /// The answer is complete: release the stream without disturbing the miner.
    fn finish_stream_quietly(&mut self, req: &Request) {
        if let ReqState::Open {
            ch, stream, fin, ..
        } = &req.state
        {
            self.streams.remove(&(*ch, *stream));
            if let Some(conn) = self.core.conn_mut(*ch) {
                if !*fin {
                    let _ = conn.recv_stream(*stream).stop(VarInt::from_u32(0));
                }
            }
        }
    }

    /// Resets our send side and stops the receive side, so the miner sees cancellation.
    fn abort_stream(&mut self, _now: Instant, req: &Request, code: u32) {
        match &req.state {
            ReqState::Open {
                ch, stream, fin, ..
            } => {
                self.streams.remove(&(*ch, *stream));
                if let Some(conn) = self.core.conn_mut(*ch) {
                    let _ = conn.send_stream(*stream).reset(VarInt::from_u32(code));
                    if !*fin {
                        let _ = conn.recv_stream(*stream).stop(VarInt::from_u32(code));
                    }
                }
            }
            ReqState::Waiting(_) => {}
        }
        let addr = req.addr;
        if let Some(peer) = self.peers.get_mut(&addr) {
            // Drop it from the waiting line if it never got a stream.
            let alive: Vec<RequestId> = peer
                .waiting
                .iter()
                .copied()
                .filter(|id| self.requests.contains_key(id))
                .collect();
            peer.waiting = alive.into();
        }
    }

    fn on_deadline(&mut self, now: Instant, deadline: Deadline) {
        match deadline {
            Deadline::Dial(ch, serial) => {
                if self.conn_serial.get(&ch) != Some(&serial) {
                    return;
                }
                let Some(&addr) = self.conn_addr.get(&ch) else {
                    return;
                };
                let connected = self.peers.get(&addr).map(|p| p.connected).unwrap_or(true);
                if !connected {
                    self.fail_peer(now, addr, ClientError::ConnectTimeout(addr));
                }
            }
            Deadline::Handshake(ch, serial, stream) => {
                if self.conn_serial.get(&ch) == Some(&serial)
                    && self.handshakes.contains_key(&(ch, stream))
                {
                    self.finish_handshake(now, ch, stream, Err(ClientError::HandshakeTimeout));
                }
            }
            Deadline::Request(id) => {
                let Some(timeout) = self.requests.get(&id).and_then(|r| r.timeout) else {
                    return;
                };
                self.complete_request(now, id, Err(ClientError::Timeout(timeout)));
            }
        }
    }
}

/// Moves everything quinn has for `stream` into `decoder`. Returns whether FIN was seen.
fn pull(
    conn: &mut quinn_proto::Connection,
    stream: StreamId,
    decoder: &mut FrameDecoder,
) -> Result<bool, String> {
    let mut recv = conn.recv_stream(stream);
    let mut chunks = match recv.read(true) {
        Ok(c) => c,
        Err(e) => return Err(format!("stream read failed: {e}")),
    };
    let mut fin = false;
    let mut error = None;
    loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => decoder.push(chunk.bytes),
            Ok(None) => {
                fin = true;
                break;
            }
            Err(ReadError::Blocked) => break,
            Err(ReadError::Reset(code)) => {
                error = Some(format!("stream reset by peer: code {code}"));
                break;
            }
        }
    }
    let _ = chunks.finalize();
    match error {
        Some(e) => Err(e),
        None => Ok(fin),
    }
}

/// Interprets one frame of a response stream (PROTOCOL §6.1, §7).
///
/// Returns `None` when more frames are expected, `Some(Ok(Chunk))` for a chunk to deliver,
/// or the final outcome.
fn handle_response_frame(
    now: Instant,
    id: RequestId,
    streaming: bool,
    started: Instant,
    stream_bytes: &mut u64,
    max_stream: u64,
    frame: crate::frame::Frame,
) -> Option<Result<ClientEvent, ClientError>> {
    let latency = now.saturating_duration_since(started);
    if !streaming {
        return Some(match frame.ty {
            MessageType::SynapseResponse => match SynapseResponse::decode(&frame.payload) {
                Ok(response) => Ok(ClientEvent::Response {
                    id,
                    response,
                    latency,
                }),
                Err(e) => Err(ClientError::Transport(format!(
                    "Failed to parse SynapseResponse: {e}"
                ))),
            },
            MessageType::StreamChunk => Err(ClientError::Transport(
                "received StreamChunk on non-streaming query; use query_axon_stream for streaming synapses"
                    .into(),
            )),
            other => Err(ClientError::Transport(format!(
                "unexpected response type: {other:?}"
            ))),
        });
    }
    match frame.ty {
        MessageType::StreamChunk => match StreamChunk::decode(&frame.payload) {
            Ok(chunk) => {
                *stream_bytes += chunk.data.len() as u64;
                if *stream_bytes > max_stream {
                    return Some(Err(ClientError::Stream(format!(
                        "streaming response exceeded {max_stream} byte aggregate limit"
                    ))));
                }
                Some(Ok(ClientEvent::Chunk {
                    id,
                    data: chunk.data,
                }))
            }
            Err(e) => Some(Err(ClientError::Stream(format!(
                "Failed to parse StreamChunk: {e}"
            )))),
        },
        MessageType::StreamEnd => Some(match StreamEnd::decode(&frame.payload) {
            Ok(end) if end.success => Ok(ClientEvent::StreamEnd { id, latency }),
            Ok(end) => {
                Err(ClientError::Stream(end.error.unwrap_or_else(|| {
                    "stream ended with failure status".into()
                })))
            }
            Err(e) => Err(ClientError::Stream(format!(
                "Failed to parse StreamEnd: {e}"
            ))),
        }),
        MessageType::SynapseResponse => {
            let detail = SynapseResponse::decode(&frame.payload)
                .ok()
                .and_then(|r| r.error)
                .unwrap_or_else(|| "no detail".into());
            Some(Err(ClientError::Stream(format!(
                "server returned SynapseResponse error on streaming path: {detail}"
            ))))
        }
        other => Some(Err(ClientError::Stream(format!(
            "unexpected message type during streaming: {other:?}"
        )))),
    }
}

impl Client {
    /// Writes `bytes` verbatim on a new bidirectional stream of the live connection to
    /// `addr`, then FIN, and reads whatever comes back as a unary response.
    ///
    /// Exists only so fuzzers and tests can put arbitrary bytes on a connection that is
    /// (or is not) authenticated; a real client never does this. The answer arrives as
    /// [`ClientEvent::Response`] or [`ClientEvent::RequestFailed`] under the returned id.
    #[doc(hidden)]
    pub fn send_raw_stream_for_testing(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        bytes: Bytes,
    ) -> Result<RequestId, ClientError> {
        let ch = self
            .peers
            .get(&addr)
            .and_then(|p| p.conn.filter(|_| p.connected))
            .ok_or_else(|| ClientError::Connect("not connected".into()))?;
        let conn = self
            .core
            .conn_mut(ch)
            .ok_or_else(|| ClientError::Connect("not connected".into()))?;
        let stream = conn
            .streams()
            .open(Dir::Bi)
            .ok_or_else(|| ClientError::Local("no stream credit".into()))?;
        // Written directly rather than through an `OutQueue` (which takes only encoded
        // frames): test inputs are far below a fresh stream's send credit, so all of it is
        // accepted at once; anything that is not is refused rather than sent truncated.
        let mut send = conn.send_stream(stream);
        let mut written = 0;
        while written < bytes.len() {
            match send.write(&bytes[written..]) {
                Ok(n) if n > 0 => written += n,
                _ => break,
            }
        }
        if written < bytes.len() {
            let _ = send.reset(VarInt::from_u32(0));
            return Err(ClientError::Local(format!(
                "only {written} of {} raw bytes fit the stream's send credit",
                bytes.len()
            )));
        }
        let _ = send.finish();
        let out = OutQueue::default();
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.requests.insert(
            id,
            Request {
                addr,
                hotkey: String::new(),
                streaming: false,
                state: ReqState::Open {
                    ch,
                    stream,
                    out,
                    decoder: FrameDecoder::new(self.config.max_frame_payload_bytes),
                    fin: false,
                },
                started: now,
                timeout: None,
                outstanding: 0,
                stream_bytes: 0,
            },
        );
        self.streams.insert((ch, stream), StreamRole::Request(id));
        Ok(id)
    }
}

impl SansIo for Client {
    type Event = ClientEvent;

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        match self.core.handle_datagram(now, datagram) {
            Received::Conn(ch) => self.drive(now, ch),
            // A client accepts no connections.
            Received::Incoming(incoming) => self.core.endpoint.ignore(*incoming),
            Received::Nothing => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for ch in self.core.handle_timeout(now) {
            self.drive(now, ch);
        }
        while let Some((_, deadline)) = self.deadlines.pop_due(now) {
            self.on_deadline(now, deadline);
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.core.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn next_deadline(&mut self) -> Option<(Instant, TimeoutReason)> {
        super::earliest(
            self.core.poll_timeout(),
            self.deadlines.next().map(|(t, _)| t),
        )
    }

    fn set_max_gso_segments(&mut self, n: usize) {
        self.core.set_max_gso_segments(n);
    }
}
