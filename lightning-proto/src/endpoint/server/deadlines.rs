//! What happens when one of the server's own deadlines fires (authentication, request
//! read, handler, cache cleanup).

use super::*;

impl Server {
    pub(super) fn on_deadline(&mut self, now: Instant, deadline: Deadline) {
        match deadline {
            Deadline::Auth(conn) => {
                let Some(ch) = self.core.resolve(conn) else {
                    return;
                };
                let unauthenticated = self.core.state(ch).is_some_and(|c| c.hotkeys.is_empty());
                if unauthenticated {
                    self.stats.auth_timeouts += 1;
                    self.close_quic(now, ch, b"handshake_timeout");
                }
            }
            Deadline::Read(conn, stream) => {
                let Some(ch) = self.core.resolve(conn) else {
                    return;
                };
                // A rate, not total time: a large request on a lossy path may take long,
                // but a header followed by silence (slowloris) or a trickle that holds
                // request budget (a byte every second) stalls.
                let idle_since = match stream_of(&self.core, ch, stream) {
                    Some(SStream {
                        phase: Phase::Reading(_),
                        last_progress,
                        ..
                    }) => Some(*last_progress),
                    _ => None,
                };
                let Some(mut idle_since) = idle_since else {
                    return;
                };
                if stream_of(&self.core, ch, stream)
                    .is_some_and(|s| matches!(s.hold, Hold::Waiting { .. }))
                {
                    // It waits for our budget, not for the peer.
                    idle_since = now;
                }
                // A stream waiting behind its siblings on a busy connection is not stalled:
                // only a connection that delivers less than the minimum rate is.
                if let Some(c) = self.core.state(ch) {
                    idle_since = idle_since.max(c.rate.last_ok);
                }
                let expires = idle_since + self.config.request_read_timeout;
                if expires > now {
                    self.deadlines
                        .schedule(expires, Deadline::Read(conn, stream));
                    return;
                }
                self.stats.read_timeouts += 1;
                self.abandon_stream(ch, stream);
            }
            Deadline::Send(conn, stream) => {
                if let Some(ch) = self.core.resolve(conn) {
                    self.check_send_progress(now, ch, stream);
                }
            }
            Deadline::Handler(id) => {
                let Some(&(ch, stream)) = self.requests.get(&id) else {
                    return;
                };
                let kind = match stream_of(&self.core, ch, stream).map(|s| &s.phase) {
                    Some(Phase::Handling { kind, .. }) => *kind,
                    _ => return,
                };
                self.requests.remove(&id);
                let frame = match kind {
                    SynapseKind::Unary => error_response(
                        self.core.clock.unix_secs(now),
                        wire_errors::HANDLER_TIMED_OUT,
                    )
                    .encode(),
                    SynapseKind::Streaming => StreamEnd {
                        success: false,
                        error: Some(wire_errors::HANDLER_TIMED_OUT.into()),
                    }
                    .encode(),
                };
                self.answer(ch, stream, frame);
                self.events.push_back(ServerEvent::RequestCancelled {
                    id,
                    reason: CancelReason::TimedOut,
                });
            }
            Deadline::Cleanup => {
                let now_secs = self.core.clock.unix_secs(now);
                self.limits.evict_stale(now_secs);
                self.deadlines
                    .schedule(now + self.config.nonce_cleanup_interval, Deadline::Cleanup);
            }
        }
    }
}
