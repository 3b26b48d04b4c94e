//! Property tests: signing round-trips, and verification never panics.

use lightning_proto::handshake::{
    decode_signature, encode_signature, verify_request, verify_response, verify_signature,
    NonceCache, RequestFields, ResponseFields,
};
use lightning_proto::identity::{ss58, Keypair};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sign_then_verify(seed in any::<[u8; 32]>(), msg in proptest::collection::vec(any::<u8>(), 0..256)) {
        let kp = Keypair::from_seed(&seed);
        let sig = kp.sign(&msg);
        let b64 = encode_signature(&sig);
        prop_assert_eq!(decode_signature(&b64), Ok(sig));
        prop_assert_eq!(verify_signature(&kp.hotkey(), &msg, &b64), Ok(()));
        // Another message does not verify.
        let mut other = msg.clone();
        other.push(0);
        prop_assert!(verify_signature(&kp.hotkey(), &other, &b64).is_err());
    }

    #[test]
    fn ss58_round_trip(key in any::<[u8; 32]>(), idx in 0usize..6) {
        let prefix = [0u16, 2, 42, 255, 1284, 14998][idx];
        prop_assert_eq!(ss58::decode(&ss58::encode(&key, prefix)), Ok((prefix, key)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn verification_never_panics(hotkey in ".{0,80}", msg in ".{0,64}", sig in ".{0,120}") {
        let _ = verify_signature(&hotkey, msg.as_bytes(), &sig);
        let _ = ss58::decode(&hotkey);
        let _ = decode_signature(&sig);
    }

    #[test]
    fn verification_never_panics_on_near_valid_input(
        hotkey in "[1-9A-HJ-NP-Za-km-z]{40,52}",
        sig in "[A-Za-z0-9+/]{84,90}={0,2}",
        ts in any::<u64>(),
        now in any::<u64>(),
        max_age in any::<u64>(),
        nonce in "[0-9a-fA-Fg]{30,34}",
        fp in proptest::option::of(".{0,50}"),
        accepted in any::<bool>(),
    ) {
        let req = RequestFields { validator_hotkey: &hotkey, timestamp: ts, nonce: &nonce, signature: &sig };
        let _ = verify_request(&req, "fp", now, max_age);
        let resp = ResponseFields {
            miner_hotkey: &hotkey,
            timestamp: ts,
            signature: &sig,
            accepted,
            cert_fingerprint: fp.as_deref(),
        };
        let _ = verify_response(&resp, &hotkey, "v", &nonce, "fp");
        let mut cache = NonceCache::new(4, max_age);
        let _ = cache.check_and_insert(&nonce, now);
        cache.evict_stale(now);
    }
}
