//! The WAN cells: every system's validator talks to its miner (in a child process)
//! through a `lightning-netem` relay (in a child process of its own) with the same profile
//! and seed, profile after profile, systems interleaved as in the loopback cells.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use lightning_netem::Profile;
use serde::Serialize;

use crate::remote::{self, relay_ceiling, Child, RelayCeiling, RelayCounts};
use crate::stats::Percentiles;
use crate::svg::{Chart, Series};
use crate::{
    latency, make_system, os, setup_samples, throughput, warm_up, Failure, Harness, LatencyCell,
    Options, Plan, ThroughputCell,
};

/// The systems of the WAN cells unless `only` says otherwise.
pub const WAN_SYSTEMS: [&str; 5] = [
    "lightning-tokio",
    "lightning-smol",
    "lightning-tokio-bbr",
    "btlightning",
    "quinn-raw",
];

/// How much of the WAN cells to do.
#[derive(Debug, Clone)]
pub struct WanPlan {
    /// `full`, `quick` or `tiny`.
    pub mode: &'static str,
    /// Profiles, in order.
    pub profiles: Vec<Profile>,
    /// Runtime worker threads per system (client and server alike).
    pub threads: usize,
    /// Setup rounds per profile; each takes one sample of each kind per system.
    pub setup_iters: usize,
    /// Rounds of sequential 1 KB echoes.
    pub latency_rounds: usize,
    /// Sequential echoes per round, by size (1 KB and 1 MB).
    pub latency_per_round: fn(usize) -> usize,
    /// Rounds of 1 MB echoes (one echo per system per round).
    pub mb_rounds: usize,
    /// Throughput rounds at 1 KB, c=32.
    pub tput_rounds: usize,
    /// Budget of one throughput round.
    pub tput_budget: Duration,
    /// Warm-up per system and profile (1 KB, c=32; not measured).
    pub warmup: Duration,
    /// Seconds of the relay ceiling measurement.
    pub ceiling_seconds: f64,
    /// Seed of every relay's loss and jitter decisions.
    pub seed: u64,
    /// Only these systems (those of [`WAN_SYSTEMS`] when empty).
    pub only: Vec<String>,
}

impl WanPlan {
    /// The full WAN run (about ten minutes).
    pub fn full() -> Self {
        Self {
            mode: "full",
            profiles: Profile::ALL.to_vec(),
            threads: 2,
            setup_iters: 10,
            latency_rounds: 5,
            latency_per_round: |size| if size >= 1 << 20 { 1 } else { 20 },
            mb_rounds: 7,
            tput_rounds: 3,
            tput_budget: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            ceiling_seconds: 3.0,
            seed: 15,
            only: Vec::new(),
        }
    }

    /// `--wan --quick` (a few minutes).
    pub fn quick() -> Self {
        Self {
            mode: "quick",
            setup_iters: 4,
            latency_rounds: 2,
            latency_per_round: |size| if size >= 1 << 20 { 1 } else { 15 },
            mb_rounds: 3,
            tput_rounds: 1,
            tput_budget: Duration::from_millis(1500),
            warmup: Duration::from_millis(300),
            ceiling_seconds: 1.5,
            ..Self::full()
        }
    }

    /// A smoke run for tests: `lan` only, a handful of requests.
    pub fn tiny() -> Self {
        Self {
            mode: "tiny",
            profiles: vec![Profile::Lan],
            setup_iters: 1,
            latency_rounds: 1,
            latency_per_round: |_| 2,
            mb_rounds: 1,
            tput_rounds: 1,
            tput_budget: Duration::from_millis(200),
            warmup: Duration::from_millis(1),
            ceiling_seconds: 0.2,
            ..Self::quick()
        }
    }
}

