//! The miner side: admission, handshakes, request dispatch and responses.

mod admission;
mod answers;
mod auth;
mod deadlines;
mod events;
mod lifecycle;
mod requests;
mod stats;
mod synapses;
mod waiting;

use answers::{answer_backlog, error_response, ChunkBook};
pub use events::{
    AnswerError, CancelReason, ChunkCredit, ConnId, IncomingRequest, ServerEvent, SynapseKind,
};
use requests::RequestRate;
pub use stats::ServerStats;
pub use synapses::SynapseIndex;
use synapses::SynapseTable;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Dir, Event, Incoming, StreamEvent, StreamId, VarInt};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::budget::{Reservation, Shortfall};
use super::cid::CidRouting;
use super::clock::WallClock;
use super::config::{ConfigError, RetryPolicy, ServerConfig};
use super::core::{ConnRef, ConnRole, Core};
use super::error::ConnectionEnd;
use super::inq::{pull_chunk, Pulled};
use super::outq::{Flush, OutQueue};
use super::parking::ParkingLot;
use super::shared::{HotkeyHolder, LocalLimits, SharedLimits, TableFull};
use super::surface::{Datagram, SansIo};
use super::timers::Timers;
use super::RequestId;
use crate::frame::{Frame, FrameDecoder, MessageType, FRAME_HEADER_LEN};
use crate::handshake::{self, HandshakeError};
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

/// Largest frame accepted on a stream opened before its connection authenticated. A
/// handshake request is about 200 bytes; a request pipelined behind it
/// (`tls::PIPELINE_ALPN`) must fit too, so validators pipeline only requests this small.
pub const UNAUTHENTICATED_MAX_FRAME: u32 = 64 * 1024;

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
pub(crate) const UNAUTHENTICATED_READ_TOTAL: u64 = 16 * 1024 * 1024;

/// Application error code of a stream reset because the miner can hold no more requests
/// waiting for budget (`max_waiting_requests`); the validator may try again later.
pub const BUSY_ERROR_CODE: u32 = 0x4c42;

/// What the miner keeps per connection, in the core's connection table.
#[derive(Debug)]
pub(crate) struct SConn {
    id: ConnId,
    remote: SocketAddr,
    /// Its request streams, from `Opened` until they leave (see `remove_stream`). The
    /// peer opens them, so their ids are not hashed with the fast id hasher.
    streams: HashMap<StreamId, SStream>,
    /// Validator hotkeys authenticated on this connection, latest last.
    hotkeys: Vec<String>,
    /// Last time any request bytes arrived on this connection.
    last_progress: Instant,
    /// How fast request bytes arrive (`min_request_rate`).
    rate: RequestRate,
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
    /// Request bytes its streams' handlers hold, not answered yet (`SStream::owed`).
    owed: u64,
    /// Last time quinn took response bytes from any of its streams.
    last_send_progress: Instant,
    /// Its side of its streams' chunk credit: kept apart from `streams` so that a
    /// stream and it can be changed together.
    chunks: ChunkBook,
    /// Requests that arrived right behind the handshake (pipelining, [`Phase::Held`]):
    /// served once it succeeds, refused if it fails. At most the unauthenticated
    /// stream limit, each within the unauthenticated frame size.
    held: Vec<(StreamId, Bytes)>,
    /// A handshake on this connection was refused while requests were held: later ones
    /// are refused at once.
    handshake_failed: bool,
    /// Counted among the unauthenticated connections of the group's shared limits, from
    /// acceptance until its first handshake succeeds or it closes.
    counted_unauthenticated: bool,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the first frame.
    Reading(FrameDecoder),
    /// The application owns the request.
    Handling { id: RequestId, kind: SynapseKind },
    /// A request read before its connection authenticated, from a validator that
    /// pipelines (`tls::PIPELINE_ALPN`): it waits in `SConn::held` for the handshake.
    Held,
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
    /// The application may want more chunk room: tell it (`StreamWritable`) once there
    /// is some.
    notify_writable: bool,
    /// Room in `out` reserved for chunks the application may still send
    /// ([`Server::grant_chunk_credit`]).
    credit: ChunkCredit,
    /// Bytes the application's next chunk needs, when it gave back a credit too small
    /// for it ([`Server::return_chunk_credit`]): only a grant that fits it is worth
    /// making.
    wants: Option<u64>,
    /// What it holds of the read budget.
    hold: Hold,
    /// The request's bytes, from the moment the application gets the request until its
    /// answer is queued: they count with the queued answers against
    /// `max_queued_response_bytes_*`, as the application holds them (a zero-copy echo
    /// answers with the very same buffer). Without this, requests handed to a slow
    /// handler would hold memory no cap counts: their read budget is given back once
    /// their frame is read.
    owed: u64,
    /// Last time quinn took bytes of its response (or when it was queued).
    last_send_progress: Instant,
    /// A send-progress deadline is scheduled for it.
    send_deadline: bool,
}

