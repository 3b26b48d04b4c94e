//! Errors surfaced by the endpoint roles.

use std::net::SocketAddr;
use std::time::Duration;

use crate::frame::{FrameError, MessageType};
use crate::handshake::HandshakeError;
use crate::message::{DecodeError, EncodeError};
use crate::reconnect::ReconnectError;

/// Why a client operation, connection or request failed.
///
/// The variants say what happened; `Display` carries the same detail the reference prints
/// where it has an equivalent, so logs read alike in a mixed deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The QUIC connection could not be established (refused, unreachable, TLS failure).
    Connect(ConnectFailure),
    /// The QUIC connection did not complete within `connect_timeout`.
    ConnectTimeout(SocketAddr),
    /// The reconnect policy does not allow a new attempt yet (PROTOCOL §8.4).
    Reconnect(ReconnectError),
    /// The miner's handshake response failed a check, or the miner rejected us.
    Handshake(HandshakeError),
    /// The handshake did not finish within `connect_timeout`.
    HandshakeTimeout,
    /// The miner answered the handshake with something that is not a handshake response.
    HandshakeProtocol(HandshakeProtocolError),
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
    ConnectionLost(ConnectionEnd),
    /// The request's deadline passed.
    Timeout(Duration),
    /// The response violated message rules (PROTOCOL §6.1), or could not be read.
    Transport(ResponseError),
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
    Stream(StreamFailure),
    /// The request could not be sent for a local reason.
    Local(LocalError),
}

impl ClientError {
    /// The word before `" error: "` in `Display`, as the reference groups its errors.
    fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_)
            | Self::ConnectTimeout(_)
            | Self::Reconnect(_)
            | Self::TooManyConnections(_)
            | Self::ConnectionLost(_) => "connection",
            Self::Handshake(_)
            | Self::HandshakeTimeout
            | Self::HandshakeProtocol(_)
            | Self::NoRoute { .. } => "handshake",
            Self::Timeout(_) | Self::Transport(_) | Self::Frame(_) | Self::StreamReset { .. } => {
                "transport"
            }
            Self::Stream(_) => "stream",
            Self::Local(_) => "local",
        }
    }

    /// The message without its `"<kind> error: "` prefix, for errors that wrap this one
    /// under a prefix of their own.
    pub fn detail(&self) -> impl std::fmt::Display + '_ {
        Detail(self)
    }
}

/// An error whose `Display` is a `"<kind> error: "` prefix and a detail, which errors
/// wrapping it show under their own prefix.
pub(super) trait FmtDetail {
    /// Writes the detail: the message without its prefix.
    fn fmt_detail(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result;
}

/// Shows an error's detail ([`FmtDetail`]).
pub(super) struct Detail<'a, E>(pub(super) &'a E);

impl<E: FmtDetail> std::fmt::Display for Detail<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt_detail(f)
    }
}

impl FmtDetail for ClientError {
    fn fmt_detail(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(m) => write!(f, "{m}"),
            ClientError::ConnectTimeout(a) => write!(f, "Connection to {a} timed out"),
            ClientError::Reconnect(e) => write!(f, "{e}"),
            ClientError::Handshake(e) => write!(f, "{e}"),
            ClientError::HandshakeTimeout => f.write_str("handshake timed out"),
            ClientError::HandshakeProtocol(m) => write!(f, "{m}"),
            ClientError::NoRoute { hotkey, addr } => {
                write!(f, "no authenticated route for {hotkey} at {addr}")
            }
            ClientError::TooManyConnections(n) => {
                write!(f, "connection limit of {n} addresses reached")
            }
            ClientError::ConnectionLost(m) => write!(f, "connection lost: {m}"),
            ClientError::Timeout(d) => write!(f, "query timed out after {d:?}"),
            ClientError::Transport(m) => write!(f, "{m}"),
            ClientError::Frame(e) => write!(f, "{e}"),
            ClientError::StreamReset { code } => write!(f, "stream reset by peer: code {code}"),
            ClientError::Stream(m) => write!(f, "{m}"),
            ClientError::Local(m) => write!(f, "{m}"),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} error: {}", self.kind(), self.detail())
    }
}

impl std::error::Error for ClientError {}

/// Why a QUIC connection could not be established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// quinn refused to start the connection (bad address, no configuration, …).
    Quic(quinn_proto::ConnectError),
    /// TLS completed but gave no certificate to fingerprint (PROTOCOL §8).
    NoPeerCertificate,
    /// The connection ended before its handshakes could finish.
    Ended(ConnectionEnd),
    /// There is no established connection to that address.
    NotConnected,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Quic(e) => write!(f, "{e}"),
            Self::NoPeerCertificate => {
                f.write_str("peer certificate not available for fingerprinting")
            }
            Self::Ended(end) => write!(f, "{end}"),
            Self::NotConnected => f.write_str("not connected"),
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// quinn reported it lost (closed by either side, timed out, reset, …).
    Lost(quinn_proto::ConnectionError),
    /// quinn drained it without reporting it lost first.
    Drained,
    /// We closed it, for this reason (`Client::disconnect`).
    ClosedHere(String),
}

impl std::fmt::Display for ConnectionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lost(e) => write!(f, "{e}"),
            Self::Drained => f.write_str("connection drained"),
            Self::ClosedHere(reason) => f.write_str(reason),
        }
    }
}

/// What was wrong with the miner's answer to a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeProtocolError {
    /// A frame of another type came back.
    UnexpectedType(MessageType),
    /// The `HandshakeResponse` did not decode.
    Undecodable(DecodeError),
}

impl std::fmt::Display for HandshakeProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnexpectedType(ty) => write!(f, "Expected HandshakeResponse, got {ty:?}"),
            Self::Undecodable(e) => write!(f, "Failed to parse HandshakeResponse: {e}"),
        }
    }
}

