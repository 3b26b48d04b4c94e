//! What the miner core hands its driver: requests, events, chunk credit and answer errors.

use std::net::SocketAddr;
use std::time::Instant;

use super::SynapseIndex;
use crate::endpoint::RequestId;
use crate::handshake::HandshakeError;
use crate::message::DataMap;

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
///
/// [`Server::respond`]: super::Server::respond
/// [`Server::send_chunk`]: super::Server::send_chunk
/// [`Server::end_stream`]: super::Server::end_stream
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
    /// Where its handler sits: the index [`Server::register_synapse`] returned for it.
    ///
    /// [`Server::register_synapse`]: super::Server::register_synapse
    pub synapse: SynapseIndex,
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

/// Room reserved in a streaming response's chunk queue: chunks the application may send
/// that [`Server::send_chunk`](super::Server::send_chunk) will take whatever else happens
/// meanwhile.
///
/// The core is the one owner of streaming backpressure: a driver hands this credit to
/// the handler's sink and holds no chunk queue of its own. A chunk uses one of `chunks`
/// and its length of `bytes` (saturating); one chunk of any size may go when `bytes`
/// is the whole of `max_queued_chunk_bytes`, which happens only when nothing else is
/// queued or on its way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCredit {
    /// Chunks.
    pub chunks: usize,
    /// Bytes over those chunks.
    pub bytes: u64,
}

impl ChunkCredit {
    /// Whether a chunk of `len` bytes fits this credit, where `cap` is the server's
    /// `max_queued_chunk_bytes`.
    pub fn fits(&self, len: u64, cap: u64) -> bool {
        self.chunks > 0 && (len <= self.bytes || self.bytes >= cap)
    }

    /// Uses the credit of one chunk of `len` bytes (the same arithmetic on both sides).
    pub fn consume(&mut self, len: u64) {
        self.chunks = self.chunks.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
    }

    /// Adds a grant.
    pub fn add(&mut self, grant: ChunkCredit) {
        self.chunks = self.chunks.saturating_add(grant.chunks);
        self.bytes = self.bytes.saturating_add(grant.bytes);
    }
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
