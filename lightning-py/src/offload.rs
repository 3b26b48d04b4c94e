//! A pool of Python threads for an asyncio loop's blocking calls (the synapse Axon's plain
//! `forward_fn`s and the steps of their generators).
//!
//! `loop.run_in_executor` pays, per call, for a `concurrent.futures.Future` and its
//! condition variable, a work item, two chained futures and a `call_soon_threadsafe` with
//! its own self-pipe write: about 50 µs of Python per call on the loop and the pool thread
//! together. Here a call is one job on an `executor::Pool` (taken off its queue with the
//! GIL held, no hand-off between pool threads) and its result goes back through the loop
//! bridge, which wakes the loop once for every result that is ready.

use std::sync::Arc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::bridge::{is_done, resolve, LoopBridge, Shared};
use crate::executor::Pool;
use crate::origin::Origin;

/// Python threads that run calls for asyncio loops (`ThreadPool(name, threads)`).
#[pyclass(frozen, module = "lightning_quic._native", name = "ThreadPool")]
pub struct ThreadPool {
    origin: Origin,
    pool: Pool,
}

#[pymethods]
impl ThreadPool {
    /// Starts `threads` threads named `<name>-<i>`.
    #[new]
    fn new(name: &str, threads: usize) -> PyResult<Self> {
        if threads == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "a thread pool needs at least one thread",
            ));
        }
        let pool = Pool::start(name, threads)
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start threads: {e}")))?;
        Ok(Self {
            origin: Origin::here(),
            pool,
        })
    }

    /// Calls `func(*args)` on a pool thread; its return value or exception resolves `fut`,
    /// a future of the bridge's loop. A call whose future is already done (cancelled)
    /// when a thread takes it is skipped. Raises `RuntimeError` after `shutdown()`.
    fn submit(
        &self,
        bridge: &LoopBridge,
        fut: Py<PyAny>,
        func: Py<PyAny>,
        args: Py<PyTuple>,
    ) -> PyResult<()> {
        self.origin.check(Origin::is_here)?;
        let shared: Arc<Shared> = bridge.shared()?;
        let queued = self.pool.submit(Box::new(move |py| {
            if is_done(fut.bind(py)) {
                return;
            }
            let result = func.call1(py, args.bind(py));
            shared.push(Box::new(move |py| resolve(py, fut, move |_| result)));
        }));
        if queued {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err("the thread pool is shut down"))
        }
    }

    /// Lets the threads finish what is queued and exit; later `submit`s raise. Does not
    /// wait for them.
    fn shutdown(&self) {
        self.pool.close();
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.pool.close();
    }
}
