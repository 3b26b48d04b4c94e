//! # lightning-benches
//!
//! One program that measures Lightning (on tokio and on smol), the published btlightning
//! 0.2.15 (async and sync echo handlers) and a raw quinn echo (the QUIC floor) side by side
//! with real UDP, TLS and sr25519, interleaving the systems so that drift in the machine
//! hits all of them alike: validator and miner in separate processes on loopback (the
//! default), in one process, or through a `lightning-netem` WAN relay ([`wan`]). See
//! `benches/README.md` for the method.
#![deny(missing_docs)]

pub mod exec;
pub mod os;
pub mod remote;
pub mod report;
pub mod shared_cost;
pub mod stats;
pub mod svg;
pub mod systems;
pub mod wan;

use std::io::Write;
use std::path::{Path, PathBuf};

use remote::Child;
use std::time::{Duration, Instant};

use serde::Serialize;

use stats::{median, Percentiles};
use systems::System;

/// Payload sizes of PROTOCOL.md §12.
pub const SIZES: [usize; 5] = [256, 1024, 10 * 1024, 100 * 1024, 1024 * 1024];

/// Payload sizes of the large-payload concurrency sweep (issue 15: throughput must not
/// fall as concurrency grows from 1 to 4 to 16 at these sizes).
pub const LARGE_SWEEP_SIZES: [usize; 2] = [100 * 1024, 1024 * 1024];

/// Every system, in report order.
pub const SYSTEM_NAMES: [&str; 7] = [
    "lightning-tokio",
    "lightning-smol",
    "lightning-tokio-sync",
    "lightning-tokio-bbr",
    "btlightning",
    "btlightning-sync",
    "quinn-raw",
];

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `full`, `quick` or `tiny`.
    pub mode: &'static str,
    /// Validator and miner in separate processes (the default), or both in this one.
    pub two_process: bool,
    /// Runtime worker threads per system.
    pub threads: usize,
    /// Payload sizes.
    pub sizes: Vec<usize>,
    /// Connection-setup samples per system.
    pub setup_iters: usize,
    /// Latency rounds per size; each system runs once per round.
    pub latency_rounds: usize,
    /// Sequential requests per latency round, by size.
    pub latency_per_round: fn(usize) -> usize,
    /// Throughput rounds per size.
    pub tput_rounds: usize,
    /// Wall-time budget of one throughput round.
    pub tput_budget: Duration,
    /// At most this many requests in one throughput round.
    pub tput_max: u64,
    /// Concurrency of the throughput table.
    pub concurrency: usize,
    /// Warm-up budget per system before each size (not measured).
    pub warmup: Duration,
    /// Concurrency levels of the sweep (1 KB).
    pub sweep: Vec<usize>,
    /// Rounds per sweep cell.
    pub sweep_rounds: usize,
    /// Budget of one sweep round.
    pub sweep_budget: Duration,
    /// Concurrency levels of the large-payload sweep ([`LARGE_SWEEP_SIZES`]).
    pub large_sweep: Vec<usize>,
    /// Servers in the fan-out cell.
    pub fanout_servers: usize,
    /// Fan-out rounds per system.
    pub fanout_rounds: usize,
    /// Validator connections in the memory cell.
    pub conns: usize,
    /// Only these systems (all when empty).
    pub only: Vec<String>,
}

impl Plan {
    /// The full run (about ten minutes on two cores).
    pub fn full() -> Self {
        Self {
            mode: "full",
            two_process: true,
            threads: 2,
            sizes: SIZES.to_vec(),
            setup_iters: 100,
            latency_rounds: 5,
            latency_per_round: |size| match size {
                s if s <= 10 * 1024 => 200,
                s if s <= 100 * 1024 => 100,
                _ => 40,
            },
            tput_rounds: 3,
            tput_budget: Duration::from_millis(2000),
            tput_max: 40_000,
            concurrency: 32,
            warmup: Duration::from_millis(300),
            sweep: vec![1, 2, 4, 8, 16, 32, 64, 128, 256],
            sweep_rounds: 3,
            sweep_budget: Duration::from_millis(700),
            large_sweep: vec![1, 4, 16],
            fanout_servers: 64,
            fanout_rounds: 100,
            conns: 1000,
            only: Vec::new(),
        }
    }

