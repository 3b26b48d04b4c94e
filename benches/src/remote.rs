//! The processes besides the benchmark's own: servers (`lightning-bench --serve-many`),
//! WAN relays (`lightning-bench --relay`), the relay's ceiling, and the two-process soak.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightning_netem::{Profile, RelayThread};
use serde::Serialize;

use crate::{make_system, os};

/// A child process of this executable that printed `READY ADDR [HOTKEY]` and runs until
/// its stdin closes.
pub struct Child {
    child: std::process::Child,
    stdout: BufReader<ChildStdout>,
    /// The address it serves on.
    pub addr: SocketAddr,
    /// The miner hotkey it answers for (empty for a relay or quinn-raw).
    pub hotkey: String,
    done: bool,
}

impl Child {
    /// Runs `exe args…` and waits for its `READY` line.
    pub fn spawn(exe: &Path, args: &[String]) -> Result<Self, String> {
        let mut child = std::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let mut parts = line.trim_end().splitn(3, ' ');
        let parsed = match (parts.next(), parts.next()) {
            (Some("READY"), Some(addr)) => addr.parse::<SocketAddr>().ok(),
            _ => None,
        };
        let Some(addr) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} {args:?} said {line:?}", exe.display()));
        };
        let hotkey = parts.next().unwrap_or("").to_owned();
        Ok(Self {
            child,
            stdout,
            addr,
            hotkey,
            done: false,
        })
    }

    /// A server child for `system` (`--serve-many SYSTEM 256 THREADS`).
    pub fn server(exe: &Path, system: &str, threads: usize) -> Result<Self, String> {
        Self::spawn(
            exe,
            &[
                "--serve-many".into(),
                system.into(),
                "256".into(),
                threads.to_string(),
            ],
        )
    }

    /// A relay child with `profile` in front of `target`, listening on `listen_ip`.
    pub fn relay(
        exe: &Path,
        profile: Profile,
        target: SocketAddr,
        seed: u64,
        listen_ip: IpAddr,
    ) -> Result<Self, String> {
        Self::spawn(
            exe,
            &[
                "--relay".into(),
                profile.name().into(),
                target.to_string(),
                seed.to_string(),
                listen_ip.to_string(),
            ],
        )
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its stdin (the signal to stop), collects what it prints after that, and
    /// waits for it.
    pub fn finish(mut self) -> Vec<String> {
        self.done = true;
        drop(self.child.stdin.take());
        let lines = (&mut self.stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>();
        let _ = self.child.wait();
        lines
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.done {
            drop(self.child.stdin.take());
            let _ = self.child.wait();
        }
    }
}

/// Waits until stdin closes (the parent's signal to stop).
fn wait_for_stdin_eof() -> Result<(), String> {
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map_err(|e| e.to_string())?
        > 0
    {
        sink.clear();
    }
    Ok(())
}

/// The child side of a relay: listens on `listen_ip` and relays to `target` with
/// `profile` until stdin closes, then prints one `STATS` line (see
/// [`RelayCounts::parse`]).
pub fn serve_relay(profile: &str, target: &str, seed: &str, listen_ip: &str) -> Result<(), String> {
    let profile: Profile = profile.parse().map_err(|e| format!("{e}"))?;
    let target: SocketAddr = target.parse().map_err(|e| format!("target: {e}"))?;
    let seed: u64 = seed.parse().map_err(|e| format!("seed: {e}"))?;
    let listen_ip: IpAddr = listen_ip.parse().map_err(|e| format!("listen ip: {e}"))?;
    let listen = SocketAddr::new(listen_ip, 0);
    let relay =
        RelayThread::start(listen, target, profile.config(seed)).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    writeln!(out, "READY {}", relay.local_addr()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    wait_for_stdin_eof()?;
    let s = relay.stats();
    let (a, b) = (s.to_server, s.to_client);
    let _ = writeln!(
        out,
        "STATS {} {} {} {} {} {}",
        a.forwarded + b.forwarded,
        a.lost + b.lost,
        a.queue_dropped + b.queue_dropped,
        a.mtu_dropped + b.mtu_dropped,
        a.late_us_total + b.late_us_total,
        a.delayed + b.delayed
    );
    let _ = out.flush();
    drop(relay);
    Ok(())
}

/// What a relay child counted over its life (both directions together).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RelayCounts {
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Dropped by the profile's random loss.
    pub lost: u64,
    /// Dropped because the rate limiter's queue was full.
    pub queue_dropped: u64,
    /// Dropped for exceeding the path MTU.
    pub mtu_dropped: u64,
    /// Mean lateness of delayed datagrams (the emulator's timer error), µs.
    pub mean_late_us: f64,
}

impl RelayCounts {
    /// Reads the `STATS` line among a relay child's last words.
    pub fn parse(lines: &[String]) -> Option<Self> {
        let line = lines.iter().find_map(|l| l.strip_prefix("STATS "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 6 {
            return None;
        }
        Some(Self {
            forwarded: v[0],
            lost: v[1],
            queue_dropped: v[2],
            mtu_dropped: v[3],
            mean_late_us: if v[5] > 0 {
                v[4] as f64 / v[5] as f64
            } else {
                0.0
            },
        })
    }
}

/// The relay's own ceiling on this machine, measured in its own process.
#[derive(Debug, Clone, Serialize)]
pub struct RelayCeiling {
    /// Datagram payload bytes.
    pub size: usize,
    /// Datagrams kept in flight.
    pub window: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Echoed round trips per second (each is two forwarded datagrams).
    pub round_trips_per_s: f64,
    /// Datagrams forwarded per second, both directions.
    pub datagrams_per_s: f64,
    /// The relay process's CPU time per forwarded datagram, µs.
    pub relay_cpu_us_per_datagram: f64,
}

/// Measures how many datagrams a `lan` relay child forwards per second: an echo socket
/// and a client keeping `window` datagrams of `size` bytes in flight through it, both on
/// a 2-thread tokio runtime in this process.
pub fn relay_ceiling(
    exe: &Path,
    seconds: f64,
    size: usize,
    window: usize,
) -> Result<RelayCeiling, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| e.to_string();
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let _guard = rt.enter();
    let echo = Arc::new(lightning_netem::bind_udp(any).map_err(io)?);
    let echo_addr = echo.local_addr().map_err(io)?;
    let relay = Child::relay(exe, Profile::Lan, echo_addr, 1, Ipv4Addr::LOCALHOST.into())?;
    let relay_addr = relay.addr;
    let pid = relay.pid();
    let echo_task = rt.spawn({
        let echo = echo.clone();
        async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        }
    });
    let result = rt.block_on(async move {
        let client = lightning_netem::bind_udp(any).map_err(io)?;
        client.connect(relay_addr).await.map_err(io)?;
        let payload = vec![0x5a_u8; size];
        let mut buf = vec![0u8; 65536];
        for _ in 0..window {
            client.send(&payload).await.map_err(io)?;
        }
        // A short warm-up, then the measured part.
        let warm = Instant::now() + Duration::from_millis(200);
        let mut echoed = 0u64;
        let mut cpu0 = None;
        let mut start = Instant::now();
        let total = Duration::from_secs_f64(seconds.max(0.1));
        loop {
            if cpu0.is_none() && Instant::now() >= warm {
                cpu0 = Some(os::process_cpu_time(pid));
                start = Instant::now();
                echoed = 0;
            }
            if cpu0.is_some() && start.elapsed() >= total {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(50), client.recv(&mut buf)).await {
                Ok(Ok(_)) => {
                    echoed += 1;
                    client.send(&payload).await.map_err(io)?;
                }
                Ok(Err(e)) => return Err(e.to_string()),
                // Something was lost (the kernel's buffers): refill the window.
                Err(_) => {
                    for _ in 0..window {
                        client.send(&payload).await.map_err(io)?;
                    }
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = os::process_cpu_time(pid).saturating_sub(cpu0.unwrap_or_default());
        let rt_per_s = echoed as f64 / elapsed;
        Ok::<_, String>(RelayCeiling {
            size,
            window,
            seconds: elapsed,
            round_trips_per_s: rt_per_s,
            datagrams_per_s: 2.0 * rt_per_s,
            relay_cpu_us_per_datagram: cpu.as_secs_f64() * 1e6 / (2.0 * echoed.max(1) as f64),
        })
    });
    echo_task.abort();
    relay.finish();
    result
}

/// Resident memory of both processes at one moment of a soak.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssSample {
    /// Seconds since the load started.
    pub t_s: f64,
    /// Client (this process) resident memory, bytes.
    pub client: u64,
    /// Server (child process) resident memory, bytes.
    pub server: u64,
}

/// What a two-process soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// System.
    pub system: String,
    /// Requests answered (all checked).
    pub requests: u64,
    /// Payload bytes.
    pub size: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Wall time of the load, s.
    pub seconds: f64,
    /// Client process CPU per request, µs.
    pub client_cpu_us_per_req: f64,
    /// Server process CPU per request, µs.
    pub server_cpu_us_per_req: f64,
    /// Load average at the start and at the end.
    pub load: (String, String),
    /// Every sample, the first before the load and the last after it.
    pub samples: Vec<RssSample>,
}

impl SoakReport {
    /// A small markdown table: start, peak and end RSS of each process.
    pub fn markdown(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let first = self.samples.first().copied();
        let last = self.samples.last().copied();
        let half_t = last.map_or(0.0, |l| l.t_s / 2.0);
        let half = self
            .samples
            .iter()
            .min_by(|a, b| (a.t_s - half_t).abs().total_cmp(&(b.t_s - half_t).abs()))
            .copied();
        let peak = |f: fn(&RssSample) -> u64| self.samples.iter().map(f).max().unwrap_or(0);
        let mut s = format!(
            "{}: {} requests of {} B at c={} in {:.0} s ({:.0} req/s), client {:.1} µs and server {:.1} µs CPU per request; load average {} at the start, {} at the end; {} RSS samples (start: after connecting and a 0.3 s warm-up).\n\n| process | RSS start | halfway | peak | end |\n|---|---:|---:|---:|---:|\n",
            self.system,
            self.requests,
            self.size,
            self.concurrency,
            self.seconds,
            self.requests as f64 / self.seconds.max(1e-9),
            self.client_cpu_us_per_req,
            self.server_cpu_us_per_req,
            self.load.0,
            self.load.1,
            self.samples.len()
        );
        for (name, f) in [
            (
                "client (validator)",
                (|x: &RssSample| x.client) as fn(&RssSample) -> u64,
            ),
            ("server (miner)", |x: &RssSample| x.server),
        ] {
            s.push_str(&format!(
                "| {name} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |\n",
                mib(first.map_or(0, |x| f(&x))),
                mib(half.map_or(0, |x| f(&x))),
                mib(peak(f)),
                mib(last.map_or(0, |x| f(&x)))
            ));
        }
        s
    }
}

/// `requests` echoes of `size` bytes with `concurrency` in flight from this process to a
/// server child, sampling both processes' resident memory every `every`.
pub fn soak_two_process(
    exe: &Path,
    system: &str,
    requests: u64,
    size: usize,
    concurrency: usize,
    every: Duration,
) -> Result<SoakReport, String> {
    let threads = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2)
    };
    let server = Child::server(exe, system, threads("SOAK_SERVER_THREADS"))?;
    let pid = server.pid();
    let mut sys = make_system(system, threads("SOAK_CLIENT_THREADS"))?;
    sys.open_remote(server.addr, &server.hotkey)?;
    // A short warm-up so the start figure is the steady connection, not a cold one.
    sys.throughput(size, concurrency, Duration::from_millis(300), 100_000)?;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sample = move || RssSample {
        t_s: started.elapsed().as_secs_f64(),
        client: os::rss_bytes(None),
        server: os::rss_bytes(Some(pid)),
    };
    let lock = |m: &Mutex<Vec<RssSample>>| {
        m.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    };
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut printed = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    let s = sample();
                    if printed.elapsed() >= Duration::from_secs(10) {
                        printed = Instant::now();
                        eprintln!(
                            "[soak] {:.0} s: client RSS {:.1} MiB, server RSS {:.1} MiB",
                            s.t_s,
                            s.client as f64 / (1 << 20) as f64,
                            s.server as f64 / (1 << 20) as f64
                        );
                    }
                    samples
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(s);
                    next += every;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let load0 = os::loadavg();
    let (cpu_c0, cpu_s0) = (os::cpu_time(), os::process_cpu_time(pid));
    let result = sys.throughput(size, concurrency, Duration::from_secs(86_400 * 7), requests);
    let (cpu_c1, cpu_s1) = (os::cpu_time(), os::process_cpu_time(pid));
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let mut all = lock(&samples);
    all.push(sample());
    sys.close();
    drop(sys);
    server.finish();
    let (ok, elapsed) = result?;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / ok.max(1) as f64;
    Ok(SoakReport {
        system: system.to_owned(),
        requests: ok,
        size,
        concurrency,
        seconds: elapsed.as_secs_f64(),
        client_cpu_us_per_req: per(cpu_c1.saturating_sub(cpu_c0)),
        server_cpu_us_per_req: per(cpu_s1.saturating_sub(cpu_s0)),
        load: (load0, os::loadavg()),
        samples: all,
    })
}

/// The address a relay listens on to stand for another host: this machine's own IPv4
/// network address (the source the kernel picks towards a documentation-range address;
/// nothing is sent). Endpoints on loopback reach it through the loopback interface, but
/// see a non-loopback peer, so Lightning keeps the packet ceiling and congestion window of
/// a path to another host, as across a real WAN. `None` on a machine with no such address.
pub fn host_address() -> Option<IpAddr> {
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
