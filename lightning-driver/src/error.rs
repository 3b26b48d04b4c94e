//! The one error type of the async API, and the structured causes it carries.

use std::net::SocketAddr;
use std::time::Duration;

use lightning_proto::endpoint::{ClientError, BUSY_ERROR_CODE};
use lightning_proto::message::{DataError, EncodeError};

pub use lightning_proto::endpoint::{
    ConfigError, ConnectFailure, ConnectionEnd, HandshakeProtocolError, LocalError, ResponseError,
    StreamFailure,
};
pub use lightning_proto::frame::FrameError;
pub use lightning_proto::handshake::HandshakeError;
pub use lightning_proto::reconnect::ReconnectError;

/// Everything that can go wrong in a Lightning client or server call.
///
/// `Display` reads `"<kind> error: <detail>"`, like btlightning, so logs look alike on a
/// mixed subnet. Each variant's payload says what happened; its own `Display` is the
/// `<detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LightningError {
    /// A setting is out of range, a key or wallet could not be loaded, or something is missing.
    Config(ConfigCause),
    /// No QUIC connection: refused, unreachable, timed out, in reconnect backoff, or over the
    /// connection cap.
    Connect(ConnectCause),
    /// The Lightning handshake failed or the peer refused it (wrong hotkey, no permit,
    /// bad signature, no authenticated route).
    Handshake(HandshakeCause),
    /// No complete answer within the query's timeout.
    Timeout(Duration),
    /// The connection closed while the query was in flight.
    ConnectionLost(ConnectionEnd),
    /// The miner's handler failed; the text is the miner's error string (PROTOCOL §6.3).
    /// It stays a `String` because it is the peer's own free-form message: there is no
    /// structure on the wire to keep.
    Remote(String),
    /// The peer broke framing or message rules.
    Protocol(ProtocolCause),
    /// A streaming response failed mid-way.
    Stream(StreamFailure),
    /// A local failure: encoding the request, or a socket error.
    Local(LocalCause),
    /// The endpoint has been stopped or closed.
    Closed,
    /// The miner hotkey given is not an SS58 address, so no miner could ever prove it;
    /// refused before anything was sent.
    InvalidHotkey {
        /// The hotkey as given.
        hotkey: String,
        /// Why it is not an SS58 address.
        reason: lightning_proto::identity::ss58::Ss58Error,
    },
    /// The request's frame is larger than the client's own `max_frame_payload_bytes`;
    /// refused before anything was sent.
    RequestTooLarge {
        /// Payload bytes of the request frame (MessagePack of the whole request).
        size: u64,
        /// The client's `max_frame_payload_bytes`.
        limit: u32,
    },
    /// The miner reset the response stream (QUIC `RESET_STREAM`) instead of answering.
    StreamReset {
        /// The application error code of the reset.
        code: u64,
    },
}

impl std::fmt::Display for LightningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(m) => write!(f, "config error: {m}"),
            Self::Connect(m) => write!(f, "connection error: {m}"),
            Self::Handshake(m) => write!(f, "handshake error: {m}"),
            Self::Timeout(d) => write!(f, "transport error: query timed out after {d:?}"),
            Self::ConnectionLost(m) => write!(f, "connection error: connection lost: {m}"),
            Self::Remote(m) => write!(f, "handler error: {m}"),
            Self::Protocol(m) => write!(f, "transport error: {m}"),
            Self::Stream(m) => write!(f, "stream error: {m}"),
            Self::Local(m) => write!(f, "local error: {m}"),
            Self::Closed => f.write_str("connection error: endpoint closed"),
            Self::InvalidHotkey { hotkey, reason } => write!(
                f,
                "config error: miner hotkey {hotkey:?} is not a valid SS58 address ({reason})"
            ),
            Self::RequestTooLarge { size, limit } => write!(
                f,
                "local error: request frame of {size} bytes exceeds the client's \
                 max_frame_payload_bytes of {limit} bytes; not sent"
            ),
            Self::StreamReset { code } if *code == u64::from(BUSY_ERROR_CODE) => write!(
                f,
                "transport error: the miner reset the stream (code {code:#x}: busy, too many \
                 requests already waiting to be read)"
            ),
            Self::StreamReset { code } => {
                write!(
                    f,
                    "transport error: the miner reset the stream (code {code})"
                )
            }
        }
    }
}