    /// The `--quick` run (under a minute).
    pub fn quick() -> Self {
        Self {
            mode: "quick",
            setup_iters: 10,
            latency_rounds: 2,
            latency_per_round: |size| if size <= 100 * 1024 { 50 } else { 10 },
            tput_rounds: 1,
            tput_budget: Duration::from_millis(400),
            tput_max: 2_000,
            warmup: Duration::from_millis(100),
            sweep: vec![1, 32, 256],
            sweep_rounds: 1,
            sweep_budget: Duration::from_millis(300),
            large_sweep: vec![1, 16],
            fanout_servers: 8,
            fanout_rounds: 5,
            conns: 50,
            ..Self::full()
        }
    }

    /// A smoke run for tests in debug builds: every cell, a handful of requests.
    pub fn tiny() -> Self {
        Self {
            mode: "tiny",
            setup_iters: 2,
            latency_rounds: 1,
            latency_per_round: |_| 3,
            tput_rounds: 1,
            tput_budget: Duration::from_millis(200),
            tput_max: 40,
            warmup: Duration::from_millis(1),
            sweep: vec![1, 8],
            sweep_budget: Duration::from_millis(100),
            large_sweep: vec![2],
            fanout_servers: 3,
            fanout_rounds: 2,
            conns: 6,
            ..Self::quick()
        }
    }
}

/// Builds the system called `name`.
pub fn make_system(name: &str, threads: usize) -> Result<Box<dyn System>, String> {
    use systems::{btl::BtlSys, lightning::LightningSys, raw::RawQuinn};
    Ok(match name {
        "lightning-tokio" => Box::new(LightningSys::tokio(threads, false)?),
        "lightning-tokio-sync" => Box::new(LightningSys::tokio(threads, true)?),
        "lightning-smol" => Box::new(LightningSys::smol(threads)?),
        "lightning-tokio-bbr" => Box::new(LightningSys::tokio_bbr(threads)?),
        "btlightning" => Box::new(BtlSys::new(threads, false)?),
        "btlightning-sync" => Box::new(BtlSys::new(threads, true)?),
        "quinn-raw" => Box::new(RawQuinn::new(threads)?),
        other => return Err(format!("unknown system {other}")),
    })
}

/// One system's connection setup.
#[derive(Debug, Clone, Serialize)]
pub struct SetupCell {
    /// System.
    pub system: String,
    /// Percentiles of connect + handshake + first echo (two processes: a first echo sent
    /// by a new client at once, which dials on demand).
    pub setup: Percentiles,
    /// Two processes only: percentiles of a new client's connect until authenticated
    /// (quinn-raw: until the QUIC handshake completes).
    pub authenticated: Option<Percentiles>,
}

/// One system's latency at one size.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyCell {
    /// Payload bytes.
    pub size: usize,
    /// System.
    pub system: String,
    /// Percentiles over all rounds.
    pub latency: Percentiles,
    /// Lowest and highest per-round median, µs (the spread across rounds).
    pub round_p50_us: (f64, f64),
}

/// One system's throughput at one size and concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputCell {
    /// Payload bytes.
    pub size: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// System.
    pub system: String,
    /// Median over rounds, requests per second.
    pub rps: f64,
    /// Each round's requests per second.
    pub rounds: Vec<f64>,
    /// Successful requests over all rounds.
    pub requests: u64,
    /// Process CPU time (user + system, client and server together) per request, µs.
    pub cpu_us_per_req: f64,
    /// CPU time of the client's process per request, µs (in one process: everything).
    pub client_cpu_us_per_req: f64,
    /// CPU time of the server's process per request, µs (two processes only).
    pub server_cpu_us_per_req: Option<f64>,
    /// Loopback bytes per request, both directions, IP/UDP/QUIC/TLS included (machine-wide
    /// counter: other loopback traffic on the machine adds noise).
    pub lo_bytes_per_req: f64,
    /// UDP receive/send buffer errors during the rounds (machine-wide counter).
    pub udp_drops: u64,
    /// Request frame bytes, computed as PROTOCOL.md §12 does.
    pub wire_request_bytes: usize,
}

