//! Which process an object was made in, so that a `fork` child gets a clear error instead
//! of a hang (the child has none of the parent's runtime threads).
//!
//! Comparing process ids costs a system call (`getpid`; glibc no longer caches it), and
//! the asyncio query path checked three times per query: 4% of an asyncio validator's time
//! with the GIL held on a 2-core VM (py-spy, c=32 against a Rust miner). Hot paths compare
//! a fork count instead: the module registers a hook with `os.register_at_fork` that bumps
//! it in every child, so every fork made through Python (`os.fork`, `multiprocessing`,
//! `subprocess` with `preexec_fn`) is seen with one atomic load. A fork that bypasses
//! Python's hooks (a C library calling `fork()` itself) is still caught by the exact check,
//! which adds the process id and serves the destructors.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Forks this process descends from, as seen by Python's after-fork hook.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Bumps the fork count in a child (registered with `os.register_at_fork`).
#[pyfunction]
fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

/// Registers the after-fork hook; called once, when the module is imported.
pub fn register_fork_hook(py: Python<'_>) -> PyResult<()> {
    let hook = wrap_pyfunction!(after_fork_in_child, py)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("after_in_child", hook)?;
    py.import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}

/// The process an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pid: u32,
    forks: u64,
}

impl Origin {
    /// This process.
    pub fn here() -> Self {
        Self {
            pid: std::process::id(),
            forks: FORKS.load(Ordering::Acquire),
        }
    }

    /// Whether this is still the process of origin, as far as forks made through Python
    /// tell: one atomic load, for the per-query paths.
    pub fn is_here(&self) -> bool {
        self.forks == FORKS.load(Ordering::Acquire)
    }

    /// Whether this is still the process of origin, whatever made the fork: one system
    /// call more, for destructors and other rare paths.
    pub fn is_here_exactly(&self) -> bool {
        self.is_here() && self.pid == std::process::id()
    }

    /// `Ok` while `is_ours` ([`Self::is_here`] or [`Self::is_here_exactly`]) says this is
    /// still the process of origin, else [`forked_error`].
    pub fn check(&self, is_ours: fn(&Origin) -> bool) -> PyResult<()> {
        if is_ours(self) {
            Ok(())
        } else {
            Err(forked_error())
        }
    }
}

/// The error every object made before a `fork` raises in the child.
pub fn forked_error() -> PyErr {
    PyRuntimeError::new_err(
        "lightning_quic objects cannot be used after fork(); create them in the child process",
    )
}
