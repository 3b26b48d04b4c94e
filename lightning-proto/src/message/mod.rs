//! The six wire messages (PROTOCOL §4) and their MessagePack codec.
//!
//! Encoding produces exactly the reference's bytes: positional arrays,
//! shortest integers, `nil` for `None`. Decoding accepts what the
//! reference's rmp-serde decoder accepts (§4.2): the array form, maps keyed
//! by field name or field index, any integer width, `bin` holding UTF-8 where
//! a string is expected, and trailing bytes after the value.
//!
//! Payload-sized fields are never copied: a decoded [`DataMap`] or
//! [`StreamChunk::data`] is a slice of the received payload, and an
//! [`EncodedFrame`] carries them as a shared segment next to a small header
//! and trailer.

#[macro_use]
mod codec;
mod data;
mod error;
mod named;

use bytes::Bytes;

use self::codec::*;
pub use self::data::{DataError, DataMap};
use self::error::at;
pub use self::error::{DecodeError, EncodeError};
pub use crate::msgpack::ValueKind;

use crate::frame::{encode_frame_header, Frame, MessageType, FRAME_HEADER_LEN};
use crate::msgpack::{write, Key, Reader, MAX_DEPTH};

/// A whole encoded frame (5-byte header + payload) as three segments: a
/// small head, the shared body (a [`DataMap`]'s or chunk's bytes, not
/// copied), and a small tail. Any segment may be empty.
///
/// Write the segments in order (e.g. with vectored writes); use
/// [`to_bytes`](Self::to_bytes) where one contiguous buffer is simpler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    segments: [Bytes; 3],
}

impl EncodedFrame {
    /// Total length, header included.
    pub fn len(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum()
    }

    /// Always false: a frame has at least its header. Provided for API
    /// symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments in wire order.
    pub fn segments(&self) -> impl Iterator<Item = &Bytes> {
        self.segments.iter()
    }

    /// The segments in wire order: head, body, tail.
    pub fn into_segments(self) -> [Bytes; 3] {
        self.segments
    }

    /// The frame as one buffer (copies; for tests and simple writers).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.len());
        for segment in &self.segments {
            out.extend_from_slice(segment);
        }
        Bytes::from(out)
    }
}

/// A message with a fixed frame type and a MessagePack codec.
pub trait WireMessage: Sized {
    /// The frame type byte this message travels under.
    const TYPE: MessageType;

    /// The whole frame, header included, in the reference's byte layout.
    fn encode(&self) -> Result<EncodedFrame, EncodeError>;

    /// Decodes a frame payload (header excluded). Payload-sized fields of
    /// the result share `payload`'s buffer.
    fn decode(payload: &Bytes) -> Result<Self, DecodeError>;
}

/// Client → server: authenticate a validator hotkey (`0x01`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// SS58 hotkey of the validator.
    pub validator_hotkey: String,
    /// UNIX seconds when signing.
    pub timestamp: u64,
    /// 32 hex characters.
    pub nonce: String,
    /// Base64 sr25519 signature (88 characters).
    pub signature: String,
}

/// Server → client: handshake verdict (`0x02`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The server's hotkey; empty in pre-auth rejections.
    pub miner_hotkey: String,
    /// Server UNIX seconds.
    pub timestamp: u64,
    /// Base64 sr25519 signature; empty when rejected.
    pub signature: String,
    /// Whether the handshake succeeded.
    pub accepted: bool,
    /// `conn_{validator_hotkey}_{unix_millis}` when accepted, else empty.
    pub connection_id: String,
    /// Base64 certificate fingerprint when accepted. The only field with a
    /// decode default: it may be absent.
    pub cert_fingerprint: Option<String>,
}

/// Client → server: a request (`0x03`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapsePacket {
    /// Handler name.
    pub synapse_type: String,
    /// Request payload.
    pub data: DataMap,
    /// Client UNIX seconds; the reference server ignores it.
    pub timestamp: u64,
}

/// Server → client: a unary response (`0x04`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapseResponse {
    /// Whether the handler succeeded.
    pub success: bool,
    /// Handler output; empty on error.
    pub data: DataMap,
    /// Server UNIX seconds; the reference client ignores it.
    pub timestamp: u64,
    /// Error text, `None` on success. Must be present (possibly nil) in the
    /// array form.
    pub error: Option<String>,
}

/// Server → client: one piece of a streamed response (`0x05`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    /// Raw chunk bytes.
    pub data: Bytes,
}

/// Server → client: end of a streamed response (`0x06`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// Whether the stream completed.
    pub success: bool,
    /// Error text, `None` on success.
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------
// The messages