impl std::error::Error for LightningError {}

/// Why a configuration was refused ([`LightningError::Config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigCause {
    /// The endpoint refused its settings or identity.
    Endpoint(ConfigError),
    /// The builder was given no identity to sign handshakes with.
    NoSigner,
    /// `require_validator_permit` is on, but there is neither a permitted set nor a
    /// permit resolver, so no validator could ever get in.
    NoPermitSource,
    /// The wallet's hotkey file could not be loaded. Kept as the loader's text: its error
    /// carries an `io::Error`, which cannot be cloned or compared.
    Wallet(String),
    /// `ServerBuilder::drivers` was given a count outside 1 to
    /// [`MAX_DRIVERS`](crate::MAX_DRIVERS).
    Drivers {
        /// The count given.
        given: usize,
    },
}

impl std::fmt::Display for ConfigCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Endpoint(e) => write!(f, "{}", e.detail()),
            Self::NoSigner => f.write_str("No signer configured"),
            Self::NoPermitSource => {
                f.write_str("require_validator_permit needs a permitted set or a permit resolver")
            }
            Self::Wallet(e) => write!(f, "cannot load wallet hotkey: {e}"),
            Self::Drivers { given } => write!(
                f,
                "drivers must be between 1 and {}, not {given}",
                crate::MAX_DRIVERS
            ),
        }
    }
}

/// Why no connection could be had ([`LightningError::Connect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectCause {
    /// The QUIC connection could not be established.
    Failed(ConnectFailure),
    /// The QUIC connection to this address did not complete within `connect_timeout`.
    TimedOut(SocketAddr),
    /// The reconnect policy does not allow a new attempt yet (PROTOCOL §8.4).
    Reconnect(ReconnectError),
    /// Adding the address would pass `max_connections`, this many.
    TooManyConnections(usize),
    /// The axon's IP is not an IP literal (host names are not resolved).
    InvalidAddress(String),
}

impl std::fmt::Display for ConnectCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(e) => write!(f, "{e}"),
            // The core's wording, kept in one place.
            Self::TimedOut(a) => write!(f, "{}", ClientError::ConnectTimeout(*a).detail()),
            Self::Reconnect(e) => write!(f, "{e}"),
            Self::TooManyConnections(n) => {
                write!(f, "{}", ClientError::TooManyConnections(*n).detail())
            }
            Self::InvalidAddress(ip) => write!(f, "Invalid address: {ip}"),
        }
    }
}

/// Why the Lightning handshake failed ([`LightningError::Handshake`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeCause {
    /// The miner's response failed a check, the miner refused us, or our signer failed.
    Refused(HandshakeError),
    /// The handshake did not finish within `connect_timeout`.
    TimedOut,
    /// The miner answered with something that is not a handshake response.
    Protocol(HandshakeProtocolError),
    /// The connection at this address has no authenticated session for this hotkey.
    NoRoute {
        /// Hotkey asked for.
        hotkey: String,
        /// Address of the connection.
        addr: SocketAddr,
    },
}

impl std::fmt::Display for HandshakeCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) => write!(f, "{e}"),
            // The core's wording, kept in one place.
            Self::TimedOut => write!(f, "{}", ClientError::HandshakeTimeout.detail()),
            Self::Protocol(e) => write!(f, "{e}"),
            Self::NoRoute { hotkey, addr } => {
                let core = ClientError::NoRoute {
                    hotkey: hotkey.clone(),
                    addr: *addr,
                };
                write!(f, "{}", core.detail())?;
                Ok(())
            }
        }
    }
}

