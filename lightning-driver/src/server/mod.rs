//! `LightningServer`: the miner side. Handlers registered by synapse name, driven by one
//! endpoint task that owns the sans-IO [`lightning_proto::endpoint::Server`].

mod builder;
mod group;
mod metrics;
mod task;

use builder::synapse_kind;
pub use builder::{default_drivers, ServerBuilder};
pub use group::MAX_DRIVERS;
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
use lightning_proto::endpoint::cid::CidRouting;
use lightning_proto::endpoint::{
    CancelReason, ConnId, Datagram, GroupMember, IncomingRequest, LocalLimits, RequestId,
    ResetSecret, SansIo, Server, ServerConfig, ServerEvent, ServerStats, SynapseIndex, SynapseKind,
};
use lightning_proto::identity::Signer;
use lightning_proto::idhash::IdMap;
use lightning_proto::message::DataMap;
use lightning_proto::tls::TlsIdentity;
use serde::{de::DeserializeOwned, Serialize};

use crate::cancel::{cancel_pair, CancelGuard, CancelSignal};
use crate::credit::SinkCredit;
use crate::driver::{Dispatched, Driver, Role, Router};
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
    /// One command queue per endpoint driver (one, unless several share the port).
    drivers: Vec<async_channel::Sender<Command>>,
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
    /// Connections that have not authenticated yet, over all drivers (read in one step
    /// from the count `max_unauthenticated_connections` bounds).
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
    /// Each endpoint driver's share, in driver order (one entry with one driver).
    pub drivers: Vec<DriverShare>,
}

/// What one endpoint driver of a server holds and has counted.
#[derive(Debug, Clone, Default)]
pub struct DriverShare {
    /// Its open QUIC connections.
    pub connections: usize,
    /// Validator hotkeys authenticated on them.
    pub validators: usize,
    /// Its counters since start (the server's are their sum).
    pub stats: ServerStats,
}

impl ServerSnapshot {
    /// The snapshots of the drivers of one port as one (see [`ServerMetrics::merge`]).
    fn merge(parts: Vec<ServerSnapshot>) -> ServerSnapshot {
        let mut parts = parts.into_iter();
        let mut total = parts.next().unwrap_or_default();
        for p in parts {
            total.stats.add(&p.stats);
            total.connections += p.connections;
            total.unauthenticated = total.unauthenticated.max(p.unauthenticated);
            total.validators.extend(p.validators);
            total.active_nonces = total.active_nonces.max(p.active_nonces);
            total.requests_in_flight += p.requests_in_flight;
            total.queued_bytes += p.queued_bytes;
            total.reserved_request_bytes =
                total.reserved_request_bytes.max(p.reserved_request_bytes);
            total.parked_streams += p.parked_streams;
            total.drivers.extend(p.drivers);
        }
        total
    }
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

    /// How many endpoint drivers serve the port ([`ServerBuilder::drivers`]).
    pub fn drivers(&self) -> usize {
        self.drivers.len()
    }

    /// Sends one command to every driver.
    fn broadcast(&self, command: impl Fn() -> Command) -> Result<()> {
        for tx in &self.drivers {
            tx.try_send(command()).map_err(|_| LightningError::Closed)?;
        }
        Ok(())
    }

    /// Sends every driver a command with a reply channel and collects their replies.
    async fn gather<T>(
        &self,
        command: impl Fn(async_channel::Sender<T>) -> Command,
    ) -> Result<Vec<T>> {
        let (reply, rx) = async_channel::bounded(self.drivers.len());
        self.broadcast(|| command(reply.clone()))?;
        drop(reply);
        let mut replies = Vec::with_capacity(self.drivers.len());
        for _ in 0..self.drivers.len() {
            replies.push(rx.recv().await.map_err(|_| LightningError::Closed)?);
        }
        Ok(replies)
    }

    /// A snapshot of counters and tables (summed over the drivers).
    pub async fn stats(&self) -> Result<ServerSnapshot> {
        Ok(ServerSnapshot::merge(self.gather(Command::Stats).await?))
    }

    /// A snapshot of the server's metrics: counters since start, per-synapse request
    /// outcomes and handler times, socket traffic, and quinn's path figures summarised
    /// over the open connections. See `docs/metrics.md`.
    pub async fn metrics(&self) -> Result<ServerMetrics> {
        Ok(ServerMetrics::merge(self.gather(Command::Metrics).await?))
    }

    /// The same metrics in the Prometheus text format (version 0.0.4), for an HTTP
    /// handler of the application's own to serve with
    /// [`METRICS_CONTENT_TYPE`](crate::METRICS_CONTENT_TYPE). The driver serves no HTTP.
    pub async fn metrics_text(&self) -> Result<String> {
        Ok(self.metrics().await?.to_prometheus())
    }

    /// Replaces the permitted validator set (effective for new handshakes).
    pub fn set_permitted_validators(&self, hotkeys: HashSet<String>) -> Result<()> {
        self.broadcast(|| Command::SetPermitted(hotkeys.clone()))
    }

    /// Replaces the source allow-list (`None`: accept any source).
    pub fn set_source_allowlist(&self, ips: Option<HashSet<IpAddr>>) -> Result<()> {
        self.broadcast(|| Command::SetAllowlist(ips.clone()))
    }

    /// Sends one handler change and waits until the endpoint task has applied it, so a
    /// request sent after this returns is routed by the new table.
    async fn set_handler(&self, synapse: String, handler: Option<Handler>) -> Result<bool> {
        // Every driver applies the same changes in the same order, so a synapse has the
        // same index on all of them.
        let existed = self
            .gather(|reply| Command::SetHandler {
                synapse: synapse.clone(),
                handler: handler.clone(),
                reply,
            })
            .await?;
        Ok(existed.into_iter().any(|e| e))
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
        let (reply, rx) = async_channel::bounded(self.drivers.len());
        for tx in &self.drivers {
            let _ = tx.try_send(Command::Stop(reply.clone()));
        }
        drop(reply);
        // Each driver answers once it has closed (or drops the sender if already gone).
        while rx.recv().await.is_ok() {}
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
