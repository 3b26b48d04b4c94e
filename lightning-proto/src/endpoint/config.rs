//! Endpoint configuration: the limits of PROTOCOL §8 and §9, plus ours.
//!
//! Defaults match btlightning 0.2.15 wherever the reference has a setting, so a mixed subnet
//! behaves the same. Settings the reference lacks (unauthenticated connection cap, handshake
//! deadline, request read deadline, Retry policy) close the gaps listed in PROTOCOL §13.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::{congestion, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};

/// The default [`TransportOptions::max_udp_payload`], quinn's: the largest QUIC packet
/// an Ethernet path carries over IPv6 (1,500 bytes less 40 of IPv6 and 8 of UDP header).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1_452;

/// The packet size towards a peer on a loopback address, where connections start at it
/// rather than probing up to it (with Cubic and NewReno; see
/// [`TransportOptions::mtu_ceiling`]): the largest UDP payload IPv4 carries. A loopback
/// device's MTU is 64 KiB on Linux (16 KiB on macOS, where black-hole detection brings a
/// connection down to 1,200 bytes and discovery then stops below 16 KiB), so packets
/// that large cut the per-packet work of a validator and a miner on one host to a
/// fraction (1 KB requests are packed dozens to a packet; a 1 MB answer is 16 packets
/// instead of 720). Other paths are not probed that high by default: quinn counts a
/// probe against the congestion window until it is acknowledged or lost, so probes far
/// above a 1,500-byte path's MTU would hold back data for a round trip each.
pub const LOOPBACK_MAX_UDP_PAYLOAD: u16 = 65_507;

/// Whether `ip` is a loopback address (IPv4-mapped ones included), where
/// [`LOOPBACK_MAX_UDP_PAYLOAD`] applies.
pub(crate) fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The least initial congestion window of a connection that starts at
/// [`LOOPBACK_MAX_UDP_PAYLOAD`]: four of its packets.
const LOOPBACK_INITIAL_WINDOW: u64 = 4 * LOOPBACK_MAX_UDP_PAYLOAD as u64;

/// The largest UDP payload we accept from a peer (its `max_udp_payload_size` transport
/// parameter is ours): IPv6's and quinn's maximum. The driver's receive buffers hold it.
pub const MAX_UDP_PAYLOAD: u16 = 65_527;

/// Largest [`TransportOptions::initial_window`] accepted.
const MAX_INITIAL_WINDOW: u64 = 16 * 1024 * 1024;

use super::error::{Detail, FmtDetail};
use crate::frame::{DEFAULT_MAX_FRAME_PAYLOAD, MIN_MAX_FRAME_PAYLOAD};
use crate::identity::Ss58Error;
use crate::reconnect::{ReconnectPolicy, ReconnectPolicyError};

/// Why a configuration or identity was refused.
///
/// `Display` reads `"config error: <detail>"`; [`detail`](Self::detail) is the part after
/// the prefix, for errors that add their own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is outside the values it may take.
    OutOfRange {
        /// The setting, or the settings one rule ties together, as the message names them.
        setting: &'static str,
        /// What it must be, e.g. `"must be > 0"`.
        requirement: &'static str,
    },
    /// The reconnect policy breaks one of its rules.
    Reconnect(ReconnectPolicyError),
    /// The TLS configuration could not be built. Kept as rustls's text: its error type
    /// is not `Eq`, and carrying it would tie our API to one rustls version.
    Tls(String),
    /// The configured hotkey is not an SS58 address.
    InvalidHotkey {
        /// The hotkey as configured.
        hotkey: String,
        /// Why it does not decode.
        reason: Ss58Error,
    },
    /// The signer's public key is not the configured hotkey's, so every handshake would
    /// be refused.
    SignerMismatch {
        /// The hotkey as configured.
        hotkey: String,
    },
}

impl ConfigError {
    /// The message without its `"config error: "` prefix.
    pub fn detail(&self) -> impl std::fmt::Display + '_ {
        Detail(self)
    }
}

