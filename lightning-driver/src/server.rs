//! `LightningServer`: the miner side. Handlers registered by synapse name, driven by one
//! endpoint task that owns the sans-IO [`lightning_proto::endpoint::Server`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lightning_proto::endpoint::{
    AnswerError, CancelReason, ConnId, EcnCodepoint, IncomingRequest, RequestId, ResetSecret,
    Server, ServerConfig, ServerEvent, ServerStats, SynapseKind, Transmit,
};
use lightning_proto::identity::Signer;
use lightning_proto::idhash::IdMap;
use lightning_proto::message::DataMap;
use lightning_proto::tls::TlsIdentity;
use serde::{de::DeserializeOwned, Serialize};

use crate::cancel::{cancel_pair, CancelGuard, CancelSignal};
use crate::driver::{Driver, Role};
use crate::error::{LightningError, Result};
use crate::handler::{self, BytesAhead, ChunkSink, Handler, RequestContext};
use crate::identity::{os_seed, unix_ms, Identity};
use crate::runtime::{Runtime, Timer};
use crate::socket::{EndpointSocket, SocketBuffers, DEFAULT_SOCKET_BUFFER};

/// How long `stop` waits for connections to close before giving up on stragglers.
const STOP_GRACE: Duration = Duration::from_secs(2);

type PermitResolver =
    Arc<dyn Fn() -> handler::BoxFuture<std::result::Result<HashSet<String>, String>> + Send + Sync>;
type SourceResolver = Arc<
    dyn Fn() -> handler::BoxFuture<std::result::Result<Option<HashSet<IpAddr>>, String>>
        + Send
        + Sync,
>;
type HandshakeObserver = Arc<dyn Fn(&str, SocketAddr) + Send + Sync>;

// ----- builder ------------------------------------------------------------------------------

/// Configures and starts a [`LightningServer`].
pub struct ServerBuilder<R: Runtime> {
    runtime: R,
    config: ServerConfig,
    identity: Option<Result<Identity>>,
    tls: Option<TlsIdentity>,
    bind: SocketAddr,
    socket_buffer: usize,
    rng_seed: Option<[u8; 32]>,
    handlers: HashMap<String, Handler>,
    permitted: Option<HashSet<String>>,
    permit_resolver: Option<(PermitResolver, Duration)>,
    allowlist: Option<HashSet<IpAddr>>,
    source_resolver: Option<(SourceResolver, Duration)>,
    observer: Option<HandshakeObserver>,
}

impl<R: Runtime> std::fmt::Debug for ServerBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("bind", &self.bind)
            .field("config", &self.config)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime + Default> Default for ServerBuilder<R> {
    fn default() -> Self {
        Self::with_runtime(R::default())
    }
}

