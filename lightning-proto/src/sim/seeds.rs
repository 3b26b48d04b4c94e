//! Running a scenario over many seeds, and replaying the one that failed.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Environment variable that pins [`run_seeds`] to a single seed.
pub const SEED_ENV: &str = "LIGHTNING_SIM_SEED";

/// First seed [`run_seeds`] tries when no seed is pinned.
pub const BASE_SEED: u64 = 0x5EED_0000;

/// A scenario that failed, and the seed that makes it fail again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFailure {
    /// The seed to replay.
    pub seed: u64,
    /// The scenario's error, or its panic message.
    pub message: String,
}

/// The seed pinned by `LIGHTNING_SIM_SEED`, if any.
///
/// This is the only place the simulator reads the environment: it is test
/// plumbing, never on the datagram path. A value that does not parse as a
/// `u64` is reported instead of silently running other seeds.
///
/// # Panics
/// If the variable is set but is not a decimal `u64`.
pub fn seed_from_env() -> Option<u64> {
    let raw = std::env::var(SEED_ENV).ok()?;
    match raw.trim().parse() {
        Ok(seed) => Some(seed),
        Err(_) => panic!("{SEED_ENV}={raw:?} is not a u64 seed"),
    }
}

/// Runs `scenario` for `replay` alone if given, else for `base..base + count`,
/// stopping at the first failure (an `Err` or a panic).
///
/// On failure the replay hint is printed to stderr and the failure returned;
/// on success the number of seeds run is returned.
pub fn try_run_seeds<F>(
    replay: Option<u64>,
    base: u64,
    count: u64,
    mut scenario: F,
) -> Result<u64, SeedFailure>
where
    F: FnMut(u64) -> Result<(), String>,
{
    let seeds: Box<dyn Iterator<Item = u64>> = match replay {
        Some(seed) => Box::new(std::iter::once(seed)),
        None => Box::new((0..count).map(|i| base.wrapping_add(i))),
    };
    let mut ran = 0;
    for seed in seeds {
        // The scenario owns its simulator; a panic leaves nothing shared half-updated.
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(seed)));
        let message = match outcome {
            Ok(Ok(())) => {
                ran += 1;
                continue;
            }
            Ok(Err(message)) => message,
            Err(payload) => panic_message(payload.as_ref()),
        };
        eprintln!("simulation failed with seed {seed}; replay with {SEED_ENV}={seed}");
        return Err(SeedFailure { seed, message });
    }
    Ok(ran)
}

/// Runs `scenario` for `count` seeds from [`BASE_SEED`], or only for the seed
/// in `LIGHTNING_SIM_SEED` when it is set.
///
/// # Panics
/// When a seed fails, after printing the replay hint, with a message naming
/// the seed and the scenario's error.
pub fn run_seeds<F>(count: u64, scenario: F)
where
    F: FnMut(u64) -> Result<(), String>,
{
    if let Err(failure) = try_run_seeds(seed_from_env(), BASE_SEED, count, scenario) {
        panic!(
            "simulation failed with seed {} ({SEED_ENV}={}): {}",
            failure.seed, failure.seed, failure.message
        );
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
