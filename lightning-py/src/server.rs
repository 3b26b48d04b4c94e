//! `RustLightningServer`: the miner side of the sync API.
//!
//! Python handlers are kept here and registered with the Rust server as async handlers
//! whose future hands the work to a pool of Python threads (`executor`) and awaits the
//! reply: the endpoint task never takes the GIL. Handlers may be registered at any time;
//! on a running server they take effect at once (the driver's runtime registration).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightning_tokio::{
    Identity, KeypairSigner, LightningError, LightningServer, LocalCause, ServerBuilder,
    ServerConfig, Tokio,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::bridge::{spawn, LoopBridge, Ticket};
use crate::coro::CoroHandler;
use crate::errors::{config_error, to_py};
use crate::executor::Pool;
use crate::handlers::{run_stream, run_unary, PyHandler};
use crate::logging::log_warning;
use crate::origin::Origin;
use crate::runtime::{handle, wait};

/// A registered handler and how it answers.
#[derive(Clone)]
enum Registered {
    Unary(Arc<PyHandler>),
    Streaming(Arc<PyHandler>),
    Coroutine(Arc<CoroHandler>),
    AsyncStreaming(Arc<CoroHandler>),
}

/// The worker pools of a running server.
#[derive(Clone)]
struct Pools {
    unary: Pool,
    streaming: Pool,
}

impl Pools {
    fn close(&self) {
        self.unary.close();
        self.streaming.close();
    }
}

struct Running {
    server: Arc<LightningServer>,
    pools: Pools,
}

#[derive(Default)]
struct ServerState {
    identity: Option<Identity>,
    handlers: HashMap<String, Registered>,
    /// Bumped by every registration, so `start` can tell whether it missed one.
    version: u64,
    /// `resolver() -> set[str]` of permitted validator hotkeys.
    permit_resolver: Option<Arc<Py<PyAny>>>,
    running: Option<Running>,
}

/// A miner's Lightning server (btlightning's `RustLightningServer`).
#[pyclass(
    frozen,
    module = "lightning_quic._native",
    name = "RustLightningServer"
)]
pub struct PyServer {
    origin: Origin,
    miner_hotkey: String,
    host: String,
    port: u16,
    config: ServerConfig,
    handler_threads: usize,
    streaming_threads: usize,
    /// Endpoint drivers serving the port (`None`: the Rust default, one per core up to 8).
    drivers: Option<usize>,
    permit_refresh: Duration,
    state: Mutex<ServerState>,
}

fn secs(name: &str, v: Option<u64>, default: Duration) -> PyResult<Duration> {
    match v {
        None => Ok(default),
        Some(0) => Err(config_error(format!(
            "config error: {name} must be non-zero"
        ))),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// The Rust handler that forwards a unary request to the Python pool.
fn unary_bridge(
    builder: ServerBuilder,
    name: &str,
    h: Arc<PyHandler>,
    pool: Pool,
) -> ServerBuilder {
    builder.async_handler(name, unary_fn(h, pool))
}

/// The future of a unary Rust handler that forwards to Python.
pub type UnaryFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<lightning_tokio::DataMap, String>> + Send>,
>;
/// The future of a streaming Rust handler that forwards to Python.
pub type StreamFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

fn unary_fn(
    h: Arc<PyHandler>,
    pool: Pool,
) -> impl Fn(lightning_tokio::DataMap, lightning_tokio::RequestContext) -> UnaryFuture
       + Send
       + Sync
       + 'static {
    move |data, ctx| {
        // On the endpoint task: no Python here, only a queue push.
        let (tx, rx) = async_channel::bounded(1);
        let h = h.clone();
        let queued = pool.submit(Box::new(move |py| {
            let _ = tx.try_send(run_unary(py, &h, data, ctx));
        }));
        Box::pin(async move {
            if !queued {
                return Err("server stopping".to_string());
            }
            rx.recv()
                .await
                .unwrap_or_else(|_| Err("handler dropped".to_string()))
        })
    }
}

fn stream_fn(
    h: Arc<PyHandler>,
    pool: Pool,
) -> impl Fn(
    lightning_tokio::DataMap,
    lightning_tokio::RequestContext,
    lightning_tokio::ChunkSink,
) -> StreamFuture
       + Send
       + Sync
       + 'static {
    move |data, ctx, sink| {
        let (tx, rx) = async_channel::bounded(1);
        let h = h.clone();
        let queued = pool.submit(Box::new(move |py| {
            let _ = tx.try_send(run_stream(py, &h, data, ctx, sink));
        }));
        Box::pin(async move {
            if !queued {
                return Err("server stopping".to_string());
            }
            rx.recv()
                .await
                .unwrap_or_else(|_| Err("handler dropped".to_string()))
        })
    }
}

