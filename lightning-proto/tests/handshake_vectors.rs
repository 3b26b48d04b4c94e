//! The §4.5 handshake vectors: signed strings, fingerprint, and the published
//! signatures, which must verify exactly as given and fail once tampered.
// Fixture helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use lightning_proto::handshake::{
    self, cert_fingerprint, connection_id, decode_signature, encode_signature, request_message,
    response_message, verify_request, verify_response, verify_signature, HandshakeError,
    RequestFields, ResponseFields,
};

const MINER_HOTKEY: &str = "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH";
const VALIDATOR_HOTKEY: &str = "5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq";
const FP: &str = "uUk+L0nGSZdCQ1R18MTb5ShIRfEEiWkhmXtrts1ftjg=";
const TS: u64 = 1_700_000_000;
const NONCE: &str = "00112233445566778899aabbccddeeff";
const REQUEST_MESSAGE: &str = "handshake:5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq:1700000000:00112233445566778899aabbccddeeff:uUk+L0nGSZdCQ1R18MTb5ShIRfEEiWkhmXtrts1ftjg=";
const REQUEST_SIGNATURE: &str =
    "4MrfLRdVOEYi8Oug68S6HLsb5LUVpjF56qUo8FTLP3pCi3QJKDk7AfeVNLVVEWqbgVbJx1c4GoCPt7seAXKlhw==";
const RESPONSE_MESSAGE: &str = "handshake_response:5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq:5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH:1700000000:00112233445566778899aabbccddeeff:uUk+L0nGSZdCQ1R18MTb5ShIRfEEiWkhmXtrts1ftjg=";
const RESPONSE_PAYLOAD_HEX: &str = "96d930354363797178586e4a756361436e5151767655673545507a6a31756f4e417841435a767a417248773561564476674e48ce6553f100d958444a53736a2f6c634c4169484b57766d4e6663654b392b4c377731577173582f6a6c4f4e6e555157696d48313079645746456e74616b437a6d455631656c2b7a6238744d384a4c4b422f376970637763516139746a513d3dc3d943636f6e6e5f354366437234375635447465366277784e4245384b396f4e6e5164396669617936614445456b675974467637773446715f31373030303030303030313233d92c75556b2b4c306e47535a644351315231384d5462355368495266454569576b686d58747274733166746a673d";

/// Reads the str8 fields of the accepted-response vector by its documented
/// structure: 96 · str8 hotkey · ce u32 · str8 sig · c3 · str8 id · str8 fp.
fn response_vector() -> (String, u64, String, String, String) {
    let p = hex::decode(RESPONSE_PAYLOAD_HEX).unwrap();
    assert_eq!(p.len(), 262);
    let mut i = 1;
    let str8 = |i: &mut usize| {
        assert_eq!(p[*i], 0xd9);
        let n = p[*i + 1] as usize;
        let s = String::from_utf8(p[*i + 2..*i + 2 + n].to_vec()).unwrap();
        *i += 2 + n;
        s
    };
    let hotkey = str8(&mut i);
    assert_eq!(p[i], 0xce);
    let ts = u32::from_be_bytes(p[i + 1..i + 5].try_into().unwrap()) as u64;
    i += 5;
    let sig = str8(&mut i);
    assert_eq!(p[i], 0xc3);
    i += 1;
    let id = str8(&mut i);
    let fp = str8(&mut i);
    assert_eq!(i, p.len());
    (hotkey, ts, sig, id, fp)
}

#[test]
fn illustrative_fingerprint() {
    assert_eq!(cert_fingerprint(b"example certificate DER bytes"), FP);
    assert_eq!(FP.len(), handshake::FINGERPRINT_B64_LEN);
}

#[test]
fn signed_strings_are_exact() {
    assert_eq!(
        request_message(VALIDATOR_HOTKEY, TS, NONCE, FP),
        REQUEST_MESSAGE
    );
    assert_eq!(
        response_message(VALIDATOR_HOTKEY, MINER_HOTKEY, TS, NONCE, FP),
        RESPONSE_MESSAGE
    );
}

#[test]
fn connection_id_format() {
    let (_, _, _, id, _) = response_vector();
    assert_eq!(connection_id(VALIDATOR_HOTKEY, 1_700_000_000_123), id);
    assert_eq!(
        id,
        "conn_5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq_1700000000123"
    );
}

