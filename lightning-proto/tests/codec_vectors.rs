//! Known-answer tests: the hex vectors of PROTOCOL.md §4.5, verbatim.
//! Encoding must reproduce them byte for byte (where the input fixes the
//! bytes), and decoding must read them back into the stated fields.

// Test helpers outside #[test] fns may panic on impossible inputs too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use lightning_proto::frame::{Frame, FrameDecoder, MessageType};
use lightning_proto::message::{
    DataMap, HandshakeRequest, HandshakeResponse, Message, StreamChunk, StreamEnd, SynapsePacket,
    SynapseResponse, WireMessage,
};
use rmpv::Value;

const MINER: &str = "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH";
const VALIDATOR: &str = "5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq";
const TS: u64 = 1_700_000_000;
const NONCE: &str = "00112233445566778899aabbccddeeff";
const FINGERPRINT: &str = "uUk+L0nGSZdCQ1R18MTb5ShIRfEEiWkhmXtrts1ftjg=";
const REQUEST_SIGNATURE: &str =
    "4MrfLRdVOEYi8Oug68S6HLsb5LUVpjF56qUo8FTLP3pCi3QJKDk7AfeVNLVVEWqbgVbJx1c4GoCPt7seAXKlhw==";
/// The signature inside the accepted-response vector.
const RESPONSE_SIGNATURE: &str =
    "DJSsj/lcLAiHKWvmNfceK9+L7w1WqsX/jlONnUQWimH10ydWFEntakCzmEV1el+zb8tM8JLKB/7ipcwcQa9tjQ==";
const CONNECTION_ID: &str = "conn_5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq_1700000000123";

const HANDSHAKE_REQUEST_HEX: &str = "94d930354366437234375635447465366277784e4245384b396f4e6e5164396669617936614445456b67597446763777344671ce6553f100d9203030313132323333343435353636373738383939616162626363646465656666d958344d72664c5264564f455969384f756736385336484c7362354c5556706a46353671556f3846544c503370436933514a4b446b37416665564e4c5656455771626756624a78316334476f43507437736541584b6c68773d3d";

const HANDSHAKE_RESPONSE_ACCEPTED_HEX: &str = "96d930354363797178586e4a756361436e5151767655673545507a6a31756f4e417841435a767a417248773561564476674e48ce6553f100d958444a53736a2f6c634c4169484b57766d4e6663654b392b4c377731577173582f6a6c4f4e6e555157696d48313079645746456e74616b437a6d455631656c2b7a6238744d384a4c4b422f376970637763516139746a513d3dc3d943636f6e6e5f354366437234375635447465366277784e4245384b396f4e6e5164396669617936614445456b675974467637773446715f31373030303030303030313233d92c75556b2b4c306e47535a644351315231384d5462355368495266454569576b686d58747274733166746a673d";

fn unhex(s: &str) -> Vec<u8> {
    let compact: String = s.split_whitespace().collect();
    hex::decode(compact).expect("test vector is hex")
}

/// Splits an encoded frame into (header, payload) and checks the header.
fn split_frame(frame: &[u8], ty: u8) -> &[u8] {
    assert_eq!(frame[0], ty, "type byte");
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    assert_eq!(len, frame.len() - 5, "length field");
    &frame[5..]
}

fn encoded<M: WireMessage>(m: &M) -> Vec<u8> {
    m.encode().expect("encodes").to_bytes().to_vec()
}

fn decode<M: WireMessage>(payload: &[u8]) -> M {
    M::decode(&Bytes::copy_from_slice(payload)).expect("decodes")
}

fn data(entries: &[(&str, Value)]) -> DataMap {
    DataMap::from_values(entries.iter().map(|(k, v)| (k.to_string(), v.clone()))).unwrap()
}

fn handshake_request() -> HandshakeRequest {
    HandshakeRequest {
        validator_hotkey: VALIDATOR.into(),
        timestamp: TS,
        nonce: NONCE.into(),
        signature: REQUEST_SIGNATURE.into(),
    }
}

