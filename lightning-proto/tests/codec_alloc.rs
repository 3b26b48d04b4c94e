//! The frame decoder never allocates on the strength of a declared length:
//! a peer announcing 60 MiB and sending a trickle costs a trickle.
//!
//! Its own test binary, because it swaps in a counting global allocator.

// Test helpers outside #[test] fns may panic on impossible inputs too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use lightning_proto::frame::{encode_frame_header, FrameDecoder, MessageType};

struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only records sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

#[test]
fn declared_length_does_not_drive_allocation() {
    let declared = 60 * 1024 * 1024;
    let header = encode_frame_header(MessageType::SynapsePacket, declared);
    // Pre-build the pieces so that only the decoder allocates below.
    let pieces: Vec<Bytes> = (0..64).map(|i| Bytes::from(vec![i as u8; 1000])).collect();

    let mut decoder = FrameDecoder::default();
    LARGEST.store(0, Ordering::Relaxed);
    decoder.push(Bytes::copy_from_slice(&header));
    assert_eq!(decoder.next_frame(), Ok(None));
    for piece in &pieces {
        decoder.push(piece.clone());
        assert_eq!(decoder.next_frame(), Ok(None));
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    // 64 000 payload bytes received: buffers stay within a small multiple
    // of that, nowhere near the declared 60 MiB.
    assert!(largest < 256 * 1024, "largest allocation {largest}");
    assert_eq!(decoder.buffered_len(), 5 + 64_000);
    assert!(decoder.finish().is_err());
}
