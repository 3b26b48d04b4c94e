//! Framing (PROTOCOL §3): the incremental decoder, its errors and limits.

// Test helpers outside #[test] fns may panic on impossible inputs too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use lightning_proto::frame::{
    encode_frame_header, validate_max_frame_payload, Frame, FrameDecoder, FrameError,
    InvalidMaxFramePayload, MessageType, DEFAULT_MAX_FRAME_PAYLOAD, FRAME_HEADER_LEN,
    MIN_MAX_FRAME_PAYLOAD,
};
use proptest::prelude::*;

const ALL_TYPES: [MessageType; 6] = [
    MessageType::HandshakeRequest,
    MessageType::HandshakeResponse,
    MessageType::SynapsePacket,
    MessageType::SynapseResponse,
    MessageType::StreamChunk,
    MessageType::StreamEnd,
];

fn frame_bytes(ty: MessageType, payload: &[u8]) -> Vec<u8> {
    let mut out = encode_frame_header(ty, payload.len() as u32).to_vec();
    out.extend_from_slice(payload);
    out
}

/// Feeds `chunks` one by one, draining frames after each push.
fn feed(decoder: &mut FrameDecoder, chunks: &[&[u8]]) -> Result<Vec<Frame>, FrameError> {
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(Bytes::copy_from_slice(chunk));
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
    }
    Ok(frames)
}

#[test]
fn constants() {
    assert_eq!(FRAME_HEADER_LEN, 5);
    assert_eq!(DEFAULT_MAX_FRAME_PAYLOAD, 67_108_864);
    assert_eq!(MIN_MAX_FRAME_PAYLOAD, 1_048_576);
    assert_eq!(
        FrameDecoder::default().max_payload(),
        DEFAULT_MAX_FRAME_PAYLOAD
    );
}

#[test]
fn message_type_bytes() {
    for (i, ty) in ALL_TYPES.iter().enumerate() {
        let byte = i as u8 + 1;
        assert_eq!(ty.as_u8(), byte);
        assert_eq!(MessageType::try_from(byte), Ok(*ty));
        assert_eq!(u8::from(*ty), byte);
    }
    for byte in [0u8, 7, 0x42, 0xff] {
        assert_eq!(
            MessageType::try_from(byte),
            Err(FrameError::UnknownType(byte))
        );
    }
    assert_eq!(
        encode_frame_header(MessageType::SynapsePacket, 0x16),
        [0x03, 0, 0, 0, 0x16]
    );
    assert_eq!(
        encode_frame_header(MessageType::StreamEnd, 0x0102_0304),
        [0x06, 1, 2, 3, 4]
    );
}

#[test]
fn error_strings_match_the_reference() {
    assert_eq!(
        FrameError::UnknownType(0x07).to_string(),
        "unknown message type: 0x07"
    );
    assert_eq!(
        FrameError::UnknownType(0xab).to_string(),
        "unknown message type: 0xab"
    );
    assert_eq!(
        FrameError::TooLarge {
            len: 67_108_865,
            max: 67_108_864
        }
        .to_string(),
        "frame payload 67108865 bytes exceeds maximum 67108864"
    );
    assert_eq!(
        FrameError::Truncated {
            received: 0,
            expected: 5
        }
        .to_string(),
        "stream closed after 0 of 5 bytes"
    );
}

#[test]
fn payload_limit_validation() {
    assert_eq!(validate_max_frame_payload(1_048_576), Ok(1_048_576));
    assert_eq!(validate_max_frame_payload(u32::MAX as usize), Ok(u32::MAX));
    let small = validate_max_frame_payload(1_048_575).unwrap_err();
    assert_eq!(small, InvalidMaxFramePayload::TooSmall(1_048_575));
    assert_eq!(
        small.to_string(),
        "max_frame_payload_bytes (1048575) must be at least 1048576 (1 MB)"
    );
    let big = validate_max_frame_payload(u32::MAX as usize + 1).unwrap_err();
    assert_eq!(
        big.to_string(),
        "max_frame_payload_bytes (4294967296) must not exceed 4294967295 (u32::MAX)"
    );
    assert!(FrameDecoder::checked(1000).is_err());
    assert_eq!(
        FrameDecoder::checked(2_000_000).unwrap().max_payload(),
        2_000_000
    );
}

