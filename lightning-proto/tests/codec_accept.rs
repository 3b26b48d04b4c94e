//! What the decoders accept and reject (PROTOCOL §4.2), checked two ways:
//! explicit cases for every row of the table, and a differential property
//! test against rmp-serde decoding into structs shaped like the reference's
//! (same field names, types and serde attributes).

// Test helpers outside #[test] fns may panic on impossible inputs too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use lightning_proto::message::{
    DataMap, DecodeError, HandshakeRequest, HandshakeResponse, StreamChunk, StreamEnd,
    SynapsePacket, SynapseResponse, ValueKind, WireMessage,
};
use proptest::prelude::*;
use rmpv::Value;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

fn unhex(s: &str) -> Bytes {
    let compact: String = s.split_whitespace().collect();
    Bytes::from(hex::decode(compact).expect("hex"))
}

fn hexstr(s: &str) -> String {
    hex::encode(s.as_bytes())
}

/// str8 encoding of a string (the form the reference writes for 32..=255).
fn fixstr(s: &str) -> String {
    assert!(s.len() < 32);
    format!("{:02x}{}", 0xa0 + s.len(), hexstr(s))
}

// ---------------------------------------------------------------------------
// Map forms

#[test]
fn map_form_by_field_name_in_any_order() {
    // {"timestamp": 5, "signature": "s", "validator_hotkey": "v", "nonce": "n"}
    let payload = unhex(&format!(
        "84 {} 05 {} {} {} {} {} {}",
        fixstr("timestamp"),
        fixstr("signature"),
        fixstr("s"),
        fixstr("validator_hotkey"),
        fixstr("v"),
        fixstr("nonce"),
        fixstr("n"),
    ));
    let req = HandshakeRequest::decode(&payload).unwrap();
    assert_eq!(
        req,
        HandshakeRequest {
            validator_hotkey: "v".into(),
            timestamp: 5,
            nonce: "n".into(),
            signature: "s".into(),
        }
    );
}

#[test]
fn map_form_by_field_index() {
    // {1: {"k": 1}, 0: "echo", 2: 7}
    let payload = unhex(&format!(
        "83 01 81 {} 01 00 {} 02 07",
        fixstr("k"),
        fixstr("echo")
    ));
    let packet = SynapsePacket::decode(&payload).unwrap();
    assert_eq!(packet.synapse_type, "echo");
    assert_eq!(packet.timestamp, 7);
    assert_eq!(packet.data.get("k"), Some(Value::from(1)));
    // Index keys in a wider encoding are still indexes.
    let payload = unhex("82 cd0000 c3 cf0000000000000001 c0");
    let end = StreamEnd::decode(&payload).unwrap();
    assert_eq!(
        end,
        StreamEnd {
            success: true,
            error: None
        }
    );
}

#[test]
fn map_form_unknown_keys_are_skipped() {
    // {"x": [1, {"y": nil}], "success": false, 9: "ignored", "error": "e"}
    let payload = unhex(&format!(
        "84 {} 92 01 81 {} c0 {} c2 09 {} {} {}",
        fixstr("x"),
        fixstr("y"),
        fixstr("success"),
        fixstr("ignored"),
        fixstr("error"),
        fixstr("e"),
    ));
    let end = StreamEnd::decode(&payload).unwrap();
    assert_eq!(
        end,
        StreamEnd {
            success: false,
            error: Some("e".into())
        }
    );
}

