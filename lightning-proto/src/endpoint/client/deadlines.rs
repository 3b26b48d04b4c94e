//! What happens when one of the client's own deadlines fires (dial, handshake, request).

use super::*;

impl Client {
    pub(super) fn on_deadline(&mut self, now: Instant, deadline: Deadline) {
        match deadline {
            Deadline::Dial(ch, serial) => {
                if self.conn_serial.get(&ch) != Some(&serial) {
                    return;
                }
                let Some(&addr) = self.conn_addr.get(&ch) else {
                    return;
                };
                let connected = self.peers.get(&addr).is_none_or(|p| p.link.up().is_some());
                if !connected {
                    self.fail_peer(now, addr, ClientError::ConnectTimeout(addr));
                }
            }
            Deadline::Handshake(ch, serial, stream) => {
                if self.conn_serial.get(&ch) == Some(&serial)
                    && self.handshakes.contains_key(&(ch, stream))
                {
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