const HANDSHAKE_REQUEST: StructSpec = spec!(
    "HandshakeRequest",
    min = 4,
    ["validator_hotkey", "timestamp", "nonce", "signature"]
);

impl WireMessage for HandshakeRequest {
    const TYPE: MessageType = MessageType::HandshakeRequest;

    fn encode(&self) -> Result<EncodedFrame, EncodeError> {
        let f = HANDSHAKE_REQUEST.fields;
        let mut head =
            head_buffer(16 + self.validator_hotkey.len() + self.nonce.len() + self.signature.len());
        head.push(0x94);
        put_str(&mut head, &self.validator_hotkey, f[0].path)?;
        write::uint(&mut head, self.timestamp);
        put_str(&mut head, &self.nonce, f[2].path)?;
        put_str(&mut head, &self.signature, f[3].path)?;
        assemble(Self::TYPE, head, Bytes::new(), Vec::new())
    }

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let spec = &HANDSHAKE_REQUEST;
        let (mut hotkey, mut timestamp, mut nonce, mut signature) = (None, None, None, None);
        decode_struct(payload, spec, |i, r, _| {
            let path = spec.fields[i].path;
            match i {
                0 => hotkey = Some(get_str(r, path)?),
                1 => timestamp = Some(get_u64(r, path)?),
                2 => nonce = Some(get_str(r, path)?),
                _ => signature = Some(get_str(r, path)?),
            }
            Ok(())
        })?;
        Ok(Self {
            validator_hotkey: required(hotkey, spec, 0)?,
            timestamp: required(timestamp, spec, 1)?,
            nonce: required(nonce, spec, 2)?,
            signature: required(signature, spec, 3)?,
        })
    }
}

const HANDSHAKE_RESPONSE: StructSpec = spec!(
    "HandshakeResponse",
    min = 5,
    [
        "miner_hotkey",
        "timestamp",
        "signature",
        "accepted",
        "connection_id",
        "cert_fingerprint",
    ]
);

impl WireMessage for HandshakeResponse {
    const TYPE: MessageType = MessageType::HandshakeResponse;

    fn encode(&self) -> Result<EncodedFrame, EncodeError> {
        let f = HANDSHAKE_RESPONSE.fields;
        let mut head = head_buffer(
            24 + self.miner_hotkey.len()
                + self.signature.len()
                + self.connection_id.len()
                + self.cert_fingerprint.as_ref().map_or(0, String::len),
        );
        head.push(0x96);
        put_str(&mut head, &self.miner_hotkey, f[0].path)?;
        write::uint(&mut head, self.timestamp);
        put_str(&mut head, &self.signature, f[2].path)?;
        write::boolean(&mut head, self.accepted);
        put_str(&mut head, &self.connection_id, f[4].path)?;
        put_opt_str(&mut head, self.cert_fingerprint.as_deref(), f[5].path)?;
        assemble(Self::TYPE, head, Bytes::new(), Vec::new())
    }

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let spec = &HANDSHAKE_RESPONSE;
        let (mut hotkey, mut timestamp, mut signature) = (None, None, None);
        let (mut accepted, mut connection_id, mut fingerprint) = (None, None, None);
        decode_struct(payload, spec, |i, r, _| {
            let path = spec.fields[i].path;
            match i {
                0 => hotkey = Some(get_str(r, path)?),
                1 => timestamp = Some(get_u64(r, path)?),
                2 => signature = Some(get_str(r, path)?),
                3 => accepted = Some(get_bool(r, path)?),
                4 => connection_id = Some(get_str(r, path)?),
                _ => fingerprint = Some(get_opt_str(r, path)?),
            }
            Ok(())
        })?;
        Ok(Self {
            miner_hotkey: required(hotkey, spec, 0)?,
            timestamp: required(timestamp, spec, 1)?,
            signature: required(signature, spec, 2)?,
            accepted: required(accepted, spec, 3)?,
            connection_id: required(connection_id, spec, 4)?,
            cert_fingerprint: fingerprint.flatten(),
        })
    }
}

const SYNAPSE_PACKET: StructSpec = spec!(
    "SynapsePacket",
    min = 3,
    ["synapse_type", "data", "timestamp"]
);