impl FmtDetail for ConfigError {
    fn fmt_detail(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::OutOfRange {
                setting,
                requirement,
            } => write!(f, "{setting} {requirement}"),
            ConfigError::Reconnect(e) => write!(f, "{e}"),
            ConfigError::Tls(e) => write!(f, "TLS: {e}"),
            ConfigError::InvalidHotkey { hotkey, reason } => {
                write!(f, "invalid hotkey {hotkey}: {reason}")
            }
            ConfigError::SignerMismatch { hotkey } => {
                write!(f, "hotkey {hotkey} does not match the signer's public key")
            }
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config error: {}", self.detail())
    }
}

impl std::error::Error for ConfigError {}

impl From<ReconnectPolicyError> for ConfigError {
    fn from(e: ReconnectPolicyError) -> Self {
        Self::Reconnect(e)
    }
}

/// `Ok` if `ok`, else [`ConfigError::OutOfRange`] for `setting`.
fn check(ok: bool, setting: &'static str, requirement: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            setting,
            requirement,
        })
    }
}

/// QUIC transport settings shared by both roles (PROTOCOL §1.1).
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// QUIC max idle timeout (default 150 s).
    pub idle_timeout: Duration,
    /// Interval between keep-alive PINGs (default 30 s; must be below the idle timeout).
    pub keep_alive_interval: Duration,
    /// Per-stream receive window in bytes (quinn's default 1.25 MB).
    pub stream_receive_window: u32,
    /// Connection-wide receive window in bytes. Bounded (unlike the reference) so that one
    /// peer cannot make us buffer without limit.
    pub receive_window: u64,
    /// Bytes we keep in flight and buffered for retransmission per connection.
    pub send_window: u64,
    /// Whether path MTU discovery may raise packets above 1200 bytes. Needs a socket that
    /// sets don't-fragment (quinn-udp does).
    pub mtu_discovery: bool,
    /// The largest UDP payload path MTU discovery tries towards another host, in bytes
    /// (1,200 to 65,527; default 1,452, quinn's: Ethernet's 1,500 less the IPv6 and UDP
    /// headers). Raise it where every path carries more (jumbo frames). Towards a peer on
    /// a loopback address the ceiling is [`LOOPBACK_MAX_UDP_PAYLOAD`] whatever this says,
    /// because loopback carries 64 KiB datagrams, except with BBR (see
    /// [`mtu_ceiling`](Self::mtu_ceiling)).
    pub max_udp_payload: u16,
    /// The congestion controller of each connection (quinn's Cubic by default, as the
    /// reference).
    pub congestion: CongestionControl,
    /// The congestion window a connection starts with, in bytes (`None`: the
    /// controller's own, 14,720 bytes for Cubic and NewReno, RFC 9002 §7.2; 200 packets
    /// for BBR). A larger one shortens slow start on a long path at the cost of a larger
    /// first burst into an unknown path. Towards a loopback peer whose packets may grow
    /// to 64 KiB ([`mtu_ceiling`](Self::mtu_ceiling)) the window starts at no less than
    /// four of those packets (262,028 bytes): 14,720 bytes would not hold one.
    pub initial_window: Option<u64>,
}

/// Which congestion controller a connection uses ([`TransportOptions::congestion`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CongestionControl {
    /// CUBIC (RFC 9438), quinn's default and the reference's: halves less than NewReno on
    /// a loss and grows faster on long paths, but every loss still shrinks the window.
    #[default]
    Cubic,
    /// NewReno (RFC 9002 §7).
    NewReno,
    /// BBR (version 1, quinn's experimental port): paces at the measured bottleneck rate
    /// and does not treat random loss as congestion, so a lossy long path keeps its
    /// throughput. The cost is at a shared bottleneck whose queue holds a round trip's
    /// worth or less: measured through a 20 Mbit/s, 40 ms emulated link, it lost 21% (one
    /// round trip of queue) to 46% (half of one) of its own packets, where Cubic lost 2-3%,
    /// and took 90-94% of the link from a Cubic flow beside it
    /// (`benches/results/bottleneck.md`). Use it for large transfers over long lossy
    /// paths, at the end that sends them.
    Bbr,
}

impl std::str::FromStr for CongestionControl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cubic" => Ok(Self::Cubic),
            "newreno" | "new_reno" | "reno" => Ok(Self::NewReno),
            "bbr" => Ok(Self::Bbr),
            other => Err(format!(
                "unknown congestion controller {other:?} (expected cubic, newreno or bbr)"
            )),
        }
    }
}

