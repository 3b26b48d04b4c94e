//! `LightningClient`: the validator side. A cheap, cloneable handle that sends commands
//! to the endpoint task, which owns the sans-IO [`lightning_proto::endpoint::Client`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use futures_lite::Stream;
use lightning_proto::endpoint::{
    Client, ClientConfig, ClientEvent, ConnectionStats, EcnCodepoint, HotkeyStatus, RequestId,
    RequestOptions, Transmit,
};
use lightning_proto::identity::Signer;
use lightning_proto::idhash::IdMap;
use lightning_proto::reconnect::ReconnectPolicy;

use crate::checks;
use crate::driver::{Driver, Role};
use crate::error::{LightningError, Result};
use crate::identity::{os_seed, unix_ms, Identity};
use crate::runtime::Runtime;
use crate::socket::{EndpointSocket, SocketBuffers, DEFAULT_SOCKET_BUFFER};
use crate::types::{QuicAxonInfo, QuicRequest, QuicResponse};

// ----- builder ------------------------------------------------------------------------------

/// Configures and starts a [`LightningClient`].
///
/// ```no_run
/// # async fn demo<R: lightning_driver::Runtime + Default>() -> lightning_driver::Result<()> {
/// use lightning_driver::ClientBuilder;
/// let client = ClientBuilder::<R>::new().seed([7; 32]).build()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ClientBuilder<R: Runtime> {
    runtime: R,
    config: ClientConfig,
    identity: Option<Result<Identity>>,
    bind: SocketAddr,
    socket_buffer: usize,
    rng_seed: Option<[u8; 32]>,
}

impl<R: Runtime + Default> Default for ClientBuilder<R> {
    fn default() -> Self {
        Self::with_runtime(R::default())
    }
}

impl<R: Runtime + Default> ClientBuilder<R> {
    /// A builder on the adapter's default runtime handle.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<R: Runtime> ClientBuilder<R> {
    /// A builder on an explicit runtime handle.
    pub fn with_runtime(runtime: R) -> Self {
        Self {
            runtime,
            config: ClientConfig::default(),
            identity: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            rng_seed: None,
        }
    }

    /// Signs as the validator whose key derives from `seed`.
    pub fn seed(self, seed: [u8; 32]) -> Self {
        self.identity(Identity::from_seed(&seed))
    }

    /// Signs as a hotkey from a bittensor wallet directory (see [`Identity::from_wallet`]).
    pub fn wallet(mut self, wallets_dir: impl AsRef<Path>, wallet: &str, hotkey: &str) -> Self {
        self.identity = Some(Identity::from_wallet(wallets_dir.as_ref(), wallet, hotkey));
        self
    }

    /// Signs with any [`Signer`] for `hotkey` (a remote wallet, an HSM, ...).
    pub fn signer(self, hotkey: impl Into<String>, signer: Arc<dyn Signer>) -> Self {
        self.identity(Identity::from_signer(hotkey, signer))
    }

    /// Signs through a callback (see [`Identity::from_callback`]).
    pub fn callback_signer<F>(self, hotkey: impl Into<String>, callback: F) -> Self
    where
        F: Fn(&[u8]) -> std::result::Result<Vec<u8>, String> + Send + Sync + 'static,
    {
        self.identity(Identity::from_callback(hotkey, callback))
    }

