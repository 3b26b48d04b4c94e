//! Encode → decode round trips, robustness on arbitrary input, the
//! `DataMap` API, and the no-copy echo guarantee.

// Test helpers outside #[test] fns may panic on impossible inputs too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bytes::Bytes;
use lightning_proto::frame::{FrameDecoder, MessageType};
use lightning_proto::message::{
    DataError, DataMap, DecodeError, EncodedFrame, HandshakeRequest, HandshakeResponse, Message,
    StreamChunk, StreamEnd, SynapsePacket, SynapseResponse, WireMessage,
};
use proptest::prelude::*;
use rmpv::Value;
use serde::{Deserialize, Serialize};

fn unhex(s: &str) -> Bytes {
    let compact: String = s.split_whitespace().collect();
    Bytes::from(hex::decode(compact).expect("hex"))
}

/// Decodes an encoded frame through the frame decoder and `Message`.
fn through_the_wire(frame: &EncodedFrame) -> Message {
    let mut decoder = FrameDecoder::new(u32::MAX);
    for segment in frame.segments() {
        decoder.push(segment.clone());
    }
    let frame = decoder.next_frame().unwrap().expect("a whole frame");
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.finish(), Ok(()));
    Message::decode(&frame).unwrap()
}

// ---------------------------------------------------------------------------
// Strategies

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<u64>().prop_map(Value::from),
        (i64::MIN..0).prop_map(Value::from),
        any::<f32>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::F32),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::F64),
        ".{0,40}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(t, d)| Value::Ext(t, d)),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
        ]
    })
}

fn arb_entries() -> impl Strategy<Value = Vec<(String, Value)>> {
    proptest::collection::vec(("[a-z]{0,6}|.{0,10}", arb_value()), 0..8)
}

fn arb_data() -> impl Strategy<Value = DataMap> {
    arb_entries().prop_map(|e| DataMap::from_values(e).unwrap())
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-zA-Z0-9+/=]{0,300}"]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (arb_string(), any::<u64>(), arb_string(), arb_string()).prop_map(|(h, t, n, s)| {
            Message::from(HandshakeRequest {
                validator_hotkey: h,
                timestamp: t,
                nonce: n,
                signature: s,
            })
        }),
        (
            arb_string(),
            any::<u64>(),
            arb_string(),
            any::<bool>(),
            arb_string(),
            proptest::option::of(arb_string())
        )
            .prop_map(|(h, t, s, a, c, f)| {
                Message::from(HandshakeResponse {
                    miner_hotkey: h,
                    timestamp: t,
                    signature: s,
                    accepted: a,
                    connection_id: c,
                    cert_fingerprint: f,
                })
            }),
        (arb_string(), arb_data(), any::<u64>()).prop_map(|(s, d, t)| {
            Message::from(SynapsePacket {
                synapse_type: s,
                data: d,
                timestamp: t,
            })
        }),
        (
            any::<bool>(),
            arb_data(),
            any::<u64>(),
            proptest::option::of(arb_string())
        )
            .prop_map(|(ok, d, t, e)| {
                Message::from(SynapseResponse {
                    success: ok,
                    data: d,
                    timestamp: t,
                    error: e,
                })
            }),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..70_000),
        ]
        .prop_map(|d| Message::from(StreamChunk { data: d.into() })),
        (any::<bool>(), proptest::option::of(arb_string())).prop_map(|(ok, e)| Message::from(
            StreamEnd {
                success: ok,
                error: e
            }
        )),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in arb_message()) {
        let frame = msg.encode().unwrap();
        let bytes = frame.to_bytes();
        prop_assert_eq!(bytes.len(), frame.len());
        prop_assert_eq!(bytes[0], msg.message_type().as_u8());
        let declared = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        prop_assert_eq!(declared, bytes.len() - 5);
        let back = through_the_wire(&frame);
        prop_assert_eq!(&back, &msg);
        // Re-encoding what was decoded reproduces the bytes.
        prop_assert_eq!(back.encode().unwrap().to_bytes(), bytes);
    }

    #[test]
    fn data_values_round_trip(entries in arb_entries()) {
        let expected: HashMap<String, Value> = entries.iter().cloned().collect();
        let data = DataMap::from_values(entries).unwrap();
        prop_assert_eq!(data.len(), expected.len());
        prop_assert_eq!(data.to_values().unwrap(), expected.clone());
        for (k, v) in &expected {
            prop_assert_eq!(data.get(k), Some(v.clone()));
        }
        // The raw bytes are a data map a peer accepts.
        let again = DataMap::from_raw(data.raw().clone()).unwrap();
        prop_assert_eq!(&again, &data);
        prop_assert_eq!(DataMap::try_from(expected).unwrap().to_values().unwrap(), data.to_values().unwrap());
    }

    #[test]
    fn decoders_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let payload = Bytes::from(payload);
        let _ = HandshakeRequest::decode(&payload);
        let _ = HandshakeResponse::decode(&payload);
        let _ = SynapsePacket::decode(&payload);
        let _ = SynapseResponse::decode(&payload);
        let _ = StreamChunk::decode(&payload);
        let _ = StreamEnd::decode(&payload);
        if let Ok(data) = DataMap::from_raw(payload.clone()) {
            let _ = data.to_values();
            let _ = data.get("a");
        }
    }

    #[test]
    fn decoders_never_panic_on_mutated_messages(
        msg in arb_message(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let bytes = msg.encode().unwrap().to_bytes();
        let mut payload = bytes[5..].to_vec();
        for (at, byte) in flips {
            if !payload.is_empty() {
                let at = at % payload.len();
                payload[at] = byte;
            }
        }
        let keep = if payload.is_empty() { 0 } else { cut % (payload.len() + 1) };
        payload.truncate(keep);
        let frame = lightning_proto::frame::Frame::new(msg.message_type(), Bytes::from(payload));
        if let Ok(Message::SynapsePacket(p)) = Message::decode(&frame) {
            let _ = p.data.to_values();
        }
    }
}