impl std::fmt::Display for CongestionControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cubic => "cubic",
            Self::NewReno => "newreno",
            Self::Bbr => "bbr",
        })
    }
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(150),
            keep_alive_interval: Duration::from_secs(30),
            stream_receive_window: 1_250_000,
            receive_window: 16 * 1024 * 1024,
            send_window: 10_000_000,
            mtu_discovery: true,
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            congestion: CongestionControl::default(),
            initial_window: None,
        }
    }
}

impl TransportOptions {
    /// Checks the reference's constraints: both durations positive, keep-alive below idle.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(!self.idle_timeout.is_zero(), "idle_timeout", "must be > 0")?;
        check(
            !self.keep_alive_interval.is_zero() && self.keep_alive_interval < self.idle_timeout,
            "keep_alive_interval",
            "must be > 0 and < idle_timeout",
        )?;
        check(
            IdleTimeout::try_from(self.idle_timeout).is_ok(),
            "idle_timeout",
            "is too large",
        )?;
        check(
            self.stream_receive_window > 0 && self.receive_window > 0 && self.send_window > 0,
            "flow-control windows",
            "must be > 0",
        )?;
        check(
            (1200..=MAX_UDP_PAYLOAD).contains(&self.max_udp_payload),
            "max_udp_payload",
            "must be between 1200 and 65527 bytes",
        )?;
        check(
            self.initial_window
                .is_none_or(|w| (2400..=MAX_INITIAL_WINDOW).contains(&w)),
            "initial_window",
            "must be between 2400 bytes (two packets) and 16 MiB",
        )
    }

    /// The path MTU discovery ceiling towards a peer, by whether it is on a loopback
    /// address (see [`LOOPBACK_MAX_UDP_PAYLOAD`]). Not with BBR: it does not slow down
    /// for losses, and 64 KiB packets from a fast sender overflow the receiving socket's
    /// buffer (4 MiB) at 1 MB c=32, where rounds of the two-process benchmark then
    /// stalled (28–660 requests/s against a steady 366–397 with 1,452-byte packets).
    pub fn mtu_ceiling(&self, loopback: bool) -> u16 {
        if loopback && self.congestion != CongestionControl::Bbr {
            self.max_udp_payload.max(LOOPBACK_MAX_UDP_PAYLOAD)
        } else {
            self.max_udp_payload
        }
    }

    /// quinn's transport settings for connections whose peer may open
    /// `peer_bidi_streams` streams, towards a loopback peer or another host.
    pub(crate) fn build(&self, peer_bidi_streams: u32, loopback: bool) -> Arc<TransportConfig> {
        self.build_with(peer_bidi_streams, self.receive_window, loopback)
    }

    /// Like [`build`](Self::build), with another connection-wide receive window: the
    /// server starts every connection with a small one and raises it on authentication.
    pub(crate) fn build_with(
        &self,
        peer_bidi_streams: u32,
        receive_window: u64,
        loopback: bool,
    ) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        t.max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok());
        t.keep_alive_interval(Some(self.keep_alive_interval));
        t.max_concurrent_bidi_streams(VarInt::from_u32(peer_bidi_streams));
        // Neither side ever uses unidirectional streams (PROTOCOL §2).
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        t.stream_receive_window(VarInt::from_u32(self.stream_receive_window));
        t.receive_window(VarInt::from_u64(receive_window).unwrap_or(VarInt::MAX));
        t.send_window(self.send_window);
        t.datagram_receive_buffer_size(None);
        let initial_window = if self.mtu_discovery {
            let ceiling = self.mtu_ceiling(loopback);
            let mut mtud = MtuDiscoveryConfig::default();
            mtud.upper_bound(ceiling);
            t.mtu_discovery_config(Some(mtud));
            if ceiling > self.max_udp_payload {
                // Start at the ceiling instead of probing up to it. A probe is a PING padded
                // with one-byte PADDING frames, which quinn reads one frame at a time: a
                // 64 KiB probe costs its receiver ~1.3 ms of CPU on the 2-core VM, with its
                // endpoint task doing nothing else meanwhile. The binary search from 1,200
                // bytes (~12 probes each way, 1.4 MiB) made `lightning query` on loopback
                // take 3.6 ms to connect and 3.3-4.4 ms (up to 42) for its first answer;
                // starting at the ceiling, 1.9-2.5 ms and 0.18-0.24 ms. Initial packets are
                // still padded to 1,200 bytes only (`min_mtu`). Where the loopback address
                // fronts a smaller path (a local relay, macOS's 16 KiB loopback), quinn's
                // black-hole detection drops the connection to 1,200 bytes after the first
                // large packets are lost, and discovery searches upwards again after its
                // cooldown.
                t.initial_mtu(ceiling);
                // Cubic's 14,720-byte start is less than one such packet. (When these
                // connections still probed up to it, a 33 KB probe counted against that
                // window held back every answer for its round trip: in the simulator, 20 ms
                // each way, the first query took 5.1 RTT instead of 2.)
                Some(
                    self.initial_window
                        .unwrap_or(0)
                        .max(LOOPBACK_INITIAL_WINDOW),
                )
            } else {
                self.initial_window
            }
        } else {
            t.mtu_discovery_config(None);
            self.initial_window
        };
        match self.congestion {
            CongestionControl::Cubic => {
                let mut c = congestion::CubicConfig::default();
                if let Some(w) = initial_window {
                    c.initial_window(w);
                }
                t.congestion_controller_factory(Arc::new(c));
            }
            CongestionControl::NewReno => {
                let mut c = congestion::NewRenoConfig::default();
                if let Some(w) = initial_window {
                    c.initial_window(w);
                }
                t.congestion_controller_factory(Arc::new(c));
            }
            CongestionControl::Bbr => {
                let mut c = congestion::BbrConfig::default();
                if let Some(w) = self.initial_window {
                    c.initial_window(w);
                }
                t.congestion_controller_factory(Arc::new(c));
            }
        }
        Arc::new(t)
    }
}

