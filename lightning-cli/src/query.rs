//! `lightning query`: N queries with C concurrent workers against one miner.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use lightning_tokio::proto::handshake::MAX_FUTURE_SKEW_SECS;
use lightning_tokio::{
    error::HandshakeError, CongestionControl, ConnectCause, HandshakeCause, LightningError,
    QuicAxonInfo, ServerConfig,
};
use serde_json::json;

use crate::load::{self, Kind, LoadResult, StreamParams, Workload};
use crate::seed::KeyArgs;
use crate::stats::{fmt_size, fmt_us, micros};

/// Options of `lightning query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The miner's IP address.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,

    /// The miner's UDP port.
    #[arg(long)]
    pub port: u16,

    /// The miner's SS58 hotkey (the handshake fails if the miner cannot prove it).
    #[arg(long, value_name = "SS58")]
    pub hotkey: String,

    #[command(flatten)]
    pub key: KeyArgs,

    /// Hotkey name inside the wallet given by --wallet-name.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub wallet_hotkey: String,

    /// Synapse to call (default: `echo`, or `stream` with --chunks).
    #[arg(long)]
    pub synapse: Option<String>,

    /// Payload bytes per unary request (sent as `{"payload": <bytes>}`).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,

    /// Number of requests.
    #[arg(short = 'n', long = "requests", default_value_t = 1)]
    pub requests: u64,

    /// Requests in flight at once (workers sharing one connection).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,

    /// Query the streaming synapse for this many chunks per request instead.
    #[arg(long)]
    pub chunks: Option<u64>,

    /// Bytes per chunk with --chunks.
    #[arg(long, default_value_t = 1024, requires = "chunks")]
    pub chunk_size: u64,

    /// Per-request timeout (whole stream with --chunks), also used for connecting.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,

    /// Print one JSON line instead of the readable summary.
    #[arg(long)]
    pub json: bool,

    /// Congestion controller for what this validator sends: cubic (the default, as
    /// btlightning), newreno, or bbr: keeps its rate on long lossy paths, but where the
    /// bottleneck queue holds a round trip's worth or less it loses 21-46% of its packets
    /// and crowds out other flows (benches/results/bottleneck.md).
    #[arg(long, value_name = "NAME", default_value_t = CongestionControl::Cubic)]
    pub congestion: CongestionControl,

    /// Largest packet path MTU discovery tries towards a miner on another host, in bytes
    /// (1200 to 65527; default 1452). Raise it only where every path carries jumbo
    /// frames; towards a miner on a loopback address packets are 64 KiB anyway.
    #[arg(long, value_name = "BYTES")]
    pub max_udp_payload: Option<u16>,

    /// After the load, send one 1 KiB echo on the same connection and report whether it
    /// was answered: shows that the load (timeouts, cancellations) left the connection
    /// usable.
    #[arg(long)]
    pub then_echo: bool,
}

