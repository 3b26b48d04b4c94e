//! `RustLightning`: the validator side of the sync API.
//!
//! Like btlightning, the endpoint is created by `initialize_connections`; before that,
//! queries raise `ConnectionError("connection error: QUIC endpoint not initialized")`.
//! The object holds only a handle to the endpoint task (clones are reference counts), under
//! a mutex that is never held across a wait.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightning_tokio::{
    ClientBuilder, ClientConfig, HotkeyStatus, Identity, KeypairSigner, LightningClient,
    QuicResponse, ReconnectPolicy, Tokio,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::args;
use crate::bridge::{spawn, LoopBridge, Ticket};
use crate::convert::datamap_to_dict;
use crate::errors::{config_error, connection_error, not_initialized, signing_error, to_py};
use crate::logging::log_warning;
use crate::origin::Origin;
use crate::runtime::{handle, wait};
use crate::stream::StreamingResponse;

/// Bytes the request message adds around its data map (framing, keys, synapse name
/// excluded), for the local size check.
const REQUEST_OVERHEAD: usize = 64;

/// A validator's Lightning client (btlightning's `RustLightning`).
#[pyclass(frozen, module = "lightning_quic._native", name = "RustLightning")]
pub struct PyClient {
    origin: Origin,
    wallet_hotkey: String,
    config: ClientConfig,
    chunk_timeout: Option<Duration>,
    state: Mutex<ClientState>,
}

#[derive(Default)]
struct ClientState {
    identity: Option<Identity>,
    /// The identity changed since the endpoint was built: rebuild at the next
    /// `initialize_connections`.
    stale: bool,
    client: Option<LightningClient>,
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

impl PyClient {
    fn state(&self) -> PyResult<std::sync::MutexGuard<'_, ClientState>> {
        self.state_checked(Origin::is_here_exactly)
    }

    /// The state, after the fork check `is_ours`: exact for everything but the per-query
    /// asyncio paths, which take the one without a system call (see [`crate::origin`]).
    fn state_checked(
        &self,
        is_ours: fn(&Origin) -> bool,
    ) -> PyResult<std::sync::MutexGuard<'_, ClientState>> {
        self.origin.check(is_ours)?;
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn client(&self) -> PyResult<LightningClient> {
        self.state()?.client.clone().ok_or_else(not_initialized)
    }

    /// [`Self::client`] for the per-query asyncio paths.
    fn query_client(&self) -> PyResult<LightningClient> {
        let state = self.state_checked(Origin::is_here)?;
        state.client.clone().ok_or_else(not_initialized)
    }

    fn set_identity(&self, identity: Identity) -> PyResult<()> {
        let mut state = self.state()?;
        state.identity = Some(identity);
        state.stale = state.client.is_some();
        Ok(())
    }

    /// The endpoint, built now if there is none yet or the identity changed.
    fn ensure_client(&self) -> PyResult<LightningClient> {
        let mut state = self.state()?;
        if let (Some(client), false) = (&state.client, state.stale) {
            return Ok(client.clone());
        }
        let identity = state
            .identity
            .clone()
            .ok_or_else(|| signing_error("signing error: No signer configured"))?;
        let builder = |identity| -> PyResult<_> {
            Ok(ClientBuilder::with_runtime(Tokio::new(handle()?))
                .config(self.config.clone())
                .identity(identity))
        };
        // A dual-stack socket reaches IPv4 and IPv6 miners alike; hosts without IPv6 get
        // the IPv4 wildcard.
        let dual_stack = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        let client = match builder(identity.clone())?.bind_addr(dual_stack).build() {
            Ok(client) => client,
            Err(_) => builder(identity)?.build().map_err(to_py)?,
        };
        state.client = Some(client.clone());
        state.stale = false;
        Ok(client)
    }

    fn check_size(&self, request: &lightning_tokio::QuicRequest) -> PyResult<()> {
        let size = request.data.raw().len() + request.synapse_type.len() + REQUEST_OVERHEAD;
        let limit = self.config.max_frame_payload_bytes as usize;
        if size > limit {
            return Err(config_error(format!(
                "config error: request of about {size} bytes exceeds max_frame_payload_bytes \
                 ({limit}); not sent"
            )));
        }
        Ok(())
    }
}