/// Validator-side settings (reference `LightningClientConfig`, PROTOCOL §10.1).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Time allowed for the QUIC connect, and again for each hotkey's handshake (10 s).
    pub connect_timeout: Duration,
    /// QUIC settings.
    pub transport: TransportOptions,
    /// Backoff for on-demand reconnects (PROTOCOL §8.4).
    pub reconnect: ReconnectPolicy,
    /// Maximum number of miner addresses connected at once (1024).
    pub max_connections: usize,
    /// Largest frame payload accepted from a miner (64 MiB).
    pub max_frame_payload_bytes: u32,
    /// Largest total of chunk bytes accepted on one streaming response (64 MiB). Unlike the
    /// reference, which only checks it in `collect_all`, this is enforced on every stream.
    pub max_stream_payload_bytes: u64,
    /// How many received chunks of one streaming response may wait for the application
    /// before we stop reading that stream (QUIC flow control then slows the miner).
    pub stream_read_ahead_chunks: usize,
    /// Send the first requests to a Lightning miner right behind the handshake instead of
    /// after its answer (on by default): the first answer arrives 2 RTT after dialing
    /// instead of 3. Used only when the miner negotiates `tls::PIPELINE_ALPN` (a
    /// btlightning miner never does) and the address has a single hotkey. The trade-off:
    /// that first query leaves before the miner has proven its hotkey, so a host that
    /// impersonates the miner's address would see its contents (it could not answer it:
    /// the handshake check still fails the query). Turn it off if query contents must
    /// reach only a proven miner.
    pub pipeline_first_requests: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            transport: TransportOptions::default(),
            reconnect: ReconnectPolicy::default(),
            max_connections: 1024,
            max_frame_payload_bytes: DEFAULT_MAX_FRAME_PAYLOAD,
            max_stream_payload_bytes: u64::from(DEFAULT_MAX_FRAME_PAYLOAD),
            stream_read_ahead_chunks: 32,
            pipeline_first_requests: true,
        }
    }
}

