//! `FrameDecoder` fed one stream twice: whole, and cut into pieces chosen by the input.
//!
//! Input: `[limit selector] [piece count] [piece lengths...] [stream bytes...]`.
//!
//! Checks: no panic; the pieces give the same frames and the same error as the whole;
//! the frames re-encode to exactly the bytes consumed; `buffered_len` is always exactly
//! the bytes pushed and not yet returned (so the decoder holds nothing it was not given);
//! `finish` agrees between the two runs.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use lightning_fuzz::Cursor;
use lightning_proto::frame::{
    encode_frame_header, Frame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_PAYLOAD,
    FRAME_HEADER_LEN,
};

fn limit(selector: u8) -> u32 {
    match selector % 8 {
        0 => 0,
        1 => 1,
        2 => 16,
        3 => 200,
        4 => 4096,
        5 => 65_536,
        6 => DEFAULT_MAX_FRAME_PAYLOAD,
        _ => u32::MAX,
    }
}

struct Run {
    frames: Vec<Frame>,
    error: Option<FrameError>,
    finish: Result<(), FrameError>,
}

/// Drains every available frame, checking the buffered count against what was pushed.
fn drain(
    decoder: &mut FrameDecoder,
    frames: &mut Vec<Frame>,
    pushed: usize,
    returned: &mut usize,
) -> Option<FrameError> {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                *returned += FRAME_HEADER_LEN + frame.payload.len();
                assert!(frame.payload.len() as u64 <= u64::from(decoder.max_payload()));
                frames.push(frame);
                assert_eq!(decoder.buffered_len(), pushed - *returned);
            }
            Ok(None) => {
                assert_eq!(decoder.buffered_len(), pushed - *returned);
                return None;
            }
            Err(e) => {
                assert!(decoder.buffered_len() <= pushed - *returned);
                assert_eq!(decoder.error(), Some(&e));
                // A failed decoder stays failed with the same error.
                assert_eq!(decoder.next_frame(), Err(e.clone()));
                return Some(e);
            }
        }
    }
}

fn run(max: u32, pieces: &[Bytes]) -> Run {
    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut error = None;
    let (mut pushed, mut returned) = (0usize, 0usize);
    for piece in pieces {
        decoder.push(piece.clone());
        if error.is_none() {
            pushed += piece.len();
            error = drain(&mut decoder, &mut frames, pushed, &mut returned);
        }
    }
    Run {
        frames,
        error,
        finish: decoder.finish(),
    }
}

fuzz_target!(|input: &[u8]| {
    let mut c = Cursor::new(input);
    let max = limit(c.u8());
    let n_pieces = usize::from(c.u8() % 32);
    let lengths: Vec<usize> = (0..n_pieces).map(|_| usize::from(c.u8())).collect();
    let stream = Bytes::copy_from_slice(c.rest());

    let whole = run(max, std::slice::from_ref(&stream));

    let mut pieces = Vec::new();
    let mut at = 0;
    for len in lengths {
        let end = (at + len).min(stream.len());
        pieces.push(stream.slice(at..end));
        at = end;
    }
    pieces.push(stream.slice(at..));
    let split = run(max, &pieces);

    assert_eq!(whole.frames, split.frames);
    assert_eq!(whole.error, split.error);
    assert_eq!(whole.finish, split.finish);

    // The frames are exactly a prefix of the stream.
    let mut consumed = Vec::new();
    for f in &whole.frames {
        consumed.extend_from_slice(&encode_frame_header(f.ty, f.payload.len() as u32));
        consumed.extend_from_slice(&f.payload);
    }
    assert_eq!(&stream[..consumed.len()], &consumed[..]);

    // A stream that fully parsed into frames finishes cleanly, and only then.
    if whole.error.is_none() {
        assert_eq!(whole.finish.is_ok(), consumed.len() == stream.len());
    } else {
        assert_eq!(whole.finish, Err(whole.error.clone().unwrap()));
    }
});
