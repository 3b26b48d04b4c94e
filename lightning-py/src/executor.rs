//! Persistent Python worker threads for sync handlers.
//!
//! Python handlers never run on an endpoint task: the Rust handler sends a job here and
//! awaits its reply. Each worker attaches to the interpreter once for its whole life and
//! releases the GIL only while waiting for work, so a busy server pays no thread-state
//! creation per request, and runs every job already queued before waiting again.

use std::io;

use pyo3::prelude::*;

/// Work for a Python thread; runs with the GIL held.
pub type Job = Box<dyn FnOnce(Python<'_>) + Send>;

/// A pool of worker threads fed by one queue. Clones share the pool.
#[derive(Clone)]
pub struct Pool {
    tx: async_channel::Sender<Job>,
}

/// Stack of each worker: deep enough for conversion at the nesting limit plus handler code.
const STACK_BYTES: usize = 8 << 20;

impl Pool {
    /// Starts `threads` workers named `<name>-<i>`.
    pub fn start(name: &str, threads: usize) -> io::Result<Pool> {
        let (tx, rx) = async_channel::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(STACK_BYTES)
                .spawn(move || worker(rx))?;
        }
        Ok(Pool { tx })
    }

    /// Queues a job; `false` once the pool is closed.
    pub fn submit(&self, job: Job) -> bool {
        self.tx.try_send(job).is_ok()
    }

    /// Lets the workers finish the queued jobs and exit. Does not wait for them: the caller
    /// may be a worker itself, and a join with the GIL held could deadlock.
    pub fn close(&self) {
        self.tx.close();
    }
}

fn worker(rx: async_channel::Receiver<Job>) {
    // `try_attach`: an interpreter that is already finalizing gets no new Python thread.
    let _ = Python::try_attach(|py| loop {
        let Ok(job) = py.detach(|| rx.recv_blocking()) else {
            return;
        };
        job(py);
        // Jobs that queued up meanwhile run under this same GIL hold.
        while let Ok(job) = rx.try_recv() {
            job(py);
        }
    });
}