#[test]
fn handshake_request_vector() {
    let payload = unhex(HANDSHAKE_REQUEST_HEX);
    assert_eq!(payload.len(), 180);
    let frame = encoded(&handshake_request());
    assert_eq!(&frame[..5], &unhex("01 000000b4")[..]);
    assert_eq!(split_frame(&frame, 0x01), &payload[..]);
    assert_eq!(decode::<HandshakeRequest>(&payload), handshake_request());
}

fn accepted_response() -> HandshakeResponse {
    HandshakeResponse {
        miner_hotkey: MINER.into(),
        timestamp: TS,
        signature: RESPONSE_SIGNATURE.into(),
        accepted: true,
        connection_id: CONNECTION_ID.into(),
        cert_fingerprint: Some(FINGERPRINT.into()),
    }
}

#[test]
fn handshake_response_accepted_vector() {
    let payload = unhex(HANDSHAKE_RESPONSE_ACCEPTED_HEX);
    assert_eq!(payload.len(), 262);
    let frame = encoded(&accepted_response());
    assert_eq!(split_frame(&frame, 0x02), &payload[..]);
    assert_eq!(decode::<HandshakeResponse>(&payload), accepted_response());
}

#[test]
fn handshake_response_rejected_vectors() {
    // Rejected after parsing (60 bytes): `96 d930 <48 bytes miner hotkey> ce <ts> a0 c2 a0 c0`.
    let mut rejected = unhex("96 d930");
    rejected.extend_from_slice(MINER.as_bytes());
    rejected.extend_from_slice(&unhex("ce 6553f100 a0 c2 a0 c0"));
    assert_eq!(rejected.len(), 60);
    let response = HandshakeResponse {
        miner_hotkey: MINER.into(),
        timestamp: TS,
        signature: String::new(),
        accepted: false,
        connection_id: String::new(),
        cert_fingerprint: None,
    };
    assert_eq!(split_frame(&encoded(&response), 0x02), &rejected[..]);
    assert_eq!(decode::<HandshakeResponse>(&rejected), response);

    // Pre-auth rejection (11 bytes): `96 a0 ce <ts> a0 c2 a0 c0`.
    let pre_auth = unhex("96 a0 ce 6553f100 a0 c2 a0 c0");
    assert_eq!(pre_auth.len(), 11);
    let response = HandshakeResponse {
        miner_hotkey: String::new(),
        ..response
    };
    assert_eq!(split_frame(&encoded(&response), 0x02), &pre_auth[..]);
    assert_eq!(decode::<HandshakeResponse>(&pre_auth), response);
}

#[test]
fn synapse_packet_vectors() {
    // Full frame, 27 bytes.
    let frame = unhex("03 00000016  93 a4 6563686f  81 a6 70726f6d7074 a2 6869  ce 6553f100");
    assert_eq!(frame.len(), 27);
    let packet = SynapsePacket {
        synapse_type: "echo".into(),
        data: data(&[("prompt", Value::from("hi"))]),
        timestamp: TS,
    };
    assert_eq!(encoded(&packet), frame);
    let mut decoder = FrameDecoder::default();
    decoder.push(Bytes::from(frame.clone()));
    let got = decoder.next_frame().unwrap().unwrap();
    assert_eq!(got.ty, MessageType::SynapsePacket);
    let Message::SynapsePacket(back) = Message::decode(&got).unwrap() else {
        panic!("wrong message kind");
    };
    assert_eq!(back, packet);
    assert_eq!(back.data.get("prompt"), Some(Value::from("hi")));
    assert_eq!(back.data.len(), 1);

    // data = {"payload": bin(0x42 x 3)}
    let payload = unhex("93 a4 6563686f 81 a7 7061796c6f6164 c4 03 424242 ce 6553f100");
    let packet = SynapsePacket {
        synapse_type: "echo".into(),
        data: data(&[("payload", Value::Binary(vec![0x42; 3]))]),
        timestamp: TS,
    };
    assert_eq!(split_frame(&encoded(&packet), 0x03), &payload[..]);
    let back = decode::<SynapsePacket>(&payload);
    assert_eq!(back, packet);
    assert_eq!(back.data.get("payload"), Some(Value::Binary(vec![0x42; 3])));

    // Empty data, synapse "ping".
    let payload = unhex("93 a4 70696e67 80 ce 6553f100");
    let packet = SynapsePacket {
        synapse_type: "ping".into(),
        data: DataMap::new(),
        timestamp: TS,
    };
    assert_eq!(split_frame(&encoded(&packet), 0x03), &payload[..]);
    let back = decode::<SynapsePacket>(&payload);
    assert_eq!(back, packet);
    assert!(back.data.is_empty());
}

