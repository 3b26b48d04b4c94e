//! The endpoint task's side of the client: commands from handles, queries waiting for
//! their answers, and the events of the sans-IO client turned into replies.

use super::*;

pub(super) struct UnaryOutcome(pub(super) Result<QuicResponse>);

pub(super) enum Reply {
    Unary(oneshot::Sender<UnaryOutcome>),
    Stream(async_channel::Sender<StreamMsg>),
}

pub(super) struct Query {
    pub(super) ticket: u64,
    pub(super) addr: SocketAddr,
    pub(super) hotkey: String,
    pub(super) request: QuicRequest,
    pub(super) timeout: Option<Duration>,
    pub(super) reply: Reply,
}

pub(super) enum Command {
    Query(Query),
    Cancel(u64),
    Consumed {
        ticket: u64,
        n: usize,
    },
    Connect {
        targets: Vec<(SocketAddr, QuicAxonInfo)>,
        reconcile: bool,
        reply: async_channel::Sender<ConnectReport>,
    },
    Authenticated(async_channel::Sender<HashSet<String>>),
    Stats(async_channel::Sender<ClientStats>),
    Metrics(async_channel::Sender<ClientMetrics>),
    CloseAll(async_channel::Sender<()>),
}

pub(super) struct Waiter {
    pub(super) ticket: u64,
    pub(super) reply: Reply,
    /// The synapse's metrics slot.
    pub(super) synapse: usize,
    /// When the query reached the endpoint task.
    pub(super) started: Instant,
}

impl Waiter {
    pub(super) fn fail(self, error: LightningError) {
        match self.reply {
            Reply::Unary(tx) => {
                let _ = tx.send(UnaryOutcome(Err(error)));
            }
            Reply::Stream(tx) => {
                let _ = tx.try_send(StreamMsg::Failed(error));
            }
        }
    }
}

/// A pending `initialize_connections` / `update_miner_registry` call.
pub(super) struct ConnectWait {
    pub(super) remaining: HashMap<(SocketAddr, String), QuicAxonInfo>,
    pub(super) report: ConnectReport,
    pub(super) reply: async_channel::Sender<ConnectReport>,
}

impl ConnectWait {
    pub(super) fn settle(
        &mut self,
        addr: SocketAddr,
        hotkey: &str,
        outcome: Option<&LightningError>,
    ) {
        if let Some(miner) = self.remaining.remove(&(addr, hotkey.to_string())) {
            match outcome {
                None => self.report.authenticated.push(miner),
                Some(e) => self.report.failed.push((miner, e.clone())),
            }
        }
    }

    pub(super) fn finish_if_done(&mut self) -> bool {
        if self.remaining.is_empty() {
            let _ = self.reply.try_send(std::mem::take(&mut self.report));
            true
        } else {
            false
        }
    }
}

pub(super) struct ClientRole {
    pub(super) ep: Client,
    pub(super) tickets: IdMap<u64, QueryId>,
    pub(super) waiters: IdMap<QueryId, Waiter>,
    pub(super) connects: Vec<ConnectWait>,
    pub(super) metrics: ClientCounters,
}

impl ClientRole {
    pub(super) fn on_query(&mut self, now: Instant, query: Query) {
        let Query {
            ticket,
            addr,
            hotkey,
            request,
            timeout,
            reply,
        } = query;
        let streaming = matches!(reply, Reply::Stream(_));
        let synapse = self.metrics.slot(&request.synapse_type);
        let opts = RequestOptions { timeout, streaming };
        match self.ep.request(
            now,
            addr,
            &hotkey,
            &request.synapse_type,
            request.data,
            opts,
        ) {
            Ok(id) => {
                if let Reply::Stream(tx) = &reply {
                    let _ = tx.try_send(StreamMsg::Accepted);
                }
                self.tickets.insert(ticket, id);
                self.waiters.insert(
                    id,
                    Waiter {
                        ticket,
                        reply,
                        synapse,
                        started: now,
                    },
                );
            }
            Err(e) => {
                let e = LightningError::from(e);
                self.metrics.record(synapse, Outcome::of_error(&e), None);
                Waiter {
                    ticket,
                    reply,
                    synapse,
                    started: now,
                }
                .fail(e)
            }
        }
    }

