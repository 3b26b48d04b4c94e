//! Reading requests: frames off a stream under the read budget, the minimum request
//! rate, and handing a complete request to the application.

use super::*;

impl Server {
    pub(super) fn read(&mut self, now: Instant, ch: ConnectionHandle, stream: StreamId) {
        let Some((conn, sconn)) = self.core.parts_mut(ch) else {
            return;
        };
        let Some(SStream {
            phase: Phase::Reading(decoder),
            hold,
            ..
        }) = sconn.streams.get_mut(&stream)
        else {
            return;
        };
        if matches!(hold, Hold::Waiting { .. }) {
            // Only `resume_parked` reads it again, once budget has been released.
            return;
        }
        let authenticated = !sconn.hotkeys.is_empty();
        let backlog = answer_backlog(&self.config, sconn.queued_out, self.limits.queued_total());
        let mut recv = conn.recv_stream(stream);
        let Ok(mut chunks) = recv.read(true) else {
            return;
        };
        let mut fin = false;
        let mut reset = false;
        let mut frame = None;
        let mut failed = false;
        let mut progressed = false;
        let mut received = 0u64;
        let mut wait = None;
        loop {
            // Nothing past the header is read until the frame's whole declared length is
            // reserved, so the budget bounds what we buffer and every started frame can end.
            let max = if matches!(hold, Hold::Reserved(_)) {
                decoder.admit_declared();
                usize::MAX
            } else if let Some(len) = decoder.declared_len() {
                let bytes = u64::from(len) + FRAME_HEADER_LEN as u64;
                // The connection's streams already waiting go first (see `parking`), and
                // no request starts while its connection's (or everyone's) responses are
                // backed up.
                let reserved = if self.parking.must_queue(ch) {
                    Err(Shortfall::Connection)
                } else if let Some(shortfall) = backlog {
                    Err(shortfall)
                } else {
                    self.limits.try_reserve(
                        &mut sconn.reserved,
                        &mut sconn.reserved_small,
                        authenticated,
                        bytes,
                    )
                };
                match reserved {
                    Ok(r) => {
                        *hold = Hold::Reserved(r);
                        // The payload's buffer can now be its declared length at once.
                        decoder.admit_declared();
                        usize::MAX
                    }
                    Err(shortfall) => {
                        wait = Some(shortfall);
                        break;
                    }
                }
            } else {
                FRAME_HEADER_LEN
                    .saturating_sub(decoder.buffered_len())
                    .max(1)
            };
            match pull_chunk(&mut chunks, decoder, max) {
                Pulled::Bytes(n) => {
                    progressed = true;
                    received += n as u64;
                    match decoder.next_frame() {
                        Ok(Some(f)) => {
                            frame = Some(f);
                            break;
                        }
                        Ok(None) => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                Pulled::Fin => {
                    fin = true;
                    break;
                }
                Pulled::Blocked => break,
                Pulled::Reset(_) => {
                    reset = true;
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        if progressed {
            sconn.last_progress = now;
            sconn.rate.note(now, received, self.config.min_request_rate);
        }
        let done = frame.is_some() || failed || fin || reset;
        if done {
            if let Hold::Reserved(r) = std::mem::replace(hold, Hold::Nothing) {
                self.limits
                    .release(Some((&mut sconn.reserved, &mut sconn.reserved_small)), r);
                self.released.push(ch);
            }
        }
        if frame.is_some() || failed {
            // Only the first frame counts (PROTOCOL §2); drop the rest of the stream.
            let _ = conn.recv_stream(stream).stop(VarInt::from_u32(0));
        }
        if done {
            // Nothing more to read: the read deadline has no object.
            if let Some(conn) = self.core.conn_ref(ch) {
                self.deadlines.cancel(&Deadline::Read(conn, stream));
            }
        }
        if reset {
            self.abandon_stream(ch, stream);
            return;
        }
        if let Some(shortfall) = wait {
            self.park(ch, stream, shortfall);
            return;
        }
        if let Some(frame) = frame {
            self.on_first_frame(now, ch, stream, frame);
        } else if failed || fin {
            // Framing error or truncation: finish with zero bytes, as the reference does.
            self.finish_empty(ch, stream);
        }
    }

    pub(super) fn finish_empty(&mut self, ch: ConnectionHandle, stream: StreamId) {
        if let Some(s) = stream_of_mut(&mut self.core, ch, stream) {
            s.phase = Phase::Answered;
            s.out.finish_after_drain();
        }
        self.flush(ch, stream);
    }

    pub(super) fn on_request(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
        payload: &Bytes,
    ) {
        let now_secs = self.core.clock.unix_secs(now);
        let packet = match SynapsePacket::decode(payload) {
            Ok(p) => p,
            Err(_) => {
                self.stats.request_errors += 1;
                self.stats.malformed_requests += 1;
                let r = error_response(now_secs, wire_errors::INVALID_REQUEST_FORMAT);
                self.answer(ch, stream, r.encode());
                return;
            }
        };
        let served = self.synapses.lookup(&packet.synapse_type);
        let kind = served.map(|(_, kind)| kind);
        let caller = self
            .core
            .state(ch)
            .and_then(|c| c.hotkeys.last().cloned().map(|hk| (hk, c.id, c.remote)));
        let Some((validator_hotkey, conn, remote)) = caller else {
            if self.hold_for_handshake(ch, stream, payload) {
                return;
            }
            self.stats.request_errors += 1;
            self.stats.unauthenticated_requests += 1;
            let frame = if kind == Some(SynapseKind::Streaming) {
                StreamEnd {
                    success: false,
                    error: Some(wire_errors::AUTHENTICATION_FAILED.into()),
                }
                .encode()
            } else {
                error_response(now_secs, wire_errors::AUTHENTICATION_FAILED).encode()
            };
            self.answer(ch, stream, frame);
            return;
        };
        let Some((synapse, kind)) = served else {
            self.stats.request_errors += 1;
            self.stats.unknown_synapse += 1;
            let r = error_response(now_secs, wire_errors::UNRECOGNIZED_SYNAPSE);
            self.answer(ch, stream, r.encode());
            return;
        };
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let deadline = now + self.config.handler_timeout;
        if let Some(s) = stream_of_mut(&mut self.core, ch, stream) {
            s.phase = Phase::Handling { id, kind };
        }
        self.owe(ch, stream, payload.len() as u64);
        self.requests.insert(id, (ch, stream));
        self.deadlines.schedule(deadline, Deadline::Handler(id));
        self.stats.requests += 1;
        self.events.push_back(ServerEvent::Request(IncomingRequest {
            id,
            conn,
            validator_hotkey,
            remote,
            synapse_type: packet.synapse_type,
            synapse,
            data: packet.data,
            kind,
            deadline,
        }));
    }

    /// Keeps a request that arrived before its connection authenticated, if the
    /// validator pipelines (it negotiated `tls::PIPELINE_ALPN`), another of its streams
    /// is still being read (the handshake, presumably) and no handshake on the
    /// connection has failed yet; `false` if it must be refused now.
    fn hold_for_handshake(
        &mut self,
        ch: ConnectionHandle,
        stream: StreamId,
        payload: &Bytes,
    ) -> bool {
        let pipelining = self
            .core
            .conn(ch)
            .is_some_and(crate::tls::negotiated_pipelining);
        let Some(c) = self.core.state_mut(ch) else {
            return false;
        };
        // Held only while another stream may still carry the handshake: a request with
        // no handshake in sight is refused at once, as the reference does.
        let handshake_may_come = c
            .streams
            .iter()
            .any(|(id, s)| *id != stream && matches!(s.phase, Phase::Reading(_)));
        if !pipelining
            || !handshake_may_come
            || c.handshake_failed
            || c.held.len() >= UNAUTHENTICATED_BIDI_STREAMS as usize
        {
            return false;
        }
        let Some(s) = c.streams.get_mut(&stream) else {
            return false;
        };
        s.phase = Phase::Held;
        c.held.push((stream, payload.clone()));
        true
    }

    /// After a handshake on `ch`: serves the requests held for it if the connection is
    /// now authenticated, refuses them (`authentication failed`) if not.
    pub(super) fn release_held(&mut self, now: Instant, ch: ConnectionHandle) {
        let Some(c) = self.core.state_mut(ch) else {
            return;
        };
        if c.held.is_empty() {
            return;
        }
        if c.hotkeys.is_empty() {
            // A pipelining validator pipelines behind its only hotkey's handshake.
            c.handshake_failed = true;
        }
        for (stream, payload) in std::mem::take(&mut c.held) {
            let still_held = matches!(
                stream_of(&self.core, ch, stream).map(|s| &s.phase),
                Some(Phase::Held)
            );
            if still_held {
                self.on_request(now, ch, stream, &payload);
            }
        }
    }

    pub(super) fn handling(
        &self,
        id: RequestId,
        kind: SynapseKind,
    ) -> Result<(ConnectionHandle, StreamId), AnswerError> {
        let &(ch, stream) = self.requests.get(&id).ok_or(AnswerError::UnknownRequest)?;
        match stream_of(&self.core, ch, stream).map(|s| &s.phase) {
            Some(Phase::Handling { kind: k, .. }) if *k == kind => Ok((ch, stream)),
            Some(Phase::Handling { .. }) => Err(AnswerError::WrongKind),
            _ => Err(AnswerError::UnknownRequest),
        }
    }
}

/// A connection's request rate, measured over windows of at least [`RATE_WINDOW`].
#[derive(Debug)]
pub(super) struct RequestRate {
    /// Request bytes received since `window_start`.
    window_bytes: u64,
    /// Start of the current window.
    window_start: Instant,
    /// End of the last window in which the connection delivered request bytes at
    /// `min_request_rate` or faster.
    pub(super) last_ok: Instant,
}

impl RequestRate {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            window_bytes: 0,
            window_start: now,
            last_ok: now,
        }
    }

    /// Counts `bytes` of request data that arrived at `now`; each window that delivered
    /// `min_rate` bytes per second or more moves `last_ok`.
    pub(super) fn note(&mut self, now: Instant, bytes: u64, min_rate: u64) {
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < RATE_WINDOW {
            return;
        }
        let needed = u128::from(min_rate) * elapsed.as_millis() / 1000;
        if u128::from(self.window_bytes) >= needed {
            self.last_ok = now;
        }
        self.window_start = now;
        self.window_bytes = 0;
    }
}
