//! Connections to miners: dialing, reconnect backoff, driving a connection's QUIC events,
//! and what happens to its hotkeys and requests when it closes or fails.

use super::*;

impl Client {
    /// Connects to the miner at `addr` and authenticates each of `hotkeys` on that one
    /// connection (PROTOCOL §8.2). Hotkeys already authenticated there are left alone.
    ///
    /// Progress arrives as [`ClientEvent::Authenticated`] / [`ClientEvent::HandshakeFailed`].
    pub fn connect<I, S>(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        hotkeys: I,
    ) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if !self.peers.contains_key(&addr) && self.peers.len() >= self.config.max_connections {
            return Err(ClientError::TooManyConnections(self.config.max_connections));
        }
        let peer = self.peers.entry(addr).or_insert_with(Peer::new);
        for hk in hotkeys {
            let hk = hk.into();
            let status = peer.hotkeys.entry(hk).or_insert(HotkeyStatus::Idle);
            if *status == HotkeyStatus::Failed {
                *status = HotkeyStatus::Idle;
            }
        }
        if peer.link == Link::Down {
            self.dial(now, addr)
        } else {
            if peer.link.up().is_some() {
                self.start_handshakes(now, addr);
            }
            Ok(())
        }
    }

    /// Closes the connection to `addr` with `reason` and forgets the peer.
    pub fn disconnect(&mut self, now: Instant, addr: SocketAddr, reason: &str) {
        if let Some(peer) = self.peers.remove(&addr) {
            if let Some(ch) = peer.link.handle() {
                self.close_conn(now, ch, reason);
            }
            for id in peer.waiting {
                if let Some(req) = take_request(&mut self.requests, &mut self.deadlines, id) {
                    self.abort_stream(now, &req, 0);
                    self.events.push_back(ClientEvent::RequestFailed {
                        id,
                        error: ClientError::ConnectionLost(ConnectionEnd::ClosedHere(
                            reason.to_string(),
                        )),
                    });
                }
            }
        }
    }

    /// Stops using `hotkey` at `addr`; closes the connection if no hotkey is left there.
    pub fn forget_hotkey(&mut self, now: Instant, addr: SocketAddr, hotkey: &str, reason: &str) {
        let empty = match self.peers.get_mut(&addr) {
            Some(peer) => {
                peer.hotkeys.remove(hotkey);
                peer.hotkeys.is_empty()
            }
            None => return,
        };
        if empty {
            self.disconnect(now, addr, reason);
        }
    }

    /// Clears reconnect backoff for `addr` (the registry was refreshed, PROTOCOL §8.3).
    pub fn reset_backoff(&mut self, addr: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.reconnect.reset();
        }
    }

    /// Closes every connection with reason `client_shutdown` and forgets all peers.
    pub fn close_all(&mut self, now: Instant) {
        let addrs: Vec<SocketAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            self.disconnect(now, addr, "client_shutdown");
        }
    }

    pub(super) fn dial(&mut self, now: Instant, addr: SocketAddr) -> Result<(), ClientError> {
        let policy = self.config.reconnect;
        let peer = self
            .peers
            .get_mut(&addr)
            .ok_or(ClientError::Local(LocalError::UnknownPeer))?;
        if peer.link != Link::Down {
            return Ok(());
        }
        peer.reconnect
            .check(now, &policy)
            .map_err(ClientError::Reconnect)?;
        let server_name = addr.ip().to_string();
        let quic = if crate::endpoint::config::is_loopback(addr.ip()) {
            &self.quic_loopback
        } else {
            &self.quic
        };
        let (ch, quic) = self
            .core
            .endpoint
            .connect(now, quic.clone(), addr, &server_name)
            .map_err(|e| ClientError::Connect(ConnectFailure::Quic(e)))?;
        peer.reconnect.begin();
        peer.link = Link::Dialing(ch);
        peer.settled = Settled::No;
        for status in peer.hotkeys.values_mut() {
            *status = HotkeyStatus::Idle;
        }
        let conn = self.core.insert(
            ch,
            quic,
            CConn {
                addr,
                streams: IdMap::default(),
            },
        );
        self.deadlines
            .schedule(now + self.config.connect_timeout, Deadline::Dial(conn));
        Ok(())
    }
}

impl ConnRole for Client {
    type State = CConn;

    fn core(&mut self) -> &mut Core<CConn> {
        &mut self.core
    }

