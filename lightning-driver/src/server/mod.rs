//! `LightningServer`: the miner side. Handlers registered by synapse name, driven by one
//! endpoint task that owns the sans-IO [`lightning_proto::endpoint::Server`].

mod builder;
mod metrics;
mod task;

use builder::synapse_kind;
pub use builder::ServerBuilder;
use metrics::{Outcome, ServerCounters};
pub use metrics::{ServerMetrics, SynapseMetrics, UNKNOWN_SYNAPSE_LABEL};
pub(crate) use task::Command;
use task::{install, ServerRole};

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lightning_proto::endpoint::{
    CancelReason, ConnId, IncomingRequest, RequestId, ResetSecret, SansIo, Server, ServerConfig,
    ServerEvent, ServerStats, SynapseIndex, SynapseKind,
};
use lightning_proto::identity::Signer;
use lightning_proto::idhash::IdMap;
use lightning_proto::message::DataMap;
use lightning_proto::tls::TlsIdentity;
use serde::{de::DeserializeOwned, Serialize};

use crate::cancel::{cancel_pair, CancelGuard, CancelSignal};
use crate::credit::SinkCredit;
use crate::driver::{Driver, Role};
use crate::error::{LightningError, Result};
use crate::handler::{self, ChunkSink, Handler, RequestContext};
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

    /// A snapshot of the server's metrics: counters since start, per-synapse request
    /// outcomes and handler times, socket traffic, and quinn's path figures summarised
    /// over the open connections. See `docs/metrics.md`.
    pub async fn metrics(&self) -> Result<ServerMetrics> {
        let (reply, rx) = async_channel::bounded(1);
        self.send(Command::Metrics(reply))?;
        rx.recv().await.map_err(|_| LightningError::Closed)
    }

    /// The same metrics in the Prometheus text format (version 0.0.4), for an HTTP
    /// handler of the application's own to serve with
    /// [`METRICS_CONTENT_TYPE`](crate::METRICS_CONTENT_TYPE). The driver serves no HTTP.
    pub async fn metrics_text(&self) -> Result<String> {
        Ok(self.metrics().await?.to_prometheus())
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