/// Encodes a [`SynapsePacket`] from borrowed parts, for callers that hold the synapse name
/// as `&str` (the client endpoint) and should not allocate a `String` just to encode it.
pub fn encode_synapse_packet(
    synapse_type: &str,
    data: &DataMap,
    timestamp: u64,
) -> Result<EncodedFrame, EncodeError> {
    let f = SYNAPSE_PACKET.fields;
    // Exact capacities: a `Vec` that is full converts to `Bytes` without a second
    // allocation for a shared header.
    let mut head = head_buffer(1 + write::str_size(synapse_type.len()));
    head.push(0x93);
    put_str(&mut head, synapse_type, f[0].path)?;
    let mut tail = Vec::with_capacity(write::uint_size(timestamp));
    write::uint(&mut tail, timestamp);
    assemble(MessageType::SynapsePacket, head, data.raw().clone(), tail)
}

impl WireMessage for SynapsePacket {
    const TYPE: MessageType = MessageType::SynapsePacket;

    fn encode(&self) -> Result<EncodedFrame, EncodeError> {
        encode_synapse_packet(&self.synapse_type, &self.data, self.timestamp)
    }

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let spec = &SYNAPSE_PACKET;
        let (mut synapse_type, mut data, mut timestamp) = (None, None, None);
        decode_struct(payload, spec, |i, r, depth| {
            let path = spec.fields[i].path;
            match i {
                0 => synapse_type = Some(get_str(r, path)?),
                1 => data = Some(DataMap::read(r, payload, depth, path)?),
                _ => timestamp = Some(get_u64(r, path)?),
            }
            Ok(())
        })?;
        Ok(Self {
            synapse_type: required(synapse_type, spec, 0)?,
            data: required(data, spec, 1)?,
            timestamp: required(timestamp, spec, 2)?,
        })
    }
}

const SYNAPSE_RESPONSE: StructSpec = spec!(
    "SynapseResponse",
    min = 4,
    ["success", "data", "timestamp", "error"]
);

impl WireMessage for SynapseResponse {
    const TYPE: MessageType = MessageType::SynapseResponse;

    fn encode(&self) -> Result<EncodedFrame, EncodeError> {
        let f = SYNAPSE_RESPONSE.fields;
        let mut head = head_buffer(2);
        head.push(0x94);
        write::boolean(&mut head, self.success);
        // Exact, as for `SynapsePacket`.
        let error_size = self.error.as_ref().map_or(1, |e| write::str_size(e.len()));
        let mut tail = Vec::with_capacity(write::uint_size(self.timestamp) + error_size);
        write::uint(&mut tail, self.timestamp);
        put_opt_str(&mut tail, self.error.as_deref(), f[3].path)?;
        assemble(Self::TYPE, head, self.data.raw().clone(), tail)
    }

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let spec = &SYNAPSE_RESPONSE;
        let (mut success, mut data, mut timestamp, mut error) = (None, None, None, None);
        decode_struct(payload, spec, |i, r, depth| {
            let path = spec.fields[i].path;
            match i {
                0 => success = Some(get_bool(r, path)?),
                1 => data = Some(DataMap::read(r, payload, depth, path)?),
                2 => timestamp = Some(get_u64(r, path)?),
                _ => error = Some(get_opt_str(r, path)?),
            }
            Ok(())
        })?;
        Ok(Self {
            success: required(success, spec, 0)?,
            data: required(data, spec, 1)?,
            timestamp: required(timestamp, spec, 2)?,
            error: error.flatten(),
        })
    }
}

const STREAM_CHUNK: StructSpec = spec!("StreamChunk", min = 1, ["data"]);

/// `StreamChunk.data`: `bin` (what is sent), or `str`, or an array of
/// integers 0..=255 — the forms serde_bytes lets through.
fn get_chunk_data(
    r: &mut Reader<'_>,
    payload: &Bytes,
    depth: u16,
    field: &'static str,
) -> Result<Bytes, DecodeError> {
    let marker = r.peek().map_err(at(field))?;
    match ValueKind::of(marker) {
        ValueKind::Bin | ValueKind::Str => {
            let (bytes, _) = r.read_str_or_bin("bin").map_err(at(field))?;
            Ok(payload.slice_ref(bytes))
        }
        ValueKind::Array => {
            if depth <= 1 {
                return Err(DecodeError::DepthLimitExceeded { field });
            }
            // The count was checked against the bytes left, so this
            // allocation is bounded by the payload actually received.
            let n = r.read_array_len().map_err(at(field))?;
            let mut out = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let v = r.read_uint().map_err(at(field))?;
                let byte = u8::try_from(v)
                    .map_err(|_| DecodeError::IntegerOutOfRange { field, value: v })?;
                out.push(byte);
            }
            Ok(Bytes::from(out))
        }
        found => Err(DecodeError::InvalidType {
            field,
            expected: "bin",
            found,
        }),
    }
}