#[test]
fn map_form_missing_fields() {
    // Missing Option fields become None.
    let payload = unhex(&format!("81 {} c3", fixstr("success")));
    assert_eq!(StreamEnd::decode(&payload).unwrap().error, None);
    let payload = unhex(&format!(
        "83 {} c3 {} 80 {} 01",
        fixstr("success"),
        fixstr("data"),
        fixstr("timestamp")
    ));
    let resp = SynapseResponse::decode(&payload).unwrap();
    assert_eq!(resp.error, None);
    assert!(resp.data.is_empty());

    // A missing required field is an error naming it.
    let payload = unhex(&format!("81 {} c0", fixstr("error")));
    assert_eq!(
        StreamEnd::decode(&payload),
        Err(DecodeError::MissingField {
            field: "StreamEnd.success"
        })
    );
    assert_eq!(
        StreamChunk::decode(&unhex("80")),
        Err(DecodeError::MissingField {
            field: "StreamChunk.data"
        })
    );
}

#[test]
fn map_form_duplicate_field_is_rejected() {
    let payload = unhex(&format!("82 {} c3 00 c2", fixstr("success")));
    assert_eq!(
        StreamEnd::decode(&payload),
        Err(DecodeError::DuplicateField {
            field: "StreamEnd.success"
        })
    );
}

#[test]
fn map_form_rejects_signed_and_other_key_types() {
    // A signed encoding of index 0 is not an index for serde-derive.
    let err = StreamEnd::decode(&unhex("82 d000 c3 01 c0")).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::InvalidType {
            found: ValueKind::SignedInt,
            ..
        }
    ));
    let err = StreamEnd::decode(&unhex("81 c0 c3")).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::InvalidType {
            found: ValueKind::Nil,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------
// Array lengths

#[test]
fn array_with_more_elements_is_rejected() {
    let err = StreamEnd::decode(&unhex("93 c3 c0 c0")).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidLength {
            field: "StreamEnd",
            expected: 2,
            found: 3
        }
    );
    assert!(err.to_string().contains("array had incorrect length"));
    assert!(StreamChunk::decode(&unhex("92 c400 c400")).is_err());
    assert!(HandshakeResponse::decode(&unhex("97 a0 00 a0 c2 a0 c0 c0")).is_err());
}

#[test]
fn array_with_fewer_elements_is_rejected() {
    // `error` has no decode default: it must be there in array form.
    assert!(StreamEnd::decode(&unhex("91 c3")).is_err());
    assert!(SynapseResponse::decode(&unhex("93 c3 80 01")).is_err());
    assert!(HandshakeRequest::decode(&unhex("93 a0 01 a0")).is_err());
    assert!(HandshakeResponse::decode(&unhex("94 a0 01 a0 c3")).is_err());
    assert!(StreamChunk::decode(&unhex("90")).is_err());
}

#[test]
fn handshake_response_of_five_elements_defaults_fingerprint() {
    let payload = unhex(&format!(
        "95 {} 01 {} c3 {}",
        fixstr("m"),
        fixstr("sig"),
        fixstr("c")
    ));
    let resp = HandshakeResponse::decode(&payload).unwrap();
    assert_eq!(
        resp,
        HandshakeResponse {
            miner_hotkey: "m".into(),
            timestamp: 1,
            signature: "sig".into(),
            accepted: true,
            connection_id: "c".into(),
            cert_fingerprint: None,
        }
    );
}

// ---------------------------------------------------------------------------
// Encodings

#[test]
fn bin_holding_utf8_is_a_string() {
    let payload = unhex(&format!("92 c2 c4 03 {}", hexstr("err")));
    assert_eq!(
        StreamEnd::decode(&payload).unwrap().error.as_deref(),
        Some("err")
    );
    // ... but not if it is not UTF-8, and neither is such a str.
    let err = StreamEnd::decode(&unhex("92 c2 c4 02 ff fe")).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            field: "StreamEnd.error"
        }
    );
    assert!(StreamEnd::decode(&unhex("92 c2 a2 ff fe")).is_err());
}

