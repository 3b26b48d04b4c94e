//! # lightning-driver
//!
//! The async face of Lightning, independent of any runtime: [`LightningClient`] (validator)
//! and [`LightningServer`] (miner), each backed by one endpoint task that owns a sans-IO
//! endpoint from [`lightning_proto`] and a quinn-udp socket (GSO/GRO/ECN, 4 MiB buffers).
//!
//! Applications use it through an adapter that implements [`Runtime`]: `lightning-tokio`
//! or `lightning-smol` (which also serves async-std). The adapters re-export this crate's
//! API with their runtime filled in, so code reads the same on either:
//!
//! ```ignore
//! let server = ServerBuilder::new()
//!     .seed(miner_seed)
//!     .bind_addr("127.0.0.1:0".parse()?)
//!     .handler("echo", |data, _ctx| Ok::<_, String>(data))
//!     .start()
//!     .await?;
//! let client = ClientBuilder::new().seed(validator_seed).build()?;
//! let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());
//! let response = client.query_axon(&axon, QuicRequest::new("echo", data)).await?;
//! ```
//!
//! # How it runs
//! Handles talk to the endpoint task over a lock-free channel; the task is the only owner
//! of the endpoint, so nothing on the request path takes a lock. Each wake-up of the task
//! takes commands, receives a batch of datagrams, fires the one timer, delivers events and
//! flushes transmits, with bounded work before it yields (see `driver.rs`).
#![deny(missing_docs)]

mod builder_common;
mod cancel;
mod checks;
mod client;
mod credit;
mod driver;
/// The error type and the structured causes its variants carry (with the core's types
/// among them, re-exported so that applications can match on them).
pub mod error;
mod handler;
mod identity;
mod metrics;
mod recv_slots;
mod runtime;
mod server;
mod socket;
mod types;

pub use client::{
    ChunkStream, ClientBuilder, ClientMetrics, ClientStats, ClientSynapseMetrics, ConnectReport,
    LightningClient, PeerStats, CLIENT_OUTCOMES, MAX_CLIENT_SYNAPSE_LABELS, OTHER_SYNAPSE_LABEL,
};
pub use error::{
    ConfigCause, ConnectCause, HandshakeCause, IoFailure, LightningError, LocalCause,
    ProtocolCause, Result,
};
pub use handler::{peer_error, ChunkSink, RequestContext, StreamClosed, PEER_MESSAGE_MARKER};
pub use identity::Identity;
pub use metrics::{
    CloseReason, ClosedConnections, Histogram, IoCounters, PathSummary, ReasonCounts,
    LATENCY_BUCKETS, METRICS_CONTENT_TYPE,
};
pub use runtime::{Direction, Runtime, Timer, UdpIo};
pub use server::{
    default_drivers, DriverShare, LightningServer, ServerBuilder, ServerMetrics, ServerSnapshot,
    SynapseMetrics, MAX_DRIVERS, UNKNOWN_SYNAPSE_LABEL,
};
pub use socket::{SocketBuffers, DEFAULT_SOCKET_BUFFER};
pub use types::{QuicAxonInfo, QuicRequest, QuicResponse};

pub use lightning_proto::endpoint::{
    ClientConfig, CongestionControl, ConnId, ConnectionStats, HotkeyStatus, QueryId, RequestId,
    ResetSecret, RetryPolicy, ServerConfig, ServerStats, TransportOptions, DEFAULT_MAX_UDP_PAYLOAD,
    LOOPBACK_MAX_UDP_PAYLOAD, MAX_UDP_PAYLOAD,
};
pub use lightning_proto::identity::{CallbackSigner, Keypair, KeypairSigner, SignError, Signer};
pub use lightning_proto::message::DataMap;
pub use lightning_proto::reconnect::ReconnectPolicy;
pub use lightning_proto::tls::TlsIdentity;

#[doc = include_str!("../PARITY.md")]
pub mod parity {}

/// The sans-IO core, for anything not re-exported here.
pub use lightning_proto as proto;
