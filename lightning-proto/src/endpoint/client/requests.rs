//! Sending requests: opening their streams once the hotkey is authenticated (waiting for
//! stream credit otherwise), writing frames as flow control allows, cancelling.

use super::*;

impl Client {
    /// Sends `synapse_type` with `data` to `hotkey` at `addr`.
    ///
    /// If the connection is down, it is re-established on demand under the reconnect policy
    /// (an error is returned at once while in backoff). The request waits for the hotkey's
    /// handshake and for stream credit; its deadline counts from now.
    pub fn request(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        hotkey: &str,
        synapse_type: &str,
        data: DataMap,
        opts: RequestOptions,
    ) -> Result<QueryId, ClientError> {
        let frame = encode_synapse_packet(synapse_type, &data, self.core.clock.unix_secs(now))
            .map_err(|e| ClientError::Local(LocalError::Encode(e)))?;

        let peer = match self.peers.get(&addr) {
            Some(p) => p,
            None => {
                // Like the reference, a query to an unknown miner dials and registers it;
                // unlike it, the connection cap still applies.
                self.connect(now, addr, [hotkey])?;
                self.peers
                    .get(&addr)
                    .ok_or(ClientError::Local(LocalError::UnknownPeer))?
            }
        };
        let status = peer.hotkeys.get(hotkey).copied();
        let conn_live = peer.link != Link::Down;
        match (conn_live, status) {
            (true, None) => {
                return Err(ClientError::NoRoute {
                    hotkey: hotkey.to_string(),
                    addr,
                })
            }
            (true, Some(HotkeyStatus::Failed)) => {
                return Err(ClientError::NoRoute {
                    hotkey: hotkey.to_string(),
                    addr,
                })
            }
            (false, _) => {
                // Reconnect on demand; the hotkey joins the set handshaken on the new connection.
                let peer = self
                    .peers
                    .get_mut(&addr)
                    .ok_or(ClientError::Local(LocalError::UnknownPeer))?;
                peer.hotkeys
                    .entry(hotkey.to_string())
                    .or_insert(HotkeyStatus::Idle);
                self.dial(now, addr)?;
            }
            _ => {}
        }

        self.next_request += 1;
        let id = QueryId(self.next_request);
        self.requests.insert(
            id,
            Request {
                addr,
                hotkey: hotkey.to_string(),
                streaming: opts.streaming,
                state: ReqState::Waiting(frame),
                started: now,
                timeout: opts.timeout,
                outstanding: 0,
                stream_bytes: 0,
            },
        );
        if let Some(t) = opts.timeout {
            self.deadlines.schedule(now + t, Deadline::Request(id));
        }
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.waiting.push_back(id);
        }
        self.pump_waiting(now, addr);
        Ok(id)
    }

    /// Abandons a request: its stream is reset and stopped, so the miner sees the
    /// cancellation and can stop working. No further events are emitted for it.
    pub fn cancel(&mut self, now: Instant, id: QueryId) {
        if let Some(req) = take_request(&mut self.requests, &mut self.deadlines, id) {
            self.abort_stream(now, &req, 0);
        }
    }

    /// Puts waiting requests of `addr` on streams where their hotkey is authenticated.
    pub(super) fn pump_waiting(&mut self, now: Instant, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(ch) = peer.link.handle() else {
            return;
        };
        // Behind the handshake of the address's only hotkey, a Lightning miner holds the
        // request until the handshake is checked (`tls::PIPELINE_ALPN`).
        let pipelining = matches!(
            peer.link,
            Link::Up {
                pipelining: true,
                ..
            }
        ) && peer.hotkeys.len() == 1;
        let mut still = VecDeque::new();
        while let Some(id) = peer.waiting.pop_front() {
            let Some(req) = self.requests.get_mut(&id) else {
                continue;
            };
            let small = match &req.state {
                ReqState::Waiting(frame) => {
                    frame.len() <= super::super::UNAUTHENTICATED_MAX_FRAME as usize
                }
                ReqState::Open { .. } => false,
            };
            let sendable = match peer.hotkeys.get(&req.hotkey) {
                Some(HotkeyStatus::Authenticated) => true,
                // The miner reads at most a small frame before the handshake.
                Some(HotkeyStatus::Pending) => pipelining && small,
                _ => false,
            };
            if !sendable {
                still.push_back(id);
                continue;
            }
            let Some(conn) = self.core.conn_mut(ch) else {
                still.push_back(id);
                break;
            };
            let Some(stream) = conn.streams().open(Dir::Bi) else {
                still.push_back(id);
                still.extend(peer.waiting.drain(..));
                break;
            };
            let frame = match std::mem::replace(
                &mut req.state,
                ReqState::Open {
                    ch,
                    stream,
                    out: OutQueue::default(),
                    // A response spanning chunks reserves up to a stream window ahead
                    // of what arrived: 1 MB answers get one buffer, not a growing one,
                    // and a miner that declares 64 MiB and sends nothing costs one
                    // window, not its declared length.
                    decoder: FrameDecoder::new(self.config.max_frame_payload_bytes)
                        .reserving_ahead(self.config.transport.stream_receive_window as usize)
                        .with_pool(self.pool.clone()),
                    fin: false,
                },
            ) {
                ReqState::Waiting(frame) => frame,
                ReqState::Open { .. } => continue,
            };
            req.started = now;
            if let ReqState::Open { out, .. } = &mut req.state {
                out.push(frame);
                out.finish_after_drain();
                let _ = out.flush(conn.send_stream(stream));
            }
            if let Some(c) = self.core.state_mut(ch) {
                c.streams.insert(stream, OpenStream::Request(id));
            }
        }
        peer.waiting = still;
    }

    pub(super) fn flush_stream(&mut self, _now: Instant, ch: ConnectionHandle, stream: StreamId) {
        let Some((conn, c)) = self.core.parts_mut(ch) else {
            return;
        };
        match c.streams.get_mut(&stream) {
            Some(OpenStream::Handshake(hs)) => {
                let _ = hs.out.flush(conn.send_stream(stream));
            }
            Some(OpenStream::Request(id)) => {
                if let Some(Request {
                    state: ReqState::Open { out, .. },
                    ..
                }) = self.requests.get_mut(id)
                {
                    if out.flush(conn.send_stream(stream)) == Flush::Closed {
                        // The miner stopped reading; its answer (or silence) decides.
                        *out = OutQueue::default();
                    }
                }
            }
            None => {}
        }
    }

    /// The answer is complete: release the stream without disturbing the miner.
    pub(super) fn finish_stream_quietly(&mut self, req: &Request) {
        if let ReqState::Open {
            ch, stream, fin, ..
        } = &req.state
        {
            if let Some(c) = self.core.state_mut(*ch) {
                c.streams.remove(stream);
            }
            if let Some(conn) = self.core.conn_mut(*ch) {
                if !*fin {
                    let _ = conn.recv_stream(*stream).stop(VarInt::from_u32(0));
                }
            }
        }
    }

    /// Resets our send side and stops the receive side, so the miner sees cancellation.
    pub(super) fn abort_stream(&mut self, _now: Instant, req: &Request, code: u32) {
        match &req.state {
            ReqState::Open {
                ch, stream, fin, ..
            } => {
                if let Some(c) = self.core.state_mut(*ch) {
                    c.streams.remove(stream);
                }
                if let Some(conn) = self.core.conn_mut(*ch) {
                    let _ = conn.send_stream(*stream).reset(VarInt::from_u32(code));
                    if !*fin {
                        let _ = conn.recv_stream(*stream).stop(VarInt::from_u32(code));
                    }
                }
            }
            ReqState::Waiting(_) => {}
        }
        let addr = req.addr;
        if let Some(peer) = self.peers.get_mut(&addr) {
            // Drop it from the waiting line if it never got a stream.
            let alive: Vec<QueryId> = peer
                .waiting
                .iter()
                .copied()
                .filter(|id| self.requests.contains_key(id))
                .collect();
            peer.waiting = alive.into();
        }
    }
}
