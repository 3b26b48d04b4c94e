//! Why a message could not be encoded or decoded.

use std::fmt;

use crate::msgpack::{self, ValueKind};

/// Why a payload could not be decoded. `field` names the message, or the
/// message and field (`SynapsePacket.timestamp`), where the problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload ended inside a value, or a length claims more bytes than
    /// are left.
    UnexpectedEof {
        /// Where.
        field: &'static str,
    },
    /// A value of the wrong MessagePack type.
    InvalidType {
        /// Where.
        field: &'static str,
        /// What the field takes.
        expected: &'static str,
        /// What was there.
        found: ValueKind,
    },
    /// A negative integer in an unsigned field.
    NegativeInteger {
        /// Where.
        field: &'static str,
    },
    /// An integer too large for the field (a chunk byte above 255).
    IntegerOutOfRange {
        /// Where.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A string (or string key) that is not UTF-8.
    InvalidUtf8 {
        /// Where.
        field: &'static str,
    },
    /// An array-form message with too few or too many elements.
    InvalidLength {
        /// Which message.
        field: &'static str,
        /// Number of fields of the message.
        expected: usize,
        /// Number of elements found.
        found: u32,
    },
    /// A required field absent from a map-form message.
    MissingField {
        /// Which field.
        field: &'static str,
    },
    /// A field given twice in a map-form message.
    DuplicateField {
        /// Which field.
        field: &'static str,
    },
    /// Nesting deeper than the reference's limit of 1024 levels.
    DepthLimitExceeded {
        /// Where.
        field: &'static str,
    },
    /// The marker `0xc1`, which MessagePack never uses.
    ReservedMarker {
        /// Where.
        field: &'static str,
    },
    /// Bytes after the map given to [`DataMap::from_raw`](crate::message::DataMap::from_raw).
    TrailingBytes {
        /// Where.
        field: &'static str,
        /// How many bytes follow the map.
        count: usize,
    },
}

impl DecodeError {
    /// The message or field the error is about.
    pub fn field(&self) -> &'static str {
        match *self {
            Self::UnexpectedEof { field }
            | Self::InvalidType { field, .. }
            | Self::NegativeInteger { field }
            | Self::IntegerOutOfRange { field, .. }
            | Self::InvalidUtf8 { field }
            | Self::InvalidLength { field, .. }
            | Self::MissingField { field }
            | Self::DuplicateField { field }
            | Self::DepthLimitExceeded { field }
            | Self::ReservedMarker { field }
            | Self::TrailingBytes { field, .. } => field,
        }
    }

    pub(crate) fn from_reader(err: msgpack::Error, field: &'static str) -> Self {
        match err {
            msgpack::Error::Eof => Self::UnexpectedEof { field },
            msgpack::Error::Type { expected, found } => Self::InvalidType {
                field,
                expected,
                found,
            },
            msgpack::Error::Negative => Self::NegativeInteger { field },
            msgpack::Error::Utf8 => Self::InvalidUtf8 { field },
            msgpack::Error::Depth => Self::DepthLimitExceeded { field },
            msgpack::Error::Reserved => Self::ReservedMarker { field },
        }
    }
}

/// Shorthand for attaching a field to reader errors.
pub(super) fn at(field: &'static str) -> impl Fn(msgpack::Error) -> DecodeError {
    move |err| DecodeError::from_reader(err, field)
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEof { field } => write!(f, "{field}: unexpected end of payload"),
            Self::InvalidType {
                field,
                expected,
                found,
            } => write!(f, "{field}: expected {expected}, found {found}"),
            Self::NegativeInteger { field } => {
                write!(
                    f,
                    "{field}: expected unsigned integer, found a negative one"
                )
            }
            Self::IntegerOutOfRange { field, value } => {
                write!(f, "{field}: integer {value} out of range")
            }
            Self::InvalidUtf8 { field } => write!(f, "{field}: string is not valid UTF-8"),
            Self::InvalidLength {
                field,
                expected,
                found,
            } => write!(
                f,
                "{field}: array had incorrect length: expected {expected} elements, found {found}"
            ),
            Self::MissingField { field } => write!(f, "missing field {field}"),
            Self::DuplicateField { field } => write!(f, "duplicate field {field}"),
            Self::DepthLimitExceeded { field } => write!(f, "{field}: depth limit exceeded"),
            Self::ReservedMarker { field } => write!(f, "{field}: reserved marker 0xc1"),
            Self::TrailingBytes { field, count } => {
                write!(f, "{field}: {count} bytes after the end of the map")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A message that cannot be framed: MessagePack lengths and the frame's
/// length field are limited to `u32::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload would exceed `u32::MAX` bytes.
    PayloadTooLarge {
        /// Payload length that was needed.
        len: usize,
    },
    /// A string or byte field longer than `u32::MAX` bytes.
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The reference's wording.
            Self::PayloadTooLarge { len } => {
                write!(f, "frame payload {len} bytes exceeds u32::MAX")
            }
            Self::FieldTooLong { field, len } => {
                write!(
                    f,
                    "{field}: {len} bytes exceed the MessagePack length limit"
                )
            }
        }
    }
}

impl std::error::Error for EncodeError {}
