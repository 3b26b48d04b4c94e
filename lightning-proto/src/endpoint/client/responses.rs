//! Reading answers: response frames and stream chunks off a request's stream, with
//! the application's chunk credit as backpressure.

use super::*;

impl Client {
    /// The application consumed `n` chunks of streaming request `id`; reading resumes when
    /// fewer than `stream_read_ahead_chunks` are outstanding.
    pub fn consume_chunks(&mut self, now: Instant, id: QueryId, n: usize) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        req.outstanding = req.outstanding.saturating_sub(n);
        if let ReqState::Open { ch, stream, .. } = req.state {
            self.read_request(now, ch, stream, id);
        }
    }

    pub(super) fn read_request(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
        id: QueryId,
    ) {
        let read_ahead = self.config.stream_read_ahead_chunks;
        let max_stream = self.config.max_stream_payload_bytes;
        loop {
            let Some(req) = self.requests.get_mut(&id) else {
                return;
            };
            let ReqState::Open {
                decoder,
                fin,
                ch: rch,
                stream: rstream,
                ..
            } = &mut req.state
            else {
                return;
            };
            if *rch != ch || *rstream != stream {
                return;
            }
            // Deliver what is already decoded, within the read-ahead budget.
            let mut outcome: Option<Result<ClientEvent, ClientError>> = None;
            while outcome.is_none() && (!req.streaming || req.outstanding < read_ahead) {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        outcome = handle_response_frame(
                            now,
                            id,
                            req.streaming,
                            req.started,
                            &mut req.stream_bytes,
                            max_stream,
                            frame,
                        );
                        if outcome.is_none() {
                            // A chunk was delivered (events pushed below via the queue).
                        }
                        if let Some(Ok(ClientEvent::Chunk { .. })) = &outcome {
                            req.outstanding += 1;
                            if let Some(Ok(ev)) = outcome.take() {
                                self.events.push_back(ev);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => outcome = Some(Err(ClientError::Frame(e))),
                }
            }
            if let Some(result) = outcome {
                self.complete_request(now, id, result);
                return;
            }
            if req.streaming && req.outstanding >= read_ahead {
                // Paused: leave data in quinn so flow control pushes back on the miner.
                return;
            }
            if *fin {
                let err = decoder.finish().err().unwrap_or(FrameError::Truncated {
                    received: 0,
                    expected: FRAME_HEADER_LEN,
                });
                self.complete_request(now, id, Err(ClientError::Frame(err)));
                return;
            }
            let Some(conn) = self.core.conn_mut(ch) else {
                return;
            };
            let before = decoder.buffered_len();
            match pull(conn, stream, decoder) {
                Ok(f) => *fin = f,
                Err(e) => {
                    self.complete_request(now, id, Err(e));
                    return;
                }
            }
            let Some(Request {
                state: ReqState::Open { decoder, fin, .. },
                ..
            }) = self.requests.get(&id)
            else {
                return;
            };
            if decoder.buffered_len() == before && !*fin {
                return;
            }
        }
    }

    pub(super) fn complete_request(
        &mut self,
        now: Instant,
        id: QueryId,
        result: Result<ClientEvent, ClientError>,
    ) {
        let Some(req) = take_request(&mut self.requests, &mut self.deadlines, id) else {
            return;
        };
        match result {
            Ok(ev) => {
                self.finish_stream_quietly(&req);
                self.events.push_back(ev);
            }
            Err(error) => {
                self.abort_stream(now, &req, 0);
                self.events
                    .push_back(ClientEvent::RequestFailed { id, error });
            }
        }
    }
}

/// Moves everything quinn has for `stream` into `decoder`. Returns whether FIN was seen.
pub(super) fn pull(
    conn: &mut quinn_proto::Connection,
    stream: StreamId,
    decoder: &mut FrameDecoder,
) -> Result<bool, ClientError> {
    let mut recv = conn.recv_stream(stream);
    let mut chunks = match recv.read(true) {
        Ok(c) => c,
        Err(e) => return Err(ClientError::Transport(ResponseError::Read(e))),
    };
    let mut fin = false;
    let mut error = None;
    loop {
        match pull_chunk(&mut chunks, decoder, usize::MAX) {
            Pulled::Bytes(_) => {}
            Pulled::Fin => {
                fin = true;
                break;
            }
            Pulled::Blocked => break,
            Pulled::Reset(code) => {
                error = Some(ClientError::StreamReset {
                    code: code.into_inner(),
                });
                break;
            }
        }
    }
    let _ = chunks.finalize();
    match error {
        Some(e) => Err(e),
        None => Ok(fin),
    }
}

/// Interprets one frame of a response stream (PROTOCOL §6.1, §7).
///
/// Returns `None` when more frames are expected, `Some(Ok(Chunk))` for a chunk to deliver,
/// or the final outcome.
pub(super) fn handle_response_frame(
    now: Instant,
    id: QueryId,
    streaming: bool,
    started: Instant,
    stream_bytes: &mut u64,
    max_stream: u64,
    frame: crate::frame::Frame,
) -> Option<Result<ClientEvent, ClientError>> {
    let latency = now.saturating_duration_since(started);
    if !streaming {
        return Some(match frame.ty {
            MessageType::SynapseResponse => match SynapseResponse::decode(&frame.payload) {
                Ok(response) => Ok(ClientEvent::Response {
                    id,
                    response,
                    latency,
                }),
                Err(e) => Err(ClientError::Transport(ResponseError::Undecodable(e))),
            },
            MessageType::StreamChunk => {
                Err(ClientError::Transport(ResponseError::ChunkOnUnaryQuery))
            }
            other => Err(ClientError::Transport(ResponseError::UnexpectedType(other))),
        });
    }
    match frame.ty {
        MessageType::StreamChunk => match StreamChunk::decode(&frame.payload) {
            Ok(chunk) => {
                *stream_bytes += chunk.data.len() as u64;
                if *stream_bytes > max_stream {
                    return Some(Err(ClientError::Stream(StreamFailure::TooLarge {
                        limit: max_stream,
                    })));
                }
                Some(Ok(ClientEvent::Chunk {
                    id,
                    data: chunk.data,
                }))
            }
            Err(e) => Some(Err(ClientError::Stream(StreamFailure::UndecodableChunk(e)))),
        },
        MessageType::StreamEnd => Some(match StreamEnd::decode(&frame.payload) {
            Ok(end) if end.success => Ok(ClientEvent::StreamEnd { id, latency }),
            Ok(end) => Err(ClientError::Stream(match end.error {
                Some(text) => StreamFailure::Remote(text),
                None => StreamFailure::RemoteNoDetail,
            })),
            Err(e) => Err(ClientError::Stream(StreamFailure::UndecodableEnd(e))),
        }),
        MessageType::SynapseResponse => {
            let detail = SynapseResponse::decode(&frame.payload)
                .ok()
                .and_then(|r| r.error);
            Some(Err(ClientError::Stream(StreamFailure::UnaryAnswer(detail))))
        }
        other => Some(Err(ClientError::Stream(StreamFailure::UnexpectedType(
            other,
        )))),
    }
}
