//! The handshake checks (PROTOCOL §5) on arbitrary fields.
//!
//! Input: `[choices: u16] [now: u64] [ts: u64] [max_age: u16]` then u16-length-prefixed
//! strings (hotkey, nonce, signature, fingerprint, expected miner hotkey, own nonce), then
//! operations on a small nonce cache and rate limiter. The choice bits swap fields for
//! the known-answer values of §4.5 so the fuzzer reaches the signature checks.
//!
//! Checks: no panic; success implies every individual check passes; the published
//! vectors verify whenever their timestamp is in the window; decoders round-trip; the
//! cache and limiter keep their bounds and their replay/limit promises.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use lightning_fuzz::Cursor;
use lightning_proto::handshake::{
    self, check_nonce_format, check_timestamp, decode_signature, encode_signature, request_message,
    response_message, verify_request, verify_response, verify_signature, HandshakeError,
    HandshakeRateLimiter, NonceCache, RequestFields, ResponseFields,
};
use lightning_proto::identity::ss58;

const MINER_HOTKEY: &str = "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH";
const VALIDATOR_HOTKEY: &str = "5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq";
const FP: &str = "uUk+L0nGSZdCQ1R18MTb5ShIRfEEiWkhmXtrts1ftjg=";
const TS: u64 = 1_700_000_000;
const NONCE: &str = "00112233445566778899aabbccddeeff";
const REQUEST_SIG: &str =
    "4MrfLRdVOEYi8Oug68S6HLsb5LUVpjF56qUo8FTLP3pCi3QJKDk7AfeVNLVVEWqbgVbJx1c4GoCPt7seAXKlhw==";
const RESPONSE_SIG: &str =
    "DJSsj/lcLAiHKWvmNfceK9+L7w1WqsX/jlONnUQWimH10ydWFEntakCzmEV1el+zb8tM8JLKB/7ipcwcQa9tjQ==";

fn pick(choice: u16, fuzzed: String, options: &[&str]) -> String {
    match (choice as usize)
        .checked_sub(1)
        .and_then(|i| options.get(i))
    {
        Some(s) => (*s).to_string(),
        None => fuzzed,
    }
}

/// Exercises the error's text paths. What the peer sent is truncated in errors (they end
/// up in logs); `local` is the length of our own inputs an error may quote in full.
fn describe(e: &HandshakeError, local: usize) {
    assert!(!e.reason_code().is_empty());
    let text = e.to_string();
    assert!(
        text.len() <= 512 + local,
        "error text echoes too much: {} bytes",
        text.len()
    );
}

