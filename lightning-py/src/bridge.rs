//! The loop bridge: completions from Rust tasks to an asyncio event loop, without the GIL
//! off the loop thread.
//!
//! A Rust task that finishes work for asyncio pushes a closure onto a lock-free queue and,
//! if the loop has not been woken since its last drain, writes one byte to a socket pair
//! whose read end the loop watches (`loop.add_reader`). The loop's reader callback drains
//! the queue and runs every closure on the loop thread, where the GIL is held anyway:
//! results are converted there, and asyncio futures are resolved in one batch per wake-up.
//! (PyO3's experimental async and per-call `call_soon_threadsafe` would instead take the
//! GIL on whichever runtime thread finishes the work.)

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;

use crate::origin::Origin;
use crate::runtime::query_handle;

/// Work to finish on the loop thread.
pub type Completion = Box<dyn FnOnce(Python<'_>) + Send>;

/// The queue and the wake-up socket of one event loop.
pub struct Shared {
    tx: async_channel::Sender<Completion>,
    rx: async_channel::Receiver<Completion>,
    /// Set when a wake-up byte is in flight; cleared by the drain.
    armed: AtomicBool,
    writer: UnixStream,
    reader: Mutex<UnixStream>,
}

impl Shared {
    /// Queues `work` for the loop thread and wakes the loop if needed. Never blocks and
    /// never takes the GIL: safe on an endpoint task.
    pub fn push(&self, work: Completion) {
        if self.tx.try_send(work).is_err() {
            return;
        }
        if !self.armed.swap(true, Ordering::SeqCst) {
            // A full socket buffer means a wake-up is pending anyway.
            let _ = (&self.writer).write(&[1]);
        }
    }
}

/// Connects Rust tasks to one asyncio event loop (made by the `lightning_quic` façade,
/// one per loop).
#[pyclass(frozen, module = "lightning_quic._native", name = "LoopBridge")]
pub struct LoopBridge {
    origin: Origin,
    shared: Arc<Shared>,
}

impl LoopBridge {
    /// The shared half, for tasks (checked once per query: the fork check without a
    /// system call).
    pub fn shared(&self) -> PyResult<Arc<Shared>> {
        self.origin.check(Origin::is_here)?;
        Ok(self.shared.clone())
    }
}

#[pymethods]
impl LoopBridge {
    #[new]
    fn new() -> PyResult<Self> {
        let (reader, writer) = UnixStream::pair()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot create the loop bridge: {e}")))?;
        for s in [&reader, &writer] {
            s.set_nonblocking(true).map_err(|e| {
                PyRuntimeError::new_err(format!("cannot create the loop bridge: {e}"))
            })?;
        }
        let (tx, rx) = async_channel::unbounded();
        Ok(Self {
            origin: Origin::here(),
            shared: Arc::new(Shared {
                tx,
                rx,
                armed: AtomicBool::new(false),
                writer,
                reader: Mutex::new(reader),
            }),
        })
    }

    /// The file descriptor to watch with `loop.add_reader`.
    fn fileno(&self) -> i32 {
        self.shared
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_raw_fd()
    }

    /// The reader callback: runs every queued completion on the loop thread.
    fn drain(&self, py: Python<'_>) {
        if !self.origin.is_here() {
            return;
        }
        // Order matters. First consume the wake-up bytes, then disarm, then empty the
        // queue: a push before the disarm is popped below; a push after it writes a new
        // byte. (Disarming before consuming could eat the byte of a push made in between
        // and leave the bridge armed with nothing to wake the loop.)
        {
            let mut reader = self.shared.reader.lock().unwrap_or_else(|e| e.into_inner());
            let mut buf = [0u8; 256];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        }
        self.shared.armed.store(false, Ordering::SeqCst);
        while let Ok(work) = self.shared.rx.try_recv() {
            work(py);
        }
    }
}

/// A running Rust task behind an asyncio future; `cancel()` drops it (a query is then
/// cancelled on the wire).
#[pyclass(frozen, module = "lightning_quic._native", name = "Ticket")]
pub struct Ticket {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl Ticket {
    /// Stops the task if it is still running.
    fn cancel(&self) {
        self.abort.abort();
    }
}

/// Runs `work` on the runtime; its output (a closure, run on the loop thread) resolves the
/// asyncio future `fut`: `Ok(value)` → `set_result`, `Err` → `set_exception`. Nothing is
/// done if the future was cancelled meanwhile.
pub fn spawn<W, C>(bridge: &LoopBridge, fut: Py<PyAny>, work: W) -> PyResult<Ticket>
where
    W: Future<Output = C> + Send + 'static,
    C: FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let shared = bridge.shared()?;
    let task = query_handle()?.spawn(async move {
        let convert = work.await;
        shared.push(Box::new(move |py| resolve(py, fut, convert)));
    });
    Ok(Ticket {
        abort: task.abort_handle(),
    })
}

/// Whether an asyncio future is done (resolved or cancelled); a future that cannot say
/// counts as done, so nothing is run or set for it.
pub fn is_done(fut: &Bound<'_, PyAny>) -> bool {
    fut.call_method0(intern!(fut.py(), "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

/// Resolves the asyncio future `fut` with what `convert` gives, on the loop thread;
/// nothing is done if it is already done (cancelled).
pub fn resolve<C>(py: Python<'_>, fut: Py<PyAny>, convert: C)
where
    C: FnOnce(Python<'_>) -> PyResult<Py<PyAny>>,
{
    let fut = fut.bind(py);
    if is_done(fut) {
        return;
    }
    let _ = match convert(py) {
        Ok(value) => fut.call_method1(intern!(py, "set_result"), (value,)),
        Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),)),
    };
}
