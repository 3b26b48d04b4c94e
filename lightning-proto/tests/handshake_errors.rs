//! Each handshake rejection, reached through the public functions in the
//! order the server (§5.7) and client (§5.9) apply them.
// Fixture helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use lightning_proto::handshake::{
    build_request, cert_fingerprint, check_connection_limit, check_nonce_format, check_permit,
    check_timestamp, decode_signature, encode_signature, generate_nonce, sign_response,
    verify_request, verify_response, verify_signature, HandshakeError, HandshakeRateLimiter,
    NonceCache, RequestFields, ResponseFields, MAX_FUTURE_SKEW_SECS,
};
use lightning_proto::identity::{CallbackSigner, KeypairSigner, SignError, Ss58Error};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const NOW: u64 = 1_700_000_000;
const MAX_AGE: u64 = 300;

struct World {
    miner: KeypairSigner,
    validator: KeypairSigner,
    miner_hotkey: String,
    validator_hotkey: String,
    fp: String,
}

fn world() -> World {
    let miner = KeypairSigner::from_seed(&[1; 32]);
    let validator = KeypairSigner::from_seed(&[2; 32]);
    World {
        miner_hotkey: miner.keypair().hotkey(),
        validator_hotkey: validator.keypair().hotkey(),
        miner,
        validator,
        fp: cert_fingerprint(b"server leaf certificate"),
    }
}

fn signed_request(w: &World, ts: u64, nonce: &str) -> lightning_proto::handshake::SignedRequest {
    build_request(&w.validator, &w.validator_hotkey, ts, nonce, &w.fp).unwrap()
}

#[test]
fn full_round_trip_succeeds() {
    let w = world();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let nonce = generate_nonce(&mut rng);
    let req = signed_request(&w, NOW, &nonce);
    assert_eq!(req.signature.len(), 88);

    // Server.
    let mut limiter = HandshakeRateLimiter::new(30, 10_000);
    limiter
        .check_and_record(IpAddr::V4(Ipv4Addr::LOCALHOST), NOW)
        .unwrap();
    verify_request(&req.fields(), &w.fp, NOW + 1, MAX_AGE).unwrap();
    let mut cache = NonceCache::new(100_000, MAX_AGE);
    cache.check_and_insert(&req.nonce, NOW + 1).unwrap();
    check_connection_limit(false, 0, 128).unwrap();
    let sig = sign_response(
        &w.miner,
        &req.validator_hotkey,
        &w.miner_hotkey,
        NOW + 1,
        &req.nonce,
        &w.fp,
    )
    .unwrap();

    // Client.
    let resp = ResponseFields {
        miner_hotkey: &w.miner_hotkey,
        timestamp: NOW + 1,
        signature: &sig,
        accepted: true,
        cert_fingerprint: Some(&w.fp),
    };
    verify_response(&resp, &w.miner_hotkey, &w.validator_hotkey, &nonce, &w.fp).unwrap();

    // Replay of the same request.
    verify_request(&req.fields(), &w.fp, NOW + 2, MAX_AGE).unwrap();
    assert_eq!(
        cache.check_and_insert(&req.nonce, NOW + 2),
        Err(HandshakeError::Replay)
    );
}

#[test]
fn timestamp_boundaries() {
    // Age 299 accepted; 300 (exactly the limit) and 301 rejected.
    assert_eq!(check_timestamp(NOW, NOW - 299, 300), Ok(()));
    assert_eq!(
        check_timestamp(NOW, NOW - 300, 300),
        Err(HandshakeError::TooOld { age: 300, max: 300 })
    );
    assert_eq!(
        check_timestamp(NOW, NOW - 301, 300),
        Err(HandshakeError::TooOld { age: 301, max: 300 })
    );
    // +59 and +60 accepted; +61 rejected.
    assert_eq!(MAX_FUTURE_SKEW_SECS, 60);
    assert_eq!(check_timestamp(NOW, NOW + 59, 300), Ok(()));
    assert_eq!(check_timestamp(NOW, NOW + 60, 300), Ok(()));
    assert_eq!(
        check_timestamp(NOW, NOW + 61, 300),
        Err(HandshakeError::TooFarInFuture { ahead: 61 })
    );
    assert_eq!(check_timestamp(NOW, NOW, 300), Ok(()));
    // No overflow at the extremes.
    assert_eq!(check_timestamp(u64::MAX, u64::MAX, 1), Ok(()));
    assert!(check_timestamp(0, u64::MAX, 1).is_err());
    assert!(check_timestamp(u64::MAX, 0, 1).is_err());
}

