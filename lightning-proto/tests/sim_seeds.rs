//! Seed sweeps: a failing seed is named, the sweep stops, and the seed replays.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lightning_proto::sim::{run_seeds, try_run_seeds, SeedFailure, SEED_ENV};

#[test]
fn sweep_runs_consecutive_seeds_when_all_pass() {
    let mut seen = Vec::new();
    let ran = try_run_seeds(None, 100, 5, |seed| {
        seen.push(seed);
        Ok(())
    });
    assert_eq!(ran, Ok(5));
    assert_eq!(seen, [100, 101, 102, 103, 104]);
}

#[test]
fn an_error_names_its_seed_and_stops_the_sweep() {
    let mut seen = Vec::new();
    let result = try_run_seeds(None, 100, 10, |seed| {
        seen.push(seed);
        if seed == 103 {
            Err(format!("invariant broken at {seed}"))
        } else {
            Ok(())
        }
    });
    assert_eq!(
        result,
        Err(SeedFailure {
            seed: 103,
            message: "invariant broken at 103".into()
        })
    );
    assert_eq!(seen, [100, 101, 102, 103]);
}

#[test]
fn a_panic_is_caught_and_named() {
    let result = try_run_seeds(None, 7, 10, |seed| {
        assert!(seed != 12, "kaboom");
        Ok(())
    });
    let failure = result.unwrap_err();
    assert_eq!(failure.seed, 12);
    assert!(failure.message.contains("kaboom"), "{}", failure.message);
}

#[test]
fn a_pinned_seed_replays_alone() {
    let mut seen = Vec::new();
    let ran = try_run_seeds(Some(42), 0, 1000, |seed| {
        seen.push(seed);
        Ok(())
    });
    assert_eq!(ran, Ok(1));
    assert_eq!(seen, [42]);
}

#[test]
fn run_seeds_propagates_failure_with_a_replay_hint() {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run_seeds(3, |seed| Err(format!("seed {seed} always fails")));
    }));
    let payload = outcome.unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(message.contains(&format!("{SEED_ENV}=")), "{message}");
    assert!(message.contains("always fails"), "{message}");
}
