//! `lightning-netem`: run a WAN-emulating UDP relay in front of a server, or measure the
//! relay's own ceiling.
//!
//! ```text
//! lightning-netem --listen 127.0.0.1:9000 --to 127.0.0.1:8091 --profile continent
//! lightning-netem bench --seconds 5 --size 1200 --window 256
//! ```
//!
//! While relaying, commands read from stdin act on the relay: `blackhole <seconds>`,
//! `heal`, `rebind` (every client), `stats`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lightning_netem::{
    bind_udp, DirectionStats, LinkConfig, Profile, Relay, RelayConfig, RelayHandle, RelayStats,
    RelayThread,
};
use tokio::io::{AsyncBufReadExt, BufReader};

const USAGE: &str = "\
usage:
  lightning-netem --listen ADDR --to ADDR [--profile lan|continent|world] [options]
  lightning-netem bench [--seconds S] [--size BYTES] [--window N] [--profile P] [options]

Relays UDP from clients (sending to --listen) to the server at --to and back, impairing
each direction. Options override the profile's values, both ways:
  --seed N          seed of loss and jitter decisions (default: from the clock; printed)
  --delay-ms MS     one-way delay
  --jitter-ms MS    one-way jitter (delay +- jitter, order kept unless --reorder)
  --reorder         let jitter reorder datagrams
  --loss P          loss probability per datagram, 0..1
  --rate-mbit R     rate limit in Mbit/s (0: none)
  --queue-bytes B   rate limiter queue (drop-tail)
  --mtu BYTES       path MTU (0: none)
  --stats-every S   print counters to stderr every S seconds (default 0: only on `stats`)
While relaying, stdin takes: `blackhole SECONDS`, `heal`, `rebind`, `stats`.

bench measures the relay's ceiling on this machine: a client keeps --window datagrams of
--size bytes in flight through the relay to an echo server, for --seconds (default: lan,
1200 bytes, window 256, 5 s). --relay-thread runs the relay on a thread of its own
(RelayThread) instead of the client's 2-thread runtime.";

#[derive(Debug)]
struct Options {
    bench: bool,
    listen: Option<SocketAddr>,
    to: Option<SocketAddr>,
    profile: Profile,
    seed: u64,
    link: Vec<(String, String)>,
    reorder: bool,
    stats_every: f64,
    seconds: f64,
    size: usize,
    window: usize,
    relay_thread: bool,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options {
        bench: false,
        listen: None,
        to: None,
        profile: Profile::Lan,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        link: Vec::new(),
        reorder: false,
        stats_every: 0.0,
        seconds: 5.0,
        size: 1200,
        window: 256,
        relay_thread: false,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "bench" {
            o.bench = true;
            continue;
        }
        if arg == "--reorder" {
            o.reorder = true;
            continue;
        }
        if arg == "--relay-thread" {
            o.relay_thread = true;
            continue;
        }
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{arg} {value:?}: {e}");
        match arg.as_str() {
            "--listen" => o.listen = Some(value.parse().map_err(|e| bad(&e))?),
            "--to" => o.to = Some(value.parse().map_err(|e| bad(&e))?),
            "--profile" => o.profile = value.parse().map_err(|e| bad(&e))?,
            "--seed" => o.seed = value.parse().map_err(|e| bad(&e))?,
            "--stats-every" => o.stats_every = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => o.seconds = value.parse().map_err(|e| bad(&e))?,
            "--size" => o.size = value.parse().map_err(|e| bad(&e))?,
            "--window" => o.window = value.parse().map_err(|e| bad(&e))?,
            "--delay-ms" | "--jitter-ms" | "--loss" | "--rate-mbit" | "--queue-bytes" | "--mtu" => {
                o.link.push((arg, value))
            }
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(o)
}

fn link_config(o: &Options) -> Result<LinkConfig, String> {
    let mut link = o.profile.link();
    link.reorder |= o.reorder;
    for (name, value) in &o.link {
        let number: f64 = value
            .parse()
            .map_err(|e| format!("{name} {value:?}: {e}"))?;
        if !number.is_finite() || number < 0.0 {
            return Err(format!("{name} {value:?}: must be a number >= 0"));
        }
        match name.as_str() {
            "--delay-ms" => link.delay = Duration::from_secs_f64(number / 1e3),
            "--jitter-ms" => link.jitter = Duration::from_secs_f64(number / 1e3),
            "--loss" if number <= 1.0 => link.loss = number,
            "--loss" => return Err(format!("--loss {value}: must be within 0..1")),
            "--rate-mbit" if number == 0.0 => link.rate_bits_per_s = None,
            "--rate-mbit" => link.rate_bits_per_s = Some((number * 1e6) as u64),
            "--queue-bytes" => link.queue_bytes = number as usize,
            "--mtu" if number == 0.0 => link.mtu = None,
            "--mtu" => link.mtu = Some(number as usize),
            _ => {}
        }
    }
    Ok(link)
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("lightning-netem: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lightning-netem: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let link = link_config(&options)?;
        let config = RelayConfig::symmetric(link, options.seed);
        if options.bench {
            bench(&options, config).await
        } else {
            relay(&options, config).await
        }
    });
    // The stdin reader is a blocking thread that a still-open stdin (a terminal, a pipe)
    // never lets finish; waiting for it would keep an interrupted relay from exiting.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lightning-netem: {e}");
            ExitCode::FAILURE
        }
    }
}