#[test]
fn overlong_encodings_are_accepted() {
    // array16 header, str16 / str32 strings, u64 and int8 markers.
    let payload = unhex(&format!(
        "dc 0004 da 0001 {} cf 0000000000000005 db 00000001 {} d0 07",
        hexstr("v"),
        hexstr("n")
    ));
    // The last field is a signed int8 where a string is expected: rejected.
    assert!(HandshakeRequest::decode(&payload).is_err());
    let payload = unhex(&format!(
        "dc 0004 da 0001 {} cf 0000000000000005 db 00000001 {} c5 0001 {}",
        hexstr("v"),
        hexstr("n"),
        hexstr("s")
    ));
    let req = HandshakeRequest::decode(&payload).unwrap();
    assert_eq!(req.validator_hotkey, "v");
    assert_eq!(req.timestamp, 5);
    assert_eq!(req.nonce, "n");
    assert_eq!(req.signature, "s");

    // Non-negative values in signed encodings are fine for u64 fields.
    for ts in [
        "d0 05",
        "d1 0005",
        "d2 00000005",
        "d3 0000000000000005",
        "cc 05",
    ] {
        let payload = unhex(&format!("93 a0 80 {ts}"));
        assert_eq!(
            SynapsePacket::decode(&payload).unwrap().timestamp,
            5,
            "{ts}"
        );
    }
    // Map16 data map.
    let payload = unhex(&format!("93 a0 de 0001 {} 01 00", fixstr("k")));
    assert_eq!(SynapsePacket::decode(&payload).unwrap().data.len(), 1);
}

#[test]
fn trailing_bytes_after_the_value_are_ignored() {
    let payload = unhex("92 c3 c0 ff ff c1 00");
    assert!(StreamEnd::decode(&payload).unwrap().success);
    let payload = unhex("91 c4 01 61 93");
    assert_eq!(&StreamChunk::decode(&payload).unwrap().data[..], b"a");
}

#[test]
fn wrong_scalar_types_are_rejected() {
    // Negative timestamp.
    assert_eq!(
        SynapsePacket::decode(&unhex("93 a0 80 ff")),
        Err(DecodeError::NegativeInteger {
            field: "SynapsePacket.timestamp"
        })
    );
    assert!(SynapsePacket::decode(&unhex("93 a0 80 d3 ffffffffffffffff")).is_err());
    // Float timestamp.
    let err = SynapsePacket::decode(&unhex("93 a0 80 cb 3ff0000000000000")).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidType {
            field: "SynapsePacket.timestamp",
            expected: "unsigned integer",
            found: ValueKind::Float
        }
    );
    assert_eq!(
        err.to_string(),
        "SynapsePacket.timestamp: expected unsigned integer, found float"
    );
    assert!(SynapsePacket::decode(&unhex("93 a0 80 ca 3f800000")).is_err());
    // Integer where a bool is expected.
    assert!(StreamEnd::decode(&unhex("92 01 c0")).is_err());
    assert!(StreamEnd::decode(&unhex("92 00 c0")).is_err());
    // nil where a string or bool is expected.
    assert!(HandshakeRequest::decode(&unhex("94 c0 01 a0 a0")).is_err());
    assert!(StreamEnd::decode(&unhex("92 c0 c0")).is_err());
}

#[test]
fn data_must_be_a_string_keyed_map() {
    let nil = SynapsePacket::decode(&unhex("93 a0 c0 01")).unwrap_err();
    assert_eq!(
        nil,
        DecodeError::InvalidType {
            field: "SynapsePacket.data",
            expected: "map",
            found: ValueKind::Nil
        }
    );
    let array = SynapseResponse::decode(&unhex("94 c3 90 01 c0")).unwrap_err();
    assert!(matches!(
        array,
        DecodeError::InvalidType {
            found: ValueKind::Array,
            ..
        }
    ));
    // Integer top-level key.
    let int_key = SynapsePacket::decode(&unhex("93 a0 81 01 02 01")).unwrap_err();
    assert!(matches!(
        int_key,
        DecodeError::InvalidType {
            field: "SynapsePacket.data",
            found: ValueKind::UnsignedInt,
            ..
        }
    ));
    // Non-UTF-8 str key.
    assert_eq!(
        SynapsePacket::decode(&unhex("93 a0 81 a1 ff 02 01")).unwrap_err(),
        DecodeError::InvalidUtf8 {
            field: "SynapsePacket.data"
        }
    );
    // bin keys holding UTF-8 are accepted, and nested maps may have any keys.
    let payload = unhex(&format!("93 a0 81 c4 01 {} 81 01 c0 01", hexstr("k")));
    let packet = SynapsePacket::decode(&payload).unwrap();
    assert_eq!(
        packet.data.get("k"),
        Some(Value::Map(vec![(Value::from(1), Value::Nil)]))
    );
    // A malformed value inside data is rejected.
    assert!(SynapsePacket::decode(&unhex("93 a0 81 a1 6b c1 01")).is_err());
}

