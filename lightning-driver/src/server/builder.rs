//! `ServerBuilder`: configures and starts a `LightningServer`.

use super::*;
use crate::error::ConfigCause;

/// Configures and starts a [`LightningServer`].
pub struct ServerBuilder<R: Runtime> {
    pub(super) runtime: R,
    pub(super) config: ServerConfig,
    pub(super) identity: Option<Result<Identity>>,
    pub(super) tls: Option<TlsIdentity>,
    pub(super) bind: SocketAddr,
    pub(super) socket_buffer: usize,
    pub(super) rng_seed: Option<[u8; 32]>,
    pub(super) handlers: HashMap<String, Handler>,
    pub(super) permitted: Option<HashSet<String>>,
    pub(super) permit_resolver: Option<(PermitResolver, Duration)>,
    pub(super) allowlist: Option<HashSet<IpAddr>>,
    pub(super) source_resolver: Option<(SourceResolver, Duration)>,
    pub(super) observer: Option<HandshakeObserver>,
    pub(super) drivers: Option<usize>,
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
            drivers: None,
        }
    }

    crate::builder_common::shared_builder_setters!("miner");

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

    /// How many endpoint drivers serve the port, each on its own task with its own
    /// connections (`docs/multi-driver.md`); 1 to [`MAX_DRIVERS`]. By default
    /// [`default_drivers`]: one per available core, at most 8.
    ///
    /// Several drivers let a miner's QUIC, TLS and dispatch use several cores when many
    /// validators connect; one validator's connection is always served by one driver.
    /// What protects the miner stays global (replay cache, rate and connection limits,
    /// budgets, hotkey replacement). With one driver datagrams go straight from the
    /// socket to the endpoint, with no router in between.
    pub fn drivers(mut self, n: usize) -> Self {
        self.drivers = Some(n);
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
            .ok_or(LightningError::Config(ConfigCause::NoSigner))??;
        if self.config.require_validator_permit
            && self.permitted.is_none()
            && self.permit_resolver.is_none()
        {
            return Err(LightningError::Config(ConfigCause::NoPermitSource));
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
        let drivers = self.drivers.unwrap_or_else(default_drivers);
        if drivers == 0 || drivers > MAX_DRIVERS {
            return Err(LightningError::Config(ConfigCause::Drivers {
                given: drivers,
            }));
        }
        if drivers > 1 {
            // Each driver keeps its own waiting streams: the cap is shared out so that
            // the whole server still waits for at most `max_waiting_requests`.
            config.max_waiting_requests = config.max_waiting_requests.div_ceil(drivers);
            config.max_waiting_requests_per_connection = config
                .max_waiting_requests_per_connection
                .min(config.max_waiting_requests);
        }
        let base_seed = self.rng_seed.unwrap_or_else(os_seed);
        let (sockets, buffers, local_addr) =
            EndpointSocket::bind_endpoints(&self.runtime, self.bind, self.socket_buffer, drivers)?;
        let sockets = sockets.into_iter();

        // Every driver answers with one certificate, one reset secret and one set of
        // handlers; each has its own command queue and random seed.
        let channels: Vec<_> = (0..drivers).map(|_| async_channel::unbounded()).collect();
        let senders: Vec<async_channel::Sender<Command>> =
            channels.iter().map(|(tx, _)| tx.clone()).collect();
        let tls = match (self.tls, drivers) {
            (Some(tls), _) => Some(tls),
            (None, 1) => None,
            (None, _) => Some(TlsIdentity::self_signed(derive_seed(&base_seed, 0xf0))),
        };
        let group = (drivers > 1).then(|| {
            let members = senders
                .iter()
                .map(|tx| group::Member::new(tx.downgrade()))
                .collect();
            Arc::new(group::Group::new(LocalLimits::new(&config), members))
        });
        // Keyed by the reset secret when there is one (derived from the key and the port
        // unless given): a miner restarted with the same key, port and driver count then
        // recognises its predecessor's connection IDs and resets those connections at
        // once, as a single endpoint does.
        let routing_key = derive_seed(
            config
                .stateless_reset_secret
                .as_ref()
                .map_or(&base_seed, |secret| &secret.0),
            0xf1,
        );
        let routing = CidRouting::new(
            drivers as u8,
            u64::from_le_bytes(routing_key[..8].try_into().unwrap_or_default()),
        );
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        let (inbox_txs, inbox_rxs): (Vec<_>, Vec<_>) = (0..drivers)
            .map(|_| async_channel::bounded::<Vec<Datagram>>(group::INBOX_BATCHES))
            .unzip();
        let reader = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let now = Instant::now();
        let mut fingerprint = String::new();
        for (index, ((socket, (tx, rx)), inbox)) in sockets.zip(channels).zip(inbox_rxs).enumerate()
        {
            let seed = if drivers == 1 {
                base_seed
            } else {
                derive_seed(&base_seed, index as u8)
            };
            let mut endpoint = match (&group, &tls) {
                (Some(group), Some(tls)) => Server::new_in_group(
                    config.clone(),
                    identity.hotkey.clone(),
                    identity.signer.clone(),
                    tls.clone(),
                    seed,
                    now,
                    unix_ms(),
                    GroupMember {
                        index: index as u8,
                        routing,
                        limits: Box::new(group::GroupLimits {
                            group: group.clone(),
                            index,
                        }),
                        group_secret: derive_seed(&base_seed, 0xf2),
                    },
                )?,
                _ => Server::new(
                    config.clone(),
                    identity.hotkey.clone(),
                    identity.signer.clone(),
                    tls.clone(),
                    seed,
                    now,
                    unix_ms(),
                )?,
            };
            let mut handlers = Vec::new();
            let mut metrics = ServerCounters::default();
            // Sorted, so that every driver gives each synapse the same index.
            let mut named: Vec<_> = self.handlers.iter().collect();
            named.sort_by(|a, b| a.0.cmp(b.0));
            for (name, h) in named {
                let index = endpoint.register_synapse(name.clone(), synapse_kind(h));
                metrics.register(index.slot(), name);
                install(&mut handlers, index, h.clone());
            }
            if self.config.require_validator_permit {
                endpoint.set_permitted_validators(permitted.clone());
            }
            endpoint.set_source_allowlist(allowlist.clone());
            fingerprint = endpoint.fingerprint().to_string();
            let role = ServerRole {
                ep: endpoint,
                runtime: self.runtime.clone(),
                handlers,
                commands: tx.downgrade(),
                inflight: IdMap::default(),
                observer: self.observer.clone(),
                stop: false,
                stop_deadline: None,
                stop_replies: Vec::new(),
                _done: done_tx.clone(),
                metrics,
                group: group.clone().map(|g| (g, index)),
            };
            let driver = Driver::new(&self.runtime, role, socket, rx);
            self.runtime.spawn(if drivers == 1 {
                driver
            } else {
                // The first driver reads the socket for all of them to begin with; the
                // role moves to whichever driver gets most of the traffic.
                driver.with_inbox(inbox).with_router(Router::new(
                    routing,
                    index,
                    reader.clone(),
                    inbox_txs.clone(),
                ))
            });
        }
        drop(done_tx);

        let weak: Vec<_> = senders.iter().map(|tx| tx.downgrade()).collect();
        if let Some((resolve, every)) = self.permit_resolver {
            spawn_refresh(&self.runtime, every, weak.clone(), move || {
                let resolve = resolve.clone();
                async move { resolve().await.map(Policy::Permitted) }
            });
        }
        if let Some((resolve, every)) = self.source_resolver {
            spawn_refresh(&self.runtime, every, weak, move || {
                let resolve = resolve.clone();
                async move { resolve().await.map(Policy::Allowlist) }
            });
        }

        Ok(LightningServer {
            drivers: senders,
            done: done_rx,
            local_addr,
            hotkey: identity.hotkey,
            fingerprint,
            buffers,
        })
    }
}