/// What was wrong with a unary response (PROTOCOL §6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The response stream could not be read.
    Read(quinn_proto::ReadableError),
    /// The `SynapseResponse` did not decode.
    Undecodable(DecodeError),
    /// A `StreamChunk` came back to a query that did not ask for a stream.
    ChunkOnUnaryQuery,
    /// A frame of another type came back.
    UnexpectedType(MessageType),
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(e) => write!(f, "stream read failed: {e}"),
            Self::Undecodable(e) => write!(f, "Failed to parse SynapseResponse: {e}"),
            Self::ChunkOnUnaryQuery => f.write_str(
                "received StreamChunk on non-streaming query; use query_axon_stream for \
                 streaming synapses",
            ),
            Self::UnexpectedType(ty) => write!(f, "unexpected response type: {ty:?}"),
        }
    }
}

/// Why a streaming response failed (PROTOCOL §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFailure {
    /// The chunks together passed the client's `max_stream_payload_bytes`.
    TooLarge {
        /// That limit.
        limit: u64,
    },
    /// A `StreamChunk` did not decode.
    UndecodableChunk(DecodeError),
    /// The miner ended the stream with this error text.
    Remote(String),
    /// The miner ended the stream as failed, without a text.
    RemoteNoDetail,
    /// The `StreamEnd` did not decode.
    UndecodableEnd(DecodeError),
    /// The miner answered with a unary `SynapseResponse`, with this error text if any.
    UnaryAnswer(Option<String>),
    /// A frame of another type came back.
    UnexpectedType(MessageType),
}

impl std::fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => {
                write!(
                    f,
                    "streaming response exceeded {limit} byte aggregate limit"
                )
            }
            Self::UndecodableChunk(e) => write!(f, "Failed to parse StreamChunk: {e}"),
            Self::Remote(m) => f.write_str(m),
            Self::RemoteNoDetail => f.write_str("stream ended with failure status"),
            Self::UndecodableEnd(e) => write!(f, "Failed to parse StreamEnd: {e}"),
            Self::UnaryAnswer(detail) => write!(
                f,
                "server returned SynapseResponse error on streaming path: {}",
                detail.as_deref().unwrap_or("no detail")
            ),
            Self::UnexpectedType(ty) => {
                write!(f, "unexpected message type during streaming: {ty:?}")
            }
        }
    }
}

/// Why a request could not be sent, for a reason on our side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalError {
    /// The request could not be encoded.
    Encode(EncodeError),
    /// The miner's address is not one the client knows (any more).
    UnknownPeer,
    /// The connection has no stream credit left (test hooks only).
    NoStreamCredit,
    /// Raw test bytes did not fit a fresh stream's send credit (test hooks only).
    RawBytesDidNotFit {
        /// Bytes accepted.
        written: usize,
        /// Bytes given.
        len: usize,
    },
}

impl std::fmt::Display for LocalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encode(e) => write!(f, "request cannot be encoded: {e}"),
            Self::UnknownPeer => f.write_str("unknown peer"),
            Self::NoStreamCredit => f.write_str("no stream credit"),
            Self::RawBytesDidNotFit { written, len } => write!(
                f,
                "only {written} of {len} raw bytes fit the stream's send credit"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Pins `ClientError`'s `Display`, the reference's wording that logs and the driver's
    //! own error (which reuses [`ClientError::detail`]) depend on.

    use std::time::Duration;

    use super::*;

    #[test]
    fn display_of_every_variant_is_pinned() {
        let addr: SocketAddr = "192.0.2.7:8091".parse().unwrap();
        let cases = [
            (
                ClientError::Connect(ConnectFailure::NotConnected),
                "connection error: not connected",
            ),
            (
                ClientError::ConnectTimeout(addr),
                "connection error: Connection to 192.0.2.7:8091 timed out",
            ),
            (
                ClientError::Reconnect(ReconnectError::InProgress),
                "connection error: reconnection already in progress",
            ),
            (
                ClientError::Handshake(HandshakeError::Rejected),
                "handshake error: Handshake rejected by miner",
            ),
            (
                ClientError::HandshakeTimeout,
                "handshake error: handshake timed out",
            ),
            (
                ClientError::HandshakeProtocol(HandshakeProtocolError::UnexpectedType(
                    MessageType::StreamEnd,
                )),
                "handshake error: Expected HandshakeResponse, got StreamEnd",
            ),
            (
                ClientError::NoRoute {
                    hotkey: "5Hot".into(),
                    addr,
                },
                "handshake error: no authenticated route for 5Hot at 192.0.2.7:8091",
            ),
            (
                ClientError::TooManyConnections(2),
                "connection error: connection limit of 2 addresses reached",
            ),
            (
                ClientError::ConnectionLost(ConnectionEnd::Drained),
                "connection error: connection lost: connection drained",
            ),
            (
                ClientError::Timeout(Duration::from_millis(1500)),
                "transport error: query timed out after 1.5s",
            ),
            (
                ClientError::Transport(ResponseError::ChunkOnUnaryQuery),
                "transport error: received StreamChunk on non-streaming query; use \
                 query_axon_stream for streaming synapses",
            ),
            (
                ClientError::Frame(FrameError::UnknownType(9)),
                "transport error: unknown message type: 0x09",
            ),
            (
                ClientError::StreamReset { code: 7 },
                "transport error: stream reset by peer: code 7",
            ),
            (
                ClientError::Stream(StreamFailure::RemoteNoDetail),
                "stream error: stream ended with failure status",
            ),
            (
                ClientError::Local(LocalError::NoStreamCredit),
                "local error: no stream credit",
            ),
        ];
        for (error, shown) in cases {
            assert_eq!(error.to_string(), shown, "{error:?}");
        }
    }
}