/// How the miner's answer broke the rules ([`LightningError::Protocol`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolCause {
    /// The response violated message rules (PROTOCOL §6.1), or could not be read.
    Response(ResponseError),
    /// The response stream's framing was broken or ended early (PROTOCOL §3).
    Frame(FrameError),
    /// The answer's data map does not deserialize into the type asked for.
    ResponseData(DataError),
}

impl std::fmt::Display for ProtocolCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Response(e) => write!(f, "{e}"),
            // No frame at all: the likely reason is worth more than the byte count.
            Self::Frame(e @ FrameError::Truncated { received: 0, .. }) => write!(
                f,
                "the miner ended the stream without an answer ({e}); a miner does this \
                 with a request it cannot read, such as one over its frame size limit"
            ),
            Self::Frame(e) => write!(f, "{e}"),
            Self::ResponseData(e) => write!(f, "Failed to parse response data: {e}"),
        }
    }
}

/// Why a call failed on our side ([`LightningError::Local`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalCause {
    /// The endpoint could not send the request.
    Request(LocalError),
    /// The request's data could not be serialized into a data map.
    SerializeRequest(DataError),
    /// The request could not be encoded into a frame.
    EncodeRequest(EncodeError),
    /// The UDP socket could not be bound to this address.
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        error: IoFailure,
    },
    /// The bound socket could not report its address.
    Socket(IoFailure),
}

impl std::fmt::Display for LocalCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request(e) => write!(f, "{e}"),
            Self::SerializeRequest(e) => write!(f, "Failed to serialize request: {e}"),
            Self::EncodeRequest(e) => write!(f, "cannot encode the request: {e}"),
            Self::Bind { addr, error } => write!(f, "cannot bind {addr}: {error}"),
            Self::Socket(e) => write!(f, "{e}"),
        }
    }
}

/// An OS error, kept as its kind and text: `io::Error` itself can be neither cloned nor
/// compared, and `LightningError` must be both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure {
    /// What kind of failure it was.
    pub kind: std::io::ErrorKind,
    /// The error's text, as `io::Error` shows it.
    pub message: String,
}

impl From<std::io::Error> for IoFailure {
    fn from(e: std::io::Error) -> Self {
        Self {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for IoFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ClientError> for LightningError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Connect(failure) => Self::Connect(ConnectCause::Failed(failure)),
            ClientError::ConnectTimeout(addr) => Self::Connect(ConnectCause::TimedOut(addr)),
            ClientError::Reconnect(e) => Self::Connect(ConnectCause::Reconnect(e)),
            ClientError::TooManyConnections(n) => {
                Self::Connect(ConnectCause::TooManyConnections(n))
            }
            ClientError::Handshake(e) => Self::Handshake(HandshakeCause::Refused(e)),
            ClientError::HandshakeTimeout => Self::Handshake(HandshakeCause::TimedOut),
            ClientError::HandshakeProtocol(e) => Self::Handshake(HandshakeCause::Protocol(e)),
            ClientError::NoRoute { hotkey, addr } => {
                Self::Handshake(HandshakeCause::NoRoute { hotkey, addr })
            }
            ClientError::ConnectionLost(end) => Self::ConnectionLost(end),
            ClientError::Timeout(d) => Self::Timeout(d),
            ClientError::Transport(e) => Self::Protocol(ProtocolCause::Response(e)),
            ClientError::StreamReset { code } => Self::StreamReset { code },
            ClientError::Frame(e) => Self::Protocol(ProtocolCause::Frame(e)),
            ClientError::Stream(failure) => Self::Stream(failure),
            ClientError::Local(e) => Self::Local(LocalCause::Request(e)),
        }
    }
}

impl From<ConfigError> for LightningError {
    fn from(e: ConfigError) -> Self {
        Self::Config(ConfigCause::Endpoint(e))
    }
}