#[test]
fn stream_chunk_data_forms() {
    assert_eq!(
        &StreamChunk::decode(&unhex("91 a3 616263")).unwrap().data[..],
        b"abc"
    );
    assert_eq!(
        &StreamChunk::decode(&unhex("91 93 61 cc62 d063"))
            .unwrap()
            .data[..],
        b"abc"
    );
    assert_eq!(
        StreamChunk::decode(&unhex("91 91 cd0100")).unwrap_err(),
        DecodeError::IntegerOutOfRange {
            field: "StreamChunk.data",
            value: 256
        }
    );
    assert!(StreamChunk::decode(&unhex("91 91 ff")).is_err());
    assert!(StreamChunk::decode(&unhex("91 c0")).is_err());
    assert!(StreamChunk::decode(&unhex("91 80")).is_err());
}

#[test]
fn top_level_must_be_array_or_map() {
    for payload in ["", "c0", "c3", "01", "a0", "c4 00", "c1"] {
        assert!(StreamEnd::decode(&unhex(payload)).is_err(), "{payload}");
        assert!(SynapsePacket::decode(&unhex(payload)).is_err(), "{payload}");
    }
    assert_eq!(
        StreamEnd::decode(&Bytes::new()),
        Err(DecodeError::UnexpectedEof { field: "StreamEnd" })
    );
}

#[test]
fn nesting_limit_matches_the_reference() {
    // The message array and the data map use two levels; 1021 more nested
    // arrays fit under the reference's limit, 1022 do not.
    let packet = |levels: usize| {
        let mut v = unhex(&format!("93 a0 81 {}", fixstr("k"))).to_vec();
        v.extend(std::iter::repeat_n(0x91, levels - 1));
        v.push(0x90);
        v.push(0x01);
        Bytes::from(v)
    };
    assert!(SynapsePacket::decode(&packet(1021)).is_ok());
    assert!(rmp_serde::from_slice::<RefSynapsePacket>(&packet(1021)).is_ok());
    assert_eq!(
        SynapsePacket::decode(&packet(1022)).unwrap_err(),
        DecodeError::DepthLimitExceeded {
            field: "SynapsePacket.data"
        }
    );
    assert!(rmp_serde::from_slice::<RefSynapsePacket>(&packet(1022)).is_err());
    // Unknown map keys are skipped under the same budget.
    let mut v = unhex(&format!("81 {}", fixstr("zz"))).to_vec();
    v.extend(std::iter::repeat_n(0x91, 5000));
    assert!(StreamEnd::decode(&Bytes::from(v)).is_err());
}

// ---------------------------------------------------------------------------
// Differential test against rmp-serde with reference-shaped structs.

#[derive(Debug, Deserialize)]
struct RefHandshakeRequest {
    validator_hotkey: String,
    timestamp: u64,
    nonce: String,
    signature: String,
}