impl ClientConfig {
    /// Checks every constraint of the reference's client config builder.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            !self.connect_timeout.is_zero(),
            "connect_timeout",
            "must be > 0",
        )?;
        self.transport.validate()?;
        self.reconnect.validate()?;
        check(self.max_connections >= 1, "max_connections", "must be >= 1")?;
        check(
            self.max_frame_payload_bytes >= MIN_MAX_FRAME_PAYLOAD,
            "max_frame_payload_bytes",
            "must be >= 1 MiB",
        )?;
        check(
            self.max_stream_payload_bytes >= u64::from(self.max_frame_payload_bytes),
            "max_stream_payload_bytes",
            "must be >= max_frame_payload_bytes",
        )?;
        check(
            self.stream_read_ahead_chunks >= 1,
            "stream_read_ahead_chunks",
            "must be >= 1",
        )
    }
}

/// When the server answers a new connection with a QUIC Retry (address validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Every unvalidated address (the reference's default).
    Always,
    /// Never: saves a round trip per connection.
    Never,
    /// Only while at least this many connections are still unauthenticated, i.e. when
    /// someone may be flooding us with spoofed Initials.
    WhenUnauthenticatedAtLeast(usize),
}

/// Miner-side settings (reference `LightningServerConfig`, PROTOCOL §9.2, plus ours).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Oldest accepted handshake timestamp, exclusive (300 s; 1..=3600).
    pub max_signature_age_secs: u64,
    /// How often expired nonces and rate-limit entries are dropped (60 s).
    pub nonce_cleanup_interval: Duration,
    /// Maximum authenticated validator hotkeys (128).
    pub max_connections: usize,
    /// When `max_connections` hotkeys are held, a new validator may still get in by
    /// closing (reason `evicted`) a connection that has had no request stream open and
    /// no request bytes for this long (5 s); `None` refuses instead, as the reference
    /// does. Among idle connections, those whose hotkeys hold no permit go before
    /// permitted ones, then those from the source address holding the most connections,
    /// then the one idle longest. A miner whose validators are all busy still refuses.
    pub evict_idle_after: Option<Duration>,
    /// Replay cache capacity (100 000).
    pub max_nonce_entries: usize,
    /// A connection that has not authenticated within this time is closed (10 s). The
    /// reference only bounds handshake *processing*; we bound the whole unauthenticated life.
    pub handshake_timeout: Duration,
    /// Handshake attempts per source IP per 60 s window (30).
    pub max_handshake_attempts_per_minute: u32,
    /// Streams a validator may have open at once (128).
    pub max_concurrent_bidi_streams: u32,
    /// Only validators in the permit set may authenticate.
    pub require_validator_permit: bool,
    /// Source IPs tracked by the handshake rate limiter (10 000).
    pub max_tracked_rate_ips: usize,
    /// Time a handler has for a unary answer or a whole stream (30 s).
    pub handler_timeout: Duration,
    /// Largest request frame payload accepted (64 MiB).
    pub max_frame_payload_bytes: u32,
    /// Stream chunks queued per streaming response before the handler is told to wait (32).
    pub streaming_channel_buffer: usize,
    /// When to send QUIC Retry.
    pub retry: RetryPolicy,
    /// Connections that have not authenticated yet, at most (1024). More are refused.
    pub max_unauthenticated_connections: usize,
    /// Unauthenticated connections from one source address (an IPv4 address or an IPv6
    /// /64) that have proven the address, at most (16). More from that address are refused,
    /// so one host cannot take every unauthenticated slot. Connections from a source that
    /// has not proven its address yet get a QUIC Retry instead, so spoofed packets cannot
    /// use up an honest address's share.
    pub max_unauthenticated_per_ip: usize,
    /// A request stream whose frame is not complete after this long is reset (10 s)
    /// unless its connection keeps delivering request bytes at `min_request_rate`, so a
    /// peer cannot hold streams (and request budget) with a header and silence or with
    /// a trickle.
    pub request_read_timeout: Duration,
    /// Request bytes per second a connection must deliver, measured over windows of at
    /// least a second, for its unfinished requests to stay open past
    /// `request_read_timeout` (16 KiB/s). A 100 Mbit/s path with 160 ms RTT and 1% loss
    /// moves about 100 KB/s on one QUIC connection under Reno-like congestion control,
    /// so such a validator still delivers a 64 MiB request.
    pub min_request_rate: u64,
    /// Request bytes one authenticated connection may be receiving at once (64 MiB). Each
    /// request reserves its declared length when its frame header arrives and releases it
    /// when the frame is complete; a stream that does not fit waits, unread, and QUIC flow
    /// control holds the validator back. A connection with nothing reserved may always
    /// start one frame, so a single request of `max_frame_payload_bytes` always fits.
    pub max_request_bytes_per_connection: u64,
    /// Request bytes all connections together may be receiving at once (256 MiB), with the
    /// same rule: when nothing is reserved, one frame of any allowed size may start.
    pub max_request_bytes_total: u64,
    /// Request bytes set aside for validators' small frames (up to 1 MiB, one per
    /// connection at a time) when `max_request_bytes_total` is in use (32 MiB): peers
    /// that hold the whole budget with large frames cannot stall everyone's small
    /// requests. 0 turns the reserve off.
    pub small_request_reserve_bytes: u64,
    /// Request streams all connections together may have waiting, unread, for request-byte
    /// budget (512). While a stream waits, QUIC may hold up to `stream_receive_window` of
    /// its bytes, and its connection's receive window is widened by as much so that the
    /// streams being read always keep the configured window (large concurrent requests
    /// never deadlock on flow control). A request that would wait beyond this is refused
    /// at once with a stream reset carrying [`BUSY_ERROR_CODE`](super::BUSY_ERROR_CODE).
    pub max_waiting_requests: usize,
    /// The same, for one connection (64): what one validator can make the miner buffer
    /// beyond its receive window is this many stream windows (80 MB by default). 4 MiB
    /// requests at a concurrency of 64 leave 49 waiting behind the 64 MiB budget.
    pub max_waiting_requests_per_connection: usize,
    /// Response bytes one connection may have queued that QUIC has not taken yet (32 MiB),
    /// counting the bytes of its requests a handler holds until their answers are queued:
    /// a validator that does not read its answers, or that sends more than a slow handler
    /// gets through, stops getting new requests read until they drain. Frames already
    /// being read are finished, and every answer is queued whole, whatever its size.
    pub max_queued_response_bytes_per_connection: u64,
    /// The same over all connections (256 MiB).
    pub max_queued_response_bytes_total: u64,
    /// Bytes of chunks one streaming response may have queued (4 MiB), besides
    /// `streaming_channel_buffer` chunks; one chunk of any size is always taken.
    pub max_queued_chunk_bytes: u64,
    /// A response stream whose validator takes none of its bytes (grants no flow-control
    /// credit) for this long is reset and its request cancelled; a connection whose
    /// validator takes nothing on any stream for this long is closed (20 s).
    pub send_progress_timeout: Duration,
    /// QUIC settings.
    pub transport: TransportOptions,
    /// Secret from which QUIC stateless-reset tokens derive (RFC 9000 §10.3). With the
    /// same secret across restarts, a restarted miner answers packets of its predecessor's
    /// connections with a stateless reset, so validators reconnect at once instead of
    /// waiting for their idle timeout. `None` (the default here): a random secret per
    /// start. `lightning-driver` derives one from the miner's key and its fixed UDP port
    /// when it has the key.
    /// Whoever knows it can reset the miner's connections: keep it as secret as the key.
    pub stateless_reset_secret: Option<ResetSecret>,
}

