//! Buffers for large payloads, kept for reuse.
//!
//! A payload that spans QUIC chunks is copied once into a buffer of its whole length
//! ([`FrameDecoder`](crate::frame::FrameDecoder)). At 1 MB and a few requests in flight,
//! glibc gives such buffers back to the kernel as soon as several are freed together
//! (it trims the top of its heap), so the next ones are faulted in and zeroed again:
//! measured ~170 page faults per 1 MB request in a validator at c=4, and 20% of its CPU.
//! A [`BufferPool`] keeps a bounded number of bytes of freed payload buffers and hands
//! them out again. A payload taken from the pool is a [`Bytes`] whose owner returns the
//! buffer when the last clone is dropped, on whatever thread that happens.
//!
//! The pool never holds more than its byte limit, never keeps a buffer more than twice
//! the size asked for, and is only used for payloads of at least [`POOLED_MIN_BYTES`]:
//! smaller ones are cheap for any allocator.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// Payloads from this size on come from the pool (glibc's default mmap threshold: below
/// it, freed memory stays in the heap's bins anyway).
pub const POOLED_MIN_BYTES: usize = 128 * 1024;

/// Bytes of free buffers one pool keeps by default (16 MiB: sixteen 1 MB payloads).
pub const DEFAULT_POOL_BYTES: usize = 16 * 1024 * 1024;

/// Freed payload buffers of one endpoint, kept for reuse up to a byte limit. Cloning
/// shares the pool.
#[derive(Debug, Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Bytes of capacity the free list may hold.
    max_bytes: usize,
    free: Mutex<Free>,
}

#[derive(Debug, Default)]
struct Free {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl Default for BufferPool {
    fn default() -> Self {
        Self::new(DEFAULT_POOL_BYTES)
    }
}

impl BufferPool {
    /// A pool that keeps at most `max_bytes` of free buffers (0 keeps none).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_bytes,
                free: Mutex::new(Free::default()),
            }),
        }
    }

    /// An empty buffer with room for `len` bytes: a kept one if one fits (at most twice
    /// `len`, so a small payload does not pin a large buffer), else a new one.
    pub fn take(&self, len: usize) -> PooledBuf {
        let reused = {
            let mut free = self.inner.lock();
            // The most recently given back first: it is the likeliest still in the CPU
            // cache.
            let fit = free
                .buffers
                .iter()
                .rposition(|b| b.capacity() >= len && b.capacity() / 2 <= len);
            fit.map(|i| {
                let buf = free.buffers.swap_remove(i);
                free.bytes -= buf.capacity();
                buf
            })
        };
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(len));
        buf.clear();
        PooledBuf {
            buf,
            pool: Arc::downgrade(&self.inner),
        }
    }

    /// Bytes of free buffers held now.
    pub fn free_bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // Plain counters and buffers: still consistent after a panic elsewhere.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut free = self.lock();
        if free.bytes + buf.capacity() <= self.max_bytes {
            free.bytes += buf.capacity();
            free.buffers.push(buf);
        }
    }
}

/// A buffer taken from a [`BufferPool`]: filled like a `Vec`, then frozen into
/// [`Bytes`] that give it back when dropped.
#[derive(Debug)]
pub struct PooledBuf {
    buf: Vec<u8>,
    pool: Weak<Inner>,
}

impl PooledBuf {
    /// Appends `data` (within the capacity asked for, nothing is reallocated).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The written bytes as [`Bytes`]; the buffer returns to its pool (if the pool
    /// still exists and has room) when the last clone is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_payload_returns_its_buffer_and_the_next_one_reuses_it() {
        let pool = BufferPool::new(4 << 20);
        let mut b = pool.take(1 << 20);
        b.extend_from_slice(&[7; 1 << 20]);
        let bytes = b.freeze();
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.free_bytes(), 0, "a clone still holds it");
        assert_eq!(clone.len(), 1 << 20);
        assert!(clone.iter().all(|&x| x == 7));
        drop(clone);
        let held = pool.free_bytes();
        assert!(held >= 1 << 20, "{held}");
        let again = pool.take(1 << 20);
        assert!(again.is_empty());
        assert_eq!(pool.free_bytes(), 0, "the kept buffer was handed out");
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_limit_nor_oversized_buffers_for_small_asks() {
        let pool = BufferPool::new(3 << 20);
        let buffers: Vec<Bytes> = (0..5)
            .map(|_| {
                let mut b = pool.take(1 << 20);
                b.extend_from_slice(&[1; 1 << 20]);
                b.freeze()
            })
            .collect();
        drop(buffers);
        assert!(pool.free_bytes() <= 3 << 20);
        assert!(pool.free_bytes() >= 2 << 20);
        // A 256 KiB ask does not take a 1 MiB buffer.
        let before = pool.free_bytes();
        let small = pool.take(256 << 10);
        assert_eq!(pool.free_bytes(), before);
        drop(small);
    }

    #[test]
    fn the_buffer_given_back_last_is_handed_out_first() {
        let pool = BufferPool::new(8 << 20);
        let fill = |byte: u8| {
            let mut b = pool.take(1 << 20);
            b.extend_from_slice(&[byte; 1 << 20]);
            b.freeze()
        };
        let (first, second, third) = (fill(1), fill(2), fill(3));
        let last_back = second.as_ptr();
        drop(first);
        drop(third);
        drop(second);
        let next = pool.take(1 << 20);
        assert_eq!(
            next.as_ref().as_ptr(),
            last_back,
            "not the most recently freed buffer"
        );
    }

    #[test]
    fn payloads_outlive_their_pool() {
        let pool = BufferPool::new(4 << 20);
        let mut b = pool.take(POOLED_MIN_BYTES);
        b.extend_from_slice(&[3; POOLED_MIN_BYTES]);
        let bytes = b.freeze();
        drop(pool);
        assert_eq!(bytes.len(), POOLED_MIN_BYTES);
        drop(bytes);
    }
}
