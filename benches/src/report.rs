//! The markdown table, the goals of the benchmarks issue, and the charts.

use std::fmt::Write;

use crate::svg::{Chart, Series};
use crate::{Goal, Report, ThroughputCell};

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MB", s >> 20),
        s if s >= 1024 && s % 1024 == 0 => format!("{} KB", s >> 10),
        s => format!("{s} B"),
    }
}

/// The chart colour of a system.
pub fn color(system: &str) -> &'static str {
    match system {
        "lightning-tokio" => "#1f77b4",
        "lightning-smol" => "#17becf",
        "lightning-tokio-sync" => "#2ca02c",
        "lightning-tokio-bbr" => "#9467bd",
        "btlightning" => "#d62728",
        "btlightning-sync" => "#ff7f0e",
        "quinn-raw" => "#7f7f7f",
        _ => "#9467bd",
    }
}

fn baseline<'a>(r: &'a Report, system: &str) -> &'a str {
    r.systems
        .iter()
        .find(|(s, _)| s == system)
        .map_or("btlightning", |(_, b)| b.as_str())
}

fn sizes(r: &Report) -> Vec<usize> {
    let mut v: Vec<usize> = r.throughput.iter().map(|c| c.size).collect();
    v.extend(r.latency.iter().map(|c| c.size));
    v.sort_unstable();
    v.dedup();
    v
}

fn tput<'a>(r: &'a Report, system: &str, size: usize) -> Option<&'a ThroughputCell> {
    r.throughput
        .iter()
        .find(|c| c.system == system && c.size == size)
}

fn lat<'a>(r: &'a Report, system: &str, size: usize) -> Option<&'a crate::LatencyCell> {
    r.latency
        .iter()
        .find(|c| c.system == system && c.size == size)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}x"))
}

/// The concurrency levels of sweep `cells`, ascending, each once.
fn levels(cells: &[ThroughputCell]) -> Vec<usize> {
    let mut cs: Vec<usize> = cells.iter().map(|c| c.concurrency).collect();
    cs.sort_unstable();
    cs.dedup();
    cs
}

/// The header and separator rows of a sweep table: `lead` text columns, one right-aligned
/// column per concurrency level, then `extra` right-aligned columns.
fn sweep_header(s: &mut String, lead: &[&str], levels: &[usize], extra: &[&str]) {
    s.push('|');
    for name in lead {
        let _ = write!(s, " {name} |");
    }
    for c in levels {
        let _ = write!(s, " c={c} |");
    }
    for name in extra {
        let _ = write!(s, " {name} |");
    }
    s.push_str("\n|");
    s.push_str(&"---|".repeat(lead.len()));
    s.push_str(&"---:|".repeat(levels.len() + extra.len()));
    s.push('\n');
}

/// One requests/s cell of a sweep table ("–" where the cell has no result).
fn rate_cell(s: &mut String, cell: Option<&ThroughputCell>) {
    match cell {
        Some(x) => {
            let _ = write!(s, " {} |", fmt_rate(x.rps));
        }
        None => s.push_str(" – |"),
    }
}

/// The large-payload sweep cell of `sys` at `size` and concurrency `c`.
fn large<'a>(r: &'a Report, sys: &str, size: usize, c: usize) -> Option<&'a ThroughputCell> {
    r.large_sweep
        .iter()
        .find(|x| x.system == sys && x.size == size && x.concurrency == c && x.requests > 0)
}

/// The smallest ratio of requests/s between consecutive concurrency levels of the
/// large-payload sweep for `sys` at `size` (below 1: throughput fell as concurrency grew).
fn lowest_step(r: &Report, sys: &str, size: usize) -> Option<f64> {
    let rates: Vec<f64> = levels(&r.large_sweep)
        .iter()
        .map(|c| large(r, sys, size, *c).map(|x| x.rps))
        .collect::<Option<_>>()?;
    rates
        .windows(2)
        .map(|w| w[1] / w[0])
        .min_by(|a, b| a.total_cmp(b))
}

