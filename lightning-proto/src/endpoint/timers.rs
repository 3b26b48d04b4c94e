//! Application-level deadlines kept beside quinn's own timers.
//!
//! Entries are never removed eagerly: when a deadline fires, its owner checks whether it still
//! applies. That keeps every insert O(log n) and cancellation free.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Timers<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    seq: u64,
}

impl<K: Ord> Default for Timers<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    pub(crate) fn schedule(&mut self, at: Instant, key: K) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, key)));
    }

    pub(crate) fn next(&self) -> Option<(Instant, &K)> {
        self.heap.peek().map(|Reverse((at, _, k))| (*at, k))
    }

    /// Pops the earliest entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                self.heap.pop().map(|Reverse((at, _, k))| (at, k))
            }
            _ => None,
        }
    }
}
