//! The server's nonce (replay) cache, PROTOCOL.md §5.12.

use std::collections::{HashSet, VecDeque};

use super::HandshakeError;

/// Remembers handshake nonces so a captured request cannot be replayed while
/// its timestamp is still fresh.
///
/// Nonces are stored as the 128-bit number their 32 hex digits spell, so
/// `00ab…` and `00AB…` are the same nonce. The reference compares strings and
/// lets a replay through by changing the case of a hex digit (§13.3); folding
/// case is stricter and never refuses a request the reference would accept
/// from an honest client, which always sends lowercase.
///
/// Entries live in a queue in insertion order next to a hash set, so
/// insertion, lookup and both evictions are O(1) amortised. Insert times are
/// clamped to be non-decreasing: if the caller's clock steps back, an entry is
/// recorded at the latest time seen, so it is kept slightly longer, never
/// shorter, and the queue stays sorted by time.
#[derive(Debug, Clone)]
pub struct NonceCache {
    seen: HashSet<u128>,
    order: VecDeque<(u128, u64)>,
    max_entries: usize,
    max_age_secs: u64,
    latest_insert: u64,
}

impl NonceCache {
    /// An empty cache holding at most `max_entries` nonces, each considered
    /// stale once it is `max_age_secs` old (`max_signature_age_secs`).
    pub fn new(max_entries: usize, max_age_secs: u64) -> NonceCache {
        NonceCache {
            seen: HashSet::new(),
            order: VecDeque::new(),
            max_entries,
            max_age_secs,
            latest_insert: 0,
        }
    }

    /// §5.7 step 6: refuses a nonce already present (even if stale but not
    /// yet evicted, like the reference), otherwise records it at `now_secs`.
    /// If that pushes the size over the cap, stale entries go first, then
    /// the oldest inserted until the size is back at the cap.
    ///
    /// A nonce that is not 32 hex digits is refused with
    /// [`HandshakeError::BadNonce`]; the server has already checked the
    /// format by then.
    pub fn check_and_insert(&mut self, nonce: &str, now_secs: u64) -> Result<(), HandshakeError> {
        self.check_and_insert_signed_at(nonce, now_secs, now_secs)
    }

    /// Like [`check_and_insert`](Self::check_and_insert) for a request signed at
    /// `timestamp`: the nonce is kept until `timestamp` itself is stale, even when the
    /// request came from up to 60 s in the future. The reference counts age from the
    /// insert, so a request dated ahead stays valid up to a minute after its nonce is
    /// forgotten and can be replayed in that window (§13.3); this closes it.
    pub fn check_and_insert_signed_at(
        &mut self,
        nonce: &str,
        now_secs: u64,
        timestamp: u64,
    ) -> Result<(), HandshakeError> {
        let key = parse_nonce(nonce)?;
        if !self.seen.insert(key) {
            return Err(HandshakeError::Replay);
        }
        self.latest_insert = self.latest_insert.max(now_secs).max(timestamp);
        self.order.push_back((key, self.latest_insert));
        if self.order.len() > self.max_entries {
            self.evict_stale(now_secs);
            while self.order.len() > self.max_entries {
                self.pop_oldest();
            }
        }
        Ok(())
    }

    /// The periodic cleanup: removes entries whose recorded time is
    /// ≤ `now_secs − max_age_secs`. While `now_secs < max_age_secs` nothing is stale: a
    /// saturating cutoff of 0 (what `now − max_age` gives in unsigned arithmetic) would
    /// forget nonces inserted at time 0 at once, even the one just inserted.
    pub fn evict_stale(&mut self, now_secs: u64) {
        let Some(cutoff) = now_secs.checked_sub(self.max_age_secs) else {
            return;
        };
        while self.order.front().is_some_and(|&(_, t)| t <= cutoff) {
            self.pop_oldest();
        }
    }

    /// True if `nonce` is currently remembered.
    pub fn contains(&self, nonce: &str) -> bool {
        parse_nonce(nonce).is_ok_and(|key| self.seen.contains(&key))
    }

    /// Number of remembered nonces.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn pop_oldest(&mut self) {
        if let Some((key, _)) = self.order.pop_front() {
            self.seen.remove(&key);
        }
    }
}

fn parse_nonce(nonce: &str) -> Result<u128, HandshakeError> {
    super::check_nonce_format(nonce)?;
    u128::from_str_radix(nonce, 16).map_err(|_| HandshakeError::BadNonce)
}
