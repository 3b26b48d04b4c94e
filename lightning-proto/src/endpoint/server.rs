//! The miner side: admission, handshakes, request dispatch and responses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionHandle, Dir, EcnCodepoint, Event, Incoming, ReadError, StreamEvent, StreamId,
    Transmit, VarInt,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::budget::{ReadBudget, Reservation, Shortfall};
use super::clock::WallClock;
use super::config::{ConfigError, RetryPolicy, ServerConfig};
use super::core::{ConnPoll, Core, Received};
use super::outq::{Flush, OutQueue};
use super::parking::ParkingLot;
use super::timers::Timers;
use super::{RequestId, TimeoutReason};
use crate::frame::{Frame, FrameDecoder, MessageType, FRAME_HEADER_LEN};
use crate::handshake::{self, HandshakeError, HandshakeRateLimiter, NonceCache};
use crate::identity::Signer;
use crate::idhash::IdMap;
use crate::message::{
    DataMap, EncodeError, EncodedFrame, HandshakeRequest, HandshakeResponse, StreamChunk,
    StreamEnd, SynapsePacket, SynapseResponse, WireMessage,
};
use crate::tls::TlsIdentity;

/// Exact error strings the reference puts in `SynapseResponse.error` (PROTOCOL §6.3).
pub mod wire_errors {
    /// The payload did not decode as a SynapsePacket.
    pub const INVALID_REQUEST_FORMAT: &str = "invalid request format";
    /// The connection has not authenticated.
    pub const AUTHENTICATION_FAILED: &str = "authentication failed";
    /// No handler under that synapse name.
    pub const UNRECOGNIZED_SYNAPSE: &str = "unrecognized synapse type";
    /// The handler failed; its own message is never sent.
    pub const REQUEST_PROCESSING_FAILED: &str = "request processing failed";
    /// The handler did not answer within `handler_timeout`.
    pub const HANDLER_TIMED_OUT: &str = "handler timed out";
    /// The response could not be encoded.
    pub const INTERNAL_SERIALIZATION_ERROR: &str = "internal serialization error";
    /// A streaming handler failed.
    pub const STREAM_PROCESSING_FAILED: &str = "stream processing failed";
    /// Writing a chunk failed.
    pub const STREAM_WRITE_FAILED: &str = "stream write failed";

    /// Longest error text [`Server::refuse`](super::Server::refuse) sends (in bytes);
    /// longer texts are cut at a character boundary, so a handler cannot make us send an
    /// unbounded error.
    pub const MAX_PEER_MESSAGE: usize = 1024;

    /// `message` cut to at most [`MAX_PEER_MESSAGE`] bytes, on a character boundary.
    pub fn truncate(message: &str) -> &str {
        let mut end = message.len().min(MAX_PEER_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        &message[..end]
    }
}

/// Largest frame accepted on a connection that has not authenticated. A handshake request
/// is about 200 bytes; anything else is answered `authentication failed` regardless.
const UNAUTHENTICATED_MAX_FRAME: u32 = 64 * 1024;

/// Connection-wide QUIC receive window until the connection authenticates: with the
/// stream limit below, all an unauthenticated peer can make us buffer. Raised to
/// `transport.receive_window` by a successful handshake.
const UNAUTHENTICATED_RECEIVE_WINDOW: u64 = 256 * 1024;

/// Concurrent bidirectional streams a peer may open before it authenticates (a handshake
/// per validator hotkey needs one each). Raised to `max_concurrent_bidi_streams` by a
/// successful handshake.
const UNAUTHENTICATED_BIDI_STREAMS: u32 = 8;

/// Request bytes all unauthenticated connections together may be receiving at once. Kept
/// apart from validators' budget so that a flood cannot starve their requests.
const UNAUTHENTICATED_READ_TOTAL: u64 = 16 * 1024 * 1024;

/// Application error code of a stream reset because the miner can hold no more requests
/// waiting for budget (`max_waiting_requests`); the validator may try again later.
pub const BUSY_ERROR_CODE: u32 = 0x4c42;

/// Identifies one accepted QUIC connection for the server's lifetime (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a synapse is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynapseKind {
    /// One `SynapseResponse`.
    Unary,
    /// `StreamChunk`s then a `StreamEnd`.
    Streaming,
}

/// A request the application must answer with [`Server::respond`] (unary) or
/// [`Server::send_chunk`] / [`Server::end_stream`] (streaming).
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// Handle for the answer.
    pub id: RequestId,
    /// Connection it arrived on.
    pub conn: ConnId,
    /// The validator hotkey authenticated on that connection (the latest, if several).
    pub validator_hotkey: String,
    /// The validator's address.
    pub remote: SocketAddr,
    /// Handler name.
    pub synapse_type: String,
    /// Request data, undecoded.
    pub data: DataMap,
    /// Whether the synapse is registered as streaming.
    pub kind: SynapseKind,
    /// When the server answers `handler timed out` on its own.
    pub deadline: Instant,
}

/// Why a request ended without the application's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// `handler_timeout` passed; the validator was told `handler timed out`.
    TimedOut,
    /// The validator reset or stopped the stream (it dropped the query).
    PeerCancelled,
    /// The connection closed.
    ConnectionLost,
    /// The validator read none of the response for `send_progress_timeout`.
    PeerStalled,
}

/// Something the server wants the application to know.
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// A validator hotkey authenticated on a connection.
    Authenticated {
        /// The connection.
        conn: ConnId,
        /// The validator.
        validator_hotkey: String,
        /// Its address.
        remote: SocketAddr,
    },
    /// A handshake was refused; the wire carries no reason (as in the reference), this does.
    HandshakeRejected {
        /// Where it came from.
        remote: SocketAddr,
        /// The claimed validator hotkey, when the request decoded.
        validator_hotkey: Option<String>,
        /// Why.
        error: HandshakeError,
    },
    /// A request to handle.
    Request(IncomingRequest),
    /// A request will not be answered by the application any more: stop working on it.
    RequestCancelled {
        /// The request.
        id: RequestId,
        /// Why.
        reason: CancelReason,
    },
    /// A streaming request whose chunk queue was full can take chunks again.
    StreamWritable {
        /// The request.
        id: RequestId,
    },
    /// A connection closed.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
        /// Its address.
        remote: SocketAddr,
        /// QUIC's close reason.
        reason: String,
    },
}

/// Why an answer could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    /// The request already ended (answered, timed out, cancelled).
    UnknownRequest,
    /// The streaming queue holds `streaming_channel_buffer` chunks; wait for
    /// [`ServerEvent::StreamWritable`].
    Full,
    /// A unary answer for a streaming request or the reverse.
    WrongKind,
    /// The chunk is larger than a frame can carry (4 GiB).
    TooLarge,
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownRequest => f.write_str("request is no longer active"),
            Self::Full => f.write_str("stream queue is full"),
            Self::WrongKind => f.write_str("answer kind does not match the synapse kind"),
            Self::TooLarge => f.write_str("chunk exceeds the frame size limit"),
        }
    }
}

impl std::error::Error for AnswerError {}

/// Counters for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connection attempts refused (caps).
    pub refused: u64,
    /// Retry packets sent.
    pub retried: u64,
    /// Initials dropped by the source allow-list.
    pub ignored: u64,
    /// Handshakes accepted.
    pub handshakes_ok: u64,
    /// Handshakes rejected.
    pub handshakes_rejected: u64,
    /// Requests delivered to the application.
    pub requests: u64,
    /// Requests answered by the server itself with an error string.
    pub request_errors: u64,
    /// Connections closed for not authenticating in time.
    pub auth_timeouts: u64,
    /// Streams reset for not delivering a request in time.
    pub read_timeouts: u64,
    /// Idle validators' connections closed to admit a new validator at `max_connections`.
    pub evicted: u64,
    /// Response streams reset because the validator read none of them in time.
    pub send_timeouts: u64,
}