/// The goals of the benchmarks issue, evaluated on this run.
pub fn goals(r: &Report) -> Vec<Goal> {
    let mut out = Vec::new();
    let lightning = ["lightning-tokio", "lightning-smol"];
    let mut push = |name: String, system: &str, target: &str, ratio: Option<f64>| {
        if let Some(ratio) = ratio {
            let met = if let Some(t) = target.strip_prefix(">= ") {
                ratio
                    >= t.trim_end_matches('x')
                        .parse::<f64>()
                        .unwrap_or(f64::INFINITY)
            } else if let Some(t) = target.strip_prefix("<= ") {
                ratio <= t.trim_end_matches('x').parse::<f64>().unwrap_or(0.0)
            } else {
                false
            };
            out.push(Goal {
                name,
                system: system.to_owned(),
                target: target.to_owned(),
                ratio,
                met,
            });
        }
    };
    // Issue 15's goals for two processes, issue 8's for one.
    let two = r.processes == "two processes";
    let targets: [(usize, &str); 4] = if two {
        [
            (256, ">= 1.5x"),
            (1024, ">= 1.5x"),
            (100 * 1024, ">= 2x"),
            (1 << 20, ">= 2x"),
        ]
    } else {
        [
            (256, ">= 2x"),
            (1024, ">= 2x"),
            (100 * 1024, ">= 3x"),
            (1 << 20, ">= 2.5x"),
        ]
    };
    for sys in lightning {
        for (size, target) in targets {
            let rr = ratio(
                tput(r, sys, size).map(|c| c.rps),
                tput(r, "btlightning", size).map(|c| c.rps),
            );
            push(
                format!("throughput c=32 {} vs btlightning", size_label(size)),
                sys,
                target,
                rr,
            );
        }
        for size in sizes(r) {
            let (a, b) = (lat(r, sys, size), lat(r, "btlightning", size));
            push(
                format!("latency p50 {} vs btlightning", size_label(size)),
                sys,
                "<= 0.6x",
                ratio(a.map(|c| c.latency.p50_us), b.map(|c| c.latency.p50_us)),
            );
            push(
                format!("latency p99 {} vs btlightning", size_label(size)),
                sys,
                "<= 0.5x",
                ratio(a.map(|c| c.latency.p99_us), b.map(|c| c.latency.p99_us)),
            );
        }
        let setup = |s: &str| {
            r.setup
                .iter()
                .find(|c| c.system == s && c.setup.n > 0)
                .map(|c| c.setup.p50_us)
        };
        push(
            "connection setup p50 vs btlightning".into(),
            sys,
            "<= 0.5x",
            ratio(setup(sys), setup("btlightning")),
        );
        for size in crate::LARGE_SWEEP_SIZES {
            push(
                format!(
                    "throughput does not fall with concurrency {}",
                    size_label(size)
                ),
                sys,
                ">= 1x",
                lowest_step(r, sys, size),
            );
        }
        let floor_sizes: Vec<usize> = if two { sizes(r) } else { vec![256, 1024] };
        for size in floor_sizes {
            push(
                format!("throughput c=32 {} vs quinn-raw", size_label(size)),
                sys,
                if two { ">= 1x" } else { ">= 1.5x" },
                ratio(
                    tput(r, sys, size).map(|c| c.rps),
                    tput(r, "quinn-raw", size).map(|c| c.rps),
                ),
            );
        }
    }
    out
}

