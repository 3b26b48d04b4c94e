//! Stream framing (PROTOCOL §3): a 5-byte header (type byte, u32 BE payload
//! length) followed by the payload.
//!
//! [`FrameDecoder`] is incremental so that a transport can feed it whatever
//! the QUIC stream hands out, in pieces of any size, without reserving memory
//! for a length the peer merely *declared* until the reader admits it.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use crate::pool::{BufferPool, PooledBuf, POOLED_MIN_BYTES};

/// Size of the frame header: one type byte plus a big-endian u32 length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Default payload limit of the reference implementation (64 MiB).
pub const DEFAULT_MAX_FRAME_PAYLOAD: u32 = 64 * 1024 * 1024;

/// Smallest payload limit the reference's configuration checks accept (1 MiB).
pub const MIN_MAX_FRAME_PAYLOAD: u32 = 1024 * 1024;

/// Payloads above this size are read by the reference in 64 KiB pieces, which
/// changes the numbers its truncation message reports.
const PIECEWISE_READ_THRESHOLD: usize = 1024 * 1024;
const READ_PIECE: usize = 64 * 1024;

/// The type byte of a frame.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `0x01`, client → server.
    HandshakeRequest = 1,
    /// `0x02`, server → client.
    HandshakeResponse = 2,
    /// `0x03`, client → server.
    SynapsePacket = 3,
    /// `0x04`, server → client.
    SynapseResponse = 4,
    /// `0x05`, server → client.
    StreamChunk = 5,
    /// `0x06`, server → client.
    StreamEnd = 6,
}

impl MessageType {
    /// The wire value of this type.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The type for a wire byte, or `None` if the byte is not a known type.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::HandshakeRequest),
            2 => Some(Self::HandshakeResponse),
            3 => Some(Self::SynapsePacket),
            4 => Some(Self::SynapseResponse),
            5 => Some(Self::StreamChunk),
            6 => Some(Self::StreamEnd),
            _ => None,
        }
    }
}

impl TryFrom<u8> for MessageType {
    type Error = FrameError;

    fn try_from(byte: u8) -> Result<Self, FrameError> {
        Self::from_u8(byte).ok_or(FrameError::UnknownType(byte))
    }
}

impl From<MessageType> for u8 {
    fn from(ty: MessageType) -> u8 {
        ty.as_u8()
    }
}

/// The 5-byte header for a frame of `ty` carrying `payload_len` bytes.
pub fn encode_frame_header(ty: MessageType, payload_len: u32) -> [u8; FRAME_HEADER_LEN] {
    let len = payload_len.to_be_bytes();
    [ty.as_u8(), len[0], len[1], len[2], len[3]]
}

/// One complete frame. The payload is still undecoded MessagePack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame's type byte.
    pub ty: MessageType,
    /// The payload bytes (header excluded).
    pub payload: Bytes,
}

impl Frame {
    /// A frame of type `ty` with the given payload.
    pub fn new(ty: MessageType, payload: Bytes) -> Self {
        Self { ty, payload }
    }
}

/// A framing error. The `Display` strings are the reference's, so they can be
/// surfaced verbatim (the reference prefixes them with `transport error: `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The type byte is not one of `0x01..=0x06`.
    UnknownType(u8),
    /// The declared payload length is above the reader's limit.
    TooLarge {
        /// Declared payload length.
        len: u32,
        /// The reader's limit.
        max: u32,
    },
    /// The stream ended inside a frame.
    ///
    /// For a partial header, `received` counts header bytes and `expected`
    /// is 5. For a partial payload they count payload bytes against the
    /// declared length. (The reference reads payloads above 1 MiB in 64 KiB
    /// pieces and reports its position inside the current piece; `Display`
    /// reproduces that, the fields keep the whole-payload numbers.)
    Truncated {
        /// Bytes of the header or payload that did arrive.
        received: usize,
        /// Bytes of the header or payload that were expected.
        expected: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnknownType(byte) => write!(f, "unknown message type: 0x{byte:02x}"),
            Self::TooLarge { len, max } => {
                write!(f, "frame payload {len} bytes exceeds maximum {max}")
            }
            Self::Truncated { received, expected } => {
                let (received, expected) = reference_truncation_numbers(received, expected);
                write!(f, "stream closed after {received} of {expected} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// The numbers the reference prints for a payload that stopped after
/// `received` of `expected` bytes: above 1 MiB it reads 64 KiB pieces and
/// reports the offset inside the piece that was being filled.
fn reference_truncation_numbers(received: usize, expected: usize) -> (usize, usize) {
    if expected <= PIECEWISE_READ_THRESHOLD || received >= expected {
        return (received, expected);
    }
    let piece_start = received - received % READ_PIECE;
    (
        received - piece_start,
        READ_PIECE.min(expected - piece_start),
    )
}

/// A configured payload limit outside `MIN_MAX_FRAME_PAYLOAD..=u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidMaxFramePayload {
    /// Below [`MIN_MAX_FRAME_PAYLOAD`].
    TooSmall(usize),
    /// Above `u32::MAX`, which the length field cannot express.
    TooLarge(usize),
}

impl fmt::Display for InvalidMaxFramePayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooSmall(v) => write!(
                f,
                "max_frame_payload_bytes ({v}) must be at least {MIN_MAX_FRAME_PAYLOAD} (1 MB)"
            ),
            Self::TooLarge(v) => write!(
                f,
                "max_frame_payload_bytes ({v}) must not exceed {} (u32::MAX)",
                u32::MAX
            ),
        }
    }
}

