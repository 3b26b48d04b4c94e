//! `LightningClient`: the validator side. A cheap, cloneable handle that sends commands
//! to the endpoint task, which owns the sans-IO [`lightning_proto::endpoint::Client`].

mod builder;
mod metrics;
mod stream;
mod task;

pub use builder::ClientBuilder;
use metrics::{ClientCounters, Outcome};
pub use metrics::{
    ClientMetrics, ClientSynapseMetrics, CLIENT_OUTCOMES, MAX_CLIENT_SYNAPSE_LABELS,
    OTHER_SYNAPSE_LABEL,
};
pub use stream::ChunkStream;
use stream::StreamMsg;
use task::{ClientRole, Command, Query, Reply, UnaryOutcome};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::Stream;
use lightning_proto::endpoint::{
    Client, ClientConfig, ClientEvent, ConnectionStats, HotkeyStatus, QueryId, RequestOptions,
    SansIo,
};
use lightning_proto::identity::Signer;
use lightning_proto::idhash::IdMap;
use lightning_proto::reconnect::ReconnectPolicy;

use crate::checks;
use crate::driver::{Dispatched, Driver, Role};
use crate::error::{LightningError, Result};
use crate::identity::{os_seed, unix_ms, Identity};
use crate::runtime::Runtime;
use crate::socket::{EndpointSocket, SocketBuffers, DEFAULT_SOCKET_BUFFER};
use crate::types::{QuicAxonInfo, QuicRequest, QuicResponse};

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

    /// Checks a query's input (the hotkey, the frame size) and hands it to the endpoint
    /// task; returns its ticket.
    fn submit(
        &self,
        axon: &QuicAxonInfo,
        request: QuicRequest,
        timeout: Option<Duration>,
        reply: Reply,
    ) -> Result<u64> {
        checks::hotkey(&axon.hotkey)?;
        let addr = axon.addr()?;
        checks::request_size(&request, self.shared.max_frame_payload)?;
        let ticket = self.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.shared.send(Command::Query(Query {
            ticket,
            addr,
            hotkey: axon.hotkey.clone(),
            request,
            timeout,
            reply,
        }))?;
        Ok(ticket)
    }

    async fn query(
        &self,
        axon: &QuicAxonInfo,
        request: QuicRequest,
        timeout: Option<Duration>,
    ) -> Result<QuicResponse> {
        let (reply, rx) = oneshot::channel();
        let ticket = self.submit(axon, request, timeout, Reply::Unary(reply))?;
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
        let (tx, rx) = async_channel::unbounded();
        let ticket = self.submit(axon, request, timeout, Reply::Stream(tx))?;
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

    /// A snapshot of the client's metrics: queries per synapse and outcome, end-to-end
    /// latency histograms, handshakes, connections, socket traffic, and quinn's path
    /// figures over the open connections. See `docs/metrics.md`.
    pub async fn metrics(&self) -> Result<ClientMetrics> {
        let (reply, rx) = async_channel::bounded(1);
        self.shared.send(Command::Metrics(reply))?;
        rx.recv().await.map_err(|_| LightningError::Closed)
    }

    /// The same metrics in the Prometheus text format (version 0.0.4), to serve from the
    /// application's own HTTP server with [`METRICS_CONTENT_TYPE`](crate::METRICS_CONTENT_TYPE).
    pub async fn metrics_text(&self) -> Result<String> {
        Ok(self.metrics().await?.to_prometheus())
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