#[derive(Debug, Deserialize)]
struct RefHandshakeResponse {
    miner_hotkey: String,
    timestamp: u64,
    signature: String,
    accepted: bool,
    connection_id: String,
    #[serde(default)]
    cert_fingerprint: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RefSynapsePacket {
    synapse_type: String,
    data: HashMap<String, IgnoredAny>,
    timestamp: u64,
}

#[derive(Debug, Deserialize)]
struct RefSynapseResponse {
    success: bool,
    data: HashMap<String, IgnoredAny>,
    timestamp: u64,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RefStreamChunk {
    #[serde(deserialize_with = "byte_buf")]
    data: Vec<u8>,
}

#[derive(Debug, Deserialize)]
struct RefStreamEnd {
    success: bool,
    error: Option<String>,
}

/// What `serde_bytes` does for `Vec<u8>`: bytes, strings, or a sequence of
/// `u8`.
fn byte_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("byte array")
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_str<E>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(V)
}

/// A MessagePack value with a chosen encoding width (0 = shortest).
#[derive(Debug, Clone)]
enum Mp {
    Nil,
    Bool(bool),
    UInt(u64, u8),
    Int(i64, u8),
    F32(f32),
    F64(f64),
    Str(Vec<u8>, u8),
    Bin(Vec<u8>, u8),
    Array(Vec<Mp>, u8),
    Map(Vec<(Mp, Mp)>, u8),
    Ext(i8, Vec<u8>),
    Raw(Vec<u8>),
}

fn put_len(out: &mut Vec<u8>, len: usize, width: u8, fix: Option<(u8, usize)>, m: [u8; 3]) {
    let len32 = len as u32;
    match (width, fix) {
        (0, Some((base, limit))) if len < limit => out.push(base | len as u8),
        (0 | 1, _) if len < 256 && m[0] != 0 => out.extend_from_slice(&[m[0], len as u8]),
        (0..=2, _) if len < 65_536 => {
            out.push(m[1]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m[2]);
            out.extend_from_slice(&len32.to_be_bytes());
        }
    }
}

impl Mp {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Mp::Nil => out.push(0xc0),
            Mp::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Mp::UInt(v, w) => match w {
                0 if *v < 128 => out.push(*v as u8),
                0 | 1 if *v < 256 => out.extend_from_slice(&[0xcc, *v as u8]),
                0..=2 if *v < 65_536 => {
                    out.push(0xcd);
                    out.extend_from_slice(&(*v as u16).to_be_bytes());
                }
                0..=3 if *v <= u32::MAX as u64 => {
                    out.push(0xce);
                    out.extend_from_slice(&(*v as u32).to_be_bytes());
                }
                _ => {
                    out.push(0xcf);
                    out.extend_from_slice(&v.to_be_bytes());
                }
            },
            Mp::Int(v, w) => match w {
                0 if (-32..0).contains(v) => out.push(*v as i8 as u8),
                0 | 1 if i8::try_from(*v).is_ok() => out.extend_from_slice(&[0xd0, *v as i8 as u8]),
                0..=2 if i16::try_from(*v).is_ok() => {
                    out.push(0xd1);
                    out.extend_from_slice(&(*v as i16).to_be_bytes());
                }
                0..=3 if i32::try_from(*v).is_ok() => {
                    out.push(0xd2);
                    out.extend_from_slice(&(*v as i32).to_be_bytes());
                }
                _ => {
                    out.push(0xd3);
                    out.extend_from_slice(&v.to_be_bytes());
                }
            },
            Mp::F32(v) => {
                out.push(0xca);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Mp::F64(v) => {
                out.push(0xcb);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Mp::Str(b, w) => {
                put_len(out, b.len(), *w, Some((0xa0, 32)), [0xd9, 0xda, 0xdb]);
                out.extend_from_slice(b);
            }
            Mp::Bin(b, w) => {
                put_len(out, b.len(), *w, None, [0xc4, 0xc5, 0xc6]);
                out.extend_from_slice(b);
            }
            Mp::Array(items, w) => {
                put_len(out, items.len(), *w, Some((0x90, 16)), [0, 0xdc, 0xdd]);
                for item in items {
                    item.encode(out);
                }
            }
            Mp::Map(entries, w) => {
                put_len(out, entries.len(), *w, Some((0x80, 16)), [0, 0xde, 0xdf]);
                for (k, v) in entries {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Mp::Ext(tag, data) => {
                match data.len() {
                    1 => out.push(0xd4),
                    2 => out.push(0xd5),
                    4 => out.push(0xd6),
                    8 => out.push(0xd7),
                    16 => out.push(0xd8),
                    n => out.extend_from_slice(&[0xc7, n as u8]),
                }
                out.push(*tag as u8);
                out.extend_from_slice(data);
            }
            Mp::Raw(b) => out.extend_from_slice(b),
        }
    }
}

fn width() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 1 => 1u8..=4]
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z_]{0,12}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
    ]
}