impl PyServer {
    fn state(&self) -> PyResult<std::sync::MutexGuard<'_, ServerState>> {
        self.origin.check(Origin::is_here_exactly)?;
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn metrics_snapshot(&self, py: Python<'_>) -> PyResult<lightning_tokio::ServerMetrics> {
        let Some((server, _)) = self.running()? else {
            return Ok(Default::default());
        };
        match wait(py, server.metrics())? {
            Ok(m) => Ok(m),
            Err(LightningError::Closed) => Ok(Default::default()),
            Err(e) => Err(to_py(e)),
        }
    }

    fn running(&self) -> PyResult<Option<(Arc<LightningServer>, Pools)>> {
        Ok(self
            .state()?
            .running
            .as_ref()
            .map(|r| (r.server.clone(), r.pools.clone())))
    }

    fn set_identity(&self, identity: Identity) -> PyResult<()> {
        let mut state = self.state()?;
        if state.running.is_some() {
            log_warning("the miner key changed while serving; it takes effect at the next start()");
        }
        state.identity = Some(identity);
        Ok(())
    }

    /// Stores a handler and, if serving, installs it on the running server.
    fn register(&self, py: Python<'_>, name: String, registered: Registered) -> PyResult<()> {
        let running = {
            let mut state = self.state()?;
            state.handlers.insert(name.clone(), registered.clone());
            state.version += 1;
            state
                .running
                .as_ref()
                .map(|r| (r.server.clone(), r.pools.clone()))
        };
        if let Some((server, pools)) = running {
            install(py, &server, &pools, name, registered)?;
        }
        Ok(())
    }
}

/// Installs one handler on a running server.
fn install(
    py: Python<'_>,
    server: &LightningServer,
    pools: &Pools,
    name: String,
    registered: Registered,
) -> PyResult<()> {
    let outcome = match registered {
        Registered::Unary(h) => wait(
            py,
            server.register_async_handler(name, unary_fn(h, pools.unary.clone())),
        )?,
        Registered::Streaming(h) => wait(
            py,
            server.register_streaming_handler(name, stream_fn(h, pools.streaming.clone())),
        )?,
        Registered::Coroutine(h) => wait(
            py,
            server.register_async_handler(name, crate::coro::handler_fn(h)),
        )?,
        Registered::AsyncStreaming(h) => wait(
            py,
            server.register_streaming_handler(name, crate::coro::stream_fn(h)),
        )?,
    };
    match outcome {
        // Stopped meanwhile: the handler is stored for the next start.
        Ok(_) | Err(LightningError::Closed) => Ok(()),
        Err(e) => Err(to_py(e)),
    }
}

/// Calls a Python permit resolver; its failures are logged and keep the previous set.
fn resolve_permits(resolver: &Py<PyAny>) -> Result<std::collections::HashSet<String>, String> {
    Python::try_attach(|py| {
        resolver
            .call0(py)
            .and_then(|set| set.extract::<std::collections::HashSet<String>>(py))
            .map_err(|e| {
                let message = format!("validator permit resolver failed: {e}");
                crate::logging::log_error(py, &message, Some(e));
                message
            })
    })
    .unwrap_or_else(|| Err("the Python interpreter is shutting down".into()))
}