/// The secret behind a server's stateless-reset tokens (see
/// [`ServerConfig::stateless_reset_secret`]). `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResetSecret(pub [u8; 32]);

impl std::fmt::Debug for ResetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetSecret(..)")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_signature_age_secs: 300,
            nonce_cleanup_interval: Duration::from_secs(60),
            max_connections: 128,
            evict_idle_after: Some(Duration::from_secs(5)),
            max_nonce_entries: 100_000,
            handshake_timeout: Duration::from_secs(10),
            max_handshake_attempts_per_minute: 30,
            max_concurrent_bidi_streams: 128,
            require_validator_permit: false,
            max_tracked_rate_ips: 10_000,
            handler_timeout: Duration::from_secs(30),
            max_frame_payload_bytes: DEFAULT_MAX_FRAME_PAYLOAD,
            streaming_channel_buffer: 32,
            retry: RetryPolicy::WhenUnauthenticatedAtLeast(64),
            max_unauthenticated_connections: 1024,
            max_unauthenticated_per_ip: 16,
            request_read_timeout: Duration::from_secs(10),
            min_request_rate: 16 * 1024,
            max_request_bytes_per_connection: 64 * 1024 * 1024,
            max_request_bytes_total: 256 * 1024 * 1024,
            small_request_reserve_bytes: 32 * 1024 * 1024,
            max_waiting_requests: 512,
            max_waiting_requests_per_connection: 64,
            max_queued_response_bytes_per_connection: 32 * 1024 * 1024,
            max_queued_response_bytes_total: 256 * 1024 * 1024,
            max_queued_chunk_bytes: 4 * 1024 * 1024,
            send_progress_timeout: Duration::from_secs(20),
            transport: TransportOptions::default(),
            stateless_reset_secret: None,
        }
    }
}

