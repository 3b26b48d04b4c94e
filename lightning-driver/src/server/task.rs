//! The endpoint task's side of the server: requests from the sans-IO server handed to
//! handler tasks, their answers and chunks fed back, commands from handles.

use super::*;
use lightning_proto::endpoint::HotkeyHolder;

pub(crate) enum Command {
    Respond {
        id: RequestId,
        result: std::result::Result<DataMap, String>,
    },
    Chunk {
        id: RequestId,
        data: Bytes,
    },
    EndStream {
        id: RequestId,
        result: std::result::Result<(), String>,
    },
    /// A streaming handler gives back `bytes` of chunk credit too small for its next
    /// chunk of `wants` bytes.
    ReturnCredit {
        id: RequestId,
        bytes: u64,
        wants: u64,
    },
    SetPermitted(HashSet<String>),
    SetAllowlist(Option<HashSet<IpAddr>>),
    /// Adds, replaces (`Some`) or removes (`None`) a handler on the running server; the
    /// reply says whether the name was registered before.
    SetHandler {
        synapse: String,
        handler: Option<Handler>,
        reply: async_channel::Sender<bool>,
    },
    Stats(async_channel::Sender<ServerSnapshot>),
    Metrics(async_channel::Sender<ServerMetrics>),
    Stop(async_channel::Sender<()>),
    /// Another driver of the group took `hotkey` over from this driver's connection
    /// `holder`: close it.
    CloseReplaced {
        holder: HotkeyHolder,
        hotkey: String,
    },
    /// Another driver of the group freed budget: retry streams waiting for the totals.
    Nudge,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Respond { .. } => "Respond",
            Self::Chunk { .. } => "Chunk",
            Self::EndStream { .. } => "EndStream",
            Self::ReturnCredit { .. } => "ReturnCredit",
            Self::SetPermitted(_) => "SetPermitted",
            Self::SetAllowlist(_) => "SetAllowlist",
            Self::SetHandler { .. } => "SetHandler",
            Self::Stats(_) => "Stats",
            Self::Metrics(_) => "Metrics",
            Self::Stop(_) => "Stop",
            Self::CloseReplaced { .. } => "CloseReplaced",
            Self::Nudge => "Nudge",
        })
    }
}

/// A streaming handler's side of its stream: the credit its sink spends.
pub(super) struct StreamOut {
    pub(super) credit: Arc<SinkCredit>,
}

impl Drop for StreamOut {
    fn drop(&mut self) {
        // The stream is gone: a handler waiting for room must see its sink closed.
        self.credit.close();
    }
}

/// A request handed to an async or streaming handler.
pub(super) struct Inflight {
    /// Dropping it tells the handler task to stop.
    pub(super) _cancel: CancelGuard,
    pub(super) stream: Option<StreamOut>,
    /// The synapse's slot, for its metrics.
    pub(super) synapse: usize,
    /// When the handler was called.
    pub(super) started: Instant,
}

pub(super) struct ServerRole<R: Runtime> {
    pub(super) ep: Server,
    pub(super) runtime: R,
    /// Indexed by the core's `SynapseIndex`: a request reaches its handler by the index
    /// the core gives it, never by its name.
    pub(super) handlers: Vec<Option<Handler>>,
    /// Weak, so that handler tasks do not keep a dropped server alive.
    pub(super) commands: async_channel::WeakSender<Command>,
    pub(super) inflight: IdMap<RequestId, Inflight>,
    pub(super) observer: Option<HandshakeObserver>,
    pub(super) stop: bool,
    pub(super) stop_deadline: Option<Instant>,
    pub(super) stop_replies: Vec<async_channel::Sender<()>>,
    /// Dropped when the task ends, which is what `stop` and `serve_forever` wait for.
    pub(super) _done: async_channel::Sender<()>,
    pub(super) metrics: ServerCounters,
    /// The group this driver belongs to, and its index there, when several drivers share
    /// the port.
    pub(super) group: Option<(Arc<super::group::Group>, usize)>,
}

impl<R: Runtime> ServerRole<R> {
    /// Installs or removes one handler, keeping the core's synapse table (which answers
    /// `unrecognized synapse type` on its own) in step with ours. Requests already running
    /// keep the handler they started with.
    pub(super) fn set_handler(&mut self, synapse: String, handler: Option<Handler>) -> bool {
        match handler {
            Some(h) => {
                let index = self.ep.register_synapse(synapse.clone(), synapse_kind(&h));
                self.metrics.register(index.slot(), &synapse);
                install(&mut self.handlers, index, h).is_some()
            }
            None => match self.ep.unregister_synapse(&synapse) {
                Some(index) => {
                    self.metrics.unregister(index.slot());
                    self.handlers
                        .get_mut(index.slot())
                        .and_then(Option::take)
                        .is_some()
                }
                None => false,
            },
        }
    }