/// One system on one profile.
#[derive(Debug, Clone, Serialize)]
pub struct WanCell {
    /// Profile name.
    pub profile: String,
    /// Round-trip time the profile adds, ms (loopback's own is well under 1 ms).
    pub rtt_ms: f64,
    /// System.
    pub system: String,
    /// New client until authenticated (quinn-raw: QUIC handshake done).
    pub authenticated: Percentiles,
    /// New client until the answer to a first 64-byte echo sent at once.
    pub first_reply: Percentiles,
    /// Sequential 1 KB echoes.
    pub latency_1k: Option<LatencyCell>,
    /// 1 KB echoes with 32 in flight.
    pub throughput_1k_c32: Option<ThroughputCell>,
    /// Sequential 1 MB echoes (1 MB each way), on the warm connection.
    pub echo_1mb: Option<LatencyCell>,
    /// What this system's relay counted.
    pub relay: Option<RelayCounts>,
}

/// Everything a WAN run measured.
#[derive(Debug, Clone, Serialize)]
pub struct WanReport {
    /// `full`, `quick` or `tiny`.
    pub mode: String,
    /// Machine facts.
    pub machine: serde_json::Value,
    /// Load average (1, 5, 15 min) at the start and at the end: the machine is shared.
    pub load: (String, String),
    /// UNIX seconds at the start.
    pub started_unix: u64,
    /// Wall time, s.
    pub duration_s: f64,
    /// Relay seed.
    pub seed: u64,
    /// Where the relays listened: this machine's network address, or loopback when it has
    /// none (then Lightning treats the path as loopback: see the report).
    pub relay_address: String,
    /// The relay's own ceiling (`lan`, 1200-byte datagrams), measured in this run.
    pub relay_ceiling: Option<RelayCeiling>,
    /// Cells, profile by profile.
    pub cells: Vec<WanCell>,
    /// Failures.
    pub failures: Vec<Failure>,
}