/// One system's fan-out.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutCell {
    /// System.
    pub system: String,
    /// Servers.
    pub servers: usize,
    /// Time to connect (and authenticate) one new client to every server, ms.
    pub connect_ms: f64,
    /// Percentiles of one round (the same 1 KB echo to every server at once).
    pub round: Percentiles,
}

/// One system's many-connections cell.
#[derive(Debug, Clone, Serialize)]
pub struct ConnsCell {
    /// System.
    pub system: String,
    /// Validators connected.
    pub n: usize,
    /// Server resident memory before the validators connected, bytes.
    pub rss_before: u64,
    /// Server resident memory with all of them connected, bytes.
    pub rss_after: u64,
    /// (after − before) / n.
    pub bytes_per_conn: f64,
    /// Time to connect, authenticate and echo once on every connection, s.
    pub connect_s: f64,
    /// `server process` (the server ran alone in a child process) or `shared process`
    /// (server and clients together).
    pub measured_in: String,
}

/// A failure: a system did not answer correctly somewhere.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// System.
    pub system: String,
    /// Cell.
    pub cell: String,
    /// What went wrong.
    pub error: String,
}

/// A goal of the benchmarks issue and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is compared.
    pub name: String,
    /// System measured.
    pub system: String,
    /// Target ratio, e.g. `>= 2.0`.
    pub target: String,
    /// Measured ratio.
    pub ratio: f64,
    /// Whether it was met.
    pub met: bool,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `full`, `quick` or `tiny`.
    pub mode: String,
    /// `two processes` or `one process`.
    pub processes: String,
    /// The machine's load average (1, 5, 15 min) at the start and at the end: the machine
    /// is shared.
    pub load: (String, String),
    /// Machine facts.
    pub machine: serde_json::Value,
    /// UNIX seconds at the start.
    pub started_unix: u64,
    /// Wall time of the run, s.
    pub duration_s: f64,
    /// Runtime worker threads per system.
    pub threads: usize,
    /// Systems and their btlightning baseline.
    pub systems: Vec<(String, String)>,
    /// Method notes.
    pub notes: Vec<String>,
    /// Connection setup.
    pub setup: Vec<SetupCell>,
    /// Latency at concurrency 1.
    pub latency: Vec<LatencyCell>,
    /// Throughput at the plan's concurrency.
    pub throughput: Vec<ThroughputCell>,
    /// Throughput sweep over concurrency at 1 KB.
    pub sweep: Vec<ThroughputCell>,
    /// Throughput sweep over concurrency at [`LARGE_SWEEP_SIZES`].
    pub large_sweep: Vec<ThroughputCell>,
    /// Fan-out.
    pub fanout: Vec<FanoutCell>,
    /// Many connections.
    pub connections: Vec<ConnsCell>,
    /// Failures (empty when every system answered every request correctly).
    pub failures: Vec<Failure>,
    /// Goals.
    pub goals: Vec<Goal>,
}

impl Report {
    /// Whether every system answered every request correctly.
    pub fn all_correct(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Options besides the plan.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The `lightning-bench` executable, to run many-connections servers in a child
    /// process; `None` runs them in this process.
    pub server_exe: Option<PathBuf>,
    /// Progress lines on stderr.
    pub verbose: bool,
}

pub(crate) struct Harness {
    plan: Plan,
    opts: Options,
    systems: Vec<Box<dyn System>>,
    failures: Vec<Failure>,
    /// Two processes: each system's server process.
    server_pids: Vec<Option<u32>>,
}

impl Harness {
    fn log(&self, msg: impl AsRef<str>) {
        if self.opts.verbose {
            eprintln!("[bench] {}", msg.as_ref());
        }
    }

