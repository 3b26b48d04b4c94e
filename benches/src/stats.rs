//! Percentiles and summaries.

use serde::Serialize;

/// Nearest-rank percentile of PROTOCOL.md §12: the sorted sample at `round(p/100 × (n−1))`.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// p50/p95/p99 of a set of durations, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// 95th percentile, µs.
    pub p95_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Smallest sample, µs.
    pub min_us: f64,
    /// Largest sample, µs.
    pub max_us: f64,
}

impl Percentiles {
    /// Summarises nanosecond samples.
    pub fn from_nanos(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            n: samples.len(),
            p50_us: us(percentile(&samples, 50.0)),
            p95_us: us(percentile(&samples, 95.0)),
            p99_us: us(percentile(&samples, 99.0)),
            min_us: us(samples.first().copied().unwrap_or(0)),
            max_us: us(samples.last().copied().unwrap_or(0)),
        }
    }
}

/// Median of a few values (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_reference_rule() {
        let v: Vec<u64> = (1..=1000).collect();
        // round(0.5 × 999) = 500 (round half away from zero) → the 501st sample.
        assert_eq!(percentile(&v, 50.0), 501);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