impl WireMessage for StreamChunk {
    const TYPE: MessageType = MessageType::StreamChunk;

    fn encode(&self) -> Result<EncodedFrame, EncodeError> {
        let f = STREAM_CHUNK.fields;
        let mut head = head_buffer(6);
        head.push(0x91);
        write::bin_len(&mut head, self.data.len()).map_err(|write::TooLong(len)| {
            EncodeError::FieldTooLong {
                field: f[0].path,
                len,
            }
        })?;
        assemble(Self::TYPE, head, self.data.clone(), Vec::new())
    }

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let spec = &STREAM_CHUNK;
        let mut data = None;
        decode_struct(payload, spec, |i, r, depth| {
            data = Some(get_chunk_data(r, payload, depth, spec.fields[i].path)?);
            Ok(())
        })?;
        Ok(Self {
            data: required(data, spec, 0)?,
        })
    }
}

const STREAM_END: StructSpec = spec!("StreamEnd", min = 2, ["success", "error"]);

impl WireMessage for StreamEnd {
    const TYPE: MessageType = MessageType::StreamEnd;

    fn encode(&self) -> Result<EncodedFrame, EncodeError> {
        let f = STREAM_END.fields;
        let mut head = head_buffer(8 + self.error.as_ref().map_or(0, String::len));
        head.push(0x92);
        write::boolean(&mut head, self.success);
        put_opt_str(&mut head, self.error.as_deref(), f[1].path)?;
        assemble(Self::TYPE, head, Bytes::new(), Vec::new())
    }

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let spec = &STREAM_END;
        let (mut success, mut error) = (None, None);
        decode_struct(payload, spec, |i, r, _| {
            let path = spec.fields[i].path;
            match i {
                0 => success = Some(get_bool(r, path)?),
                _ => error = Some(get_opt_str(r, path)?),
            }
            Ok(())
        })?;
        Ok(Self {
            success: required(success, spec, 0)?,
            error: error.flatten(),
        })
    }
}

/// Any of the six messages, as read from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `0x01`.
    HandshakeRequest(HandshakeRequest),
    /// `0x02`.
    HandshakeResponse(HandshakeResponse),
    /// `0x03`.
    SynapsePacket(SynapsePacket),
    /// `0x04`.
    SynapseResponse(SynapseResponse),
    /// `0x05`.
    StreamChunk(StreamChunk),
    /// `0x06`.
    StreamEnd(StreamEnd),
}

impl Message {
    /// Decodes a frame's payload according to its type byte.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let p = &frame.payload;
        Ok(match frame.ty {
            MessageType::HandshakeRequest => Self::HandshakeRequest(HandshakeRequest::decode(p)?),
            MessageType::HandshakeResponse => {
                Self::HandshakeResponse(HandshakeResponse::decode(p)?)
            }
            MessageType::SynapsePacket => Self::SynapsePacket(SynapsePacket::decode(p)?),
            MessageType::SynapseResponse => Self::SynapseResponse(SynapseResponse::decode(p)?),
            MessageType::StreamChunk => Self::StreamChunk(StreamChunk::decode(p)?),
            MessageType::StreamEnd => Self::StreamEnd(StreamEnd::decode(p)?),
        })
    }

    /// The frame type of this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::HandshakeRequest(_) => MessageType::HandshakeRequest,
            Self::HandshakeResponse(_) => MessageType::HandshakeResponse,
            Self::SynapsePacket(_) => MessageType::SynapsePacket,
            Self::SynapseResponse(_) => MessageType::SynapseResponse,
            Self::StreamChunk(_) => MessageType::StreamChunk,
            Self::StreamEnd(_) => MessageType::StreamEnd,
        }
    }

    /// Encodes the message as a whole frame.
    pub fn encode(&self) -> Result<EncodedFrame, EncodeError> {
        match self {
            Self::HandshakeRequest(m) => m.encode(),
            Self::HandshakeResponse(m) => m.encode(),
            Self::SynapsePacket(m) => m.encode(),
            Self::SynapseResponse(m) => m.encode(),
            Self::StreamChunk(m) => m.encode(),
            Self::StreamEnd(m) => m.encode(),
        }
    }
}

macro_rules! into_message {
    ($($ty:ident),*) => {$(
        impl From<$ty> for Message {
            fn from(m: $ty) -> Self {
                Self::$ty(m)
            }
        }
    )*};
}

into_message!(
    HandshakeRequest,
    HandshakeResponse,
    SynapsePacket,
    SynapseResponse,
    StreamChunk,
    StreamEnd
);
