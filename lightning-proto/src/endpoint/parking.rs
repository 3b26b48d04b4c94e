//! Request streams waiting, unread, for request-byte budget.
//!
//! Waiting is first come, first served at two levels, so that resuming costs O(1) per
//! stream admitted rather than a scan of every waiting stream on every release:
//! - each connection keeps its own queue, whose head is the only stream tried: a stream
//!   that does not fit its connection's share waits for a release on that connection;
//! - connections whose head does not fit the pool's *total* wait in one global queue,
//!   tried in order whenever any connection releases budget.
//!
//! A connection with streams queued does not let its newer streams reserve ahead of them.
//! Across connections a newer stream that fits may go first: holding every connection's
//! requests behind one that waits for the total would let a peer that declares a huge
//! frame and never sends it stall everyone else.

use std::collections::VecDeque;

use quinn_proto::{ConnectionHandle, StreamId};

use crate::idhash::IdMap;

/// The parking lot is full: the stream must be refused rather than wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LotFull;

#[derive(Debug, Default)]
struct ConnQueue {
    streams: VecDeque<StreamId>,
    /// Listed in the global queue (its head waits for the pool's total).
    in_global: bool,
}

/// Waiting streams per connection, and connections waiting for the pool's total.
#[derive(Debug)]
pub(crate) struct ParkingLot {
    conns: IdMap<ConnectionHandle, ConnQueue>,
    global: VecDeque<ConnectionHandle>,
    total: usize,
    max_total: usize,
    max_per_conn: usize,
}

impl ParkingLot {
    /// A lot that holds at most `max_total` streams over all connections and
    /// `max_per_conn` of any one connection.
    pub(crate) fn new(max_total: usize, max_per_conn: usize) -> Self {
        Self {
            conns: IdMap::default(),
            global: VecDeque::new(),
            total: 0,
            max_total,
            max_per_conn,
        }
    }

    /// Whether some connection waits for the pool's total.
    pub(crate) fn waits_for_total(&self) -> bool {
        !self.global.is_empty()
    }

    /// Streams waiting, over all connections.
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// Whether a new stream on `ch` must queue behind its connection's waiting streams
    /// instead of reserving now.
    pub(crate) fn must_queue(&self, ch: ConnectionHandle) -> bool {
        self.conns.get(&ch).is_some_and(|q| !q.streams.is_empty())
    }

    /// Queues `stream` at the back of its connection's queue; with `for_total`, the
    /// connection also waits for the pool's total.
    pub(crate) fn park(
        &mut self,
        ch: ConnectionHandle,
        stream: StreamId,
        for_total: bool,
    ) -> Result<(), LotFull> {
        if self.total >= self.max_total
            || self.conns.get(&ch).map_or(0, |q| q.streams.len()) >= self.max_per_conn
        {
            return Err(LotFull);
        }
        self.total += 1;
        self.conns.entry(ch).or_default().streams.push_back(stream);
        if for_total {
            self.wait_for_total(ch);
        }
        Ok(())
    }

    /// The oldest waiting stream of `ch`.
    pub(crate) fn head(&self, ch: ConnectionHandle) -> Option<StreamId> {
        self.conns.get(&ch).and_then(|q| q.streams.front().copied())
    }

    /// Takes `ch`'s head out of the lot (it was admitted).
    pub(crate) fn pop_head(&mut self, ch: ConnectionHandle) {
        if let Some(q) = self.conns.get_mut(&ch) {
            if q.streams.pop_front().is_some() {
                self.total -= 1;
            }
            if q.streams.is_empty() && !q.in_global {
                self.conns.remove(&ch);
            }
        }
    }

    /// Takes `stream` out wherever it stands (it went away while waiting).
    pub(crate) fn remove(&mut self, ch: ConnectionHandle, stream: StreamId) {
        if let Some(q) = self.conns.get_mut(&ch) {
            if let Some(i) = q.streams.iter().position(|s| *s == stream) {
                q.streams.remove(i);
                self.total -= 1;
            }
            if q.streams.is_empty() && !q.in_global {
                self.conns.remove(&ch);
            }
        }
    }