    /// Signs as `identity`.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(Ok(identity));
        self
    }

    /// Replaces the whole endpoint configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Time for the QUIC connect, and again for each hotkey's handshake (10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// QUIC idle timeout (150 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.transport.idle_timeout = timeout;
        self
    }

    /// QUIC keep-alive interval (30 s).
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.config.transport.keep_alive_interval = interval;
        self
    }

    /// Reconnect backoff (1 s doubling to 60 s, 5 retries, then a probe every 60 s).
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.config.reconnect = policy;
        self
    }

    /// Miner addresses connected at once (1024).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Largest frame accepted from a miner (64 MiB).
    pub fn max_frame_payload_bytes(mut self, n: u32) -> Self {
        self.config.max_frame_payload_bytes = n;
        self
    }

    /// Largest total of one streaming response (64 MiB).
    pub fn max_stream_payload_bytes(mut self, n: u64) -> Self {
        self.config.max_stream_payload_bytes = n;
        self
    }

    /// Local address to bind (`0.0.0.0:0`; use `[::]:0` to reach IPv6 miners).
    pub fn bind_addr(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// UDP socket buffers asked from the kernel (4 MiB; capped by `net.core.rmem_max`).
    pub fn socket_buffer_bytes(mut self, n: usize) -> Self {
        self.socket_buffer = n;
        self
    }

    /// Seeds the core's random choices (nonces, connection IDs) for reproducible runs.
    /// By default they come from the operating system.
    pub fn rng_seed(mut self, seed: [u8; 32]) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Binds the socket and starts the endpoint task. Must run where the runtime is usable
    /// (inside a tokio runtime for the tokio adapter).
    pub fn build(self) -> Result<LightningClient> {
        let identity = self
            .identity
            .ok_or_else(|| LightningError::Config("No signer configured".into()))??;
        let now = Instant::now();
        let endpoint = Client::new(
            self.config.clone(),
            identity.hotkey.clone(),
            identity.signer.clone(),
            self.rng_seed.unwrap_or_else(os_seed),
            now,
            unix_ms(),
        )?;
        let (socket, buffers) = EndpointSocket::bind(&self.runtime, self.bind, self.socket_buffer)
            .map_err(|e| LightningError::Local(format!("cannot bind {}: {e}", self.bind)))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| LightningError::Local(e.to_string()))?;
        let (tx, rx) = async_channel::unbounded();
        let role = ClientRole {
            ep: endpoint,
            tickets: IdMap::default(),
            waiters: IdMap::default(),
            connects: Vec::new(),
        };
        let driver = Driver::new(&self.runtime, role, socket, rx);
        self.runtime.spawn(driver);
        Ok(LightningClient {
            shared: Arc::new(Shared {
                commands: tx,
                next_ticket: AtomicU64::new(1),
                hotkey: identity.hotkey,
                local_addr,
                buffers,
                consume_batch: (self.config.stream_read_ahead_chunks / 2).max(1),
                max_frame_payload: self.config.max_frame_payload_bytes,
            }),
        })
    }
}

// ----- handle -------------------------------------------------------------------------------

#[derive(Debug)]
struct Shared {
    commands: async_channel::Sender<Command>,
    next_ticket: AtomicU64,
    hotkey: String,
    local_addr: SocketAddr,
    buffers: SocketBuffers,
    consume_batch: usize,
    /// Requests whose frame payload is larger are refused before sending.
    max_frame_payload: u32,
}

impl Shared {
    fn send(&self, command: Command) -> Result<()> {
        self.commands
            .try_send(command)
            .map_err(|_| LightningError::Closed)
    }
}

/// A validator's connection pool to miners. Clone it freely: clones share one endpoint.
/// The endpoint closes its connections when the last clone (and every open stream) is gone.
#[derive(Debug, Clone)]
pub struct LightningClient {
    shared: Arc<Shared>,
}

/// The outcome of connecting to a set of miners.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectReport {
    /// Miners whose hotkey is now authenticated.
    pub authenticated: Vec<QuicAxonInfo>,
    /// Miners that could not be reached or authenticated, with why.
    pub failed: Vec<(QuicAxonInfo, LightningError)>,
}

/// A snapshot of the client's pool.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Addresses with a live, connected QUIC connection.
    pub connections: usize,
    /// Queries and streams in flight.
    pub requests_in_flight: usize,
    /// Per miner address: whether connected, each hotkey's state, and QUIC counters.
    pub peers: Vec<PeerStats>,
}

/// One miner address in [`ClientStats`].
#[derive(Debug, Clone)]
pub struct PeerStats {
    /// The address.
    pub addr: SocketAddr,
    /// Whether the QUIC connection is up.
    pub connected: bool,
    /// Hotkeys known at this address and their state.
    pub hotkeys: Vec<(String, HotkeyStatus)>,
    /// quinn's counters for the connection (RTT, bytes, lost packets, ...).
    pub quic: Option<ConnectionStats>,
}

impl LightningClient {
    /// The validator hotkey this client authenticates as.
    pub fn hotkey(&self) -> &str {
        &self.shared.hotkey
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The socket buffer sizes the kernel granted.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.shared.buffers
    }

    /// Connects to every miner and authenticates each hotkey (one connection per address,
    /// PROTOCOL §8.2). Waits until each has succeeded or failed; never fails as a whole.
    pub async fn initialize_connections(
        &self,
        miners: impl IntoIterator<Item = QuicAxonInfo>,
    ) -> Result<ConnectReport> {
        self.connect(miners, false).await
    }

