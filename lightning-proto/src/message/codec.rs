//! MessagePack helpers shared by the six messages: writing fields in the reference's
//! shortest form, and walking a struct given in array or map form.

use super::*;

// ---------------------------------------------------------------------------
// Encoding helpers

/// A head buffer with room for the frame header, filled in by [`assemble`].
pub(super) fn head_buffer(capacity: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(FRAME_HEADER_LEN + capacity);
    head.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    head
}

pub(super) fn assemble(
    ty: MessageType,
    mut head: Vec<u8>,
    body: Bytes,
    tail: Vec<u8>,
) -> Result<EncodedFrame, EncodeError> {
    let len = (head.len() - FRAME_HEADER_LEN)
        .saturating_add(body.len())
        .saturating_add(tail.len());
    let wire_len = u32::try_from(len).map_err(|_| EncodeError::PayloadTooLarge { len })?;
    head[..FRAME_HEADER_LEN].copy_from_slice(&encode_frame_header(ty, wire_len));
    Ok(EncodedFrame {
        segments: [Bytes::from(head), body, Bytes::from(tail)],
    })
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str, field: &'static str) -> Result<(), EncodeError> {
    write::str(out, s).map_err(|write::TooLong(len)| EncodeError::FieldTooLong { field, len })
}

pub(super) fn put_opt_str(
    out: &mut Vec<u8>,
    s: Option<&str>,
    field: &'static str,
) -> Result<(), EncodeError> {
    match s {
        Some(s) => put_str(out, s, field),
        None => {
            write::nil(out);
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// Decoding helpers

/// A field's wire name and the qualified name used in errors.
pub(super) struct FieldSpec {
    pub(super) name: &'static str,
    pub(super) path: &'static str,
}

pub(super) struct StructSpec {
    pub(super) message: &'static str,
    pub(super) fields: &'static [FieldSpec],
    /// Array-form elements that must be present (trailing fields with a
    /// decode default may be left out).
    pub(super) min_array_len: usize,
}

/// Walks a struct in array or map form, calling `field(index, reader,
/// depth)` for each field present; unknown map keys are skipped. The
/// caller notices absent fields from what it was not called for.
pub(super) fn decode_struct<'a>(
    payload: &'a [u8],
    spec: &StructSpec,
    mut field: impl FnMut(usize, &mut Reader<'a>, u16) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(payload);
    // Entering the top-level container uses one unit of the budget.
    let depth = MAX_DEPTH - 1;
    let marker = r.peek().map_err(at(spec.message))?;
    match ValueKind::of(marker) {
        ValueKind::Array => {
            let n = r.read_array_len().map_err(at(spec.message))?;
            if (n as usize) < spec.min_array_len || n as usize > spec.fields.len() {
                return Err(DecodeError::InvalidLength {
                    field: spec.message,
                    expected: spec.fields.len(),
                    found: n,
                });
            }
            for i in 0..n as usize {
                field(i, &mut r, depth)?;
            }
        }
        ValueKind::Map => {
            let n = r.read_map_len().map_err(at(spec.message))?;
            let mut seen = 0u32;
            for _ in 0..n {
                let key = r.read_key().map_err(at(spec.message))?;
                let index = match key {
                    Key::Name(name) => spec.fields.iter().position(|f| f.name.as_bytes() == name),
                    Key::Index(i) => usize::try_from(i).ok().filter(|&i| i < spec.fields.len()),
                };
                match index {
                    Some(i) => {
                        if seen & (1 << i) != 0 {
                            return Err(DecodeError::DuplicateField {
                                field: spec.fields[i].path,
                            });
                        }
                        seen |= 1 << i;
                        field(i, &mut r, depth)?;
                    }
                    None => r.skip_value(depth).map_err(at(spec.message))?,
                }
            }
        }
        found => {
            return Err(DecodeError::InvalidType {
                field: spec.message,
                expected: "array or map",
                found,
            })
        }
    }
    Ok(())
}

pub(super) fn required<T>(
    slot: Option<T>,
    spec: &StructSpec,
    index: usize,
) -> Result<T, DecodeError> {
    slot.ok_or(DecodeError::MissingField {
        field: spec.fields[index].path,
    })
}

pub(super) fn get_str(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    r.read_str().map(str::to_owned).map_err(at(field))
}

pub(super) fn get_opt_str(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    if r.read_nil_if_present().map_err(at(field))? {
        Ok(None)
    } else {
        get_str(r, field).map(Some)
    }
}

pub(super) fn get_u64(r: &mut Reader<'_>, field: &'static str) -> Result<u64, DecodeError> {
    r.read_uint().map_err(at(field))
}

pub(super) fn get_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    r.read_bool().map_err(at(field))
}

macro_rules! spec {
    ($msg:literal, min = $min:expr, [$($field:literal),* $(,)?]) => {
        StructSpec {
            message: $msg,
            fields: &[$(FieldSpec { name: $field, path: concat!($msg, ".", $field) }),*],
            min_array_len: $min,
        }
    };
}