#[test]
fn timestamp_checks_run_through_verify_request() {
    let w = world();
    let old = signed_request(&w, NOW - 300, "00112233445566778899aabbccddeeff");
    assert!(matches!(
        verify_request(&old.fields(), &w.fp, NOW, MAX_AGE),
        Err(HandshakeError::TooOld { .. })
    ));
    let future = signed_request(&w, NOW + 61, "00112233445566778899aabbccddeeff");
    assert!(matches!(
        verify_request(&future.fields(), &w.fp, NOW, MAX_AGE),
        Err(HandshakeError::TooFarInFuture { .. })
    ));
    // Timestamp is checked before the signature: a bad signature and a stale
    // timestamp report the timestamp.
    let mut f = old.fields();
    f.signature = "garbage";
    assert!(matches!(
        verify_request(&f, &w.fp, NOW, MAX_AGE),
        Err(HandshakeError::TooOld { .. })
    ));
}

#[test]
fn nonce_format() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for _ in 0..50 {
        let n = generate_nonce(&mut rng);
        assert_eq!(n.len(), 32);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        check_nonce_format(&n).unwrap();
    }
    // Zero padding: an all-zero RNG still gives 32 digits.
    struct Zero;
    impl rand_core::RngCore for Zero {
        fn next_u32(&mut self) -> u32 {
            0
        }
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            d.fill(0)
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
            d.fill(0);
            Ok(())
        }
    }
    assert_eq!(generate_nonce(&mut Zero), "0".repeat(32));

    check_nonce_format("00112233445566778899AABBCCDDEEFF").unwrap();
    for bad in [
        "",
        "0011223344556677889aabbccddeeff",
        &"a".repeat(64),
        "00112233445566778899aabbccddeefg",
        "0x112233445566778899aabbccddeeff",
        "+0112233445566778899aabbccddeeff",
        "0011223344556677889９aabbccddeef",
    ] {
        assert_eq!(
            check_nonce_format(bad),
            Err(HandshakeError::BadNonce),
            "{bad}"
        );
    }
}

#[test]
fn bad_nonce_through_verify_request() {
    let w = world();
    for nonce in ["short", "zz112233445566778899aabbccddeeff"] {
        let req = signed_request(&w, NOW, nonce);
        assert_eq!(
            verify_request(&req.fields(), &w.fp, NOW, MAX_AGE),
            Err(HandshakeError::BadNonce)
        );
    }
}

#[test]
fn server_signature_failures() {
    let w = world();
    let req = signed_request(&w, NOW, "00112233445566778899aabbccddeeff");
    let base = req.fields();

    // Signed by someone else.
    let forged = build_request(&w.miner, &w.validator_hotkey, NOW, base.nonce, &w.fp).unwrap();
    assert_eq!(
        verify_request(&forged.fields(), &w.fp, NOW, MAX_AGE),
        Err(HandshakeError::BadSignature)
    );
    // Signed for another certificate: shows up as a bad signature.
    let other_fp = cert_fingerprint(b"someone else's certificate");
    assert_eq!(
        verify_request(&base, &other_fp, NOW, MAX_AGE),
        Err(HandshakeError::BadSignature)
    );
    // Bad base64.
    let f = RequestFields {
        signature: "not*base64",
        ..base
    };
    assert_eq!(
        verify_request(&f, &w.fp, NOW, MAX_AGE),
        Err(HandshakeError::MalformedBase64)
    );
    // A 32-byte signature.
    let short = encode_signature(&[7u8; 64])[..44].to_owned();
    let short = format!("{}=", &short[..43]);
    let f = RequestFields {
        signature: &short,
        ..base
    };
    assert_eq!(
        verify_request(&f, &w.fp, NOW, MAX_AGE),
        Err(HandshakeError::BadSignatureLength(32))
    );
    // Invalid SS58.
    let f = RequestFields {
        validator_hotkey: "5NotAnAddress",
        ..base
    };
    assert!(matches!(
        verify_request(&f, &w.fp, NOW, MAX_AGE),
        Err(HandshakeError::InvalidSs58(_))
    ));
    // Same key under a reserved prefix.
    let reserved = w.validator.keypair().hotkey_with_prefix(46);
    let f = RequestFields {
        validator_hotkey: &reserved,
        ..base
    };
    assert_eq!(
        verify_request(&f, &w.fp, NOW, MAX_AGE),
        Err(HandshakeError::InvalidSs58(Ss58Error::FormatNotAllowed))
    );
}