/// Result alias of the async API.
pub type Result<T, E = LightningError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    //! Pins the `Display` text of every variant: applications and logs match on it, and
    //! btlightning prints the same, so a refactor of the payloads must leave it as it is.

    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use lightning_proto::endpoint::{
        ClientConfig, ClientError, ConnectFailure, ConnectionEnd, HandshakeProtocolError,
        LocalError, ResponseError, StreamFailure, BUSY_ERROR_CODE,
    };
    use lightning_proto::frame::{FrameError, MessageType};
    use lightning_proto::handshake::HandshakeError;
    use lightning_proto::message::{DataMap, EncodeError};
    use lightning_proto::reconnect::ReconnectError;

    use super::{ConfigCause, LightningError, LocalCause};
    use crate::{Identity, Keypair, KeypairSigner, QuicAxonInfo, QuicRequest, QuicResponse};

    fn addr() -> SocketAddr {
        "192.0.2.7:8091".parse().unwrap()
    }

    fn client_error(e: ClientError) -> LightningError {
        LightningError::from(e)
    }

    /// The `ConfigError` the core's client gives for `config`, `hotkey` and a seed-1 key.
    fn core_config_error(config: ClientConfig, hotkey: &str) -> LightningError {
        let signer = Arc::new(KeypairSigner::new(Keypair::from_seed(&[1; 32])));
        let Err(e) = lightning_proto::endpoint::Client::new(
            config,
            hotkey,
            signer,
            [0; 32],
            Instant::now(),
            0,
        ) else {
            panic!("the client accepted a bad configuration");
        };
        e.into()
    }

    /// Config errors, built through the code paths that produce them where one is public.
    fn config_cases() -> Vec<(LightningError, String)> {
        let other = Keypair::from_seed(&[2; 32]).hotkey();
        let zero_connect = ClientConfig {
            connect_timeout: Duration::ZERO,
            ..ClientConfig::default()
        };
        let mut zero_backoff = ClientConfig::default();
        zero_backoff.reconnect.initial_backoff = Duration::ZERO;
        let Err(wallet) = Identity::from_wallet(Path::new("/nonexistent"), "w", "h") else {
            panic!("loaded a wallet that does not exist");
        };
        vec![
            (
                core_config_error(zero_connect, &other),
                "config error: connect_timeout must be > 0".into(),
            ),
            (
                core_config_error(zero_backoff, &other),
                "config error: reconnect_initial_backoff must be non-zero".into(),
            ),
            (
                core_config_error(ClientConfig::default(), &other),
                format!("config error: hotkey {other} does not match the signer's public key"),
            ),
            (
                core_config_error(ClientConfig::default(), "notakey"),
                "config error: invalid hotkey notakey: wrong decoded length for an SS58 address"
                    .into(),
            ),
            (
                wallet,
                "config error: cannot load wallet hotkey: hotkey file /nonexistent/w/hotkeys/h \
                 not found"
                    .into(),
            ),
            (
                LightningError::Config(ConfigCause::NoSigner),
                "config error: No signer configured".into(),
            ),
            (
                LightningError::Config(ConfigCause::NoPermitSource),
                "config error: require_validator_permit needs a permitted set or a permit \
                 resolver"
                    .into(),
            ),
        ]
    }

    fn connect_cases() -> Vec<(LightningError, String)> {
        let bad_ip = QuicAxonInfo::new("5Hot", "not-an-ip", 8091, 4);
        vec![
            (
                client_error(ClientError::Connect(ConnectFailure::NotConnected)),
                "connection error: not connected".into(),
            ),
            (
                client_error(ClientError::Connect(ConnectFailure::NoPeerCertificate)),
                "connection error: peer certificate not available for fingerprinting".into(),
            ),
            (
                client_error(ClientError::Connect(ConnectFailure::Ended(
                    ConnectionEnd::Drained,
                ))),
                "connection error: connection drained".into(),
            ),
            (
                client_error(ClientError::ConnectTimeout(addr())),
                "connection error: Connection to 192.0.2.7:8091 timed out".into(),
            ),
            (
                client_error(ClientError::Reconnect(ReconnectError::InProgress)),
                "connection error: reconnection already in progress".into(),
            ),
            (
                client_error(ClientError::TooManyConnections(3)),
                "connection error: connection limit of 3 addresses reached".into(),
            ),
            (
                bad_ip.addr().unwrap_err(),
                "connection error: Invalid address: not-an-ip".into(),
            ),
        ]
    }

    fn handshake_cases() -> Vec<(LightningError, String)> {
        vec![
            (
                client_error(ClientError::Handshake(HandshakeError::BadSignature)),
                "handshake error: signature verification failed".into(),
            ),
            (
                client_error(ClientError::HandshakeTimeout),
                "handshake error: handshake timed out".into(),
            ),
            (
                client_error(ClientError::HandshakeProtocol(
                    HandshakeProtocolError::UnexpectedType(MessageType::StreamChunk),
                )),
                "handshake error: Expected HandshakeResponse, got StreamChunk".into(),
            ),
            (
                client_error(ClientError::NoRoute {
                    hotkey: "5Hot".into(),
                    addr: addr(),
                }),
                "handshake error: no authenticated route for 5Hot at 192.0.2.7:8091".into(),
            ),
        ]
    }

    fn connection_lost_and_remote_cases() -> Vec<(LightningError, String)> {
        let failed = |error: Option<&str>| QuicResponse {
            success: false,
            data: DataMap::default(),
            latency: Duration::ZERO,
            error: error.map(str::to_string),
        };
        vec![
            (
                client_error(ClientError::ConnectionLost(ConnectionEnd::Drained)),
                "connection error: connection lost: connection drained".into(),
            ),
            (
                client_error(ClientError::ConnectionLost(ConnectionEnd::ClosedHere(
                    "disconnected".into(),
                ))),
                "connection error: connection lost: disconnected".into(),
            ),
            (
                failed(Some("handler timed out")).into_result().unwrap_err(),
                "handler error: handler timed out".into(),
            ),
            (
                failed(None).into_result().unwrap_err(),
                "handler error: unknown error".into(),
            ),
        ]
    }

    fn protocol_cases() -> Vec<(LightningError, String)> {
        #[derive(serde::Deserialize)]
        struct Needs {
            #[allow(dead_code)]
            field: u32,
        }
        let empty = QuicResponse {
            success: true,
            data: DataMap::default(),
            latency: Duration::ZERO,
            error: None,
        };
        vec![
            (
                client_error(ClientError::Transport(ResponseError::ChunkOnUnaryQuery)),
                "transport error: received StreamChunk on non-streaming query; use \
                 query_axon_stream for streaming synapses"
                    .into(),
            ),
            (
                client_error(ClientError::Transport(ResponseError::UnexpectedType(
                    MessageType::HandshakeResponse,
                ))),
                "transport error: unexpected response type: HandshakeResponse".into(),
            ),
            (
                client_error(ClientError::Frame(FrameError::Truncated {
                    received: 0,
                    expected: 5,
                })),
                "transport error: the miner ended the stream without an answer (stream closed \
                 after 0 of 5 bytes); a miner does this with a request it cannot read, such as \
                 one over its frame size limit"
                    .into(),
            ),
            (
                client_error(ClientError::Frame(FrameError::TooLarge { len: 9, max: 8 })),
                "transport error: frame payload 9 bytes exceeds maximum 8".into(),
            ),
            (
                empty.deserialize_data::<Needs>().map(|_| ()).unwrap_err(),
                "transport error: Failed to parse response data: missing field `field`".into(),
            ),
        ]
    }

    fn stream_cases() -> Vec<(LightningError, String)> {
        vec![
            (
                client_error(ClientError::Stream(StreamFailure::TooLarge { limit: 10 })),
                "stream error: streaming response exceeded 10 byte aggregate limit".into(),
            ),
            (
                client_error(ClientError::Stream(StreamFailure::Remote(
                    "stream processing failed".into(),
                ))),
                "stream error: stream processing failed".into(),
            ),
            (
                client_error(ClientError::Stream(StreamFailure::UnaryAnswer(None))),
                "stream error: server returned SynapseResponse error on streaming path: no \
                 detail"
                    .into(),
            ),
        ]
    }

    fn local_cases() -> Vec<(LightningError, String)> {
        vec![
            (
                client_error(ClientError::Local(LocalError::UnknownPeer)),
                "local error: unknown peer".into(),
            ),
            (
                client_error(ClientError::Local(LocalError::RawBytesDidNotFit {
                    written: 1,
                    len: 2,
                })),
                "local error: only 1 of 2 raw bytes fit the stream's send credit".into(),
            ),
            (
                client_error(ClientError::Local(LocalError::Encode(
                    EncodeError::PayloadTooLarge { len: 7 },
                ))),
                "local error: request cannot be encoded: frame payload 7 bytes exceeds u32::MAX"
                    .into(),
            ),
            (
                QuicRequest::from_typed("s", &5u32).unwrap_err(),
                "local error: Failed to serialize request: expected map from serialized struct"
                    .into(),
            ),
            (
                LightningError::Local(LocalCause::Bind {
                    addr: addr(),
                    error: std::io::Error::from(std::io::ErrorKind::AddrInUse).into(),
                }),
                "local error: cannot bind 192.0.2.7:8091: address in use".into(),
            ),
            (
                LightningError::Local(LocalCause::Socket(
                    std::io::Error::from(std::io::ErrorKind::AddrNotAvailable).into(),
                )),
                "local error: address not available".into(),
            ),
            (
                LightningError::Local(LocalCause::EncodeRequest(EncodeError::PayloadTooLarge {
                    len: 7,
                })),
                "local error: cannot encode the request: frame payload 7 bytes exceeds u32::MAX"
                    .into(),
            ),
        ]
    }

    fn other_cases() -> Vec<(LightningError, String)> {
        vec![
            (
                LightningError::Timeout(Duration::from_millis(1500)),
                "transport error: query timed out after 1.5s".into(),
            ),
            (
                LightningError::Closed,
                "connection error: endpoint closed".into(),
            ),
            (
                LightningError::InvalidHotkey {
                    hotkey: "x".into(),
                    reason: lightning_proto::identity::ss58::Ss58Error::BadBase58,
                },
                "config error: miner hotkey \"x\" is not a valid SS58 address (not valid base58)"
                    .into(),
            ),
            (
                LightningError::RequestTooLarge { size: 9, limit: 8 },
                "local error: request frame of 9 bytes exceeds the client's \
                 max_frame_payload_bytes of 8 bytes; not sent"
                    .into(),
            ),
            (
                LightningError::StreamReset {
                    code: u64::from(BUSY_ERROR_CODE),
                },
                format!(
                    "transport error: the miner reset the stream (code {:#x}: busy, too many \
                     requests already waiting to be read)",
                    BUSY_ERROR_CODE
                ),
            ),
            (
                LightningError::StreamReset { code: 3 },
                "transport error: the miner reset the stream (code 3)".into(),
            ),
        ]
    }

    #[test]
    fn display_of_every_variant_is_pinned() {
        let cases = [
            config_cases(),
            connect_cases(),
            handshake_cases(),
            connection_lost_and_remote_cases(),
            protocol_cases(),
            stream_cases(),
            local_cases(),
            other_cases(),
        ];
        let mismatches: Vec<String> = cases
            .into_iter()
            .flatten()
            .filter(|(error, expected)| error.to_string() != *expected)
            .map(|(error, expected)| format!("{error:?}\n  shows {error}\n  wanted {expected}"))
            .collect();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }
}
