//! `lightning demo`: a miner and a validator in one process on loopback, a short mixed
//! workload, and a latency/throughput table.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use lightning_tokio::{CongestionControl, Identity, QuicAxonInfo, ServerBuilder};

use crate::load::{self, Kind, LoadResult, StreamParams, Workload};
use crate::seed::random_seed;
use crate::stats::{fmt_size, fmt_us, micros};
use lightning_cli::synapses::with_synapses;

/// Options of `lightning demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Time spent on each row of the table, in milliseconds.
    #[arg(long, default_value_t = 700, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub step_ms: u64,
}

/// One row: what to send and how many at once.
struct Step {
    kind: Kind,
    concurrency: usize,
}

fn steps() -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for (size, levels) in [
        (256, &[1, 16, 64][..]),
        (1 << 10, &[1, 16, 64][..]),
        (64 << 10, &[1, 16][..]),
        (1 << 20, &[1, 4][..]),
    ] {
        for &concurrency in levels {
            steps.push(Step {
                kind: Kind::Unary {
                    synapse: "echo".into(),
                    data: load::payload_map(size)?,
                    size: size as u64,
                    check_echo: true,
                },
                concurrency,
            });
        }
    }
    for concurrency in [1, 4] {
        steps.push(Step {
            kind: Kind::Stream {
                synapse: "stream".into(),
                params: StreamParams {
                    n: 1000,
                    chunk_size: 1 << 10,
                },
            },
            concurrency,
        });
    }
    Ok(steps)
}

/// Runs the demo; the exit code is non-zero if any request failed.
pub async fn run(args: &DemoArgs) -> Result<ExitCode, String> {
    let started = Instant::now();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = with_synapses(ServerBuilder::new().seed(random_seed()).bind_addr(loopback))
        .start()
        .await
        .map_err(|e| format!("cannot start the demo miner: {e}"))?;
    let steps = steps()?;
    let biggest = steps
        .iter()
        .map(|s| s.kind.bytes_per_request())
        .max()
        .unwrap_or(0);
    let timeout = Duration::from_secs(10);
    let client = load::client(
        Identity::from_seed(&random_seed()),
        server.local_addr(),
        timeout,
        biggest,
        CongestionControl::default(),
        None,
    )?;
    let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());

    let connecting = Instant::now();
    let report = client
        .initialize_connections([axon.clone()])
        .await
        .map_err(|e| format!("client stopped: {e}"))?;
    if let Some((_, e)) = report.failed.first() {
        return Err(format!("the demo client could not connect: {e}"));
    }
    let connect = connecting.elapsed();

    println!("Lightning demo: QUIC + TLS 1.3 on loopback, one connection");
    println!("  miner     {} on {}", server.hotkey(), server.local_addr());
    println!("  validator {}", client.hotkey());
    println!(
        "  connect + handshake {}; {} ms per row; echo payloads are checked byte for byte",
        fmt_us(micros(connect)),
        args.step_ms
    );
    println!();

    // Let the connection's congestion window open before anything is measured.
    let warm_up = Workload {
        kind: load::Kind::Unary {
            synapse: "echo".into(),
            data: load::payload_map(64 << 10)?,
            size: 64 << 10,
            check_echo: true,
        },
        requests: 200,
        duration: Some(Duration::from_millis(500)),
        concurrency: 8,
        timeout,
    };
    let warm = load::run(&client, &axon, &warm_up, false).await;

    println!(
        "{:<8} {:>14} {:>5} {:>9} {:>10} {:>10} {:>10} {:>9}",
        "synapse", "size", "conc", "requests", "p50", "p99", "req/s", "MB/s"
    );
    let mut rows: Vec<(Step, LoadResult)> = Vec::new();
    let mut errors = warm.errors;
    let mut first_error = warm.first_error;
    for step in steps {
        let work = Workload {
            kind: step.kind.clone(),
            requests: u64::MAX,
            duration: Some(Duration::from_millis(args.step_ms)),
            concurrency: step.concurrency,
            timeout,
        };
        let r = load::run(&client, &axon, &work, false).await;
        print_row(&step, &r);
        errors += r.errors;
        if first_error.is_none() {
            first_error.clone_from(&r.first_error);
        }
        rows.push((step, r));
    }
    let _ = client.close_all_connections().await;
    let _ = server.stop().await;

    let total: u64 = rows.iter().map(|(_, r)| r.ok + r.errors).sum();
    println!();
    println!("MB/s counts payload one way; an echo carries it both ways.");
    if errors == 0 {
        let unary_1k = rows
            .iter()
            .find(|(s, _)| s.concurrency == 1 && matches!(s.kind, Kind::Unary { size: 1024, .. }))
            .map(|(_, r)| fmt_us(r.latencies.percentile(50.0)))
            .unwrap_or_default();
        let peak_rps = rows.iter().map(|(_, r)| r.req_per_s()).fold(0.0, f64::max);
        let peak_mbps = rows.iter().map(|(_, r)| r.mb_per_s()).fold(0.0, f64::max);
        println!(
            "verdict: OK: {total} requests, 0 errors in {:.1} s; 1 KB echo p50 {unary_1k} \
             one at a time, peak {peak_rps:.0} req/s, peak {peak_mbps:.0} MB/s",
            started.elapsed().as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "verdict: FAILED: {errors} of {total} requests failed; first error: {}",
            first_error.as_deref().unwrap_or("unknown")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn print_row(step: &Step, r: &LoadResult) {
    let (synapse, size) = match &step.kind {
        Kind::Unary { synapse, size, .. } => (synapse.as_str(), fmt_size(*size)),
        Kind::Stream { synapse, params } => (
            synapse.as_str(),
            format!("{} x {}", params.n, fmt_size(params.chunk_size)),
        ),
    };
    let l = &r.latencies;
    let mut requests = r.ok.to_string();
    if r.errors > 0 {
        requests = format!("{requests} +{}err", r.errors);
    }
    println!(
        "{synapse:<8} {size:>14} {:>5} {requests:>9} {:>10} {:>10} {:>10.0} {:>9.1}",
        step.concurrency,
        fmt_us(l.percentile(50.0)),
        fmt_us(l.percentile(99.0)),
        r.req_per_s(),
        r.mb_per_s()
    );
    let _ = std::io::stdout().flush();
}