/// What a request stream holds of the read budget.
#[derive(Debug)]
enum Hold {
    /// Nothing: its frame's header is not in yet, or its frame has been read.
    Nothing,
    /// Budget reserved for the frame being read; given back when reading ends.
    Reserved(Reservation),
    /// Its frame's header is in but its length does not fit the budget yet: the stream
    /// is not read until some budget is released (it waits in `parking`).
    Waiting {
        /// Meanwhile its connection's receive window is one stream window wider.
        window_extended: bool,
    },
}

/// The server's own deadlines. Those of a connection or stream carry a [`ConnRef`], so
/// one left over from a closed connection never fires on a later one with the same
/// quinn handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Deadline {
    Auth(ConnRef),
    Read(ConnRef, StreamId),
    Send(ConnRef, StreamId),
    Handler(RequestId),
    Cleanup,
}

/// What makes a [`Server`] one endpoint of a group serving one port (see
/// [`Server::new_in_group`]).
pub struct GroupMember {
    /// This endpoint's index, below `routing.endpoints()`: the first byte of the
    /// connection IDs it issues.
    pub index: u8,
    /// The group's connection-ID rule (the same for every member).
    pub routing: CidRouting,
    /// The group's shared limits, as this member reaches them.
    pub limits: Box<dyn SharedLimits>,
    /// Secret shared by the members (their Retry-token key is derived from it).
    pub group_secret: [u8; 32],
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("index", &self.index)
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

/// The miner-side endpoint: a sans-IO state machine.
///
/// See the [crate documentation](crate) for the drive loop.
pub struct Server {
    /// The connection table: each entry holds the quinn connection and its `SConn`.
    core: Core<SConn>,
    /// quinn's settings for a validator on a loopback address (a higher MTU discovery
    /// ceiling); the endpoint's own are for every other host.
    quic_loopback: Arc<quinn_proto::ServerConfig>,
    config: ServerConfig,
    miner_hotkey: String,
    signer: Arc<dyn Signer>,
    fingerprint: String,
    /// Test hook: a fingerprint to claim in responses instead of the real one.
    advertised_fingerprint: Option<String>,
    synapses: SynapseTable,
    /// What this endpoint shares with the others serving its port, if any: replay cache,
    /// handshake rate, unauthenticated counts, hotkeys, budgets (see `shared`).
    limits: Box<dyn SharedLimits>,
    /// This endpoint's index in its group (0 when alone).
    index: u8,
    /// What this endpoint last told `limits` about its streams waiting for the totals.
    waiting_for_total: bool,
    /// Another endpoint of the group freed budget since waiting streams were last tried.
    freed_elsewhere: bool,
    permits: HashSet<String>,
    allowlist: Option<HashSet<IpAddr>>,
    requests: IdMap<RequestId, (ConnectionHandle, StreamId)>,
    deadlines: Timers<Deadline>,
    events: VecDeque<ServerEvent>,
    next_request: u64,
    stats: ServerStats,
    scratch: Vec<u8>,
    /// Buffers of large requests, kept for reuse (`crate::pool`).
    pool: crate::pool::BufferPool,
    /// Streams waiting for budget.
    parking: ParkingLot,
    /// Connections that released budget since waiting streams were last tried.
    released: Vec<ConnectionHandle>,
    /// The time of the latest input: what internal steps that take no `now` use.
    now: Instant,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("miner_hotkey", &self.miner_hotkey)
            .field("connections", &self.core.live_count())
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
        Self::build(
            config,
            miner_hotkey.into(),
            signer,
            identity,
            seed,
            now,
            unix_ms,
            None,
        )
    }