fn handler_spec(
    synapse_type: &str,
    handler: Py<PyAny>,
    with_context: bool,
    py: Python<'_>,
) -> PyResult<Arc<PyHandler>> {
    if !handler.bind(py).is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "the handler for '{synapse_type}' must be callable"
        )));
    }
    Ok(Arc::new(PyHandler {
        func: handler,
        with_context,
        synapse: synapse_type.to_string(),
    }))
}

#[pymethods]
impl PyServer {
    /// See `lightning_quic.LightningServer`.
    #[new]
    #[pyo3(signature = (miner_hotkey, host="0.0.0.0".to_string(), port=8443,
        max_signature_age_secs=None, idle_timeout_secs=None, keep_alive_interval_secs=None,
        nonce_cleanup_interval_secs=None, max_nonce_entries=None, max_frame_payload_bytes=None,
        max_connections=None, handshake_timeout_secs=None,
        max_handshake_attempts_per_minute=None, max_concurrent_bidi_streams=None,
        require_validator_permit=None, handler_timeout_secs=None, handler_threads=None,
        streaming_threads=None, validator_permit_refresh_secs=None, drivers=None,
        congestion=None, max_udp_payload=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        miner_hotkey: String,
        host: String,
        port: u16,
        max_signature_age_secs: Option<u64>,
        idle_timeout_secs: Option<u64>,
        keep_alive_interval_secs: Option<u64>,
        nonce_cleanup_interval_secs: Option<u64>,
        max_nonce_entries: Option<usize>,
        max_frame_payload_bytes: Option<u64>,
        max_connections: Option<usize>,
        handshake_timeout_secs: Option<u64>,
        max_handshake_attempts_per_minute: Option<u32>,
        max_concurrent_bidi_streams: Option<u32>,
        require_validator_permit: Option<bool>,
        handler_timeout_secs: Option<u64>,
        handler_threads: Option<usize>,
        streaming_threads: Option<usize>,
        validator_permit_refresh_secs: Option<u64>,
        drivers: Option<usize>,
        congestion: Option<String>,
        max_udp_payload: Option<i64>,
    ) -> PyResult<Self> {
        if let Some(n) = drivers {
            if n == 0 || n > lightning_tokio::MAX_DRIVERS {
                return Err(config_error(format!(
                    "config error: drivers must be between 1 and {}, not {n}",
                    lightning_tokio::MAX_DRIVERS
                )));
            }
        }
        let mut c = ServerConfig::default();
        c.transport.congestion = crate::args::congestion(congestion.as_deref())?;
        if let Some(n) = crate::args::max_udp_payload(max_udp_payload)? {
            c.transport.max_udp_payload = n;
        }
        if let Some(s) = max_signature_age_secs {
            c.max_signature_age_secs = s;
        }
        c.transport.idle_timeout = secs(
            "idle_timeout_secs",
            idle_timeout_secs,
            c.transport.idle_timeout,
        )?;
        c.transport.keep_alive_interval = secs(
            "keep_alive_interval_secs",
            keep_alive_interval_secs,
            c.transport.keep_alive_interval,
        )?;
        c.nonce_cleanup_interval = secs(
            "nonce_cleanup_interval_secs",
            nonce_cleanup_interval_secs,
            c.nonce_cleanup_interval,
        )?;
        c.handshake_timeout = secs(
            "handshake_timeout_secs",
            handshake_timeout_secs,
            c.handshake_timeout,
        )?;
        c.handler_timeout = secs(
            "handler_timeout_secs",
            handler_timeout_secs,
            c.handler_timeout,
        )?;
        if let Some(n) = max_nonce_entries {
            c.max_nonce_entries = n;
        }
        if let Some(n) = max_frame_payload_bytes {
            c.max_frame_payload_bytes = u32::try_from(n).map_err(|_| {
                config_error(format!(
                    "config error: max_frame_payload_bytes ({n}) must be at most {}",
                    u32::MAX
                ))
            })?;
        }
        if let Some(n) = max_connections {
            c.max_connections = n;
        }
        if let Some(n) = max_handshake_attempts_per_minute {
            c.max_handshake_attempts_per_minute = n;
        }
        if let Some(n) = max_concurrent_bidi_streams {
            c.max_concurrent_bidi_streams = n;
        }
        if let Some(b) = require_validator_permit {
            c.require_validator_permit = b;
        }
        c.validate().map_err(|e| config_error(e.to_string()))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            origin: Origin::here(),
            miner_hotkey,
            host,
            port,
            config: c,
            // concurrent.futures.ThreadPoolExecutor's default: handlers often wait on I/O.
            handler_threads: handler_threads.unwrap_or((cpus + 4).min(32)).max(1),
            streaming_threads: streaming_threads.unwrap_or(8).max(1),
            drivers,
            permit_refresh: secs(
                "validator_permit_refresh_secs",
                validator_permit_refresh_secs,
                Duration::from_secs(1800),
            )?,
            state: Mutex::new(ServerState::default()),
        })
    }

    /// The miner hotkey this server signs as.
    #[getter]
    fn miner_hotkey(&self) -> &str {
        &self.miner_hotkey
    }

    /// The bound address `(ip, port)` once started, else `None`.
    #[getter]
    fn local_addr(&self) -> PyResult<Option<(String, u16)>> {
        Ok(self.running()?.map(|(s, _)| {
            let a = s.local_addr();
            (a.ip().to_string(), a.port())
        }))
    }

    /// Signs handshakes with the sr25519 key derived from a 32-byte seed.
    fn set_miner_keypair(&self, keypair_seed: Vec<u8>) -> PyResult<()> {
        let seed: [u8; 32] = keypair_seed.as_slice().try_into().map_err(|_| {
            config_error(format!(
                "config error: keypair seed must be 32 bytes, got {}",
                keypair_seed.len()
            ))
        })?;
        let signer = Arc::new(KeypairSigner::from_seed(&seed));
        self.set_identity(Identity::from_signer(self.miner_hotkey.clone(), signer))
    }

    /// Signs as a hotkey of a bittensor wallet (unencrypted hotkey files only).
    #[pyo3(signature = (wallet_name="default", wallet_path="~/.bittensor/wallets", hotkey_name="default"))]
    fn set_miner_wallet(
        &self,
        py: Python<'_>,
        wallet_name: &str,
        wallet_path: &str,
        hotkey_name: &str,
    ) -> PyResult<()> {
        let identity = crate::args::wallet_identity(py, wallet_name, wallet_path, hotkey_name)?;
        self.set_identity(identity)
    }

    /// Only validators whose hotkey is in `resolver()` (a set of SS58 strings) may
    /// authenticate; called at `start()` and every `validator_permit_refresh_secs` on a
    /// blocking thread (a failure keeps the previous set). Turns on
    /// `require_validator_permit`; takes effect at the next `start()`.
    fn set_validator_permit_resolver(&self, resolver: Py<PyAny>) -> PyResult<()> {
        self.state()?.permit_resolver = Some(Arc::new(resolver));
        Ok(())
    }

    /// Registers a unary handler `(data) -> dict`, or `(data, ctx) -> dict` with
    /// `with_context=True`. Allowed at any time, also while serving.
    #[pyo3(signature = (synapse_type, handler, with_context=false))]
    fn register_synapse_handler(
        &self,
        py: Python<'_>,
        synapse_type: String,
        handler: Py<PyAny>,
        with_context: bool,
    ) -> PyResult<()> {
        let h = handler_spec(&synapse_type, handler, with_context, py)?;
        self.register(py, synapse_type, Registered::Unary(h))
    }

    /// Registers a streaming handler returning an iterable of bytes-like chunks.
    #[pyo3(signature = (synapse_type, handler, with_context=false))]
    fn register_streaming_handler(
        &self,
        py: Python<'_>,
        synapse_type: String,
        handler: Py<PyAny>,
        with_context: bool,
    ) -> PyResult<()> {
        let h = handler_spec(&synapse_type, handler, with_context, py)?;
        self.register(py, synapse_type, Registered::Streaming(h))
    }

    /// Registers a coroutine handler run on the event loop behind `bridge`:
    /// `spawn(data, ctx, responder)` must start a task that answers through `responder`
    /// (the `AsyncLightningServer` façade does this).
    fn register_coroutine_handler(
        &self,
        py: Python<'_>,
        synapse_type: String,
        spawn: Py<PyAny>,
        bridge: &LoopBridge,
    ) -> PyResult<()> {
        let h = Arc::new(CoroHandler {
            spawn,
            bridge: bridge.shared()?,
            synapse: synapse_type.clone(),
        });
        self.register(py, synapse_type, Registered::Coroutine(h))
    }

    /// Registers an async generator handler run on the event loop behind `bridge`:
    /// `spawn(data, ctx, sink)` must start a task that sends through `sink` and ends it.
    fn register_coroutine_streaming_handler(
        &self,
        py: Python<'_>,
        synapse_type: String,
        spawn: Py<PyAny>,
        bridge: &LoopBridge,
    ) -> PyResult<()> {
        let h = Arc::new(CoroHandler {
            spawn,
            bridge: bridge.shared()?,
            synapse: synapse_type.clone(),
        });
        self.register(py, synapse_type, Registered::AsyncStreaming(h))
    }

    /// `serve_forever` for asyncio: resolves `fut` with `None` once the server stops.
    fn serve_forever_async(&self, bridge: &LoopBridge, fut: Py<PyAny>) -> PyResult<Ticket> {
        let Some((server, _)) = self.running()? else {
            return Err(config_error(
                "config error: server not started: call start() first",
            ));
        };
        spawn(bridge, fut, async move {
            server.serve_forever().await;
            |py: Python<'_>| -> PyResult<Py<PyAny>> { Ok(py.None()) }
        })
    }

    /// Removes a handler; later requests for it get `unrecognized synapse type`.
    /// Returns whether it was registered.
    fn unregister_handler(&self, py: Python<'_>, synapse_type: String) -> PyResult<bool> {
        let (existed, running) = {
            let mut state = self.state()?;
            let existed = state.handlers.remove(&synapse_type).is_some();
            state.version += 1;
            (existed, state.running.as_ref().map(|r| r.server.clone()))
        };
        if let Some(server) = running {
            match wait(py, server.unregister_handler(&synapse_type))? {
                Ok(_) | Err(LightningError::Closed) => {}
                Err(e) => return Err(to_py(e)),
            }
        }
        Ok(existed)
    }

    /// Binds the UDP endpoint (a fresh self-signed certificate) and starts serving.
    /// A no-op if already started.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let (identity, handlers, version, resolver) = {
            let state = self.state()?;
            if state.running.is_some() {
                return Ok(());
            }
            (
                state.identity.clone(),
                state.handlers.clone(),
                state.version,
                state.permit_resolver.clone(),
            )
        };
        let ip: IpAddr = self.host.parse().map_err(|_| {
            config_error(format!(
                "config error: Invalid address: {}:{}",
                self.host, self.port
            ))
        })?;
        let identity = identity
            .ok_or_else(|| crate::errors::signing_error("signing error: No signer configured"))?;
        let pools = Pools {
            unary: Pool::start("lightning-handler", self.handler_threads).map_err(|e| {
                config_error(format!("config error: cannot start handler threads: {e}"))
            })?,
            streaming: Pool::start("lightning-stream", self.streaming_threads).map_err(|e| {
                config_error(format!("config error: cannot start handler threads: {e}"))
            })?,
        };
        let mut builder = ServerBuilder::with_runtime(Tokio::new(handle()?))
            .config(self.config.clone())
            .identity(identity)
            .bind_addr(SocketAddr::new(ip, self.port));
        if let Some(n) = self.drivers {
            builder = builder.drivers(n);
        }
        if let Some(resolver) = resolver {
            builder = builder.permit_resolver(self.permit_refresh, move || {
                let resolver = resolver.clone();
                async move {
                    // Python on a blocking thread: never on the endpoint task.
                    tokio::task::spawn_blocking(move || resolve_permits(&resolver))
                        .await
                        .map_err(|e| format!("permit resolver task failed: {e}"))?
                }
            });
        }
        for (name, registered) in &handlers {
            builder = match registered.clone() {
                Registered::Unary(h) => unary_bridge(builder, name, h, pools.unary.clone()),
                Registered::Streaming(h) => {
                    builder.streaming_handler(name, stream_fn(h, pools.streaming.clone()))
                }
                Registered::Coroutine(h) => builder.async_handler(name, crate::coro::handler_fn(h)),
                Registered::AsyncStreaming(h) => {
                    builder.streaming_handler(name, crate::coro::stream_fn(h))
                }
            };
        }
        let server = match wait(py, builder.start()) {
            Ok(Ok(server)) => Arc::new(server),
            Ok(Err(e)) => {
                pools.close();
                return Err(match e {
                    // Binding the socket is the only local step of starting.
                    LightningError::Local(
                        m @ (LocalCause::Bind { .. } | LocalCause::Socket(_)),
                    ) => config_error(format!("config error: Failed to create QUIC endpoint: {m}")),
                    other => to_py(other),
                });
            }
            Err(e) => {
                pools.close();
                return Err(e);
            }
        };
        let missed = {
            let mut state = self.state()?;
            state.running = Some(Running {
                server: server.clone(),
                pools: pools.clone(),
            });
            (state.version != version).then(|| state.handlers.clone())
        };
        // Handlers registered while we were binding: install the current table.
        if let Some(current) = missed {
            for (name, registered) in current {
                install(py, &server, &pools, name, registered)?;
            }
        }
        Ok(())
    }

    /// Blocks (GIL released, Ctrl-C honoured) until `stop()` is called.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        let Some((server, _)) = self.running()? else {
            return Err(config_error(
                "config error: server not started: call start() first",
            ));
        };
        wait(py, server.serve_forever())
    }

    /// Stops serving: closes every connection and the endpoint; `serve_forever` returns.
    /// Safe before `start()` and more than once.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let running = match self.state() {
            Ok(mut state) => state.running.take(),
            Err(_) => return Ok(()),
        };
        if let Some(running) = running {
            let outcome = wait(py, running.server.stop());
            running.pools.close();
            outcome?.map_err(to_py)?;
        }
        Ok(())
    }

    /// `total_connections`, `verified_connections` and `connection_<hotkey>` entries,
    /// all strings (btlightning's shape).
    fn get_connection_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        let Some((server, _)) = self.running()? else {
            out.set_item("total_connections", "0")?;
            out.set_item("verified_connections", "0")?;
            return Ok(out);
        };
        let snapshot = match wait(py, server.stats())? {
            Ok(s) => s,
            Err(LightningError::Closed) => Default::default(),
            Err(e) => return Err(to_py(e)),
        };
        let n = snapshot.validators.len().to_string();
        out.set_item("total_connections", &n)?;
        out.set_item("verified_connections", &n)?;
        for (hotkey, conn) in &snapshot.validators {
            out.set_item(
                format!("connection_{hotkey}"),
                format!("conn_{hotkey}_{}", conn.0),
            )?;
        }
        Ok(out)
    }

    /// The server's metrics as a dict (see `ServerMetrics` in `_native.pyi`); zeros
    /// before `start()`.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snapshot = self.metrics_snapshot(py)?;
        crate::metrics::server(py, &snapshot)
    }

    /// The server's metrics in the Prometheus text format (version 0.0.4), to serve from
    /// the application's own HTTP endpoint.
    fn metrics_text(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.metrics_snapshot(py)?.to_prometheus())
    }

    /// Kept for btlightning compatibility; idle connections are closed by the QUIC idle
    /// timeout and unauthenticated ones by the handshake timeout, so there is nothing to do.
    #[pyo3(signature = (max_idle_seconds=300))]
    fn cleanup_stale_connections(&self, max_idle_seconds: u64) {
        let _ = max_idle_seconds;
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !self.origin.is_here_exactly() {
            std::mem::forget(state);
            return;
        }
        // Dropping the server handle lets the endpoint task wind down on its own; the
        // pools' workers exit once their queue is closed. Nothing here waits.
        if let Some(running) = &state.running {
            running.pools.close();
        }
    }
}