#[test]
fn decodes_frames_in_order_with_empty_payloads() {
    let mut stream = frame_bytes(MessageType::StreamChunk, b"\x91\xc4\x01a");
    stream.extend(frame_bytes(MessageType::StreamEnd, b""));
    stream.extend(frame_bytes(MessageType::StreamEnd, b"\x92\xc3\xc0"));
    let mut decoder = FrameDecoder::new(1024);
    let frames = feed(&mut decoder, &[&stream]).unwrap();
    assert_eq!(
        frames,
        vec![
            Frame::new(
                MessageType::StreamChunk,
                Bytes::from_static(b"\x91\xc4\x01a")
            ),
            Frame::new(MessageType::StreamEnd, Bytes::new()),
            Frame::new(MessageType::StreamEnd, Bytes::from_static(b"\x92\xc3\xc0")),
        ]
    );
    assert_eq!(decoder.buffered_len(), 0);
    assert_eq!(decoder.finish(), Ok(()));
}

#[test]
fn unknown_type_is_rejected_on_its_first_byte() {
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(Bytes::from_static(&[0x09]));
    assert_eq!(decoder.next_frame(), Err(FrameError::UnknownType(0x09)));
    // Sticky.
    decoder.push(Bytes::from_static(&[0, 0, 0, 0]));
    assert_eq!(decoder.next_frame(), Err(FrameError::UnknownType(0x09)));
    assert_eq!(decoder.finish(), Err(FrameError::UnknownType(0x09)));
    assert_eq!(decoder.error(), Some(&FrameError::UnknownType(0x09)));

    // Also when it is the type byte of a later frame.
    let mut stream = frame_bytes(MessageType::StreamEnd, b"\x92\xc3\xc0");
    stream.push(0x00);
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(Bytes::from(stream));
    assert!(decoder.next_frame().unwrap().is_some());
    assert_eq!(decoder.next_frame(), Err(FrameError::UnknownType(0x00)));
}

#[test]
fn oversize_is_rejected_when_the_header_completes() {
    let max = 1_048_576;
    let mut decoder = FrameDecoder::new(max);
    let header = encode_frame_header(MessageType::SynapsePacket, max + 1);
    decoder.push(Bytes::copy_from_slice(&header[..4]));
    assert_eq!(decoder.next_frame(), Ok(None));
    decoder.push(Bytes::copy_from_slice(&header[4..]));
    let err = decoder.next_frame().unwrap_err();
    assert_eq!(err, FrameError::TooLarge { len: max + 1, max });
    assert_eq!(
        err.to_string(),
        "frame payload 1048577 bytes exceeds maximum 1048576"
    );
    // Exactly the limit is allowed.
    let mut decoder = FrameDecoder::new(10);
    let frames = feed(
        &mut decoder,
        &[&frame_bytes(MessageType::StreamChunk, &[7; 10])],
    )
    .unwrap();
    assert_eq!(frames[0].payload.len(), 10);
}

#[test]
fn truncation_is_reported_by_finish() {
    let frame = frame_bytes(MessageType::SynapsePacket, b"0123456789");
    for cut in 1..frame.len() {
        let mut decoder = FrameDecoder::new(1024);
        assert!(feed(&mut decoder, &[&frame[..cut]]).unwrap().is_empty());
        let expected = if cut < 5 {
            FrameError::Truncated {
                received: cut,
                expected: 5,
            }
        } else {
            FrameError::Truncated {
                received: cut - 5,
                expected: 10,
            }
        };
        assert_eq!(decoder.finish(), Err(expected), "cut at {cut}");
        assert_eq!(decoder.buffered_len(), cut);
    }
    // A stream that ended between frames is fine.
    let mut decoder = FrameDecoder::new(1024);
    assert_eq!(decoder.finish(), Ok(()));
    feed(&mut decoder, &[&frame]).unwrap();
    assert_eq!(decoder.finish(), Ok(()));
}

#[test]
fn finish_looks_through_undrained_data() {
    let mut stream = frame_bytes(MessageType::StreamEnd, b"\x92\xc3\xc0");
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(Bytes::from(stream.clone()));
    // A complete frame not yet taken out is not a truncation.
    assert_eq!(decoder.finish(), Ok(()));
    stream.extend_from_slice(&[0x05, 0, 0]);
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(Bytes::from(stream));
    assert_eq!(
        decoder.finish(),
        Err(FrameError::Truncated {
            received: 3,
            expected: 5
        })
    );
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(Bytes::from_static(&[0x03, 0, 0, 0, 9, 1, 2]));
    assert_eq!(
        decoder.finish(),
        Err(FrameError::Truncated {
            received: 2,
            expected: 9
        })
    );
}

