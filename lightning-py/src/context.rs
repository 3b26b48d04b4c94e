//! `RequestContext`: who sent the request a handler is running for, and until when.
//!
//! Two-argument handlers receive it; one-argument (btlightning-style) handlers can ask for
//! it with `current_request()`, which reads the handler thread's current request.

use std::cell::RefCell;
use std::time::Instant;

use lightning_tokio::RequestContext;
use pyo3::prelude::*;

thread_local! {
    /// The request the handler on this thread is serving.
    static CURRENT: RefCell<Option<Py<PyRequestContext>>> = const { RefCell::new(None) };
}

/// Facts about one request, for its handler.
#[pyclass(frozen, module = "lightning_quic._native", name = "RequestContext")]
pub struct PyRequestContext {
    ctx: RequestContext,
}

impl PyRequestContext {
    /// Wraps the driver's context.
    pub fn new(ctx: RequestContext) -> Self {
        Self { ctx }
    }
}

#[pymethods]
impl PyRequestContext {
    /// The validator's SS58 hotkey, proven by its signed handshake.
    #[getter]
    fn validator_hotkey(&self) -> &str {
        self.ctx.validator_hotkey()
    }

    /// The validator's address as `(ip, port)`.
    #[getter]
    fn remote(&self) -> (String, u16) {
        let addr = self.ctx.remote();
        (addr.ip().to_string(), addr.port())
    }

    /// The synapse (handler name) called.
    #[getter]
    fn synapse_type(&self) -> &str {
        self.ctx.synapse_type()
    }

    /// The server's id of this request.
    #[getter]
    fn request_id(&self) -> u64 {
        self.ctx.request_id().0
    }

    /// When the server answers `handler timed out`, on the `time.monotonic()` clock.
    #[getter]
    fn deadline(&self, py: Python<'_>) -> PyResult<f64> {
        let now: f64 = py.import("time")?.call_method0("monotonic")?.extract()?;
        Ok(now + self.remaining())
    }

    /// Seconds left until the deadline (0 once passed).
    fn remaining(&self) -> f64 {
        self.ctx
            .deadline()
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    }

    /// Whether the validator cancelled, the connection closed or the deadline passed.
    #[getter]
    fn cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }

    fn __repr__(&self) -> String {
        format!(
            "RequestContext(synapse_type={:?}, validator_hotkey={:?}, remote={})",
            self.ctx.synapse_type(),
            self.ctx.validator_hotkey(),
            self.ctx.remote()
        )
    }
}

/// The context of the request the calling handler thread is serving, or `None` outside a
/// handler.
#[pyfunction]
pub fn current_request(py: Python<'_>) -> Option<Py<PyRequestContext>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|ctx| ctx.clone_ref(py)))
}

/// Makes `ctx` the current request of this thread until the returned guard drops.
pub fn enter(ctx: Py<PyRequestContext>) -> CurrentGuard {
    CURRENT.with(|c| *c.borrow_mut() = Some(ctx));
    CurrentGuard
}

/// Clears the thread's current request.
pub struct CurrentGuard;

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        // `try_with`: the thread-local may already be gone at thread exit.
        let _ = CURRENT.try_with(|c| c.borrow_mut().take());
    }
}