fn scalar() -> impl Strategy<Value = Mp> {
    prop_oneof![
        2 => Just(Mp::Nil),
        2 => any::<bool>().prop_map(Mp::Bool),
        2 => (prop_oneof![0u64..300, any::<u64>()], width()).prop_map(|(v, w)| Mp::UInt(v, w)),
        2 => (prop_oneof![-300i64..300, any::<i64>()], width()).prop_map(|(v, w)| Mp::Int(v, w)),
        2 => (-1e6f32..1e6).prop_map(Mp::F32),
        2 => any::<f64>().prop_map(Mp::F64),
        2 => (text(), width()).prop_map(|(b, w)| Mp::Str(b, w)),
        2 => (text(), width()).prop_map(|(b, w)| Mp::Bin(b, w)),
        2 => (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(t, d)| Mp::Ext(t, d)),
        1 => proptest::collection::vec(any::<u8>(), 0..4).prop_map(Mp::Raw),
    ]
}

fn any_mp() -> impl Strategy<Value = Mp> {
    scalar().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            (proptest::collection::vec(inner.clone(), 0..5), width())
                .prop_map(|(v, w)| Mp::Array(v, w)),
            (
                proptest::collection::vec((inner.clone(), inner), 0..5),
                width()
            )
                .prop_map(|(v, w)| Mp::Map(v, w)),
        ]
    })
}

#[derive(Debug, Clone, Copy)]
enum FieldKind {
    Str,
    U64,
    Bool,
    OptStr,
    Data,
    Chunk,
}

fn field_value(kind: FieldKind) -> BoxedStrategy<Mp> {
    let string = (text(), width(), any::<bool>())
        .prop_map(|(b, w, bin)| if bin { Mp::Bin(b, w) } else { Mp::Str(b, w) })
        .boxed();
    let likely = match kind {
        FieldKind::Str => string.boxed(),
        FieldKind::OptStr => prop_oneof![Just(Mp::Nil), string].boxed(),
        FieldKind::U64 => prop_oneof![
            (any::<u64>(), width()).prop_map(|(v, w)| Mp::UInt(v, w)),
            (-5i64..100, width()).prop_map(|(v, w)| Mp::Int(v, w)),
        ]
        .boxed(),
        FieldKind::Bool => any::<bool>().prop_map(Mp::Bool).boxed(),
        FieldKind::Data => (
            proptest::collection::vec(
                (
                    prop_oneof![
                        6 => string.clone(),
                        1 => scalar(),
                    ],
                    any_mp(),
                ),
                0..4,
            ),
            width(),
        )
            .prop_map(|(e, w)| Mp::Map(e, w))
            .boxed(),
        FieldKind::Chunk => prop_oneof![
            string,
            (
                proptest::collection::vec(
                    prop_oneof![
                        (0u64..300, width()).prop_map(|(v, w)| Mp::UInt(v, w)),
                        (-3i64..300, width()).prop_map(|(v, w)| Mp::Int(v, w)),
                    ],
                    0..6
                ),
                width()
            )
                .prop_map(|(v, w)| Mp::Array(v, w)),
        ]
        .boxed(),
    };
    prop_oneof![12 => likely, 1 => any_mp()].boxed()
}