impl std::error::Error for InvalidMaxFramePayload {}

/// Applies the reference's configuration check to a payload limit and
/// returns it as the `u32` the decoder works with.
pub fn validate_max_frame_payload(bytes: usize) -> Result<u32, InvalidMaxFramePayload> {
    let value = u32::try_from(bytes).map_err(|_| InvalidMaxFramePayload::TooLarge(bytes))?;
    if value < MIN_MAX_FRAME_PAYLOAD {
        return Err(InvalidMaxFramePayload::TooSmall(bytes));
    }
    Ok(value)
}

/// A payload whose header has been read.
#[derive(Debug)]
struct PartialPayload {
    ty: MessageType,
    len: u32,
    /// Bytes copied so far; stays empty while the payload may still arrive
    /// inside a single chunk and be sliced out of it.
    copied: Copied,
    /// The reader has admitted the declared length (see
    /// [`FrameDecoder::admit_declared`]): a payload that spans chunks gets its
    /// whole buffer at once instead of growing with what arrives.
    admitted: bool,
}

/// Where a payload that spans chunks is copied: a buffer that grows with what
/// arrives, or one of its whole length from the decoder's [`BufferPool`].
#[derive(Debug)]
enum Copied {
    Growing(BytesMut),
    Pooled(PooledBuf),
}

impl Default for Copied {
    fn default() -> Self {
        Self::Growing(BytesMut::new())
    }
}

