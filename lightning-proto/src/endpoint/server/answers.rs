//! Answers: unary responses, refusals, stream chunks and stream ends, queued per stream
//! under the per-connection and global byte caps, flushed as flow control allows, and
//! the send-progress deadline for peers that stop reading.

use super::*;

impl Server {
    /// Answers unary request `id`. `Err` sends `request processing failed` (the handler's
    /// message stays local, as in the reference; see [`Self::refuse`] for one the peer
    /// should read).
    pub fn respond<E>(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<DataMap, E>,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let (ch, stream) = self.handling(id, SynapseKind::Unary)?;
        let response = match result {
            Ok(data) => SynapseResponse {
                success: true,
                data,
                timestamp: self.core.clock.unix_secs(now),
                error: None,
            },
            Err(_) => error_response(
                self.core.clock.unix_secs(now),
                wire_errors::REQUEST_PROCESSING_FAILED,
            ),
        };
        self.forget_request(id);
        self.answer(ch, stream, response.encode());
        Ok(())
    }

    /// Refuses request `id` (unary or streaming) with `message` in `error`, sent as is (cut
    /// at [`wire_errors::MAX_PEER_MESSAGE`] bytes): a refusal the handler chose to explain,
    /// such as a blacklist's reason. A unary request gets `success: false` with empty data;
    /// a stream ends with `success: false`.
    pub fn refuse(
        &mut self,
        now: Instant,
        id: RequestId,
        message: &str,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let message = wire_errors::truncate(message);
        let (ch, stream, frame) = match self.handling(id, SynapseKind::Unary) {
            Ok((ch, stream)) => {
                let response = error_response(self.core.clock.unix_secs(now), message);
                (ch, stream, response.encode())
            }
            Err(AnswerError::WrongKind) => {
                let (ch, stream) = self.handling(id, SynapseKind::Streaming)?;
                let end = StreamEnd {
                    success: false,
                    error: Some(message.into()),
                };
                (ch, stream, end.encode())
            }
            Err(e) => return Err(e),
        };
        self.forget_request(id);
        self.answer(ch, stream, frame);
        Ok(())
    }

    /// Reserves room for more chunks of streaming request `id` and returns what was
    /// added to its credit (possibly nothing). A chunk sent within the credit is always
    /// taken. When the application's credit runs low, [`ServerEvent::StreamWritable`]
    /// says when asking again may give more.
    ///
    /// The queue's room is `streaming_channel_buffer` chunks and `max_queued_chunk_bytes`
    /// bytes (queued or credited), within what the connection's queued and credited
    /// bytes leave of `max_queued_response_bytes_per_connection`.
    pub fn grant_chunk_credit(
        &mut self,
        now: Instant,
        id: RequestId,
    ) -> Result<ChunkCredit, AnswerError> {
        self.now = now;
        let (ch, stream) = self.handling(id, SynapseKind::Streaming)?;
        let (s, book, queued_out) = chunk_parts(&mut self.core, ch, stream)?;
        let cap = self.config.max_queued_chunk_bytes;
        let conn_held = queued_out.saturating_add(book.credited_bytes);
        let whole_free = book.whole_free(stream);
        let mut grant = chunk_room(&self.config, &s.out, s.credit, conn_held, whole_free);
        if let Some(wants) = s.wants {
            let after = s.credit.bytes.saturating_add(grant.bytes);
            if after >= wants || after >= cap {
                s.wants = None;
            } else {
                // Not enough for the chunk waiting: it would only come back.
                grant.bytes = 0;
            }
        }
        s.credit.add(grant);
        book.credited_bytes = book.credited_bytes.saturating_add(grant.bytes);
        book.note_credit(stream, s.credit, cap);
        // Below full credit, the application may wait for room: say when there is some.
        s.notify_writable =
            s.credit.chunks < self.config.streaming_channel_buffer || s.credit.bytes < cap;
        if grant == ChunkCredit::default() && s.out.frames() == 0 {
            // Nothing of its own queued, so no flush of its own will come: the
            // connection's backlog or its other streams' credit holds it.
            book.writable_waiters.push(stream);
        }
        Ok(grant)
    }

