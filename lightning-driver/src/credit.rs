//! The chunk credit of one streaming handler: what the core has reserved for it in the
//! stream's chunk queue, shared between the endpoint task, which adds the core's grants,
//! and the handler's [`ChunkSink`](crate::handler::ChunkSink), which spends it.
//!
//! The core owns streaming backpressure (`Server::grant_chunk_credit`); this is only its
//! transport to another task. A chunk sent within the credit is always taken by the
//! core, so the driver keeps no queue of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use lightning_proto::endpoint::ChunkCredit;

/// Credit shared between the endpoint task (adds) and one sink (spends).
#[derive(Debug)]
pub(crate) struct SinkCredit {
    chunks: AtomicUsize,
    bytes: AtomicU64,
    closed: AtomicBool,
    changed: event_listener::Event,
    /// The server's `max_queued_chunk_bytes`: credit of that many bytes lets one chunk of
    /// any size go (see [`ChunkCredit`]).
    cap: u64,
}

impl SinkCredit {
    pub(crate) fn new(cap: u64) -> Self {
        Self {
            chunks: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            changed: event_listener::Event::new(),
            cap,
        }
    }

    /// Adds a grant of the core (endpoint task) and wakes the sink.
    pub(crate) fn add(&self, grant: ChunkCredit) {
        if grant == ChunkCredit::default() {
            return;
        }
        self.bytes.fetch_add(grant.bytes, Ordering::AcqRel);
        self.chunks.fetch_add(grant.chunks, Ordering::AcqRel);
        self.changed.notify(usize::MAX);
    }

    /// The stream is gone: a sink waiting for credit sees it closed.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify(usize::MAX);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn current(&self) -> ChunkCredit {
        ChunkCredit {
            chunks: self.chunks.load(Ordering::Acquire),
            bytes: self.bytes.load(Ordering::Acquire),
        }
    }

    /// Spends the credit of a chunk of `len` bytes, waiting for it; `false` if the stream
    /// closed first. One sink spends, so credit seen here stays there until spent.
    ///
    /// Byte credit too small for the chunk goes back to the core through `give_back`
    /// (held unused, it would keep the connection's other streams from that room); the
    /// core then grants this stream only enough for the chunk.
    pub(crate) async fn spend(&self, len: u64, mut give_back: impl FnMut(u64)) -> bool {
        loop {
            let listener = self.changed.listen();
            if self.is_closed() {
                return false;
            }
            let credit = self.current();
            if credit.fits(len, self.cap) {
                break;
            }
            if credit.chunks > 0 && credit.bytes > 0 {
                let back = self.bytes.swap(0, Ordering::AcqRel);
                if back > 0 {
                    give_back(back);
                }
            }
            listener.await;
        }
        // The same arithmetic as the core's `ChunkCredit::consume`.
        self.chunks.fetch_sub(1, Ordering::AcqRel);
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(len))
            });
        true
    }
}
