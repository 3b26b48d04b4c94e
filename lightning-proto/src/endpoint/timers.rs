//! Application-level deadlines kept beside quinn's own timers.
//!
//! A key has at most one pending deadline: scheduling it again moves it. Deadlines whose
//! reason has gone (a request answered, a stream finished) are cancelled by their owner,
//! so the set holds only live deadlines: its size follows what is in flight, not the
//! request rate times the timeout (a million stale entries at 30k requests/s before).
//! Owners still check, when a deadline fires, whether it applies.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Timers<K> {
    /// Pending deadlines in firing order; the sequence number keeps equal instants apart.
    by_time: BTreeMap<(Instant, u64), K>,
    /// Where each key's deadline sits in `by_time`.
    by_key: HashMap<K, (Instant, u64)>,
    seq: u64,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
            by_key: HashMap::new(),
            seq: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Timers<K> {
    /// Sets `key`'s deadline to `at`, replacing any it had.
    pub(crate) fn schedule(&mut self, at: Instant, key: K) {
        self.seq += 1;
        let slot = (at, self.seq);
        if let Some(old) = self.by_key.insert(key.clone(), slot) {
            self.by_time.remove(&old);
        }
        self.by_time.insert(slot, key);
    }

    /// Drops `key`'s deadline, if it has one.
    pub(crate) fn cancel(&mut self, key: &K) {
        if let Some(slot) = self.by_key.remove(key) {
            self.by_time.remove(&slot);
        }
    }

    pub(crate) fn next(&self) -> Option<(Instant, &K)> {
        self.by_time.first_key_value().map(|((at, _), k)| (*at, k))
    }

    /// Pops the earliest entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let (&(at, _), _) = self.by_time.first_key_value()?;
        if at > now {
            return None;
        }
        let ((at, _), key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some((at, key))
    }

    /// Pending deadlines.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_time.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_has_one_deadline_and_cancelled_ones_never_fire() {
        let t0 = crate::test_clock::origin();
        let mut t = Timers::default();
        t.schedule(t0 + Duration::from_secs(5), "a");
        t.schedule(t0 + Duration::from_secs(1), "b");
        t.schedule(t0 + Duration::from_secs(2), "a");
        assert_eq!(t.len(), 2);
        t.cancel(&"b");
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(9)),
            Some((t0 + Duration::from_secs(2), "a"))
        );
        assert_eq!(t.pop_due(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.len(), 0);
    }
}