impl<R: Runtime + Default> ServerBuilder<R> {
    /// A builder on the adapter's default runtime handle.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<R: Runtime> ServerBuilder<R> {
    /// A builder on an explicit runtime handle.
    pub fn with_runtime(runtime: R) -> Self {
        Self {
            runtime,
            config: ServerConfig::default(),
            identity: None,
            tls: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 8091)),
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            rng_seed: None,
            handlers: HashMap::new(),
            permitted: None,
            permit_resolver: None,
            allowlist: None,
            source_resolver: None,
            observer: None,
        }
    }

    /// Signs as the miner whose key derives from `seed`.
    pub fn seed(self, seed: [u8; 32]) -> Self {
        self.identity(Identity::from_seed(&seed))
    }

    /// Signs as a hotkey from a bittensor wallet directory.
    pub fn wallet(mut self, wallets_dir: impl AsRef<Path>, wallet: &str, hotkey: &str) -> Self {
        self.identity = Some(Identity::from_wallet(wallets_dir.as_ref(), wallet, hotkey));
        self
    }

    /// Signs with any [`Signer`] for `hotkey`.
    pub fn signer(self, hotkey: impl Into<String>, signer: Arc<dyn Signer>) -> Self {
        self.identity(Identity::from_signer(hotkey, signer))
    }

    /// Signs as `identity`.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(Ok(identity));
        self
    }

    /// The TLS certificate to present (a fresh self-signed one by default).
    pub fn tls_identity(mut self, tls: TlsIdentity) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Replaces the whole endpoint configuration (PROTOCOL §9.2 plus our limits).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Edits the configuration in place.
    pub fn configure(mut self, edit: impl FnOnce(&mut ServerConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// Address to listen on (`0.0.0.0:8091` by default; port 0 picks a free one).
    pub fn bind_addr(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// UDP socket buffers asked from the kernel (4 MiB).
    pub fn socket_buffer_bytes(mut self, n: usize) -> Self {
        self.socket_buffer = n;
        self
    }

    /// Seeds the core's random choices (certificate key, nonces, connection IDs).
    pub fn rng_seed(mut self, seed: [u8; 32]) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// A synchronous handler. It runs inline on the endpoint task, which makes it the
    /// fastest kind for quick work (echo, lookups); anything slow belongs in
    /// [`async_handler`](Self::async_handler). A panic answers `request processing failed`.
    pub fn handler<F, E>(mut self, synapse: impl Into<String>, f: F) -> Self
    where
        F: Fn(DataMap, RequestContext) -> std::result::Result<DataMap, E> + Send + Sync + 'static,
        E: Display,
    {
        self.handlers.insert(synapse.into(), handler::sync(f));
        self
    }

    /// An async handler. Its future is polled once on the endpoint task: if it finishes
    /// without waiting, it is answered there at once; otherwise it continues as its own task,
    /// dropped if the request is cancelled. As with any async code, long computation before
    /// the first `.await` blocks the thread it runs on (here, the endpoint): move it to a
    /// blocking pool.
    pub fn async_handler<F, Fut, E>(mut self, synapse: impl Into<String>, f: F) -> Self
    where
        F: Fn(DataMap, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<DataMap, E>> + Send + 'static,
        E: Display,
    {
        self.handlers
            .insert(synapse.into(), handler::asynchronous(f));
        self
    }

    /// A streaming handler: writes chunks to the [`ChunkSink`]; `Ok` ends the stream with
    /// success, `Err` with `stream processing failed`.
    pub fn streaming_handler<F, Fut, E>(mut self, synapse: impl Into<String>, f: F) -> Self
    where
        F: Fn(DataMap, RequestContext, ChunkSink) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Display,
    {
        self.handlers.insert(synapse.into(), handler::streaming(f));
        self
    }

    /// A synchronous handler on typed values: the data map is decoded into `Req` by field
    /// names and `Resp` encoded back the same way.
    pub fn typed_handler<Req, Resp, F, E>(mut self, synapse: impl Into<String>, f: F) -> Self
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: Fn(Req, RequestContext) -> std::result::Result<Resp, E> + Send + Sync + 'static,
        E: Display,
    {
        self.handlers.insert(synapse.into(), handler::typed(f));
        self
    }

    /// An async handler on typed values.
    pub fn typed_async_handler<Req, Resp, F, Fut, E>(
        mut self,
        synapse: impl Into<String>,
        f: F,
    ) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(Req, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Resp, E>> + Send + 'static,
        E: Display,
    {
        self.handlers
            .insert(synapse.into(), handler::typed_async(f));
        self
    }

    /// Only these validator hotkeys may authenticate (turns on `require_validator_permit`).
    pub fn permitted_validators(mut self, hotkeys: impl IntoIterator<Item = String>) -> Self {
        self.config.require_validator_permit = true;
        self.permitted = Some(hotkeys.into_iter().collect());
        self
    }

    /// Resolves the permitted validator set before serving and then every `refresh`
    /// (turns on `require_validator_permit`). A failed resolution keeps the previous set.
    pub fn permit_resolver<F, Fut, E>(mut self, refresh: Duration, resolve: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<HashSet<String>, E>> + Send + 'static,
        E: Display,
    {
        self.config.require_validator_permit = true;
        let resolve = Arc::new(resolve);
        self.permit_resolver = Some((
            Arc::new(move || {
                let fut = resolve();
                Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
            }),
            refresh,
        ));
        self
    }

    /// Only these source IPs may open connections (others are dropped silently).
    pub fn source_allowlist(mut self, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        self.allowlist = Some(ips.into_iter().collect());
        self
    }

    /// Resolves the source allow-list before serving and then every `refresh`. `Ok(None)`
    /// means "no enforcement" (btlightning's `Bypass`); a failure keeps the previous policy.
    pub fn source_resolver<F, Fut, E>(mut self, refresh: Duration, resolve: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Option<HashSet<IpAddr>>, E>> + Send + 'static,
        E: Display,
    {
        let resolve = Arc::new(resolve);
        self.source_resolver = Some((
            Arc::new(move || {
                let fut = resolve();
                Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
            }),
            refresh,
        ));
        self
    }

    /// Called on the endpoint task after each successful validator handshake.
    pub fn on_handshake(
        mut self,
        observe: impl Fn(&str, SocketAddr) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observe));
        self
    }

    /// Resolves permits and the allow-list once, binds, and starts serving.
    pub async fn start(self) -> Result<LightningServer> {
        let identity = self
            .identity
            .ok_or_else(|| LightningError::Config("No signer configured".into()))??;
        if self.config.require_validator_permit
            && self.permitted.is_none()
            && self.permit_resolver.is_none()
        {
            return Err(LightningError::Config(
                "require_validator_permit needs a permitted set or a permit resolver".into(),
            ));
        }
        let mut permitted = self.permitted.clone().unwrap_or_default();
        if let Some((resolve, _)) = &self.permit_resolver {
            match resolve().await {
                Ok(set) => permitted.extend(set),
                Err(e) => tracing::warn!("validator permit resolution failed: {e}"),
            }
        }
        let mut allowlist = self.allowlist.clone();
        if let Some((resolve, _)) = &self.source_resolver {
            match resolve().await {
                Ok(policy) => allowlist = policy,
                // Fail closed, as the reference does, until a resolution succeeds.
                Err(e) => {
                    tracing::warn!("source allow-list resolution failed: {e}");
                    allowlist = Some(allowlist.unwrap_or_default());
                }
            }
        }

        let mut config = self.config.clone();
        if config.stateless_reset_secret.is_none() {
            // A miner restarted on the same port then resets its predecessor's connections
            // at their next packet, and validators reconnect at once (not after their idle
            // timeout).
            config.stateless_reset_secret =
                identity.reset_secret(self.bind.port()).map(ResetSecret);
        }
        let now = Instant::now();
        let mut endpoint = Server::new(
            config,
            identity.hotkey.clone(),
            identity.signer.clone(),
            self.tls,
            self.rng_seed.unwrap_or_else(os_seed),
            now,
            unix_ms(),
        )?;
        for (name, h) in &self.handlers {
            endpoint.register_synapse(name.clone(), synapse_kind(h));
        }
        if self.config.require_validator_permit {
            endpoint.set_permitted_validators(permitted);
        }
        endpoint.set_source_allowlist(allowlist);
        let fingerprint = endpoint.fingerprint().to_string();

        let (socket, buffers) = EndpointSocket::bind(&self.runtime, self.bind, self.socket_buffer)
            .map_err(|e| LightningError::Local(format!("cannot bind {}: {e}", self.bind)))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| LightningError::Local(e.to_string()))?;
        let (tx, rx) = async_channel::unbounded();
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        let role = ServerRole {
            ep: endpoint,
            runtime: self.runtime.clone(),
            handlers: self.handlers,
            commands: tx.downgrade(),
            inflight: IdMap::default(),
            observer: self.observer,
            stop: false,
            stop_deadline: None,
            stop_replies: Vec::new(),
            _done: done_tx,
        };
        let driver = Driver::new(&self.runtime, role, socket, rx);
        self.runtime.spawn(driver);

        if let Some((resolve, every)) = self.permit_resolver {
            let commands = tx.downgrade();
            spawn_refresh(&self.runtime, every, commands, move || {
                let resolve = resolve.clone();
                async move { resolve().await.map(Command::SetPermitted) }
            });
        }
        if let Some((resolve, every)) = self.source_resolver {
            let commands = tx.downgrade();
            spawn_refresh(&self.runtime, every, commands, move || {
                let resolve = resolve.clone();
                async move { resolve().await.map(Command::SetAllowlist) }
            });
        }

        Ok(LightningServer {
            commands: tx,
            done: done_rx,
            local_addr,
            hotkey: identity.hotkey,
            fingerprint,
            buffers,
        })
    }
}

/// How the core frames a handler's answers.
fn synapse_kind(handler: &Handler) -> SynapseKind {
    match handler {
        Handler::Streaming(_) => SynapseKind::Streaming,
        _ => SynapseKind::Unary,
    }
}

/// Runs `resolve` every `every` and forwards the result, until the server is gone.
fn spawn_refresh<R, F, Fut>(
    runtime: &R,
    every: Duration,
    commands: async_channel::WeakSender<Command>,
    resolve: F,
) where
    R: Runtime,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<Command, String>> + Send + 'static,
{
    let mut timer = runtime.timer(Instant::now() + every);
    runtime.spawn(async move {
        loop {
            futures_lite::future::poll_fn(|cx| timer.poll_elapsed(cx)).await;
            if commands.upgrade().is_none() {
                return;
            }
            match resolve().await {
                Ok(command) => match commands.upgrade() {
                    Some(tx) => {
                        let _ = tx.try_send(command);
                    }
                    None => return,
                },
                Err(e) => tracing::warn!("policy refresh failed, keeping the previous one: {e}"),
            }
            timer.reset(Instant::now() + every);
        }
    });
}

// ----- handle -------------------------------------------------------------------------------

/// A running miner endpoint. Dropping it stops the server once in-flight handlers finish.
#[derive(Debug)]
pub struct LightningServer {
    commands: async_channel::Sender<Command>,
    done: async_channel::Receiver<()>,
    local_addr: SocketAddr,
    hotkey: String,
    fingerprint: String,
    buffers: SocketBuffers,
}

/// A snapshot of the server's state.
#[derive(Debug, Clone, Default)]
pub struct ServerSnapshot {
    /// Counters since start.
    pub stats: ServerStats,
    /// Open QUIC connections.
    pub connections: usize,
    /// Connections that have not authenticated yet.
    pub unauthenticated: usize,
    /// Authenticated validators and their connection.
    pub validators: Vec<(String, ConnId)>,
    /// Nonces held by the replay cache.
    pub active_nonces: usize,
    /// Requests being handled.
    pub requests_in_flight: usize,
    /// Bytes queued for sending.
    pub queued_bytes: usize,
    /// Request bytes reserved by requests being received (bounded by
    /// `max_request_bytes_total`).
    pub reserved_request_bytes: u64,
    /// Request streams waiting, unread, for that budget.
    pub parked_streams: usize,
}

impl LightningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The miner hotkey.
    pub fn hotkey(&self) -> &str {
        &self.hotkey
    }

    /// Fingerprint of the TLS certificate as signed in handshakes (base64 BLAKE2b-256 of the DER).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The socket buffer sizes the kernel granted.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    fn send(&self, command: Command) -> Result<()> {
        self.commands
            .try_send(command)
            .map_err(|_| LightningError::Closed)
    }

    /// A snapshot of counters and tables.
    pub async fn stats(&self) -> Result<ServerSnapshot> {
        let (reply, rx) = async_channel::bounded(1);
        self.send(Command::Stats(reply))?;
        rx.recv().await.map_err(|_| LightningError::Closed)
    }

    /// Replaces the permitted validator set (effective for new handshakes).
    pub fn set_permitted_validators(&self, hotkeys: HashSet<String>) -> Result<()> {
        self.send(Command::SetPermitted(hotkeys))
    }

    /// Replaces the source allow-list (`None`: accept any source).
    pub fn set_source_allowlist(&self, ips: Option<HashSet<IpAddr>>) -> Result<()> {
        self.send(Command::SetAllowlist(ips))
    }

    /// Sends one handler change and waits until the endpoint task has applied it, so a
    /// request sent after this returns is routed by the new table.
    async fn set_handler(&self, synapse: String, handler: Option<Handler>) -> Result<bool> {
        let (reply, rx) = async_channel::bounded(1);
        self.send(Command::SetHandler {
            synapse,
            handler,
            reply,
        })?;
        rx.recv().await.map_err(|_| LightningError::Closed)
    }

    /// Registers (or replaces) a synchronous handler on the running server; see
    /// [`ServerBuilder::handler`]. Returns whether a handler of that name was replaced.
    /// Requests already running finish with the handler they started with.
    pub async fn register_handler<F, E>(&self, synapse: impl Into<String>, f: F) -> Result<bool>
    where
        F: Fn(DataMap, RequestContext) -> std::result::Result<DataMap, E> + Send + Sync + 'static,
        E: Display,
    {
        self.set_handler(synapse.into(), Some(handler::sync(f)))
            .await
    }

    /// Registers (or replaces) an async handler on the running server; see
    /// [`ServerBuilder::async_handler`]. Returns whether a handler was replaced.
    pub async fn register_async_handler<F, Fut, E>(
        &self,
        synapse: impl Into<String>,
        f: F,
    ) -> Result<bool>
    where
        F: Fn(DataMap, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<DataMap, E>> + Send + 'static,
        E: Display,
    {
        self.set_handler(synapse.into(), Some(handler::asynchronous(f)))
            .await
    }

    /// Registers (or replaces) a streaming handler on the running server; see
    /// [`ServerBuilder::streaming_handler`]. Returns whether a handler was replaced.
    pub async fn register_streaming_handler<F, Fut, E>(
        &self,
        synapse: impl Into<String>,
        f: F,
    ) -> Result<bool>
    where
        F: Fn(DataMap, RequestContext, ChunkSink) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Display,
    {
        self.set_handler(synapse.into(), Some(handler::streaming(f)))
            .await
    }

    /// Removes a handler from the running server: later requests for it are answered
    /// `unrecognized synapse type`, running ones finish. Returns whether it was registered.
    pub async fn unregister_handler(&self, synapse: &str) -> Result<bool> {
        self.set_handler(synapse.to_string(), None).await
    }

    /// Closes every connection (reason `server_shutdown`), cancels running handlers, and
    /// waits until the endpoint task has finished (at most about two seconds).
    pub async fn stop(&self) -> Result<()> {
        let (reply, rx) = async_channel::bounded(1);
        if self.send(Command::Stop(reply)).is_ok() {
            let _ = rx.recv().await;
        }
        // The task drops its end of `done` when it exits.
        let _ = self.done.recv().await;
        Ok(())
    }

    /// Waits until the server stops (after [`stop`](Self::stop) from another clone of the
    /// future, or never). For `serve_forever`-style mains.
    pub async fn serve_forever(&self) {
        let _ = self.done.recv().await;
    }
}

// ----- the endpoint task's side -------------------------------------------------------------

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
    Stop(async_channel::Sender<()>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Respond { .. } => "Respond",
            Self::Chunk { .. } => "Chunk",
            Self::EndStream { .. } => "EndStream",
            Self::SetPermitted(_) => "SetPermitted",
            Self::SetAllowlist(_) => "SetAllowlist",
            Self::SetHandler { .. } => "SetHandler",
            Self::Stats(_) => "Stats",
            Self::Stop(_) => "Stop",
        })
    }
}