    /// Takes back `bytes` of request `id`'s chunk credit that the application cannot
    /// use because its next chunk needs `wants` bytes: credit held unused would keep
    /// its connection's other streams from the room. Later grants to it wait until they
    /// can cover `wants` (or take a chunk of any size).
    pub fn return_chunk_credit(
        &mut self,
        now: Instant,
        id: RequestId,
        bytes: u64,
        wants: u64,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let (ch, stream) = self.handling(id, SynapseKind::Streaming)?;
        let (s, book, _) = chunk_parts(&mut self.core, ch, stream)?;
        let returned = bytes.min(s.credit.bytes);
        s.credit.bytes -= returned;
        s.wants = Some(wants);
        book.credited_bytes = book.credited_bytes.saturating_sub(returned);
        book.note_credit(stream, s.credit, self.config.max_queued_chunk_bytes);
        if returned > 0 {
            self.wake_writable(ch);
        }
        Ok(())
    }

    /// Tells the streams of `ch` waiting for room without a queue of their own that there
    /// may be some now.
    pub(super) fn wake_writable(&mut self, ch: ConnectionHandle) {
        let Some(c) = self.core.state_mut(ch) else {
            return;
        };
        for stream in std::mem::take(&mut c.chunks.writable_waiters) {
            if let Some(s) = c.streams.get_mut(&stream) {
                if let (true, Phase::Handling { id, .. }) =
                    (std::mem::take(&mut s.notify_writable), &s.phase)
                {
                    self.events
                        .push_back(ServerEvent::StreamWritable { id: *id });
                }
            }
        }
    }

    /// Queues one chunk of streaming request `id`.
    ///
    /// Within the request's credit ([`Self::grant_chunk_credit`]) the chunk is always
    /// taken. Without credit, the queue is full (wait for [`ServerEvent::StreamWritable`])
    /// when it has no room as `grant_chunk_credit` counts it; a chunk of any size is
    /// taken into an empty queue.
    pub fn send_chunk(
        &mut self,
        now: Instant,
        id: RequestId,
        data: Bytes,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let (ch, stream) = self.handling(id, SynapseKind::Streaming)?;
        let (s, book, queued_out) = chunk_parts(&mut self.core, ch, stream)?;
        if s.credit.chunks > 0 {
            let before = s.credit.bytes;
            s.credit.consume(data.len() as u64);
            book.credited_bytes = book.credited_bytes.saturating_sub(before - s.credit.bytes);
            book.note_credit(stream, s.credit, self.config.max_queued_chunk_bytes);
        } else if chunk_queue_full(&self.config, &s.out, queued_out) {
            s.notify_writable = true;
            if s.out.frames() == 0 {
                // Only the connection's backlog holds it: no flush of its own will come.
                book.writable_waiters.push(stream);
            }
            return Err(AnswerError::Full);
        }
        let before = s.out.bytes();
        match (StreamChunk { data }).encode() {
            Ok(frame) => s.out.push(frame),
            Err(_) => return Err(AnswerError::TooLarge),
        }
        let after = s.out.bytes();
        self.account_queued(ch, before, after);
        self.flush(ch, stream);
        Ok(())
    }

    /// Ends streaming request `id`: `Ok` sends a successful `StreamEnd`, `Err` sends
    /// `stream processing failed`.
    pub fn end_stream<E>(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<(), E>,
    ) -> Result<(), AnswerError> {
        self.now = now;
        let (ch, stream) = self.handling(id, SynapseKind::Streaming)?;
        let end = match result {
            Ok(()) => StreamEnd {
                success: true,
                error: None,
            },
            Err(_) => StreamEnd {
                success: false,
                error: Some(wire_errors::STREAM_PROCESSING_FAILED.into()),
            },
        };
        self.forget_request(id);
        self.answer(ch, stream, end.encode());
        Ok(())
    }