#[test]
fn payload_inside_one_chunk_is_not_copied() {
    let mut stream = frame_bytes(MessageType::StreamChunk, &[1; 100]);
    stream.extend(frame_bytes(MessageType::StreamChunk, &[2; 50]));
    let chunk = Bytes::from(stream);
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(chunk.clone());
    let a = decoder.next_frame().unwrap().unwrap();
    let b = decoder.next_frame().unwrap().unwrap();
    assert_eq!(a.payload.as_ptr(), chunk[5..].as_ptr());
    assert_eq!(b.payload.as_ptr(), chunk[110..].as_ptr());

    // Header in one chunk, payload whole in the next: still a slice.
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(Bytes::copy_from_slice(&encode_frame_header(
        MessageType::StreamChunk,
        4,
    )));
    assert_eq!(decoder.next_frame(), Ok(None));
    let body = Bytes::from_static(b"abcdXYZ");
    decoder.push(body.clone());
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(frame.payload.as_ptr(), body.as_ptr());
    assert_eq!(decoder.buffered_len(), 3);

    // Spanning chunks: assembled into a fresh buffer.
    let mut decoder = FrameDecoder::new(1024);
    let frames = feed(&mut decoder, &[&[0x05, 0, 0, 0, 4, b'a', b'b'], b"c", b"d"]).unwrap();
    assert_eq!(&frames[0].payload[..], b"abcd");
}

// ---------------------------------------------------------------------------
// Properties

fn arb_frames() -> impl Strategy<Value = Vec<(MessageType, Vec<u8>)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(ALL_TYPES.to_vec()),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::collection::vec(any::<u8>(), 0..300),
            ],
        ),
        0..8,
    )
}

/// Cuts `data` at the given (unsorted, possibly repeated) points.
fn split_at_points(data: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = points
        .iter()
        .map(|p| {
            if data.is_empty() {
                0
            } else {
                p % (data.len() + 1)
            }
        })
        .collect();
    cuts.push(0);
    cuts.push(data.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| data[w[0]..w[1]].to_vec()).collect()
}

proptest! {
    #[test]
    fn split_stream_decodes_like_whole_stream(
        frames in arb_frames(),
        points in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(|(t, p)| frame_bytes(*t, p)).collect();
        let whole = feed(&mut FrameDecoder::new(1024), &[&stream]).unwrap();
        let pieces = split_at_points(&stream, &points);
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let mut decoder = FrameDecoder::new(1024);
        let split = feed(&mut decoder, &refs).unwrap();
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(decoder.finish(), Ok(()));
        prop_assert_eq!(decoder.buffered_len(), 0);
        // A decoder that reserves ahead of what arrived gives the same frames.
        let mut admitting = FrameDecoder::new(1024).reserving_ahead(300);
        let admitted = feed(&mut admitting, &refs).unwrap();
        prop_assert_eq!(&admitted, &whole);
        prop_assert_eq!(admitting.finish(), Ok(()));
        prop_assert_eq!(admitting.buffered_len(), 0);
        let expected: Vec<Frame> = frames
            .into_iter()
            .map(|(t, p)| Frame::new(t, Bytes::from(p)))
            .collect();
        prop_assert_eq!(split, expected);
    }

    #[test]
    fn truncated_stream_is_reported(
        frames in arb_frames(),
        cut in any::<usize>(),
        points in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(|(t, p)| frame_bytes(*t, p)).collect();
        prop_assume!(!stream.is_empty());
        let cut = cut % stream.len();
        // Frame boundaries, to know whether the cut falls inside a frame.
        let mut starts = vec![0usize];
        for (_, p) in &frames {
            starts.push(starts.last().unwrap() + 5 + p.len());
        }
        let pieces = split_at_points(&stream[..cut], &points);
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let mut decoder = FrameDecoder::new(1024);
        let got = feed(&mut decoder, &refs).unwrap();
        let complete = starts.iter().filter(|&&s| s <= cut).count() - 1;
        prop_assert_eq!(got.len(), complete);
        let frame_start = starts[complete];
        let inside = cut - frame_start;
        let result = decoder.finish();
        if inside == 0 {
            prop_assert_eq!(result, Ok(()));
        } else if inside < 5 {
            prop_assert_eq!(result, Err(FrameError::Truncated { received: inside, expected: 5 }));
        } else {
            let len = frames[complete].1.len();
            prop_assert_eq!(result, Err(FrameError::Truncated { received: inside - 5, expected: len }));
        }
    }

    #[test]
    fn bad_headers_are_rejected_before_the_payload(
        good in arb_frames(),
        bad_type in 7u8..=255,
        excess in 1u32..1000,
        oversize in any::<bool>(),
        points in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let max = 500;
        let good: Vec<_> = good.into_iter().filter(|(_, p)| p.len() <= max as usize).collect();
        let mut stream: Vec<u8> = good.iter().flat_map(|(t, p)| frame_bytes(*t, p)).collect();
        let expected_err = if oversize {
            stream.extend_from_slice(&encode_frame_header(MessageType::SynapsePacket, max + excess));
            FrameError::TooLarge { len: max + excess, max }
        } else {
            stream.push(bad_type);
            FrameError::UnknownType(bad_type)
        };
        // No payload byte follows the bad header: the error must come anyway.
        let pieces = split_at_points(&stream, &points);
        let mut decoder = FrameDecoder::new(max);
        let mut frames = Vec::new();
        let mut result = Ok(());
        for piece in pieces {
            decoder.push(Bytes::from(piece));
            loop {
                match decoder.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => { result = Err(e); break; }
                }
            }
        }
        prop_assert_eq!(frames.len(), good.len());
        prop_assert_eq!(result, Err(expected_err.clone()));
        prop_assert_eq!(decoder.next_frame(), Err(expected_err.clone()));
        prop_assert_eq!(decoder.finish(), Err(expected_err));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..400),
        points in proptest::collection::vec(any::<usize>(), 0..10),
        max in 0u32..600,
    ) {
        let mut decoder = FrameDecoder::new(max);
        let mut total = 0;
        for piece in split_at_points(&data, &points) {
            decoder.push(Bytes::from(piece));
            while let Ok(Some(frame)) = decoder.next_frame() {
                prop_assert!(frame.payload.len() <= max as usize);
                total += FRAME_HEADER_LEN + frame.payload.len();
            }
        }
        prop_assert!(total <= data.len());
        if decoder.error().is_none() {
            prop_assert_eq!(decoder.buffered_len(), data.len() - total);
        }
        let _ = decoder.finish();
    }
}

