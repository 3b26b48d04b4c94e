//! Every message decoder on arbitrary payloads.
//!
//! Input: `[selector] [payload...]`. Selector `% 7` picks one message type (0..=5) or, for
//! 6, reads the rest as a framed stream and decodes each frame by its type byte.
//!
//! Checks: no panic; whatever decodes re-encodes (in the canonical array form) to a frame
//! with the right header that decodes to an equal value, and encoding is stable; every
//! decoded `data` map satisfies `DataMap::from_raw`, converts to dynamic values and back
//! without changing them.
#![no_main]

use std::collections::HashMap;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use lightning_proto::frame::{Frame, FrameDecoder, MessageType, FRAME_HEADER_LEN};
use lightning_proto::message::{
    DataMap, HandshakeRequest, HandshakeResponse, Message, StreamChunk, StreamEnd, SynapsePacket,
    SynapseResponse, WireMessage,
};

/// A value's exact MessagePack bytes, so NaN payloads and f32/f64 compare faithfully.
fn canonical(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
    out
}

fn canonical_map(values: &HashMap<String, rmpv::Value>) -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<(String, Vec<u8>)> = values
        .iter()
        .map(|(k, v)| (k.clone(), canonical(v)))
        .collect();
    entries.sort();
    entries
}

fn check_data(data: &DataMap) {
    let again = DataMap::from_raw(data.raw().clone()).expect("decoded data map is well formed");
    assert_eq!(&again, data);
    assert_eq!(again.len(), data.len());
    assert_eq!(data.keys().count(), data.len());
    let values = data
        .to_values()
        .expect("decoded data map converts to values");
    assert!(values.len() <= data.len());
    for key in values.keys() {
        assert!(data.contains_key(key));
        let got = data.get(key).expect("present key has a value");
        assert_eq!(canonical(&got), canonical(&values[key]));
    }
    let rebuilt = DataMap::from_values(values.clone()).expect("values re-encode");
    assert_eq!(rebuilt.len(), values.len());
    let values2 = rebuilt.to_values().expect("rebuilt map converts to values");
    assert_eq!(canonical_map(&values), canonical_map(&values2));
    // Typed reading must fail cleanly or succeed, whatever the shape.
    let _ = data.deserialize::<serde_json::Value>();
}

fn roundtrip<M>(payload: &Bytes, check: impl Fn(&M)) -> Option<M>
where
    M: WireMessage + PartialEq + std::fmt::Debug,
{
    let m = M::decode(payload).ok()?;
    check(&m);
    let frame = m.encode().expect("a decoded message re-encodes");
    let bytes = frame.to_bytes();
    assert_eq!(bytes.len(), frame.len());
    assert!(bytes.len() >= FRAME_HEADER_LEN);
    assert_eq!(bytes[0], M::TYPE.as_u8());
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    assert_eq!(len, bytes.len() - FRAME_HEADER_LEN);
    let body = bytes.slice(FRAME_HEADER_LEN..);
    let again = M::decode(&body).expect("canonical encoding decodes");
    assert_eq!(again, m);
    assert_eq!(again.encode().expect("re-encodes").to_bytes(), bytes);
    // The enum front door agrees with the typed decoder.
    let via_enum = Message::decode(&Frame::new(M::TYPE, body)).expect("enum decode");
    assert_eq!(via_enum.message_type(), M::TYPE);
    Some(m)
}

fn decode_as(ty: MessageType, payload: &Bytes) -> bool {
    match ty {
        MessageType::HandshakeRequest => roundtrip::<HandshakeRequest>(payload, |_| ()).is_some(),
        MessageType::HandshakeResponse => roundtrip::<HandshakeResponse>(payload, |_| ()).is_some(),
        MessageType::SynapsePacket => {
            roundtrip::<SynapsePacket>(payload, |m| check_data(&m.data)).is_some()
        }
        MessageType::SynapseResponse => {
            roundtrip::<SynapseResponse>(payload, |m| check_data(&m.data)).is_some()
        }
        MessageType::StreamChunk => roundtrip::<StreamChunk>(payload, |_| ()).is_some(),
        MessageType::StreamEnd => roundtrip::<StreamEnd>(payload, |_| ()).is_some(),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let payload = Bytes::copy_from_slice(rest);
    match MessageType::from_u8(selector % 7 + 1) {
        Some(ty) => {
            let ok = decode_as(ty, &payload);
            let via_enum = Message::decode(&Frame::new(ty, payload.clone()));
            assert_eq!(ok, via_enum.is_ok());
        }
        None => {
            let mut decoder = FrameDecoder::new(1 << 20);
            decoder.push(payload);
            while let Ok(Some(frame)) = decoder.next_frame() {
                let ok = decode_as(frame.ty, &frame.payload);
                assert_eq!(ok, Message::decode(&frame).is_ok());
            }
        }
    }
});