/// Chunks a streaming handler sent that the core's queue could not take yet.
struct StreamOut {
    credits: Option<async_channel::Sender<()>>,
    /// Shared with the handler's sink: bytes sent and not yet in the core's queue.
    ahead: Arc<BytesAhead>,
    overflow: VecDeque<Bytes>,
    end: Option<std::result::Result<(), String>>,
}

impl Drop for StreamOut {
    fn drop(&mut self) {
        // The stream is gone: a handler waiting for room must see its sink closed.
        self.credits = None;
        self.ahead.wake();
    }
}

/// A request handed to an async or streaming handler.
struct Inflight {
    /// Dropping it tells the handler task to stop.
    _cancel: CancelGuard,
    stream: Option<StreamOut>,
}

struct ServerRole<R: Runtime> {
    ep: Server,
    runtime: R,
    handlers: HashMap<String, Handler>,
    /// Weak, so that handler tasks do not keep a dropped server alive.
    commands: async_channel::WeakSender<Command>,
    inflight: IdMap<RequestId, Inflight>,
    observer: Option<HandshakeObserver>,
    stop: bool,
    stop_deadline: Option<Instant>,
    stop_replies: Vec<async_channel::Sender<()>>,
    /// Dropped when the task ends, which is what `stop` and `serve_forever` wait for.
    _done: async_channel::Sender<()>,
}

