//! Connection lifecycle: driving a connection's QUIC events, its establishment, closes
//! asked for locally, and the bookkeeping when it is lost.

use super::*;

impl Server {
    /// Closes every connection with reason `server_shutdown`.
    pub fn close(&mut self, now: Instant) {
        let chs: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for ch in chs {
            self.core.close(now, ch, b"server_shutdown");
        }
    }

    /// Closes connections whose validators sent no request for `max_idle` (reason `cleanup`).
    pub fn close_connection(&mut self, now: Instant, conn: ConnId, reason: &str) {
        if let Some(ch) = self.handle_of(conn) {
            self.core.close(now, ch, reason.as_bytes());
        }
    }

    /// The QUIC handshake completed, which proves the peer's address: from now on the
    /// connection counts against its source's share of unauthenticated slots.
    pub(super) fn on_connected(&mut self, now: Instant, ch: ConnectionHandle) {
        let Some(conn) = self.conns.get_mut(&ch) else {
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

    /// Closes a QUIC connection with an application close carrying `reason`.
    pub(super) fn close_quic(&mut self, now: Instant, ch: ConnectionHandle, reason: &'static [u8]) {
        self.core.close(now, ch, reason);
    }
}

impl ConnRole for Server {
    const DRAINED: &'static str = "drained";

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn on_conn_event(&mut self, now: Instant, ch: ConnectionHandle, ev: Event) {
        match ev {
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                // Before authentication only a handshake is useful; bound what an
                // unauthenticated peer can make us buffer per stream.
                let authenticated = self.conns.get(&ch).is_some_and(|c| !c.hotkeys.is_empty());
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
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.open_streams += opened.len() as u32;
                }
                for stream in opened {
                    self.streams.insert(
                        (ch, stream),
                        SStream {
                            phase: Phase::Reading(FrameDecoder::new(max)),
                            last_progress: now,
                            out: OutQueue::default(),
                            notify_writable: false,
                            hold: Hold::Nothing,
                            last_send_progress: now,
                            send_deadline: false,
                        },
                    );
                    self.deadlines.schedule(
                        now + self.config.request_read_timeout,
                        Deadline::Read(ch, stream),
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
            Event::ConnectionLost { reason } => self.on_conn_closed(now, ch, reason.to_string()),
            _ => {}
        }
    }

    fn on_conn_closed(&mut self, _now: Instant, ch: ConnectionHandle, reason: String) {
        let Some(conn) = self.conns.remove(&ch) else {
            return;
        };
        self.parking.remove_conn(ch);
        for hk in &conn.hotkeys {
            if self.by_hotkey.get(hk) == Some(&ch) {
                self.by_hotkey.remove(hk);
            }
        }
        let keys: Vec<(ConnectionHandle, StreamId)> = self
            .streams
            .keys()
            .filter(|(c, _)| *c == ch)
            .copied()
            .collect();
        for (ch, stream) in keys {
            let removed = self.remove_stream(ch, stream);
            self.cancel_request_of(removed, CancelReason::ConnectionLost);
        }
        self.events.push_back(ServerEvent::ConnectionClosed {
            conn: conn.id,
            remote: conn.remote,
            reason,
        });
    }
}