// ---------------------------------------------------------------------------
// No-copy guarantees

#[test]
fn echoing_a_large_data_map_shares_the_received_buffer() {
    // A request carrying ~1 MB of data, as received off the wire.
    let data = DataMap::from_values([(
        "payload".to_string(),
        Value::Binary(vec![0xab; 1024 * 1024]),
    )])
    .unwrap();
    let packet = SynapsePacket {
        synapse_type: "echo".into(),
        data,
        timestamp: 1,
    };
    let wire = packet.encode().unwrap().to_bytes();
    let mut decoder = FrameDecoder::default();
    decoder.push(wire.clone());
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(frame.ty, MessageType::SynapsePacket);
    // The frame payload is a slice of the pushed buffer ...
    assert_eq!(frame.payload.as_ptr(), wire[5..].as_ptr());
    let received = SynapsePacket::decode(&frame.payload).unwrap();
    // ... the data map is a slice of the payload ...
    let offset = 1 + 1 + "echo".len();
    assert_eq!(
        received.data.raw().as_ptr(),
        frame.payload[offset..].as_ptr()
    );

    // ... and the response frame carries that same memory as its body.
    let response = SynapseResponse {
        success: true,
        data: received.data.clone(),
        timestamp: 2,
        error: None,
    };
    let encoded = response.encode().unwrap();
    let [head, body, tail] = encoded.clone().into_segments();
    assert_eq!(body.as_ptr(), frame.payload[offset..].as_ptr());
    assert_eq!(body.len(), received.data.raw().len());
    assert!(head.len() + tail.len() < 32);
    let back = SynapseResponse::decode(&encoded.to_bytes().slice(5..)).unwrap();
    assert_eq!(back.data, received.data);
}

#[test]
fn stream_chunks_share_buffers_both_ways() {
    let data = Bytes::from(vec![7u8; 100_000]);
    let chunk = StreamChunk { data: data.clone() };
    let encoded = chunk.encode().unwrap();
    let [head, body, _] = encoded.clone().into_segments();
    assert_eq!(&head[..], &unhex("05 000186a6 91 c6 000186a0")[..]);
    assert_eq!(body.as_ptr(), data.as_ptr());
    let payload = encoded.to_bytes().slice(5..);
    let back = StreamChunk::decode(&payload).unwrap();
    assert_eq!(back.data.as_ptr(), payload[6..].as_ptr());
}

// ---------------------------------------------------------------------------
// DataMap API

#[test]
fn empty_data_map() {
    let empty = DataMap::new();
    assert_eq!(&empty.raw()[..], &[0x80]);
    assert_eq!(empty, DataMap::default());
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    assert_eq!(empty.get("x"), None);
    assert!(empty.to_values().unwrap().is_empty());
    assert_eq!(empty.into_raw(), Bytes::from_static(&[0x80]));
}

