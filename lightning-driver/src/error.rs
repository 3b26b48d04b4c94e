//! The one error type of the async API.

use std::time::Duration;

use lightning_proto::endpoint::{ClientError, ConfigError};

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
            ClientError::ConnectionLost(m) => Self::ConnectionLost(m),
            ClientError::Timeout(d) => Self::Timeout(d),
            ClientError::Transport(m) => Self::Protocol(m),
            ClientError::Stream(m) => Self::Stream(m),
            ClientError::Local(m) => Self::Local(m),
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