impl Copied {
    fn len(&self) -> usize {
        match self {
            Self::Growing(b) => b.len(),
            Self::Pooled(b) => b.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend_from_slice(&mut self, data: &[u8]) {
        match self {
            Self::Growing(b) => b.extend_from_slice(data),
            Self::Pooled(b) => b.extend_from_slice(data),
        }
    }

    fn freeze(self) -> Bytes {
        match self {
            Self::Growing(b) => b.freeze(),
            Self::Pooled(b) => b.freeze(),
        }
    }
}

/// Incremental frame decoder.
///
/// Push stream data with [`push`](Self::push), then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. When the
/// stream ends, [`finish`](Self::finish) tells whether it ended inside a
/// frame. Memory held is only ever the bytes actually pushed, or the declared
/// length of a frame the reader admitted (which the limit bounds).
#[derive(Debug)]
pub struct FrameDecoder {
    max_payload: u32,
    /// Pushed data not yet consumed, in order.
    queue: VecDeque<Bytes>,
    queued: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload: Option<PartialPayload>,
    failed: Option<FrameError>,
    /// Without an admission, how far beyond the bytes that have arrived a payload
    /// spanning chunks may reserve (0: only what has arrived).
    reserve_ahead: usize,
    /// Where large payloads that get their whole buffer at once take it from.
    pool: Option<BufferPool>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder that rejects payloads longer than `max_payload`.
    ///
    /// Any limit is accepted here (tests use small ones); configuration
    /// code should pass user input through [`validate_max_frame_payload`]
    /// or use [`checked`](Self::checked).
    pub fn new(max_payload: u32) -> Self {
        Self {
            max_payload,
            queue: VecDeque::new(),
            queued: 0,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload: None,
            failed: None,
            reserve_ahead: 0,
            pool: None,
        }
    }

    /// Takes the buffers of payloads of at least [`POOLED_MIN_BYTES`] that get their
    /// whole length at once (admitted, or within the reserve ahead) from `pool`, and
    /// hands them back to it when the payload is dropped (see [`crate::pool`]).
    pub fn with_pool(mut self, pool: BufferPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Lets a payload that spans chunks reserve up to `bytes` beyond what has
    /// arrived (never beyond its declared length), for a reader with no budget of
    /// its own that admits lengths: a payload of up to about `bytes` then gets its
    /// whole buffer once instead of a growing one, while a peer that declares a
    /// large frame and sends little still makes us hold at most `bytes` more than
    /// it sent. The validator passes its stream receive window, which bounds what
    /// QUIC buffers for the stream anyway.
    pub fn reserving_ahead(mut self, bytes: usize) -> Self {
        self.reserve_ahead = bytes;
        self
    }

    /// The reader has admitted the declared length of the frame in progress
    /// (e.g. reserved it in its read budget). If the payload then spans
    /// chunks, it is copied into one buffer of exactly that length as it
    /// arrives, instead of a buffer that grows (and is copied again on every
    /// reallocation). A payload that arrives inside one chunk is still sliced
    /// out of it without copying. No effect before a header has been parsed.
    pub fn admit_declared(&mut self) {
        if let Some(p) = self.payload.as_mut() {
            p.admitted = true;
        }
    }

    /// A decoder whose limit passed the reference's configuration check.
    pub fn checked(max_payload: usize) -> Result<Self, InvalidMaxFramePayload> {
        validate_max_frame_payload(max_payload).map(Self::new)
    }

    /// The payload limit.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Appends stream data. Errors surface from the next
    /// [`next_frame`](Self::next_frame) call.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() || self.failed.is_some() {
            return;
        }
        self.queued += chunk.len();
        self.queue.push_back(chunk);
    }

    /// Bytes received but not yet returned as part of a frame (the header
    /// of the frame in progress included).
    pub fn buffered_len(&self) -> usize {
        let in_progress = match &self.payload {
            Some(p) => FRAME_HEADER_LEN + p.copied.len(),
            None => self.header_len,
        };
        self.queued + in_progress
    }

    /// The payload length declared by the header of the frame in progress, once
    /// [`next_frame`](Self::next_frame) has parsed that header; `None` before, and again
    /// once the frame has been returned.
    pub fn declared_len(&self) -> Option<u32> {
        self.payload.as_ref().map(|p| p.len)
    }

    /// Whether the decoder has failed; it then keeps returning that error.
    pub fn error(&self) -> Option<&FrameError> {
        self.failed.as_ref()
    }

    /// The next complete frame, `Ok(None)` if more data is needed.
    ///
    /// An unknown type byte is reported as soon as it has been pushed, an
    /// over-limit length as soon as the header is complete. After an error
    /// the decoder stays failed and returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.step();
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.queue.clear();
            self.queued = 0;
            self.payload = None;
        }
        result
    }

    fn step(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.payload.is_none() {
            while self.header_len < FRAME_HEADER_LEN {
                let Some(front) = self.queue.front_mut() else {
                    return Ok(None);
                };
                let n = (FRAME_HEADER_LEN - self.header_len).min(front.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&front[..n]);
                front.advance(n);
                if front.is_empty() {
                    self.queue.pop_front();
                }
                self.queued -= n;
                if self.header_len == 0 {
                    MessageType::try_from(self.header[0])?;
                }
                self.header_len += n;
            }
            let ty = MessageType::try_from(self.header[0])?;
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]);
            if len > self.max_payload {
                return Err(FrameError::TooLarge {
                    len,
                    max: self.max_payload,
                });
            }
            self.header_len = 0;
            self.payload = Some(PartialPayload {
                ty,
                len,
                copied: Copied::default(),
                admitted: false,
            });
        }

        let Some(partial) = self.payload.as_mut() else {
            return Ok(None);
        };
        let len = partial.len as usize;

        if partial.copied.is_empty() {
            // Fast path: the whole payload sits in the front chunk, so it can
            // be handed out as a slice of it.
            let whole = match self.queue.front_mut() {
                _ if len == 0 => Some(Bytes::new()),
                Some(front) if front.len() >= len => {
                    let payload = front.split_to(len);
                    if front.is_empty() {
                        self.queue.pop_front();
                    }
                    self.queued -= len;
                    Some(payload)
                }
                _ => None,
            };
            if let Some(payload) = whole {
                let ty = partial.ty;
                self.payload = None;
                return Ok(Some(Frame { ty, payload }));
            }
        }

        // The payload spans chunks: copy it once. Unless the reader admitted
        // the declared length, reserve only what has actually arrived.
        let missing = len - partial.copied.len();
        let want = if partial.admitted {
            missing
        } else {
            missing.min(self.queued.max(self.reserve_ahead))
        };
        match (&mut partial.copied, &self.pool) {
            (Copied::Growing(b), Some(pool))
                if b.is_empty() && want == missing && len >= POOLED_MIN_BYTES =>
            {
                // The whole payload's buffer at once: a reused one if the pool has it.
                partial.copied = Copied::Pooled(pool.take(len));
            }
            (Copied::Growing(b), _) => b.reserve(want),
            (Copied::Pooled(_), _) => {}
        }
        while partial.copied.len() < len {
            let Some(front) = self.queue.front_mut() else {
                return Ok(None);
            };
            let n = (len - partial.copied.len()).min(front.len());
            partial.copied.extend_from_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                self.queue.pop_front();
            }
            self.queued -= n;
        }
        let ty = partial.ty;
        let payload = std::mem::take(&mut partial.copied).freeze();
        self.payload = None;
        Ok(Some(Frame { ty, payload }))
    }

    /// Call when the stream has ended.
    ///
    /// `Ok(())` if everything buffered forms complete frames (normally none:
    /// drain [`next_frame`](Self::next_frame) first); otherwise the framing
    /// error the buffered bytes run into, usually
    /// [`FrameError::Truncated`]. A stream that ended before any byte is
    /// `Ok(())` here; a caller that required a frame reports
    /// `Truncated { received: 0, expected: 5 }` itself, as the reference does.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        // Walk the buffered bytes without consuming them.
        let mut header = self.header;
        let mut header_len = self.header_len;
        let mut payload = self
            .payload
            .as_ref()
            .map(|p| (p.len as usize, p.copied.len()));
        let mut chunks = self.queue.iter();
        let mut current: &[u8] = &[];
        loop {
            if current.is_empty() {
                match chunks.next() {
                    Some(chunk) => current = chunk,
                    None => break,
                }
            }
            match payload.as_mut() {
                None => {
                    let n = (FRAME_HEADER_LEN - header_len).min(current.len());
                    header[header_len..header_len + n].copy_from_slice(&current[..n]);
                    current = &current[n..];
                    header_len += n;
                    MessageType::try_from(header[0])?;
                    if header_len == FRAME_HEADER_LEN {
                        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                        if len > self.max_payload {
                            return Err(FrameError::TooLarge {
                                len,
                                max: self.max_payload,
                            });
                        }
                        header_len = 0;
                        payload = Some((len as usize, 0));
                    }
                }
                Some((len, got)) => {
                    let n = (*len - *got).min(current.len());
                    current = &current[n..];
                    *got += n;
                }
            }
            if let Some((len, got)) = payload {
                if got == len {
                    payload = None;
                }
            }
        }
        match payload {
            Some((len, got)) if got < len => Err(FrameError::Truncated {
                received: got,
                expected: len,
            }),
            _ if header_len > 0 => Err(FrameError::Truncated {
                received: header_len,
                expected: FRAME_HEADER_LEN,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_numbers_for_large_truncation() {
        // 2 MiB payload, 100 000 bytes in: the reference is 34 464 bytes
        // into its second 64 KiB piece.
        let err = FrameError::Truncated {
            received: 100_000,
            expected: 2 * 1024 * 1024,
        };
        assert_eq!(err.to_string(), "stream closed after 34464 of 65536 bytes");
        // The last piece is shorter than 64 KiB.
        let len = 1024 * 1024 + 10;
        let err = FrameError::Truncated {
            received: 1024 * 1024 + 3,
            expected: len,
        };
        assert_eq!(err.to_string(), "stream closed after 3 of 10 bytes");
        let err = FrameError::Truncated {
            received: 7,
            expected: 1024 * 1024,
        };
        assert_eq!(err.to_string(), "stream closed after 7 of 1048576 bytes");
    }
}
