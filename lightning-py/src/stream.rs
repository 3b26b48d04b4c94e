//! `PyStreamingResponse`: the chunks of a streaming query, as a Python iterator.
//!
//! `__next__` waits for the next chunk with the GIL released. After the end it keeps
//! raising `StopIteration` (btlightning raises `ConnectionError` on a second read).
//! `close()` (or leaving a `with` block, or dropping the object) cancels the stream on the
//! wire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightning_tokio::ChunkStream;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::bridge::{spawn, LoopBridge, Ticket};
use crate::errors::{stream_error, to_py};
use crate::origin::Origin;
use crate::runtime::wait;

/// Where the stream is.
enum State {
    Open(ChunkStream),
    /// Taken by a thread that is waiting for a chunk.
    Busy,
    Done,
}

/// A streaming response (btlightning's `PyStreamingResponse`).
#[pyclass(
    frozen,
    module = "lightning_quic._native",
    name = "PyStreamingResponse"
)]
pub struct StreamingResponse {
    origin: Origin,
    chunk_timeout: Option<Duration>,
    /// Shared with the task of an async read in progress.
    state: Arc<Mutex<State>>,
}

impl StreamingResponse {
    /// Wraps an open stream; `chunk_timeout` bounds each wait for a chunk.
    pub fn new(stream: ChunkStream, chunk_timeout: Option<Duration>) -> Self {
        Self {
            origin: Origin::here(),
            chunk_timeout,
            state: Arc::new(Mutex::new(State::Open(stream))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Takes the stream for one read; `Err(None)` once it has ended. `is_ours` is the
    /// fork check: exact for blocking reads, the one without a system call for asyncio's
    /// per-chunk reads (see [`crate::origin`]).
    fn take(&self, is_ours: fn(&Origin) -> bool) -> PyResult<Option<ChunkStream>> {
        self.origin.check(is_ours)?;
        // Bound first: a guard in the match scrutinee would live through the arms.
        let taken = std::mem::replace(&mut *self.lock(), State::Busy);
        match taken {
            State::Open(s) => Ok(Some(s)),
            State::Done => {
                *self.lock() = State::Done;
                Ok(None)
            }
            State::Busy => Err(PyRuntimeError::new_err(
                "this stream is being read by another thread or task",
            )),
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts the stream back after a read, unless it was closed meanwhile (then it is dropped,
/// which cancels it on the wire).
fn put_back(state: &Mutex<State>, next: State) {
    let mut guard = lock(state);
    if !matches!(*guard, State::Done) {
        *guard = next;
    }
}

/// The outcome of one read: a chunk, the end, or an error.
type ReadOutcome = Option<lightning_tokio::Result<Option<bytes::Bytes>>>;

async fn read_one(stream: &mut ChunkStream, timeout: Option<Duration>) -> ReadOutcome {
    match timeout {
        Some(t) => tokio::time::timeout(t, stream.next_chunk()).await.ok(),
        None => Some(stream.next_chunk().await),
    }
}

/// A read's outcome as a Python result: `Some(chunk)`, `None` at the end, or the error.
fn outcome_result(outcome: ReadOutcome) -> PyResult<Option<bytes::Bytes>> {
    match outcome {
        None => Err(stream_error("stream error: chunk read timed out")),
        Some(Ok(chunk)) => Ok(chunk),
        Some(Err(e)) => Err(to_py(e)),
    }
}

/// Where the stream goes after a read with this outcome.
fn after(outcome: &ReadOutcome, stream: ChunkStream) -> State {
    match outcome {
        Some(Ok(Some(_))) => State::Open(stream),
        _ => State::Done,
    }
}

#[pymethods]
impl StreamingResponse {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let Some(mut stream) = self.take(Origin::is_here_exactly)? else {
            return Err(PyStopIteration::new_err(()));
        };
        let timeout = self.chunk_timeout;
        let outcome = match wait(py, read_one(&mut stream, timeout)) {
            Ok(outcome) => outcome,
            // Interrupted (Ctrl-C): the stream stays usable.
            Err(e) => {
                put_back(&self.state, State::Open(stream));
                return Err(e);
            }
        };
        put_back(&self.state, after(&outcome, stream));
        match outcome_result(outcome)? {
            Some(chunk) => Ok(PyBytes::new(py, &chunk)),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// Reads the next chunk for asyncio: resolves `fut` with `bytes`, or `None` at the end.
    fn next_async(&self, bridge: &LoopBridge, fut: Py<PyAny>) -> PyResult<Ticket> {
        let stream = self.take(Origin::is_here)?;
        let state = self.state.clone();
        let timeout = self.chunk_timeout;
        spawn(bridge, fut, async move {
            let outcome = match stream {
                Some(mut stream) => {
                    let outcome = read_one(&mut stream, timeout).await;
                    put_back(&state, after(&outcome, stream));
                    Some(outcome)
                }
                None => None,
            };
            move |py: Python<'_>| -> PyResult<Py<PyAny>> {
                match outcome {
                    None => Ok(py.None()),
                    Some(outcome) => match outcome_result(outcome)? {
                        Some(chunk) => Ok(PyBytes::new(py, &chunk).into_any().unbind()),
                        None => Ok(py.None()),
                    },
                }
            }
        })
    }

    /// Stops reading and cancels the stream on the wire (idempotent). A read in progress
    /// finishes, then the stream is dropped.
    fn close(&self) {
        *self.lock() = State::Done;
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }
}

impl Drop for StreamingResponse {
    fn drop(&mut self) {
        if !self.origin.is_here_exactly() {
            let state = std::mem::replace(&mut *lock(&self.state), State::Done);
            std::mem::forget(state);
        }
    }
}
