//! Persistent Python worker threads for sync handlers.
//!
//! Python handlers never run on an endpoint task: the Rust handler queues a job here and
//! awaits its reply. Each worker attaches to the interpreter once for its whole life and
//! releases the GIL only while it sleeps.
//!
//! Jobs are taken off the queue only with the GIL held. A worker woken while another one
//! is busy therefore does not hold a job while it queues for the GIL: whoever has the GIL
//! runs what is queued, and jobs are not handed from thread to thread one GIL switch at a
//! time. Before starting a job, a worker wakes one helper if more are queued, so a handler
//! that waits (I/O, `time.sleep`, a native call releasing the GIL) never holds up the rest.

use std::io;
use std::sync::Arc;

use event_listener::{Event, Listener};
use pyo3::prelude::*;

/// Work for a Python thread; runs with the GIL held.
pub type Job = Box<dyn FnOnce(Python<'_>) + Send>;

/// The queue and the wake-ups of one pool.
struct Shared {
    tx: async_channel::Sender<Job>,
    rx: async_channel::Receiver<Job>,
    /// Wakes sleeping workers; a notification means "there may be work".
    work: Event,
}

/// A pool of worker threads fed by one queue. Clones share the pool.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

/// Stack of each worker: deep enough for conversion at the nesting limit plus handler code.
const STACK_BYTES: usize = 8 << 20;

impl Pool {
    /// Starts `threads` workers named `<name>-<i>`.
    pub fn start(name: &str, threads: usize) -> io::Result<Pool> {
        let (tx, rx) = async_channel::unbounded::<Job>();
        let shared = Arc::new(Shared {
            tx,
            rx,
            work: Event::new(),
        });
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            let thread_name = format!("{name}-{i}");
            std::thread::Builder::new()
                .name(thread_name.clone())
                .stack_size(STACK_BYTES)
                .spawn(move || worker(&shared, &thread_name))?;
        }
        Ok(Pool { shared })
    }

    /// Queues a job; `false` once the pool is closed. Never blocks and never takes the
    /// GIL (it runs on endpoint tasks).
    pub fn submit(&self, job: Job) -> bool {
        if self.shared.tx.try_send(job).is_err() {
            return false;
        }
        // At most one sleeping worker is woken per burst: one already woken and not yet
        // running will take whatever is queued.
        self.shared.work.notify(1);
        true
    }

    /// Lets the workers finish the queued jobs and exit. Does not wait for them: the caller
    /// may be a worker itself, and a join with the GIL held could deadlock.
    pub fn close(&self) {
        self.shared.tx.close();
        self.shared.work.notify(usize::MAX);
    }
}

fn worker(shared: &Shared, thread_name: &str) {
    // `try_attach`: an interpreter that is already finalizing gets no new Python thread.
    let _ = Python::try_attach(|py| {
        name_python_thread(py, thread_name);
        serve(py, shared);
    });
}

/// Gives the thread its pool name in Python too (`threading.current_thread().name`, what
/// logging's `%(threadName)s` shows), instead of the `Dummy-<n>` of a foreign thread.
/// Cosmetic: a failure (an interpreter shutting down) is ignored.
fn name_python_thread(py: Python<'_>, thread_name: &str) {
    let _ = py
        .import("threading")
        .and_then(|t| t.call_method0("current_thread"))
        .and_then(|t| t.setattr("name", thread_name));
}

/// Runs jobs until the pool is closed and its queue is empty.
fn serve(py: Python<'_>, shared: &Shared) {
    loop {
        while let Ok(job) = shared.rx.try_recv() {
            if !shared.rx.is_empty() {
                // More work than this thread is about to do: wake a helper in case this
                // job waits on something.
                shared.work.notify(1);
            }
            job(py);
        }
        if shared.rx.is_closed() {
            return;
        }
        let listener = shared.work.listen();
        // Re-checked after registering, so a job queued in between is not slept through.
        if !shared.rx.is_empty() || shared.rx.is_closed() {
            continue;
        }
        py.detach(|| listener.wait());
    }
}