/// The markdown report.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let sizes = sizes(r);
    let systems: Vec<&str> = r.systems.iter().map(|(n, _)| n.as_str()).collect();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "# Lightning benchmarks ({} run, validator and miner in {})\n",
        r.mode, r.processes
    );
    let _ = writeln!(
        s,
        "Machine: {} ({} cores), Linux {}, net.core.rmem_max {}. {} runtime threads per system. Run took {:.0} s. The machine is shared: load average {} at the start, {} at the end (1, 5, 15 min).\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["rmem_max"].as_str().unwrap_or("?"),
        r.threads,
        r.duration_s,
        r.load.0,
        r.load.1
    );
    let c = r.throughput.first().map_or(32, |c| c.concurrency);
    let head = |s: &mut String, first: &str| {
        let _ = write!(s, "| {first} |");
        for size in &sizes {
            let _ = write!(s, " {} |", size_label(*size));
        }
        let _ = write!(s, "\n|---|");
        for _ in &sizes {
            let _ = write!(s, "---:|");
        }
        s.push('\n');
    };

    let _ = writeln!(
        s,
        "## Throughput, requests/s at concurrency {c} (ratio to btlightning)\n"
    );
    head(&mut s, "system");
    for sys in &systems {
        let _ = write!(s, "| {sys} |");
        for size in &sizes {
            let a = tput(r, sys, *size).map(|c| c.rps);
            let b = tput(r, baseline(r, sys), *size).map(|c| c.rps);
            match a {
                Some(a) => {
                    let _ = write!(s, " {} ({}) |", fmt_rate(a), fmt_ratio(ratio(Some(a), b)));
                }
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\nRatios compare each system with its like-for-like baseline: async handlers with btlightning's async handler, `lightning-tokio-sync` with `btlightning-sync`.\n"
    );

    for (title, pick) in [
        (
            "p50",
            (|c: &crate::LatencyCell| c.latency.p50_us) as fn(&crate::LatencyCell) -> f64,
        ),
        ("p99", |c: &crate::LatencyCell| c.latency.p99_us),
    ] {
        let _ = writeln!(
            s,
            "## Latency {title} at concurrency 1 (ratio to btlightning)\n"
        );
        head(&mut s, "system");
        for sys in &systems {
            let _ = write!(s, "| {sys} |");
            for size in &sizes {
                let a = lat(r, sys, *size).map(pick);
                let b = lat(r, baseline(r, sys), *size).map(pick);
                match a {
                    Some(a) => {
                        let _ = write!(s, " {} ({}) |", fmt_us(a), fmt_ratio(ratio(Some(a), b)));
                    }
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }

    let two = r.setup.iter().any(|c| c.authenticated.is_some());
    if two {
        let _ = writeln!(
            s,
            "## Connection setup: a new client until authenticated, and until the first reply\n\n| system | authenticated p50 | p95 | first reply p50 | p95 | p99 | samples each | first reply p50 ratio |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
    } else {
        let _ = writeln!(
            s,
            "## Connection setup: connect + handshake + first echo\n\n| system | p50 | p95 | p99 | samples | p50 ratio |\n|---|---:|---:|---:|---:|---:|"
        );
    }
    for cell in &r.setup {
        if cell.setup.n == 0 {
            continue;
        }
        let b = r
            .setup
            .iter()
            .find(|c| c.system == baseline(r, &cell.system) && c.setup.n > 0)
            .map(|c| c.setup.p50_us);
        let auth = match &cell.authenticated {
            Some(a) if two => format!("{} | {} | ", fmt_us(a.p50_us), fmt_us(a.p95_us)),
            _ if two => "– | – | ".into(),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "| {} | {auth}{} | {} | {} | {} | {} |",
            cell.system,
            fmt_us(cell.setup.p50_us),
            fmt_us(cell.setup.p95_us),
            fmt_us(cell.setup.p99_us),
            cell.setup.n,
            fmt_ratio(ratio(Some(cell.setup.p50_us), b))
        );
    }

    if !r.sweep.is_empty() {
        let cs = levels(&r.sweep);
        s.push_str("\n## Throughput by concurrency at 1 KB, requests/s\n\n");
        sweep_header(&mut s, &["system"], &cs, &[]);
        for sys in &systems {
            let _ = write!(s, "| {sys} |");
            for c in &cs {
                rate_cell(
                    &mut s,
                    r.sweep
                        .iter()
                        .find(|x| x.system == *sys && x.concurrency == *c),
                );
            }
            s.push('\n');
        }
    }

    if !r.large_sweep.is_empty() {
        let cs = levels(&r.large_sweep);
        s.push_str("\n## Throughput by concurrency at 100 KB and 1 MB, requests/s\n\n");
        sweep_header(&mut s, &["system", "size"], &cs, &["lowest step ratio"]);
        for size in crate::LARGE_SWEEP_SIZES {
            for sys in &systems {
                let _ = write!(s, "| {sys} | {} |", size_label(size));
                for c in &cs {
                    rate_cell(&mut s, large(r, sys, size, *c));
                }
                let _ = writeln!(s, " {} |", fmt_ratio(lowest_step(r, sys, size)));
            }
        }
        s.push_str("\nThe last column is the smallest ratio between one concurrency's requests/s and the one before it (below 1.00x: throughput fell as concurrency grew).\n");
    }

    let split = r
        .throughput
        .iter()
        .any(|c| c.server_cpu_us_per_req.is_some());
    if split {
        let _ = writeln!(
            s,
            "\n## Cost per request at concurrency {c}\n\nThroughput spread (min–max over rounds), CPU time per request of the client process and of the server process, loopback bytes per request (both directions, all headers) and UDP buffer drops.\n"
        );
        let _ = writeln!(
            s,
            "| system | size | req/s median [min–max] | client CPU µs/req | server CPU µs/req | lo bytes/req | UDP drops |\n|---|---|---:|---:|---:|---:|---:|"
        );
    } else {
        let _ = writeln!(
            s,
            "\n## Cost per request at concurrency {c}\n\nThroughput spread (min–max over rounds), process CPU time per request (client and server together), loopback bytes per request (both directions, all headers) and UDP buffer drops.\n"
        );
        let _ = writeln!(
            s,
            "| system | size | req/s median [min–max] | CPU µs/req | lo bytes/req | UDP drops |\n|---|---|---:|---:|---:|---:|"
        );
    }
    for size in &sizes {
        for sys in &systems {
            if let Some(cell) = tput(r, sys, *size) {
                let lo = cell.rounds.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = cell.rounds.iter().copied().fold(0.0, f64::max);
                let cpu = match cell.server_cpu_us_per_req {
                    Some(server) if split => {
                        format!("{:.1} | {server:.1}", cell.client_cpu_us_per_req)
                    }
                    _ if split => format!("{:.1} | –", cell.client_cpu_us_per_req),
                    _ => format!("{:.1}", cell.cpu_us_per_req),
                };
                let _ = writeln!(
                    s,
                    "| {sys} | {} | {} [{}–{}] | {cpu} | {:.0} | {} |",
                    size_label(*size),
                    fmt_rate(cell.rps),
                    fmt_rate(lo),
                    fmt_rate(hi),
                    cell.lo_bytes_per_req,
                    cell.udp_drops
                );
            }
        }
    }
    let _ = write!(
        s,
        "\nRequest frame bytes (PROTOCOL.md §12, computed; the same for every system):"
    );
    for size in &sizes {
        let _ = write!(
            s,
            " {} → {};",
            size_label(*size),
            crate::systems::wire_request_bytes(*size)
        );
    }
    s.push('\n');

    if !r.fanout.is_empty() {
        let _ = writeln!(
            s,
            "\n## Fan-out: one client, {} servers, 1 KB echo to all at once\n\n| system | connect all | round p50 | p95 | p99 | rounds |\n|---|---:|---:|---:|---:|---:|",
            r.fanout[0].servers
        );
        for f in &r.fanout {
            let _ = writeln!(
                s,
                "| {} | {:.1} ms | {} | {} | {} | {} |",
                f.system,
                f.connect_ms,
                fmt_us(f.round.p50_us),
                fmt_us(f.round.p95_us),
                fmt_us(f.round.p99_us),
                f.round.n
            );
        }
    }

    if !r.connections.is_empty() {
        let _ = writeln!(
            s,
            "\n## {} validator connections to one server\n\n| system | server RSS before | after | per connection | connect + auth + echo, all | measured in |\n|---|---:|---:|---:|---:|---|",
            r.connections[0].n
        );
        for c in &r.connections {
            let _ = writeln!(
                s,
                "| {} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.2} s | {} |",
                c.system,
                c.rss_before as f64 / (1 << 20) as f64,
                c.rss_after as f64 / (1 << 20) as f64,
                c.bytes_per_conn / 1024.0,
                c.connect_s,
                c.measured_in
            );
        }
    }

    if !r.goals.is_empty() {
        let _ = writeln!(
            s,
            "\n## Goals of the benchmarks issue\n\n| goal | system | target | measured | met |\n|---|---|---:|---:|:---:|"
        );
        for g in &r.goals {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2}x | {} |",
                g.name,
                g.system,
                g.target,
                g.ratio,
                if g.met { "yes" } else { "no" }
            );
        }
    }

    let _ = writeln!(s, "\n## Method\n");
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    if r.failures.is_empty() {
        let _ = writeln!(s, "\nEvery system answered every request correctly.");
    } else {
        let _ = writeln!(s, "\n## Failures\n");
        for f in &r.failures {
            let _ = writeln!(s, "- {} ({}): {}", f.system, f.cell, f.error);
        }
    }
    s
}

/// The SVG charts, as (file name, contents).
pub fn charts(r: &Report) -> Vec<(String, String)> {
    let sizes = sizes(r);
    let xs: Vec<(f64, String)> = sizes.iter().map(|s| (*s as f64, size_label(*s))).collect();
    let systems: Vec<&str> = r.systems.iter().map(|(n, _)| n.as_str()).collect();
    let series = |f: &dyn Fn(&str, usize) -> Option<f64>| -> Vec<Series> {
        systems
            .iter()
            .map(|sys| Series {
                name: (*sys).to_owned(),
                color: color(sys).to_owned(),
                ys: sizes.iter().map(|size| f(sys, *size)).collect(),
            })
            .collect()
    };
    let c = r.throughput.first().map_or(32, |c| c.concurrency);
    let mut out = vec![
        (
            "throughput_by_payload.svg".to_owned(),
            Chart {
                title: format!("Throughput at concurrency {c} (higher is better)"),
                x_label: "payload size".into(),
                y_label: "requests/s (log)".into(),
                xs: xs.clone(),
                series: series(&|sys, size| tput(r, sys, size).map(|c| c.rps)),
            }
            .render(),
        ),
        (
            "latency_p50_by_payload.svg".to_owned(),
            Chart {
                title: "Latency p50 at concurrency 1 (lower is better)".into(),
                x_label: "payload size".into(),
                y_label: "µs (log)".into(),
                xs: xs.clone(),
                series: series(&|sys, size| lat(r, sys, size).map(|c| c.latency.p50_us)),
            }
            .render(),
        ),
        (
            "latency_p99_by_payload.svg".to_owned(),
            Chart {
                title: "Latency p99 at concurrency 1 (lower is better)".into(),
                x_label: "payload size".into(),
                y_label: "µs (log)".into(),
                xs,
                series: series(&|sys, size| lat(r, sys, size).map(|c| c.latency.p99_us)),
            }
            .render(),
        ),
    ];
    if !r.sweep.is_empty() {
        let mut cs: Vec<usize> = r.sweep.iter().map(|c| c.concurrency).collect();
        cs.dedup();
        out.push((
            "throughput_by_concurrency.svg".to_owned(),
            Chart {
                title: "Throughput at 1 KB by concurrency (higher is better)".into(),
                x_label: "requests in flight".into(),
                y_label: "requests/s (log)".into(),
                xs: cs.iter().map(|c| (*c as f64, c.to_string())).collect(),
                series: systems
                    .iter()
                    .map(|sys| Series {
                        name: (*sys).to_owned(),
                        color: color(sys).to_owned(),
                        ys: cs
                            .iter()
                            .map(|c| {
                                r.sweep
                                    .iter()
                                    .find(|x| x.system == *sys && x.concurrency == *c)
                                    .map(|x| x.rps)
                            })
                            .collect(),
                    })
                    .collect(),
            }
            .render(),
        ));
    }
    out
}
