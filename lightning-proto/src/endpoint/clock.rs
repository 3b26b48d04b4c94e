//! Wall-clock time derived from the caller's monotonic `now`.
//!
//! The handshake signs UNIX seconds and quinn's Retry tokens carry a `SystemTime`, but the
//! core may not read a clock. The caller anchors one `Instant` to one UNIX time when it builds
//! an endpoint; every later wall-clock reading is that anchor plus elapsed monotonic time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maps monotonic instants to UNIX time.
#[derive(Debug, Clone)]
pub struct WallClock {
    anchor: Instant,
    anchor_unix_ms: u64,
    shared: Arc<SharedUnixTime>,
}

impl WallClock {
    /// `unix_ms` is the UNIX time in milliseconds at the instant `anchor`.
    pub fn new(anchor: Instant, unix_ms: u64) -> Self {
        Self {
            anchor,
            anchor_unix_ms: unix_ms,
            shared: Arc::new(SharedUnixTime(AtomicU64::new(unix_ms))),
        }
    }

    /// UNIX time in milliseconds at `now`.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.anchor) {
            Some(d) => self
                .anchor_unix_ms
                .saturating_add(d.as_millis().min(u128::from(u64::MAX)) as u64),
            None => {
                let back = self.anchor.duration_since(now).as_millis();
                self.anchor_unix_ms
                    .saturating_sub(back.min(u128::from(u64::MAX)) as u64)
            }
        }
    }

    /// UNIX time in whole seconds at `now`.
    pub fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_ms(now) / 1000
    }

    /// Records `now` so quinn's token time source sees the same clock.
    pub(crate) fn observe(&self, now: Instant) {
        self.shared.0.store(self.unix_ms(now), Ordering::Relaxed);
    }

    pub(crate) fn time_source(&self) -> Arc<dyn quinn_proto::TimeSource> {
        self.shared.clone()
    }
}

/// quinn asks for `SystemTime` when it mints and checks Retry tokens; it gets ours.
#[derive(Debug)]
struct SharedUnixTime(AtomicU64);

impl quinn_proto::TimeSource for SharedUnixTime {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}