    fn fail(&mut self, system: &str, cell: &str, error: String) {
        self.log(format!("FAIL {system} {cell}: {error}"));
        self.failures.push(Failure {
            system: system.to_owned(),
            cell: cell.to_owned(),
            error,
        });
    }

    /// System indices in round `r`'s order: rotated so that no system always goes first.
    fn order(&self, r: usize) -> Vec<usize> {
        let n = self.systems.len();
        (0..n).map(|i| (i + r) % n).collect()
    }
}

/// Runs the plan and returns the report.
// The loops index several per-system vectors in step; indices read best.
#[allow(clippy::needless_range_loop)]
pub fn run(plan: Plan, opts: Options) -> Result<Report, String> {
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut systems = Vec::new();
    for name in SYSTEM_NAMES {
        if plan.only.is_empty() || plan.only.iter().any(|o| o == name) {
            systems.push(make_system(name, plan.threads)?);
        }
    }
    let n = systems.len();
    let mut h = Harness {
        plan,
        opts,
        systems,
        failures: Vec::new(),
        server_pids: vec![None; n],
    };
    let mut report = Report {
        mode: h.plan.mode.to_owned(),
        processes: if h.plan.two_process {
            "two processes".into()
        } else {
            "one process".into()
        },
        load: (os::loadavg(), String::new()),
        machine: os::machine(),
        started_unix,
        duration_s: 0.0,
        threads: h.plan.threads,
        systems: h
            .systems
            .iter()
            .map(|s| (s.name().to_owned(), s.baseline().to_owned()))
            .collect(),
        notes: notes(&h.plan),
        setup: Vec::new(),
        latency: Vec::new(),
        throughput: Vec::new(),
        sweep: Vec::new(),
        large_sweep: Vec::new(),
        fanout: Vec::new(),
        connections: Vec::new(),
        failures: Vec::new(),
        goals: Vec::new(),
    };

    // Two processes: one server child per system for the whole run.
    let mut servers: Vec<Option<Child>> = (0..n).map(|_| None).collect();
    if h.plan.two_process {
        let exe = h
            .opts
            .server_exe
            .clone()
            .ok_or("two processes need the lightning-bench executable")?;
        for i in 0..n {
            let name = h.systems[i].name();
            match Child::server(&exe, name, h.plan.threads) {
                Ok(c) => {
                    h.server_pids[i] = Some(c.pid());
                    servers[i] = Some(c);
                }
                Err(e) => h.fail(name, "server process", e),
            }
        }
        report.setup = setup_remote(&mut h, &servers);
    } else {
        report.setup = setup(&mut h);
    }

    // Long-lived pairs for latency and throughput.
    let mut open = vec![false; h.systems.len()];
    for i in 0..h.systems.len() {
        let opened = match (h.plan.two_process, &servers[i]) {
            (false, _) => h.systems[i].open(),
            (true, Some(c)) => h.systems[i].open_remote(c.addr, &c.hotkey),
            (true, None) => continue,
        };
        match opened {
            Ok(()) => open[i] = true,
            Err(e) => {
                let name = h.systems[i].name();
                h.fail(name, "open", e);
            }
        }
    }
    for size in h.plan.sizes.clone() {
        warm_up(&mut h, &open, size);
        report.latency.extend(latency(&mut h, &open, size));
        let c = h.plan.concurrency;
        let (rounds, budget) = (h.plan.tput_rounds, h.plan.tput_budget);
        report
            .throughput
            .extend(throughput(&mut h, &open, size, c, rounds, budget));
    }
    for c in h.plan.sweep.clone() {
        let (rounds, budget) = (h.plan.sweep_rounds, h.plan.sweep_budget);
        report
            .sweep
            .extend(throughput(&mut h, &open, 1024, c, rounds, budget));
    }
    for size in LARGE_SWEEP_SIZES {
        for c in h.plan.large_sweep.clone() {
            let (rounds, budget) = (h.plan.sweep_rounds, h.plan.sweep_budget);
            report
                .large_sweep
                .extend(throughput(&mut h, &open, size, c, rounds, budget));
        }
    }
    for (i, sys) in h.systems.iter_mut().enumerate() {
        if open[i] {
            sys.close();
        }
    }

    for c in servers.into_iter().flatten() {
        c.finish();
    }

    // Fan-out (64 servers) and memory per connection stay in the one-process view.
    if !h.plan.two_process {
        report.fanout = fanout(&mut h);
        report.connections = connections(&mut h);
    }

    report.failures = std::mem::take(&mut h.failures);
    report.goals = report::goals(&report);
    report.duration_s = started.elapsed().as_secs_f64();
    report.load.1 = os::loadavg();
    Ok(report)
}

fn notes(plan: &Plan) -> Vec<String> {
    let two = plan.two_process;
    let mut out: Vec<String> = Vec::new();
    if two {
        out.push(format!(
            "Two processes: each system's miner (server) runs in a child process of its own (`lightning-bench --serve-many SYSTEM 256 {t}`, {t} runtime threads) for the whole run; the validator (client) of every system runs in the benchmark's process, on its own executor with {t} worker threads. The two talk over loopback UDP.",
            t = plan.threads
        ));
    } else {
        out.push(format!(
            "Each system runs on its own executor with {} worker threads (tokio multi-thread, or an async-executor driven by {} threads for smol); server and client share the process and the executor. btlightning's sync handler additionally uses tokio's blocking pool, as it does in production.",
            plan.threads, plan.threads
        ));
    }
    out.push("Systems are interleaved: each round runs every system once, the order rotating from round to round; a warm-up per system and size is not measured.".into());
    out.push("Payload: data = {\"payload\": N bytes of 0x42 as msgpack bin}; miner seed 32x0x01, validator seed 32x0x02; percentiles are nearest rank at round(p/100 x (n-1)) (PROTOCOL.md §12). Every answer is checked to echo the request's data exactly.".into());
    if two {
        out.push("Connection setup: a new client per sample against the long-lived server process, timed two ways in alternate samples: until authenticated (connect: QUIC + TLS + sr25519; quinn-raw: the QUIC handshake) and until the answer to a first 64-byte echo sent at once (the client dials on demand; quinn-raw: connect, then echo). Each sample uses a distinct validator hotkey; building the client is timed.".into());
    } else {
        out.push("Connection setup: a fresh server per sample (untimed), then new client + QUIC + TLS + sr25519 handshake + first 64-byte echo (timed). quinn-raw has no application handshake (it is the floor).".into());
    }
    out.push("Default configs everywhere: Lightning and quinn-raw ask for 4 MiB UDP socket buffers; btlightning uses kernel defaults, as published.".into());
    if two {
        out.push("CPU per request is given for each process over the throughput rounds: the client's from getrusage of the benchmark's process (every system's client executor lives there; idle ones cost nothing measurable), the server's from /proc/PID/stat of its child (10 ms ticks). UDP drops and loopback bytes are machine-wide counters, so other traffic on the machine can add to them. Fan-out and memory per connection are in the one-process view (`--in-process`).".into());
    } else {
        out.push("CPU per request is process CPU time (client and server together) over the throughput rounds; UDP drops and loopback bytes are machine-wide counters, so other traffic on the machine can add to them.".into());
    }
    out
}

// The loops index several per-system vectors in step; indices read best.
#[allow(clippy::needless_range_loop)]
pub(crate) fn warm_up(h: &mut Harness, open: &[bool], size: usize) {
    let budget = h.plan.warmup;
    let c = h.plan.concurrency;
    for i in 0..h.systems.len() {
        if !open[i] {
            continue;
        }
        if let Err(e) = h.systems[i].throughput(size, c, budget, 1_000_000) {
            let name = h.systems[i].name();
            h.fail(name, &format!("warm-up {size}"), e);
        }
    }
}

fn setup(h: &mut Harness) -> Vec<SetupCell> {
    h.log("connection setup");
    let n = h.systems.len();
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut broken = vec![false; n];
    for r in 0..h.plan.setup_iters {
        for i in h.order(r) {
            if broken[i] {
                continue;
            }
            match h.systems[i].setup_once() {
                Ok(d) => samples[i].push(d.as_nanos() as u64),
                Err(e) => {
                    broken[i] = true;
                    let name = h.systems[i].name();
                    h.fail(name, "setup", e);
                }
            }
        }
    }
    h.systems
        .iter()
        .zip(samples)
        .map(|(s, v)| SetupCell {
            system: s.name().to_owned(),
            setup: Percentiles::from_nanos(v),
            authenticated: None,
        })
        .collect()
}

/// Connection setup against each system's server process: new clients, timed until
/// authenticated and (in alternate samples) until the first reply.
fn setup_remote(h: &mut Harness, servers: &[Option<Child>]) -> Vec<SetupCell> {
    h.log("connection setup (two processes)");
    let iters = h.plan.setup_iters;
    let targets: Vec<_> = servers
        .iter()
        .map(|c| c.as_ref().map(|c| (c.addr, c.hotkey.clone())))
        .collect();
    let (auth, first) = setup_samples(h, &targets, iters);
    h.systems
        .iter()
        .zip(auth.into_iter().zip(first))
        .enumerate()
        .filter(|(i, _)| servers[*i].is_some())
        .map(|(_, (s, (a, f)))| SetupCell {
            system: s.name().to_owned(),
            setup: Percentiles::from_nanos(f),
            authenticated: Some(Percentiles::from_nanos(a)),
        })
        .collect()
}

/// `iters` rounds; in each, every system (in rotating order) takes one sample until
/// authenticated and one until the first reply, each with a new client and a distinct
/// validator hotkey, against `targets[i]` (address, miner hotkey). Returns the samples
/// (ns) until authenticated and until the first reply.
pub(crate) fn setup_samples(
    h: &mut Harness,
    targets: &[Option<(std::net::SocketAddr, String)>],
    iters: usize,
) -> (Vec<Vec<u64>>, Vec<Vec<u64>>) {
    use systems::SetupKind;
    let n = h.systems.len();
    let mut auth: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut first: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut broken: Vec<bool> = targets.iter().map(Option::is_none).collect();
    for r in 0..iters {
        for i in h.order(r) {
            let Some((addr, hotkey)) = &targets[i] else {
                continue;
            };
            for (k, kind) in [SetupKind::Authenticated, SetupKind::FirstReply]
                .into_iter()
                .enumerate()
            {
                if broken[i] {
                    continue;
                }
                let seed = systems::many_seed(10_000 + 2 * r + k);
                match h.systems[i].setup_remote(*addr, hotkey, seed, kind) {
                    Ok(d) if kind == SetupKind::Authenticated => auth[i].push(d.as_nanos() as u64),
                    Ok(d) => first[i].push(d.as_nanos() as u64),
                    Err(e) => {
                        broken[i] = true;
                        let name = h.systems[i].name();
                        h.fail(name, &format!("setup ({kind:?})"), e);
                    }
                }
            }
        }
    }
    (auth, first)
}

pub(crate) fn latency(h: &mut Harness, open: &[bool], size: usize) -> Vec<LatencyCell> {
    h.log(format!("latency {size} B"));
    let n = h.systems.len();
    let per_round = (h.plan.latency_per_round)(size);
    let mut all: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut round_p50: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut broken: Vec<bool> = open.iter().map(|o| !o).collect();
    for r in 0..h.plan.latency_rounds {
        for i in h.order(r) {
            if broken[i] {
                continue;
            }
            match h.systems[i].latency(size, per_round) {
                Ok(v) => {
                    round_p50[i].push(Percentiles::from_nanos(v.clone()).p50_us);
                    all[i].extend(v);
                }
                Err(e) => {
                    broken[i] = true;
                    let name = h.systems[i].name();
                    h.fail(name, &format!("latency {size}"), e);
                }
            }
        }
    }
    let filled: Vec<usize> = (0..n).filter(|&i| !all[i].is_empty()).collect();
    filled
        .into_iter()
        .map(|i| {
            let p = &round_p50[i];
            LatencyCell {
                size,
                system: h.systems[i].name().to_owned(),
                latency: Percentiles::from_nanos(std::mem::take(&mut all[i])),
                round_p50_us: (
                    p.iter().copied().fold(f64::INFINITY, f64::min),
                    p.iter().copied().fold(0.0, f64::max),
                ),
            }
        })
        .collect()
}

pub(crate) fn throughput(
    h: &mut Harness,
    open: &[bool],
    size: usize,
    concurrency: usize,
    rounds: usize,
    budget: Duration,
) -> Vec<ThroughputCell> {
    h.log(format!("throughput {size} B, c={concurrency}"));
    let n = h.systems.len();
    let mut cells: Vec<Option<ThroughputCell>> = vec![None; n];
    let mut cpu = vec![Duration::ZERO; n];
    let mut server_cpu = vec![Duration::ZERO; n];
    let mut lo = vec![0u64; n];
    let mut broken: Vec<bool> = open.iter().map(|o| !o).collect();
    for r in 0..rounds {
        for i in h.order(r) {
            if broken[i] {
                continue;
            }
            let pid = h.server_pids[i];
            let server_cpu_now = || pid.map_or(Duration::ZERO, os::process_cpu_time);
            let (udp0, lo0, cpu0, scpu0) = (
                os::UdpCounters::read(),
                os::loopback_bytes(),
                os::cpu_time(),
                server_cpu_now(),
            );
            let result = h.systems[i].throughput(size, concurrency, budget, h.plan.tput_max);
            let (udp1, lo1, cpu1, scpu1) = (
                os::UdpCounters::read(),
                os::loopback_bytes(),
                os::cpu_time(),
                server_cpu_now(),
            );
            match result {
                Ok((ok, elapsed)) => {
                    cpu[i] += cpu1.saturating_sub(cpu0);
                    server_cpu[i] += scpu1.saturating_sub(scpu0);
                    lo[i] += lo1.saturating_sub(lo0);
                    let cell = cells[i].get_or_insert_with(|| ThroughputCell {
                        size,
                        concurrency,
                        system: h.systems[i].name().to_owned(),
                        rps: 0.0,
                        rounds: Vec::new(),
                        requests: 0,
                        cpu_us_per_req: 0.0,
                        client_cpu_us_per_req: 0.0,
                        server_cpu_us_per_req: None,
                        lo_bytes_per_req: 0.0,
                        udp_drops: 0,
                        wire_request_bytes: systems::wire_request_bytes(size),
                    });
                    cell.rounds
                        .push(ok as f64 / elapsed.as_secs_f64().max(1e-9));
                    cell.requests += ok;
                    cell.udp_drops += udp1.drops_since(&udp0);
                }
                Err(e) => {
                    broken[i] = true;
                    let name = h.systems[i].name();
                    h.fail(name, &format!("throughput {size} c={concurrency}"), e);
                }
            }
        }
    }
    cells
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let mut c = c?;
            c.rps = median(&c.rounds);
            let reqs = c.requests.max(1) as f64;
            c.client_cpu_us_per_req = cpu[i].as_secs_f64() * 1e6 / reqs;
            c.server_cpu_us_per_req =
                h.server_pids[i].map(|_| server_cpu[i].as_secs_f64() * 1e6 / reqs);
            c.cpu_us_per_req = c.client_cpu_us_per_req + c.server_cpu_us_per_req.unwrap_or(0.0);
            c.lo_bytes_per_req = lo[i] as f64 / reqs;
            Some(c)
        })
        .collect()
}

