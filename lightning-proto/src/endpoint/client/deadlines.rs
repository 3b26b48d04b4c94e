//! What happens when one of the client's own deadlines fires (dial, handshake, request).

use super::*;

impl Client {
    pub(super) fn on_deadline(&mut self, now: Instant, deadline: Deadline) {
        match deadline {
            Deadline::Dial(conn) => {
                let Some(addr) = self
                    .core
                    .resolve(conn)
                    .and_then(|ch| self.core.state(ch))
                    .map(|c| c.addr)
                else {
                    return;
                };
                let connected = self.peers.get(&addr).is_none_or(|p| p.link.up().is_some());
                if !connected {
                    self.fail_peer(now, addr, ClientError::ConnectTimeout(addr));
                }
            }
            Deadline::Handshake(conn, stream) => {
                let Some(ch) = self.core.resolve(conn) else {
                    return;
                };
                let pending = self.core.state(ch).is_some_and(|c| {
                    matches!(c.streams.get(&stream), Some(OpenStream::Handshake(_)))
                });
                if pending {
                    self.finish_handshake(now, ch, stream, Err(ClientError::HandshakeTimeout));
                }
            }
            Deadline::Request(id) => {
                let Some(timeout) = self.requests.get(&id).and_then(|r| r.timeout) else {
                    return;
                };
                self.complete_request(now, id, Err(ClientError::Timeout(timeout)));
            }
        }
    }
}