impl WanReport {
    /// Whether every system answered every request correctly.
    pub fn all_correct(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs the WAN cells. Needs `opts.server_exe` (servers and relays are child processes).
pub fn run_wan(plan: WanPlan, opts: Options) -> Result<WanReport, String> {
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let load0 = os::loadavg();
    let exe = opts
        .server_exe
        .clone()
        .ok_or("the WAN cells need the lightning-bench executable")?;
    let names: Vec<&str> = if plan.only.is_empty() {
        WAN_SYSTEMS.to_vec()
    } else {
        crate::SYSTEM_NAMES
            .into_iter()
            .filter(|n| plan.only.iter().any(|o| o == n))
            .collect()
    };
    let mut systems = Vec::new();
    for name in &names {
        systems.push(make_system(name, plan.threads)?);
    }
    let n = systems.len();
    let base = Plan {
        mode: plan.mode,
        two_process: true,
        threads: plan.threads,
        sizes: vec![1024, 1 << 20],
        setup_iters: plan.setup_iters,
        latency_rounds: plan.latency_rounds,
        latency_per_round: plan.latency_per_round,
        tput_rounds: plan.tput_rounds,
        tput_budget: plan.tput_budget,
        tput_max: u64::MAX,
        concurrency: 32,
        warmup: plan.warmup,
        sweep: Vec::new(),
        sweep_rounds: 0,
        sweep_budget: Duration::ZERO,
        large_sweep: Vec::new(),
        fanout_servers: 0,
        fanout_rounds: 0,
        conns: 0,
        only: plan.only.clone(),
    };
    let mut h = Harness {
        plan: base,
        opts,
        systems,
        failures: Vec::new(),
        server_pids: vec![None; n],
    };

    h.log("relay ceiling");
    let relay_ceiling = match relay_ceiling(&exe, plan.ceiling_seconds, 1200, 256) {
        Ok(c) => Some(c),
        Err(e) => {
            h.fail("lightning-netem", "relay ceiling", e);
            None
        }
    };

    let relay_ip = remote::host_address().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    h.log(format!("relays listen on {relay_ip}"));

    let mut servers: Vec<Option<Child>> = (0..n).map(|_| None).collect();
    for (i, slot) in servers.iter_mut().enumerate() {
        let name = h.systems[i].name();
        match Child::server(&exe, name, plan.threads) {
            Ok(c) => {
                h.server_pids[i] = Some(c.pid());
                *slot = Some(c);
            }
            Err(e) => h.fail(name, "server process", e),
        }
    }

    let mut cells = Vec::new();
    let mut failures = Vec::new();
    for profile in &plan.profiles {
        let profile = *profile;
        h.log(format!("WAN profile {profile}"));
        let mut relays: Vec<Option<Child>> = (0..n).map(|_| None).collect();
        for i in 0..n {
            let Some(server) = &servers[i] else { continue };
            match Child::relay(&exe, profile, server.addr, plan.seed, relay_ip) {
                Ok(r) => relays[i] = Some(r),
                Err(e) => {
                    let name = h.systems[i].name();
                    h.fail(name, "relay process", e);
                }
            }
        }
        let targets: Vec<Option<(std::net::SocketAddr, String)>> = (0..n)
            .map(|i| match (&relays[i], &servers[i]) {
                (Some(r), Some(s)) => Some((r.addr, s.hotkey.clone())),
                _ => None,
            })
            .collect();

        h.log(format!("{profile}: connection setup"));
        let (auth, first) = setup_samples(&mut h, &targets, plan.setup_iters);

        let mut open = vec![false; n];
        for i in 0..n {
            let Some((addr, hotkey)) = &targets[i] else {
                continue;
            };
            match h.systems[i].open_remote(*addr, hotkey) {
                Ok(()) => open[i] = true,
                Err(e) => {
                    let name = h.systems[i].name();
                    h.fail(name, "open", e);
                }
            }
        }
        warm_up(&mut h, &open, 1024);
        h.plan.latency_rounds = plan.latency_rounds;
        let lat = latency(&mut h, &open, 1024);
        let tput = throughput(&mut h, &open, 1024, 32, plan.tput_rounds, plan.tput_budget);
        h.plan.latency_rounds = plan.mb_rounds;
        let mb = latency(&mut h, &open, 1 << 20);
        for (i, was_open) in open.iter().enumerate() {
            if *was_open {
                h.systems[i].close();
            }
        }
        let counts: Vec<Option<RelayCounts>> = relays
            .into_iter()
            .map(|r| r.and_then(|r| RelayCounts::parse(&r.finish())))
            .collect();
        for i in 0..n {
            if targets[i].is_none() {
                continue;
            }
            let name = h.systems[i].name().to_owned();
            let pick = |v: &[LatencyCell]| v.iter().find(|c| c.system == name).cloned();
            cells.push(WanCell {
                profile: profile.name().to_owned(),
                rtt_ms: profile.rtt().as_secs_f64() * 1e3,
                system: name.clone(),
                authenticated: Percentiles::from_nanos(auth[i].clone()),
                first_reply: Percentiles::from_nanos(first[i].clone()),
                latency_1k: pick(&lat),
                throughput_1k_c32: tput.iter().find(|c| c.system == name).cloned(),
                echo_1mb: pick(&mb),
                relay: counts[i],
            });
        }
        for mut f in h.failures.drain(..) {
            f.cell = format!("{profile}: {}", f.cell);
            failures.push(f);
        }
    }
    for c in servers.into_iter().flatten() {
        c.finish();
    }
    failures.append(&mut h.failures);
    Ok(WanReport {
        mode: plan.mode.to_owned(),
        machine: os::machine(),
        load: (load0, os::loadavg()),
        started_unix,
        duration_s: started.elapsed().as_secs_f64(),
        seed: plan.seed,
        relay_address: relay_ip.to_string(),
        relay_ceiling,
        cells,
        failures,
    })
}

fn ms(us: f64) -> String {
    let v = us / 1000.0;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// `84 ms (2.1 RTT)`, or just the time when the profile adds no delay.
fn in_rtts(us: f64, rtt_ms: f64) -> String {
    if rtt_ms > 0.0 {
        format!("{} ({:.1} RTT)", ms(us), us / 1000.0 / rtt_ms)
    } else {
        ms(us)
    }
}

fn baseline_for(system: &str) -> &'static str {
    if system.ends_with("-sync") {
        "btlightning-sync"
    } else {
        "btlightning"
    }
}

/// The WAN report in markdown.
pub fn markdown(r: &WanReport) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(s, "# Lightning over an emulated WAN ({} run)\n", r.mode);
    let _ = writeln!(
        s,
        "Machine: {} ({} cores), Linux {}. Shared with other work: load average {} at the start, {} at the end (1, 5, 15 min). Run took {:.0} s. Relay seed {}.\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        r.load.0,
        r.load.1,
        r.duration_s,
        r.seed
    );
    let where_relays = if r.relay_address.starts_with("127.") {
        "loopback (this machine has no network address): Lightning then sees a loopback peer, and lifts its packet ceiling to 64 KiB and its first congestion window to 262 KB through the relay's 1,500-byte MTU".to_owned()
    } else {
        format!("this machine's network address, {}: validator and miner see a peer on another host (not loopback), as across a real WAN, while the datagrams still cross the loopback interface", r.relay_address)
    };
    let _ = writeln!(
        s,
        "Three processes per system: the validator (this benchmark), the miner (`lightning-bench --serve-many`) and a `lightning-netem` relay (`lightning-bench --relay PROFILE`) between them; every system goes through its own relay with the same profile and seed. The relays listen on {where_relays}. RTT counts divide by the RTT the profile adds (loopback adds well under 1 ms). The 1 MB cell is one echo: 1 MB to the miner and 1 MB back, on the connection already warmed by the other cells.\n"
    );
    if let Some(c) = &r.relay_ceiling {
        let _ = writeln!(
            s,
            "Relay ceiling in this run (`lan`, {} B datagrams, {} in flight, echo client on two threads of this process, relay in its own process): {:.0} round trips/s = {:.0} datagrams/s forwarded, {:.1} µs of relay CPU per datagram. On `lan` the relays share the two cores with both peers, so those rows measure the relay as much as the systems; on `continent` and `world` the RTT and the loss decide.\n",
            c.size, c.window, c.round_trips_per_s, c.datagrams_per_s, c.relay_cpu_us_per_datagram
        );
    }
    let mut profiles: Vec<(String, f64)> = Vec::new();
    for c in &r.cells {
        if !profiles.iter().any(|(p, _)| *p == c.profile) {
            profiles.push((c.profile.clone(), c.rtt_ms));
        }
    }
    for (profile, rtt) in &profiles {
        let _ = writeln!(s, "## `{profile}` (RTT + {rtt:.0} ms)\n");
        let _ = writeln!(
            s,
            "| system | setup to authenticated, p50 | to first reply, p50 | 1 KB c=1 p50 / p99 | 1 KB c=32 req/s | 1 MB echo, median [min–max] | 1 MB vs btlightning |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        let cells: Vec<&WanCell> = r.cells.iter().filter(|c| c.profile == *profile).collect();
        for c in &cells {
            let base = cells
                .iter()
                .find(|b| b.system == baseline_for(&c.system))
                .and_then(|b| b.echo_1mb.as_ref())
                .map(|l| l.latency.p50_us);
            let lat = c.latency_1k.as_ref().map_or("–".into(), |l| {
                format!("{} / {}", ms(l.latency.p50_us), ms(l.latency.p99_us))
            });
            let tput = c
                .throughput_1k_c32
                .as_ref()
                .map_or("–".into(), |t| format!("{:.0}", t.rps));
            let (mb, ratio) = match &c.echo_1mb {
                Some(l) => (
                    format!(
                        "{} [{}–{}]",
                        ms(l.latency.p50_us),
                        ms(l.latency.min_us),
                        ms(l.latency.max_us)
                    ),
                    base.filter(|b| *b > 0.0)
                        .map_or("–".into(), |b| format!("{:.2}x", l.latency.p50_us / b)),
                ),
                None => ("–".into(), "–".into()),
            };
            let setup = |p: &Percentiles| {
                if p.n == 0 {
                    "–".into()
                } else {
                    in_rtts(p.p50_us, *rtt)
                }
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {lat} | {tput} | {mb} | {ratio} |",
                c.system,
                setup(&c.authenticated),
                setup(&c.first_reply)
            );
        }
        let _ = writeln!(
            s,
            "\nRelay counters (both directions): {}\n",
            cells
                .iter()
                .filter_map(|c| c.relay.map(|k| format!(
                    "{}: {} forwarded, {} lost, {} queue drops, {} over MTU, {:.0} µs mean timer lateness",
                    c.system, k.forwarded, k.lost, k.queue_dropped, k.mtu_dropped, k.mean_late_us
                )))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let _ = writeln!(
            s,
            "Setup samples per system and kind: {}. 1 KB c=1 samples: {}.\n",
            cells.first().map_or(0, |c| c.first_reply.n),
            cells
                .first()
                .and_then(|c| c.latency_1k.as_ref())
                .map_or(0, |l| l.latency.n)
        );
    }
    if r.failures.is_empty() {
        let _ = writeln!(s, "Every system answered every request correctly.");
    } else {
        let _ = writeln!(s, "## Failures\n");
        for f in &r.failures {
            let _ = writeln!(s, "- {} ({}): {}", f.system, f.cell, f.error);
        }
    }
    s
}

/// SVG charts of the WAN run: 1 MB echo time and setup to first reply by profile.
pub fn charts(r: &WanReport) -> Vec<(String, String)> {
    let mut profiles: Vec<(String, f64)> = Vec::new();
    let mut systems: Vec<String> = Vec::new();
    for c in &r.cells {
        if !profiles.iter().any(|(p, _)| *p == c.profile) {
            profiles.push((c.profile.clone(), c.rtt_ms));
        }
        if !systems.contains(&c.system) {
            systems.push(c.system.clone());
        }
    }
    let xs: Vec<(f64, String)> = profiles
        .iter()
        .map(|(p, rtt)| (rtt.max(1.0), format!("{p} ({rtt:.0} ms)")))
        .collect();
    let chart = |title: &str, f: &dyn Fn(&WanCell) -> Option<f64>| {
        Chart {
            title: title.into(),
            x_label: "profile (added RTT, log)".into(),
            y_label: "ms (log)".into(),
            xs: xs.clone(),
            series: systems
                .iter()
                .map(|sys| Series {
                    name: sys.clone(),
                    color: crate::report::color(sys).to_owned(),
                    ys: profiles
                        .iter()
                        .map(|(p, _)| {
                            r.cells
                                .iter()
                                .find(|c| c.profile == *p && c.system == *sys)
                                .and_then(f)
                        })
                        .collect(),
                })
                .collect(),
        }
        .render()
    };
    vec![
        (
            "wan_1mb_echo.svg".into(),
            chart("1 MB echo time by profile (lower is better)", &|c| {
                c.echo_1mb.as_ref().map(|l| l.latency.p50_us / 1000.0)
            }),
        ),
        (
            "wan_setup_first_reply.svg".into(),
            chart(
                "New client to first reply by profile (lower is better)",
                &|c| (c.first_reply.n > 0).then(|| c.first_reply.p50_us / 1000.0),
            ),
        ),
    ]
}

/// Writes `report.md`, `report.json` and the charts of a WAN run into `dir`.
pub fn write_outputs(r: &WanReport, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write(
        "report.json",
        serde_json::to_string_pretty(r).map_err(|e| e.to_string())?,
    )?;
    write("report.md", markdown(r))?;
    for (name, svg) in charts(r) {
        write(&name, svg)?;
    }
    Ok(())
}
