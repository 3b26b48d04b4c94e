//! Frames waiting to be handed to a QUIC send stream.
//!
//! Frames are kept as the `Bytes` segments the codec produced, so payloads are passed to
//! quinn by reference count, never copied. quinn may take part of a segment; the rest waits
//! for the stream to become writable again.

use std::collections::VecDeque;

use bytes::Bytes;
use quinn_proto::{SendStream, WriteError};

use crate::message::EncodedFrame;

#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    segs: VecDeque<Bytes>,
    /// Parallel to `segs`: whether the segment ends a frame.
    ends_frame: VecDeque<bool>,
    frames: usize,
    bytes: usize,
    /// FIN goes out once everything queued is written.
    finish: bool,
    finished: bool,
}

/// What happened when the queue was flushed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything queued was handed over (and FIN sent if asked for).
    Drained,
    /// quinn stopped accepting data; wait for `Writable`.
    Blocked,
    /// The peer stopped the stream or it no longer exists.
    Closed,
}

impl OutQueue {
    pub(crate) fn push(&mut self, frame: EncodedFrame) {
        let segs = frame.into_segments();
        let last = segs.iter().rposition(|s| !s.is_empty());
        let Some(last) = last else { return };
        for (i, s) in segs.into_iter().enumerate().take(last + 1) {
            if s.is_empty() {
                continue;
            }
            self.bytes += s.len();
            self.segs.push_back(s);
            self.ends_frame.push_back(i == last);
        }
        self.frames += 1;
    }

    /// Frames not yet fully handed to quinn.
    pub(crate) fn frames(&self) -> usize {
        self.frames
    }

    /// Bytes not yet handed to quinn.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn finish_after_drain(&mut self) {
        self.finish = true;
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    pub(crate) fn flush(&mut self, mut stream: SendStream<'_>) -> Flush {
        // Write until quinn says `Blocked`: only that answer registers the stream for a
        // later `Writable` event; a short write does not, and stopping after one would
        // leave the rest of the frame stranded.
        while !self.segs.is_empty() {
            // quinn consumes whole segments and advances a partly taken one in place.
            let batch = self.segs.make_contiguous();
            match stream.write_chunks(batch) {
                Ok(written) => {
                    self.bytes -= written.bytes;
                    for _ in 0..written.chunks {
                        self.segs.pop_front();
                        if self.ends_frame.pop_front() == Some(true) {
                            self.frames -= 1;
                        }
                    }
                    if written.bytes == 0 && written.chunks == 0 {
                        return Flush::Blocked;
                    }
                }
                Err(WriteError::Blocked) => return Flush::Blocked,
                Err(WriteError::Stopped(_)) | Err(WriteError::ClosedStream) => {
                    return Flush::Closed
                }
            }
        }
        if self.finish && !self.finished {
            match stream.finish() {
                Ok(()) => self.finished = true,
                Err(_) => return Flush::Closed,
            }
        }
        Flush::Drained
    }
}