/// Large payloads that span chunks come out intact through a buffer pool, whether their
/// length was admitted or fits the reserve ahead, and their buffer goes back to the pool
/// when the payload is dropped, to be used by the next one. Small payloads and payloads
/// that grow with what arrives never touch the pool.
#[test]
fn pooled_payloads_decode_intact_and_return_their_buffer() {
    use lightning_proto::pool::{BufferPool, POOLED_MIN_BYTES};

    let pool = BufferPool::new(8 << 20);
    let len = 300 * 1024;
    for round in 0..3u8 {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ round).collect();
        let bytes = frame_bytes(MessageType::SynapseResponse, &payload);
        // The header alone first, as the miner reads it before admitting the length.
        let (header, rest) = bytes.split_at(FRAME_HEADER_LEN);
        let chunks: Vec<&[u8]> = std::iter::once(header).chain(rest.chunks(1200)).collect();
        let mut decoder = if round % 2 == 0 {
            FrameDecoder::new(DEFAULT_MAX_FRAME_PAYLOAD)
                .reserving_ahead(1_250_000)
                .with_pool(pool.clone())
        } else {
            FrameDecoder::new(DEFAULT_MAX_FRAME_PAYLOAD).with_pool(pool.clone())
        };
        let mut frames = Vec::new();
        for chunk in &chunks {
            decoder.push(Bytes::copy_from_slice(chunk));
            if round % 2 == 1 && decoder.declared_len().is_some() {
                decoder.admit_declared();
            }
            while let Some(f) = decoder.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload, payload, "round {round}");
        if round > 0 {
            assert_eq!(pool.free_bytes(), 0, "round {round} reused the kept buffer");
        }
        drop(frames);
        assert!(
            pool.free_bytes() >= len,
            "round {round}: buffer not returned"
        );
    }

    // Below the pooled size, and without a reserve or an admission, nothing is pooled.
    let pool = BufferPool::new(8 << 20);
    for (len, reserve) in [(POOLED_MIN_BYTES - 1, 1_250_000), (400 * 1024, 0)] {
        let payload = vec![9u8; len];
        let bytes = frame_bytes(MessageType::SynapsePacket, &payload);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_PAYLOAD)
            .reserving_ahead(reserve)
            .with_pool(pool.clone());
        let chunks: Vec<&[u8]> = bytes.chunks(1200).collect();
        let frames = feed(&mut decoder, &chunks).unwrap();
        assert_eq!(frames[0].payload, payload);
        drop(frames);
        assert_eq!(
            pool.free_bytes(),
            0,
            "{len} B with a reserve of {reserve} was pooled"
        );
    }
}