    /// Forgets a closed connection and everything it had waiting.
    pub(crate) fn remove_conn(&mut self, ch: ConnectionHandle) {
        if let Some(q) = self.conns.remove(&ch) {
            self.total -= q.streams.len();
            if q.in_global {
                self.global.retain(|c| *c != ch);
            }
        }
    }

    /// Lists `ch` in the global queue (once) behind the connections already there.
    pub(crate) fn wait_for_total(&mut self, ch: ConnectionHandle) {
        if let Some(q) = self.conns.get_mut(&ch) {
            if !std::mem::replace(&mut q.in_global, true) {
                self.global.push_back(ch);
            }
        }
    }

    /// Puts `ch` back at the front of the global queue: its head still does not fit.
    pub(crate) fn requeue_front(&mut self, ch: ConnectionHandle) {
        if let Some(q) = self.conns.get_mut(&ch) {
            if !std::mem::replace(&mut q.in_global, true) {
                self.global.push_front(ch);
            }
        }
    }

    /// Takes the connection at the front of the global queue.
    pub(crate) fn pop_global(&mut self) -> Option<ConnectionHandle> {
        let ch = self.global.pop_front()?;
        if let Some(q) = self.conns.get_mut(&ch) {
            q.in_global = false;
            if q.streams.is_empty() {
                self.conns.remove(&ch);
            }
        }
        Some(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::{Dir, Side};

    fn sid(n: u64) -> StreamId {
        StreamId::new(Side::Client, Dir::Bi, n)
    }

    fn ch(n: usize) -> ConnectionHandle {
        ConnectionHandle(n)
    }

    #[test]
    fn per_connection_fifo_and_global_order() {
        let mut lot = ParkingLot::new(10, 10);
        lot.park(ch(1), sid(0), false)
            .unwrap_or_else(|_| panic!("room"));
        lot.park(ch(1), sid(1), false)
            .unwrap_or_else(|_| panic!("room"));
        lot.park(ch(2), sid(0), true)
            .unwrap_or_else(|_| panic!("room"));
        assert_eq!(lot.len(), 3);
        assert_eq!(lot.head(ch(1)), Some(sid(0)));
        assert!(!lot.must_queue(ch(3)), "other connections may go first");
        lot.wait_for_total(ch(1));
        assert_eq!(lot.pop_global(), Some(ch(2)));
        assert_eq!(lot.pop_global(), Some(ch(1)));
        assert_eq!(lot.pop_global(), None);
        lot.pop_head(ch(1));
        assert_eq!(lot.head(ch(1)), Some(sid(1)));
        lot.remove(ch(1), sid(1));
        assert_eq!(lot.head(ch(1)), None);
        assert!(lot.must_queue(ch(2)), "its own stream still waits");
        assert!(!lot.must_queue(ch(1)));
        lot.remove_conn(ch(2));
        assert_eq!(lot.len(), 0);
    }

    #[test]
    fn full_lot_refuses_and_a_closed_connection_leaves_the_global_queue() {
        let mut lot = ParkingLot::new(3, 2);
        assert!(lot.park(ch(1), sid(0), true).is_ok());
        assert!(lot.park(ch(2), sid(0), true).is_ok());
        assert!(lot.park(ch(2), sid(1), false).is_ok());
        assert_eq!(lot.park(ch(2), sid(2), false), Err(LotFull), "its share");
        assert_eq!(lot.park(ch(3), sid(0), false), Err(LotFull), "the total");
        lot.remove_conn(ch(1));
        assert_eq!(lot.pop_global(), Some(ch(2)));
        lot.requeue_front(ch(2));
        assert_eq!(lot.pop_global(), Some(ch(2)));
        assert_eq!(lot.len(), 2);
    }
}
