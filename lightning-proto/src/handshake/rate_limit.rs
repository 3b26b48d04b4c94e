//! Per-IP handshake rate limit, PROTOCOL.md §5.11.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

use super::HandshakeError;

/// Length of the sliding window, fixed in the reference.
pub const RATE_WINDOW_SECS: u64 = 60;

#[derive(Debug, Clone)]
struct IpAttempts {
    /// Recorded attempt times; never more than `max_per_minute` of them.
    times: VecDeque<u64>,
    /// The latest recorded attempt, the eviction key.
    latest: u64,
}

/// Counts handshake attempts per source IP over a 60 s sliding window.
///
/// Every attempt that is let through counts, whatever the handshake's
/// outcome; refused attempts are not recorded. When a new IP arrives while
/// `max_tracked_ips` are tracked, the IP whose latest attempt is oldest is
/// dropped. An ordered index by latest attempt makes that O(log n) rather than
/// the reference's scan of every tracked IP.
#[derive(Debug, Clone)]
pub struct HandshakeRateLimiter {
    ips: HashMap<IpAddr, IpAttempts>,
    by_latest: BTreeSet<(u64, IpAddr)>,
    max_per_minute: usize,
    max_tracked_ips: usize,
}

impl HandshakeRateLimiter {
    /// A limiter allowing `max_per_minute` attempts per IP per 60 s and
    /// tracking at most `max_tracked_ips` IPs.
    pub fn new(max_per_minute: usize, max_tracked_ips: usize) -> HandshakeRateLimiter {
        HandshakeRateLimiter {
            ips: HashMap::new(),
            by_latest: BTreeSet::new(),
            max_per_minute,
            max_tracked_ips,
        }
    }

    /// Decides one handshake attempt from `ip` at `now_secs`: refused when
    /// `max_per_minute` recorded attempts have times ≥ `now_secs − 60`,
    /// otherwise recorded and allowed.
    pub fn check_and_record(&mut self, ip: IpAddr, now_secs: u64) -> Result<(), HandshakeError> {
        let cutoff = now_secs.saturating_sub(RATE_WINDOW_SECS);
        match self.ips.get_mut(&ip) {
            Some(entry) => {
                // At most max_per_minute entries, so this is bounded work.
                entry.times.retain(|&t| t >= cutoff);
                if entry.times.len() >= self.max_per_minute {
                    return Err(HandshakeError::RateLimited);
                }
                entry.times.push_back(now_secs);
                let latest = entry.latest.max(now_secs);
                if latest != entry.latest {
                    self.by_latest.remove(&(entry.latest, ip));
                    self.by_latest.insert((latest, ip));
                    entry.latest = latest;
                }
                Ok(())
            }
            None => {
                if self.max_per_minute == 0 {
                    return Err(HandshakeError::RateLimited);
                }
                while self.ips.len() >= self.max_tracked_ips.max(1) {
                    let Some((_, oldest)) = self.by_latest.pop_first() else {
                        break;
                    };
                    self.ips.remove(&oldest);
                }
                self.ips.insert(
                    ip,
                    IpAttempts {
                        times: VecDeque::from([now_secs]),
                        latest: now_secs,
                    },
                );
                self.by_latest.insert((now_secs, ip));
                Ok(())
            }
        }
    }

    /// The periodic cleanup: forgets IPs with no attempt inside the window
    /// ending at `now_secs`. Older attempts of IPs still active are dropped
    /// lazily on their next attempt; they never exceed `max_per_minute`.
    pub fn evict_stale(&mut self, now_secs: u64) {
        let cutoff = now_secs.saturating_sub(RATE_WINDOW_SECS);
        while let Some(&(latest, ip)) = self.by_latest.first() {
            if latest >= cutoff {
                break;
            }
            self.by_latest.pop_first();
            self.ips.remove(&ip);
        }
    }

    /// Number of IPs currently tracked.
    pub fn tracked_ips(&self) -> usize {
        self.ips.len()
    }

    /// Attempts from `ip` that count against it at `now_secs`.
    pub fn attempts_in_window(&self, ip: IpAddr, now_secs: u64) -> usize {
        let cutoff = now_secs.saturating_sub(RATE_WINDOW_SECS);
        self.ips
            .get(&ip)
            .map_or(0, |e| e.times.iter().filter(|&&t| t >= cutoff).count())
    }
}