    pub(super) fn on_request(&mut self, now: Instant, req: IncomingRequest) {
        let Some(handler) = self
            .handlers
            .get(req.synapse.slot())
            .and_then(Option::as_ref)
            .cloned()
        else {
            // Unregistered names are answered by the core; this is a race with nothing.
            return;
        };
        let id = req.id;
        let slot = req.synapse.slot();
        let mut ctx = RequestContext {
            id,
            conn: req.conn,
            validator_hotkey: req.validator_hotkey,
            remote: req.remote,
            synapse_type: req.synapse_type,
            deadline: req.deadline,
            cancel: None,
        };
        match handler {
            Handler::Sync(f) => {
                let started = Instant::now();
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(req.data, ctx)))
                    .unwrap_or_else(|_| Err("handler panicked".into()));
                self.metrics
                    .record(slot, outcome_of(&result), Some(started.elapsed()));
                self.answer(now, id, result);
            }
            Handler::Async(f) => {
                let Some(commands) = self.commands.upgrade() else {
                    return;
                };
                let (cancel_tx, cancel_rx) = cancel_pair();
                ctx.cancel = Some(cancel_rx.clone());
                let started = Instant::now();
                let mut fut = f(req.data, ctx);
                // One inline poll first: a handler that finishes without waiting (an echo, a
                // lookup) is answered here, with no task spawned and no hop between threads.
                // One that waits moves to its own task, which polls it again at once, so the
                // no-op waker used here can lose no wake-up.
                let mut cx = Context::from_waker(Waker::noop());
                let polled =
                    std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
                        .unwrap_or_else(|_| Poll::Ready(Err("handler panicked".into())));
                if let Poll::Ready(result) = polled {
                    self.metrics
                        .record(slot, outcome_of(&result), Some(started.elapsed()));
                    self.answer(now, id, result);
                    return;
                }
                self.inflight.insert(
                    id,
                    Inflight {
                        _cancel: cancel_tx,
                        stream: None,
                        synapse: slot,
                        started,
                    },
                );
                self.runtime.spawn(async move {
                    let guard = AnswerGuard {
                        id,
                        commands,
                        streaming: false,
                        armed: true,
                    };
                    run_until_cancelled(fut, cancel_rx, guard, |id, result| Command::Respond {
                        id,
                        result,
                    })
                    .await;
                });
            }
            Handler::Streaming(f) => {
                let Some(commands) = self.commands.upgrade() else {
                    return;
                };
                let (cancel_tx, cancel_rx) = cancel_pair();
                // The core owns the stream's queue (bounded in chunks and bytes) and
                // grants the handler credit for room in it; the sink waits for credit,
                // so a validator that does not read holds the handler, not our memory.
                let credit = Arc::new(SinkCredit::new(self.ep.config().max_queued_chunk_bytes));
                if let Ok(grant) = self.ep.grant_chunk_credit(now, id) {
                    credit.add(grant);
                }
                ctx.cancel = Some(cancel_rx.clone());
                self.inflight.insert(
                    id,
                    Inflight {
                        _cancel: cancel_tx,
                        stream: Some(StreamOut {
                            credit: credit.clone(),
                        }),
                        synapse: slot,
                        started: Instant::now(),
                    },
                );
                let sink = ChunkSink {
                    id,
                    credit,
                    commands: commands.clone(),
                };
                let fut = f(req.data, ctx, sink);
                self.runtime.spawn(async move {
                    let guard = AnswerGuard {
                        id,
                        commands,
                        streaming: true,
                        armed: true,
                    };
                    run_until_cancelled(fut, cancel_rx, guard, |id, result| Command::EndStream {
                        id,
                        result,
                    })
                    .await;
                });
            }
        }
    }

    /// Answers a unary request whose handler has finished, on the endpoint task or in its
    /// own (the handler's own error text stays local; the peer gets the reference's
    /// generic string).
    pub(super) fn answer(
        &mut self,
        now: Instant,
        id: RequestId,
        result: std::result::Result<DataMap, String>,
    ) {
        if let Err(e) = &result {
            tracing::debug!(?id, "handler failed: {e}");
            if let Some(message) = crate::handler::peer_message(e) {
                let _ = self.ep.refuse(now, id, message);
                return;
            }
        }
        let _ = self.ep.respond(now, id, result);
    }

    /// Hands the core's new grant of chunk room, if any, to request `id`'s handler.
    pub(super) fn grant_credit(&mut self, now: Instant, id: RequestId) {
        let Some(out) = self.inflight.get(&id).and_then(|i| i.stream.as_ref()) else {
            return;
        };
        if let Ok(grant) = self.ep.grant_chunk_credit(now, id) {
            out.credit.add(grant);
        }
    }

    /// A chunk the handler sent within its credit: the core takes it.
    pub(super) fn on_chunk(&mut self, now: Instant, id: RequestId, data: Bytes) {
        let len = data.len() as u64;
        match self.ep.send_chunk(now, id, data) {
            Ok(()) => {
                if let Some(slot) = self.inflight.get(&id).map(|i| i.synapse) {
                    self.metrics.chunk(slot, len);
                }
                self.grant_credit(now, id);
            }
            Err(e) => {
                // The request ended meanwhile (or the chunk cannot be framed): the
                // handler's sink closes.
                tracing::debug!(?id, "chunk dropped: {e}");
                self.inflight.remove(&id);
            }
        }
    }

    /// The handler finished: every chunk it sent is already in the core's queue (they
    /// came before this on the same channel), so the end follows them.
    pub(super) fn on_stream_end(
        &mut self,
        now: Instant,
        id: RequestId,
        result: std::result::Result<(), String>,
    ) {
        let Some(inflight) = self.inflight.remove(&id) else {
            return;
        };
        let took = now.saturating_duration_since(inflight.started);
        self.metrics
            .record(inflight.synapse, outcome_of(&result), Some(took));
        if let Err(e) = &result {
            tracing::debug!(?id, "streaming handler failed: {e}");
            if let Some(message) = crate::handler::peer_message(e) {
                let _ = self.ep.refuse(now, id, message);
                return;
            }
        }
        let _ = self.ep.end_stream(now, id, result);
    }

    pub(super) fn metrics_snapshot(&self) -> ServerMetrics {
        let stats = self.ep.stats();
        let mut handshakes_refused = self.metrics.handshakes_refused.clone();
        // The one refusal that raises no event: a request that did not decode.
        let malformed = stats
            .handshakes_rejected
            .saturating_sub(handshakes_refused.total());
        handshakes_refused.add("malformed", malformed);
        let quic: Vec<_> = self.ep.connection_stats().map(|(_, s)| s).collect();
        ServerMetrics {
            stats,
            connections: self.ep.connection_count(),
            unauthenticated: self.ep.unauthenticated_total(),
            validators: self.ep.validators().count(),
            closed: self.metrics.closed,
            handshakes_refused,
            synapses: self.metrics.synapses(),
            requests_in_flight: self.ep.requests_in_flight(),
            queued_bytes: self.ep.queued_bytes(),
            reserved_request_bytes: self.ep.reserved_request_bytes(),
            parked_streams: self.ep.parked_streams(),
            active_nonces: self.ep.active_nonce_count(),
            io: self.metrics.io,
            path: crate::metrics::PathSummary::from_stats(&quic),
        }
    }

    pub(super) fn snapshot(&self) -> ServerSnapshot {
        let validators: Vec<(String, ConnId)> = self
            .ep
            .validators()
            .map(|(hk, conn)| (hk.to_string(), conn))
            .collect();
        ServerSnapshot {
            drivers: vec![super::DriverShare {
                connections: self.ep.connection_count(),
                validators: validators.len(),
                stats: self.ep.stats(),
            }],
            stats: self.ep.stats(),
            connections: self.ep.connection_count(),
            unauthenticated: self.ep.unauthenticated_total(),
            validators,
            active_nonces: self.ep.active_nonce_count(),
            requests_in_flight: self.ep.requests_in_flight(),
            queued_bytes: self.ep.queued_bytes(),
            reserved_request_bytes: self.ep.reserved_request_bytes(),
            parked_streams: self.ep.parked_streams(),
        }
    }
}

