//! The client's lazy, per-address reconnect policy (PROTOCOL.md §8.4).
//!
//! Reconnects are attempted only when a query needs the connection; there is
//! no background loop. This module is the bookkeeping for that decision, as
//! plain state advanced by the caller with the current [`Instant`].

use std::time::{Duration, Instant};

/// Reconnect timing, per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Delay after the first failure; doubles with each further failure.
    pub initial_backoff: Duration,
    /// Upper bound of the exponential backoff.
    pub max_backoff: Duration,
    /// Failures after which exponential backoff ends.
    pub max_retries: u32,
    /// After `max_retries` failures: try again this often, or never (until the
    /// state is reset by a registry refresh) when `None`.
    pub slow_probe_interval: Option<Duration>,
}

impl Default for ReconnectPolicy {
    /// The reference defaults: 1 s, 60 s, 5 retries, 60 s slow probe.
    fn default() -> ReconnectPolicy {
        ReconnectPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_retries: 5,
            slow_probe_interval: Some(Duration::from_secs(60)),
        }
    }
}

/// A [`ReconnectPolicy`] the reference would refuse to start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectPolicyError {
    /// `initial_backoff` is zero.
    ZeroInitialBackoff,
    /// `max_backoff` is zero.
    ZeroMaxBackoff,
    /// `initial_backoff` exceeds `max_backoff`.
    InitialExceedsMax,
    /// `max_retries` is zero.
    ZeroMaxRetries,
    /// `slow_probe_interval` is `Some(0)`.
    ZeroSlowProbe,
}

impl std::fmt::Display for ReconnectPolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReconnectPolicyError::ZeroInitialBackoff => {
                "reconnect_initial_backoff must be non-zero"
            }
            ReconnectPolicyError::ZeroMaxBackoff => "reconnect_max_backoff must be non-zero",
            ReconnectPolicyError::InitialExceedsMax => {
                "reconnect_initial_backoff must be <= reconnect_max_backoff"
            }
            ReconnectPolicyError::ZeroMaxRetries => "reconnect_max_retries must be at least 1",
            ReconnectPolicyError::ZeroSlowProbe => {
                "reconnect_slow_probe_interval must be non-zero when set"
            }
        })
    }
}

impl std::error::Error for ReconnectPolicyError {}

impl ReconnectPolicy {
    /// Checks the constraints the reference's client config enforces.
    pub fn validate(&self) -> Result<(), ReconnectPolicyError> {
        if self.initial_backoff.is_zero() {
            return Err(ReconnectPolicyError::ZeroInitialBackoff);
        }
        if self.max_backoff.is_zero() {
            return Err(ReconnectPolicyError::ZeroMaxBackoff);
        }
        if self.initial_backoff > self.max_backoff {
            return Err(ReconnectPolicyError::InitialExceedsMax);
        }
        if self.max_retries == 0 {
            return Err(ReconnectPolicyError::ZeroMaxRetries);
        }
        if self.slow_probe_interval.is_some_and(|d| d.is_zero()) {
            return Err(ReconnectPolicyError::ZeroSlowProbe);
        }
        Ok(())
    }

    /// Delay after the `attempts`-th consecutive failure while still below
    /// `max_retries`: `initial × 2^(attempts−1)`, capped at `max_backoff`
    /// (the exponent is capped at 20, as in the reference, which is far past
    /// any sensible cap anyway).
    fn backoff_after(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        self.initial_backoff
            .checked_mul(1u32 << shift)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }
}

/// Why a reconnect may not be attempted now. Displays without the address;
/// callers prefix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectError {
    /// Another query is already reconnecting this address.
    InProgress,
    /// Too soon after the last failure.
    Backoff {
        /// Time left until a retry is allowed.
        retry_in: Duration,
    },
    /// All retries failed and slow probing is disabled.
    Exhausted {
        /// Consecutive failures so far.
        attempts: u32,
        /// The policy's `max_retries`.
        max: u32,
    },
}

impl std::fmt::Display for ReconnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReconnectError::InProgress => f.write_str("reconnection already in progress"),
            ReconnectError::Backoff { retry_in } => {
                write!(f, "reconnection in backoff, next retry in {retry_in:?}")
            }
            ReconnectError::Exhausted { attempts, max } => write!(
                f,
                "reconnection attempts exhausted ({attempts}/{max}), awaiting registry refresh"
            ),
        }
    }
}