    /// Records a change of a stream's queued response bytes from `before` to `after`. A
    /// drop may let waiting requests in (`max_queued_response_bytes_*`).
    pub(super) fn account_queued(&mut self, ch: ConnectionHandle, before: usize, after: usize) {
        let (before, after) = (before as u64, after as u64);
        if after == before {
            return;
        }
        self.limits.account_queued(before, after);
        let cap = self.config.max_queued_response_bytes_per_connection;
        let mut half_drained = false;
        if let Some(c) = self.core.state_mut(ch) {
            c.queued_out = (c.queued_out + after).saturating_sub(before);
            // Waiters are woken together once the backlog is half drained, not at every
            // byte below the cap: one chunk refills it, and waking every waiter each time
            // (over a hundred on a connection that reads slowly) costs the endpoint task
            // more than the bytes that moved.
            half_drained = c.queued_out < cap / 2 && !c.chunks.writable_waiters.is_empty();
        }
        if half_drained {
            self.wake_writable(ch);
        }
        if after < before {
            self.released.push(ch);
        }
    }

    /// Sets what request `stream` of `ch` owes against the queued-answer caps
    /// (`SStream::owed`): its request's bytes while the application holds them, 0 once
    /// it is answered.
    pub(super) fn owe(&mut self, ch: ConnectionHandle, stream: StreamId, bytes: u64) {
        let Some(s) = stream_of_mut(&mut self.core, ch, stream) else {
            return;
        };
        let before = std::mem::replace(&mut s.owed, bytes);
        self.account_owed(ch, before, bytes);
    }

    /// Records a change of what one of `ch`'s requests owes from `before` to `after`
    /// (in its connection, if it still has it, and in the shared queued total); a drop
    /// may let waiting requests in.
    pub(super) fn account_owed(&mut self, ch: ConnectionHandle, before: u64, after: u64) {
        if after == before {
            return;
        }
        if let Some(c) = self.core.state_mut(ch) {
            c.owed = (c.owed + after).saturating_sub(before);
        }
        self.limits.account_queued(before, after);
        if after < before {
            self.released.push(ch);
        }
    }

    /// Whether queued responses, and requests with the application that will become
    /// responses, keep `ch` from starting another request frame now.
    pub(super) fn response_backlog(&self, ch: ConnectionHandle) -> Option<Shortfall> {
        let conn = self
            .core
            .state(ch)
            .map_or(0, |c| c.queued_out.saturating_add(c.owed));
        answer_backlog(&self.config, conn, self.limits.queued_total())
    }

    /// A response stream's send-progress deadline: when quinn took none of its bytes,
    /// nor any of its connection's, for `send_progress_timeout`, the validator is not
    /// reading (a congested path still moves the connection), so the stream is reset
    /// (its request cancelled) and the connection closed.
    pub(super) fn check_send_progress(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
    ) {
        let timeout = self.config.send_progress_timeout;
        let conn_progress = self.core.state(ch).map(|c| c.last_send_progress);
        let Some(s) = stream_of_mut(&mut self.core, ch, stream) else {
            return;
        };
        s.send_deadline = false;
        if matches!(s.phase, Phase::Reading(_)) {
            return;
        }
        let last = conn_progress.map_or(s.last_send_progress, |c| c.max(s.last_send_progress));
        let expires = last + timeout;
        if expires > now {
            s.send_deadline = true;
            if let Some(conn) = self.core.conn_ref(ch) {
                self.deadlines
                    .schedule(expires, Deadline::Send(conn, stream));
            }
            return;
        }
        self.stats.send_timeouts += 1;
        let removed = self.abandon_stream(ch, stream);
        self.cancel_request_of(removed, CancelReason::PeerStalled);
        let stalled = self
            .core
            .state(ch)
            .is_some_and(|c| c.last_send_progress + timeout <= now);
        if stalled {
            self.close_quic(now, ch, b"no_read_progress");
        }
    }