/// Answers for a handler task that panicked (the task is dropped without finishing).
pub(super) struct AnswerGuard {
    pub(super) id: RequestId,
    pub(super) commands: async_channel::Sender<Command>,
    pub(super) streaming: bool,
    pub(super) armed: bool,
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        if self.armed {
            let id = self.id;
            let error = "handler panicked".to_string();
            let _ = self.commands.try_send(if self.streaming {
                Command::EndStream {
                    id,
                    result: Err(error),
                }
            } else {
                Command::Respond {
                    id,
                    result: Err(error),
                }
            });
        }
    }
}

/// Runs a handler future until it finishes or its request is cancelled, then reports.
async fn run_until_cancelled<T>(
    fut: handler::BoxFuture<std::result::Result<T, String>>,
    cancel: CancelSignal,
    mut guard: AnswerGuard,
    answer: impl FnOnce(RequestId, std::result::Result<T, String>) -> Command,
) {
    let outcome = futures_lite::future::or(async { Some(fut.await) }, async {
        cancel.cancelled().await;
        None
    })
    .await;
    guard.armed = false;
    if let Some(result) = outcome {
        let _ = guard.commands.try_send(answer(guard.id, result));
    }
}

impl<R: Runtime> Role for ServerRole<R> {
    type Command = Command;

