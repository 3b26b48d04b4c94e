//! # lightning-smol
//!
//! Lightning's async client and server for smol applications, and for async-std ones
//! (async-std runs on the same `async-io` reactor). It never starts or needs tokio.
//! Everything except the [`Smol`] runtime glue lives in `lightning-driver` and is
//! re-exported here with the builders' runtime filled in, so code reads exactly as with
//! `lightning-tokio`:
//!
//! ```no_run
//! use lightning_smol::{ClientBuilder, DataMap, QuicAxonInfo, QuicRequest, ServerBuilder};
//!
//! # fn main() -> lightning_smol::Result<()> {
//! smol::block_on(async {
//!     let server = ServerBuilder::new()
//!         .seed([1; 32])
//!         .bind_addr(([127, 0, 0, 1], 0).into())
//!         .handler("echo", |data, _ctx| Ok::<_, String>(data))
//!         .start()
//!         .await?;
//!     let client = ClientBuilder::new().seed([2; 32]).build()?;
//!     let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());
//!     client.query_axon(&axon, QuicRequest::new("echo", DataMap::new())).await?;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! Endpoint and handler tasks go to smol's global executor by default. An application with
//! its own executor (async-std's, or an `async_executor::Executor`) passes its spawn
//! function to [`Smol::with_spawner`] and builds with `ClientBuilder::with_runtime`.
#![deny(missing_docs)]

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Async;
use quinn_udp::UdpSockRef;

pub use lightning_driver::*;

/// A boxed task, as handed to a custom spawner.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

type Spawner = Arc<dyn Fn(Task) + Send + Sync>;

/// Runs Lightning's tasks on an async-io reactor and any executor.
#[derive(Clone, Default)]
pub struct Smol {
    spawner: Option<Spawner>,
}

impl fmt::Debug for Smol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smol")
            .field("custom_spawner", &self.spawner.is_some())
            .finish()
    }
}

impl Smol {
    /// Spawns tasks with `spawn` (for example `|t| { async_std::task::spawn(t); }`).
    pub fn with_spawner(spawn: impl Fn(Task) + Send + Sync + 'static) -> Self {
        Self {
            spawner: Some(Arc::new(spawn)),
        }
    }
}

impl Runtime for Smol {
    type Timer = SmolTimer;
    type Socket = SmolUdp;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.spawner {
            Some(spawn) => spawn(Box::pin(future)),
            None => smol::spawn(future).detach(),
        }
    }

    fn timer(&self, at: Instant) -> SmolTimer {
        SmolTimer(async_io::Timer::at(at))
    }

    fn wrap_udp(&self, socket: std::net::UdpSocket) -> io::Result<SmolUdp> {
        Ok(SmolUdp {
            io: Async::new(socket)?,
            read_blocked: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
        })
    }
}

/// An async-io timer.
#[derive(Debug)]
pub struct SmolTimer(async_io::Timer);

impl Timer for SmolTimer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A UDP socket registered with the async-io reactor.
///
/// async-io reports readiness only as fresh reactor events: asking `poll_writable` before
/// every send, or `poll_readable` after every batch, would cost a reactor round trip (an
/// `epoll_ctl`, a wake-up and a task switch) although a UDP socket is nearly always
/// writable and often still has data queued. So the socket is assumed ready until an
/// attempt returns `WouldBlock`, and only then does the next `poll_ready` wait for the
/// reactor, which is how tokio's readiness cache behaves.
#[derive(Debug)]
pub struct SmolUdp {
    io: Async<std::net::UdpSocket>,
    read_blocked: AtomicBool,
    write_blocked: AtomicBool,
}

impl SmolUdp {
    fn blocked(&self, direction: Direction) -> &AtomicBool {
        match direction {
            Direction::Read => &self.read_blocked,
            Direction::Write => &self.write_blocked,
        }
    }
}

impl UdpIo for SmolUdp {
    fn poll_ready(&self, direction: Direction, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let blocked = self.blocked(direction);
        if !blocked.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        let ready = match direction {
            Direction::Read => self.io.poll_readable(cx),
            Direction::Write => self.io.poll_writable(cx),
        };
        if ready.is_ready() {
            blocked.store(false, Ordering::Relaxed);
        }
        ready
    }

    fn try_io<T>(
        &self,
        direction: Direction,
        op: impl FnOnce(UdpSockRef<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        let result = op(self.io.get_ref().into());
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.blocked(direction).store(true, Ordering::Relaxed);
        }
        result
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }
}

/// [`lightning_driver::ClientBuilder`] on smol.
pub type ClientBuilder = lightning_driver::ClientBuilder<Smol>;
/// [`lightning_driver::ServerBuilder`] on smol.
pub type ServerBuilder = lightning_driver::ServerBuilder<Smol>;
