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
                if let Some(req) = self.requests.remove(&id) {
                    self.abort_stream(now, &req, 0);
                    self.events.push_back(ClientEvent::RequestFailed {
                        id,
                        error: ClientError::ConnectionLost(reason.to_string()),
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
            .ok_or_else(|| ClientError::Local("unknown peer".into()))?;
        if peer.link != Link::Down {
            return Ok(());
        }
        peer.reconnect
            .check(now, &policy)
            .map_err(ClientError::Reconnect)?;
        let server_name = addr.ip().to_string();
        let (ch, conn) = self
            .core
            .endpoint
            .connect(now, self.quic.clone(), addr, &server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        peer.reconnect.begin();
        peer.link = Link::Dialing(ch);
        peer.settled = Settled::No;
        for status in peer.hotkeys.values_mut() {
            *status = HotkeyStatus::Idle;
        }
        self.conn_addr.insert(ch, addr);
        self.next_conn_serial += 1;
        let serial = self.next_conn_serial;
        self.conn_serial.insert(ch, serial);
        self.core.insert(ch, conn);
        self.deadlines.schedule(
            now + self.config.connect_timeout,
            Deadline::Dial(ch, serial),
        );
        Ok(())
    }
}

impl ConnRole for Client {
    const DRAINED: &'static str = "connection drained";

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn on_conn_event(&mut self, now: Instant, ch: ConnectionHandle, ev: Event) {
        match ev {
            Event::Connected => {
                let Some(&addr) = self.conn_addr.get(&ch) else {
                    return;
                };
                let fp = self
                    .core
                    .conn(ch)
                    .and_then(crate::tls::peer_leaf_der)
                    .map(|der| handshake::cert_fingerprint(&der));
                match fp {
                    Some(fp) => {
                        if let Some(peer) = self.peers.get_mut(&addr) {
                            peer.link = Link::Up {
                                ch,
                                fingerprint: fp,
                            };
                        }
                        self.start_handshakes(now, addr);
                    }
                    None => {
                        self.close_conn(now, ch, "no peer certificate");
                        self.fail_peer(
                            now,
                            addr,
                            ClientError::Connect(
                                "peer certificate not available for fingerprinting".into(),
                            ),
                        );
                    }
                }
            }
            Event::ConnectionLost { reason } => {
                self.on_conn_closed(now, ch, reason.to_string());
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                match self.streams.get(&(ch, id)).copied() {
                    Some(StreamRole::Handshake) => self.read_handshake(now, ch, id),
                    Some(StreamRole::Request(rid)) => self.read_request(now, ch, id, rid),
                    None => {}
                }
            }
            Event::Stream(StreamEvent::Writable { id }) => self.flush_stream(now, ch, id),
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {
                if let Some(&addr) = self.conn_addr.get(&ch) {
                    self.start_handshakes(now, addr);
                    self.pump_waiting(now, addr);
                }
            }
            Event::Stream(StreamEvent::Finished { id })
            | Event::Stream(StreamEvent::Stopped { id, .. }) => {
                // Our send side is done (acknowledged, or the miner stopped reading because
                // it has the whole frame). The stream lives on until the answer is read.
                if let Some(h) = self.handshakes.get_mut(&(ch, id)) {
                    h.out = OutQueue::default();
                }
            }
            _ => {}
        }
    }

    fn on_conn_closed(&mut self, now: Instant, ch: ConnectionHandle, reason: String) {
        self.conn_serial.remove(&ch);
        let Some(addr) = self.conn_addr.remove(&ch) else {
            return;
        };
        self.streams.retain(|(c, _), _| *c != ch);
        self.handshakes.retain(|(c, _), _| *c != ch);
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
                    if self.requests.remove(&id).is_some() {
                        self.events.push_back(ClientEvent::RequestFailed {
                            id,
                            error: ClientError::ConnectionLost(reason.clone()),
                        });
                    }
                }
            }
            if peer.settled == Settled::No {
                for hotkey in failed {
                    self.events.push_back(ClientEvent::HandshakeFailed {
                        addr,
                        hotkey,
                        error: ClientError::Connect(reason.clone()),
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
            self.requests.remove(&id);
            self.events.push_back(ClientEvent::RequestFailed {
                id,
                error: ClientError::ConnectionLost(reason.clone()),
            });
        }
        self.events
            .push_back(ClientEvent::ConnectionLost { addr, reason });
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
            self.conn_addr.remove(&ch);
            self.conn_serial.remove(&ch);
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
            if self.requests.remove(&id).is_some() {
                events.push(ClientEvent::RequestFailed {
                    id,
                    error: error.clone(),
                });
            }
        }
        self.events.extend(events);
    }
}