impl std::error::Error for ReconnectError {}

/// Reconnect bookkeeping for one address. A fresh state allows an immediate
/// attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconnectState {
    attempts: u32,
    next_retry_at: Option<Instant>,
    in_progress: bool,
}

impl ReconnectState {
    /// A state with no failures recorded.
    pub fn new() -> ReconnectState {
        ReconnectState::default()
    }

    /// Whether an attempt may start at `now`.
    pub fn check(&self, now: Instant, policy: &ReconnectPolicy) -> Result<(), ReconnectError> {
        if self.in_progress {
            return Err(ReconnectError::InProgress);
        }
        if self.attempts >= policy.max_retries && policy.slow_probe_interval.is_none() {
            return Err(ReconnectError::Exhausted {
                attempts: self.attempts,
                max: policy.max_retries,
            });
        }
        match self.next_retry_at {
            Some(at) if now < at => Err(ReconnectError::Backoff { retry_in: at - now }),
            _ => Ok(()),
        }
    }

    /// Marks an attempt as started, so concurrent queries see
    /// [`ReconnectError::InProgress`] instead of dialing too.
    pub fn begin(&mut self) {
        self.in_progress = true;
    }

    /// [`ReconnectState::check`] then [`ReconnectState::begin`], the usual
    /// sequence under one lock.
    pub fn try_begin(
        &mut self,
        now: Instant,
        policy: &ReconnectPolicy,
    ) -> Result<(), ReconnectError> {
        self.check(now, policy)?;
        self.begin();
        Ok(())
    }

    /// Records a failed attempt that ended at `now` and schedules the next.
    pub fn on_failure(&mut self, now: Instant, policy: &ReconnectPolicy) {
        self.in_progress = false;
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts >= policy.max_retries {
            if let Some(interval) = policy.slow_probe_interval {
                self.next_retry_at = Some(add_saturating(now, interval));
            }
        } else {
            self.next_retry_at = Some(add_saturating(now, policy.backoff_after(self.attempts)));
        }
    }

    /// Records a successful attempt: all backoff is cleared.
    pub fn on_success(&mut self) {
        self.reset();
    }

    /// Forgets all failures (a registry refresh listing this address).
    pub fn reset(&mut self) {
        *self = ReconnectState::default();
    }

    /// Consecutive failures so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the next attempt is allowed, if it is delayed.
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.next_retry_at
    }

    /// True while an attempt is under way.
    pub fn in_progress(&self) -> bool {
        self.in_progress
    }
}