    /// Queues the final frame of a stream, then FIN.
    ///
    /// A frame that cannot be encoded (a field over 4 GiB) is replaced by the reference's
    /// `internal serialization error` response.
    pub(super) fn answer(
        &mut self,
        ch: ConnectionHandle,
        stream: StreamId,
        frame: Result<EncodedFrame, EncodeError>,
    ) {
        let frame = frame.or_else(|e| {
            tracing::warn!(%e, "response could not be encoded");
            error_response(0, wire_errors::INTERNAL_SERIALIZATION_ERROR).encode()
        });
        let mut freed = false;
        if let Some(c) = self.core.state_mut(ch) {
            if let Some(s) = c.streams.get_mut(&stream) {
                let credit = std::mem::take(&mut s.credit);
                freed = c.chunks.release(stream, credit);
            }
        }
        if freed {
            self.wake_writable(ch);
        }
        self.owe(ch, stream, 0);
        if let Some(s) = stream_of_mut(&mut self.core, ch, stream) {
            s.phase = Phase::Answered;
            let before = s.out.bytes();
            if let Ok(frame) = frame {
                s.out.push(frame);
            }
            s.out.finish_after_drain();
            let after = s.out.bytes();
            self.account_queued(ch, before, after);
        }
        self.flush(ch, stream);
    }

    pub(super) fn flush(&mut self, ch: ConnectionHandle, stream: StreamId) {
        let now = self.now;
        let Some((conn, c)) = self.core.parts_mut(ch) else {
            return;
        };
        let Some(s) = c.streams.get_mut(&stream) else {
            return;
        };
        let before = s.out.bytes();
        let result = s.out.flush(conn.send_stream(stream));
        let after = s.out.bytes();
        if after < before {
            s.last_send_progress = now;
            c.last_send_progress = now;
        }
        // Waiting on the peer's flow control: a peer that never reads must not hold the
        // response forever (`send_progress_timeout`).
        let schedule = result == Flush::Blocked && !std::mem::replace(&mut s.send_deadline, true);
        let writable = s.notify_writable
            && chunk_room(
                &self.config,
                &s.out,
                s.credit,
                c.queued_out.saturating_add(c.chunks.credited_bytes),
                c.chunks.whole_free(stream),
            ) != ChunkCredit::default();
        if let (true, Some(conn)) = (schedule, self.core.conn_ref(ch)) {
            self.deadlines.schedule(
                now + self.config.send_progress_timeout,
                Deadline::Send(conn, stream),
            );
        }
        self.account_queued(ch, before, after);
        let Some(s) = stream_of_mut(&mut self.core, ch, stream) else {
            return;
        };
        match result {
            Flush::Drained if s.out.is_finished() => {
                self.remove_stream(ch, stream);
            }
            Flush::Closed => {
                let removed = self.abandon_stream(ch, stream);
                self.cancel_request_of(removed, CancelReason::PeerCancelled);
            }
            _ => {
                if writable {
                    s.notify_writable = false;
                    if let Phase::Handling { id, .. } = s.phase {
                        self.events.push_back(ServerEvent::StreamWritable { id });
                    }
                }
            }
        }
    }
}

pub(super) fn error_response(timestamp: u64, error: &str) -> SynapseResponse {
    SynapseResponse {
        success: false,
        data: DataMap::default(),
        timestamp,
        error: Some(error.to_string()),
    }
}

/// Which cap on queued answers, if any, keeps a connection with `conn_queued` bytes queued
/// (and `total` over all connections) from starting another request frame.
pub(super) fn answer_backlog(
    config: &ServerConfig,
    conn_queued: u64,
    total: u64,
) -> Option<Shortfall> {
    if conn_queued >= config.max_queued_response_bytes_per_connection {
        Some(Shortfall::Connection)
    } else if total >= config.max_queued_response_bytes_total {
        Some(Shortfall::Total)
    } else {
        None
    }
}

/// Whether a streaming response's chunk queue takes no more chunks without credit now
/// (see [`Server::send_chunk`]).
pub(super) fn chunk_queue_full(config: &ServerConfig, out: &OutQueue, conn_queued: u64) -> bool {
    let own = out.frames() > 0
        && (out.frames() >= config.streaming_channel_buffer
            || out.bytes() as u64 >= config.max_queued_chunk_bytes);
    own || conn_queued >= config.max_queued_response_bytes_per_connection
}