// The loops index several per-system vectors in step; indices read best.
#[allow(clippy::needless_range_loop)]
fn fanout(h: &mut Harness) -> Vec<FanoutCell> {
    let servers = h.plan.fanout_servers;
    h.log(format!("fan-out to {servers} servers"));
    let n = h.systems.len();
    let mut connect = vec![None; n];
    for i in 0..n {
        match h.systems[i].fanout_open(servers) {
            Ok(d) => connect[i] = Some(d),
            Err(e) => {
                let name = h.systems[i].name();
                h.fail(name, "fan-out connect", e);
                h.systems[i].fanout_close();
            }
        }
    }
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); n];
    // One unmeasured round each first.
    for r in 0..=h.plan.fanout_rounds {
        for i in h.order(r) {
            if connect[i].is_none() {
                continue;
            }
            match h.systems[i].fanout_round(1024) {
                Ok(d) if r > 0 => samples[i].push(d.as_nanos() as u64),
                Ok(_) => {}
                Err(e) => {
                    connect[i] = None;
                    let name = h.systems[i].name();
                    h.fail(name, "fan-out round", e);
                }
            }
        }
    }
    let mut out = Vec::new();
    for i in 0..n {
        h.systems[i].fanout_close();
        if let Some(d) = connect[i] {
            out.push(FanoutCell {
                system: h.systems[i].name().to_owned(),
                servers,
                connect_ms: d.as_secs_f64() * 1e3,
                round: Percentiles::from_nanos(std::mem::take(&mut samples[i])),
            });
        }
    }
    out
}