#[test]
fn from_raw_validates() {
    let ok = DataMap::from_raw(unhex("82 a1 61 01 c4 01 62 92 c0 c3")).unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    assert!(ok.contains_key("b"));
    assert!(!ok.contains_key("c"));
    assert_eq!(
        ok.get("b"),
        Some(Value::Array(vec![Value::Nil, Value::Boolean(true)]))
    );
    assert_eq!(
        DataMap::from_raw(unhex("80 00")),
        Err(DecodeError::TrailingBytes {
            field: "data",
            count: 1
        })
    );
    assert!(DataMap::from_raw(unhex("c0")).is_err());
    assert!(DataMap::from_raw(unhex("90")).is_err());
    assert!(DataMap::from_raw(unhex("81 01 01")).is_err());
    assert!(DataMap::from_raw(unhex("81 a1 61")).is_err());
    assert!(DataMap::from_raw(unhex("81 a1 61 c1")).is_err());
    assert!(DataMap::from_raw(Bytes::new()).is_err());
    assert!(DataMap::try_from(unhex("80")).is_ok());
}

#[test]
fn duplicate_keys_last_wins() {
    let data = DataMap::from_raw(unhex("83 a1 6b 01 a1 6a 05 a1 6b 02")).unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data.get("k"), Some(Value::from(2)));
    let values = data.to_values().unwrap();
    assert_eq!(values.len(), 2);
    assert_eq!(values["k"], Value::from(2));

    #[derive(Debug, Deserialize, PartialEq)]
    struct K {
        k: u8,
        j: u8,
    }
    assert_eq!(data.deserialize::<K>().unwrap(), K { k: 2, j: 5 });

    // from_values keeps one entry per key, the last value.
    let built = DataMap::from_values([
        ("k".to_string(), Value::from(1)),
        ("k".to_string(), Value::from(2)),
    ])
    .unwrap();
    assert_eq!(&built.raw()[..], &unhex("81 a1 6b 02")[..]);
}

#[test]
fn values_decode_like_the_reference() {
    // Non-UTF-8 str becomes Binary; signed encodings of small positives
    // are plain integers; f32 stays f32; ext keeps its tag.
    let data = DataMap::from_raw(unhex(
        "85 a1 73 a2 fffe a1 69 d0 05 a1 6e d0 fb a1 66 ca 3f800000 a1 65 d4 07 2a",
    ))
    .unwrap();
    assert_eq!(data.get("s"), Some(Value::Binary(vec![0xff, 0xfe])));
    assert_eq!(data.get("i"), Some(Value::from(5u64)));
    assert_eq!(data.get("n"), Some(Value::from(-5i64)));
    assert_eq!(data.get("f"), Some(Value::F32(1.0)));
    assert_eq!(data.get("e"), Some(Value::Ext(7, vec![0x2a])));
}