    /// Reconciles the pool with a fresh miner list (PROTOCOL §8.3): drops hotkeys no longer
    /// listed (closing connections left without hotkeys), resets reconnect backoff for
    /// listed addresses, and connects the new ones. Returns the outcome for every listed
    /// miner.
    pub async fn update_miner_registry(
        &self,
        miners: impl IntoIterator<Item = QuicAxonInfo>,
    ) -> Result<ConnectReport> {
        self.connect(miners, true).await
    }

    async fn connect(
        &self,
        miners: impl IntoIterator<Item = QuicAxonInfo>,
        reconcile: bool,
    ) -> Result<ConnectReport> {
        let mut report = ConnectReport::default();
        let mut targets = Vec::new();
        for miner in miners {
            if let Err(e) = checks::hotkey(&miner.hotkey) {
                report.failed.push((miner, e));
                continue;
            }
            match miner.addr() {
                Ok(addr) => targets.push((addr, miner)),
                Err(e) => report.failed.push((miner, e)),
            }
        }
        let (reply, rx) = async_channel::bounded(1);
        self.shared.send(Command::Connect {
            targets,
            reconcile,
            reply,
        })?;
        let mut outcome = rx.recv().await.map_err(|_| LightningError::Closed)?;
        report.authenticated.append(&mut outcome.authenticated);
        report.failed.append(&mut outcome.failed);
        Ok(report)
    }

    /// Sends `request` to `axon` and waits for the answer, as long as the connection lives.
    ///
    /// A handler failure on the miner is `Ok` with `success == false` (as in btlightning);
    /// [`QuicResponse::into_result`] turns it into [`LightningError::Remote`]. Dropping the
    /// returned future cancels the query on the wire.
    pub async fn query_axon(
        &self,
        axon: &QuicAxonInfo,
        request: QuicRequest,
    ) -> Result<QuicResponse> {
        self.query(axon, request, None).await
    }

    /// Like [`query_axon`](Self::query_axon), failing with [`LightningError::Timeout`] (and
    /// resetting the stream) when no complete answer arrives within `timeout`.
    pub async fn query_axon_with_timeout(
        &self,
        axon: &QuicAxonInfo,
        request: QuicRequest,
        timeout: Duration,
    ) -> Result<QuicResponse> {
        self.query(axon, request, Some(timeout)).await
    }

    async fn query(
        &self,
        axon: &QuicAxonInfo,
        request: QuicRequest,
        timeout: Option<Duration>,
    ) -> Result<QuicResponse> {
        checks::hotkey(&axon.hotkey)?;
        let addr = axon.addr()?;
        checks::request_size(&request, self.shared.max_frame_payload)?;
        let ticket = self.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.shared.send(Command::Query(Query {
            ticket,
            addr,
            hotkey: axon.hotkey.clone(),
            request,
            timeout,
            reply: Reply::Unary(reply),
        }))?;
        let mut guard = CancelOnDrop {
            shared: &self.shared,
            ticket,
            armed: true,
        };
        let result = rx.await;
        guard.armed = false;
        match result {
            Ok(UnaryOutcome(r)) => r,
            Err(_) => Err(LightningError::Closed),
        }
    }

    /// Sends `request` to a streaming synapse and returns its chunks as a
    /// [`Stream`](futures_lite::Stream). Reading is flow-controlled: a slow consumer slows the
    /// miner. Dropping the stream cancels the request on the wire.
    pub async fn query_axon_stream(
        &self,
        axon: &QuicAxonInfo,
        request: QuicRequest,
    ) -> Result<ChunkStream> {
        self.open_stream(axon, request, None).await
    }

    /// Like [`query_axon_stream`](Self::query_axon_stream) with a deadline for the whole
    /// stream.
    pub async fn query_axon_stream_with_timeout(
        &self,
        axon: &QuicAxonInfo,
        request: QuicRequest,
        timeout: Duration,
    ) -> Result<ChunkStream> {
        self.open_stream(axon, request, Some(timeout)).await
    }