#[test]
fn signature_decoding() {
    let sig = [0x5Au8; 64];
    let b64 = encode_signature(&sig);
    assert_eq!(decode_signature(&b64), Ok(sig));
    assert_eq!(
        decode_signature(""),
        Err(HandshakeError::BadSignatureLength(0))
    );
    assert_eq!(
        decode_signature(&b64[..86]),
        Err(HandshakeError::MalformedBase64)
    );
    // Whitespace and URL-safe characters are not standard base64.
    assert_eq!(
        decode_signature(&format!(" {b64}")),
        Err(HandshakeError::MalformedBase64)
    );
    let url = encode_signature(&[0xFB; 64]).replace('+', "-");
    assert_eq!(decode_signature(&url), Err(HandshakeError::MalformedBase64));
    // Long inputs: exact decoded length is reported, or bad base64 if any
    // chunk is bad.
    let long = "AAAA".repeat(1000);
    assert_eq!(
        decode_signature(&long),
        Err(HandshakeError::BadSignatureLength(3000))
    );
    let mut long_bad = "AAAA".repeat(1000);
    long_bad.push_str("A*==");
    assert_eq!(
        decode_signature(&long_bad),
        Err(HandshakeError::MalformedBase64)
    );
    let padded = format!("{}AA==", "AAAA".repeat(500));
    assert_eq!(
        decode_signature(&padded),
        Err(HandshakeError::BadSignatureLength(1501))
    );
    // 65 bytes.
    let b65 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([1u8; 65])
    };
    assert_eq!(
        decode_signature(&b65),
        Err(HandshakeError::BadSignatureLength(65))
    );
}

#[test]
fn client_response_checks_in_order() {
    let w = world();
    let nonce = "00112233445566778899aabbccddeeff";
    let sig = sign_response(
        &w.miner,
        &w.validator_hotkey,
        &w.miner_hotkey,
        NOW,
        nonce,
        &w.fp,
    )
    .unwrap();
    let good = ResponseFields {
        miner_hotkey: &w.miner_hotkey,
        timestamp: NOW,
        signature: &sig,
        accepted: true,
        cert_fingerprint: Some(&w.fp),
    };
    let check = |r: &ResponseFields<'_>| {
        verify_response(r, &w.miner_hotkey, &w.validator_hotkey, nonce, &w.fp)
    };
    check(&good).unwrap();

    // accepted=false wins over everything else.
    let rejected = ResponseFields {
        accepted: false,
        miner_hotkey: "",
        signature: "",
        cert_fingerprint: None,
        ..good
    };
    assert_eq!(check(&rejected), Err(HandshakeError::Rejected));

    let wrong = ResponseFields {
        miner_hotkey: &w.validator_hotkey,
        cert_fingerprint: None,
        ..good
    };
    assert_eq!(
        check(&wrong),
        Err(HandshakeError::WrongHotkey {
            expected: w.miner_hotkey.clone(),
            got: w.validator_hotkey.clone(),
        })
    );
    // A huge hotkey is not echoed in full.
    let huge = "5".repeat(1 << 20);
    let err = check(&ResponseFields {
        miner_hotkey: &huge,
        ..good
    })
    .unwrap_err();
    assert!(matches!(err, HandshakeError::WrongHotkey { .. }));
    assert!(err.to_string().len() < 400);

    let missing = ResponseFields {
        cert_fingerprint: None,
        signature: "",
        ..good
    };
    assert_eq!(check(&missing), Err(HandshakeError::FingerprintMissing));
    let other_fp = cert_fingerprint(b"other");
    let mismatch = ResponseFields {
        cert_fingerprint: Some(&other_fp),
        signature: "",
        ..good
    };
    assert_eq!(check(&mismatch), Err(HandshakeError::FingerprintMismatch));

    let empty = ResponseFields {
        signature: "",
        ..good
    };
    assert_eq!(check(&empty), Err(HandshakeError::EmptySignature));
    let bad_b64 = ResponseFields {
        signature: "@@@@",
        ..good
    };
    assert_eq!(check(&bad_b64), Err(HandshakeError::MalformedBase64));
    let short = encode_signature(&[0u8; 64]);
    let short = format!("{}==", &short[..42]); // 31 bytes
    let wrong_len = ResponseFields {
        signature: &short,
        ..good
    };
    assert_eq!(
        check(&wrong_len),
        Err(HandshakeError::BadSignatureLength(31))
    );

    // Response signed by the wrong key.
    let by_validator = sign_response(
        &w.validator,
        &w.validator_hotkey,
        &w.miner_hotkey,
        NOW,
        nonce,
        &w.fp,
    )
    .unwrap();
    let wrong_signer = ResponseFields {
        signature: &by_validator,
        ..good
    };
    assert_eq!(check(&wrong_signer), Err(HandshakeError::BadSignature));

    // An unparseable expected hotkey reports the SS58 error.
    let bad = ResponseFields {
        miner_hotkey: "xyz",
        ..good
    };
    assert!(matches!(
        verify_response(&bad, "xyz", &w.validator_hotkey, nonce, &w.fp),
        Err(HandshakeError::InvalidSs58(_))
    ));
}

