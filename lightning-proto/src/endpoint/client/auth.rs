//! The validator's side of the sr25519 handshake (PROTOCOL §8.2): one stream per hotkey
//! at a miner's address, the miner's signed answer checked against its TLS certificate.

use super::*;

impl Client {
    pub(super) fn start_handshakes(&mut self, now: Instant, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Link::Up {
            ch, fingerprint, ..
        } = &peer.link
        else {
            return;
        };
        let (ch, fp) = (*ch, fingerprint.clone());
        let idle: Vec<String> = peer
            .hotkeys
            .iter()
            .filter(|(_, s)| **s == HotkeyStatus::Idle)
            .map(|(hk, _)| hk.clone())
            .collect();
        for hotkey in idle {
            let Some(conn) = self.core.conn_mut(ch) else {
                return;
            };
            let Some(stream) = conn.streams().open(Dir::Bi) else {
                // Out of stream credit: `Available` will call us again.
                break;
            };
            let nonce = handshake::generate_nonce(&mut self.rng);
            let timestamp = self.core.clock.unix_secs(now);
            let Some(conn) = self.core.conn_mut(ch) else {
                return;
            };
            let message = handshake::request_message(&self.hotkey, timestamp, &nonce, &fp);
            let signature = match self.signer.sign(message.as_bytes()) {
                Ok(sig) => handshake::encode_signature(&sig),
                Err(e) => {
                    let _ = conn.send_stream(stream).reset(VarInt::from_u32(0));
                    if let Some(peer) = self.peers.get_mut(&addr) {
                        peer.hotkeys.insert(hotkey.clone(), HotkeyStatus::Failed);
                    }
                    self.events.push_back(ClientEvent::HandshakeFailed {
                        addr,
                        hotkey,
                        error: ClientError::Handshake(HandshakeError::Signing(e)),
                    });
                    continue;
                }
            };
            let request = HandshakeRequest {
                validator_hotkey: self.hotkey.clone(),
                timestamp,
                nonce: nonce.clone(),
                signature,
            };
            let mut out = OutQueue::default();
            match request.encode() {
                Ok(frame) => out.push(frame),
                Err(e) => {
                    tracing::warn!(%e, "handshake request cannot be encoded");
                    continue;
                }
            }
            out.finish_after_drain();
            let _ = out.flush(conn.send_stream(stream));
            let handshake = HandshakeStream {
                addr,
                hotkey: hotkey.clone(),
                nonce,
                fingerprint: fp.clone(),
                out,
                decoder: FrameDecoder::new(self.config.max_frame_payload_bytes),
            };
            let Some(c) = self.core.state_mut(ch) else {
                return;
            };
            c.streams
                .insert(stream, OpenStream::Handshake(Box::new(handshake)));
            if let Some(peer) = self.peers.get_mut(&addr) {
                peer.hotkeys.insert(hotkey, HotkeyStatus::Pending);
            }
            if let Some(conn) = self.core.conn_ref(ch) {
                self.deadlines.schedule(
                    now + self.config.connect_timeout,
                    Deadline::Handshake(conn, stream),
                );
            }
        }
    }

    pub(super) fn read_handshake(&mut self, now: Instant, ch: ConnectionHandle, stream: StreamId) {
        let Some((conn, c)) = self.core.parts_mut(ch) else {
            return;
        };
        let Some(OpenStream::Handshake(hs)) = c.streams.get_mut(&stream) else {
            return;
        };
        let fin = match pull(conn, stream, &mut hs.decoder) {
            Ok(fin) => fin,
            Err(e) => {
                self.finish_handshake(now, ch, stream, Err(e));
                return;
            }
        };
        let outcome = match hs.decoder.next_frame() {
            Ok(Some(frame)) => {
                if frame.ty != MessageType::HandshakeResponse {
                    Some(Err(ClientError::HandshakeProtocol(
                        HandshakeProtocolError::UnexpectedType(frame.ty),
                    )))
                } else {
                    Some(match HandshakeResponse::decode(&frame.payload) {
                        Ok(resp) => handshake::verify_response(
                            &(&resp).into(),
                            &hs.hotkey,
                            &self.hotkey,
                            &hs.nonce,
                            &hs.fingerprint,
                        )
                        .map_err(ClientError::Handshake),
                        Err(e) => Err(ClientError::HandshakeProtocol(
                            HandshakeProtocolError::Undecodable(e),
                        )),
                    })
                }
            }
            Ok(None) if fin => Some(Err(ClientError::Frame(
                hs.decoder.finish().err().unwrap_or(FrameError::Truncated {
                    received: 0,
                    expected: FRAME_HEADER_LEN,
                }),
            ))),
            Ok(None) => None,
            Err(e) => Some(Err(ClientError::Frame(e))),
        };
        if let Some(result) = outcome {
            self.finish_handshake(now, ch, stream, result);
        }
    }

