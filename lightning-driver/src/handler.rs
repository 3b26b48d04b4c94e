//! Synapse handlers: what a miner registers, and what each call receives.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use lightning_proto::endpoint::{ConnId, RequestId};
use lightning_proto::message::DataMap;
use serde::{de::DeserializeOwned, Serialize};

/// A handler error whose text starts with this marker is a refusal the handler chose to
/// explain: the text after it is sent to the peer in `error` (cut at 1024 bytes) instead of
/// the generic `request processing failed` / `stream processing failed`. Any other error
/// text stays local. Build one with [`peer_error`]. The marker begins with a control
/// character, which no ordinary message begins with.
pub const PEER_MESSAGE_MARKER: &str = "\u{1}peer:";

/// A handler error whose `message` is sent to the peer (see [`PEER_MESSAGE_MARKER`]).
pub fn peer_error(message: &str) -> String {
    format!("{PEER_MESSAGE_MARKER}{message}")
}

/// The peer-visible message of a handler error, if it carries the marker.
pub(crate) fn peer_message(error: &str) -> Option<&str> {
    error.strip_prefix(PEER_MESSAGE_MARKER)
}

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub(crate) type SyncFn =
    Arc<dyn Fn(DataMap, RequestContext) -> Result<DataMap, String> + Send + Sync>;
pub(crate) type AsyncFn =
    Arc<dyn Fn(DataMap, RequestContext) -> BoxFuture<Result<DataMap, String>> + Send + Sync>;
pub(crate) type StreamFn =
    Arc<dyn Fn(DataMap, RequestContext, ChunkSink) -> BoxFuture<Result<(), String>> + Send + Sync>;

/// A registered handler.
#[derive(Clone)]
pub(crate) enum Handler {
    /// Runs inline on the endpoint task: for quick work such as echo or a lookup.
    Sync(SyncFn),
    /// Spawned as its own task.
    Async(AsyncFn),
    /// Spawned as its own task, writing chunks through a [`ChunkSink`].
    Streaming(StreamFn),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sync(_) => "Handler::Sync",
            Self::Async(_) => "Handler::Async",
            Self::Streaming(_) => "Handler::Streaming",
        })
    }
}

pub(crate) fn sync<F, E>(f: F) -> Handler
where
    F: Fn(DataMap, RequestContext) -> Result<DataMap, E> + Send + Sync + 'static,
    E: Display,
{
    Handler::Sync(Arc::new(move |data, ctx| {
        f(data, ctx).map_err(|e| e.to_string())
    }))
}

pub(crate) fn asynchronous<F, Fut, E>(f: F) -> Handler
where
    F: Fn(DataMap, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<DataMap, E>> + Send + 'static,
    E: Display,
{
    Handler::Async(Arc::new(move |data, ctx| {
        let fut = f(data, ctx);
        Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
    }))
}

pub(crate) fn streaming<F, Fut, E>(f: F) -> Handler
where
    F: Fn(DataMap, RequestContext, ChunkSink) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    Handler::Streaming(Arc::new(move |data, ctx, sink| {
        let fut = f(data, ctx, sink);
        Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
    }))
}

/// Decodes a typed request; a failure is a handler error (the peer sees
/// `request processing failed`, as with btlightning's typed handlers).
fn decode<Req: DeserializeOwned>(data: &DataMap) -> Result<Req, String> {
    data.deserialize()
        .map_err(|e| format!("cannot decode request: {e}"))
}

fn encode<Resp: Serialize>(value: &Resp) -> Result<DataMap, String> {
    DataMap::from_typed(value).map_err(|e| format!("cannot encode response: {e}"))
}

pub(crate) fn typed<Req, Resp, F, E>(f: F) -> Handler
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: Fn(Req, RequestContext) -> Result<Resp, E> + Send + Sync + 'static,
    E: Display,
{
    Handler::Sync(Arc::new(move |data, ctx| {
        let req = decode::<Req>(&data)?;
        let resp = f(req, ctx).map_err(|e| e.to_string())?;
        encode(&resp)
    }))
}

pub(crate) fn typed_async<Req, Resp, F, Fut, E>(f: F) -> Handler
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: Fn(Req, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    E: Display,
{
    let f = Arc::new(f);
    Handler::Async(Arc::new(move |data, ctx| {
        let f = f.clone();
        Box::pin(async move {
            let req = decode::<Req>(&data)?;
            let resp = f(req, ctx).await.map_err(|e| e.to_string())?;
            encode(&resp)
        })
    }))
}

/// Who is asking, and until when the answer is wanted.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub(crate) id: RequestId,
    pub(crate) conn: ConnId,
    pub(crate) validator_hotkey: String,
    pub(crate) remote: SocketAddr,
    pub(crate) synapse_type: String,
    pub(crate) deadline: Instant,
    pub(crate) cancel: Option<crate::cancel::CancelSignal>,
}

impl RequestContext {
    /// The authenticated validator's SS58 hotkey.
    pub fn validator_hotkey(&self) -> &str {
        &self.validator_hotkey
    }

    /// The validator's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The synapse (handler name) that was called.
    pub fn synapse_type(&self) -> &str {
        &self.synapse_type
    }

    /// When the server answers `handler timed out` on its own (`handler_timeout`).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The connection the request arrived on.
    pub fn connection(&self) -> ConnId {
        self.conn
    }

    /// The server's id for this request.
    pub fn request_id(&self) -> RequestId {
        self.id
    }

    /// Whether the validator dropped the query, the connection closed or the deadline
    /// passed. Async and streaming handlers are also dropped at their next await point.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }

    /// Completes when the request is cancelled (never, for inline sync handlers).
    pub async fn cancelled(&self) {
        match &self.cancel {
            Some(c) => c.cancelled().await,
            None => futures_lite::future::pending::<()>().await,
        }
    }
}

/// Where a streaming handler writes its chunks. `send` waits while the stream's queue is
/// full, so a slow validator slows the handler instead of growing memory.
#[derive(Debug)]
pub struct ChunkSink {
    pub(crate) id: RequestId,
    /// What the core has reserved for this handler in the stream's queue.
    pub(crate) credit: std::sync::Arc<crate::credit::SinkCredit>,
    pub(crate) commands: async_channel::Sender<crate::server::Command>,
}

/// The stream is gone (cancelled, timed out, connection lost, or server stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClosed;

impl Display for StreamClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream closed")
    }
}

impl std::error::Error for StreamClosed {}

impl ChunkSink {
    /// Queues one chunk, waiting for room in the stream's queue.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<(), StreamClosed> {
        let data = chunk.into();
        let wants = data.len() as u64;
        let give_back = |bytes| {
            let _ = self
                .commands
                .try_send(crate::server::Command::ReturnCredit {
                    id: self.id,
                    bytes,
                    wants,
                });
        };
        if !self.credit.spend(wants, give_back).await {
            return Err(StreamClosed);
        }
        self.commands
            .try_send(crate::server::Command::Chunk { id: self.id, data })
            .map_err(|_| StreamClosed)
    }

    /// Whether the stream is gone.
    pub fn is_closed(&self) -> bool {
        self.credit.is_closed()
    }
}