fn direction_line(name: &str, d: &DirectionStats) -> String {
    let late = if d.delayed > 0 {
        format!(
            "; delayed {} left late by {:.2} ms on average, {:.2} ms at most",
            d.delayed,
            d.late_us_total as f64 / d.delayed as f64 / 1e3,
            d.late_us_max as f64 / 1e3
        )
    } else {
        String::new()
    };
    format!(
        "{name}: received {} forwarded {} ({} B) lost {} mtu {} queue {} blackholed {} unmapped {} send-errors {}{late}",
        d.received,
        d.forwarded,
        d.forwarded_bytes,
        d.lost,
        d.mtu_dropped,
        d.queue_dropped,
        d.blackholed,
        d.no_mapping,
        d.send_errors
    )
}

fn print_stats(s: &RelayStats) {
    eprintln!(
        "flows {} rebinds {}\n  {}\n  {}",
        s.flows,
        s.rebinds,
        direction_line("to server", &s.to_server),
        direction_line("to client", &s.to_client)
    );
}

async fn relay(o: &Options, config: RelayConfig) -> Result<(), String> {
    let listen = o.listen.ok_or("--listen is required (or `bench`)")?;
    let to = o.to.ok_or("--to is required")?;
    let seed = config.seed;
    let relay = Relay::start(listen, to, config).map_err(|e| format!("cannot listen: {e}"))?;
    let handle = relay.handle();
    // Registered before the ready line and kept for the whole run: an interrupt sent as
    // soon as the relay says it is ready, or while stdin reaches its end, is not lost (a
    // listener created later would not see it).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot watch for SIGINT: {e}"))?;
    println!(
        "{{\"listen\":\"{}\",\"to\":\"{to}\",\"profile\":\"{}\",\"seed\":{seed}}}",
        relay.local_addr(),
        o.profile
    );
    if o.stats_every > 0.0 {
        let handle = handle.clone();
        let every = Duration::from_secs_f64(o.stats_every);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                print_stats(&handle.stats());
            }
        });
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = interrupt.recv() => break,
        };
        let Ok(Some(line)) = line else {
            // stdin closed: keep relaying until interrupted.
            interrupt.recv().await;
            break;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["blackhole", secs] => match secs.parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => {
                    handle.blackhole(Duration::from_secs_f64(s));
                    eprintln!("blackhole for {s} s");
                }
                _ => eprintln!("blackhole SECONDS: {secs:?} is not a number of seconds"),
            },
            ["heal"] => {
                handle.heal();
                eprintln!("healed");
            }
            ["rebind"] => match handle.rebind_all() {
                Ok(addrs) => eprintln!("rebound {} client(s): now from {addrs:?}", addrs.len()),
                Err(e) => eprintln!("rebind failed: {e}"),
            },
            ["stats"] => print_stats(&handle.stats()),
            [] => {}
            _ => eprintln!("commands: blackhole SECONDS | heal | rebind | stats"),
        }
    }
    print_stats(&relay.stats());
    Ok(())
}

