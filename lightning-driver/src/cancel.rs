//! A request's cancellation signal: raised once by the endpoint task (by dropping the
//! [`CancelGuard`]), watched by the handler through any number of [`CancelSignal`] clones.
//!
//! One small allocation per request. Most handlers finish at their first poll and never
//! wait on it, so the wait list is only touched when somebody is actually waiting.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use event_listener::Event;

struct State {
    cancelled: AtomicBool,
    /// Set before anyone starts listening, so a guard whose signal nobody awaited drops
    /// without touching `event` (whose first use allocates).
    awaited: AtomicBool,
    event: Event,
}

/// Held by the endpoint while the request runs; dropping it cancels.
pub(crate) struct CancelGuard(Arc<State>);

/// The handler's view of the cancellation.
#[derive(Clone)]
pub(crate) struct CancelSignal(Arc<State>);

/// A new, not yet cancelled pair.
pub(crate) fn cancel_pair() -> (CancelGuard, CancelSignal) {
    let state = Arc::new(State {
        cancelled: AtomicBool::new(false),
        awaited: AtomicBool::new(false),
        event: Event::new(),
    });
    (CancelGuard(state.clone()), CancelSignal(state))
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        // SeqCst on both flags, here and in `cancelled`: either this sees `awaited` and
        // notifies, or the waiter's check after `listen` sees `cancelled`.
        self.0.cancelled.store(true, Ordering::SeqCst);
        if self.0.awaited.load(Ordering::SeqCst) {
            self.0.event.notify(usize::MAX);
        }
    }
}

impl CancelSignal {
    /// Whether the guard was dropped.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Completes once the guard is dropped.
    pub(crate) async fn cancelled(&self) {
        self.0.awaited.store(true, Ordering::SeqCst);
        loop {
            if self.is_cancelled() {
                return;
            }
            let listener = self.0.event.listen();
            if self.is_cancelled() {
                return;
            }
            listener.await;
        }
    }
}

impl fmt::Debug for CancelSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelSignal")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Duration;

    #[test]
    fn dropping_the_guard_cancels_every_clone() {
        let (guard, signal) = cancel_pair();
        let other = signal.clone();
        assert!(!signal.is_cancelled());
        drop(guard);
        assert!(signal.is_cancelled() && other.is_cancelled());
        futures_lite::future::block_on(other.cancelled());
    }

    #[test]
    fn a_waiter_on_another_thread_wakes_when_the_guard_drops() {
        for _ in 0..200 {
            let (guard, signal) = cancel_pair();
            let waiter = std::thread::spawn(move || {
                futures_lite::future::block_on(signal.cancelled());
            });
            std::thread::sleep(Duration::from_micros(50));
            drop(guard);
            waiter.join().expect("waiter finished");
        }
    }

    #[test]
    fn pending_until_cancelled() {
        let (guard, signal) = cancel_pair();
        let mut fut = Box::pin(signal.cancelled());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        drop(guard);
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }
}
