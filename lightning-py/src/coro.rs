//! Coroutine handlers: requests handed to an asyncio event loop through the loop bridge.
//!
//! The Rust handler (on the endpoint task) only pushes a closure to the bridge. On the loop
//! thread the closure builds the request dict and calls the façade's `spawn(data, ctx,
//! responder)`, which starts an `asyncio.Task`; the task answers through the `Responder`.
//! If the request is cancelled (validator gone, deadline, server stopped) the task is
//! cancelled in turn. Async generators stream through a `StreamSink` whose `send_async`
//! resolves once the chunk has room (back-pressure without blocking the loop).

use std::sync::{Arc, Mutex};

use lightning_tokio::{ChunkSink, DataMap, RequestContext};
use pyo3::prelude::*;

use crate::bridge::{spawn, LoopBridge, Shared, Ticket};
use crate::context::PyRequestContext;
use crate::convert::{datamap_to_dict, dict_to_datamap};
use crate::handlers::chunk_bytes;
use crate::logging::log_error;

/// A registered coroutine handler: the façade's spawner and the loop it runs on.
pub struct CoroHandler {
    /// `spawn(data, ctx, responder) -> asyncio.Task`.
    pub spawn: Py<PyAny>,
    /// The loop that runs the tasks.
    pub bridge: Arc<Shared>,
    /// The synapse name, for log messages.
    pub synapse: String,
}

type Reply = async_channel::Sender<Result<DataMap, String>>;
type TaskSlot = Arc<Mutex<Option<Py<PyAny>>>>;

/// The answer channel of one request, handed to its task.
#[pyclass(frozen, module = "lightning_quic._native", name = "Responder")]
pub struct Responder {
    reply: Mutex<Option<Reply>>,
    synapse: String,
}

impl Responder {
    fn send(&self, result: Result<DataMap, String>) {
        if let Some(reply) = self.reply.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = reply.try_send(result);
        }
    }
}

#[pymethods]
impl Responder {
    /// Answers with the handler's result (must be a dict; anything else is logged and
    /// answered `request processing failed`).
    fn respond(&self, py: Python<'_>, result: &Bound<'_, PyAny>) {
        if !result.is_instance_of::<pyo3::types::PyDict>() {
            let ty = result
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            log_error(
                py,
                &format!(
                    "handler for synapse '{}' returned {ty}, expected dict",
                    self.synapse
                ),
                None,
            );
            return self.send(Err("python handler failed".into()));
        }
        match dict_to_datamap(result) {
            Ok(map) => self.send(Ok(map)),
            Err(e) => {
                log_error(
                    py,
                    &format!(
                        "handler for synapse '{}' returned data that cannot be encoded",
                        self.synapse
                    ),
                    Some(e),
                );
                self.send(Err("python handler failed".into()));
            }
        }
    }

    /// Answers `request processing failed` (the façade has logged why).
    fn fail(&self) {
        self.send(Err("python handler failed".into()));
    }

    /// Answers `success: false` with `message` in `error`, sent to the peer as is (a
    /// refusal the handler chose to explain, e.g. a blacklist's reason; at most 1024 bytes).
    fn reject(&self, message: &str) {
        self.send(Err(lightning_tokio::peer_error(message)));
    }
}

/// Cancels the request's task if the request goes away before it answered.
struct CancelTask {
    bridge: Arc<Shared>,
    slot: TaskSlot,
    armed: bool,
}

impl Drop for CancelTask {
    fn drop(&mut self) {
        if self.armed {
            let slot = self.slot.clone();
            self.bridge.push(Box::new(move |py| {
                if let Some(task) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = task.call_method0(py, "cancel");
                }
            }));
        }
    }
}

/// Where an async generator's chunks go, and how its stream ends.
#[pyclass(frozen, module = "lightning_quic._native", name = "StreamSink")]
pub struct StreamSink {
    sink: Arc<ChunkSink>,
    end: Mutex<Option<async_channel::Sender<Result<(), String>>>>,
}

impl StreamSink {
    fn end(&self, result: Result<(), String>) {
        if let Some(end) = self.end.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = end.try_send(result);
        }
    }
}

