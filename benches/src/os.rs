//! Process and kernel counters: CPU time, resident memory, UDP drops, loopback bytes.

use std::time::Duration;

/// User + system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY-free: getrusage fills a plain struct we own.
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    #[allow(unsafe_code)]
    // getrusage only writes into the struct we pass; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    #[allow(unsafe_code)]
    // getrusage succeeded, so the struct is initialised.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User + system CPU time of another process so far, from `/proc/PID/stat` (clock ticks,
/// so 10 ms resolution at the usual 100 Hz).
pub fn process_cpu_time(pid: u32) -> Duration {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name may hold spaces and parentheses; the fields after its last ')'
    // start with the state (field 3), so utime (14) and stime (15) are the 12th and 13th.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    #[allow(unsafe_code)]
    // sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos((ticks(11) + ticks(12)) * 1_000_000_000 / hz)
}

/// The machine's load averages (1, 5 and 15 minutes) as `/proc/loadavg` gives them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Resident set size of process `pid` (or this one) in bytes.
pub fn rss_bytes(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Machine-wide UDP counters that reveal drops.
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpCounters {
    /// `Udp: InErrors`.
    pub in_errors: u64,
    /// `Udp: RcvbufErrors`.
    pub rcvbuf_errors: u64,
    /// `Udp: SndbufErrors`.
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    /// Reads /proc/net/snmp.
    pub fn read() -> Self {
        let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
            return Self::default();
        };
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return Self::default();
        };
        let mut out = Self::default();
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            let v = v.parse().unwrap_or(0);
            match n {
                "InErrors" => out.in_errors = v,
                "RcvbufErrors" => out.rcvbuf_errors = v,
                "SndbufErrors" => out.sndbuf_errors = v,
                _ => {}
            }
        }
        out
    }

    /// Drops since `before` (receive-buffer overflows plus send-buffer failures).
    pub fn drops_since(&self, before: &Self) -> u64 {
        self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors)
            + self.sndbuf_errors.saturating_sub(before.sndbuf_errors)
    }
}

/// Bytes sent on the loopback interface so far (every packet crosses it once).
pub fn loopback_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/dev") else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|rx| rx.parse().ok())
        .unwrap_or(0)
}

/// A few facts about the machine, for the report.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "rmem_max": read("/proc/sys/net/core/rmem_max"),
        "wmem_max": read("/proc/sys/net/core/wmem_max"),
        "memory_kb": std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| t.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())).unwrap_or_default(),
    })
}
