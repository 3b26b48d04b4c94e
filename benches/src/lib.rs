//! Benchmark harness (filled in by the benchmarks issue).
#![deny(missing_docs)]