#[pymethods]
impl StreamSink {
    /// Sends one bytes-like chunk: resolves `fut` with True once it is queued, or False if
    /// the stream is gone (cancelled, timed out, closed).
    fn send_async(
        &self,
        bridge: &LoopBridge,
        fut: Py<PyAny>,
        chunk: &Bound<'_, PyAny>,
    ) -> PyResult<Ticket> {
        let chunk = chunk_bytes(chunk)?;
        let sink = self.sink.clone();
        spawn(bridge, fut, async move {
            let sent = sink.send(chunk).await.is_ok();
            move |py: Python<'_>| -> PyResult<Py<PyAny>> {
                Ok(pyo3::types::PyBool::new(py, sent)
                    .to_owned()
                    .into_any()
                    .unbind())
            }
        })
    }

    /// Ends the stream successfully.
    fn finish(&self) {
        self.end(Ok(()));
    }

    /// Ends the stream with `stream processing failed` (the façade has logged why).
    fn fail(&self) {
        self.end(Err("python handler failed".into()));
    }

    /// Ends the stream with `success: false` and `message` in `error`, sent as is.
    fn reject(&self, message: &str) {
        self.end(Err(lightning_tokio::peer_error(message)));
    }
}

/// Starts the task for one request on the loop thread; `answer` is the `Responder` or
/// `StreamSink` handed to it.
fn start<A: pyo3::PyClass + Into<pyo3::PyClassInitializer<A>>>(
    py: Python<'_>,
    h: &CoroHandler,
    data: DataMap,
    ctx: RequestContext,
    answer: A,
    slot: &TaskSlot,
) {
    let started = (|| -> PyResult<Py<PyAny>> {
        let dict = datamap_to_dict(py, &data)?;
        let pyctx = Py::new(py, PyRequestContext::new(ctx))?;
        let answer = Py::new(py, answer)?;
        h.spawn.call1(py, (dict, pyctx, answer))
    })();
    match started {
        Ok(task) => *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(task),
        // The responder was dropped with its reply: the request is answered as failed.
        Err(e) => log_error(
            py,
            &format!("could not start the handler for synapse '{}'", h.synapse),
            Some(e),
        ),
    }
}

/// The Rust async handler for a coroutine handler.
pub fn handler_fn(
    h: Arc<CoroHandler>,
) -> impl Fn(DataMap, RequestContext) -> crate::server::UnaryFuture + Send + Sync + 'static {
    move |data, ctx| {
        let (tx, rx) = async_channel::bounded(1);
        let slot: TaskSlot = Arc::default();
        let task_slot = slot.clone();
        let handler = h.clone();
        // On the endpoint task: a queue push, no Python.
        h.bridge.push(Box::new(move |py| {
            let responder = Responder {
                reply: Mutex::new(Some(tx)),
                synapse: handler.synapse.clone(),
            };
            start(py, &handler, data, ctx, responder, &task_slot);
        }));
        let bridge = h.bridge.clone();
        Box::pin(async move {
            let mut guard = CancelTask {
                bridge,
                slot,
                armed: true,
            };
            let result = rx
                .recv()
                .await
                .unwrap_or_else(|_| Err("handler dropped".to_string()));
            guard.armed = false;
            result
        })
    }
}

/// The Rust streaming handler for an async generator handler.
pub fn stream_fn(
    h: Arc<CoroHandler>,
) -> impl Fn(DataMap, RequestContext, ChunkSink) -> crate::server::StreamFuture + Send + Sync + 'static
{
    move |data, ctx, sink| {
        let (tx, rx) = async_channel::bounded(1);
        let slot: TaskSlot = Arc::default();
        let task_slot = slot.clone();
        let handler = h.clone();
        h.bridge.push(Box::new(move |py| {
            let answer = StreamSink {
                sink: Arc::new(sink),
                end: Mutex::new(Some(tx)),
            };
            start(py, &handler, data, ctx, answer, &task_slot);
        }));
        let bridge = h.bridge.clone();
        Box::pin(async move {
            let mut guard = CancelTask {
                bridge,
                slot,
                armed: true,
            };
            let result = rx
                .recv()
                .await
                .unwrap_or_else(|_| Err("handler dropped".to_string()));
            guard.armed = false;
            result
        })
    }
}
