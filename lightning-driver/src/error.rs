//! The one error type of the async API.

use std::time::Duration;

use lightning_proto::endpoint::{ClientError, ConfigError, BUSY_ERROR_CODE};
use lightning_proto::frame::FrameError;

/// Everything that can go wrong in a Lightning client or server call.
///
/// `Display` reads `"<kind> error: <detail>"`, like btlightning, so logs look alike on a
/// mixed subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LightningError {
    /// A setting is out of range, a key or wallet could not be loaded, or something is missing.
    Config(String),
    /// No QUIC connection: refused, unreachable, timed out, in reconnect backoff, or over the
    /// connection cap.
    Connect(String),
    /// The Lightning handshake failed or the peer refused it (wrong hotkey, no permit,
    /// bad signature, no authenticated route).
    Handshake(String),
    /// No complete answer within the query's timeout.
    Timeout(Duration),
    /// The connection closed while the query was in flight.
    ConnectionLost(String),
    /// The miner's handler failed; the text is the miner's error string (PROTOCOL §6.3).
    Remote(String),
    /// The peer broke framing or message rules.
    Protocol(String),
    /// A streaming response failed mid-way.
    Stream(String),
    /// A local failure: signing, encoding, or a socket error.
    Local(String),
    /// The endpoint has been stopped or closed.
    Closed,
    /// The miner hotkey given is not an SS58 address, so no miner could ever prove it;
    /// refused before anything was sent.
    InvalidHotkey {
        /// The hotkey as given.
        hotkey: String,
        /// Why it is not an SS58 address.
        reason: String,
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

impl From<ClientError> for LightningError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Connect(_)
            | ClientError::ConnectTimeout(_)
            | ClientError::Reconnect(_)
            | ClientError::TooManyConnections(_) => Self::Connect(strip_kind(&e)),
            ClientError::Handshake(_)
            | ClientError::HandshakeTimeout
            | ClientError::HandshakeProtocol(_)
            | ClientError::NoRoute { .. } => Self::Handshake(strip_kind(&e)),
            ClientError::ConnectionLost(end) => Self::ConnectionLost(end.to_string()),
            ClientError::Timeout(d) => Self::Timeout(d),
            ClientError::Transport(e) => Self::Protocol(e.to_string()),
            ClientError::StreamReset { code } => Self::StreamReset { code },
            ClientError::Frame(FrameError::Truncated { received: 0, .. }) => {
                Self::Protocol(format!(
                    "the miner ended the stream without an answer ({}); a miner does this \
                 with a request it cannot read, such as one over its frame size limit",
                    strip_kind(&e)
                ))
            }
            ClientError::Frame(_) => Self::Protocol(strip_kind(&e)),
            ClientError::Stream(failure) => Self::Stream(failure.to_string()),
            ClientError::Local(e) => Self::Local(e.to_string()),
        }
    }
}

impl From<ConfigError> for LightningError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.0)
    }
}

/// `ClientError`'s display minus its `"<kind> error: "` prefix, which our own adds back.
fn strip_kind(e: &ClientError) -> String {
    let text = e.to_string();
    match text.split_once(" error: ") {
        Some((_, rest)) => rest.to_string(),
        None => text,
    }
}

/// Result alias of the async API.
pub type Result<T, E = LightningError> = std::result::Result<T, E>;