impl ServerConfig {
    /// Checks every constraint of the reference's server config builder, and ours.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport.validate()?;
        let idle = self.transport.idle_timeout;
        check(
            (1..=3600).contains(&self.max_signature_age_secs),
            "max_signature_age_secs",
            "must be in 1..=3600",
        )?;
        check(
            !self.nonce_cleanup_interval.is_zero(),
            "nonce_cleanup_interval",
            "must be > 0",
        )?;
        check(self.max_connections > 0, "max_connections", "must be > 0")?;
        check(
            self.max_nonce_entries > 0,
            "max_nonce_entries",
            "must be > 0",
        )?;
        check(
            !self.handshake_timeout.is_zero() && self.handshake_timeout < idle,
            "handshake_timeout",
            "must be > 0 and < idle_timeout",
        )?;
        check(
            self.max_handshake_attempts_per_minute > 0,
            "max_handshake_attempts_per_minute",
            "must be > 0",
        )?;
        check(
            self.max_concurrent_bidi_streams > 0,
            "max_concurrent_bidi_streams",
            "must be > 0",
        )?;
        check(
            self.max_tracked_rate_ips > 0,
            "max_tracked_rate_ips",
            "must be > 0",
        )?;
        check(
            !self.handler_timeout.is_zero() && self.handler_timeout < idle,
            "handler_timeout",
            "must be > 0 and < idle_timeout",
        )?;
        check(
            self.max_frame_payload_bytes >= MIN_MAX_FRAME_PAYLOAD,
            "max_frame_payload_bytes",
            "must be >= 1 MiB",
        )?;
        check(
            self.streaming_channel_buffer > 0,
            "streaming_channel_buffer",
            "must be > 0",
        )?;
        check(
            self.max_unauthenticated_connections > 0,
            "max_unauthenticated_connections",
            "must be > 0",
        )?;
        check(
            self.max_unauthenticated_per_ip > 0,
            "max_unauthenticated_per_ip",
            "must be > 0",
        )?;
        check(
            self.max_request_bytes_per_connection > 0 && self.max_request_bytes_total > 0,
            "max_request_bytes_per_connection and max_request_bytes_total",
            "must be > 0",
        )?;
        check(
            self.max_waiting_requests > 0 && self.max_waiting_requests_per_connection > 0,
            "max_waiting_requests and max_waiting_requests_per_connection",
            "must be > 0",
        )?;
        check(
            self.max_queued_response_bytes_per_connection > 0
                && self.max_queued_response_bytes_total > 0
                && self.max_queued_chunk_bytes > 0,
            "response queue limits",
            "must be > 0",
        )?;
        check(
            !self.send_progress_timeout.is_zero(),
            "send_progress_timeout",
            "must be > 0",
        )?;
        check(
            !self.request_read_timeout.is_zero(),
            "request_read_timeout",
            "must be > 0",
        )
    }
}

#[cfg(test)]
mod tests {
    //! Pins the `Display` text of configuration errors: applications and logs match on it.

    use super::*;

    fn shown(result: Result<(), ConfigError>) -> String {
        result
            .expect_err("the configuration was accepted")
            .to_string()
    }

    /// The default transport settings with `change` made, checked.
    fn transport(change: impl FnOnce(&mut TransportOptions)) -> Result<(), ConfigError> {
        let mut options = TransportOptions::default();
        change(&mut options);
        options.validate()
    }

