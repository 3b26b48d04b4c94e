//! Requests that wait for read budget: the connection's receive window widened for
//! each, the parking lot they wait in, resumption as budget frees up, and the one way
//! every stream leaves the tables (abandoned streams give their credit back).

use super::*;

impl Server {
    /// Sets an authenticated connection's receive window: the configured one, plus one
    /// stream window per stream waiting for budget.
    ///
    /// A waiting stream is not read, so QUIC holds up to a stream window of its bytes,
    /// and unread bytes keep using the connection's window. Without the extra room,
    /// waiting streams could fill the whole window and the streams that hold budget could
    /// never receive the rest of their frames: every large request would stall until the
    /// read timeout. With it, the streams being read always have the configured window.
    /// quinn shrinks a window by holding back credit the peer has not used yet, so the
    /// room given to a stream is taken back as its own bytes are read.
    pub(super) fn apply_window(&mut self, ch: ConnectionHandle) {
        let Some(sconn) = self.core.state(ch) else {
            return;
        };
        let window = self.config.transport.receive_window.saturating_add(
            sconn
                .window_extensions
                .saturating_mul(u64::from(self.config.transport.stream_receive_window)),
        );
        if let Some(conn) = self.core.conn_mut(ch) {
            conn.set_receive_window(VarInt::from_u64(window).unwrap_or(VarInt::MAX));
        }
    }

    /// Removes a stream, giving back any budget or waiting place it held.
    pub(super) fn remove_stream(
        &mut self,
        ch: ConnectionHandle,
        stream: StreamId,
    ) -> Option<SStream> {
        if let Some(conn) = self.core.conn_ref(ch) {
            self.forget_stream_deadlines(conn, stream);
        }
        let c = self.core.state_mut(ch)?;
        let mut s = c.streams.remove(&stream)?;
        c.open_streams = c.open_streams.saturating_sub(1);
        let freed = c.chunks.release(stream, std::mem::take(&mut s.credit));
        if let Some(window_extended) = self.release_shared(ch, &mut s) {
            self.parking.remove(ch, stream);
            if window_extended {
                self.narrow_window(ch);
            }
        }
        if freed {
            self.wake_writable(ch);
        }
        Some(s)
    }

    /// Gives back what stream `s`, just taken out of connection `ch`'s table, held of
    /// the server's shared budgets: its read-budget reservation and its queued response
    /// bytes, which lets waiting streams be tried again. Shared by a stream that leaves
    /// an open connection and by the streams of a closed one: while `ch` is still in
    /// the core, its own shares of both are given back too.
    ///
    /// `Some(window_extended)` if the stream was still waiting for budget instead: its
    /// waiting place is the caller's to settle.
    pub(super) fn release_shared(&mut self, ch: ConnectionHandle, s: &mut SStream) -> Option<bool> {
        let mut waited = None;
        match std::mem::replace(&mut s.hold, Hold::Nothing) {
            Hold::Nothing => {}
            Hold::Reserved(r) => {
                let conn = self
                    .core
                    .state_mut(ch)
                    .map(|c| (&mut c.reserved, &mut c.reserved_small));
                self.limits.release(conn, r);
                self.released.push(ch);
            }
            Hold::Waiting { window_extended } => waited = Some(window_extended),
        }
        self.account_owed(ch, std::mem::take(&mut s.owed), 0);
        self.account_queued(ch, s.out.bytes(), 0);
        waited
    }

