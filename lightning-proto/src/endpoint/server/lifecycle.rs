//! Connection lifecycle: driving a connection's QUIC events, its establishment, closes
//! asked for locally, and the bookkeeping when it is lost.

use super::*;

impl Server {
    /// Closes every connection with reason `server_shutdown`.
    pub fn close(&mut self, now: Instant) {
        let chs: Vec<ConnectionHandle> = self.core.states().map(|(ch, _)| ch).collect();
        for ch in chs {
            self.core.close(now, ch, b"server_shutdown");
        }
    }

    /// Closes connections whose validators sent no request for `max_idle` (reason `cleanup`).
    pub fn close_connection(&mut self, now: Instant, conn: ConnId, reason: &str) {
        if let Some(ch) = self.handle_of(conn) {
            self.core.close(now, ch, reason.as_bytes());
            self.release_on_close(ch);
        }
    }

    /// The QUIC handshake completed, which proves the peer's address: from now on the
    /// connection counts against its source's share of unauthenticated slots.
    pub(super) fn on_connected(&mut self, now: Instant, ch: ConnectionHandle) {
        let Some(conn) = self.core.state_mut(ch) else {
            return;
        };
        let was_validated = std::mem::replace(&mut conn.validated, true);
        if was_validated || !conn.hotkeys.is_empty() {
            return;
        }
        let ip = conn.remote.ip();
        if self.unauthenticated_counts(ip).1 > self.config.max_unauthenticated_per_ip {
            self.stats.refused += 1;
            self.stats.refused_per_source += 1;
            self.close_quic(now, ch, b"too many unauthenticated connections");
        }
    }

    /// Closes a QUIC connection with an application close carrying `reason`; what it
    /// held of the server's budgets and caps is given back at once (`release_on_close`).
    pub(super) fn close_quic(&mut self, now: Instant, ch: ConnectionHandle, reason: &'static [u8]) {
        self.core.close(now, ch, reason);
        self.release_on_close(ch);
    }
}

impl ConnRole for Server {
    type State = SConn;

    fn core(&mut self) -> &mut Core<SConn> {
        &mut self.core
    }

    fn on_conn_event(&mut self, now: Instant, ch: ConnectionHandle, ev: Event) {
        match ev {
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                // Before authentication only a handshake is useful; bound what an
                // unauthenticated peer can make us buffer per stream.
                let authenticated = self.core.state(ch).is_some_and(|c| !c.hotkeys.is_empty());
                let max = if authenticated {
                    self.config.max_frame_payload_bytes
                } else {
                    self.config
                        .max_frame_payload_bytes
                        .min(UNAUTHENTICATED_MAX_FRAME)
                };
                let mut opened = Vec::new();
                if let Some(conn) = self.core.conn_mut(ch) {
                    while let Some(stream) = conn.streams().accept(Dir::Bi) {
                        opened.push(stream);
                    }
                }
                let Some(conn) = self.core.conn_ref(ch) else {
                    return;
                };
                let Some(c) = self.core.state_mut(ch) else {
                    return;
                };
                c.open_streams += opened.len() as u32;
                for &stream in &opened {
                    c.streams.insert(
                        stream,
                        SStream {
                            phase: Phase::Reading(
                                FrameDecoder::new(max).with_pool(self.pool.clone()),
                            ),
                            last_progress: now,
                            out: OutQueue::default(),
                            notify_writable: false,
                            credit: ChunkCredit::default(),
                            wants: None,
                            hold: Hold::Nothing,
                            owed: 0,
                            last_send_progress: now,
                            send_deadline: false,
                        },
                    );
                }
                for stream in opened {
                    self.deadlines.schedule(
                        now + self.config.request_read_timeout,
                        Deadline::Read(conn, stream),
                    );
                    self.read(now, ch, stream);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => self.read(now, ch, id),
            Event::Stream(StreamEvent::Writable { id }) => self.flush(ch, id),
            Event::Stream(StreamEvent::Stopped { id, .. }) => {
                // The validator dropped the query (or finished reading): stop work on it.
                let removed = self.abandon_stream(ch, id);
                self.cancel_request_of(removed, CancelReason::PeerCancelled);
            }
            Event::Connected => self.on_connected(now, ch),
            Event::ConnectionLost { reason } => self.lose(now, ch, ConnectionEnd::Lost(reason)),
            _ => {}
        }
    }

    fn on_conn_closed(
        &mut self,
        _now: Instant,
        ch: ConnectionHandle,
        mut conn: SConn,
        end: ConnectionEnd,
    ) {
        let reason = match end {
            ConnectionEnd::Drained => "drained".to_string(),
            other => other.to_string(),
        };
        self.parking.remove_conn(ch);
        let holder = HotkeyHolder {
            endpoint: self.index,
            conn: ConnRef {
                handle: ch,
                serial: conn.id.0,
            },
        };
        for hk in &conn.hotkeys {
            self.limits.release_hotkey(hk, holder);
        }
        admission::uncount(self.limits.as_mut(), &mut conn);
        // Its streams went with it: what they held of the server's shared budgets and
        // queues is given back here.
        let SConn {
            id,
            remote,
            streams,
            ..
        } = conn;
        let gone = ConnRef {
            handle: ch,
            serial: id.0,
        };
        self.deadlines.cancel(&Deadline::Auth(gone));
        for stream in streams.keys() {
            self.forget_stream_deadlines(gone, *stream);
        }
        if !streams.is_empty() {
            self.released.push(ch);
        }
        for (_, mut s) in streams {
            // The connection is out of the core already: only the server-wide budgets
            // get anything back, and its waiting places went with `remove_conn` above.
            self.release_shared(ch, &mut s);
            self.cancel_request_of(Some(s), CancelReason::ConnectionLost);
        }
        self.events.push_back(ServerEvent::ConnectionClosed {
            conn: id,
            remote,
            reason,
        });
    }
}
