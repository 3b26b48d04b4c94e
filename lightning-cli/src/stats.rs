//! Latency percentiles and human-readable units.

use std::time::Duration;

/// Sorted latencies of successful requests, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    sorted_us: Vec<u64>,
}

impl Latencies {
    /// Takes unsorted samples.
    pub fn new(mut samples_us: Vec<u64>) -> Self {
        samples_us.sort_unstable();
        Self {
            sorted_us: samples_us,
        }
    }

    /// The nearest-rank percentile `p` (0 < p <= 100); 0 without samples.
    pub fn percentile(&self, p: f64) -> u64 {
        let n = self.sorted_us.len();
        if n == 0 {
            return 0;
        }
        // Nearest rank: the smallest sample with at least p% of samples at or below it.
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.sorted_us[rank.clamp(1, n) - 1]
    }

    /// The largest sample; 0 without samples.
    pub fn max(&self) -> u64 {
        self.sorted_us.last().copied().unwrap_or(0)
    }

    /// The arithmetic mean; 0 without samples.
    pub fn mean(&self) -> u64 {
        if self.sorted_us.is_empty() {
            return 0;
        }
        let sum: u128 = self.sorted_us.iter().map(|&v| u128::from(v)).sum();
        (sum / self.sorted_us.len() as u128) as u64
    }
}

/// Microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A latency in µs, ms or s, whichever reads best.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// A byte count as B, KB or MB (binary multiples, the way payload sizes are usually named).
pub fn fmt_size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latencies::new((1..=100).rev().collect());
        assert_eq!(l.percentile(50.0), 50);
        assert_eq!(l.percentile(95.0), 95);
        assert_eq!(l.percentile(99.0), 99);
        assert_eq!(l.percentile(100.0), 100);
        assert_eq!(l.max(), 100);
        assert_eq!(l.mean(), 50);

        let one = Latencies::new(vec![7]);
        assert_eq!((one.percentile(50.0), one.percentile(99.0)), (7, 7));
        let four = Latencies::new(vec![40, 10, 30, 20]);
        assert_eq!(four.percentile(50.0), 20);
        assert_eq!(four.percentile(99.0), 40);
    }

    #[test]
    fn empty_is_zero() {
        let l = Latencies::default();
        assert_eq!((l.percentile(50.0), l.max(), l.mean()), (0, 0, 0));
    }

    #[test]
    fn units() {
        assert_eq!(fmt_us(999), "999 µs");
        assert_eq!(fmt_us(1_500), "1.50 ms");
        assert_eq!(fmt_us(2_000_000), "2.00 s");
        assert_eq!(fmt_size(256), "256 B");
        assert_eq!(fmt_size(64 << 10), "64 KB");
        assert_eq!(fmt_size(1 << 20), "1 MB");
        assert_eq!(fmt_size(1000), "1000 B");
    }
}