#[test]
fn from_values_encodes_like_the_reference() {
    let data = DataMap::from_values([
        ("u".to_string(), Value::from(300u64)),
        ("n".to_string(), Value::from(-33i64)),
        ("d".to_string(), Value::F64(0.5)),
        ("b".to_string(), Value::Binary(vec![1])),
        ("x".to_string(), Value::Ext(-1, vec![0; 3])),
    ])
    .unwrap();
    assert_eq!(
        &data.raw()[..],
        &unhex(
            "85 a1 75 cd 012c a1 6e d0 df a1 64 cb 3fe0000000000000 a1 62 c4 01 01 \
             a1 78 c7 03 ff 000000"
        )[..]
    );
    // Nesting a reference peer would refuse is refused here.
    let mut deep = Value::Nil;
    for _ in 0..1021 {
        deep = Value::Array(vec![deep]);
    }
    let ok = DataMap::from_values([("k".to_string(), deep.clone())]).unwrap();
    assert_eq!(ok.get("k"), Some(deep.clone()));
    assert_eq!(DataMap::from_raw(ok.raw().clone()), Ok(ok));
    let deeper = Value::Array(vec![deep]);
    assert_eq!(
        DataMap::from_values([("k".to_string(), deeper)]),
        Err(DataError::TooDeep)
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Mode {
    Fast,
    Slow,
    Custom(u32),
    Pair(u8, u8),
    Named { level: i8 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    tag: String,
    weights: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Request {
    prompt: String,
    max_tokens: u32,
    temperature: f64,
    stop: Option<String>,
    inner: Inner,
    modes: Vec<Mode>,
    raw: Vec<u8>,
    signed: i64,
}

#[test]
fn typed_data_uses_field_names_and_round_trips() {
    // A single field struct: exact bytes.
    #[derive(Serialize)]
    struct Prompt {
        prompt: &'static str,
    }
    let data = DataMap::from_typed(&Prompt { prompt: "hi" }).unwrap();
    assert_eq!(&data.raw()[..], &unhex("81 a6 70726f6d7074 a2 6869")[..]);

    let req = Request {
        prompt: "hello".into(),
        max_tokens: 300,
        temperature: 0.7,
        stop: None,
        inner: Inner {
            tag: "t".into(),
            weights: vec![0.5, 1.5],
        },
        modes: vec![
            Mode::Fast,
            Mode::Slow,
            Mode::Custom(9),
            Mode::Pair(1, 2),
            Mode::Named { level: -3 },
        ],
        raw: vec![1, 2, 3],
        signed: -40,
    };
    let data = DataMap::from_typed(&req).unwrap();
    assert_eq!(data.len(), 8);
    assert_eq!(data.get("stop"), Some(Value::Nil));
    assert_eq!(data.get("max_tokens"), Some(Value::from(300)));
    assert_eq!(
        data.get("inner"),
        Some(Value::Map(vec![
            (Value::from("tag"), Value::from("t")),
            (
                Value::from("weights"),
                Value::Array(vec![Value::F32(0.5), Value::F32(1.5)])
            ),
        ]))
    );
    // Enum variants by index; a Vec<u8> not marked as bytes is an array.
    assert_eq!(
        data.get("modes"),
        Some(Value::Array(vec![
            Value::from(0),
            Value::from(1),
            Value::Map(vec![(Value::from(2), Value::from(9))]),
            Value::Map(vec![(
                Value::from(3),
                Value::Array(vec![Value::from(1), Value::from(2)])
            )]),
            Value::Map(vec![(
                Value::from(4),
                Value::Map(vec![(Value::from("level"), Value::from(-3))])
            )]),
        ]))
    );
    assert_eq!(
        data.get("raw"),
        Some(Value::Array(vec![
            Value::from(1),
            Value::from(2),
            Value::from(3)
        ]))
    );
    assert_eq!(data.deserialize::<Request>().unwrap(), req);

    // It also travels inside a packet.
    let packet = SynapsePacket {
        synapse_type: "Gen".into(),
        data,
        timestamp: 0,
    };
    let Message::SynapsePacket(back) = through_the_wire(&packet.encode().unwrap()) else {
        panic!("wrong kind");
    };
    assert_eq!(back.data.deserialize::<Request>().unwrap(), req);
}

#[test]
fn typed_data_top_level_must_be_a_map() {
    assert_eq!(DataMap::from_typed(&5u8), Err(DataError::NotAMap));
    assert_eq!(
        DataMap::from_typed(&vec![1, 2]).unwrap_err().to_string(),
        "expected map from serialized struct"
    );
    // A map with non-string keys gets their display form.
    let mut m = std::collections::BTreeMap::new();
    m.insert(1u32, "one");
    m.insert(2u32, "two");
    let data = DataMap::from_typed(&m).unwrap();
    assert_eq!(data.get("1"), Some(Value::from("one")));
    assert_eq!(data.get("2"), Some(Value::from("two")));
    // Deserializing into the wrong shape is a typed error.
    let err = DataMap::new().deserialize::<Request>().unwrap_err();
    assert!(matches!(err, DataError::Deserialize(_)), "{err:?}");
}

#[test]
fn decode_error_messages_name_the_field() {
    let err = HandshakeRequest::decode(&unhex("94 a0 c2 a0 a0")).unwrap_err();
    assert_eq!(err.field(), "HandshakeRequest.timestamp");
    assert_eq!(
        err.to_string(),
        "HandshakeRequest.timestamp: expected unsigned integer, found bool"
    );
    let err = StreamEnd::decode(&unhex("81 a5 6572726f72 c0")).unwrap_err();
    assert_eq!(err.to_string(), "missing field StreamEnd.success");
    let err = HandshakeResponse::decode(&unhex("94 a0 01 a0 c3")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "HandshakeResponse: array had incorrect length: expected 6 elements, found 4"
    );
}
