//! The small surface an async runtime must provide: spawn a task, one resettable timer,
//! and readiness for a non-blocking UDP socket. Everything else is shared.

use std::future::Future;
use std::io;
use std::net::UdpSocket;
use std::task::{Context, Poll};
use std::time::Instant;

use quinn_udp::UdpSockRef;

/// An async runtime the driver can run on (tokio, smol, async-std, ...).
///
/// Adapters implement this in a few dozen lines; see `lightning-tokio` and `lightning-smol`.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A resettable one-shot timer.
    type Timer: Timer;
    /// A non-blocking UDP socket registered with the runtime's reactor.
    type Socket: UdpIo;

    /// Runs `future` to completion in the background.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// A timer that fires at `at`.
    fn timer(&self, at: Instant) -> Self::Timer;

    /// Registers a bound, non-blocking socket with the reactor.
    fn wrap_udp(&self, socket: UdpSocket) -> io::Result<Self::Socket>;

    /// Whether an endpoint task that takes commands while other requests are in flight
    /// should yield once before flushing, so that tasks woken together queue their
    /// requests (or answers) too and they leave in one GSO batch. Worth it where a yield
    /// is cheap (async-executor: +9% at 1 KB, c=32); an executor whose yield wakes another
    /// thread should answer `false`. The default is `true`.
    fn batch_by_yielding(&self) -> bool {
        true
    }
}

/// A timer that can be moved to a new deadline without allocating.
pub trait Timer: Send + Unpin + 'static {
    /// Moves the deadline to `at` (earlier or later).
    fn reset(&mut self, at: Instant);
    /// `Ready` once the deadline has passed; otherwise registers `cx`'s waker.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Which readiness an IO attempt consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Receiving.
    Read,
    /// Sending.
    Write,
}

/// A UDP socket whose readiness the runtime tracks.
pub trait UdpIo: Send + Sync + 'static {
    /// `Ready` when a receive may succeed; otherwise registers `cx`'s waker.
    fn poll_ready(&self, direction: Direction, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Runs one non-blocking attempt. A `WouldBlock` result must clear the readiness the
    /// runtime cached, so that the next `poll_ready` waits for a fresh event.
    fn try_io<T>(
        &self,
        direction: Direction,
        op: impl FnOnce(UdpSockRef<'_>) -> io::Result<T>,
    ) -> io::Result<T>;

    /// The socket's local address.
    fn local_addr(&self) -> io::Result<std::net::SocketAddr>;
}