#[test]
fn synapse_response_vectors() {
    let payload = unhex("94 c3 81 a6 70726f6d7074 a2 6869 ce 6553f100 c0");
    let response = SynapseResponse {
        success: true,
        data: data(&[("prompt", Value::from("hi"))]),
        timestamp: TS,
        error: None,
    };
    assert_eq!(split_frame(&encoded(&response), 0x04), &payload[..]);
    assert_eq!(decode::<SynapseResponse>(&payload), response);

    let payload =
        unhex("94 c2 80 ce 6553f100 b9 756e7265636f676e697a65642073796e617073652074797065");
    let response = SynapseResponse {
        success: false,
        data: DataMap::new(),
        timestamp: TS,
        error: Some("unrecognized synapse type".into()),
    };
    assert_eq!(split_frame(&encoded(&response), 0x04), &payload[..]);
    assert_eq!(decode::<SynapseResponse>(&payload), response);
}

#[test]
fn stream_chunk_vectors() {
    let payload = unhex("91 c4 03 616263");
    let chunk = StreamChunk {
        data: Bytes::from_static(b"abc"),
    };
    assert_eq!(split_frame(&encoded(&chunk), 0x05), &payload[..]);
    assert_eq!(decode::<StreamChunk>(&payload), chunk);

    let payload = unhex("91 c4 00");
    let chunk = StreamChunk { data: Bytes::new() };
    assert_eq!(split_frame(&encoded(&chunk), 0x05), &payload[..]);
    assert_eq!(decode::<StreamChunk>(&payload), chunk);
}

#[test]
fn stream_end_vectors() {
    let payload = unhex("92 c3 c0");
    let end = StreamEnd {
        success: true,
        error: None,
    };
    assert_eq!(split_frame(&encoded(&end), 0x06), &payload[..]);
    assert_eq!(decode::<StreamEnd>(&payload), end);

    let payload = unhex("92 c2 b1 68616e646c65722074696d6564206f7574");
    let end = StreamEnd {
        success: false,
        error: Some("handler timed out".into()),
    };
    assert_eq!(split_frame(&encoded(&end), 0x06), &payload[..]);
    assert_eq!(decode::<StreamEnd>(&payload), end);
}

#[test]
fn message_enum_dispatches_on_type_byte() {
    let payload = Bytes::from(unhex("92 c3 c0"));
    let frame = Frame::new(MessageType::StreamEnd, payload.clone());
    let msg = Message::decode(&frame).unwrap();
    assert_eq!(msg.message_type(), MessageType::StreamEnd);
    assert_eq!(msg.encode().unwrap().to_bytes()[5..], payload[..]);
    // The same bytes under another type byte are read by that type's rules.
    let frame = Frame::new(MessageType::HandshakeRequest, payload);
    assert!(Message::decode(&frame).is_err());
}

#[test]
fn encoded_frame_segments_cover_the_frame() {
    let response = SynapseResponse {
        success: true,
        data: data(&[("prompt", Value::from("hi"))]),
        timestamp: TS,
        error: None,
    };
    let frame = response.encode().unwrap();
    let [head, body, tail] = frame.clone().into_segments();
    assert_eq!(&head[..], &unhex("04 00000013 94 c3")[..]);
    assert_eq!(body, *response.data.raw());
    assert_eq!(&tail[..], &unhex("ce 6553f100 c0")[..]);
    assert_eq!(frame.len(), 24);
    assert!(!frame.is_empty());
    let joined: Vec<u8> = frame.segments().flat_map(|s| s.iter().copied()).collect();
    assert_eq!(joined, frame.to_bytes().to_vec());
}