/// A payload shaped like message `fields` (array or map form, with
/// perturbations), plus optional trailing garbage.
fn message_payload(fields: &'static [(&'static str, FieldKind)]) -> BoxedStrategy<Vec<u8>> {
    let values: Vec<BoxedStrategy<Mp>> = fields.iter().map(|(_, k)| field_value(*k)).collect();
    let n = fields.len();
    let array = (
        values.clone(),
        prop_oneof![4 => Just(n), 1 => 0..=n + 1],
        proptest::collection::vec(any_mp(), 1),
        width(),
    )
        .prop_map(move |(vals, count, extra, w)| {
            let mut items: Vec<Mp> = vals.into_iter().take(count).collect();
            if count > n {
                items.extend(extra);
            }
            Mp::Array(items, w)
        });
    let map = (
        values,
        proptest::collection::vec((prop_oneof![1 => 0u8..4, 3 => 4u8..6], any::<bool>()), n),
        proptest::collection::vec((scalar(), any_mp()), 0..3),
        any::<u64>(),
        width(),
    )
        .prop_map(move |(vals, keying, unknown, shuffle, w)| {
            let mut entries = Vec::new();
            for (i, (val, (how, dup))) in vals.into_iter().zip(keying).enumerate() {
                let name = fields[i].0.as_bytes().to_vec();
                let key = match how {
                    0 => continue, // field left out
                    1 => Mp::Bin(name, 0),
                    2 => Mp::UInt(i as u64, 0),
                    3 => Mp::Int(i as i64, 1),
                    _ => Mp::Str(name, 0),
                };
                if dup && how == 5 {
                    entries.push((key.clone(), val.clone()));
                }
                entries.push((key, val));
            }
            entries.extend(unknown);
            // Deterministic shuffle driven by the generated seed.
            let mut s = shuffle;
            for i in (1..entries.len()).rev() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                entries.swap(i, (s >> 33) as usize % (i + 1));
            }
            Mp::Map(entries, w)
        });
    (
        prop_oneof![3 => array, 2 => map, 1 => any_mp()],
        proptest::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(top, trailing)| {
            let mut out = Vec::new();
            top.encode(&mut out);
            out.extend(trailing);
            out
        })
        .boxed()
}

const HREQ: &[(&str, FieldKind)] = &[
    ("validator_hotkey", FieldKind::Str),
    ("timestamp", FieldKind::U64),
    ("nonce", FieldKind::Str),
    ("signature", FieldKind::Str),
];
const HRESP: &[(&str, FieldKind)] = &[
    ("miner_hotkey", FieldKind::Str),
    ("timestamp", FieldKind::U64),
    ("signature", FieldKind::Str),
    ("accepted", FieldKind::Bool),
    ("connection_id", FieldKind::Str),
    ("cert_fingerprint", FieldKind::OptStr),
];
const PACKET: &[(&str, FieldKind)] = &[
    ("synapse_type", FieldKind::Str),
    ("data", FieldKind::Data),
    ("timestamp", FieldKind::U64),
];
const RESPONSE: &[(&str, FieldKind)] = &[
    ("success", FieldKind::Bool),
    ("data", FieldKind::Data),
    ("timestamp", FieldKind::U64),
    ("error", FieldKind::OptStr),
];
const CHUNK: &[(&str, FieldKind)] = &[("data", FieldKind::Chunk)];
const END: &[(&str, FieldKind)] = &[("success", FieldKind::Bool), ("error", FieldKind::OptStr)];

fn keys(data: &DataMap) -> Vec<String> {
    let mut k: Vec<String> = data.to_values().unwrap().into_keys().collect();
    k.sort();
    k
}

