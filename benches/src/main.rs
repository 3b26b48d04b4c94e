//! `lightning-bench`: Lightning vs btlightning vs raw quinn, side by side, in one run.
//!
//! ```text
//! cargo run --release -p lightning-benches -- [--quick] [--out benches/results]
//!     [--only system,system] [--threads N]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use lightning_benches::{run, write_outputs, Options, Plan};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve-many") {
        let (Some(system), Some(n), Some(threads)) = (args.get(1), args.get(2), args.get(3)) else {
            eprintln!("usage: --serve-many SYSTEM N THREADS");
            return ExitCode::FAILURE;
        };
        let (Ok(n), Ok(threads)) = (n.parse(), threads.parse()) else {
            eprintln!("N and THREADS must be numbers");
            return ExitCode::FAILURE;
        };
        return match lightning_benches::serve_many(system, n, threads) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }

    if args.first().map(String::as_str) == Some("--soak") {
        return soak(&args[1..]);
    }

    let mut plan = Plan::full();
    let mut out = PathBuf::from("benches/results");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                plan = Plan {
                    only: plan.only,
                    ..Plan::quick()
                }
            }
            "--tiny" => {
                plan = Plan {
                    only: plan.only,
                    ..Plan::tiny()
                }
            }
            "--out" => match it.next() {
                Some(dir) => out = PathBuf::from(dir),
                None => return usage("--out needs a directory"),
            },
            "--only" => match it.next() {
                Some(list) => plan.only = list.split(',').map(str::to_owned).collect(),
                None => return usage("--only needs a list"),
            },
            "--threads" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => plan.threads = n,
                None => return usage("--threads needs a number"),
            },
            "-h" | "--help" => return usage(""),
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    let opts = Options {
        server_exe: std::env::current_exe().ok(),
        verbose: true,
    };
    let report = match run(plan, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = write_outputs(&report, &out) {
        eprintln!("cannot write results: {e}");
        return ExitCode::FAILURE;
    }
    print!("{}", lightning_benches::report::markdown(&report));
    eprintln!("results written to {}", out.display());
    if report.all_correct() {
        ExitCode::SUCCESS
    } else {
        eprintln!("some systems did not answer correctly (see Failures)");
        ExitCode::FAILURE
    }
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("{problem}");
    }
    eprintln!(
        "usage: lightning-bench [--quick|--tiny] [--out DIR] [--only a,b] [--threads N]\n\
         systems: lightning-tokio lightning-smol lightning-tokio-sync btlightning btlightning-sync quinn-raw"
    );
    if problem.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--soak SYSTEM SIZE CONCURRENCY SECONDS`: one system, one cell, for a profiler.
fn soak(args: &[String]) -> ExitCode {
    let parsed = (
        args.first(),
        args.get(1).and_then(|v| v.parse::<usize>().ok()),
        args.get(2).and_then(|v| v.parse::<usize>().ok()),
        args.get(3).and_then(|v| v.parse::<f64>().ok()),
    );
    let (Some(system), Some(size), Some(c), Some(secs)) = parsed else {
        return usage("usage: --soak SYSTEM SIZE CONCURRENCY SECONDS");
    };
    let result = lightning_benches::make_system(system, 2).and_then(|mut sys| {
        sys.open()?;
        let started = std::time::Instant::now();
        let budget = std::time::Duration::from_secs_f64(secs);
        let (ok, elapsed) = sys.throughput(size, c, budget, u64::MAX)?;
        let cpu = lightning_benches::os::cpu_time();
        sys.close();
        println!(
            "{system} {size} B c={c}: {ok} requests in {:.2} s = {:.0} req/s (process CPU {:.2} s in {:.2} s)",
            elapsed.as_secs_f64(),
            ok as f64 / elapsed.as_secs_f64(),
            cpu.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
