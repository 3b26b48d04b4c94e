//! `PyStreamingResponse`: the chunks of a streaming query, as a Python iterator.
//!
//! `__next__` waits for the next chunk with the GIL released. After the end it keeps
//! raising `StopIteration` (btlightning raises `ConnectionError` on a second read).
//! `close()` (or leaving a `with` block, or dropping the object) cancels the stream on the
//! wire.

use std::sync::Mutex;
use std::time::Duration;

use lightning_tokio::ChunkStream;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{stream_error, to_py};
use crate::runtime::{forked_error, wait};

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
    pid: u32,
    chunk_timeout: Option<Duration>,
    state: Mutex<State>,
}

impl StreamingResponse {
    /// Wraps an open stream; `chunk_timeout` bounds each wait for a chunk.
    pub fn new(stream: ChunkStream, chunk_timeout: Option<Duration>) -> Self {
        Self {
            pid: std::process::id(),
            chunk_timeout,
            state: Mutex::new(State::Open(stream)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl StreamingResponse {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if std::process::id() != self.pid {
            return Err(forked_error());
        }
        // Bound first: a guard in the match scrutinee would live through the arms.
        let taken = std::mem::replace(&mut *self.lock(), State::Busy);
        let mut stream = match taken {
            State::Open(s) => s,
            State::Done => {
                *self.lock() = State::Done;
                return Err(PyStopIteration::new_err(()));
            }
            State::Busy => {
                return Err(PyRuntimeError::new_err(
                    "this stream is being read by another thread",
                ))
            }
        };
        let timeout = self.chunk_timeout;
        let outcome = wait(py, async {
            match timeout {
                Some(t) => tokio::time::timeout(t, stream.next_chunk()).await.ok(),
                None => Some(stream.next_chunk().await),
            }
        });
        match outcome {
            // Interrupted (Ctrl-C): the stream stays usable.
            Err(e) => {
                *self.lock() = State::Open(stream);
                Err(e)
            }
            Ok(None) => {
                *self.lock() = State::Done;
                Err(stream_error("stream error: chunk read timed out"))
            }
            Ok(Some(Ok(Some(chunk)))) => {
                *self.lock() = State::Open(stream);
                Ok(PyBytes::new(py, &chunk))
            }
            Ok(Some(Ok(None))) => {
                *self.lock() = State::Done;
                Err(PyStopIteration::new_err(()))
            }
            Ok(Some(Err(e))) => {
                *self.lock() = State::Done;
                Err(to_py(e))
            }
        }
    }

    /// Stops reading and cancels the stream on the wire (idempotent).
    fn close(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Busy) {
            *state = State::Done;
        }
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
        if std::process::id() != self.pid {
            let state = std::mem::replace(
                self.state.get_mut().unwrap_or_else(|e| e.into_inner()),
                State::Done,
            );
            std::mem::forget(state);
        }
    }
}
