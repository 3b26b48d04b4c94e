//! `ClientBuilder`: configures and starts a `LightningClient`.

use super::*;
use crate::error::ConfigCause;

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
    pub(super) runtime: R,
    pub(super) config: ClientConfig,
    pub(super) identity: Option<Result<Identity>>,
    pub(super) bind: SocketAddr,
    pub(super) socket_buffer: usize,
    pub(super) rng_seed: Option<[u8; 32]>,
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

    crate::builder_common::shared_builder_setters!("validator");

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

    /// Binds the socket and starts the endpoint task. Must run where the runtime is usable
    /// (inside a tokio runtime for the tokio adapter).
    pub fn build(self) -> Result<LightningClient> {
        let identity = self
            .identity
            .ok_or(LightningError::Config(ConfigCause::NoSigner))??;
        let now = Instant::now();
        let endpoint = Client::new(
            self.config.clone(),
            identity.hotkey.clone(),
            identity.signer.clone(),
            self.rng_seed.unwrap_or_else(os_seed),
            now,
            unix_ms(),
        )?;
        let (socket, buffers, local_addr) =
            EndpointSocket::bind_endpoint(&self.runtime, self.bind, self.socket_buffer)?;
        let (tx, rx) = async_channel::unbounded();
        let role = ClientRole {
            ep: endpoint,
            tickets: IdMap::default(),
            waiters: IdMap::default(),
            connects: Vec::new(),
            metrics: Default::default(),
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