/// The default number of endpoint drivers: one per available core, at most 8.
pub fn default_drivers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// A seed of its own for `label` (a driver index, or one of the group's secrets), drawn
/// from `base` (splitmix64 over each word: distinct labels give unrelated seeds).
fn derive_seed(base: &[u8; 32], label: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, (word, chunk)) in out.chunks_mut(8).zip(base.chunks(8)).enumerate() {
        let mut x = u64::from_le_bytes(chunk.try_into().unwrap_or_default())
            ^ (u64::from(label) << 8 | i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        word.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// A policy a resolver refreshes, sent to every driver.
#[derive(Clone)]
pub(super) enum Policy {
    Permitted(HashSet<String>),
    Allowlist(Option<HashSet<IpAddr>>),
}

impl From<Policy> for Command {
    fn from(policy: Policy) -> Command {
        match policy {
            Policy::Permitted(set) => Command::SetPermitted(set),
            Policy::Allowlist(list) => Command::SetAllowlist(list),
        }
    }
}

/// How the core frames a handler's answers.
pub(super) fn synapse_kind(handler: &Handler) -> SynapseKind {
    match handler {
        Handler::Streaming(_) => SynapseKind::Streaming,
        _ => SynapseKind::Unary,
    }
}

/// Runs `resolve` every `every` and forwards the result, until the server is gone.
pub(super) fn spawn_refresh<R, F, Fut>(
    runtime: &R,
    every: Duration,
    commands: Vec<async_channel::WeakSender<Command>>,
    resolve: F,
) where
    R: Runtime,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<Policy, String>> + Send + 'static,
{
    let mut timer = runtime.timer(Instant::now() + every);
    runtime.spawn(async move {
        loop {
            futures_lite::future::poll_fn(|cx| timer.poll_elapsed(cx)).await;
            if commands.iter().all(|c| c.upgrade().is_none()) {
                return;
            }
            match resolve().await {
                Ok(policy) => {
                    let mut any = false;
                    for tx in commands.iter().filter_map(|c| c.upgrade()) {
                        any = true;
                        let _ = tx.try_send(Command::from(policy.clone()));
                    }
                    if !any {
                        return;
                    }
                }
                Err(e) => tracing::warn!("policy refresh failed, keeping the previous one: {e}"),
            }
            timer.reset(Instant::now() + every);
        }
    });
}