    pub(super) fn finish_handshake(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
        result: Result<(), ClientError>,
    ) {
        let Some(hs) = self.take_handshake(ch, stream) else {
            return;
        };
        if let Some(conn) = self.core.conn_mut(ch) {
            let _ = conn.recv_stream(stream).stop(VarInt::from_u32(0));
        }
        let addr = hs.addr;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if peer.link.handle() != Some(ch) {
            return;
        }
        let mut to_release = Vec::new();
        match result {
            Ok(()) => {
                peer.hotkeys
                    .insert(hs.hotkey.clone(), HotkeyStatus::Authenticated);
                peer.settled = Settled::Succeeded;
                peer.reconnect.on_success();
                self.events.push_back(ClientEvent::Authenticated {
                    addr,
                    hotkey: hs.hotkey,
                });
                self.pump_waiting(now, addr);
            }
            Err(error) => {
                if peer.hotkeys.contains_key(&hs.hotkey) {
                    peer.hotkeys.insert(hs.hotkey.clone(), HotkeyStatus::Failed);
                }
                // Requests for this hotkey cannot be served on this connection.
                let mut failed = Vec::new();
                peer.waiting.retain(|id| match self.requests.get(id) {
                    Some(r) if r.hotkey == hs.hotkey => {
                        failed.push(*id);
                        false
                    }
                    _ => true,
                });
                // And those sent right behind the handshake (pipelining): the miner
                // refuses them; they fail with the handshake's error.
                let pipelined: Vec<QueryId> = self
                    .requests
                    .iter()
                    .filter(|(_, r)| {
                        r.hotkey == hs.hotkey
                            && matches!(r.state, ReqState::Open { ch: c, .. } if c == ch)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                failed.extend(pipelined);
                let none_left = peer.hotkeys.values().all(|s| *s == HotkeyStatus::Failed);
                self.events.push_back(ClientEvent::HandshakeFailed {
                    addr,
                    hotkey: hs.hotkey,
                    error: error.clone(),
                });
                for id in failed {
                    if let Some(req) = take_request(&mut self.requests, &mut self.deadlines, id) {
                        to_release.push(req);
                    }
                    self.events.push_back(ClientEvent::RequestFailed {
                        id,
                        error: error.clone(),
                    });
                }
                if none_left && peer.settled == Settled::No {
                    let policy = self.config.reconnect;
                    peer.reconnect.on_failure(now, &policy);
                    peer.settled = Settled::FailureCounted;
                    self.close_conn(now, ch, "no_authenticated_hotkeys");
                }
            }
        }
        for req in to_release {
            self.finish_stream_quietly(&req);
        }
    }
}

impl Client {
    /// Takes handshake stream `stream` of connection `ch` out of the table (a request
    /// stream stays).
    pub(super) fn take_handshake(
        &mut self,
        ch: ConnectionHandle,
        stream: StreamId,
    ) -> Option<Box<HandshakeStream>> {
        let c = self.core.state_mut(ch)?;
        if !matches!(c.streams.get(&stream), Some(OpenStream::Handshake(_))) {
            return None;
        }
        match c.streams.remove(&stream) {
            Some(OpenStream::Handshake(hs)) => Some(hs),
            _ => None,
        }
    }
}
