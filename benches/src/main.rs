//! `lightning-bench`: Lightning vs btlightning vs raw quinn, side by side, in one run.
//!
//! ```text
//! cargo run --release -p lightning-benches -- [--quick] [--in-process | --wan]
//!     [--out DIR] [--only system,system] [--threads N] [--profiles lan,continent,world]
//!     [--seed N]
//! cargo run --release -p lightning-benches -- --soak-2p SYSTEM [N] [SIZE] [CONCURRENCY]
//! cargo run --release -p lightning-benches -- --shared-cost
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use lightning_benches::wan::{run_wan, WanPlan};
use lightning_benches::{run, write_outputs, Options, Plan};
use lightning_netem::Profile;

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

    if args.first().map(String::as_str) == Some("--relay") {
        let (Some(profile), Some(target), Some(seed), Some(listen_ip)) =
            (args.get(1), args.get(2), args.get(3), args.get(4))
        else {
            eprintln!("usage: --relay PROFILE TARGET SEED LISTEN_IP");
            return ExitCode::FAILURE;
        };
        return match lightning_benches::remote::serve_relay(profile, target, seed, listen_ip) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }

    if args.first().map(String::as_str) == Some("--shared-cost") {
        print!("{}", lightning_benches::shared_cost::run());
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("--soak") {
        return soak(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--soak-2p") {
        return soak_two_process(&args[1..]);
    }

    let mut plan = Plan::full();
    let mut wan_plan = WanPlan::full();
    let (mut in_process, mut wan) = (false, false);
    let mut out = None;
    // The WAN relays' loss and jitter seed; applied after the loop, which --quick and
    // --tiny would otherwise reset.
    let mut seed = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                plan = Plan {
                    only: plan.only,
                    ..Plan::quick()
                };
                wan_plan = WanPlan {
                    only: wan_plan.only,
                    profiles: wan_plan.profiles,
                    ..WanPlan::quick()
                };
            }
            "--tiny" => {
                plan = Plan {
                    only: plan.only,
                    ..Plan::tiny()
                };
                wan_plan = WanPlan {
                    only: wan_plan.only,
                    ..WanPlan::tiny()
                };
            }
            "--in-process" => in_process = true,
            "--wan" => wan = true,
            "--profiles" => match it.next().map(|l| {
                l.split(',')
                    .map(str::parse::<Profile>)
                    .collect::<Result<Vec<_>, _>>()
            }) {
                Some(Ok(p)) => wan_plan.profiles = p,
                Some(Err(e)) => return usage(&e.to_string()),
                None => return usage("--profiles needs a list"),
            },
            "--out" => match it.next() {
                Some(dir) => out = Some(PathBuf::from(dir)),
                None => return usage("--out needs a directory"),
            },
            "--only" => match it.next() {
                Some(list) => {
                    plan.only = list.split(',').map(str::to_owned).collect();
                    wan_plan.only = plan.only.clone();
                }
                None => return usage("--only needs a list"),
            },
            "--threads" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => {
                    plan.threads = n;
                    wan_plan.threads = n;
                }
                None => return usage("--threads needs a number"),
            },
            "--seed" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => seed = Some(n),
                None => return usage("--seed needs a number"),
            },
            "-h" | "--help" => return usage(""),
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    let opts = Options {
        server_exe: std::env::current_exe().ok(),
        verbose: true,
    };
    if let Some(seed) = seed {
        if !wan {
            return usage("--seed applies to --wan only");
        }
        wan_plan.seed = seed;
    }
    if wan {
        let out = out.unwrap_or_else(|| PathBuf::from("benches/results/wan"));
        return run_wan_and_write(wan_plan, opts, &out);
    }
    plan.two_process = !in_process;
    let out = out.unwrap_or_else(|| {
        PathBuf::from(if in_process {
            "benches/results/in-process"
        } else {
            "benches/results"
        })
    });
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

fn run_wan_and_write(plan: WanPlan, opts: Options, out: &std::path::Path) -> ExitCode {
    let report = match run_wan(plan, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("WAN benchmark failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = lightning_benches::wan::write_outputs(&report, out) {
        eprintln!("cannot write results: {e}");
        return ExitCode::FAILURE;
    }
    print!("{}", lightning_benches::wan::markdown(&report));
    eprintln!("results written to {}", out.display());
    if report.all_correct() {
        ExitCode::SUCCESS
    } else {
        eprintln!("some systems did not answer correctly (see Failures)");
        ExitCode::FAILURE
    }
}

/// `--soak-2p SYSTEM [N] [SIZE] [CONCURRENCY]`: N requests (default 10 million) from this
/// process to a server child, RSS of both sampled every second.
fn soak_two_process(args: &[String]) -> ExitCode {
    let Some(system) = args.first() else {
        return usage("usage: --soak-2p SYSTEM [N] [SIZE] [CONCURRENCY]");
    };
    let num = |i: usize, default: u64| args.get(i).map_or(Some(default), |v| v.parse().ok());
    let (Some(n), Some(size), Some(c)) = (num(1, 10_000_000), num(2, 1024), num(3, 32)) else {
        return usage("N, SIZE and CONCURRENCY must be numbers");
    };
    let Ok(exe) = std::env::current_exe() else {
        return usage("cannot find this executable");
    };
    match lightning_benches::remote::soak_two_process(
        &exe,
        system,
        n,
        size as usize,
        c as usize,
        std::time::Duration::from_secs(1),
    ) {
        Ok(r) => {
            print!("{}", r.markdown());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("soak failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("{problem}");
    }
    eprintln!(
        "usage: lightning-bench [--quick|--tiny] [--in-process | --wan [--profiles lan,continent,world] [--seed N]]\n\
         \x20                      [--out DIR] [--only a,b] [--threads N]\n\
         \x20      lightning-bench --soak-2p SYSTEM [N] [SIZE] [CONCURRENCY]\n\
         \x20      lightning-bench --soak SYSTEM SIZE CONCURRENCY SECONDS\n\
         systems: lightning-tokio lightning-smol lightning-tokio-sync lightning-tokio-bbr btlightning btlightning-sync quinn-raw"
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