    async fn open_stream(
        &self,
        axon: &QuicAxonInfo,
        request: QuicRequest,
        timeout: Option<Duration>,
    ) -> Result<ChunkStream> {
        checks::hotkey(&axon.hotkey)?;
        let addr = axon.addr()?;
        checks::request_size(&request, self.shared.max_frame_payload)?;
        let ticket = self.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_channel::unbounded();
        self.shared.send(Command::Query(Query {
            ticket,
            addr,
            hotkey: axon.hotkey.clone(),
            request,
            timeout,
            reply: Reply::Stream(tx),
        }))?;
        let mut stream = ChunkStream {
            rx: Box::pin(rx),
            shared: self.shared.clone(),
            ticket,
            unacked: 0,
            done: false,
        };
        match stream.rx.recv().await {
            Ok(StreamMsg::Accepted) => Ok(stream),
            Ok(StreamMsg::Failed(e)) => {
                stream.done = true;
                Err(e)
            }
            Ok(_) | Err(_) => {
                stream.done = true;
                Err(LightningError::Closed)
            }
        }
    }

    /// Hotkeys authenticated right now.
    pub async fn authenticated_hotkeys(&self) -> Result<HashSet<String>> {
        let (reply, rx) = async_channel::bounded(1);
        self.shared.send(Command::Authenticated(reply))?;
        rx.recv().await.map_err(|_| LightningError::Closed)
    }

    /// A snapshot of the pool.
    pub async fn connection_stats(&self) -> Result<ClientStats> {
        let (reply, rx) = async_channel::bounded(1);
        self.shared.send(Command::Stats(reply))?;
        rx.recv().await.map_err(|_| LightningError::Closed)
    }

    /// Closes every connection (reason `client_shutdown`) and forgets every miner. Queries
    /// in flight fail with [`LightningError::ConnectionLost`]; later queries reconnect.
    pub async fn close_all_connections(&self) -> Result<()> {
        let (reply, rx) = async_channel::bounded(1);
        self.shared.send(Command::CloseAll(reply))?;
        rx.recv().await.map_err(|_| LightningError::Closed)
    }
}

/// Sends a cancel for a query whose future is dropped before its answer arrived.
struct CancelOnDrop<'a> {
    shared: &'a Shared,
    ticket: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.shared.send(Command::Cancel(self.ticket));
        }
    }
}

// ----- streaming ----------------------------------------------------------------------------

enum StreamMsg {
    Accepted,
    Chunk(Bytes),
    End,
    Failed(LightningError),
}

/// The chunks of a streaming response, in order. Ends with `None` after a successful end;
/// a failure is yielded as one `Err` item, then `None`.
#[derive(Debug)]
pub struct ChunkStream {
    rx: Pin<Box<async_channel::Receiver<StreamMsg>>>,
    shared: Arc<Shared>,
    ticket: u64,
    unacked: usize,
    done: bool,
}

impl std::fmt::Debug for StreamMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accepted => f.write_str("Accepted"),
            Self::Chunk(b) => write!(f, "Chunk({} bytes)", b.len()),
            Self::End => f.write_str("End"),
            Self::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

impl ChunkStream {
    /// The next chunk; `Ok(None)` after the stream ended successfully.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        futures_lite::StreamExt::next(self).await.transpose()
    }

    /// Every remaining chunk (bounded by the client's `max_stream_payload_bytes`).
    pub async fn collect_all(mut self) -> Result<Vec<Bytes>> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            chunks.push(chunk);
        }
        Ok(chunks)
    }

    fn give_credit(&mut self) {
        if self.unacked > 0 {
            let _ = self.shared.send(Command::Consumed {
                ticket: self.ticket,
                n: self.unacked,
            });
            self.unacked = 0;
        }
    }
}

impl Stream for ChunkStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.rx.as_mut().poll_next(cx) {
                Poll::Ready(Some(StreamMsg::Chunk(data))) => {
                    this.unacked += 1;
                    if this.unacked >= this.shared.consume_batch {
                        this.give_credit();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(StreamMsg::Accepted)) => continue,
                Poll::Ready(Some(StreamMsg::End)) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(StreamMsg::Failed(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(LightningError::Closed)));
                }
                Poll::Pending => {
                    // Nothing buffered: hand back credit now so the miner is never stalled
                    // waiting for a batch to fill.
                    this.give_credit();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.shared.send(Command::Cancel(self.ticket));
        }
    }
}

// ----- the endpoint task's side -------------------------------------------------------------

struct UnaryOutcome(Result<QuicResponse>);

enum Reply {
    Unary(oneshot::Sender<UnaryOutcome>),
    Stream(async_channel::Sender<StreamMsg>),
}

struct Query {
    ticket: u64,
    addr: SocketAddr,
    hotkey: String,
    request: QuicRequest,
    timeout: Option<Duration>,
    reply: Reply,
}

