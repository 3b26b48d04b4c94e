//! The one tokio runtime of the process, and the signal-aware blocking wait every sync
//! method goes through.
//!
//! The runtime is created on first use, never at import (a thread started at import makes
//! every later `fork` unsafe), and is leaked on purpose: dropping a runtime waits for its
//! tasks, which must never happen from a destructor holding the GIL, nor at interpreter
//! exit. After `fork` the child has none of the parent's threads, so a different pid gets a
//! fresh runtime.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Handle;

use crate::origin::Origin;

/// How often a blocked call wakes to let Python run signal handlers (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// The runtime's handle and the process it was made in.
static RUNTIME: Mutex<Option<(Origin, Handle)>> = Mutex::new(None);

/// Worker threads of the runtime: `LIGHTNING_QUIC_THREADS`, else 2 (the endpoint tasks are
/// light; Python work runs on the handler threads, not here).
fn worker_threads() -> usize {
    std::env::var("LIGHTNING_QUIC_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

/// The runtime of this process, created now if needed (or again in a fork child,
/// however the fork was made).
pub fn handle() -> PyResult<Handle> {
    runtime_of(Origin::is_here_exactly)
}

/// [`handle`] for the per-query asyncio path: tells a fork child without a system call,
/// when the fork went through Python (see [`crate::origin`]).
pub fn query_handle() -> PyResult<Handle> {
    runtime_of(Origin::is_here)
}

fn runtime_of(is_ours: fn(&Origin) -> bool) -> PyResult<Handle> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((origin, handle)) = slot.as_ref() {
        if is_ours(origin) {
            return Ok(handle.clone());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .thread_name("lightning-rt")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("Failed to create async runtime: {e}")))?;
    let handle = runtime.handle().clone();
    // Leaked: see the module comment. A parent's runtime inherited by a fork child is
    // leaked too (its threads do not exist there).
    std::mem::forget(runtime);
    *slot = Some((Origin::here(), handle.clone()));
    Ok(handle)
}

/// Runs `fut` to completion with the GIL released, waking every 100 ms to run Python's
/// signal handlers; a `KeyboardInterrupt` (or any exception a handler raises) drops the
/// future, which cancels the operation (a query is cancelled on the wire).
pub fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let handle = handle()?;
    let mut fut = std::pin::pin!(fut);
    loop {
        let slice = py.detach(|| {
            // Entering the runtime lets its timer serve this thread; the future itself is
            // polled here, so any thread (a Python handler thread too) may wait.
            let _guard = handle.enter();
            futures_lite::future::block_on(tokio::time::timeout(SIGNAL_POLL, fut.as_mut()))
        });
        match slice {
            Ok(out) => return Ok(out),
            Err(_) => py.check_signals()?,
        }
    }
}
