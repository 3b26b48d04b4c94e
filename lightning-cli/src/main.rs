//! `lightning`: try the Lightning QUIC transport from a shell.
//!
//! - `lightning demo`: a miner and a validator on loopback and a latency/throughput table.
//! - `lightning serve`: a miner with the `echo` and `stream` synapses (`--metrics ADDR`:
//!   Prometheus metrics over HTTP at `/metrics`).
//! - `lightning query`: load one miner and summarise latency and throughput.
//! - `lightning keygen`: a new seed and its SS58 hotkey.
//!
//! Machine-readable output (`serve`'s ready line, `--json`) goes to stdout as one JSON
//! line; notes and progress go to stderr.

mod demo;
mod keygen;
mod load;
mod metrics_http;
mod query;
mod refusals;
mod seed;
mod serve;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Lightning: a QUIC transport for Bittensor, wire-compatible with btlightning.
#[derive(Debug, Parser)]
#[command(name = "lightning", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve synapses `echo` and `stream`; prints {"port":..,"hotkey":"..","fingerprint":".."}
    /// when ready (plus "metrics":"ip:port" with --metrics).
    Serve(serve::ServeArgs),
    /// Send queries to a miner and report latency and throughput.
    Query(query::QueryArgs),
    /// Run a miner and a validator in-process on loopback and print a benchmark table.
    Demo(demo::DemoArgs),
    /// Print a new random seed and its SS58 hotkey.
    Keygen(keygen::KeygenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Keygen(args) = &cli.command {
        keygen::run(args);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the tokio runtime: {e}")),
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Query(args) => query::run(args).await,
            Command::Demo(args) => demo::run(&args).await,
            Command::Keygen(_) => Ok(ExitCode::SUCCESS),
        }
    });
    // Endpoint tasks that are still closing must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("lightning: error: {message}");
    ExitCode::FAILURE
}