    fn on_conn_event(&mut self, now: Instant, ch: ConnectionHandle, ev: Event) {
        match ev {
            Event::Connected => {
                let Some(addr) = self.core.state(ch).map(|c| c.addr) else {
                    return;
                };
                let fp = self
                    .core
                    .conn(ch)
                    .and_then(crate::tls::peer_leaf_der)
                    .map(|der| handshake::cert_fingerprint(&der));
                let pipelining = self.config.pipeline_first_requests
                    && self
                        .core
                        .conn(ch)
                        .is_some_and(crate::tls::negotiated_pipelining);
                match fp {
                    Some(fp) => {
                        if let Some(peer) = self.peers.get_mut(&addr) {
                            peer.link = Link::Up {
                                ch,
                                fingerprint: fp,
                                pipelining,
                            };
                        }
                        self.start_handshakes(now, addr);
                        if pipelining {
                            self.pump_waiting(now, addr);
                        }
                    }
                    None => {
                        self.close_conn(now, ch, "no peer certificate");
                        self.fail_peer(
                            now,
                            addr,
                            ClientError::Connect(ConnectFailure::NoPeerCertificate),
                        );
                    }
                }
            }
            Event::ConnectionLost { reason } => {
                self.lose(now, ch, ConnectionEnd::Lost(reason));
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                let carries = self.core.state(ch).and_then(|c| match c.streams.get(&id)? {
                    OpenStream::Handshake(_) => Some(None),
                    OpenStream::Request(rid) => Some(Some(*rid)),
                });
                match carries {
                    Some(None) => self.read_handshake(now, ch, id),
                    Some(Some(rid)) => self.read_request(now, ch, id, rid),
                    None => {}
                }
            }
            Event::Stream(StreamEvent::Writable { id }) => self.flush_stream(now, ch, id),
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {
                if let Some(addr) = self.core.state(ch).map(|c| c.addr) {
                    self.start_handshakes(now, addr);
                    self.pump_waiting(now, addr);
                }
            }
            Event::Stream(StreamEvent::Finished { id })
            | Event::Stream(StreamEvent::Stopped { id, .. }) => {
                // Our send side is done (acknowledged, or the miner stopped reading because
                // it has the whole frame). The stream lives on until the answer is read.
                if let Some(OpenStream::Handshake(h)) =
                    self.core.state_mut(ch).and_then(|c| c.streams.get_mut(&id))
                {
                    h.out = OutQueue::default();
                }
            }
            _ => {}
        }
    }

    fn on_conn_closed(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        conn: CConn,
        end: ConnectionEnd,
    ) {
        let addr = conn.addr;
        let policy = self.config.reconnect;
        let mut failed = Vec::new();
        if let Some(peer) = self.peers.get_mut(&addr) {
            if peer.link.handle() == Some(ch) {
                peer.link = Link::Down;
                if peer.settled == Settled::No {
                    peer.reconnect.on_failure(now, &policy);
                }
                for (hk, status) in peer.hotkeys.iter_mut() {
                    if *status == HotkeyStatus::Pending || *status == HotkeyStatus::Idle {
                        failed.push(hk.clone());
                    }
                    if *status != HotkeyStatus::Failed {
                        *status = HotkeyStatus::Idle;
                    }
                }
                // Requests that never reached a stream cannot be sent any more.
                let waiting: Vec<QueryId> = peer.waiting.drain(..).collect();
                for id in waiting {
                    if take_request(&mut self.requests, &mut self.deadlines, id).is_some() {
                        self.events.push_back(ClientEvent::RequestFailed {
                            id,
                            error: ClientError::ConnectionLost(end.clone()),
                        });
                    }
                }
            }
            if peer.settled == Settled::No {
                for hotkey in failed {
                    self.events.push_back(ClientEvent::HandshakeFailed {
                        addr,
                        hotkey,
                        error: ClientError::Connect(ConnectFailure::Ended(end.clone())),
                    });
                }
            }
        }
        let lost: Vec<QueryId> = self
            .requests
            .iter()
            .filter(|(_, r)| matches!(r.state, ReqState::Open { ch: c, .. } if c == ch))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            take_request(&mut self.requests, &mut self.deadlines, id);
            self.events.push_back(ClientEvent::RequestFailed {
                id,
                error: ClientError::ConnectionLost(end.clone()),
            });
        }
        self.events
            .push_back(ClientEvent::ConnectionLost { addr, reason: end });
    }
}

impl Client {
    pub(super) fn close_conn(&mut self, now: Instant, ch: ConnectionHandle, reason: &str) {
        self.core.close(now, ch, reason.as_bytes());
    }

    /// Fails every hotkey and waiting request of `addr` after a connection-level failure.
    pub(super) fn fail_peer(&mut self, now: Instant, addr: SocketAddr, error: ClientError) {
        let policy = self.config.reconnect;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(ch) = std::mem::replace(&mut peer.link, Link::Down).handle() {
            // Given up on: its streams go with it, and its close reports nothing more.
            self.core.release(ch);
            self.core.close(now, ch, b"connect_failed");
        }
        peer.reconnect.on_failure(now, &policy);
        let mut events = Vec::new();
        for (hk, status) in peer.hotkeys.iter_mut() {
            if *status != HotkeyStatus::Failed {
                *status = HotkeyStatus::Idle;
                events.push(ClientEvent::HandshakeFailed {
                    addr,
                    hotkey: hk.clone(),
                    error: error.clone(),
                });
            }
        }
        let waiting: Vec<QueryId> = peer.waiting.drain(..).collect();
        for id in waiting {
            if take_request(&mut self.requests, &mut self.deadlines, id).is_some() {
                events.push(ClientEvent::RequestFailed {
                    id,
                    error: error.clone(),
                });
            }
        }
        self.events.extend(events);
    }
}