fuzz_target!(|input: &[u8]| {
    let mut c = Cursor::new(input);
    let choices = c.u16();
    let now_raw = c.u64();
    let ts_raw = c.u64();
    let max_age = u64::from(c.u16());
    // Timestamps near the vectors' time are far more interesting than random u64s.
    let (now, ts) = if choices & 0x8000 != 0 {
        (now_raw, ts_raw)
    } else {
        (
            TS.wrapping_add(now_raw % 4000).wrapping_sub(2000),
            TS.wrapping_add(ts_raw % 4000).wrapping_sub(2000),
        )
    };

    let hotkey = pick(choices & 3, c.string(), &[VALIDATOR_HOTKEY, MINER_HOTKEY]);
    let nonce = pick(
        (choices >> 2) & 3,
        c.string(),
        &[NONCE, &NONCE.to_uppercase()],
    );
    let signature = pick((choices >> 4) & 3, c.string(), &[REQUEST_SIG, RESPONSE_SIG]);
    let fp = pick((choices >> 6) & 1, c.string(), &[FP]);
    let expected_miner = pick((choices >> 7) & 1, c.string(), &[MINER_HOTKEY]);
    let own_nonce = pick((choices >> 8) & 1, c.string(), &[NONCE]);
    let accepted = choices & 0x200 != 0;
    let fp_present = choices & 0x400 == 0;

    // --- server side -----------------------------------------------------------------
    let request = RequestFields {
        validator_hotkey: &hotkey,
        timestamp: ts,
        nonce: &nonce,
        signature: &signature,
    };
    let verdict = verify_request(&request, &fp, now, max_age);
    match &verdict {
        Ok(()) => {
            check_timestamp(now, ts, max_age).expect("accepted timestamp is in the window");
            check_nonce_format(&nonce).expect("accepted nonce is well formed");
            let message = request_message(&hotkey, ts, &nonce, &fp);
            verify_signature(&hotkey, message.as_bytes(), &signature)
                .expect("accepted signature verifies");
        }
        Err(e) => describe(e, 0),
    }
    let vector_request = hotkey == VALIDATOR_HOTKEY
        && nonce == NONCE
        && signature == REQUEST_SIG
        && fp == FP
        && ts == TS;
    if vector_request && check_timestamp(now, ts, max_age).is_ok() {
        assert_eq!(verdict, Ok(()), "the §4.5 request vector must verify");
    }

    // --- client side -----------------------------------------------------------------
    let response = ResponseFields {
        miner_hotkey: &hotkey,
        timestamp: ts,
        signature: &signature,
        accepted,
        cert_fingerprint: fp_present.then_some(fp.as_str()),
    };
    let verdict = verify_response(&response, &expected_miner, VALIDATOR_HOTKEY, &own_nonce, FP);
    match &verdict {
        Ok(()) => {
            assert!(accepted && fp_present && fp == FP && hotkey == expected_miner);
            let message = response_message(VALIDATOR_HOTKEY, &hotkey, ts, &own_nonce, FP);
            verify_signature(&hotkey, message.as_bytes(), &signature)
                .expect("accepted response signature verifies");
        }
        Err(e) => describe(e, expected_miner.len()),
    }
    let vector_response = hotkey == MINER_HOTKEY
        && expected_miner == MINER_HOTKEY
        && signature == RESPONSE_SIG
        && own_nonce == NONCE
        && fp == FP
        && fp_present
        && accepted
        && ts == TS;
    if vector_response {
        assert_eq!(verdict, Ok(()), "the §4.5 response vector must verify");
    }

    // --- decoders --------------------------------------------------------------------
    match decode_signature(&signature) {
        Ok(raw) => assert_eq!(encode_signature(&raw), signature),
        Err(e) => describe(&e, 0),
    }
    if let Ok((prefix, key)) = ss58::decode(&hotkey) {
        assert!(ss58::is_accepted_prefix(prefix));
        assert_eq!(ss58::decode(&ss58::encode(&key, prefix)), Ok((prefix, key)));
    }
    assert_eq!(handshake::cert_fingerprint(fp.as_bytes()).len(), 44);
    if check_nonce_format(&nonce).is_err() {
        assert!(nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    // --- replay cache and rate limiter -----------------------------------------------
    let cache_cap = usize::from(c.u8() % 8) + 1;
    let mut cache = NonceCache::new(cache_cap, max_age.max(1));
    let limit_per_minute = usize::from(c.u8() % 5);
    let max_ips = usize::from(c.u8() % 5);
    let mut limiter = HandshakeRateLimiter::new(limit_per_minute, max_ips);
    let mut clock = now;
    let ops = usize::from(c.u8() % 64);
    for _ in 0..ops {
        let op = c.u8();
        clock = clock.wrapping_add(u64::from(c.u8() % 70));
        match op % 4 {
            0 | 1 => {
                let n = if op & 0x80 != 0 {
                    format!("{:032x}", u128::from(c.u8()))
                } else {
                    nonce.clone()
                };
                let fresh = !cache.contains(&n);
                match cache.check_and_insert(&n, clock) {
                    Ok(()) => {
                        assert!(fresh, "a remembered nonce was accepted again");
                        assert!(cache.contains(&n.to_uppercase()));
                        assert_eq!(
                            cache.check_and_insert(&n.to_uppercase(), clock),
                            Err(HandshakeError::Replay)
                        );
                    }
                    Err(HandshakeError::Replay) => assert!(!fresh),
                    Err(HandshakeError::BadNonce) => assert!(check_nonce_format(&n).is_err()),
                    Err(e) => panic!("unexpected nonce cache error {e:?}"),
                }
                assert!(cache.len() <= cache_cap);
            }
            2 => {
                let b = c.u8();
                let ip = if b & 0x80 != 0 {
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(b & 7)))
                } else {
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, b & 7))
                };
                let before = limiter.attempts_in_window(ip, clock);
                match limiter.check_and_record(ip, clock) {
                    Ok(()) => assert!(before < limit_per_minute),
                    Err(HandshakeError::RateLimited) => {}
                    Err(e) => panic!("unexpected limiter error {e:?}"),
                }
                assert!(limiter.attempts_in_window(ip, clock) <= limit_per_minute);
                assert!(limiter.tracked_ips() <= max_ips.max(1));
            }
            _ => {
                cache.evict_stale(clock);
                limiter.evict_stale(clock);
                assert!(cache.len() <= cache_cap);
            }
        }
    }
});
