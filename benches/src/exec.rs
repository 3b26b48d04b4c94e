//! The executors under test: a tokio multi-thread runtime or a smol executor, each with the
//! same number of worker threads, behind one small interface.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A boxed future that yields a spawned task's output.
pub type Joined<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// One executor with its own worker threads.
pub enum Exec {
    /// A tokio multi-thread runtime.
    Tokio(tokio::runtime::Runtime),
    /// A smol (async-executor) executor run by dedicated threads.
    Smol(SmolPool),
}

/// An `async_executor::Executor` driven by `threads` threads until dropped.
pub struct SmolPool {
    executor: Arc<smol::Executor<'static>>,
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for SmolPool {
    fn drop(&mut self) {
        // Closing the channel ends every `run` future; then the threads return.
        self.stop.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Exec {
    /// A tokio runtime with `threads` workers.
    pub fn tokio(threads: usize) -> Result<Self, String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map(Exec::Tokio)
            .map_err(|e| format!("tokio runtime: {e}"))
    }

    /// A smol executor with `threads` threads.
    pub fn smol(threads: usize) -> Result<Self, String> {
        let executor = Arc::new(smol::Executor::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let mut handles = Vec::new();
        for i in 0..threads {
            let ex = executor.clone();
            let stopped = stopped.clone();
            let handle = std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn(move || {
                    smol::block_on(ex.run(async move {
                        let _ = stopped.recv().await;
                    }))
                })
                .map_err(|e| format!("smol thread: {e}"))?;
            handles.push(handle);
        }
        Ok(Exec::Smol(SmolPool {
            executor,
            stop: Some(stop),
            threads: handles,
        }))
    }

    /// Runs `fut` on the calling thread until done; tasks it spawns run on the workers.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        match self {
            Exec::Tokio(rt) => rt.block_on(fut),
            Exec::Smol(_) => smol::block_on(fut),
        }
    }

    /// Spawns `fut` on a worker; the returned future resolves to its output.
    pub fn spawn<F>(&self, fut: F) -> Joined<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Exec::Tokio(rt) => {
                let handle = rt.spawn(fut);
                Box::pin(async move { handle.await.map_err(|e| format!("task failed: {e}")) })
            }
            Exec::Smol(pool) => {
                let task = pool.executor.spawn(fut);
                Box::pin(async move { Ok(task.await) })
            }
        }
    }

    /// The spawner Lightning's smol adapter should use so its tasks share these threads.
    pub fn smol_runtime(&self) -> Option<lightning_smol::Smol> {
        match self {
            Exec::Smol(pool) => {
                let ex = pool.executor.clone();
                Some(lightning_smol::Smol::with_spawner(move |task| {
                    ex.spawn(task).detach();
                }))
            }
            Exec::Tokio(_) => None,
        }
    }

    /// Enters the tokio runtime's context (for APIs that register with its reactor).
    pub fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        match self {
            Exec::Tokio(rt) => Some(rt.enter()),
            Exec::Smol(_) => None,
        }
    }

    /// The tokio handle, for the tokio adapter.
    pub fn tokio_handle(&self) -> Option<tokio::runtime::Handle> {
        match self {
            Exec::Tokio(rt) => Some(rt.handle().clone()),
            Exec::Smol(_) => None,
        }
    }
}

/// Calls `op` `n` times one after another on `exec` and times each call's future from its
/// first poll to its end (building it, e.g. cloning handles, is not timed); nanoseconds.
pub fn run_sequential<F, Fut>(exec: &Exec, n: usize, op: F) -> Result<Vec<u64>, String>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let task = exec.spawn(async move {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let fut = op();
            let t = std::time::Instant::now();
            fut.await?;
            out.push(t.elapsed().as_nanos() as u64);
        }
        Ok::<_, String>(out)
    });
    exec.block_on(task)?
}

/// Spawns every future of `futs` at once and waits for all of them; the wall time from
/// the first spawn to the last answer.
pub fn run_all<Fut>(
    exec: &Exec,
    futs: impl IntoIterator<Item = Fut>,
) -> Result<std::time::Duration, String>
where
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let t = std::time::Instant::now();
    let joins: Vec<_> = futs.into_iter().map(|f| exec.spawn(f)).collect();
    exec.block_on(async {
        for j in joins {
            j.await??;
        }
        Ok::<_, String>(())
    })?;
    Ok(t.elapsed())
}

/// Runs `count` workers, each calling `op` until `max` operations were started in all or
/// `deadline` passed; returns the number that succeeded and the wall time.
pub fn run_pool<F, Fut>(
    exec: &Exec,
    workers: usize,
    deadline: std::time::Instant,
    max: u64,
    op: F,
) -> Result<(u64, std::time::Duration), String>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    let started = std::time::Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let op = op.clone();
        let next = next.clone();
        joins.push(exec.spawn(async move {
            let mut ok = 0u64;
            loop {
                if next.fetch_add(1, Ordering::Relaxed) >= max
                    || std::time::Instant::now() >= deadline
                {
                    return Ok::<u64, String>(ok);
                }
                op().await?;
                ok += 1;
            }
        }));
    }
    let results = exec.block_on(async move {
        let mut out = Vec::with_capacity(joins.len());
        for j in joins {
            out.push(j.await);
        }
        out
    });
    let elapsed = started.elapsed();
    let mut ok = 0;
    for r in results {
        ok += r??;
    }
    Ok((ok, elapsed))
}