    pub(super) fn on_connect(
        &mut self,
        now: Instant,
        targets: Vec<(SocketAddr, QuicAxonInfo)>,
        reconcile: bool,
        reply: async_channel::Sender<ConnectReport>,
    ) {
        let mut by_addr: HashMap<SocketAddr, BTreeSet<String>> = HashMap::new();
        for (addr, miner) in &targets {
            by_addr
                .entry(*addr)
                .or_default()
                .insert(miner.hotkey.clone());
        }
        if reconcile {
            self.reconcile(now, &by_addr);
        }
        let mut wait = ConnectWait {
            remaining: targets
                .into_iter()
                .map(|(addr, m)| ((addr, m.hotkey.clone()), m))
                .collect(),
            report: ConnectReport::default(),
            reply,
        };
        for (addr, hotkeys) in by_addr {
            match self.ep.connect(now, addr, hotkeys.iter().cloned()) {
                Ok(()) => {
                    for hk in &hotkeys {
                        if self.ep.hotkey_status(addr, hk) == Some(HotkeyStatus::Authenticated) {
                            wait.settle(addr, hk, None);
                        }
                    }
                }
                Err(e) => {
                    let e = LightningError::from(e);
                    for hk in &hotkeys {
                        wait.settle(addr, hk, Some(&e));
                    }
                }
            }
        }
        if !wait.finish_if_done() {
            self.connects.push(wait);
        }
    }

    /// Steps 1–4 of PROTOCOL §8.3; step 5 is the connect that follows.
    pub(super) fn reconcile(
        &mut self,
        now: Instant,
        wanted: &HashMap<SocketAddr, BTreeSet<String>>,
    ) {
        let listed: HashSet<&str> = wanted.values().flatten().map(String::as_str).collect();
        let known: Vec<SocketAddr> = self.ep.peers().map(|(addr, _)| addr).collect();
        for addr in known {
            for hk in self.ep.peer_hotkeys(addr) {
                let keep = wanted.get(&addr).is_some_and(|set| set.contains(&hk));
                if !keep {
                    let reason = if listed.contains(hk.as_str()) {
                        "miner_addr_changed"
                    } else {
                        "miner_deregistered"
                    };
                    self.ep.forget_hotkey(now, addr, &hk, reason);
                }
            }
        }
        for addr in wanted.keys() {
            self.ep.reset_backoff(*addr);
        }
    }

    pub(super) fn settle_connects(
        &mut self,
        addr: SocketAddr,
        hotkey: &str,
        error: Option<&LightningError>,
    ) {
        self.connects.retain_mut(|wait| {
            wait.settle(addr, hotkey, error);
            !wait.finish_if_done()
        });
    }

    pub(super) fn stats(&self) -> ClientStats {
        let peers: Vec<PeerStats> = self
            .ep
            .peers()
            .map(|(addr, connected)| PeerStats {
                addr,
                connected,
                hotkeys: self
                    .ep
                    .peer_hotkeys(addr)
                    .into_iter()
                    .map(|hk| {
                        let status = self
                            .ep
                            .hotkey_status(addr, &hk)
                            .unwrap_or(HotkeyStatus::Idle);
                        (hk, status)
                    })
                    .collect(),
                quic: self.ep.connection_stats(addr),
            })
            .collect();
        ClientStats {
            connections: peers.iter().filter(|p| p.connected).count(),
            requests_in_flight: self.ep.requests_in_flight(),
            peers,
        }
    }

    pub(super) fn metrics_snapshot(&self) -> ClientMetrics {
        let quic: Vec<_> = self
            .ep
            .peers()
            .filter_map(|(addr, _)| self.ep.connection_stats(addr))
            .collect();
        ClientMetrics {
            connections: self.ep.peers().filter(|(_, connected)| *connected).count(),
            closed: self.metrics.closed,
            handshakes_ok: self.metrics.handshakes_ok,
            handshakes_failed: self.metrics.handshakes_failed.clone(),
            synapses: self.metrics.synapses.clone(),
            requests_in_flight: self.ep.requests_in_flight(),
            io: self.metrics.io,
            path: crate::metrics::PathSummary::from_stats(&quic),
        }
    }

    pub(super) fn finish(&mut self, id: QueryId) -> Option<Waiter> {
        let waiter = self.waiters.remove(&id)?;
        self.tickets.remove(&waiter.ticket);
        Some(waiter)
    }
}

impl Role for ClientRole {
    type Command = Command;

    type Endpoint = Client;
    const COMMANDS_AFTER_BATCH: bool = true;