    /// Gives back, at once, what a connection the server has closed holds: its read
    /// budget, its waiting places, its queued answers and its requests' bytes. QUIC keeps
    /// a closed connection until it has drained (three probe timeouts, which a slow or
    /// silent peer stretches to seconds), and nothing on it is read or sent again:
    /// without this, a hotkey that connects again, which replaces its connection, would
    /// hold one connection's share per reconnection, and the answers of a validator that
    /// stopped reading would count against everyone's cap until the drain. Requests still
    /// with the application are cancelled (`ConnectionLost`) now rather than at the drain.
    pub(super) fn release_on_close(&mut self, ch: ConnectionHandle) {
        self.parking.remove_conn(ch);
        let Some(c) = self.core.state_mut(ch) else {
            return;
        };
        let mut released = false;
        let mut dropped = 0u64;
        let mut cancelled = Vec::new();
        for (&stream, s) in c.streams.iter_mut() {
            if let Hold::Reserved(r) = std::mem::replace(&mut s.hold, Hold::Nothing) {
                self.limits
                    .release(Some((&mut c.reserved, &mut c.reserved_small)), r);
                released = true;
            }
            // Never sent now: the connection is closing.
            dropped += std::mem::take(&mut s.owed) + s.out.bytes() as u64;
            s.out = OutQueue::default();
            c.chunks.release(stream, std::mem::take(&mut s.credit));
            if let Phase::Handling { id, .. } = s.phase {
                cancelled.push(id);
                s.phase = Phase::Answered;
            }
        }
        c.owed = 0;
        c.queued_out = 0;
        c.window_extensions = 0;
        if dropped > 0 {
            self.limits.account_queued(dropped, 0);
            released = true;
        }
        if released {
            self.released.push(ch);
        }
        for id in cancelled {
            if self.forget_request(id) {
                self.events.push_back(ServerEvent::RequestCancelled {
                    id,
                    reason: CancelReason::ConnectionLost,
                });
            }
        }
    }

    /// A stream that was taken out of the tables while its request was with the
    /// application: the application is told to stop working on it.
    pub(super) fn cancel_request_of(&mut self, removed: Option<SStream>, reason: CancelReason) {
        if let Some(SStream {
            phase: Phase::Handling { id, .. },
            ..
        }) = removed
        {
            if self.forget_request(id) {
                self.events
                    .push_back(ServerEvent::RequestCancelled { id, reason });
            }
        }
    }

    /// Takes back the window room of one stream that no longer waits.
    pub(super) fn narrow_window(&mut self, ch: ConnectionHandle) {
        if let Some(c) = self.core.state_mut(ch) {
            c.window_extensions = c.window_extensions.saturating_sub(1);
            self.apply_window(ch);
        }
    }

    /// Removes a stream that ends without its answer having been delivered (the peer reset
    /// or stopped it, it stalled, or its send side closed): both halves are closed in
    /// quinn too, because quinn returns a stream's credit to the peer only once both halves
    /// are done, and an abandoned stream would otherwise hold one of the peer's
    /// `max_concurrent_bidi_streams` slots until the connection closes.
    pub(super) fn abandon_stream(
        &mut self,
        ch: ConnectionHandle,
        stream: StreamId,
    ) -> Option<SStream> {
        let removed = self.remove_stream(ch, stream);
        if let Some(conn) = self.core.conn_mut(ch) {
            // Either half may be closed already (stopped after the first frame, reset by
            // the peer, finished): quinn then answers `ClosedStream`, which is fine.
            let _ = conn.recv_stream(stream).stop(VarInt::from_u32(0));
            let _ = conn.send_stream(stream).reset(VarInt::from_u32(0));
        }
        removed
    }

    /// Admits waiting streams after budget was released: first the connections waiting
    /// for the pool's total, in order, then those that released (whose own heads may have
    /// waited for their connection's share). Each try admits a stream or ends its queue's
    /// turn, so the cost is O(1) per admitted stream.
    pub(super) fn resume_parked(&mut self, now: Instant) {
        while !self.released.is_empty() || std::mem::take(&mut self.freed_elsewhere) {
            if !self.released.is_empty() {
                // Other endpoints of the group may have streams waiting for the totals.
                self.limits.freed();
            }
            let released = std::mem::take(&mut self.released);
            while let Some(ch) = self.parking.pop_global() {
                if self.admit_waiting(now, ch) == Some(Shortfall::Total) {
                    self.parking.requeue_front(ch);
                    break;
                }
            }
            for ch in released {
                if self.admit_waiting(now, ch) == Some(Shortfall::Total) {
                    self.parking.wait_for_total(ch);
                }
            }
        }
        let waiting = self.parking.waits_for_total();
        if waiting != self.waiting_for_total {
            self.waiting_for_total = waiting;
            self.limits.set_waiting_for_total(waiting);
        }
    }

