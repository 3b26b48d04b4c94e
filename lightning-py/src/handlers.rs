//! Running Python handlers on a worker thread: the dict in, the call, the result out.
//!
//! Every failure is logged through `logging` (logger `lightning_quic`) with its traceback,
//! and the peer gets only the generic wire string (`request processing failed` /
//! `stream processing failed`): exception text never leaves the process.

use std::sync::Arc;

use lightning_tokio::{ChunkSink, DataMap, RequestContext};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyString};

use crate::context::{self, PyRequestContext};
use crate::convert::{datamap_to_dict, dict_to_datamap};
use crate::logging::log_error;

/// A registered Python handler.
pub struct PyHandler {
    /// The callable.
    pub func: Py<PyAny>,
    /// Called as `func(data, ctx)` instead of `func(data)`.
    pub with_context: bool,
    /// The synapse name, for log messages.
    pub synapse: String,
}

/// What the endpoint learns about a failed handler (the peer sees the generic string).
const FAILED: &str = "python handler failed";

impl PyHandler {
    /// Calls the handler with the request's dict (and context), the context current.
    fn call<'py>(
        &self,
        py: Python<'py>,
        data: &DataMap,
        ctx: RequestContext,
    ) -> Result<Bound<'py, PyAny>, String> {
        let dict = datamap_to_dict(py, data)
            .map_err(|e| self.fail(py, "could not decode the request", e))?;
        let pyctx = Py::new(py, PyRequestContext::new(ctx))
            .map_err(|e| self.fail(py, "could not build the request context", e))?;
        let _current = context::enter(pyctx.clone_ref(py));
        let result = if self.with_context {
            self.func.call1(py, (dict, pyctx))
        } else {
            self.func.call1(py, (dict,))
        };
        result
            .map(|r| r.into_bound(py))
            .map_err(|e| self.fail(py, "raised an exception", e))
    }

    fn fail(&self, py: Python<'_>, what: &str, error: PyErr) -> String {
        log_error(
            py,
            &format!("handler for synapse '{}' {what}", self.synapse),
            Some(error),
        );
        FAILED.to_string()
    }

    fn fail_plain(&self, py: Python<'_>, what: &str) -> String {
        log_error(
            py,
            &format!("handler for synapse '{}' {what}", self.synapse),
            None,
        );
        FAILED.to_string()
    }
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Runs a unary handler: dict in, dict out.
pub fn run_unary(
    py: Python<'_>,
    handler: &Arc<PyHandler>,
    data: DataMap,
    ctx: RequestContext,
) -> Result<DataMap, String> {
    if ctx.is_cancelled() {
        // Nobody is waiting for the answer any more.
        return Err("cancelled".into());
    }
    let result = handler.call(py, &data, ctx)?;
    if !result.is_instance_of::<PyDict>() {
        return Err(handler.fail_plain(
            py,
            &format!("returned {}, expected dict", type_name(&result)),
        ));
    }
    dict_to_datamap(&result)
        .map_err(|e| handler.fail(py, "returned data that cannot be encoded", e))
}

/// One chunk from a streaming handler: bytes-like (`bytes`, `bytearray`, `memoryview`, a
/// sequence of ints); `str` is refused, as in btlightning.
pub fn chunk_bytes(item: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = item.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if item.is_instance_of::<PyMemoryView>() {
        return item.call_method0("tobytes")?.extract();
    }
    if item.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "streaming handlers must yield bytes-like chunks, not str (encode it first)",
        ));
    }
    item.extract::<Vec<u8>>()
}

fn close_iterator(iter: &Bound<'_, PyAny>) {
    if iter.hasattr("close").unwrap_or(false) {
        let _ = iter.call_method0("close");
    }
}

/// Runs a streaming handler: iterates what it returns and sends each chunk, waiting for
/// room without the GIL (a slow validator slows this handler, not the process).
pub fn run_stream(
    py: Python<'_>,
    handler: &Arc<PyHandler>,
    data: DataMap,
    ctx: RequestContext,
    sink: ChunkSink,
) -> Result<(), String> {
    if ctx.is_cancelled() {
        return Ok(());
    }
    let probe = ctx.clone();
    let result = handler.call(py, &data, ctx)?;
    let mut iter = result
        .try_iter()
        .map_err(|e| handler.fail(py, "did not return an iterable", e))?;
    loop {
        if probe.is_cancelled() {
            close_iterator(&result);
            return Ok(());
        }
        let item = match iter.next() {
            None => return Ok(()),
            Some(Ok(item)) => item,
            Some(Err(e)) => return Err(handler.fail(py, "raised while streaming", e)),
        };
        let chunk = match chunk_bytes(&item) {
            Ok(c) => c,
            Err(e) => {
                close_iterator(&result);
                return Err(handler.fail(py, "yielded a chunk that is not bytes-like", e));
            }
        };
        let sent = py.detach(|| futures_lite::future::block_on(sink.send(chunk)));
        if sent.is_err() {
            // The stream is gone (cancelled, timed out, connection closed).
            close_iterator(&result);
            return Ok(());
        }
    }
}