    type Endpoint = Server;
    const COMMANDS_AFTER_BATCH: bool = false;

    fn endpoint(&mut self) -> &mut Server {
        &mut self.ep
    }

    fn io(&mut self) -> &mut crate::metrics::IoCounters {
        &mut self.metrics.io
    }

    fn own_deadline(&self) -> Option<Instant> {
        self.stop_deadline
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Respond { id, result } => {
                if let Some(inflight) = self.inflight.remove(&id) {
                    let took = now.saturating_duration_since(inflight.started);
                    self.metrics
                        .record(inflight.synapse, outcome_of(&result), Some(took));
                }
                self.answer(now, id, result);
            }
            Command::Chunk { id, data } => self.on_chunk(now, id, data),
            Command::EndStream { id, result } => self.on_stream_end(now, id, result),
            Command::ReturnCredit { id, bytes, wants } => {
                if self.ep.return_chunk_credit(now, id, bytes, wants).is_ok() {
                    self.grant_credit(now, id);
                }
            }
            Command::SetPermitted(set) => self.ep.set_permitted_validators(set),
            Command::SetAllowlist(list) => self.ep.set_source_allowlist(list),
            Command::SetHandler {
                synapse,
                handler,
                reply,
            } => {
                let existed = self.set_handler(synapse, handler);
                let _ = reply.try_send(existed);
            }
            Command::Stats(reply) => {
                let _ = reply.try_send(self.snapshot());
            }
            Command::Metrics(reply) => {
                let _ = reply.try_send(self.metrics_snapshot());
            }
            Command::Stop(reply) => {
                self.stop = true;
                self.stop_replies.push(reply);
            }
            Command::CloseReplaced { holder, hotkey } => {
                self.ep.close_replaced(now, holder, &hotkey);
            }
            Command::Nudge => {
                if let Some((group, index)) = &self.group {
                    group.nudged(*index);
                }
                self.ep.budget_freed_elsewhere(now);
            }
        }
    }

    fn dispatch_events(&mut self, now: Instant) -> Dispatched {
        let mut events = 0;
        while let Some(event) = self.ep.poll_event() {
            events += 1;
            match event {
                ServerEvent::Request(req) => self.on_request(now, req),
                ServerEvent::RequestCancelled { id, reason } => {
                    if reason != CancelReason::ConnectionLost {
                        tracing::debug!(?id, ?reason, "request cancelled");
                    }
                    if let Some(inflight) = self.inflight.remove(&id) {
                        self.metrics
                            .record(inflight.synapse, Outcome::from(reason), None);
                    }
                }
                ServerEvent::StreamWritable { id } => self.grant_credit(now, id),
                ServerEvent::Authenticated {
                    validator_hotkey,
                    remote,
                    ..
                } => {
                    if let Some(observe) = &self.observer {
                        observe(&validator_hotkey, remote);
                    }
                }
                ServerEvent::HandshakeRejected {
                    remote,
                    validator_hotkey,
                    error,
                } => {
                    self.metrics.handshakes_refused.add(error.reason_code(), 1);
                    tracing::debug!(%remote, ?validator_hotkey, "handshake rejected: {error}");
                }
                ServerEvent::ConnectionClosed { reason, .. } => self.metrics.closed.record(&reason),
            }
        }
        // Every miner event is due: requests produce the answers the validator waits for.
        Dispatched {
            events,
            due: events,
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        self.ep.close(now);
        // Dropping the cancel senders stops every handler task.
        self.inflight.clear();
        self.stop_deadline = Some(now + STOP_GRACE);
    }

    fn shutdown_complete(&mut self, now: Instant) -> bool {
        let done = self.ep.connection_count() == 0 || self.stop_deadline.is_some_and(|d| now >= d);
        if done {
            for reply in self.stop_replies.drain(..) {
                let _ = reply.try_send(());
            }
        }
        done
    }

    fn stop_requested(&self) -> bool {
        self.stop
    }

    fn in_flight(&self) -> usize {
        self.inflight.len()
    }
}

/// How a handler's result counts.
fn outcome_of<T>(result: &std::result::Result<T, String>) -> Outcome {
    if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Error
    }
}

/// Puts `handler` at `index` in the handler table; returns the one it replaced.
pub(super) fn install(
    handlers: &mut Vec<Option<Handler>>,
    index: SynapseIndex,
    handler: Handler,
) -> Option<Handler> {
    if handlers.len() <= index.slot() {
        handlers.resize_with(index.slot() + 1, || None);
    }
    handlers[index.slot()].replace(handler)
}
