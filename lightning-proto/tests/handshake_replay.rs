//! NonceCache (§5.12).

use lightning_proto::handshake::{HandshakeError, NonceCache};

fn nonce(i: u128) -> String {
    format!("{i:032x}")
}

#[test]
fn replay_is_rejected_and_count_grows() {
    let mut c = NonceCache::new(100, 300);
    assert!(c.is_empty());
    c.check_and_insert(&nonce(1), 1000).unwrap();
    c.check_and_insert(&nonce(2), 1000).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(
        c.check_and_insert(&nonce(1), 1001),
        Err(HandshakeError::Replay)
    );
    assert_eq!(c.len(), 2);
    assert!(c.contains(&nonce(2)));
    assert!(!c.contains(&nonce(3)));
}

#[test]
fn replay_check_ignores_hex_case() {
    let mut c = NonceCache::new(100, 300);
    c.check_and_insert("00112233445566778899aabbccddeeff", 10)
        .unwrap();
    assert_eq!(
        c.check_and_insert("00112233445566778899AABBCCDDEEFF", 11),
        Err(HandshakeError::Replay)
    );
    assert_eq!(
        c.check_and_insert("00112233445566778899aAbBcCdDeEfF", 11),
        Err(HandshakeError::Replay)
    );
}

#[test]
fn malformed_nonce_is_refused_not_stored() {
    let mut c = NonceCache::new(100, 300);
    assert_eq!(c.check_and_insert("xyz", 10), Err(HandshakeError::BadNonce));
    assert_eq!(c.len(), 0);
}

#[test]
fn stale_eviction_boundary() {
    let mut c = NonceCache::new(100, 300);
    c.check_and_insert(&nonce(1), 1000).unwrap();
    c.check_and_insert(&nonce(2), 1001).unwrap();
    // cutoff = 1299 - 300 = 999: nothing is <= 999.
    c.evict_stale(1299);
    assert_eq!(c.len(), 2);
    // cutoff = 1000: the entry exactly at the cutoff goes, the next stays.
    c.evict_stale(1300);
    assert_eq!(c.len(), 1);
    assert!(!c.contains(&nonce(1)));
    assert!(c.contains(&nonce(2)));
    // An evicted nonce can be used again.
    c.check_and_insert(&nonce(1), 1300).unwrap();
    c.evict_stale(1301);
    assert_eq!(c.len(), 1);
    assert!(c.contains(&nonce(1)));
}

/// Found by the `handshake_verify` fuzz target: with a saturating cutoff, at a time below
/// `max_age` an entry inserted at 0 counted as stale at once, so a cap eviction could drop
/// the nonce just inserted and the same request was accepted again.
#[test]
fn nothing_is_stale_before_max_age_has_passed() {
    let mut c = NonceCache::new(1, 1);
    c.check_and_insert(&nonce(1), 0).unwrap();
    c.check_and_insert(&nonce(2), 0).unwrap();
    assert!(c.contains(&nonce(2)), "the nonce just inserted was evicted");
    assert_eq!(
        c.check_and_insert(&nonce(2), 0),
        Err(HandshakeError::Replay)
    );
    let mut c = NonceCache::new(100, 300);
    c.check_and_insert(&nonce(1), 0).unwrap();
    c.evict_stale(10);
    assert!(c.contains(&nonce(1)), "10 s old is not stale");
    c.evict_stale(300);
    assert!(!c.contains(&nonce(1)), "300 s old is stale");
}

#[test]
fn cap_evicts_oldest_inserted_when_nothing_is_stale() {
    let mut c = NonceCache::new(3, 300);
    for i in 0..3 {
        c.check_and_insert(&nonce(i), 1000 + i as u64).unwrap();
    }
    c.check_and_insert(&nonce(3), 1003).unwrap();
    assert_eq!(c.len(), 3);
    assert!(!c.contains(&nonce(0)));
    for i in 1..=3 {
        assert!(c.contains(&nonce(i)));
    }
    // The evicted nonce is accepted again (the FIFO weakness noted in §13.3).
    c.check_and_insert(&nonce(0), 1004).unwrap();
    assert!(!c.contains(&nonce(1)));
}

#[test]
fn cap_removes_stale_entries_first() {
    let mut c = NonceCache::new(3, 300);
    c.check_and_insert(&nonce(0), 100).unwrap();
    c.check_and_insert(&nonce(1), 101).unwrap();
    c.check_and_insert(&nonce(2), 500).unwrap();
    // At 401 the entries from 100 and 101 are stale (cutoff 101): inserting a
    // fourth removes both stale ones, not just the single oldest.
    c.check_and_insert(&nonce(3), 401).unwrap();
    assert_eq!(c.len(), 2);
    assert!(c.contains(&nonce(2)) && c.contains(&nonce(3)));
}

#[test]
fn stale_entries_are_still_replays_until_evicted() {
    let mut c = NonceCache::new(10, 300);
    c.check_and_insert(&nonce(5), 100).unwrap();
    assert_eq!(
        c.check_and_insert(&nonce(5), 10_000),
        Err(HandshakeError::Replay)
    );
}

#[test]
fn clock_stepping_back_never_shortens_retention() {
    let mut c = NonceCache::new(10, 300);
    c.check_and_insert(&nonce(1), 1000).unwrap();
    c.check_and_insert(&nonce(2), 900).unwrap(); // clock went back
    c.evict_stale(1299);
    assert_eq!(c.len(), 2, "recorded at 1000, not 900");
    c.evict_stale(1300);
    assert_eq!(c.len(), 0);
}

#[test]
fn large_cache_stays_bounded() {
    let mut c = NonceCache::new(1000, 300);
    for i in 0..20_000u128 {
        c.check_and_insert(&nonce(i), 1000 + (i / 100) as u64)
            .unwrap();
        assert!(c.len() <= 1000);
    }
    assert_eq!(c.len(), 1000);
    assert!(c.contains(&nonce(19_999)));
    assert!(!c.contains(&nonce(18_999)));
}

#[test]
fn a_request_dated_ahead_is_remembered_until_its_own_timestamp_is_stale() {
    let mut c = NonceCache::new(10, 300);
    // Received at 1000, signed at 1060 (the future window allows up to 60 s ahead): the
    // request stays fresh while now < 1360, so its nonce must outlive insert + 300.
    c.check_and_insert_signed_at(&nonce(7), 1000, 1060).unwrap();
    c.evict_stale(1300);
    assert!(
        c.contains(&nonce(7)),
        "evicted while the request is still fresh"
    );
    c.evict_stale(1359);
    assert_eq!(
        c.check_and_insert_signed_at(&nonce(7), 1359, 1060),
        Err(HandshakeError::Replay)
    );
    c.evict_stale(1360);
    assert!(!c.contains(&nonce(7)));
}