impl<R: Runtime> ServerRole<R> {
    /// Installs or removes one handler, keeping the core's synapse table (which answers
    /// `unrecognized synapse type` on its own) in step with ours. Requests already running
    /// keep the handler they started with.
    fn set_handler(&mut self, synapse: String, handler: Option<Handler>) -> bool {
        match handler {
            Some(h) => {
                self.ep.register_synapse(synapse.clone(), synapse_kind(&h));
                self.handlers.insert(synapse, h).is_some()
            }
            None => {
                self.ep.unregister_synapse(&synapse);
                self.handlers.remove(&synapse).is_some()
            }
        }
    }

    fn on_request(&mut self, now: Instant, req: IncomingRequest) {
        let Some(handler) = self.handlers.get(&req.synapse_type).cloned() else {
            // Unregistered names are answered by the core; this is a race with nothing.
            return;
        };
        let id = req.id;
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
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(req.data, ctx)))
                    .unwrap_or_else(|_| Err("handler panicked".into()));
                self.answer(now, id, result);
            }
            Handler::Async(f) => {
                let Some(commands) = self.commands.upgrade() else {
                    return;
                };
                let (cancel_tx, cancel_rx) = cancel_pair();
                ctx.cancel = Some(cancel_rx.clone());
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
                    self.answer(now, id, result);
                    return;
                }
                self.inflight.insert(
                    id,
                    Inflight {
                        _cancel: cancel_tx,
                        stream: None,
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
                // The core queues the chunks (bounded in count and bytes); here a handler
                // may be `streaming_channel_buffer` chunks and `BytesAhead::LIMIT` bytes
                // ahead of what the core has taken, so a validator that does not read
                // holds the handler, not our memory.
                let capacity = self.ep.config().streaming_channel_buffer;
                let ahead = Arc::new(BytesAhead::default());
                let (credit_tx, credit_rx) = async_channel::bounded::<()>(capacity);
                for _ in 0..capacity {
                    let _ = credit_tx.try_send(());
                }
                ctx.cancel = Some(cancel_rx.clone());
                self.inflight.insert(
                    id,
                    Inflight {
                        _cancel: cancel_tx,
                        stream: Some(StreamOut {
                            credits: Some(credit_tx),
                            ahead: ahead.clone(),
                            overflow: VecDeque::new(),
                            end: None,
                        }),
                    },
                );
                let sink = ChunkSink {
                    id,
                    credits: credit_rx,
                    ahead,
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
    fn answer(
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

    /// Moves queued chunks into the core while it has room; returns credit to the handler
    /// for each one taken; sends the end once every chunk is in.
    fn pump_stream(&mut self, now: Instant, id: RequestId) {
        let Some(inflight) = self.inflight.get_mut(&id) else {
            return;
        };
        let Some(out) = inflight.stream.as_mut() else {
            return;
        };
        while let Some(chunk) = out.overflow.front() {
            // A clone of `Bytes` is a reference count, so a refused chunk stays queued.
            match self.ep.send_chunk(now, id, chunk.clone()) {
                Ok(()) => {
                    let len = chunk.len() as u64;
                    out.overflow.pop_front();
                    out.ahead.taken(len);
                    if let Some(credits) = &out.credits {
                        let _ = credits.try_send(());
                    }
                }
                // StreamWritable resumes us.
                Err(AnswerError::Full) => return,
                Err(e) => {
                    tracing::debug!(?id, "chunk dropped: {e}");
                    self.inflight.remove(&id);
                    return;
                }
            }
        }
        if let Some(result) = out.end.take() {
            self.inflight.remove(&id);
            if let Err(e) = &result {
                tracing::debug!(?id, "streaming handler failed: {e}");
                if let Some(message) = crate::handler::peer_message(e) {
                    let _ = self.ep.refuse(now, id, message);
                    return;
                }
            }
            let _ = self.ep.end_stream(now, id, result);
        }
    }

    fn on_chunk(&mut self, now: Instant, id: RequestId, data: Bytes) {
        if let Some(out) = self.inflight.get_mut(&id).and_then(|i| i.stream.as_mut()) {
            out.overflow.push_back(data);
            self.pump_stream(now, id);
        }
    }

    fn snapshot(&self) -> ServerSnapshot {
        ServerSnapshot {
            stats: self.ep.stats(),
            connections: self.ep.connection_count(),
            unauthenticated: self.ep.unauthenticated_count(),
            validators: self
                .ep
                .validators()
                .map(|(hk, conn)| (hk.to_string(), conn))
                .collect(),
            active_nonces: self.ep.active_nonce_count(),
            requests_in_flight: self.ep.requests_in_flight(),
            queued_bytes: self.ep.queued_bytes(),
            reserved_request_bytes: self.ep.reserved_request_bytes(),
            parked_streams: self.ep.parked_streams(),
        }
    }
}

/// Answers for a handler task that panicked (the task is dropped without finishing).
struct AnswerGuard {
    id: RequestId,
    commands: async_channel::Sender<Command>,
    streaming: bool,
    armed: bool,
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

    fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        self.ep.handle_datagram(now, remote, local_ip, ecn, data);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.ep.poll_timeout(), self.stop_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn set_max_gso_segments(&mut self, n: usize) {
        self.ep.set_max_gso_segments(n);
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Respond { id, result } => {
                self.inflight.remove(&id);
                self.answer(now, id, result);
            }
            Command::Chunk { id, data } => self.on_chunk(now, id, data),
            Command::EndStream { id, result } => {
                if let Some(out) = self.inflight.get_mut(&id).and_then(|i| i.stream.as_mut()) {
                    out.end = Some(result);
                    out.credits = None;
                    self.pump_stream(now, id);
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
            Command::Stop(reply) => {
                self.stop = true;
                self.stop_replies.push(reply);
            }
        }
    }

    fn dispatch_events(&mut self, now: Instant) -> usize {
        let mut events = 0;
        while let Some(event) = self.ep.poll_event() {
            events += 1;
            match event {
                ServerEvent::Request(req) => self.on_request(now, req),
                ServerEvent::RequestCancelled { id, reason } => {
                    if reason != CancelReason::ConnectionLost {
                        tracing::debug!(?id, ?reason, "request cancelled");
                    }
                    self.inflight.remove(&id);
                }
                ServerEvent::StreamWritable { id } => self.pump_stream(now, id),
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
                    tracing::debug!(%remote, ?validator_hotkey, "handshake rejected: {error}");
                }
                ServerEvent::ConnectionClosed { .. } => {}
            }
        }
        events
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