    fn endpoint(&mut self) -> &mut Client {
        &mut self.ep
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Query(query) => self.on_query(now, query),
            Command::Cancel(ticket) => {
                if let Some(id) = self.tickets.remove(&ticket) {
                    if let Some(waiter) = self.waiters.remove(&id) {
                        self.metrics
                            .record(waiter.synapse, Outcome::Cancelled, None);
                    }
                    self.ep.cancel(now, id);
                }
            }
            Command::Consumed { ticket, n } => {
                if let Some(id) = self.tickets.get(&ticket) {
                    self.ep.consume_chunks(now, *id, n);
                }
            }
            Command::Connect {
                targets,
                reconcile,
                reply,
            } => self.on_connect(now, targets, reconcile, reply),
            Command::Authenticated(reply) => {
                let set = self.ep.authenticated().map(|(_, hk)| hk.to_string());
                let _ = reply.try_send(set.collect());
            }
            Command::Stats(reply) => {
                let _ = reply.try_send(self.stats());
            }
            Command::Metrics(reply) => {
                let _ = reply.try_send(self.metrics_snapshot());
            }
            Command::CloseAll(reply) => {
                self.ep.close_all(now);
                let _ = reply.try_send(());
            }
        }
    }

    fn io(&mut self) -> &mut crate::metrics::IoCounters {
        &mut self.metrics.io
    }

    fn dispatch_events(&mut self, now: Instant) -> Dispatched {
        let mut dispatched = Dispatched::default();
        while let Some(event) = self.ep.poll_event() {
            dispatched.events += 1;
            if !matches!(event, ClientEvent::Response { .. }) {
                dispatched.due += 1;
            }
            match event {
                ClientEvent::Response {
                    id,
                    response,
                    latency,
                } => {
                    if let Some(Waiter {
                        reply: Reply::Unary(tx),
                        synapse,
                        started,
                        ..
                    }) = self.finish(id)
                    {
                        let outcome = if response.success {
                            Outcome::Ok
                        } else {
                            Outcome::Error
                        };
                        let took = now.saturating_duration_since(started);
                        self.metrics.record(synapse, outcome, Some(took));
                        let _ = tx.send(UnaryOutcome(Ok(QuicResponse {
                            success: response.success,
                            data: response.data,
                            latency,
                            error: response.error,
                        })));
                    }
                }
                ClientEvent::Chunk { id, data } => {
                    if let Some(Waiter {
                        reply: Reply::Stream(tx),
                        synapse,
                        ..
                    }) = self.waiters.get(&id)
                    {
                        self.metrics.chunk(*synapse, data.len());
                        let _ = tx.try_send(StreamMsg::Chunk(data));
                    }
                }
                ClientEvent::StreamEnd { id, .. } => {
                    if let Some(Waiter {
                        reply: Reply::Stream(tx),
                        synapse,
                        started,
                        ..
                    }) = self.finish(id)
                    {
                        let took = now.saturating_duration_since(started);
                        self.metrics.record(synapse, Outcome::Ok, Some(took));
                        let _ = tx.try_send(StreamMsg::End);
                    }
                }
                ClientEvent::RequestFailed { id, error } => {
                    if let Some(waiter) = self.finish(id) {
                        let error = LightningError::from(error);
                        self.metrics
                            .record(waiter.synapse, Outcome::of_error(&error), None);
                        waiter.fail(error);
                    }
                }
                ClientEvent::Authenticated { addr, hotkey } => {
                    self.metrics.handshakes_ok += 1;
                    self.settle_connects(addr, &hotkey, None);
                }
                ClientEvent::HandshakeFailed {
                    addr,
                    hotkey,
                    error,
                } => {
                    tracing::debug!(%addr, %hotkey, "handshake failed: {error}");
                    self.metrics
                        .handshakes_failed
                        .add(handshake_failure(&error), 1);
                    self.settle_connects(addr, &hotkey, Some(&error.into()));
                }
                ClientEvent::ConnectionLost { addr, reason } => {
                    tracing::debug!(%addr, "connection lost: {reason}");
                    self.metrics.closed.record(&reason.to_string());
                }
            }
        }
        dispatched
    }

    fn begin_shutdown(&mut self, now: Instant) {
        self.ep.close_all(now);
        for (_, waiter) in self.waiters.drain() {
            waiter.fail(LightningError::Closed);
        }
        self.tickets.clear();
        self.connects.clear();
    }

    fn shutdown_complete(&mut self, _now: Instant) -> bool {
        // The close frames have been flushed; peers that miss them time out idle.
        true
    }

    fn stop_requested(&self) -> bool {
        false
    }

    fn in_flight(&self) -> usize {
        self.waiters.len()
    }
}

/// A bounded label for why a handshake failed.
fn handshake_failure(e: &lightning_proto::endpoint::ClientError) -> &'static str {
    use lightning_proto::endpoint::ClientError;
    match e {
        ClientError::Handshake(h) => h.reason_code(),
        ClientError::HandshakeTimeout => "timeout",
        ClientError::HandshakeProtocol(_) => "protocol",
        ClientError::ConnectionLost(_) => "connection_lost",
        ClientError::Connect(_)
        | ClientError::ConnectTimeout(_)
        | ClientError::Reconnect(_)
        | ClientError::TooManyConnections(_) => "connect",
        _ => "other",
    }
}
