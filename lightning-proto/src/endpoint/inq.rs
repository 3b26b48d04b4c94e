//! Bytes coming off a QUIC receive stream into a frame decoder: the one stream reader
//! both roles use (the miner in `server/requests.rs` under its read budget, the validator
//! in `client/responses.rs` without one). The mirror of `outq.rs`.

use quinn_proto::{Chunks, ReadError, VarInt};

use crate::frame::FrameDecoder;

/// What one pull from a receive stream gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pulled {
    /// This many bytes went into the decoder.
    Bytes(usize),
    /// The peer finished the stream: nothing more will come.
    Fin,
    /// Nothing more for now; `Readable` will come when there is.
    Blocked,
    /// The peer reset the stream with this code.
    Reset(VarInt),
}

/// Moves one chunk of at most `max` bytes from `chunks` into `decoder` (by reference
/// count: quinn's `Bytes` are kept, not copied).
pub(crate) fn pull_chunk(
    chunks: &mut Chunks<'_>,
    decoder: &mut FrameDecoder,
    max: usize,
) -> Pulled {
    match chunks.next(max) {
        Ok(Some(chunk)) => {
            let n = chunk.bytes.len();
            decoder.push(chunk.bytes);
            Pulled::Bytes(n)
        }
        Ok(None) => Pulled::Fin,
        Err(ReadError::Blocked) => Pulled::Blocked,
        Err(ReadError::Reset(code)) => Pulled::Reset(code),
    }
}
