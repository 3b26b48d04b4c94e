//! `ChunkStream`: a streaming response as a `Stream` of chunks, giving the endpoint credit
//! back as the application consumes them.

use super::*;

pub(super) enum StreamMsg {
    Accepted,
    Chunk(Bytes),
    End,
    Failed(LightningError),
}

/// The chunks of a streaming response, in order. Ends with `None` after a successful end;
/// a failure is yielded as one `Err` item, then `None`.
#[derive(Debug)]
pub struct ChunkStream {
    pub(super) rx: Pin<Box<async_channel::Receiver<StreamMsg>>>,
    pub(super) shared: Arc<Shared>,
    pub(super) ticket: u64,
    pub(super) unacked: usize,
    pub(super) done: bool,
}

impl std::fmt::Debug for StreamMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accepted => f.write_str("Accepted"),
            Self::Chunk(b) => write!(f, "Chunk({} bytes)", b.len()),
            Self::End => f.write_str("End"),
            Self::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

impl ChunkStream {
    /// The next chunk; `Ok(None)` after the stream ended successfully.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        futures_lite::StreamExt::next(self).await.transpose()
    }

    /// Every remaining chunk (bounded by the client's `max_stream_payload_bytes`).
    pub async fn collect_all(mut self) -> Result<Vec<Bytes>> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            chunks.push(chunk);
        }
        Ok(chunks)
    }

    pub(super) fn give_credit(&mut self) {
        if self.unacked > 0 {
            let _ = self.shared.send(Command::Consumed {
                ticket: self.ticket,
                n: self.unacked,
            });
            self.unacked = 0;
        }
    }
}

impl Stream for ChunkStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.rx.as_mut().poll_next(cx) {
                Poll::Ready(Some(StreamMsg::Chunk(data))) => {
                    this.unacked += 1;
                    if this.unacked >= this.shared.consume_batch {
                        this.give_credit();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(StreamMsg::Accepted)) => continue,
                Poll::Ready(Some(StreamMsg::End)) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(StreamMsg::Failed(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(LightningError::Closed)));
                }
                Poll::Pending => {
                    // Nothing buffered: hand back credit now so the miner is never stalled
                    // waiting for a batch to fill.
                    this.give_credit();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.shared.send(Command::Cancel(self.ticket));
        }
    }
}
