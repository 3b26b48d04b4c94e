//! Hooks for tests that need to send what a well-behaved client never would (feature
//! `testing`).

use super::*;

impl Client {
    /// Sends a request on the live QUIC connection to `addr` without any handshake.
    ///
    /// Exists only so tests can check how servers treat unauthenticated requests; a real
    /// client never does this.
    pub fn send_unauthenticated_for_testing(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        synapse_type: &str,
        data: DataMap,
    ) -> Result<QueryId, ClientError> {
        let timestamp = self.core.clock.unix_secs(now);
        let (ch, stream) = self.open_test_stream(addr)?;
        let Some(conn) = self.core.conn_mut(ch) else {
            return Err(ClientError::Connect(ConnectFailure::NotConnected));
        };
        let mut out = OutQueue::default();
        out.push(
            encode_synapse_packet(synapse_type, &data, timestamp)
                .map_err(|e| ClientError::Local(LocalError::Encode(e)))?,
        );
        out.finish_after_drain();
        let _ = out.flush(conn.send_stream(stream));
        Ok(self.track_test_request(now, addr, ch, stream, out))
    }

    /// Writes `bytes` verbatim on a new bidirectional stream of the live connection to
    /// `addr`, then FIN, and reads whatever comes back as a unary response.
    ///
    /// Exists only so fuzzers and tests can put arbitrary bytes on a connection that is
    /// (or is not) authenticated; a real client never does this. The answer arrives as
    /// [`ClientEvent::Response`] or [`ClientEvent::RequestFailed`] under the returned id.
    pub fn send_raw_stream_for_testing(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        bytes: Bytes,
    ) -> Result<QueryId, ClientError> {
        let (ch, stream) = self.open_test_stream(addr)?;
        let Some(conn) = self.core.conn_mut(ch) else {
            return Err(ClientError::Connect(ConnectFailure::NotConnected));
        };
        // Written directly rather than through an `OutQueue` (which takes only encoded
        // frames): test inputs are far below a fresh stream's send credit, so all of it is
        // accepted at once; anything that is not is refused rather than sent truncated.
        let mut send = conn.send_stream(stream);
        let mut written = 0;
        while written < bytes.len() {
            match send.write(&bytes[written..]) {
                Ok(n) if n > 0 => written += n,
                _ => break,
            }
        }
        if written < bytes.len() {
            let _ = send.reset(VarInt::from_u32(0));
            return Err(ClientError::Local(LocalError::RawBytesDidNotFit {
                written,
                len: bytes.len(),
            }));
        }
        let _ = send.finish();
        let out = OutQueue::default();
        Ok(self.track_test_request(now, addr, ch, stream, out))
    }

    /// A new bidirectional stream on the live connection to `addr`.
    fn open_test_stream(
        &mut self,
        addr: SocketAddr,
    ) -> Result<(ConnectionHandle, StreamId), ClientError> {
        let ch = self
            .peers
            .get(&addr)
            .and_then(|p| p.link.up())
            .ok_or(ClientError::Connect(ConnectFailure::NotConnected))?;
        let conn = self
            .core
            .conn_mut(ch)
            .ok_or(ClientError::Connect(ConnectFailure::NotConnected))?;
        let stream = conn
            .streams()
            .open(Dir::Bi)
            .ok_or(ClientError::Local(LocalError::NoStreamCredit))?;
        Ok((ch, stream))
    }

    /// Tracks a hand-made stream as a unary request, so its answer arrives as events.
    fn track_test_request(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        ch: ConnectionHandle,
        stream: StreamId,
        out: OutQueue,
    ) -> QueryId {
        self.next_request += 1;
        let id = QueryId(self.next_request);
        self.requests.insert(
            id,
            Request {
                addr,
                hotkey: String::new(),
                streaming: false,
                state: ReqState::Open {
                    ch,
                    stream,
                    out,
                    decoder: FrameDecoder::new(self.config.max_frame_payload_bytes),
                    fin: false,
                },
                started: now,
                timeout: None,
                outstanding: 0,
                stream_bytes: 0,
            },
        );
        if let Some(c) = self.core.state_mut(ch) {
            c.streams.insert(stream, OpenStream::Request(id));
        }
        id
    }
}
