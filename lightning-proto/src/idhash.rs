//! A fast hasher for maps keyed by identifiers this process allocates itself (connection
//! handles, request ids, tickets).
//!
//! The standard library's SipHash resists keys chosen by an attacker; these keys are never
//! chosen by a peer, and hashing them showed up at several percent of the request path in
//! profiles. Never use these maps for keys a peer controls (addresses, hotkeys, stream ids).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative (Fibonacci) hashing of integer ids: spreads consecutive ids over all bits,
/// which hashbrown needs (it takes its tag from the top bits).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

/// A map keyed by locally allocated ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A set of locally allocated ids.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_ids_differ_in_the_top_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let tops: HashSet<u64> = (0u64..128).map(|i| build.hash_one(i) >> 57).collect();
        // 128 consecutive ids should use most of the 128 possible 7-bit tags.
        assert!(tops.len() > 64, "{}", tops.len());
    }

    #[test]
    fn maps_work_as_maps() {
        let mut m: IdMap<usize, &str> = IdMap::default();
        for i in 0..1000 {
            m.insert(i, "x");
        }
        assert_eq!(m.len(), 1000);
        assert!(m.remove(&500).is_some());
        assert!(!m.contains_key(&500));
        let mut s: IdSet<(usize, u64)> = IdSet::default();
        assert!(s.insert((1, 2)));
        assert!(!s.insert((1, 2)));
    }
}