/// Runs `lightning query`; the exit code is non-zero when connecting or any request failed.
pub async fn run(args: QueryArgs) -> Result<ExitCode, String> {
    let (identity, _) = args.key.identity(&args.wallet_hotkey)?;
    let target = SocketAddr::new(args.ip, args.port);
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let kind = match args.chunks {
        Some(n) => Kind::Stream {
            synapse: args.synapse.clone().unwrap_or_else(|| "stream".into()),
            params: StreamParams {
                n,
                chunk_size: args.chunk_size,
            },
        },
        None => {
            let synapse = args.synapse.clone().unwrap_or_else(|| "echo".into());
            Kind::Unary {
                check_echo: synapse == "echo",
                synapse,
                data: load::payload_map(args.size)?,
                size: args.size as u64,
            }
        }
    };
    let client = load::client(
        identity,
        target,
        timeout,
        kind.bytes_per_request(),
        args.congestion,
        args.max_udp_payload,
    )?;
    let axon = QuicAxonInfo::from_addr(args.hotkey.clone(), target);

    let connecting = Instant::now();
    let report = client
        .initialize_connections([axon.clone()])
        .await
        .map_err(|e| format!("client stopped: {e}"))?;
    let connect = connecting.elapsed();
    let connect_error = report.failed.first().map(|(_, e)| e.to_string());
    let hint = report.failed.first().and_then(|(_, e)| connect_hint(e));

    let result = match &connect_error {
        Some(e) => LoadResult {
            errors: args.requests,
            first_error: Some(format!("connect: {e}")),
            ..LoadResult::default()
        },
        None => {
            let work = Workload {
                kind: kind.clone(),
                requests: args.requests,
                duration: None,
                concurrency: usize::from(args.concurrency),
                timeout,
            };
            load::run(&client, &axon, &work, true).await
        }
    };
    let then_echo = match (args.then_echo, &connect_error) {
        // The probe gets at least the default timeout: the load's may be set short on purpose.
        (true, None) => {
            Some(probe_echo(&client, &axon, timeout.max(Duration::from_secs(10))).await)
        }
        _ => None,
    };
    // Tell the miner we are done rather than leaving it to the idle timeout.
    let _ = client.close_all_connections().await;

    if args.json {
        let mut summary = summary_json(&args, &kind, connect, &connect_error, &result);
        if let Some(hint) = &hint {
            summary["hint"] = json!(hint);
        }
        if let Some(echo) = &then_echo {
            summary["then_echo"] = json!(echo.as_ref().map_or_else(|e| e.as_str(), |()| "ok"));
        }
        println!("{summary}");
    } else {
        print_summary(&args, &kind, target, connect, &connect_error, &result);
        if let Some(hint) = &hint {
            println!("  hint        {hint}");
        }
        if let Some(echo) = &then_echo {
            let outcome = echo.as_ref().map_or_else(|e| e.as_str(), |()| "ok");
            println!("  then echo   {outcome}");
        }
    }
    let echo_ok = then_echo.as_ref().is_none_or(|e| e.is_ok());
    Ok(
        if connect_error.is_none() && result.errors == 0 && echo_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// What to check when connecting failed in a way whose message cannot say why.
fn connect_hint(error: &LightningError) -> Option<String> {
    match error {
        // The wire carries no reason for a refusal (PROTOCOL §5.7), so the error cannot
        // name one; the miner's side knows it (`lightning serve` prints its refusals).
        // The limits quoted are the server defaults.
        LightningError::Handshake(HandshakeCause::Refused(HandshakeError::Rejected)) => {
            let limits = ServerConfig::default();
            Some(format!(
                "the miner refused the handshake without saying why (the protocol carries \
                 no reason; `lightning serve` prints its refusals by reason). Usual causes: \
                 this validator's hotkey is not admitted (`serve --validators`), more than \
                 {} handshakes a minute from this IP address, or this machine's clock more \
                 than {MAX_FUTURE_SKEW_SECS} s ahead of the miner's or {} s behind it",
                limits.max_handshake_attempts_per_minute, limits.max_signature_age_secs
            ))
        }
        // QUIC over UDP hears nothing back from a closed port or a dropping firewall.
        LightningError::Connect(ConnectCause::TimedOut(_)) => Some(
            "nothing answered the QUIC handshake: check that a miner listens on this UDP \
             address and port (`serve --host` / `--port`, the axon's advertised IP) and \
             that no firewall drops UDP on the way"
                .into(),
        ),
        _ => None,
    }
}

/// One 1 KiB echo on the connection the load used.
async fn probe_echo(
    client: &lightning_tokio::LightningClient,
    axon: &QuicAxonInfo,
    timeout: Duration,
) -> Result<(), String> {
    let data = load::payload_map(1024)?;
    let request = lightning_tokio::QuicRequest::new("echo", data.clone());
    let response = client
        .query_axon_with_timeout(axon, request, timeout)
        .await
        .map_err(|e| e.to_string())?
        .into_result()
        .map_err(|e| e.to_string())?;
    if response.data == data {
        Ok(())
    } else {
        Err("echo came back different".into())
    }
}

fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

fn summary_json(
    args: &QueryArgs,
    kind: &Kind,
    connect: Duration,
    connect_error: &Option<String>,
    r: &LoadResult,
) -> serde_json::Value {
    let l = &r.latencies;
    let mut out = json!({
        "ok": r.ok,
        "errors": r.errors,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "connect_ms": round(connect.as_secs_f64() * 1e3, 3),
        "connected": connect_error.is_none(),
        "elapsed_s": round(r.elapsed.as_secs_f64(), 6),
        "p50_us": l.percentile(50.0),
        "p95_us": l.percentile(95.0),
        "p99_us": l.percentile(99.0),
        "max_us": l.max(),
        "mean_us": l.mean(),
        "req_per_s": round(r.req_per_s(), 1),
        "mb_per_s": round(r.mb_per_s(), 3),
        "first_error": r.first_error,
    });
    match kind {
        Kind::Unary { synapse, size, .. } => {
            out["synapse"] = json!(synapse);
            out["size"] = json!(size);
        }
        Kind::Stream { synapse, params } => {
            out["synapse"] = json!(synapse);
            out["chunks"] = json!(params.n);
            out["chunk_size"] = json!(params.chunk_size);
        }
    }
    out
}

fn print_summary(
    args: &QueryArgs,
    kind: &Kind,
    target: SocketAddr,
    connect: Duration,
    connect_error: &Option<String>,
    r: &LoadResult,
) {
    let what = match kind {
        Kind::Unary { synapse, size, .. } => format!("{synapse} of {}", fmt_size(*size)),
        Kind::Stream { synapse, params } => format!(
            "{synapse} of {} x {}",
            params.n,
            fmt_size(params.chunk_size)
        ),
    };
    println!(
        "{} x {what}, concurrency {} -> {} at {target}",
        args.requests, args.concurrency, args.hotkey
    );
    match connect_error {
        Some(e) => println!(
            "  connect     FAILED after {}: {e}",
            fmt_us(micros(connect))
        ),
        None => println!("  connect     {}", fmt_us(micros(connect))),
    }
    println!("  ok          {}", r.ok);
    println!("  errors      {}", r.errors);
    if let Some(e) = &r.first_error {
        println!("  first error {e}");
    }
    if r.ok > 0 {
        let l = &r.latencies;
        println!(
            "  latency     p50 {}  p95 {}  p99 {}  max {}",
            fmt_us(l.percentile(50.0)),
            fmt_us(l.percentile(95.0)),
            fmt_us(l.percentile(99.0)),
            fmt_us(l.max())
        );
        println!(
            "  throughput  {:.0} req/s  {:.2} MB/s  ({:.2} s)",
            r.req_per_s(),
            r.mb_per_s(),
            r.elapsed.as_secs_f64()
        );
    }
}