    /// Another endpoint of the group freed request budget or queued response bytes:
    /// streams here that wait for the group's totals are tried again. A driver calls this
    /// when [`SharedLimits::freed`](crate::endpoint::SharedLimits::freed) tells it to.
    pub fn budget_freed_elsewhere(&mut self, now: Instant) {
        self.now = now;
        self.freed_elsewhere = true;
        self.resume_parked(now);
    }

    /// Admits `ch`'s waiting streams in order while they fit; the limit that stopped it.
    pub(super) fn admit_waiting(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
    ) -> Option<Shortfall> {
        while let Some(stream) = self.parking.head(ch) {
            let Some(authenticated) = self.core.state(ch).map(|c| !c.hotkeys.is_empty()) else {
                self.parking.remove_conn(ch);
                return None;
            };
            let declared = match stream_of(&self.core, ch, stream).map(|s| &s.phase) {
                Some(Phase::Reading(decoder)) => decoder.declared_len(),
                _ => None,
            };
            let Some(len) = declared else {
                // Gone or no longer reading: nothing to admit.
                self.parking.pop_head(ch);
                let was = stream_of_mut(&mut self.core, ch, stream)
                    .map(|s| std::mem::replace(&mut s.hold, Hold::Nothing));
                if let Some(Hold::Waiting {
                    window_extended: true,
                }) = was
                {
                    self.narrow_window(ch);
                }
                continue;
            };
            if let Some(shortfall) = self.response_backlog(ch) {
                return Some(shortfall);
            }
            let bytes = u64::from(len) + FRAME_HEADER_LEN as u64;
            let sconn = self.core.state_mut(ch)?;
            let reservation = match self.limits.try_reserve(
                &mut sconn.reserved,
                &mut sconn.reserved_small,
                authenticated,
                bytes,
            ) {
                Ok(r) => r,
                Err(shortfall) => return Some(shortfall),
            };
            self.parking.pop_head(ch);
            let s = stream_of_mut(&mut self.core, ch, stream)?;
            let was = std::mem::replace(&mut s.hold, Hold::Reserved(reservation));
            s.last_progress = now;
            if let Hold::Waiting {
                window_extended: true,
            } = was
            {
                self.narrow_window(ch);
            }
            self.read(now, ch, stream);
        }
        None
    }

    /// Makes a stream whose frame does not fit the budget now wait, unread; refuses it
    /// with [`BUSY_ERROR_CODE`] when `max_waiting_requests` streams already wait, or
    /// `max_waiting_requests_per_connection` of its connection's.
    pub(super) fn park(&mut self, ch: ConnectionHandle, stream: StreamId, shortfall: Shortfall) {
        if self
            .parking
            .park(ch, stream, shortfall == Shortfall::Total)
            .is_err()
        {
            tracing::debug!(?stream, "too many requests waiting for budget: refused");
            self.remove_stream(ch, stream);
            if let Some(conn) = self.core.conn_mut(ch) {
                let _ = conn
                    .recv_stream(stream)
                    .stop(VarInt::from_u32(BUSY_ERROR_CODE));
                let _ = conn
                    .send_stream(stream)
                    .reset(VarInt::from_u32(BUSY_ERROR_CODE));
            }
            return;
        }
        let authenticated = self.core.state(ch).is_some_and(|c| !c.hotkeys.is_empty());
        if let Some(s) = stream_of_mut(&mut self.core, ch, stream) {
            // Unauthenticated frames are small and their connections' windows stay small.
            s.hold = Hold::Waiting {
                window_extended: authenticated,
            };
        }
        if authenticated {
            if let Some(c) = self.core.state_mut(ch) {
                c.window_extensions += 1;
            }
            self.apply_window(ch);
        }
    }
}

impl Server {
    /// Request `id` is done with (answered, cancelled or gone): it leaves the table and
    /// its handler deadline is cancelled. Whether it was still there.
    pub(super) fn forget_request(&mut self, id: RequestId) -> bool {
        self.deadlines.cancel(&Deadline::Handler(id));
        self.requests.remove(&id).is_some()
    }

    /// Cancels the read and send deadlines of stream `stream` of connection `conn`.
    pub(super) fn forget_stream_deadlines(&mut self, conn: ConnRef, stream: StreamId) {
        self.deadlines.cancel(&Deadline::Read(conn, stream));
        self.deadlines.cancel(&Deadline::Send(conn, stream));
    }
}