#[test]
fn published_request_signature_verifies() {
    verify_signature(
        VALIDATOR_HOTKEY,
        REQUEST_MESSAGE.as_bytes(),
        REQUEST_SIGNATURE,
    )
    .unwrap();
    let fields = RequestFields {
        validator_hotkey: VALIDATOR_HOTKEY,
        timestamp: TS,
        nonce: NONCE,
        signature: REQUEST_SIGNATURE,
    };
    verify_request(&fields, FP, TS + 10, 300).unwrap();
    // Under the miner's key it is not valid.
    assert_eq!(
        verify_signature(MINER_HOTKEY, REQUEST_MESSAGE.as_bytes(), REQUEST_SIGNATURE),
        Err(HandshakeError::BadSignature)
    );
}

#[test]
fn published_response_signature_verifies() {
    let (hotkey, ts, sig, _, fp) = response_vector();
    assert_eq!(hotkey, MINER_HOTKEY);
    assert_eq!(ts, TS);
    assert_eq!(fp, FP);
    assert_eq!(sig.len(), handshake::SIGNATURE_B64_LEN);
    verify_signature(MINER_HOTKEY, RESPONSE_MESSAGE.as_bytes(), &sig).unwrap();
    let resp = ResponseFields {
        miner_hotkey: &hotkey,
        timestamp: ts,
        signature: &sig,
        accepted: true,
        cert_fingerprint: Some(&fp),
    };
    verify_response(&resp, MINER_HOTKEY, VALIDATOR_HOTKEY, NONCE, FP).unwrap();
}

fn flipped(sig_b64: &str, bit: usize) -> String {
    let mut raw = decode_signature(sig_b64).unwrap();
    raw[bit / 8] ^= 1 << (bit % 8);
    encode_signature(&raw)
}

// Bits across R, across s, and the top bit of the last byte (schnorrkel's
// marker, which makes the signature unparseable rather than wrong).
const BITS: [usize; 10] = [0, 7, 100, 255, 256, 300, 400, 500, 510, 511];

#[test]
fn request_signature_with_a_flipped_bit_is_rejected() {
    for bit in BITS {
        let sig = flipped(REQUEST_SIGNATURE, bit);
        assert_eq!(
            verify_signature(VALIDATOR_HOTKEY, REQUEST_MESSAGE.as_bytes(), &sig),
            Err(HandshakeError::BadSignature),
            "bit {bit}"
        );
    }
}

#[test]
fn response_signature_with_a_flipped_bit_is_rejected() {
    let (_, _, sig, _, _) = response_vector();
    for bit in BITS {
        let bad = flipped(&sig, bit);
        let resp = ResponseFields {
            miner_hotkey: MINER_HOTKEY,
            timestamp: TS,
            signature: &bad,
            accepted: true,
            cert_fingerprint: Some(FP),
        };
        assert_eq!(
            verify_response(&resp, MINER_HOTKEY, VALIDATOR_HOTKEY, NONCE, FP),
            Err(HandshakeError::BadSignature),
            "bit {bit}"
        );
    }
}

#[test]
fn tampered_messages_are_rejected() {
    for bit in [0usize, 9, 80, 200, 8 * REQUEST_MESSAGE.len() - 1] {
        let mut msg = REQUEST_MESSAGE.as_bytes().to_vec();
        msg[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            verify_signature(VALIDATOR_HOTKEY, &msg, REQUEST_SIGNATURE),
            Err(HandshakeError::BadSignature),
            "bit {bit}"
        );
    }
    // The response signed for one nonce does not verify for another.
    let (_, _, sig, _, _) = response_vector();
    let resp = ResponseFields {
        miner_hotkey: MINER_HOTKEY,
        timestamp: TS,
        signature: &sig,
        accepted: true,
        cert_fingerprint: Some(FP),
    };
    assert_eq!(
        verify_response(
            &resp,
            MINER_HOTKEY,
            VALIDATOR_HOTKEY,
            "00112233445566778899aabbccddeefe",
            FP
        ),
        Err(HandshakeError::BadSignature)
    );
    // Nor for a different response timestamp.
    let later = ResponseFields {
        timestamp: TS + 1,
        ..resp
    };
    assert_eq!(
        verify_response(&later, MINER_HOTKEY, VALIDATOR_HOTKEY, NONCE, FP),
        Err(HandshakeError::BadSignature)
    );
}