fn ref_keys(data: &HashMap<String, IgnoredAny>) -> Vec<String> {
    let mut k: Vec<String> = data.keys().cloned().collect();
    k.sort();
    k
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn handshake_request_matches_reference(payload in message_payload(HREQ)) {
        let ours = HandshakeRequest::decode(&Bytes::from(payload.clone()));
        let theirs = rmp_serde::from_slice::<RefHandshakeRequest>(&payload);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "ours {:?} theirs {:?}", ours, theirs);
        if let (Ok(o), Ok(t)) = (ours, theirs) {
            prop_assert_eq!(o.validator_hotkey, t.validator_hotkey);
            prop_assert_eq!(o.timestamp, t.timestamp);
            prop_assert_eq!(o.nonce, t.nonce);
            prop_assert_eq!(o.signature, t.signature);
        }
    }

    #[test]
    fn handshake_response_matches_reference(payload in message_payload(HRESP)) {
        let ours = HandshakeResponse::decode(&Bytes::from(payload.clone()));
        let theirs = rmp_serde::from_slice::<RefHandshakeResponse>(&payload);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "ours {:?} theirs {:?}", ours, theirs);
        if let (Ok(o), Ok(t)) = (ours, theirs) {
            prop_assert_eq!(o.miner_hotkey, t.miner_hotkey);
            prop_assert_eq!(o.timestamp, t.timestamp);
            prop_assert_eq!(o.signature, t.signature);
            prop_assert_eq!(o.accepted, t.accepted);
            prop_assert_eq!(o.connection_id, t.connection_id);
            prop_assert_eq!(o.cert_fingerprint, t.cert_fingerprint);
        }
    }

    #[test]
    fn synapse_packet_matches_reference(payload in message_payload(PACKET)) {
        let ours = SynapsePacket::decode(&Bytes::from(payload.clone()));
        let theirs = rmp_serde::from_slice::<RefSynapsePacket>(&payload);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "ours {:?} theirs {:?}", ours, theirs);
        if let (Ok(o), Ok(t)) = (ours, theirs) {
            prop_assert_eq!(o.synapse_type, t.synapse_type);
            prop_assert_eq!(keys(&o.data), ref_keys(&t.data));
            prop_assert_eq!(o.timestamp, t.timestamp);
        }
    }

    #[test]
    fn synapse_response_matches_reference(payload in message_payload(RESPONSE)) {
        let ours = SynapseResponse::decode(&Bytes::from(payload.clone()));
        let theirs = rmp_serde::from_slice::<RefSynapseResponse>(&payload);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "ours {:?} theirs {:?}", ours, theirs);
        if let (Ok(o), Ok(t)) = (ours, theirs) {
            prop_assert_eq!(o.success, t.success);
            prop_assert_eq!(keys(&o.data), ref_keys(&t.data));
            prop_assert_eq!(o.timestamp, t.timestamp);
            prop_assert_eq!(o.error, t.error);
        }
    }

    #[test]
    fn stream_chunk_matches_reference(payload in message_payload(CHUNK)) {
        let ours = StreamChunk::decode(&Bytes::from(payload.clone()));
        let theirs = rmp_serde::from_slice::<RefStreamChunk>(&payload);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "ours {:?} theirs {:?}", ours, theirs);
        if let (Ok(o), Ok(t)) = (ours, theirs) {
            prop_assert_eq!(&o.data[..], &t.data[..]);
        }
    }

    #[test]
    fn stream_end_matches_reference(payload in message_payload(END)) {
        let ours = StreamEnd::decode(&Bytes::from(payload.clone()));
        let theirs = rmp_serde::from_slice::<RefStreamEnd>(&payload);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "ours {:?} theirs {:?}", ours, theirs);
        if let (Ok(o), Ok(t)) = (ours, theirs) {
            prop_assert_eq!(o.success, t.success);
            prop_assert_eq!(o.error, t.error);
        }
    }
}