/// The `SynapseResponse` dict, keys in btlightning's order.
pub fn response_dict<'py>(py: Python<'py>, r: &QuicResponse) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item(intern!(py, "data"), datamap_to_dict(py, &r.data)?)?;
    dict.set_item(intern!(py, "success"), r.success)?;
    dict.set_item(intern!(py, "latency_ms"), r.latency_ms())?;
    dict.set_item(intern!(py, "error"), r.error.as_deref())?;
    Ok(dict)
}

fn log_failures(report: &lightning_tokio::ConnectReport) {
    for (axon, e) in &report.failed {
        log_warning(&format!(
            "could not connect to miner {} at {}:{}: {e}",
            axon.hotkey, axon.ip, axon.port
        ));
    }
}

impl PyClient {
    fn metrics_snapshot(&self, py: Python<'_>) -> PyResult<lightning_tokio::ClientMetrics> {
        let Some(client) = self.state()?.client.clone() else {
            return Ok(Default::default());
        };
        match wait(py, client.metrics())? {
            Ok(m) => Ok(m),
            Err(lightning_tokio::LightningError::Closed) => Ok(Default::default()),
            Err(e) => Err(to_py(e)),
        }
    }
}

#[pymethods]
impl PyClient {
    /// See `lightning_quic.Lightning`.
    #[new]
    #[pyo3(signature = (wallet_hotkey, connect_timeout_secs=None, idle_timeout_secs=None,
        keep_alive_interval_secs=None, reconnect_initial_backoff_secs=None,
        reconnect_max_backoff_secs=None, reconnect_max_retries=None,
        max_frame_payload_bytes=None, max_stream_payload_bytes=None, max_connections=None,
        stream_chunk_timeout_secs=None, pipeline_first_requests=None, congestion=None,
        max_udp_payload=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        wallet_hotkey: String,
        connect_timeout_secs: Option<u64>,
        idle_timeout_secs: Option<u64>,
        keep_alive_interval_secs: Option<u64>,
        reconnect_initial_backoff_secs: Option<u64>,
        reconnect_max_backoff_secs: Option<u64>,
        reconnect_max_retries: Option<u32>,
        max_frame_payload_bytes: Option<u64>,
        max_stream_payload_bytes: Option<u64>,
        max_connections: Option<usize>,
        stream_chunk_timeout_secs: Option<u64>,
        pipeline_first_requests: Option<bool>,
        congestion: Option<String>,
        max_udp_payload: Option<i64>,
    ) -> PyResult<Self> {
        let mut config = ClientConfig::default();
        config.transport.congestion = crate::args::congestion(congestion.as_deref())?;
        if let Some(n) = crate::args::max_udp_payload(max_udp_payload)? {
            config.transport.max_udp_payload = n;
        }
        let reconnect = ReconnectPolicy::default();
        config.connect_timeout = secs(
            "connect_timeout_secs",
            connect_timeout_secs,
            config.connect_timeout,
        )?;
        config.transport.idle_timeout = secs(
            "idle_timeout_secs",
            idle_timeout_secs,
            config.transport.idle_timeout,
        )?;
        config.transport.keep_alive_interval = secs(
            "keep_alive_interval_secs",
            keep_alive_interval_secs,
            config.transport.keep_alive_interval,
        )?;
        config.reconnect = ReconnectPolicy {
            initial_backoff: secs(
                "reconnect_initial_backoff_secs",
                reconnect_initial_backoff_secs,
                reconnect.initial_backoff,
            )?,
            max_backoff: secs(
                "reconnect_max_backoff_secs",
                reconnect_max_backoff_secs,
                reconnect.max_backoff,
            )?,
            max_retries: reconnect_max_retries.unwrap_or(reconnect.max_retries),
            ..reconnect
        };
        if let Some(n) = max_frame_payload_bytes {
            config.max_frame_payload_bytes = u32::try_from(n).map_err(|_| {
                config_error(format!(
                    "config error: max_frame_payload_bytes ({n}) must be at most {}",
                    u32::MAX
                ))
            })?;
        }
        if let Some(n) = max_stream_payload_bytes {
            config.max_stream_payload_bytes = n;
        }
        if let Some(n) = max_connections {
            config.max_connections = n;
        }
        if let Some(pipeline) = pipeline_first_requests {
            config.pipeline_first_requests = pipeline;
        }
        config.validate().map_err(|e| config_error(e.to_string()))?;
        Ok(Self {
            origin: Origin::here(),
            wallet_hotkey,
            config,
            chunk_timeout: stream_chunk_timeout_secs
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            state: Mutex::new(ClientState::default()),
        })
    }

    /// The validator hotkey this client signs as.
    #[getter]
    fn wallet_hotkey(&self) -> &str {
        &self.wallet_hotkey
    }

    /// Signs handshakes with the sr25519 key derived from a 32-byte seed.
    fn set_validator_keypair(&self, keypair_seed: Vec<u8>) -> PyResult<()> {
        let seed: [u8; 32] = keypair_seed.as_slice().try_into().map_err(|_| {
            config_error(format!(
                "config error: keypair seed must be 32 bytes, got {}",
                keypair_seed.len()
            ))
        })?;
        let signer = Arc::new(KeypairSigner::from_seed(&seed));
        self.set_identity(Identity::from_signer(self.wallet_hotkey.clone(), signer))
    }

    /// Signs handshakes by calling `signer(message: bytes) -> bytes` (64-byte signature).
    fn set_python_signer(&self, signer: Py<PyAny>) -> PyResult<()> {
        // Runs during handshakes on the endpoint task (see PARITY.md); `try_attach` so an
        // interpreter that is shutting down fails the handshake instead of parking the task.
        let callback = move |message: &[u8]| -> Result<Vec<u8>, String> {
            Python::try_attach(|py| {
                signer
                    .call1(py, (PyBytes::new(py, message),))
                    .and_then(|sig| sig.extract::<Vec<u8>>(py))
                    .map_err(|e| format!("Python signer call failed: {e}"))
            })
            .unwrap_or_else(|| Err("the Python interpreter is shutting down".into()))
        };
        self.set_identity(Identity::from_callback(
            self.wallet_hotkey.clone(),
            callback,
        ))
    }

    /// Signs as a hotkey of a bittensor wallet (unencrypted hotkey files only).
    #[pyo3(signature = (wallet_name="default", wallet_path="~/.bittensor/wallets", hotkey_name="default"))]
    fn set_wallet(
        &self,
        py: Python<'_>,
        wallet_name: &str,
        wallet_path: &str,
        hotkey_name: &str,
    ) -> PyResult<()> {
        let identity = crate::args::wallet_identity(py, wallet_name, wallet_path, hotkey_name)?;
        self.set_identity(identity)
    }

    /// Creates the endpoint (first call) and connects to every miner; failures are logged,
    /// as in btlightning. Returns the hotkeys that authenticated.
    fn initialize_connections(
        &self,
        py: Python<'_>,
        miners: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<String>> {
        let miners = args::axons(miners)?;
        let client = self.ensure_client()?;
        let report = wait(py, client.initialize_connections(miners))?.map_err(to_py)?;
        log_failures(&report);
        Ok(report.authenticated.into_iter().map(|a| a.hotkey).collect())
    }

    /// Reconciles the pool with a fresh miner list; failures are logged.
    fn update_miner_registry(
        &self,
        py: Python<'_>,
        miners: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<String>> {
        let miners = args::axons(miners)?;
        let client = self.client()?;
        let report = wait(py, client.update_miner_registry(miners))?.map_err(to_py)?;
        log_failures(&report);
        Ok(report.authenticated.into_iter().map(|a| a.hotkey).collect())
    }

    /// Sends one request and waits for the answer (GIL released). A handler failure on
    /// the miner is a response with `success` False, not an exception.
    #[pyo3(signature = (axon_info, request, timeout_secs=None))]
    fn query_axon<'py>(
        &self,
        py: Python<'py>,
        axon_info: &Bound<'py, PyAny>,
        request: &Bound<'py, PyAny>,
        timeout_secs: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let axon = args::axon(axon_info)?;
        let request = args::request(request)?;
        let timeout = args::timeout(timeout_secs)?;
        self.check_size(&request)?;
        let client = self.client()?;
        let response = match timeout {
            Some(t) => wait(py, client.query_axon_with_timeout(&axon, request, t))?,
            None => wait(py, client.query_axon(&axon, request))?,
        }
        .map_err(to_py)?;
        response_dict(py, &response)
    }

    /// Sends one request to many miners at once (encoded once) and returns their
    /// responses in order. Failures become `success` False responses whose `error` is
    /// the exception text.
    #[pyo3(signature = (axons, request, timeout_secs=None))]
    fn query_axons<'py>(
        &self,
        py: Python<'py>,
        axons: &Bound<'py, PyAny>,
        request: &Bound<'py, PyAny>,
        timeout_secs: Option<f64>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let axons = args::axons(axons)?;
        let request = args::request(request)?;
        let timeout = args::timeout(timeout_secs)?;
        self.check_size(&request)?;
        let client = self.client()?;
        let queries = axons.iter().map(|axon| {
            let client = client.clone();
            let request = request.clone();
            async move {
                let started = std::time::Instant::now();
                let result = match timeout {
                    Some(t) => client.query_axon_with_timeout(axon, request, t).await,
                    None => client.query_axon(axon, request).await,
                };
                (result, started.elapsed())
            }
        });
        let joined: Vec<_> = queries.collect();
        let results = wait(py, join_all(joined))?;
        results
            .into_iter()
            .map(|(result, elapsed)| match result {
                Ok(r) => response_dict(py, &r),
                Err(e) => {
                    let dict = PyDict::new(py);
                    dict.set_item("data", PyDict::new(py))?;
                    dict.set_item("success", false)?;
                    dict.set_item("latency_ms", elapsed.as_secs_f64() * 1000.0)?;
                    dict.set_item("error", e.to_string())?;
                    Ok(dict)
                }
            })
            .collect()
    }

    /// Opens a streaming query; iterate the result for its chunks (`bytes`).
    fn query_axon_stream(
        &self,
        py: Python<'_>,
        axon_info: &Bound<'_, PyAny>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<StreamingResponse> {
        let axon = args::axon(axon_info)?;
        let request = args::request(request)?;
        self.check_size(&request)?;
        let client = self.client()?;
        let stream = wait(py, client.query_axon_stream(&axon, request))?.map_err(to_py)?;
        Ok(StreamingResponse::new(stream, self.chunk_timeout))
    }

    // ----- asyncio: each method starts a task and resolves `fut` through the loop bridge.

    /// `initialize_connections` for asyncio: resolves `fut` with the authenticated hotkeys.
    fn initialize_connections_async(
        &self,
        bridge: &LoopBridge,
        fut: Py<PyAny>,
        miners: &Bound<'_, PyAny>,
    ) -> PyResult<Ticket> {
        let miners = args::axons(miners)?;
        let client = self.ensure_client()?;
        spawn(bridge, fut, async move {
            let report = client.initialize_connections(miners).await;
            move |py: Python<'_>| connected(py, report)
        })
    }

    /// `update_miner_registry` for asyncio.
    fn update_miner_registry_async(
        &self,
        bridge: &LoopBridge,
        fut: Py<PyAny>,
        miners: &Bound<'_, PyAny>,
    ) -> PyResult<Ticket> {
        let miners = args::axons(miners)?;
        let client = self.client()?;
        spawn(bridge, fut, async move {
            let report = client.update_miner_registry(miners).await;
            move |py: Python<'_>| connected(py, report)
        })
    }

    /// `query_axon` for asyncio; cancelling the ticket cancels the query on the wire.
    #[pyo3(signature = (bridge, fut, axon_info, request, timeout_secs=None))]
    fn query_axon_async(
        &self,
        bridge: &LoopBridge,
        fut: Py<PyAny>,
        axon_info: &Bound<'_, PyAny>,
        request: &Bound<'_, PyAny>,
        timeout_secs: Option<f64>,
    ) -> PyResult<Ticket> {
        let axon = args::axon(axon_info)?;
        let request = args::request(request)?;
        let timeout = args::timeout(timeout_secs)?;
        self.check_size(&request)?;
        let client = self.query_client()?;
        spawn(bridge, fut, async move {
            let result = match timeout {
                Some(t) => client.query_axon_with_timeout(&axon, request, t).await,
                None => client.query_axon(&axon, request).await,
            };
            move |py: Python<'_>| -> PyResult<Py<PyAny>> {
                let response = result.map_err(to_py)?;
                Ok(response_dict(py, &response)?.into_any().unbind())
            }
        })
    }

    /// `query_axon_stream` for asyncio: resolves `fut` with a `PyStreamingResponse` whose
    /// `next_async` reads chunks.
    fn query_axon_stream_async(
        &self,
        bridge: &LoopBridge,
        fut: Py<PyAny>,
        axon_info: &Bound<'_, PyAny>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Ticket> {
        let axon = args::axon(axon_info)?;
        let request = args::request(request)?;
        self.check_size(&request)?;
        let client = self.query_client()?;
        let chunk_timeout = self.chunk_timeout;
        spawn(bridge, fut, async move {
            let result = client.query_axon_stream(&axon, request).await;
            move |py: Python<'_>| -> PyResult<Py<PyAny>> {
                let stream = result.map_err(to_py)?;
                Ok(Py::new(py, StreamingResponse::new(stream, chunk_timeout))?.into_any())
            }
        })
    }

    /// `close` for asyncio.
    fn close_async(&self, bridge: &LoopBridge, fut: Py<PyAny>) -> PyResult<Ticket> {
        let client = self.state().ok().and_then(|s| s.client.clone());
        spawn(bridge, fut, async move {
            let result = match client {
                Some(c) => c.close_all_connections().await,
                None => Ok(()),
            };
            move |py: Python<'_>| -> PyResult<Py<PyAny>> {
                match result {
                    Ok(()) | Err(lightning_tokio::LightningError::Closed) => Ok(py.None()),
                    Err(e) => Err(connection_error(e.to_string())),
                }
            }
        })
    }

    /// `total_connections`, `active_miners` and one `connection_<ip>:<port>` entry per
    /// miner address, all as strings (btlightning's shape).
    fn get_connection_stats(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        let Some(client) = self.state()?.client.clone() else {
            return Ok(vec![
                ("total_connections".into(), "0".into()),
                ("active_miners".into(), "0".into()),
            ]);
        };
        let stats = wait(py, client.connection_stats())?.map_err(to_py)?;
        let active = stats
            .peers
            .iter()
            .flat_map(|p| p.hotkeys.iter())
            .filter(|(_, s)| *s == HotkeyStatus::Authenticated)
            .count();
        let mut out = vec![
            (
                "total_connections".to_string(),
                stats.connections.to_string(),
            ),
            ("active_miners".to_string(), active.to_string()),
        ];
        for peer in &stats.peers {
            let state = if peer.connected { "active" } else { "closed" };
            out.push((format!("connection_{}", peer.addr), state.to_string()));
        }
        Ok(out)
    }

    /// The client's metrics as a dict (see `ClientMetrics` in `_native.pyi`).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snapshot = self.metrics_snapshot(py)?;
        crate::metrics::client(py, &snapshot)
    }

    /// The client's metrics in the Prometheus text format (version 0.0.4).
    fn metrics_text(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.metrics_snapshot(py)?.to_prometheus())
    }

    /// Closes every connection; later queries reconnect on demand.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let client = match self.state() {
            Ok(state) => state.client.clone(),
            // After fork: nothing of ours to close in this process.
            Err(_) => return Ok(()),
        };
        if let Some(client) = client {
            match wait(py, client.close_all_connections())? {
                Ok(()) | Err(lightning_tokio::LightningError::Closed) => {}
                Err(e) => return Err(connection_error(e.to_string())),
            }
        }
        Ok(())
    }
}

/// The authenticated hotkeys of a connect, failures logged (for the asyncio methods).
fn connected(
    py: Python<'_>,
    report: lightning_tokio::Result<lightning_tokio::ConnectReport>,
) -> PyResult<Py<PyAny>> {
    let report = report.map_err(to_py)?;
    log_failures(&report);
    let hotkeys: Vec<String> = report.authenticated.into_iter().map(|a| a.hotkey).collect();
    Ok(hotkeys.into_pyobject(py)?.into_any().unbind())
}

/// Runs every future concurrently and returns their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, out) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

impl Drop for PyClient {
    fn drop(&mut self) {
        if !self.origin.is_here_exactly() {
            // In a fork child: the endpoint task does not exist here; forget the handles
            // rather than run their destructors against the parent's state.
            let state = std::mem::take(self.state.get_mut().unwrap_or_else(|e| e.into_inner()));
            std::mem::forget(state);
        }
    }
}
