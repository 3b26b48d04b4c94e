//! What the state shared by a miner's endpoint drivers costs per operation (issue 16).
//!
//! Each driver reaches the group's [`LocalLimits`] through one mutex: twice per request
//! frame (reserve its bytes, release them) and a handful of times per handshake; the
//! queued-response total is an atomic, touched about twice per answer. This measures
//! those operations with 1 and 2 threads hammering them (2 = every core of this
//! machine, the worst case for contention) and prints the figures the README's scaling
//! model uses.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use lightning_proto::endpoint::{LocalLimits, ServerConfig, SharedLimits};

/// Iterations per thread.
const REQUESTS: u64 = 2_000_000;
const HANDSHAKES: u64 = 100_000;

/// Nanoseconds per operation for each thread, with `threads` threads running `op` at once.
fn per_op(threads: usize, iterations: u64, op: impl Fn(usize, u64) + Sync) -> f64 {
    let barrier = Barrier::new(threads);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iterations {
                        op(t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .max()
            .unwrap_or_default()
    });
    elapsed.as_nanos() as f64 / iterations as f64
}

fn lock(m: &Mutex<LocalLimits>) -> std::sync::MutexGuard<'_, LocalLimits> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the measurements and returns a markdown table.
pub fn run() -> String {
    let config = ServerConfig::default();
    let mut out = String::from(
        "| operation (per request or handshake) | 1 thread, ns | 2 threads, ns each |\n|---|---:|---:|\n",
    );
    let mut row = |name: &str, f: &dyn Fn(usize) -> f64| {
        let (one, two) = (f(1), f(2));
        out.push_str(&format!("| {name} | {one:.0} | {two:.0} |\n"));
    };

    row(
        "request frame: reserve + release (2 lock sections)",
        &|threads| {
            let shared = Mutex::new(LocalLimits::new(&config));
            per_op(threads, REQUESTS, |_, _| {
                let (mut used, mut small) = (0u64, 0u64);
                let r = lock(&shared).try_reserve(&mut used, &mut small, true, 1029);
                if let Ok(r) = r {
                    lock(&shared).release(Some((&mut used, &mut small)), r);
                }
            })
        },
    );
    row(
        "answer queued then sent (2 atomic updates + 1 read)",
        &|threads| {
            let total = AtomicU64::new(0);
            per_op(threads, REQUESTS, |_, _| {
                total.fetch_add(1100, Ordering::Relaxed);
                let _ = total.load(Ordering::Relaxed);
                let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t.saturating_sub(1100))
                });
            })
        },
    );
    row(
        "handshake: rate, nonce, hotkey, unauthenticated count (6 lock sections)",
        &|threads| {
            let mut c = config.clone();
            c.max_handshake_attempts_per_minute = u32::MAX;
            c.max_nonce_entries = usize::MAX;
            let shared = Arc::new(Mutex::new(LocalLimits::new(&c)));
            per_op(threads, HANDSHAKES, |t, i| {
                let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i as u32 % 4096)));
                let nonce = format!("{t}-{i}");
                let hotkey = format!("hk-{t}-{}", i % 1024);
                let _ = lock(&shared).check_handshake_rate(ip, 1_000_000);
                let _ = lock(&shared).check_nonce(&nonce, 1_000_000, 1_000_000);
                lock(&shared).count_unauthenticated(ip, true, true);
                let _ = lock(&shared).hotkey_count();
                let _ = lock(&shared).hotkey_holder(&hotkey);
                lock(&shared).count_unauthenticated(ip, true, false);
            })
        },
    );
    out
}