    /// Creates one endpoint of a group serving one port together (`docs/multi-driver.md`):
    /// like [`new`](Self::new), with the group's shared limits, its connection-ID routing
    /// and the secrets every member must agree on. All members must be given the same
    /// `identity`, configuration and `member.group_secret`; `seed` must differ.
    #[allow(clippy::too_many_arguments)]
    pub fn new_in_group(
        config: ServerConfig,
        miner_hotkey: impl Into<String>,
        signer: Arc<dyn Signer>,
        identity: TlsIdentity,
        seed: [u8; 32],
        now: Instant,
        unix_ms: u64,
        member: GroupMember,
    ) -> Result<Self, ConfigError> {
        if member.index >= member.routing.endpoints() {
            return Err(ConfigError::OutOfRange {
                setting: "GroupMember::index",
                requirement: "must be below the group's number of endpoints",
            });
        }
        Self::build(
            config,
            miner_hotkey.into(),
            signer,
            Some(identity),
            seed,
            now,
            unix_ms,
            Some(member),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        config: ServerConfig,
        miner_hotkey: String,
        signer: Arc<dyn Signer>,
        identity: Option<TlsIdentity>,
        seed: [u8; 32],
        now: Instant,
        unix_ms: u64,
        member: Option<GroupMember>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        super::check_signer_matches(&miner_hotkey, signer.as_ref())?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let identity = identity.unwrap_or_else(|| {
            let mut key_seed = [0u8; 32];
            rng.fill_bytes(&mut key_seed);
            TlsIdentity::self_signed(key_seed)
        });
        let fingerprint = handshake::cert_fingerprint(identity.cert_der());
        let crypto =
            crate::tls::server_crypto(&identity).map_err(|e| ConfigError::Tls(e.to_string()))?;
        let mut token_master = [0u8; 64];
        rng.fill_bytes(&mut token_master);
        if let Some(member) = &member {
            // A Retry token issued by one member is redeemed by the same member (routing
            // follows the connection ID it chose), but a shared key keeps any member able
            // to check one.
            let mut group = ChaCha20Rng::from_seed(member.group_secret);
            group.fill_bytes(&mut token_master);
        }
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
        let transport = |loopback| {
            config.transport.build_with(
                config
                    .max_concurrent_bidi_streams
                    .min(UNAUTHENTICATED_BIDI_STREAMS),
                config
                    .transport
                    .receive_window
                    .min(UNAUTHENTICATED_RECEIVE_WINDOW),
                loopback,
            )
        };
        quic.transport_config(transport(false));
        quic.time_source(clock.time_source());
        // Authorization is per connection, so migration no longer breaks it (§13.2); but
        // a validator that moves keeps its session, which is what it expects.
        quic.migration(true);
        let mut quic_loopback = quic.clone();
        quic_loopback.transport_config(transport(true));
        let cids = member.as_ref().map(|m| {
            let mut cid_seed = [0u8; 32];
            rng.fill_bytes(&mut cid_seed);
            m.routing.generator(m.index, cid_seed)
        });
        let core = Core::with_reset_secret(
            &mut rng,
            Some(Arc::new(quic)),
            clock,
            config.transport.mtu_discovery,
            config.stateless_reset_secret.as_ref().map(|s| &s.0),
            cids,
        );
        let mut deadlines = Timers::default();
        deadlines.schedule(now + config.nonce_cleanup_interval, Deadline::Cleanup);
        let (index, limits) = match member {
            Some(m) => (m.index, m.limits),
            None => (
                0,
                Box::new(LocalLimits::new(&config)) as Box<dyn SharedLimits>,
            ),
        };
        Ok(Self {
            quic_loopback: Arc::new(quic_loopback),
            limits,
            index,
            waiting_for_total: false,
            freed_elsewhere: false,
            parking: ParkingLot::new(
                config.max_waiting_requests,
                config.max_waiting_requests_per_connection,
            ),
            released: Vec::new(),
            now,
            core,
            config,
            miner_hotkey,
            signer,
            fingerprint,
            advertised_fingerprint: None,
            synapses: SynapseTable::default(),
            permits: HashSet::new(),
            allowlist: None,
            requests: IdMap::default(),
            deadlines,
            events: VecDeque::new(),
            next_request: 0,
            stats: ServerStats::default(),
            scratch: Vec::new(),
            pool: crate::pool::BufferPool::default(),
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

    /// Registers (or re-registers) a synapse name. Returns its index in the synapse
    /// table, which its requests carry ([`IncomingRequest::synapse`]); a name registered
    /// again keeps its index.
    pub fn register_synapse(&mut self, name: impl Into<String>, kind: SynapseKind) -> SynapseIndex {
        self.synapses.register(name.into(), kind)
    }

    /// Removes a synapse name; later requests get `unrecognized synapse type`. Returns
    /// the index it had, if it was registered.
    pub fn unregister_synapse(&mut self, name: &str) -> Option<SynapseIndex> {
        self.synapses.unregister(name)
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
    #[cfg(feature = "testing")]
    pub fn override_advertised_fingerprint_for_testing(&mut self, fingerprint: &str) {
        self.advertised_fingerprint = Some(fingerprint.to_string());
    }

    // ----- inputs -------------------------------------------------------------------------

    // ----- outputs ------------------------------------------------------------------------

    // ----- inspection ---------------------------------------------------------------------

    /// Counters since start.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Open QUIC connections (authenticated or not).
    pub fn connection_count(&self) -> usize {
        self.core.live_count()
    }

    /// This endpoint's connections that have not authenticated a validator yet: what
    /// `max_unauthenticated_connections` counts (a connection that authenticated and was
    /// then replaced by a newer one of its hotkey is closing, not unauthenticated).
    pub fn unauthenticated_count(&self) -> usize {
        self.core
            .states()
            .filter(|(_, c)| c.counted_unauthenticated)
            .count()
    }

    /// Connections not authenticated yet over the whole group when endpoints share a port
    /// (this endpoint's alone otherwise): the number `max_unauthenticated_connections`
    /// bounds, read in one step. Summing each endpoint's [`Self::unauthenticated_count`]
    /// taken at different moments can exceed the cap while connections come and go.
    pub fn unauthenticated_total(&self) -> usize {
        self.limits
            .unauthenticated(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
            .0
    }

    /// Authenticated validator hotkeys and their connections.
    pub fn validators(&self) -> impl Iterator<Item = (&str, ConnId)> + '_ {
        self.core.states().flat_map(move |(ch, c)| {
            let holder = self.holder_of(ch);
            c.hotkeys
                .iter()
                .filter(move |hk| holder.is_some() && self.limits.hotkey_holder(hk) == holder)
                .map(move |hk| (hk.as_str(), c.id))
        })
    }

    /// Nonces held by the replay cache.
    pub fn active_nonce_count(&self) -> usize {
        self.limits.nonce_count()
    }

    /// Requests the application has not answered yet.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Request bytes reserved by frames being received now (see
    /// [`ServerConfig::max_request_bytes_total`](super::ServerConfig)).
    pub fn reserved_request_bytes(&self) -> u64 {
        self.limits.reserved_bytes()
    }

    /// Request streams waiting, unread, for request-byte budget.
    pub fn parked_streams(&self) -> usize {
        self.parking.len()
    }

    /// Bytes queued for sending but not yet accepted by QUIC, over all streams.
    pub fn queued_bytes(&self) -> usize {
        self.core
            .states()
            .flat_map(|(_, c)| c.streams.values())
            .map(|s| s.out.bytes())
            .sum()
    }

    /// quinn's counters (RTT, congestion window, losses, ...) of each open connection.
    pub fn connection_stats(
        &self,
    ) -> impl Iterator<Item = (ConnId, quinn_proto::ConnectionStats)> + '_ {
        self.core
            .states()
            .filter_map(|(ch, c)| self.core.conn(ch).map(|q| (c.id, q.stats())))
    }

    // ----- internals ----------------------------------------------------------------------

    /// How the shared limits name connection `ch` as a hotkey's holder.
    fn holder_of(&self, ch: ConnectionHandle) -> Option<HotkeyHolder> {
        self.core.conn_ref(ch).map(|conn| HotkeyHolder {
            endpoint: self.index,
            conn,
        })
    }

    fn handle_of(&self, conn: ConnId) -> Option<ConnectionHandle> {
        self.core
            .states()
            .find(|(_, c)| c.id == conn)
            .map(|(ch, _)| ch)
    }
}

/// Request stream `id` of connection `ch`.
fn stream_of(core: &Core<SConn>, ch: ConnectionHandle, id: StreamId) -> Option<&SStream> {
    core.state(ch)?.streams.get(&id)
}

/// Request stream `id` of connection `ch`, for changing (its quinn connection untouched).
fn stream_of_mut(
    core: &mut Core<SConn>,
    ch: ConnectionHandle,
    id: StreamId,
) -> Option<&mut SStream> {
    core.state_mut(ch)?.streams.get_mut(&id)
}

#[allow(dead_code)]
fn _assert_send(_: &Server) {}

/// The window over which a connection's request rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl SansIo for Server {
    type Event = ServerEvent;

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        self.now = now;
        self.drive_datagram(now, datagram, |s, incoming| s.admit(now, incoming));
        self.resume_parked(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.drive_timers(now);
        while let Some((_, deadline)) = self.deadlines.pop_due(now) {
            self.on_deadline(now, deadline);
        }
        self.resume_parked(now);
    }

    super::surface::shared_sans_io_methods!();
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
