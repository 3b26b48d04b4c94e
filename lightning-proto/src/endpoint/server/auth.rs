//! The miner's side of the sr25519 handshake (PROTOCOL §8): the first frame on a
//! connection, its checks (timestamp window, nonce replay, signature, fingerprint) and
//! the signed answer.

use super::*;

impl Server {
    pub(super) fn on_first_frame(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        stream: StreamId,
        frame: Frame,
    ) {
        match frame.ty {
            MessageType::HandshakeRequest => {
                let response = self.handshake(now, ch, &frame.payload);
                self.answer(ch, stream, response.encode());
                self.release_held(now, ch);
            }
            MessageType::SynapsePacket => self.on_request(now, ch, stream, &frame.payload),
            // Any other valid type: finish without writing anything (PROTOCOL §2).
            _ => self.finish_empty(ch, stream),
        }
    }

    /// PROTOCOL §5.7, steps 1–12, with authorization recorded per connection.
    pub(super) fn handshake(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        payload: &Bytes,
    ) -> HandshakeResponse {
        let now_secs = self.core.clock.unix_secs(now);
        let Some(remote) = self.core.state(ch).map(|c| c.remote) else {
            return pre_auth_rejection(now_secs);
        };
        if let Err(error) = self.limits.check_handshake_rate(remote.ip(), now_secs) {
            self.reject(remote, None, error);
            return pre_auth_rejection(now_secs);
        }
        let request = match HandshakeRequest::decode(payload) {
            Ok(r) => r,
            Err(_) => {
                self.stats.handshakes_rejected += 1;
                return pre_auth_rejection(now_secs);
            }
        };
        match self.check_handshake(now, ch, &request) {
            Ok(response) => {
                self.stats.handshakes_ok += 1;
                response
            }
            Err(error) => {
                self.reject(remote, Some(request.validator_hotkey.clone()), error);
                HandshakeResponse {
                    miner_hotkey: self.miner_hotkey.clone(),
                    timestamp: now_secs,
                    signature: String::new(),
                    accepted: false,
                    connection_id: String::new(),
                    cert_fingerprint: None,
                }
            }
        }
    }

    pub(super) fn reject(
        &mut self,
        remote: SocketAddr,
        validator_hotkey: Option<String>,
        error: HandshakeError,
    ) {
        self.stats.handshakes_rejected += 1;
        tracing::debug!(%remote, ?validator_hotkey, %error, "handshake rejected");
        self.events.push_back(ServerEvent::HandshakeRejected {
            remote,
            validator_hotkey,
            error,
        });
    }

    pub(super) fn check_handshake(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        request: &HandshakeRequest,
    ) -> Result<HandshakeResponse, HandshakeError> {
        let now_secs = self.core.clock.unix_secs(now);
        handshake::verify_request(
            &request.into(),
            &self.fingerprint,
            now_secs,
            self.config.max_signature_age_secs,
        )?;
        self.limits
            .check_nonce(&request.nonce, now_secs, request.timestamp)?;
        let hotkey = &request.validator_hotkey;
        if self.config.require_validator_permit && !self.permits.contains(hotkey) {
            return Err(HandshakeError::NotPermitted);
        }
        let message = handshake::response_message(
            hotkey,
            &self.miner_hotkey,
            now_secs,
            &request.nonce,
            &self.fingerprint,
        );
        let signature = self
            .signer
            .sign(message.as_bytes())
            .map_err(HandshakeError::Signing)?;
        let connection_id = handshake::connection_id(hotkey, self.core.clock.unix_ms(now));
        let me = self.holder_of(ch).ok_or(HandshakeError::ConnectionLimit)?;
        let max = self.config.max_connections;
        // Registered on this connection in one step with the table check, so that
        // endpoints sharing the port never hold more than `max`.
        let previous = match self.limits.claim_hotkey(hotkey, me, max) {
            Ok(previous) => previous,
            Err(TableFull) => {
                // With several endpoints on the port, each evicts among its own
                // connections; another endpoint may take the freed place first.
                let victim = self
                    .eviction_candidate(now, Some(ch))
                    .ok_or(HandshakeError::ConnectionLimit)?;
                self.evict(now, victim);
                self.limits
                    .claim_hotkey(hotkey, me, max)
                    .map_err(|TableFull| HandshakeError::ConnectionLimit)?
            }
        };
        // A different connection holding the hotkey is replaced, on whichever endpoint it
        // lives.
        if let Some(old) = previous {
            if old != me {
                if old.endpoint == self.index {
                    self.close_replaced(now, old, hotkey);
                } else {
                    self.limits.close_elsewhere(old, hotkey);
                }
            }
        }
        if self.core.state(ch).is_some_and(|c| c.hotkeys.is_empty()) {
            self.raise_limits(ch);
            self.uncount_unauthenticated(ch);
        }
        if let Some(conn) = self.core.state_mut(ch) {
            conn.hotkeys.retain(|h| h != hotkey);
            conn.hotkeys.push(hotkey.clone());
            self.events.push_back(ServerEvent::Authenticated {
                conn: conn.id,
                validator_hotkey: hotkey.clone(),
                remote: conn.remote,
            });
        }
        Ok(HandshakeResponse {
            miner_hotkey: self.miner_hotkey.clone(),
            timestamp: now_secs,
            signature: handshake::encode_signature(&signature),
            accepted: true,
            connection_id,
            cert_fingerprint: Some(
                self.advertised_fingerprint
                    .clone()
                    .unwrap_or_else(|| self.fingerprint.clone()),
            ),
        })
    }
}

impl Server {
    /// Closes the connection `holder` names (reason `replaced`): its validator hotkey
    /// authenticated on another connection, here or on another endpoint of the group.
    /// Nothing happens if that connection is gone or belongs to another endpoint.
    pub fn close_replaced(&mut self, now: Instant, holder: HotkeyHolder, hotkey: &str) {
        if holder.endpoint != self.index {
            return;
        }
        let Some(ch) = self.core.resolve(holder.conn) else {
            return;
        };
        self.close_quic(now, ch, b"replaced");
        if let Some(c) = self.core.state_mut(ch) {
            c.hotkeys.retain(|h| h != hotkey);
        }
    }
}

/// The rejection sent before a request could be attributed to anyone (PROTOCOL §5.7).
pub(super) fn pre_auth_rejection(timestamp: u64) -> HandshakeResponse {
    HandshakeResponse {
        miner_hotkey: String::new(),
        timestamp,
        signature: String::new(),
        accepted: false,
        connection_id: String::new(),
        cert_fingerprint: None,
    }
}