#[derive(Debug)]
struct SConn {
    id: ConnId,
    remote: SocketAddr,
    /// Validator hotkeys authenticated on this connection, latest last.
    hotkeys: Vec<String>,
    /// Last time any request bytes arrived on this connection.
    last_progress: Instant,
    /// Request bytes received since `rate_window_start`.
    rate_window_bytes: u64,
    /// Start of the current window over which the request rate is measured.
    rate_window_start: Instant,
    /// End of the last window in which the connection delivered request bytes at
    /// `min_request_rate` or faster.
    last_rate_ok: Instant,
    /// The peer has proven its address (Retry token or completed QUIC handshake).
    validated: bool,
    /// Request bytes reserved by this connection's streams (see `budget`).
    reserved: u64,
    /// The same, from the small-frame reserve.
    reserved_small: u64,
    /// Waiting streams for which the connection's receive window was widened.
    window_extensions: u64,
    /// Request streams open on this connection (in any phase).
    open_streams: u32,
    /// Response bytes queued on its streams that quinn has not taken yet.
    queued_out: u64,
    /// Last time quinn took response bytes from any of its streams.
    last_send_progress: Instant,
    /// Streaming responses told `Full` because of the connection's queued bytes: each
    /// gets `StreamWritable` once they fall below half the cap.
    writable_waiters: Vec<StreamId>,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the first frame.
    Reading(FrameDecoder),
    /// The application owns the request.
    Handling { id: RequestId, kind: SynapseKind },
    /// Nothing more to do but drain `out`.
    Answered,
}

#[derive(Debug)]
struct SStream {
    phase: Phase,
    /// When the stream started waiting for the peer's bytes (opened, or admitted after
    /// waiting for budget); the read deadline counts from here or from the connection's
    /// last window at the minimum rate, whichever is later.
    last_progress: Instant,
    out: OutQueue,
    /// The application asked for more chunk room while the queue was full.
    notify_writable: bool,
    /// Budget held for the frame being read; given back when reading ends.
    reservation: Option<Reservation>,
    /// Its frame's header is in but its length does not fit the budget yet, so the stream
    /// is not read until some budget is released.
    parked: bool,
    /// While it waits, its connection's receive window is one stream window wider.
    window_extended: bool,
    /// Last time quinn took bytes of its response (or when it was queued).
    last_send_progress: Instant,
    /// A send-progress deadline is scheduled for it.
    send_deadline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Auth(ConnectionHandle, ConnId),
    Read(ConnectionHandle, StreamId),
    Send(ConnectionHandle, StreamId),
    Handler(RequestId),
    Cleanup,
}

