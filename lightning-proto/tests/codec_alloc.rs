//! The frame decoder never allocates on the strength of a declared length:
//! a peer announcing 60 MiB and sending a trickle costs a trickle. Nor does a data
//! map's shape (duplicate keys) make decoding allocate more than the bytes received.
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

/// The tests share the global counter: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn declared_length_does_not_drive_allocation() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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

/// Once the reader admits the declared length (the server after its read budget reserved
/// it, the client within its frame limit), a payload spanning chunks gets one buffer of
/// exactly that length, filled as it arrives; over the limit nothing is admitted.
#[test]
fn admitted_length_is_allocated_once_and_never_beyond_the_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let declared: u32 = 64_000;
    let header = encode_frame_header(MessageType::SynapsePacket, declared);
    let pieces: Vec<Bytes> = (0..64).map(|i| Bytes::from(vec![i as u8; 1000])).collect();

    let mut decoder = FrameDecoder::new(1024 * 1024);
    decoder.push(Bytes::copy_from_slice(&header));
    assert_eq!(decoder.next_frame(), Ok(None));
    decoder.admit_declared();
    LARGEST.store(0, Ordering::Relaxed);
    let mut frame = None;
    for piece in &pieces {
        decoder.push(piece.clone());
        if let Some(f) = decoder.next_frame().unwrap() {
            frame = Some(f);
        }
    }
    assert_eq!(LARGEST.load(Ordering::Relaxed), declared as usize);
    let frame = frame.unwrap();
    assert_eq!(frame.payload.len(), declared as usize);
    assert!(frame
        .payload
        .chunks(1000)
        .enumerate()
        .all(|(i, c)| c == &pieces[i][..]));

    // Reserving ahead without an admission: at most that far beyond what arrived, so a
    // peer that declares 60 000 bytes and sends 1 000 makes us reserve 1 000 + 8 000.
    let mut decoder = FrameDecoder::new(1024 * 1024).reserving_ahead(8_000);
    LARGEST.store(0, Ordering::Relaxed);
    decoder.push(Bytes::copy_from_slice(&encode_frame_header(
        MessageType::SynapseResponse,
        60_000,
    )));
    decoder.push(pieces[0].clone());
    assert_eq!(decoder.next_frame(), Ok(None));
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!((1_000..=9_000).contains(&largest), "reserved {largest}");

    // Over the limit: refused when the header completes, nothing reserved.
    let mut decoder = FrameDecoder::new(1024 * 1024).reserving_ahead(8_000);
    LARGEST.store(0, Ordering::Relaxed);
    decoder.push(Bytes::copy_from_slice(&encode_frame_header(
        MessageType::SynapseResponse,
        60 * 1024 * 1024,
    )));
    decoder.push(pieces[0].clone());
    assert!(decoder.next_frame().is_err());
    assert!(LARGEST.load(Ordering::Relaxed) < 64 * 1024);
}

/// A peer repeats a key whose value is a large array of small integers. Resolving the
/// duplicate used to decode every value into a tree of dynamic values (about 40 bytes per
/// one-byte integer) and encode it again: 16 MB of request took 712 MiB. Now the encoded
/// entries are copied, so nothing allocated is larger than the map itself.
#[test]
fn duplicate_keys_do_not_multiply_memory_when_deserializing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let elements = 1 << 20;
    let mut raw = vec![0x82]; // map of two entries, both "payload"
    for _ in 0..2 {
        raw.extend_from_slice(&[0xa7]);
        raw.extend_from_slice(b"payload");
        raw.push(0xdd); // array 32
        raw.extend_from_slice(&(elements as u32).to_be_bytes());
        raw.extend(std::iter::repeat_n(0x01u8, elements));
    }
    let map = lightning_proto::message::DataMap::from_raw(Bytes::from(raw.clone())).unwrap();

    #[derive(serde::Deserialize)]
    struct Request {
        #[allow(dead_code)]
        payload: serde::de::IgnoredAny,
    }
    LARGEST.store(0, Ordering::Relaxed);
    let _: Request = map.deserialize().unwrap();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= raw.len(),
        "largest allocation {largest} B for a {} B map",
        raw.len()
    );
}
