//! # lightning-tokio
//!
//! Lightning's async client and server for tokio applications. Everything except the
//! [`Tokio`] runtime glue lives in `lightning-driver` and is re-exported here, with the
//! builders' runtime filled in:
//!
//! ```no_run
//! use lightning_tokio::{ClientBuilder, DataMap, QuicAxonInfo, QuicRequest, ServerBuilder};
//!
//! # async fn run() -> lightning_tokio::Result<()> {
//! let server = ServerBuilder::new()
//!     .seed([1; 32])
//!     .bind_addr(([127, 0, 0, 1], 0).into())
//!     .handler("echo", |data, _ctx| Ok::<_, String>(data))
//!     .start()
//!     .await?;
//! let client = ClientBuilder::new().seed([2; 32]).build()?;
//! let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());
//! let answer = client
//!     .query_axon(&axon, QuicRequest::new("echo", DataMap::new()))
//!     .await?
//!     .into_result()?;
//! # Ok(()) }
//! ```
//!
//! Builders must run inside a tokio runtime (they register the UDP socket with its
//! reactor). A multi-threaded runtime lets handler tasks run beside the endpoint tasks.
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use quinn_udp::UdpSockRef;
use tokio::io::Interest;
use tokio::runtime::Handle;

pub use lightning_driver::*;

/// The tokio runtime the endpoint tasks run on: an explicit one ([`Tokio::new`]), or by
/// default whichever runtime is current when an endpoint is built.
#[derive(Debug, Clone, Default)]
pub struct Tokio {
    handle: Option<Handle>,
}

impl Tokio {
    /// Runs endpoints on the runtime behind `handle`, even when built from outside it.
    pub fn new(handle: Handle) -> Self {
        Self {
            handle: Some(handle),
        }
    }

    fn handle(&self) -> io::Result<Handle> {
        match &self.handle {
            Some(handle) => Ok(handle.clone()),
            None => Handle::try_current().map_err(|_| {
                io::Error::other(
                    "no tokio runtime: build Lightning endpoints inside a tokio runtime \
                     or pass its handle with Tokio::new",
                )
            }),
        }
    }
}

impl Runtime for Tokio {
    type Timer = TokioTimer;
    type Socket = TokioUdp;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.handle {
            Some(handle) => drop(handle.spawn(future)),
            None => drop(tokio::spawn(future)),
        }
    }

    fn timer(&self, at: Instant) -> TokioTimer {
        // `sleep_until` needs a runtime context; an explicit handle provides one anywhere.
        let _guard = self.handle.as_ref().map(Handle::enter);
        TokioTimer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn wrap_udp(&self, socket: std::net::UdpSocket) -> io::Result<TokioUdp> {
        let handle = self.handle()?;
        let _guard = handle.enter();
        Ok(TokioUdp(tokio::net::UdpSocket::from_std(socket)?))
    }

    /// No: a yielding task goes to the back of tokio's run queue, which wakes an idle
    /// worker thread to steal it, and that hand-off costs more than the batch saves. In
    /// alternating two-process runs (`--soak-2p`, c=32) yielding took 1 KB from 86k to
    /// 78k requests/s and 10 KB from 27k to 24k (4 of 4 pairs each), with no difference
    /// at 100 KB and 1 MB.
    fn batch_by_yielding(&self) -> bool {
        false
    }
}

/// A tokio `Sleep` that can be moved.
#[derive(Debug)]
pub struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl Timer for TokioTimer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(at.into());
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// A UDP socket registered with tokio's reactor.
#[derive(Debug)]
pub struct TokioUdp(tokio::net::UdpSocket);

impl UdpIo for TokioUdp {
    fn poll_ready(&self, direction: Direction, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match direction {
            Direction::Read => self.0.poll_recv_ready(cx),
            Direction::Write => self.0.poll_send_ready(cx),
        }
    }

    fn try_io<T>(
        &self,
        direction: Direction,
        op: impl FnOnce(UdpSockRef<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        let interest = match direction {
            Direction::Read => Interest::READABLE,
            Direction::Write => Interest::WRITABLE,
        };
        // tokio clears its cached readiness when `op` reports WouldBlock.
        self.0.try_io(interest, || op((&self.0).into()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// [`lightning_driver::ClientBuilder`] on tokio.
pub type ClientBuilder = lightning_driver::ClientBuilder<Tokio>;
/// [`lightning_driver::ServerBuilder`] on tokio.
pub type ServerBuilder = lightning_driver::ServerBuilder<Tokio>;