/// The miner-side endpoint: a sans-IO state machine.
///
/// See the [crate documentation](crate) for the drive loop.
pub struct Server {
    core: Core,
    config: ServerConfig,
    miner_hotkey: String,
    signer: Arc<dyn Signer>,
    fingerprint: String,
    /// Test hook: a fingerprint to claim in responses instead of the real one.
    advertised_fingerprint: Option<String>,
    synapses: HashMap<String, SynapseKind>,
    conns: IdMap<ConnectionHandle, SConn>,
    by_hotkey: HashMap<String, ConnectionHandle>,
    nonces: NonceCache,
    rate: HandshakeRateLimiter,
    permits: HashSet<String>,
    allowlist: Option<HashSet<IpAddr>>,
    streams: HashMap<(ConnectionHandle, StreamId), SStream>,
    requests: IdMap<RequestId, (ConnectionHandle, StreamId)>,
    deadlines: Timers<Deadline>,
    events: VecDeque<ServerEvent>,
    next_conn: u64,
    next_request: u64,
    stats: ServerStats,
    scratch: Vec<u8>,
    budget: ReadBudget,
    /// Streams waiting for budget.
    parking: ParkingLot,
    /// Connections that released budget since waiting streams were last tried.
    released: Vec<ConnectionHandle>,
    /// Response bytes queued over all connections (see `SConn::queued_out`).
    queued_out_total: u64,
    /// The time of the latest input: what internal steps that take no `now` use.
    now: Instant,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("miner_hotkey", &self.miner_hotkey)
            .field("connections", &self.conns.len())
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Creates a server endpoint.
    ///
    /// * `miner_hotkey` is the SS58 hotkey answered in handshakes; if the signer knows its
    ///   public key, the two must match (the reference never checks, §13.7).
    /// * `identity`: the TLS certificate; `None` generates a fresh self-signed one from `seed`.
    /// * `seed` drives every random choice the core makes.
    /// * `now` and `unix_ms` anchor the wall clock for handshake timestamps.
    pub fn new(
        config: ServerConfig,
        miner_hotkey: impl Into<String>,
        signer: Arc<dyn Signer>,
        identity: Option<TlsIdentity>,
        seed: [u8; 32],
        now: Instant,
        unix_ms: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let miner_hotkey = miner_hotkey.into();
        super::check_signer_matches(&miner_hotkey, signer.as_ref())?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let identity = identity.unwrap_or_else(|| {
            let mut key_seed = [0u8; 32];
            rng.fill_bytes(&mut key_seed);
            TlsIdentity::self_signed(key_seed)
        });
        let fingerprint = handshake::cert_fingerprint(identity.cert_der());
        let crypto =
            crate::tls::server_crypto(&identity).map_err(|e| ConfigError(format!("TLS: {e}")))?;
        let mut token_master = [0u8; 64];
        rng.fill_bytes(&mut token_master);
        let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&token_master);
        let clock = WallClock::new(now, unix_ms);
        let mut quic = quinn_proto::ServerConfig::new(crypto, Arc::new(token_key));
        // quinn-proto's NEW_TOKEN default follows its `bloom` feature, which any crate in the
        // build can switch on (btlightning does, in the workspace); pin the feature-less
        // behaviour so the endpoint, and a simulator seed, behave the same in every build.
        let mut tokens = quinn_proto::ValidationTokenConfig::default();
        tokens.sent(0).log(Arc::new(quinn_proto::NoneTokenLog));
        quic.validation_token_config(tokens);
        // Every connection starts with the small unauthenticated limits; a successful
        // handshake raises them (`raise_limits`).
        quic.transport_config(
            config.transport.build_with(
                config
                    .max_concurrent_bidi_streams
                    .min(UNAUTHENTICATED_BIDI_STREAMS),
                config
                    .transport
                    .receive_window
                    .min(UNAUTHENTICATED_RECEIVE_WINDOW),
            ),
        );
        quic.time_source(clock.time_source());
        // Authorization is per connection, so migration no longer breaks it (§13.2); but
        // a validator that moves keeps its session, which is what it expects.
        quic.migration(true);
        let core = Core::with_reset_secret(
            &mut rng,
            Some(Arc::new(quic)),
            clock,
            config.transport.mtu_discovery,
            config.stateless_reset_secret.as_ref().map(|s| &s.0),
        );
        let mut deadlines = Timers::default();
        deadlines.schedule(now + config.nonce_cleanup_interval, Deadline::Cleanup);
        Ok(Self {
            budget: ReadBudget::new(
                config.max_request_bytes_per_connection,
                config.max_request_bytes_total,
                u64::from(UNAUTHENTICATED_MAX_FRAME),
                UNAUTHENTICATED_READ_TOTAL,
                config.small_request_reserve_bytes,
            ),
            parking: ParkingLot::new(
                config.max_waiting_requests,
                config.max_waiting_requests_per_connection,
            ),
            released: Vec::new(),
            queued_out_total: 0,
            now,
            nonces: NonceCache::new(config.max_nonce_entries, config.max_signature_age_secs),
            rate: HandshakeRateLimiter::new(
                config.max_handshake_attempts_per_minute as usize,
                config.max_tracked_rate_ips,
            ),
            core,
            config,
            miner_hotkey,
            signer,
            fingerprint,
            advertised_fingerprint: None,
            synapses: HashMap::new(),
            conns: IdMap::default(),
            by_hotkey: HashMap::new(),
            permits: HashSet::new(),
            allowlist: None,
            streams: HashMap::new(),
            requests: IdMap::default(),
            deadlines,
            events: VecDeque::new(),
            next_conn: 0,
            next_request: 0,
            stats: ServerStats::default(),
            scratch: Vec::new(),
        })
    }

    /// The miner hotkey this server answers as.
    pub fn miner_hotkey(&self) -> &str {
        &self.miner_hotkey
    }

    /// Base64 BLAKE2b-256 fingerprint of the TLS certificate (PROTOCOL §5.3).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// How many datagrams one transmit may carry (GSO). Defaults to 1.
    pub fn set_max_gso_segments(&mut self, n: usize) {
        self.core.set_max_gso_segments(n);
    }

    /// Registers (or re-registers) a synapse name.
    pub fn register_synapse(&mut self, name: impl Into<String>, kind: SynapseKind) {
        self.synapses.insert(name.into(), kind);
    }

    /// Removes a synapse name; later requests get `unrecognized synapse type`.
    pub fn unregister_synapse(&mut self, name: &str) {
        self.synapses.remove(name);
    }

    /// Replaces the set of validator hotkeys allowed to authenticate when
    /// `require_validator_permit` is on (exact string match, PROTOCOL §5.7 step 7).
    pub fn set_permitted_validators(&mut self, permitted: HashSet<String>) {
        self.permits = permitted;
    }

    /// `Some(ips)`: only Initials from these IPs are answered (others are dropped silently).
    /// `None`: no source filtering.
    pub fn set_source_allowlist(&mut self, allowlist: Option<HashSet<IpAddr>>) {
        self.allowlist = allowlist;
    }

    /// Makes accepted handshake responses claim `fingerprint` instead of the certificate's.
    ///
    /// Exists only so tests can show that clients reject a fingerprint that does not belong
    /// to the TLS session (what a relaying attacker would produce).
    #[doc(hidden)]
    pub fn override_advertised_fingerprint_for_testing(&mut self, fingerprint: &str) {
        self.advertised_fingerprint = Some(fingerprint.to_string());
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Feeds one received UDP datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        self.now = now;
        match self.core.handle_datagram(now, remote, local_ip, ecn, data) {
            Received::Conn(ch) => self.drive(now, ch),
            Received::Incoming(incoming) => self.admit(now, *incoming),
            Received::Nothing => {}
        }
        self.resume_parked(now);
    }

    /// Runs everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        for ch in self.core.handle_timeout(now) {
            self.drive(now, ch);
        }
        while let Some((_, deadline)) = self.deadlines.pop_due(now) {
            self.on_deadline(now, deadline);
        }
        self.resume_parked(now);
    }

    /// Answers unary request `id`. `Err` sends `request processing failed` (the handler's
    /// message stays local, as in the reference; see [`Self::refuse`] for one the peer
    /// should read).
    pub fn respond<E>(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<DataMap, E>,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let (ch, stream) = self.handling(id, SynapseKind::Unary)?;
        let response = match result {
            Ok(data) => SynapseResponse {
                success: true,
                data,
                timestamp: self.core.clock.unix_secs(now),
                error: None,
            },
            Err(_) => error_response(
                self.core.clock.unix_secs(now),
                wire_errors::REQUEST_PROCESSING_FAILED,
            ),
        };
        self.requests.remove(&id);
        self.answer(ch, stream, response.encode());
        Ok(())
    }

    /// Refuses request `id` (unary or streaming) with `message` in `error`, sent as is (cut
    /// at [`wire_errors::MAX_PEER_MESSAGE`] bytes): a refusal the handler chose to explain,
    /// such as a blacklist's reason. A unary request gets `success: false` with empty data;
    /// a stream ends with `success: false`.
    pub fn refuse(
        &mut self,
        now: Instant,
        id: RequestId,
        message: &str,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let message = wire_errors::truncate(message);
        let (ch, stream, frame) = match self.handling(id, SynapseKind::Unary) {
            Ok((ch, stream)) => {
                let response = error_response(self.core.clock.unix_secs(now), message);
                (ch, stream, response.encode())
            }
            Err(AnswerError::WrongKind) => {
                let (ch, stream) = self.handling(id, SynapseKind::Streaming)?;
                let end = StreamEnd {
                    success: false,
                    error: Some(message.into()),
                };
                (ch, stream, end.encode())
            }
            Err(e) => return Err(e),
        };
        self.requests.remove(&id);
        self.answer(ch, stream, frame);
        Ok(())
    }

    /// Queues one chunk of streaming request `id`.
    ///
    /// The queue is full (wait for [`ServerEvent::StreamWritable`]) at
    /// `streaming_channel_buffer` chunks, at `max_queued_chunk_bytes` (a chunk of any size
    /// is taken into an empty queue), or while the connection's queued responses are at
    /// `max_queued_response_bytes_per_connection`.
    pub fn send_chunk(
        &mut self,
        now: Instant,
        id: RequestId,
        data: Bytes,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let (ch, stream) = self.handling(id, SynapseKind::Streaming)?;
        let conn_queued = self.conns.get(&ch).map_or(0, |c| c.queued_out);
        let Some(s) = self.streams.get_mut(&(ch, stream)) else {
            return Err(AnswerError::UnknownRequest);
        };
        if chunk_queue_full(&self.config, &s.out, conn_queued) {
            s.notify_writable = true;
            if s.out.frames() == 0 {
                // Only the connection's backlog holds it: no flush of its own will come.
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.writable_waiters.push(stream);
                }
            }
            return Err(AnswerError::Full);
        }
        let before = s.out.bytes();
        match (StreamChunk { data }).encode() {
            Ok(frame) => s.out.push(frame),
            Err(_) => return Err(AnswerError::TooLarge),
        }
        let after = s.out.bytes();
        self.account_queued(ch, before, after);
        self.flush(ch, stream);
        Ok(())
    }

    /// Ends streaming request `id`: `Ok` sends a successful `StreamEnd`, `Err` sends
    /// `stream processing failed`.
    pub fn end_stream<E>(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<(), E>,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let (ch, stream) = self.handling(id, SynapseKind::Streaming)?;
        let end = match result {
            Ok(()) => StreamEnd {
                success: true,
                error: None,
            },
            Err(_) => StreamEnd {
                success: false,
                error: Some(wire_errors::STREAM_PROCESSING_FAILED.into()),
            },
        };
        self.requests.remove(&id);
        self.answer(ch, stream, end.encode());
        Ok(())
    }

    /// Closes every connection with reason `server_shutdown`.
    pub fn close(&mut self, now: Instant) {
        let chs: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for ch in chs {
            if let Some(conn) = self.core.conns.get_mut(&ch) {
                conn.close(
                    now,
                    VarInt::from_u32(0),
                    Bytes::from_static(b"server_shutdown"),
                );
                self.core.touch(ch);
            }
        }
    }

    /// Closes connections whose validators sent no request for `max_idle` (reason `cleanup`).
    pub fn close_connection(&mut self, now: Instant, conn: ConnId, reason: &str) {
        if let Some(ch) = self.handle_of(conn) {
            if let Some(c) = self.core.conns.get_mut(&ch) {
                c.close(
                    now,
                    VarInt::from_u32(0),
                    Bytes::copy_from_slice(reason.as_bytes()),
                );
                self.core.touch(ch);
            }
        }
    }

    // ----- outputs ------------------------------------------------------------------------

    /// Next datagram to send, written into `buf` (cleared first). Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.core.poll_transmit(now, buf)
    }

    /// When `handle_timeout` must run next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.next_deadline().map(|(at, _)| at)
    }

    /// Like [`poll_timeout`](Self::poll_timeout), with what the deadline is for.
    pub fn next_deadline(&mut self) -> Option<(Instant, TimeoutReason)> {
        super::earliest(
            self.core.poll_timeout(),
            self.deadlines.next().map(|(t, _)| t),
        )
    }

    /// Next application event. Call until `None` after every input.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    // ----- inspection ---------------------------------------------------------------------

    /// Counters since start.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Open QUIC connections (authenticated or not).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Connections with no authenticated validator yet.
    pub fn unauthenticated_count(&self) -> usize {
        self.conns.values().filter(|c| c.hotkeys.is_empty()).count()
    }

    /// Authenticated validator hotkeys and their connections.
    pub fn validators(&self) -> impl Iterator<Item = (&str, ConnId)> + '_ {
        self.by_hotkey
            .iter()
            .filter_map(|(hk, ch)| self.conns.get(ch).map(|c| (hk.as_str(), c.id)))
    }

    /// Nonces held by the replay cache.
    pub fn active_nonce_count(&self) -> usize {
        self.nonces.len()
    }

    /// Requests the application has not answered yet.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Request bytes reserved by frames being received now (see
    /// [`ServerConfig::max_request_bytes_total`](super::ServerConfig)).
    pub fn reserved_request_bytes(&self) -> u64 {
        self.budget.in_use()
    }

    /// Request streams waiting, unread, for request-byte budget.
    pub fn parked_streams(&self) -> usize {
        self.parking.len()
    }

    /// Bytes queued for sending but not yet accepted by QUIC, over all streams.
    pub fn queued_bytes(&self) -> usize {
        self.streams.values().map(|s| s.out.bytes()).sum()
    }

    // ----- internals ----------------------------------------------------------------------

    fn handle_of(&self, conn: ConnId) -> Option<ConnectionHandle> {
        self.conns
            .iter()
            .find(|(_, c)| c.id == conn)
            .map(|(ch, _)| *ch)
    }

    fn admit(&mut self, now: Instant, incoming: Incoming) {
        let remote = incoming.remote_address();
        if let Some(allowed) = &self.allowlist {
            if !allowed.contains(&remote.ip()) {
                self.stats.ignored += 1;
                self.core.endpoint.ignore(incoming);
                return;
            }
        }
        let (unauthenticated, from_source) = self.unauthenticated_counts(remote.ip());
        let full = self.by_hotkey.len() >= self.config.max_connections
            && !self.conns.values().any(|c| c.remote == remote)
            && self.eviction_candidate(now, None).is_none();
        let validated = incoming.remote_address_validated();
        let source_full = from_source >= self.config.max_unauthenticated_per_ip;
        if source_full && !validated && incoming.may_retry() {
            // Make the source prove its address before it is counted against its share:
            // Initials with a spoofed address never come back.
            self.send_retry(incoming);
            return;
        }
        if unauthenticated >= self.config.max_unauthenticated_connections || full || source_full {
            self.stats.refused += 1;
            self.scratch.clear();
            let t = self.core.endpoint.refuse(incoming, &mut self.scratch);
            let buf = std::mem::take(&mut self.scratch);
            self.core.push_response(t, &buf);
            self.scratch = buf;
            return;
        }
        let want_retry = match self.config.retry {
            RetryPolicy::Always => true,
            RetryPolicy::Never => false,
            RetryPolicy::WhenUnauthenticatedAtLeast(n) => unauthenticated >= n,
        };
        if want_retry && !validated && incoming.may_retry() {
            self.send_retry(incoming);
            return;
        }
        self.scratch.clear();
        match self
            .core
            .endpoint
            .accept(incoming, now, &mut self.scratch, None)
        {
            Ok((ch, conn)) => {
                self.next_conn += 1;
                let id = ConnId(self.next_conn);
                self.stats.accepted += 1;
                self.conns.insert(
                    ch,
                    SConn {
                        id,
                        remote,
                        hotkeys: Vec::new(),
                        last_progress: now,
                        rate_window_bytes: 0,
                        rate_window_start: now,
                        last_rate_ok: now,
                        validated,
                        reserved: 0,
                        reserved_small: 0,
                        window_extensions: 0,
                        open_streams: 0,
                        queued_out: 0,
                        last_send_progress: now,
                        writable_waiters: Vec::new(),
                    },
                );
                self.core.insert(ch, conn);
                self.deadlines
                    .schedule(now + self.config.handshake_timeout, Deadline::Auth(ch, id));
                self.drive(now, ch);
            }
            Err(e) => {
                if let Some(t) = e.response {
                    let buf = std::mem::take(&mut self.scratch);
                    self.core.push_response(t, &buf);
                    self.scratch = buf;
                }
            }
        }
    }

    fn send_retry(&mut self, incoming: Incoming) {
        self.scratch.clear();
        match self.core.endpoint.retry(incoming, &mut self.scratch) {
            Ok(t) => {
                self.stats.retried += 1;
                let buf = std::mem::take(&mut self.scratch);
                self.core.push_response(t, &buf);
                self.scratch = buf;
            }
            Err(e) => self.core.endpoint.ignore(e.into_incoming()),
        }
    }

    /// The authenticated connection to close so that a new validator can get in when
    /// `max_connections` hotkeys are held, if any may go (the policy of
    /// [`ServerConfig::evict_idle_after`]): only connections with no request stream open
    /// and no request bytes for `evict_idle_after`; among them, hotkeys without a permit
    /// before permitted ones, then connections from the source holding the most, then the
    /// one idle longest. `except` is the connection asking.
    fn eviction_candidate(
        &self,
        now: Instant,
        except: Option<ConnectionHandle>,
    ) -> Option<ConnectionHandle> {
        let idle_after = self.config.evict_idle_after?;
        let idle = |c: &SConn| {
            !c.hotkeys.is_empty()
                && c.open_streams == 0
                && now.saturating_duration_since(c.last_progress) >= idle_after
        };
        let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
        for c in self.conns.values().filter(|c| !c.hotkeys.is_empty()) {
            *per_source.entry(source_of(c.remote.ip())).or_default() += 1;
        }
        self.conns
            .iter()
            .filter(|(ch, c)| Some(**ch) != except && idle(c))
            .min_by_key(|(_, c)| {
                let permitted = c.hotkeys.iter().any(|h| self.permits.contains(h));
                let share = per_source
                    .get(&source_of(c.remote.ip()))
                    .copied()
                    .unwrap_or(0);
                (permitted, std::cmp::Reverse(share), c.last_progress)
            })
            .map(|(ch, _)| *ch)
    }

    /// Closes an idle connection to make room (reason `evicted`); its hotkeys stop
    /// counting at once.
    fn evict(&mut self, now: Instant, ch: ConnectionHandle) {
        if let Some(c) = self.conns.get(&ch) {
            tracing::debug!(remote = %c.remote, hotkeys = ?c.hotkeys, "evicting an idle validator");
            for hk in &c.hotkeys {
                if self.by_hotkey.get(hk) == Some(&ch) {
                    self.by_hotkey.remove(hk);
                }
            }
        }
        self.stats.evicted += 1;
        self.close_quic(now, ch, b"evicted");
    }

    /// In one pass over the connections: all unauthenticated ones, and those of them with
    /// a proven address from `ip`'s source (the address itself for IPv4, its /64 for IPv6).
    fn unauthenticated_counts(&self, ip: IpAddr) -> (usize, usize) {
        let source = source_of(ip);
        let mut counts = (0, 0);
        for c in self.conns.values().filter(|c| c.hotkeys.is_empty()) {
            counts.0 += 1;
            if c.validated && source_of(c.remote.ip()) == source {
                counts.1 += 1;
            }
        }
        counts
    }

    /// Lifts the unauthenticated limits of a connection that has just authenticated.
    fn raise_limits(&mut self, ch: ConnectionHandle) {
        if let Some(conn) = self.core.conns.get_mut(&ch) {
            conn.set_max_concurrent_streams(
                Dir::Bi,
                VarInt::from_u32(self.config.max_concurrent_bidi_streams),
            );
        }
        self.apply_window(ch);
    }

    /// Sets an authenticated connection's receive window: the configured one, plus one
    /// stream window per stream waiting for budget.
    ///
    /// A waiting stream is not read, so QUIC holds up to a stream window of its bytes,
    /// and unread bytes keep using the connection's window. Without the extra room,
    /// waiting streams could fill the whole window and the streams that hold budget could
    /// never receive the rest of their frames: every large request would stall until the
    /// read timeout. With it, the streams being read always have the configured window.
    /// quinn shrinks a window by holding back credit the peer has not used yet, so the
    /// room given to a stream is taken back as its own bytes are read.
    fn apply_window(&mut self, ch: ConnectionHandle) {
        let Some(sconn) = self.conns.get(&ch) else {
            return;
        };
        let window = self.config.transport.receive_window.saturating_add(
            sconn
                .window_extensions
                .saturating_mul(u64::from(self.config.transport.stream_receive_window)),
        );
        if let Some(conn) = self.core.conns.get_mut(&ch) {
            conn.set_receive_window(VarInt::from_u64(window).unwrap_or(VarInt::MAX));
            self.core.touch(ch);
        }
    }

    /// Removes a stream, giving back any budget or waiting place it held.
    fn remove_stream(&mut self, ch: ConnectionHandle, stream: StreamId) -> Option<SStream> {
        let mut s = self.streams.remove(&(ch, stream))?;
        if let Some(c) = self.conns.get_mut(&ch) {
            c.open_streams = c.open_streams.saturating_sub(1);
        }
        self.account_queued(ch, s.out.bytes(), 0);
        if let Some(r) = s.reservation.take() {
            let conn = self
                .conns
                .get_mut(&ch)
                .map(|c| (&mut c.reserved, &mut c.reserved_small));
            self.budget.release(conn, r);
            self.released.push(ch);
        }
        if std::mem::take(&mut s.parked) {
            self.parking.remove(ch, stream);
        }
        if std::mem::take(&mut s.window_extended) {
            self.narrow_window(ch);
        }
        Some(s)
    }

    /// Records a change of a stream's queued response bytes from `before` to `after`. A
    /// drop may let waiting requests in (`max_queued_response_bytes_*`).
    fn account_queued(&mut self, ch: ConnectionHandle, before: usize, after: usize) {
        let (before, after) = (before as u64, after as u64);
        if after == before {
            return;
        }
        self.queued_out_total = (self.queued_out_total + after).saturating_sub(before);
        let cap = self.config.max_queued_response_bytes_per_connection;
        let mut waiters = Vec::new();
        if let Some(c) = self.conns.get_mut(&ch) {
            c.queued_out = (c.queued_out + after).saturating_sub(before);
            // Waiters are woken together once the backlog is half drained, not at every
            // byte below the cap: one chunk refills it, and waking every waiter each time
            // (over a hundred on a connection that reads slowly) costs the endpoint task
            // more than the bytes that moved.
            if c.queued_out < cap / 2 {
                waiters = std::mem::take(&mut c.writable_waiters);
            }
        }
        for stream in waiters {
            if let Some(s) = self.streams.get_mut(&(ch, stream)) {
                if let (true, Phase::Handling { id, .. }) =
                    (std::mem::take(&mut s.notify_writable), &s.phase)
                {
                    self.events
                        .push_back(ServerEvent::StreamWritable { id: *id });
                }
            }
        }
        if after < before {
            self.released.push(ch);
        }
    }

    /// Whether queued responses keep `ch` from starting another request frame now.
    fn response_backlog(&self, ch: ConnectionHandle) -> Option<Shortfall> {
        let conn = self.conns.get(&ch).map_or(0, |c| c.queued_out);
        answer_backlog(&self.config, conn, self.queued_out_total)
    }

    /// A response stream's send-progress deadline: when quinn took none of its bytes,
    /// nor any of its connection's, for `send_progress_timeout`, the validator is not
    /// reading (a congested path still moves the connection), so the stream is reset
    /// (its request cancelled) and the connection closed.
    fn check_send_progress(&mut self, now: Instant, ch: ConnectionHandle, stream: StreamId) {
        let timeout = self.config.send_progress_timeout;
        let conn_progress = self.conns.get(&ch).map(|c| c.last_send_progress);
        let Some(s) = self.streams.get_mut(&(ch, stream)) else {
            return;
        };
        s.send_deadline = false;
        if matches!(s.phase, Phase::Reading(_)) {
            return;
        }
        let last = conn_progress.map_or(s.last_send_progress, |c| c.max(s.last_send_progress));
        let expires = last + timeout;
        if expires > now {
            s.send_deadline = true;
            self.deadlines.schedule(expires, Deadline::Send(ch, stream));
            return;
        }
        self.stats.send_timeouts += 1;
        let removed = self.abandon_stream(ch, stream);
        self.cancel_request_of(removed, CancelReason::PeerStalled);
        let stalled = self
            .conns
            .get(&ch)
            .is_some_and(|c| c.last_send_progress + timeout <= now);
        if stalled {
            self.close_quic(now, ch, b"no_read_progress");
        }
    }

    /// A stream that was taken out of the tables while its request was with the
    /// application: the application is told to stop working on it.
    fn cancel_request_of(&mut self, removed: Option<SStream>, reason: CancelReason) {
        if let Some(SStream {
            phase: Phase::Handling { id, .. },
            ..
        }) = removed
        {
            if self.requests.remove(&id).is_some() {
                self.events
                    .push_back(ServerEvent::RequestCancelled { id, reason });
            }
        }
    }

    /// Takes back the window room of one stream that no longer waits.
    fn narrow_window(&mut self, ch: ConnectionHandle) {
        if let Some(c) = self.conns.get_mut(&ch) {
            c.window_extensions = c.window_extensions.saturating_sub(1);
            self.apply_window(ch);
        }
    }

    /// Removes a stream that ends without its answer having been delivered (the peer reset
    /// or stopped it, it stalled, or its send side closed): both halves are closed in
    /// quinn too, because quinn returns a stream's credit to the peer only once both halves
    /// are done, and an abandoned stream would otherwise hold one of the peer's
    /// `max_concurrent_bidi_streams` slots until the connection closes.
    fn abandon_stream(&mut self, ch: ConnectionHandle, stream: StreamId) -> Option<SStream> {
        let removed = self.remove_stream(ch, stream);
        if let Some(conn) = self.core.conns.get_mut(&ch) {
            // Either half may be closed already (stopped after the first frame, reset by
            // the peer, finished): quinn then answers `ClosedStream`, which is fine.
            let _ = conn.recv_stream(stream).stop(VarInt::from_u32(0));
            let _ = conn.send_stream(stream).reset(VarInt::from_u32(0));
            self.core.touch(ch);
        }
        removed
    }

    /// Admits waiting streams after budget was released: first the connections waiting
    /// for the pool's total, in order, then those that released (whose own heads may have
    /// waited for their connection's share). Each try admits a stream or ends its queue's
    /// turn, so the cost is O(1) per admitted stream.
    fn resume_parked(&mut self, now: Instant) {
        while !self.released.is_empty() {
            let released = std::mem::take(&mut self.released);
            while let Some(ch) = self.parking.pop_global() {
                if self.admit_waiting(now, ch) == Some(Shortfall::Total) {
                    self.parking.requeue_front(ch);
                    break;
                }
            }
            for ch in released {
                if self.admit_waiting(now, ch) == Some(Shortfall::Total) {
                    self.parking.wait_for_total(ch);
                }
            }
        }
    }

    /// Admits `ch`'s waiting streams in order while they fit; the limit that stopped it.
    fn admit_waiting(&mut self, now: Instant, ch: ConnectionHandle) -> Option<Shortfall> {
        while let Some(stream) = self.parking.head(ch) {
            let Some(authenticated) = self.conns.get(&ch).map(|c| !c.hotkeys.is_empty()) else {
                self.parking.remove_conn(ch);
                return None;
            };
            let declared = match self.streams.get(&(ch, stream)).map(|s| &s.phase) {
                Some(Phase::Reading(decoder)) => decoder.declared_len(),
                _ => None,
            };
            let Some(len) = declared else {
                // Gone or no longer reading: nothing to admit.
                self.parking.pop_head(ch);
                if let Some(s) = self.streams.get_mut(&(ch, stream)) {
                    s.parked = false;
                }
                continue;
            };
            if let Some(shortfall) = self.response_backlog(ch) {
                return Some(shortfall);
            }
            let bytes = u64::from(len) + FRAME_HEADER_LEN as u64;
            let sconn = self.conns.get_mut(&ch)?;
            let reservation = match self.budget.try_reserve(
                &mut sconn.reserved,
                &mut sconn.reserved_small,
                authenticated,
                bytes,
            ) {
                Ok(r) => r,
                Err(shortfall) => return Some(shortfall),
            };
            self.parking.pop_head(ch);
            let s = self.streams.get_mut(&(ch, stream))?;
            s.reservation = Some(reservation);
            s.parked = false;
            s.last_progress = now;
            if std::mem::take(&mut s.window_extended) {
                self.narrow_window(ch);
            }
            self.read(now, ch, stream);
        }
        None
    }

    /// Makes a stream whose frame does not fit the budget now wait, unread; refuses it
    /// with [`BUSY_ERROR_CODE`] when `max_waiting_requests` streams already wait, or
    /// `max_waiting_requests_per_connection` of its connection's.
    fn park(&mut self, ch: ConnectionHandle, stream: StreamId, shortfall: Shortfall) {
        if self
            .parking
            .park(ch, stream, shortfall == Shortfall::Total)
            .is_err()
        {
            tracing::debug!(?stream, "too many requests waiting for budget: refused");
            self.remove_stream(ch, stream);
            if let Some(conn) = self.core.conns.get_mut(&ch) {
                let _ = conn
                    .recv_stream(stream)
                    .stop(VarInt::from_u32(BUSY_ERROR_CODE));
                let _ = conn
                    .send_stream(stream)
                    .reset(VarInt::from_u32(BUSY_ERROR_CODE));
                self.core.touch(ch);
            }
            return;
        }
        let authenticated = self.conns.get(&ch).is_some_and(|c| !c.hotkeys.is_empty());
        if let Some(s) = self.streams.get_mut(&(ch, stream)) {
            s.parked = true;
            // Unauthenticated frames are small and their connections' windows stay small.
            s.window_extended = authenticated;
        }
        if authenticated {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.window_extensions += 1;
            }
            self.apply_window(ch);
        }
    }

    fn drive(&mut self, now: Instant, ch: ConnectionHandle) {
        loop {
            match self.core.poll_conn(ch) {
                ConnPoll::Event(ev) => self.on_conn_event(now, ch, ev),
                ConnPoll::Idle => break,
                ConnPoll::Drained => {
                    self.on_conn_closed(ch, "drained".into());
                    break;
                }
            }
        }
        self.core.touch(ch);
    }

    fn on_conn_event(&mut self, now: Instant, ch: ConnectionHandle, ev: Event) {
        match ev {
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                // Before authentication only a handshake is useful; bound what an
                // unauthenticated peer can make us buffer per stream.
                let authenticated = self.conns.get(&ch).is_some_and(|c| !c.hotkeys.is_empty());
                let max = if authenticated {
                    self.config.max_frame_payload_bytes
                } else {
                    self.config
                        .max_frame_payload_bytes
                        .min(UNAUTHENTICATED_MAX_FRAME)
                };
                let mut opened = Vec::new();
                if let Some(conn) = self.core.conns.get_mut(&ch) {
                    while let Some(stream) = conn.streams().accept(Dir::Bi) {
                        opened.push(stream);
                    }
                }
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.open_streams += opened.len() as u32;
                }
                for stream in opened {
                    self.streams.insert(
                        (ch, stream),
                        SStream {
                            phase: Phase::Reading(FrameDecoder::new(max)),
                            last_progress: now,
                            out: OutQueue::default(),
                            notify_writable: false,
                            reservation: None,
                            parked: false,
                            window_extended: false,
                            last_send_progress: now,
                            send_deadline: false,
                        },
                    );
                    self.deadlines.schedule(
                        now + self.config.request_read_timeout,
                        Deadline::Read(ch, stream),
                    );
                    self.read(now, ch, stream);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => self.read(now, ch, id),
            Event::Stream(StreamEvent::Writable { id }) => self.flush(ch, id),
            Event::Stream(StreamEvent::Stopped { id, .. }) => {
                // The validator dropped the query (or finished reading): stop work on it.
                let removed = self.abandon_stream(ch, id);
                self.cancel_request_of(removed, CancelReason::PeerCancelled);
            }
            Event::Connected => self.on_connected(now, ch),
            Event::ConnectionLost { reason } => self.on_conn_closed(ch, reason.to_string()),
            _ => {}
        }
    }

    /// The QUIC handshake completed, which proves the peer's address: from now on the
    /// connection counts against its source's share of unauthenticated slots.
    fn on_connected(&mut self, now: Instant, ch: ConnectionHandle) {
        let Some(conn) = self.conns.get_mut(&ch) else {
            return;
        };
        let was_validated = std::mem::replace(&mut conn.validated, true);
        if was_validated || !conn.hotkeys.is_empty() {
            return;
        }
        let ip = conn.remote.ip();
        if self.unauthenticated_counts(ip).1 > self.config.max_unauthenticated_per_ip {
            self.stats.refused += 1;
            self.close_quic(now, ch, b"too many unauthenticated connections");
        }
    }

    /// Closes a QUIC connection with an application close carrying `reason`.
    fn close_quic(&mut self, now: Instant, ch: ConnectionHandle, reason: &'static [u8]) {
        if let Some(conn) = self.core.conns.get_mut(&ch) {
            conn.close(now, VarInt::from_u32(0), Bytes::from_static(reason));
            self.core.touch(ch);
        }
    }

    fn on_conn_closed(&mut self, ch: ConnectionHandle, reason: String) {
        let Some(conn) = self.conns.remove(&ch) else {
            return;
        };
        self.parking.remove_conn(ch);
        for hk in &conn.hotkeys {
            if self.by_hotkey.get(hk) == Some(&ch) {
                self.by_hotkey.remove(hk);
            }
        }
        let keys: Vec<(ConnectionHandle, StreamId)> = self
            .streams
            .keys()
            .filter(|(c, _)| *c == ch)
            .copied()
            .collect();
        for (ch, stream) in keys {
            let removed = self.remove_stream(ch, stream);
            self.cancel_request_of(removed, CancelReason::ConnectionLost);
        }
        self.events.push_back(ServerEvent::ConnectionClosed {
            conn: conn.id,
            remote: conn.remote,
            reason,
        });
    }

    fn read(&mut self, now: Instant, ch: ConnectionHandle, stream: StreamId) {
        let Some(conn) = self.core.conns.get_mut(&ch) else {
            return;
        };
        let Some(sconn) = self.conns.get_mut(&ch) else {
            return;
        };
        let Some(SStream {
            phase: Phase::Reading(decoder),
            reservation,
            parked,
            ..
        }) = self.streams.get_mut(&(ch, stream))
        else {
            return;
        };
        if *parked {
            // Only `resume_parked` reads it again, once budget has been released.
            return;
        }
        let authenticated = !sconn.hotkeys.is_empty();
        let backlog = answer_backlog(&self.config, sconn.queued_out, self.queued_out_total);
        let mut recv = conn.recv_stream(stream);
        let Ok(mut chunks) = recv.read(true) else {
            return;
        };
        let mut fin = false;
        let mut reset = false;
        let mut frame = None;
        let mut failed = false;
        let mut progressed = false;
        let mut received = 0u64;
        let mut wait = None;
        loop {
            // Nothing past the header is read until the frame's whole declared length is
            // reserved, so the budget bounds what we buffer and every started frame can end.
            let max = if reservation.is_some() {
                usize::MAX
            } else if let Some(len) = decoder.declared_len() {
                let bytes = u64::from(len) + FRAME_HEADER_LEN as u64;
                // The connection's streams already waiting go first (see `parking`), and
                // no request starts while its connection's (or everyone's) responses are
                // backed up.
                let reserved = if self.parking.must_queue(ch) {
                    Err(Shortfall::Connection)
                } else if let Some(shortfall) = backlog {
                    Err(shortfall)
                } else {
                    self.budget.try_reserve(
                        &mut sconn.reserved,
                        &mut sconn.reserved_small,
                        authenticated,
                        bytes,
                    )
                };
                match reserved {
                    Ok(r) => {
                        *reservation = Some(r);
                        usize::MAX
                    }
                    Err(shortfall) => {
                        wait = Some(shortfall);
                        break;
                    }
                }
            } else {
                FRAME_HEADER_LEN
                    .saturating_sub(decoder.buffered_len())
                    .max(1)
            };
            match chunks.next(max) {
                Ok(Some(chunk)) => {
                    progressed = true;
                    received += chunk.bytes.len() as u64;
                    decoder.push(chunk.bytes);
                    match decoder.next_frame() {
                        Ok(Some(f)) => {
                            frame = Some(f);
                            break;
                        }
                        Ok(None) => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                Ok(None) => {
                    fin = true;
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(_)) => {
                    reset = true;
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        if progressed {
            sconn.last_progress = now;
            note_request_rate(sconn, now, received, self.config.min_request_rate);
        }
        let done = frame.is_some() || failed || fin || reset;
        if done {
            if let Some(r) = reservation.take() {
                self.budget
                    .release(Some((&mut sconn.reserved, &mut sconn.reserved_small)), r);
                self.released.push(ch);
            }
        }
        if frame.is_some() || failed {
            // Only the first frame counts (PROTOCOL §2); drop the rest of the stream.
            let _ = conn.recv_stream(stream).stop(VarInt::from_u32(0));
        }
        self.core.touch(ch);
        if reset {
            self.abandon_stream(ch, stream);
            return;
        }
        if let Some(shortfall) = wait {
            self.park(ch, stream, shortfall);
            return;
        }
        if let Some(frame) = frame {
            self.on_first_frame(now, ch, stream, frame);
        } else if failed || fin {
            // Framing error or truncation: finish with zero bytes, as the reference does.
            self.finish_empty(ch, stream);
        }
    }

    fn finish_empty(&mut self, ch: ConnectionHandle, stream: StreamId) {
        if let Some(s) = self.streams.get_mut(&(ch, stream)) {
            s.phase = Phase::Answered;
            s.out.finish_after_drain();
        }
        self.flush(ch, stream);
    }

    fn on_first_frame(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
        frame: Frame,
    ) {
        match frame.ty {
            MessageType::HandshakeRequest => {
                let response = self.handshake(now, ch, &frame.payload);
                self.answer(ch, stream, response.encode());
            }
            MessageType::SynapsePacket => self.on_request(now, ch, stream, &frame.payload),
            // Any other valid type: finish without writing anything (PROTOCOL §2).
            _ => self.finish_empty(ch, stream),
        }
    }

    /// PROTOCOL §5.7, steps 1–12, with authorization recorded per connection.
    fn handshake(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        payload: &Bytes,
    ) -> HandshakeResponse {
        let now_secs = self.core.clock.unix_secs(now);
        let Some(remote) = self.conns.get(&ch).map(|c| c.remote) else {
            return pre_auth_rejection(now_secs);
        };
        if let Err(error) = self.rate.check_and_record(remote.ip(), now_secs) {
            self.reject(remote, None, error);
            return pre_auth_rejection(now_secs);
        }
        let request = match HandshakeRequest::decode(payload) {
            Ok(r) => r,
            Err(_) => {
                self.stats.handshakes_rejected += 1;
                return pre_auth_rejection(now_secs);
            }
        };
        match self.check_handshake(now, ch, &request) {
            Ok(response) => {
                self.stats.handshakes_ok += 1;
                response
            }
            Err(error) => {
                self.reject(remote, Some(request.validator_hotkey.clone()), error);
                HandshakeResponse {
                    miner_hotkey: self.miner_hotkey.clone(),
                    timestamp: now_secs,
                    signature: String::new(),
                    accepted: false,
                    connection_id: String::new(),
                    cert_fingerprint: None,
                }
            }
        }
    }

    fn reject(
        &mut self,
        remote: SocketAddr,
        validator_hotkey: Option<String>,
        error: HandshakeError,
    ) {
        self.stats.handshakes_rejected += 1;
        tracing::debug!(%remote, ?validator_hotkey, %error, "handshake rejected");
        self.events.push_back(ServerEvent::HandshakeRejected {
            remote,
            validator_hotkey,
            error,
        });
    }

    fn check_handshake(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        request: &HandshakeRequest,
    ) -> Result<HandshakeResponse, HandshakeError> {
        let now_secs = self.core.clock.unix_secs(now);
        handshake::verify_request(
            &request.into(),
            &self.fingerprint,
            now_secs,
            self.config.max_signature_age_secs,
        )?;
        self.nonces
            .check_and_insert_signed_at(&request.nonce, now_secs, request.timestamp)?;
        let hotkey = &request.validator_hotkey;
        if self.config.require_validator_permit && !self.permits.contains(hotkey) {
            return Err(HandshakeError::NotPermitted);
        }
        let message = handshake::response_message(
            hotkey,
            &self.miner_hotkey,
            now_secs,
            &request.nonce,
            &self.fingerprint,
        );
        let signature = self
            .signer
            .sign(message.as_bytes())
            .map_err(HandshakeError::Signing)?;
        let connection_id = handshake::connection_id(hotkey, self.core.clock.unix_ms(now));
        let existing = self.by_hotkey.get(hotkey).copied();
        if existing.is_none() && self.by_hotkey.len() >= self.config.max_connections {
            let victim = self
                .eviction_candidate(now, Some(ch))
                .ok_or(HandshakeError::ConnectionLimit)?;
            self.evict(now, victim);
        }
        // Register on this connection; a different connection holding the hotkey is replaced.
        if let Some(old) = existing {
            if old != ch {
                self.close_quic(now, old, b"replaced");
                if let Some(c) = self.conns.get_mut(&old) {
                    c.hotkeys.retain(|h| h != hotkey);
                }
            }
        }
        self.by_hotkey.insert(hotkey.clone(), ch);
        if self.conns.get(&ch).is_some_and(|c| c.hotkeys.is_empty()) {
            self.raise_limits(ch);
        }
        if let Some(conn) = self.conns.get_mut(&ch) {
            conn.hotkeys.retain(|h| h != hotkey);
            conn.hotkeys.push(hotkey.clone());
            self.events.push_back(ServerEvent::Authenticated {
                conn: conn.id,
                validator_hotkey: hotkey.clone(),
                remote: conn.remote,
            });
        }
        Ok(HandshakeResponse {
            miner_hotkey: self.miner_hotkey.clone(),
            timestamp: now_secs,
            signature: handshake::encode_signature(&signature),
            accepted: true,
            connection_id,
            cert_fingerprint: Some(
                self.advertised_fingerprint
                    .clone()
                    .unwrap_or_else(|| self.fingerprint.clone()),
            ),
        })
    }

    fn on_request(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
        payload: &Bytes,
    ) {
        let now_secs = self.core.clock.unix_secs(now);
        let packet = match SynapsePacket::decode(payload) {
            Ok(p) => p,
            Err(_) => {
                self.stats.request_errors += 1;
                let r = error_response(now_secs, wire_errors::INVALID_REQUEST_FORMAT);
                self.answer(ch, stream, r.encode());
                return;
            }
        };
        let kind = self.synapses.get(&packet.synapse_type).copied();
        let caller = self
            .conns
            .get(&ch)
            .and_then(|c| c.hotkeys.last().cloned().map(|hk| (hk, c.id, c.remote)));
        let Some((validator_hotkey, conn, remote)) = caller else {
            self.stats.request_errors += 1;
            let frame = if kind == Some(SynapseKind::Streaming) {
                StreamEnd {
                    success: false,
                    error: Some(wire_errors::AUTHENTICATION_FAILED.into()),
                }
                .encode()
            } else {
                error_response(now_secs, wire_errors::AUTHENTICATION_FAILED).encode()
            };
            self.answer(ch, stream, frame);
            return;
        };
        let Some(kind) = kind else {
            self.stats.request_errors += 1;
            let r = error_response(now_secs, wire_errors::UNRECOGNIZED_SYNAPSE);
            self.answer(ch, stream, r.encode());
            return;
        };
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let deadline = now + self.config.handler_timeout;
        if let Some(s) = self.streams.get_mut(&(ch, stream)) {
            s.phase = Phase::Handling { id, kind };
        }
        self.requests.insert(id, (ch, stream));
        self.deadlines.schedule(deadline, Deadline::Handler(id));
        self.stats.requests += 1;
        self.events.push_back(ServerEvent::Request(IncomingRequest {
            id,
            conn,
            validator_hotkey,
            remote,
            synapse_type: packet.synapse_type,
            data: packet.data,
            kind,
            deadline,
        }));
    }

    fn handling(
        &self,
        id: RequestId,
        kind: SynapseKind,
    ) -> Result<(ConnectionHandle, StreamId), AnswerError> {
        let &(ch, stream) = self.requests.get(&id).ok_or(AnswerError::UnknownRequest)?;
        match self.streams.get(&(ch, stream)).map(|s| &s.phase) {
            Some(Phase::Handling { kind: k, .. }) if *k == kind => Ok((ch, stream)),
            Some(Phase::Handling { .. }) => Err(AnswerError::WrongKind),
            _ => Err(AnswerError::UnknownRequest),
        }
    }

    /// Queues the final frame of a stream, then FIN.
    ///
    /// A frame that cannot be encoded (a field over 4 GiB) is replaced by the reference's
    /// `internal serialization error` response.
    fn answer(
        &mut self,
        ch: ConnectionHandle,
        stream: StreamId,
        frame: Result<EncodedFrame, EncodeError>,
    ) {
        let frame = frame.or_else(|e| {
            tracing::warn!(%e, "response could not be encoded");
            error_response(0, wire_errors::INTERNAL_SERIALIZATION_ERROR).encode()
        });
        if let Some(s) = self.streams.get_mut(&(ch, stream)) {
            s.phase = Phase::Answered;
            let before = s.out.bytes();
            if let Ok(frame) = frame {
                s.out.push(frame);
            }
            s.out.finish_after_drain();
            let after = s.out.bytes();
            self.account_queued(ch, before, after);
        }
        self.flush(ch, stream);
    }

    fn flush(&mut self, ch: ConnectionHandle, stream: StreamId) {
        let Some(conn) = self.core.conns.get_mut(&ch) else {
            return;
        };
        let Some(s) = self.streams.get_mut(&(ch, stream)) else {
            return;
        };
        let before = s.out.bytes();
        let result = s.out.flush(conn.send_stream(stream));
        let after = s.out.bytes();
        self.core.touch(ch);
        let now = self.now;
        if after < before {
            s.last_send_progress = now;
        }
        // Waiting on the peer's flow control: a peer that never reads must not hold the
        // response forever (`send_progress_timeout`).
        let schedule = result == Flush::Blocked && !std::mem::replace(&mut s.send_deadline, true);
        let conn_queued = self.conns.get(&ch).map_or(0, |c| c.queued_out);
        let writable = s.notify_writable && !chunk_queue_full(&self.config, &s.out, conn_queued);
        if schedule {
            self.deadlines.schedule(
                now + self.config.send_progress_timeout,
                Deadline::Send(ch, stream),
            );
        }
        if after < before {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.last_send_progress = now;
            }
        }
        self.account_queued(ch, before, after);
        let Some(s) = self.streams.get_mut(&(ch, stream)) else {
            return;
        };
        match result {
            Flush::Drained if s.out.is_finished() => {
                self.remove_stream(ch, stream);
            }
            Flush::Closed => {
                let removed = self.abandon_stream(ch, stream);
                self.cancel_request_of(removed, CancelReason::PeerCancelled);
            }
            _ => {
                if writable {
                    s.notify_writable = false;
                    if let Phase::Handling { id, .. } = s.phase {
                        self.events.push_back(ServerEvent::StreamWritable { id });
                    }
                }
            }
        }
    }

    fn on_deadline(&mut self, now: Instant, deadline: Deadline) {
        match deadline {
            Deadline::Auth(ch, id) => {
                let unauthenticated = self
                    .conns
                    .get(&ch)
                    .is_some_and(|c| c.id == id && c.hotkeys.is_empty());
                if unauthenticated {
                    self.stats.auth_timeouts += 1;
                    self.close_quic(now, ch, b"handshake_timeout");
                }
            }
            Deadline::Read(ch, stream) => {
                // A rate, not total time: a large request on a lossy path may take long,
                // but a header followed by silence (slowloris) or a trickle that holds
                // request budget (a byte every second) stalls.
                let idle_since = match self.streams.get(&(ch, stream)) {
                    Some(SStream {
                        phase: Phase::Reading(_),
                        last_progress,
                        ..
                    }) => Some(*last_progress),
                    _ => None,
                };
                let Some(mut idle_since) = idle_since else {
                    return;
                };
                if self.streams.get(&(ch, stream)).is_some_and(|s| s.parked) {
                    // It waits for our budget, not for the peer.
                    idle_since = now;
                }
                // A stream waiting behind its siblings on a busy connection is not stalled:
                // only a connection that delivers less than the minimum rate is.
                if let Some(c) = self.conns.get(&ch) {
                    idle_since = idle_since.max(c.last_rate_ok);
                }
                let expires = idle_since + self.config.request_read_timeout;
                if expires > now {
                    self.deadlines.schedule(expires, Deadline::Read(ch, stream));
                    return;
                }
                self.stats.read_timeouts += 1;
                self.abandon_stream(ch, stream);
            }
            Deadline::Send(ch, stream) => self.check_send_progress(now, ch, stream),
            Deadline::Handler(id) => {
                let Some(&(ch, stream)) = self.requests.get(&id) else {
                    return;
                };
                let kind = match self.streams.get(&(ch, stream)).map(|s| &s.phase) {
                    Some(Phase::Handling { kind, .. }) => *kind,
                    _ => return,
                };
                self.requests.remove(&id);
                let frame = match kind {
                    SynapseKind::Unary => error_response(
                        self.core.clock.unix_secs(now),
                        wire_errors::HANDLER_TIMED_OUT,
                    )
                    .encode(),
                    SynapseKind::Streaming => StreamEnd {
                        success: false,
                        error: Some(wire_errors::HANDLER_TIMED_OUT.into()),
                    }
                    .encode(),
                };
                self.answer(ch, stream, frame);
                self.events.push_back(ServerEvent::RequestCancelled {
                    id,
                    reason: CancelReason::TimedOut,
                });
            }
            Deadline::Cleanup => {
                let now_secs = self.core.clock.unix_secs(now);
                self.nonces.evict_stale(now_secs);
                self.rate.evict_stale(now_secs);
                self.deadlines
                    .schedule(now + self.config.nonce_cleanup_interval, Deadline::Cleanup);
            }
        }
    }
}

/// The unit that per-source limits count in: an IPv4 address (IPv4-mapped IPv6 included),
/// or the /64 of an IPv6 address, the usual allocation to one host or site.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn error_response(timestamp: u64, error: &str) -> SynapseResponse {
    SynapseResponse {
        success: false,
        data: DataMap::default(),
        timestamp,
        error: Some(error.to_string()),
    }
}

/// The rejection sent before a request could be attributed to anyone (PROTOCOL §5.7).
fn pre_auth_rejection(timestamp: u64) -> HandshakeResponse {
    HandshakeResponse {
        miner_hotkey: String::new(),
        timestamp,
        signature: String::new(),
        accepted: false,
        connection_id: String::new(),
        cert_fingerprint: None,
    }
}

#[allow(dead_code)]
fn _assert_send(_: &Server) {}

/// The window over which a connection's request rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Counts `bytes` of request data that arrived on `c` at `now`; each window of at least
/// [`RATE_WINDOW`] that delivered `min_rate` bytes per second or more moves
/// `last_rate_ok`.
fn note_request_rate(c: &mut SConn, now: Instant, bytes: u64, min_rate: u64) {
    c.rate_window_bytes = c.rate_window_bytes.saturating_add(bytes);
    let elapsed = now.saturating_duration_since(c.rate_window_start);
    if elapsed < RATE_WINDOW {
        return;
    }
    let needed = u128::from(min_rate) * elapsed.as_millis() / 1000;
    if u128::from(c.rate_window_bytes) >= needed {
        c.last_rate_ok = now;
    }
    c.rate_window_start = now;
    c.rate_window_bytes = 0;
}

/// Which cap on queued answers, if any, keeps a connection with `conn_queued` bytes queued
/// (and `total` over all connections) from starting another request frame.
fn answer_backlog(config: &ServerConfig, conn_queued: u64, total: u64) -> Option<Shortfall> {
    if conn_queued >= config.max_queued_response_bytes_per_connection {
        Some(Shortfall::Connection)
    } else if total >= config.max_queued_response_bytes_total {
        Some(Shortfall::Total)
    } else {
        None
    }
}

/// Whether a streaming response's chunk queue takes no more chunks now (see
/// [`Server::send_chunk`]).
fn chunk_queue_full(config: &ServerConfig, out: &OutQueue, conn_queued: u64) -> bool {
    let own = out.frames() > 0
        && (out.frames() >= config.streaming_channel_buffer
            || out.bytes() as u64 >= config.max_queued_chunk_bytes);
    own || conn_queued >= config.max_queued_response_bytes_per_connection
}

#[cfg(test)]
mod peer_message_tests {
    use super::wire_errors::{truncate, MAX_PEER_MESSAGE};

    #[test]
    fn long_peer_messages_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("403 blacklisted"), "403 blacklisted");
        let long = "é".repeat(MAX_PEER_MESSAGE);
        let sent = truncate(&long);
        assert!(sent.len() <= MAX_PEER_MESSAGE && sent.len() >= MAX_PEER_MESSAGE - 1);
        assert!(sent.chars().all(|c| c == 'é'));
    }
}