/// `now + delay`, without the panic `Instant + Duration` has on overflow when
/// a policy holds an absurd duration: such a delay becomes "about a century".
fn add_saturating(now: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(delay)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        crate::test_clock::origin()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Fails once at `now` from a fresh attempt and returns the delay the
    /// state then asks for.
    fn fail(state: &mut ReconnectState, now: Instant, policy: &ReconnectPolicy) -> Duration {
        state.try_begin(now, policy).unwrap();
        state.on_failure(now, policy);
        state.next_retry_at().unwrap() - now
    }

    #[test]
    fn default_policy_is_valid_and_matches_reference() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.initial_backoff, secs(1));
        assert_eq!(p.max_backoff, secs(60));
        assert_eq!(p.max_retries, 5);
        assert_eq!(p.slow_probe_interval, Some(secs(60)));
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn validation_rules() {
        let ok = ReconnectPolicy::default();
        let cases = [
            (
                ReconnectPolicy {
                    initial_backoff: Duration::ZERO,
                    ..ok
                },
                ReconnectPolicyError::ZeroInitialBackoff,
            ),
            (
                ReconnectPolicy {
                    max_backoff: Duration::ZERO,
                    ..ok
                },
                ReconnectPolicyError::ZeroMaxBackoff,
            ),
            (
                ReconnectPolicy {
                    initial_backoff: secs(61),
                    ..ok
                },
                ReconnectPolicyError::InitialExceedsMax,
            ),
            (
                ReconnectPolicy {
                    max_retries: 0,
                    ..ok
                },
                ReconnectPolicyError::ZeroMaxRetries,
            ),
            (
                ReconnectPolicy {
                    slow_probe_interval: Some(Duration::ZERO),
                    ..ok
                },
                ReconnectPolicyError::ZeroSlowProbe,
            ),
        ];
        for (policy, err) in cases {
            assert_eq!(policy.validate(), Err(err));
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(
            ReconnectPolicy {
                slow_probe_interval: None,
                ..ok
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn schedule_is_1_2_4_8_then_slow_probes() {
        let p = ReconnectPolicy::default();
        let mut s = ReconnectState::new();
        let mut now = t0();
        s.check(now, &p).unwrap();
        let mut delays = Vec::new();
        for _ in 0..8 {
            let d = fail(&mut s, now, &p);
            delays.push(d.as_secs());
            // Just before the retry time: backoff with the exact remainder.
            let early = now + d - Duration::from_millis(1);
            assert_eq!(
                s.check(early, &p),
                Err(ReconnectError::Backoff {
                    retry_in: Duration::from_millis(1)
                })
            );
            now += d;
            s.check(now, &p).unwrap();
        }
        assert_eq!(delays, [1, 2, 4, 8, 60, 60, 60, 60]);
        assert_eq!(s.attempts(), 8);
    }

    #[test]
    fn backoff_is_capped_by_max_backoff() {
        let p = ReconnectPolicy {
            initial_backoff: secs(1),
            max_backoff: secs(5),
            max_retries: 10,
            slow_probe_interval: None,
        };
        let mut s = ReconnectState::new();
        let mut now = t0();
        let mut delays = Vec::new();
        for _ in 0..9 {
            let d = fail(&mut s, now, &p);
            delays.push(d.as_secs());
            now += d;
        }
        assert_eq!(delays, [1, 2, 4, 5, 5, 5, 5, 5, 5]);
        // Failure 10 reaches max_retries; with no slow probe it is the end.
        s.try_begin(now, &p).unwrap();
        s.on_failure(now, &p);
        assert_eq!(
            s.check(now, &p),
            Err(ReconnectError::Exhausted {
                attempts: 10,
                max: 10
            })
        );
    }

    #[test]
    fn huge_exponents_do_not_overflow() {
        let p = ReconnectPolicy {
            initial_backoff: Duration::from_secs(u64::MAX / 4),
            max_backoff: Duration::MAX,
            max_retries: 100,
            slow_probe_interval: Some(Duration::MAX),
        };
        let mut s = ReconnectState::new();
        let now = t0();
        for _ in 0..120 {
            s.on_failure(now, &p);
            assert!(s.check(now, &p).is_err());
        }
    }

    #[test]
    fn exhausted_without_slow_probe() {
        let p = ReconnectPolicy {
            slow_probe_interval: None,
            ..ReconnectPolicy::default()
        };
        let mut s = ReconnectState::new();
        let mut now = t0();
        for _ in 0..4 {
            now += fail(&mut s, now, &p);
        }
        s.try_begin(now, &p).unwrap();
        s.on_failure(now, &p);
        let much_later = now + secs(3600);
        assert_eq!(
            s.check(much_later, &p),
            Err(ReconnectError::Exhausted {
                attempts: 5,
                max: 5
            })
        );
        assert!(s
            .check(much_later, &p)
            .unwrap_err()
            .to_string()
            .contains("(5/5)"));
        // A registry refresh resets it.
        s.reset();
        s.check(much_later, &p).unwrap();
        assert_eq!(s.attempts(), 0);
    }

    #[test]
    fn single_flight() {
        let p = ReconnectPolicy::default();
        let mut s = ReconnectState::new();
        let now = t0();
        s.try_begin(now, &p).unwrap();
        assert!(s.in_progress());
        assert_eq!(s.check(now, &p), Err(ReconnectError::InProgress));
        assert_eq!(
            s.try_begin(now + secs(100), &p),
            Err(ReconnectError::InProgress)
        );
        s.on_success();
        assert!(!s.in_progress());
        assert_eq!(s, ReconnectState::new());
        s.try_begin(now, &p).unwrap();
        s.on_failure(now, &p);
        assert!(!s.in_progress());
        assert!(matches!(
            s.check(now, &p),
            Err(ReconnectError::Backoff { .. })
        ));
    }

    #[test]
    fn success_clears_backoff() {
        let p = ReconnectPolicy::default();
        let mut s = ReconnectState::new();
        let now = t0();
        for _ in 0..6 {
            s.on_failure(now, &p);
        }
        s.on_success();
        assert_eq!(s.check(now, &p), Ok(()));
        assert_eq!(s.next_retry_at(), None);
    }
}