#[test]
fn verify_signature_with_a_non_point_key() {
    // A checksum-valid SS58 whose key bytes are not a Ristretto point.
    let hotkey = lightning_proto::identity::ss58::encode(&[0xFF; 32], 42);
    assert_eq!(
        verify_signature(&hotkey, b"m", &encode_signature(&[0u8; 64])),
        Err(HandshakeError::BadSignature)
    );
}

#[test]
fn signing_failures_are_reported() {
    let w = world();
    let failing = CallbackSigner::new(|_| Err("hsm offline".into()));
    assert_eq!(
        build_request(&failing, &w.validator_hotkey, NOW, "00", &w.fp),
        Err(HandshakeError::Signing(SignError::Failed(
            "hsm offline".into()
        )))
    );
    let short = CallbackSigner::new(|_| Ok(vec![1, 2, 3]));
    assert_eq!(
        sign_response(&short, "v", "m", NOW, "00", &w.fp),
        Err(HandshakeError::Signing(SignError::BadLength(3)))
    );
}

#[test]
fn permit_and_connection_limit() {
    let permits: HashSet<String> = ["5Permitted".to_owned()].into();
    assert_eq!(check_permit(Some(&permits), "5Permitted"), Ok(()));
    assert_eq!(
        check_permit(Some(&permits), "5Other"),
        Err(HandshakeError::NotPermitted)
    );
    assert_eq!(
        check_permit(Some(&HashSet::new()), "5Permitted"),
        Err(HandshakeError::NotPermitted)
    );
    assert_eq!(
        check_permit(None, "5Permitted"),
        Err(HandshakeError::NotPermitted)
    );

    assert_eq!(check_connection_limit(false, 0, 1), Ok(()));
    assert_eq!(
        check_connection_limit(false, 1, 1),
        Err(HandshakeError::ConnectionLimit)
    );
    assert_eq!(check_connection_limit(true, 1, 1), Ok(()));
}

#[test]
fn rate_limited_variant() {
    let mut l = HandshakeRateLimiter::new(1, 10);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    l.check_and_record(ip, NOW).unwrap();
    assert_eq!(
        l.check_and_record(ip, NOW),
        Err(HandshakeError::RateLimited)
    );
}

#[test]
fn reason_codes_are_distinct_and_displays_are_clear() {
    let all = [
        HandshakeError::TooOld { age: 301, max: 300 },
        HandshakeError::TooFarInFuture { ahead: 61 },
        HandshakeError::BadNonce,
        HandshakeError::Replay,
        HandshakeError::BadSignature,
        HandshakeError::WrongHotkey {
            expected: "A".into(),
            got: "B".into(),
        },
        HandshakeError::FingerprintMismatch,
        HandshakeError::FingerprintMissing,
        HandshakeError::MalformedBase64,
        HandshakeError::BadSignatureLength(32),
        HandshakeError::InvalidSs58(Ss58Error::BadChecksum),
        HandshakeError::EmptySignature,
        HandshakeError::Rejected,
        HandshakeError::RateLimited,
        HandshakeError::NotPermitted,
        HandshakeError::ConnectionLimit,
        HandshakeError::Signing(SignError::NoSigner),
    ];
    let codes: HashSet<&str> = all.iter().map(|e| e.reason_code()).collect();
    assert_eq!(codes.len(), all.len());
    for e in &all {
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        all[5].to_string(),
        "Miner hotkey mismatch: expected A, got B"
    );
    assert_eq!(all[9].to_string(), "Invalid signature length: 32");
    assert_eq!(all[12].to_string(), "Handshake rejected by miner");
    assert_eq!(all[11].to_string(), "Miner returned empty signature");
    assert!(all[0].to_string().contains("301"));
    assert!(all[10].to_string().starts_with("Invalid SS58 address"));
}