/// The credit that can be added to a streaming response's chunk queue holding `out` with
/// `credit` already granted, on a connection holding `conn_held` bytes (queued and
/// credited); `whole_free` says whether its credit
/// may grow to take a chunk of any size (no other stream of the connection has such).
pub(super) fn chunk_room(
    config: &ServerConfig,
    out: &OutQueue,
    credit: ChunkCredit,
    conn_held: u64,
    whole_free: bool,
) -> ChunkCredit {
    let nothing = ChunkCredit::default();
    let conn_room = config
        .max_queued_response_bytes_per_connection
        .saturating_sub(conn_held);
    if conn_room == 0 {
        return nothing;
    }
    let cap = config.max_queued_chunk_bytes;
    let held_chunks = out.frames() + credit.chunks;
    let held_bytes = (out.bytes() as u64).saturating_add(credit.bytes);
    if held_chunks > 0 && held_bytes >= cap {
        return nothing;
    }
    let chunks = config.streaming_channel_buffer.saturating_sub(held_chunks);
    let mut bytes = cap.saturating_sub(held_bytes).min(conn_room);
    if credit.bytes.saturating_add(bytes) >= cap && !whole_free {
        // Credit of `cap` bytes takes a chunk of any size: one stream at a time.
        bytes = (cap - 1).saturating_sub(credit.bytes);
    }
    ChunkCredit { chunks, bytes }
}

/// A connection's side of its streams' chunk credit.
#[derive(Debug, Default)]
pub(super) struct ChunkBook {
    /// Streaming responses told `Full` because of the connection's queued bytes: each
    /// gets `StreamWritable` once they fall below half the cap.
    writable_waiters: Vec<StreamId>,
    /// Chunk credit granted on its streams and not used yet, in bytes: counted with
    /// `queued_out` against the connection's cap.
    credited_bytes: u64,
    /// The one stream of the connection whose credit may take a chunk of any size (see
    /// [`ChunkCredit`]): one at a time, so such chunks overshoot the cap by one chunk
    /// per connection at most.
    whole_credit: Option<StreamId>,
}

impl ChunkBook {
    /// Whether stream `id` may be given whole credit: no other stream holds it.
    fn whole_free(&self, id: StreamId) -> bool {
        self.whole_credit.is_none_or(|w| w == id)
    }

    /// Records that stream `id` now holds `credit`: it holds whole credit while its bytes
    /// reach `cap` (`max_queued_chunk_bytes`), and gives it up as soon as they do not.
    /// The one place `whole_credit` changes, so the two cannot disagree.
    fn note_credit(&mut self, id: StreamId, credit: ChunkCredit, cap: u64) {
        if credit.bytes >= cap {
            self.whole_credit = Some(id);
        } else if self.whole_credit == Some(id) {
            self.whole_credit = None;
        }
    }

    /// Gives back `credit`, the unused chunk credit of stream `id` (it is answered or
    /// gone); whether that freed bytes the connection's other streams may want.
    pub(super) fn release(&mut self, id: StreamId, credit: ChunkCredit) -> bool {
        self.credited_bytes = self.credited_bytes.saturating_sub(credit.bytes);
        // The stream holds nothing now, whatever the cap.
        self.note_credit(id, ChunkCredit::default(), u64::MAX);
        credit.bytes > 0
    }
}

/// Stream `stream` of `ch` with its connection's chunk book and queued response bytes,
/// borrowed together, or `UnknownRequest` if either is gone.
fn chunk_parts(
    core: &mut Core<SConn>,
    ch: ConnectionHandle,
    stream: StreamId,
) -> Result<(&mut SStream, &mut ChunkBook, u64), AnswerError> {
    let c = core.state_mut(ch).ok_or(AnswerError::UnknownRequest)?;
    let s = c
        .streams
        .get_mut(&stream)
        .ok_or(AnswerError::UnknownRequest)?;
    Ok((s, &mut c.chunks, c.queued_out))
}