    /// The default server settings with `change` made, checked.
    fn server(change: impl FnOnce(&mut ServerConfig)) -> Result<(), ConfigError> {
        let mut config = ServerConfig::default();
        change(&mut config);
        config.validate()
    }

    #[test]
    fn display_of_config_errors_is_pinned() {
        let mut client = ClientConfig::default();
        client.reconnect.max_retries = 0;
        let cases = [
            (
                transport(|t| t.idle_timeout = Duration::ZERO),
                "idle_timeout must be > 0",
            ),
            (
                transport(|t| t.idle_timeout = Duration::from_secs(u64::MAX)),
                "idle_timeout is too large",
            ),
            (
                transport(|t| t.send_window = 0),
                "flow-control windows must be > 0",
            ),
            (
                transport(|t| t.initial_window = Some(1200)),
                "initial_window must be between 2400 bytes (two packets) and 16 MiB",
            ),
            (
                transport(|t| t.max_udp_payload = 1199),
                "max_udp_payload must be between 1200 and 65527 bytes",
            ),
            (
                client.validate(),
                "reconnect_max_retries must be at least 1",
            ),
            (
                server(|c| c.max_signature_age_secs = 0),
                "max_signature_age_secs must be in 1..=3600",
            ),
            (
                server(|c| c.max_request_bytes_total = 0),
                "max_request_bytes_per_connection and max_request_bytes_total must be > 0",
            ),
            (
                server(|c| c.handler_timeout = Duration::from_secs(1000)),
                "handler_timeout must be > 0 and < idle_timeout",
            ),
        ];
        for (result, detail) in cases {
            assert_eq!(shown(result), format!("config error: {detail}"));
        }
    }

    #[test]
    fn congestion_controllers_parse_by_name_and_show_the_same_name() {
        for cc in [
            CongestionControl::Cubic,
            CongestionControl::NewReno,
            CongestionControl::Bbr,
        ] {
            assert_eq!(cc.to_string().parse::<CongestionControl>(), Ok(cc));
        }
        assert_eq!("BBR".parse(), Ok(CongestionControl::Bbr));
        assert_eq!(CongestionControl::default(), CongestionControl::Cubic);
        let unknown = "vegas".parse::<CongestionControl>().unwrap_err();
        assert!(unknown.contains("cubic, newreno or bbr"), "{unknown}");
        for w in [None, Some(2400), Some(MAX_INITIAL_WINDOW)] {
            assert!(transport(|t| t.initial_window = w).is_ok(), "{w:?}");
        }
        assert!(transport(|t| t.initial_window = Some(MAX_INITIAL_WINDOW + 1)).is_err());
    }

    #[test]
    fn only_a_loopback_peer_lifts_the_mtu_ceiling() {
        let t = TransportOptions::default();
        assert_eq!(t.mtu_ceiling(false), DEFAULT_MAX_UDP_PAYLOAD);
        assert_eq!(t.mtu_ceiling(true), LOOPBACK_MAX_UDP_PAYLOAD);
        let jumbo = TransportOptions {
            max_udp_payload: 8_952,
            ..TransportOptions::default()
        };
        assert_eq!(jumbo.mtu_ceiling(false), 8_952);
        assert_eq!(jumbo.mtu_ceiling(true), LOOPBACK_MAX_UDP_PAYLOAD);
        let bbr = TransportOptions {
            congestion: CongestionControl::Bbr,
            ..TransportOptions::default()
        };
        assert_eq!(bbr.mtu_ceiling(true), DEFAULT_MAX_UDP_PAYLOAD);
        for (ip, loopback) in [
            ("127.0.0.1", true),
            ("127.3.2.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("2001:db8::1", false),
        ] {
            assert_eq!(is_loopback(ip.parse().unwrap()), loopback, "{ip}");
        }
        for ok in [1200, DEFAULT_MAX_UDP_PAYLOAD, MAX_UDP_PAYLOAD] {
            assert!(transport(|t| t.max_udp_payload = ok).is_ok(), "{ok}");
        }
        assert!(transport(|t| t.max_udp_payload = MAX_UDP_PAYLOAD + 1).is_err());
    }
}