enum Command {
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
    CloseAll(async_channel::Sender<()>),
}

struct Waiter {
    ticket: u64,
    reply: Reply,
}

impl Waiter {
    fn fail(self, error: LightningError) {
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
struct ConnectWait {
    remaining: HashMap<(SocketAddr, String), QuicAxonInfo>,
    report: ConnectReport,
    reply: async_channel::Sender<ConnectReport>,
}

impl ConnectWait {
    fn settle(&mut self, addr: SocketAddr, hotkey: &str, outcome: Option<&LightningError>) {
        if let Some(miner) = self.remaining.remove(&(addr, hotkey.to_string())) {
            match outcome {
                None => self.report.authenticated.push(miner),
                Some(e) => self.report.failed.push((miner, e.clone())),
            }
        }
    }

    fn finish_if_done(&mut self) -> bool {
        if self.remaining.is_empty() {
            let _ = self.reply.try_send(std::mem::take(&mut self.report));
            true
        } else {
            false
        }
    }
}

struct ClientRole {
    ep: Client,
    tickets: IdMap<u64, RequestId>,
    waiters: IdMap<RequestId, Waiter>,
    connects: Vec<ConnectWait>,
}

impl ClientRole {
    fn on_query(&mut self, now: Instant, query: Query) {
        let Query {
            ticket,
            addr,
            hotkey,
            request,
            timeout,
            reply,
        } = query;
        let streaming = matches!(reply, Reply::Stream(_));
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
                self.waiters.insert(id, Waiter { ticket, reply });
            }
            Err(e) => Waiter { ticket, reply }.fail(e.into()),
        }
    }

    fn on_connect(
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
    fn reconcile(&mut self, now: Instant, wanted: &HashMap<SocketAddr, BTreeSet<String>>) {
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

    fn settle_connects(&mut self, addr: SocketAddr, hotkey: &str, error: Option<&LightningError>) {
        self.connects.retain_mut(|wait| {
            wait.settle(addr, hotkey, error);
            !wait.finish_if_done()
        });
    }

    fn stats(&self) -> ClientStats {
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

    fn finish(&mut self, id: RequestId) -> Option<Waiter> {
        let waiter = self.waiters.remove(&id)?;
        self.tickets.remove(&waiter.ticket);
        Some(waiter)
    }
}

impl Role for ClientRole {
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
        self.ep.poll_timeout()
    }

    fn set_max_gso_segments(&mut self, n: usize) {
        self.ep.set_max_gso_segments(n);
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Query(query) => self.on_query(now, query),
            Command::Cancel(ticket) => {
                if let Some(id) = self.tickets.remove(&ticket) {
                    self.waiters.remove(&id);
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
            Command::CloseAll(reply) => {
                self.ep.close_all(now);
                let _ = reply.try_send(());
            }
        }
    }

    fn dispatch_events(&mut self, _now: Instant) -> usize {
        let mut events = 0;
        while let Some(event) = self.ep.poll_event() {
            events += 1;
            match event {
                ClientEvent::Response {
                    id,
                    response,
                    latency,
                } => {
                    if let Some(Waiter {
                        reply: Reply::Unary(tx),
                        ..
                    }) = self.finish(id)
                    {
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
                        ..
                    }) = self.waiters.get(&id)
                    {
                        let _ = tx.try_send(StreamMsg::Chunk(data));
                    }
                }
                ClientEvent::StreamEnd { id, .. } => {
                    if let Some(Waiter {
                        reply: Reply::Stream(tx),
                        ..
                    }) = self.finish(id)
                    {
                        let _ = tx.try_send(StreamMsg::End);
                    }
                }
                ClientEvent::RequestFailed { id, error } => {
                    if let Some(waiter) = self.finish(id) {
                        waiter.fail(error.into());
                    }
                }
                ClientEvent::Authenticated { addr, hotkey } => {
                    self.settle_connects(addr, &hotkey, None);
                }
                ClientEvent::HandshakeFailed {
                    addr,
                    hotkey,
                    error,
                } => {
                    tracing::debug!(%addr, %hotkey, "handshake failed: {error}");
                    self.settle_connects(addr, &hotkey, Some(&error.into()));
                }
                ClientEvent::ConnectionLost { addr, reason } => {
                    tracing::debug!(%addr, "connection lost: {reason}");
                }
            }
        }
        events
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
