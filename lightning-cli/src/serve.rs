//! `lightning serve`: a miner with the `echo` and `stream` synapses.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;
use lightning_cli::synapses::with_synapses;
use lightning_tokio::{CongestionControl, LightningServer, ServerBuilder};

use crate::refusals;
use crate::seed::{KeyArgs, KeySource};

/// Options of `lightning serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// UDP port (0 picks a free one; the chosen port is printed).
    #[arg(long, default_value_t = 8091)]
    pub port: u16,

    #[command(flatten)]
    pub key: KeyArgs,

    /// Hotkey name inside the wallet given by --wallet-name.
    #[arg(long = "hotkey", value_name = "NAME", default_value = "default")]
    pub hotkey_name: String,

    /// Admit only the validator hotkeys listed in this file (SS58, one per line; blank
    /// lines and `#` comments are skipped). Without it any hotkey that proves its key is
    /// admitted, and the miner says so at start.
    #[arg(long, value_name = "FILE")]
    pub validators: Option<std::path::PathBuf>,

    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics (e.g. 127.0.0.1:9464;
    /// port 0 picks a free one, announced as "metrics" in the ready line).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Endpoint drivers serving the port, each with its own connections on its own task
    /// (1 to 64; default: one per available core, at most 8).
    #[arg(long, value_name = "N")]
    pub drivers: Option<usize>,

    /// Congestion controller for the answers this miner sends: cubic (the default, as
    /// btlightning), newreno, or bbr: keeps its rate on long lossy paths, but where the
    /// bottleneck queue holds a round trip's worth or less it loses 21-46% of its packets
    /// and crowds out other flows (benches/results/bottleneck.md).
    #[arg(long, value_name = "NAME", default_value_t = CongestionControl::Cubic)]
    pub congestion: CongestionControl,

    /// Largest packet path MTU discovery tries towards validators on other hosts, in
    /// bytes (1200 to 65527; default 1452). Raise it only where every path carries jumbo
    /// frames; towards a validator on a loopback address packets are 64 KiB anyway.
    #[arg(long, value_name = "BYTES")]
    pub max_udp_payload: Option<u16>,

    /// Every SECS seconds, print to stderr the handshakes refused since the last line, by
    /// reason (nothing when there were none; 0: never; at most 86400). Validators are not
    /// told why.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub refusals_every: u64,
}

/// Reads a validator list: one SS58 hotkey per line, `#` starts a comment.
fn read_validators(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the validator list {}: {e}", path.display()))?;
    let mut hotkeys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let hotkey = line.split('#').next().unwrap_or_default().trim();
        if hotkey.is_empty() {
            continue;
        }
        lightning_tokio::proto::identity::ss58::decode(hotkey).map_err(|e| {
            format!(
                "{}:{}: {hotkey:?} is not an SS58 hotkey: {e}",
                path.display(),
                n + 1
            )
        })?;
        hotkeys.push(hotkey.to_string());
    }
    if hotkeys.is_empty() {
        return Err(format!(
            "the validator list {} names no hotkey: no validator could connect",
            path.display()
        ));
    }
    Ok(hotkeys)
}

/// Runs `lightning serve` until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), String> {
    let (identity, source) = args.key.identity(&args.hotkey_name)?;
    if source == KeySource::Random {
        eprintln!(
            "lightning serve: no --seed or --wallet-name given; using a random key for this run"
        );
    }
    let mut shutdown = Shutdown::install().map_err(|e| format!("cannot watch signals: {e}"))?;
    let addr = SocketAddr::new(args.host, args.port);
    let mut builder = ServerBuilder::new()
        .identity(identity)
        .bind_addr(addr)
        .congestion(args.congestion);
    if let Some(n) = args.drivers {
        builder = builder.drivers(n);
    }
    if let Some(bytes) = args.max_udp_payload {
        builder = builder.max_udp_payload(bytes);
    }
    match &args.validators {
        Some(path) => {
            let hotkeys = read_validators(path)?;
            eprintln!(
                "lightning serve: admitting only the {} validator hotkeys listed in {}",
                hotkeys.len(),
                path.display()
            );
            builder = builder.permitted_validators(hotkeys);
        }
        None => eprintln!(
            "lightning serve: WARNING: admitting ANY validator hotkey that proves its key \
             (pass --validators FILE to admit only yours)"
        ),
    }
    let server = with_synapses(builder)
        .start()
        .await
        .map_err(|e| format!("cannot start the server on {addr}: {e}"))?;
    let server = std::sync::Arc::new(server);
    let metrics = match args.metrics {
        Some(at) => {
            let listener = crate::metrics_http::bind(at)
                .await
                .map_err(|e| format!("cannot listen for metrics on {at}: {e}"))?;
            let bound = listener
                .local_addr()
                .map_err(|e| format!("metrics listener: {e}"))?;
            Some((bound, crate::metrics_http::spawn(listener, server.clone())))
        }
        None => None,
    };

    let mut ready = serde_json::json!({
        "port": server.local_addr().port(),
        "drivers": server.drivers(),
        "hotkey": server.hotkey(),
        "fingerprint": server.fingerprint(),
    });
    if let Some((bound, _)) = &metrics {
        ready["metrics"] = serde_json::Value::String(bound.to_string());
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(stdout);
    eprintln!(
        "lightning serve: miner {} listening on {} with {} endpoint driver{} (synapses: echo, stream)",
        server.hotkey(),
        server.local_addr(),
        server.drivers(),
        if server.drivers() == 1 { "" } else { "s" }
    );
    if let Some((bound, _)) = &metrics {
        eprintln!("lightning serve: metrics at http://{bound}/metrics");
    }

    let refusals = (args.refusals_every > 0).then(|| {
        tokio::spawn(report_refusals(
            server.clone(),
            Duration::from_secs(args.refusals_every),
        ))
    });

    let signal = shutdown.wait().await;
    eprintln!("lightning serve: {signal} received, stopping");
    if let Some((_, task)) = metrics {
        task.abort();
    }
    if let Some(task) = refusals {
        task.abort();
    }
    let served = server.stats().await.map(|s| s.stats.requests).ok();
    server
        .stop()
        .await
        .map_err(|e| format!("stopping the server: {e}"))?;
    match served {
        Some(n) => eprintln!("lightning serve: stopped after {n} requests"),
        None => eprintln!("lightning serve: stopped"),
    }
    Ok(())
}

/// Prints, every `every`, the handshakes refused since the last look (see
/// [`crate::refusals`]).
async fn report_refusals(server: std::sync::Arc<LightningServer>, every: Duration) {
    let period = format!("in the last {} s", every.as_secs());
    let mut seen = refusals::Counts::new();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticks.tick().await;
        // An error means the server is stopping; the signal path reports that.
        let Ok(metrics) = server.metrics().await else {
            return;
        };
        let now: refusals::Counts = metrics.handshakes_refused.iter().collect();
        if let Some(line) = refusals::describe(&seen, &now, &period) {
            eprintln!("lightning serve: {line}");
        }
        seen = now;
    }
}

/// Signal handlers, installed before the server announces itself so that a signal sent
/// right after the ready line is never missed.
struct Shutdown {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn wait(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