/// The child side of the many-connections cell: serve until stdin closes.
pub fn serve_many(system: &str, n: usize, threads: usize) -> Result<(), String> {
    let mut sys = make_system(system, threads)?;
    let (addr, hotkey) = sys.start_many_server(systems::ManyConns { n })?;
    let mut out = std::io::stdout();
    writeln!(out, "READY {addr} {hotkey}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map_err(|e| e.to_string())?
        > 0
    {
        sink.clear();
    }
    sys.stop_many_server();
    Ok(())
}

fn connections(h: &mut Harness) -> Vec<ConnsCell> {
    let n = h.plan.conns;
    h.log(format!("{n} validator connections"));
    let mut out = Vec::new();
    for i in 0..h.systems.len() {
        let name = h.systems[i].name().to_owned();
        let exe = h.opts.server_exe.clone();
        let (addr, hotkey, child, measured_in) = match &exe {
            Some(exe) => match Child::spawn(
                exe,
                &[
                    "--serve-many".into(),
                    name.clone(),
                    n.to_string(),
                    h.plan.threads.to_string(),
                ],
            ) {
                Ok(c) => (c.addr, c.hotkey.clone(), Some(c), "server process"),
                Err(e) => {
                    h.fail(&name, "connections: server", e);
                    continue;
                }
            },
            None => match h.systems[i].start_many_server(systems::ManyConns { n }) {
                Ok((a, k)) => (a, k, None, "shared process"),
                Err(e) => {
                    h.fail(&name, "connections: server", e);
                    continue;
                }
            },
        };
        let pid = child.as_ref().map(Child::pid);
        std::thread::sleep(Duration::from_millis(200));
        let rss_before = os::rss_bytes(pid);
        let result = h.systems[i].connect_many(addr, &hotkey, n);
        std::thread::sleep(Duration::from_millis(200));
        let rss_after = os::rss_bytes(pid);
        h.systems[i].drop_many_clients();
        match child {
            Some(c) => {
                c.finish();
            }
            None => h.systems[i].stop_many_server(),
        }
        match result {
            Ok(d) => out.push(ConnsCell {
                system: name,
                n,
                rss_before,
                rss_after,
                bytes_per_conn: rss_after.saturating_sub(rss_before) as f64 / n.max(1) as f64,
                connect_s: d.as_secs_f64(),
                measured_in: measured_in.to_owned(),
            }),
            Err(e) => h.fail(&name, "connections", e),
        }
    }
    out
}

/// Writes `report.json`, `report.md` and the SVG charts into `dir`.
pub fn write_outputs(report: &Report, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write(
        "report.json",
        serde_json::to_string_pretty(report).map_err(|e| e.to_string())?,
    )?;
    write("report.md", report::markdown(report))?;
    for (name, svg) in report::charts(report) {
        write(&name, svg)?;
    }
    Ok(())
}
