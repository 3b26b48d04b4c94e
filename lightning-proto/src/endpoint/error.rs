//! Errors surfaced by the endpoint roles.

use std::net::SocketAddr;
use std::time::Duration;

use crate::frame::FrameError;
use crate::handshake::HandshakeError;
use crate::reconnect::ReconnectError;

/// Why a client operation, connection or request failed.
///
/// The variants say what happened; `Display` carries the same detail the reference prints
/// where it has an equivalent, so logs read alike in a mixed deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The QUIC connection could not be established (refused, unreachable, TLS failure).
    Connect(String),
    /// The QUIC connection did not complete within `connect_timeout`.
    ConnectTimeout(SocketAddr),
    /// The reconnect policy does not allow a new attempt yet (PROTOCOL §8.4).
    Reconnect(ReconnectError),
    /// The miner's handshake response failed a check, or the miner rejected us.
    Handshake(HandshakeError),
    /// The handshake did not finish within `connect_timeout`.
    HandshakeTimeout,
    /// The miner answered the handshake with something that is not a handshake response.
    HandshakeProtocol(String),
    /// The connection at this address has no authenticated session for this hotkey.
    NoRoute {
        /// Hotkey asked for.
        hotkey: String,
        /// Address of the connection.
        addr: SocketAddr,
    },
    /// Adding this address would exceed `max_connections`.
    TooManyConnections(usize),
    /// The connection closed while the request was in flight.
    ConnectionLost(String),
    /// The request's deadline passed.
    Timeout(Duration),
    /// The response violated message rules (PROTOCOL §6.1), or could not be read.
    Transport(String),
    /// The response stream's framing was broken or ended early (PROTOCOL §3); a miner
    /// that cannot read a request ends the stream with no frame at all
    /// (`Truncated { received: 0, .. }`).
    Frame(FrameError),
    /// The miner reset the response stream with this application error code.
    StreamReset {
        /// The code of the reset (`BUSY_ERROR_CODE` when too many requests waited).
        code: u64,
    },
    /// A streaming response failed (PROTOCOL §7).
    Stream(String),
    /// The request could not be signed or encoded.
    Local(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(m) => write!(f, "connection error: {m}"),
            Self::ConnectTimeout(a) => write!(f, "connection error: Connection to {a} timed out"),
            Self::Reconnect(e) => write!(f, "connection error: {e}"),
            Self::Handshake(e) => write!(f, "handshake error: {e}"),
            Self::HandshakeTimeout => write!(f, "handshake error: handshake timed out"),
            Self::HandshakeProtocol(m) => write!(f, "handshake error: {m}"),
            Self::NoRoute { hotkey, addr } => write!(
                f,
                "handshake error: no authenticated route for {hotkey} at {addr}"
            ),
            Self::TooManyConnections(n) => {
                write!(
                    f,
                    "connection error: connection limit of {n} addresses reached"
                )
            }
            Self::ConnectionLost(m) => write!(f, "connection error: connection lost: {m}"),
            Self::Timeout(d) => write!(f, "transport error: query timed out after {d:?}"),
            Self::Transport(m) => write!(f, "transport error: {m}"),
            Self::Frame(e) => write!(f, "transport error: {e}"),
            Self::StreamReset { code } => {
                write!(f, "transport error: stream reset by peer: code {code}")
            }
            Self::Stream(m) => write!(f, "stream error: {m}"),
            Self::Local(m) => write!(f, "local error: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}