/// An echo server, a windowed client, and the relay between them on loopback.
async fn bench(o: &Options, config: RelayConfig) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let any: SocketAddr = "127.0.0.1:0".parse().map_err(|_| "address")?;
    // Large buffers, like Lightning's sockets: the relay's delay queue releases bursts.
    let server = Arc::new(bind_udp(any).map_err(io)?);
    let server_addr = server.local_addr().map_err(io)?;
    let seed = config.seed;
    let listen = "127.0.0.1:0".parse().map_err(|_| "address")?;
    // Keeps the relay alive for the whole run.
    let (relay, _running): (RelayHandle, Box<dyn std::any::Any>) = if o.relay_thread {
        let thread = RelayThread::start(listen, server_addr, config).map_err(io)?;
        (thread.handle(), Box::new(thread))
    } else {
        let relay = Relay::start(listen, server_addr, config).map_err(io)?;
        (relay.handle(), Box::new(relay))
    };
    let echo = tokio::spawn({
        let server = server.clone();
        async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(&buf[..n], from).await;
            }
        }
    });
    let client = Arc::new(bind_udp(any).map_err(io)?);
    client.connect(relay.local_addr()).await.map_err(io)?;
    let payload = vec![0x5au8; o.size];
    let mut echoed = 0u64;
    let duration = Duration::from_secs_f64(o.seconds.max(0.1));
    eprintln!(
        "bench: {} B datagrams, window {}, {:.1} s, profile {} (seed {seed}), relay {}",
        o.size,
        o.window,
        duration.as_secs_f64(),
        o.profile,
        if o.relay_thread {
            "on a thread of its own"
        } else {
            "on the 2 runtime threads shared with the client and the echo server"
        }
    );
    // Fill the window, then send one datagram per echo; refill after a quiet 50 ms, since
    // an impaired profile (or the kernel) loses some.
    for _ in 0..o.window {
        client.send(&payload).await.map_err(io)?;
    }
    let start = Instant::now();
    let before = relay.stats();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < duration {
        match tokio::time::timeout(Duration::from_millis(50), client.recv(&mut buf)).await {
            Ok(Ok(_)) => {
                echoed += 1;
                client.send(&payload).await.map_err(io)?;
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                for _ in 0..o.window {
                    client.send(&payload).await.map_err(io)?;
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = relay.stats();
    echo.abort();
    let forwarded = (after.to_server.forwarded - before.to_server.forwarded)
        + (after.to_client.forwarded - before.to_client.forwarded);
    let bytes = (after.to_server.forwarded_bytes - before.to_server.forwarded_bytes)
        + (after.to_client.forwarded_bytes - before.to_client.forwarded_bytes);
    let round_trips = echoed as f64 / elapsed;
    println!(
        "{{\"profile\":\"{}\",\"relay_thread\":{},\"size\":{},\"window\":{},\"seconds\":{elapsed:.3},\"forwarded_pps\":{:.0},\"forwarded_mbyte_per_s\":{:.1},\"round_trips_per_s\":{round_trips:.0}}}",
        o.profile,
        o.relay_thread,
        o.size,
        o.window,
        forwarded as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
    );
    print_stats(&after);
    Ok(())
}
