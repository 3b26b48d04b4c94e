//! Reading requests: frames off a stream under the read budget, the minimum request
//! rate, and handing a complete request to the application.

use super::*;

impl Server {
    pub(super) fn read(&mut self, now: Instant, ch: ConnectionHandle, stream: StreamId) {
        let Some(conn) = self.core.conn_mut(ch) else {
            return;
        };
        let Some(sconn) = self.conns.get_mut(&ch) else {
            return;
        };
        let Some(SStream {
            phase: Phase::Reading(decoder),
            hold,
            ..
        }) = self.streams.get_mut(&(ch, stream))
        else {
            return;
        };
        if matches!(hold, Hold::Waiting { .. }) {
            // Only `resume_parked` reads it again, once budget has been released.
            return;
        }
        let authenticated = !sconn.hotkeys.is_empty();
        let backlog = answer_backlog(&self.config, sconn.queued_out, self.queued_out_total);
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
                    self.budget.try_reserve(
                        &mut sconn.reserved,
                        &mut sconn.reserved_small,
                        authenticated,
                        bytes,
                    )
                };
                match reserved {
                    Ok(r) => {
                        *hold = Hold::Reserved(r);
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
            match chunks.next(max) {
                Ok(Some(chunk)) => {
                    progressed = true;
                    received += chunk.bytes.len() as u64;
                    decoder.push(chunk.bytes);
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
                Ok(None) => {
                    fin = true;
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(_)) => {
                    reset = true;
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        if progressed {
            sconn.last_progress = now;
            note_request_rate(sconn, now, received, self.config.min_request_rate);
        }
        let done = frame.is_some() || failed || fin || reset;
        if done {
            if let Hold::Reserved(r) = std::mem::replace(hold, Hold::Nothing) {
                self.budget
                    .release(Some((&mut sconn.reserved, &mut sconn.reserved_small)), r);
                self.released.push(ch);
            }
        }
        if frame.is_some() || failed {
            // Only the first frame counts (PROTOCOL §2); drop the rest of the stream.
            let _ = conn.recv_stream(stream).stop(VarInt::from_u32(0));
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
        if let Some(s) = self.streams.get_mut(&(ch, stream)) {
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
            .conns
            .get(&ch)
            .and_then(|c| c.hotkeys.last().cloned().map(|hk| (hk, c.id, c.remote)));
        let Some((validator_hotkey, conn, remote)) = caller else {
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
        if let Some(s) = self.streams.get_mut(&(ch, stream)) {
            s.phase = Phase::Handling { id, kind };
        }
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

    pub(super) fn handling(
        &self,
        id: RequestId,
        kind: SynapseKind,
    ) -> Result<(ConnectionHandle, StreamId), AnswerError> {
        let &(ch, stream) = self.requests.get(&id).ok_or(AnswerError::UnknownRequest)?;
        match self.streams.get(&(ch, stream)).map(|s| &s.phase) {
            Some(Phase::Handling { kind: k, .. }) if *k == kind => Ok((ch, stream)),
            Some(Phase::Handling { .. }) => Err(AnswerError::WrongKind),
            _ => Err(AnswerError::UnknownRequest),
        }
    }
}

/// Counts `bytes` of request data that arrived on `c` at `now`; each window of at least
/// [`RATE_WINDOW`] that delivered `min_rate` bytes per second or more moves
/// `last_rate_ok`.
pub(super) fn note_request_rate(c: &mut SConn, now: Instant, bytes: u64, min_rate: u64) {
    c.rate_window_bytes = c.rate_window_bytes.saturating_add(bytes);
    let elapsed = now.saturating_duration_since(c.rate_window_start);
    if elapsed < RATE_WINDOW {
        return;
    }
    let needed = u128::from(min_rate) * elapsed.as_millis() / 1000;
    if u128::from(c.rate_window_bytes) >= needed {
        c.last_rate_ok = now;
    }
    c.rate_window_start = now;
    c.rate_window_bytes = 0;
}
