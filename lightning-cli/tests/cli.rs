//! The `lightning` binary end to end: a `serve` child process on loopback, loaded by
//! `query` child processes, plus `keygen` and signal handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lightning_tokio::proto::identity::Keypair;

const BIN: &str = env!("CARGO_BIN_EXE_lightning");
const MINER_SEED: &str = "4242424242424242424242424242424242424242424242424242424242424242";
const VALIDATOR_SEED: &str = "0x0707070707070707070707070707070707070707070707070707070707070707";

/// Kills the child when a test ends, passing or not.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `lightning serve` and what it announced.
struct Miner {
    guard: Guard,
    port: u16,
    hotkey: String,
    /// The metrics listener's address, with `--metrics`.
    metrics: Option<String>,
    // Kept open so the server never sees a closed stdout.
    _stdout: BufReader<ChildStdout>,
}

fn serve() -> Miner {
    serve_with(&[])
}

fn serve_with(extra: &[&str]) -> Miner {
    serve_with_stderr(extra, Stdio::null())
}

/// A miner whose stderr goes to `stderr` (piped: taken from `miner.guard.0.stderr`).
fn serve_with_stderr(extra: &[&str], stderr: Stdio) -> Miner {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            MINER_SEED,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn lightning serve");
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the ready line");
    let ready: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("ready line {line:?} is not JSON: {e}"));
    let port = u16::try_from(ready["port"].as_u64().expect("port")).unwrap();
    let hotkey = ready["hotkey"].as_str().expect("hotkey").to_string();
    let metrics = ready["metrics"].as_str().map(str::to_string);
    assert_ne!(port, 0);
    Miner {
        guard,
        port,
        hotkey,
        metrics,
        _stdout: stdout,
    }
}

fn query(miner: &Miner, hotkey: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let port = miner.port.to_string();
    let mut args = vec![
        "query",
        "--ip",
        "127.0.0.1",
        "--port",
        &port,
        "--hotkey",
        hotkey,
        "--seed",
        VALIDATOR_SEED,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(BIN).args(&args).output().expect("run query");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "query printed no JSON ({e}); stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, summary)
}

#[test]
fn serve_announces_the_hotkey_of_its_seed() {
    let miner = serve();
    let seed: [u8; 32] = [0x42; 32];
    assert_eq!(miner.hotkey, Keypair::from_seed(&seed).hotkey());
}

#[test]
fn ten_thousand_echoes_at_concurrency_32_all_succeed() {
    let miner = serve();
    let (out, s) = query(
        &miner,
        &miner.hotkey,
        &["-n", "10000", "--concurrency", "32", "--size", "1024"],
    );
    assert!(out.status.success(), "summary: {s}");
    assert_eq!(s["ok"], 10_000, "summary: {s}");
    assert_eq!(s["errors"], 0, "summary: {s}");
    assert!(s["first_error"].is_null());
    for key in ["p50_us", "p95_us", "p99_us", "req_per_s", "connect_ms"] {
        assert!(s[key].as_f64().unwrap() > 0.0, "{key} in {s}");
    }
    let (p50, p99) = (s["p50_us"].as_u64().unwrap(), s["p99_us"].as_u64().unwrap());
    assert!(p50 <= p99, "{s}");
}

#[test]
fn streaming_query_gets_every_chunk() {
    let miner = serve();
    let (out, s) = query(
        &miner,
        &miner.hotkey,
        &["-n", "5", "--chunks", "100", "--chunk-size", "1000"],
    );
    assert!(out.status.success(), "summary: {s}");
    assert_eq!(s["ok"], 5, "summary: {s}");
    assert_eq!(s["errors"], 0, "summary: {s}");
    assert_eq!(s["synapse"], "stream");
}

#[test]
fn stream_request_beyond_the_server_limit_is_an_error() {
    let miner = serve();
    let (out, s) = query(
        &miner,
        &miner.hotkey,
        &["--chunks", "1", "--chunk-size", "999999999"],
    );
    assert!(!out.status.success());
    assert_eq!(s["ok"], 0);
    assert_eq!(s["errors"], 1);
    assert!(s["first_error"].as_str().unwrap().contains("stream"), "{s}");
}

#[test]
fn wrong_hotkey_fails_with_non_zero_status() {
    let miner = serve();
    let other = Keypair::from_seed(&[9; 32]).hotkey();
    let (out, s) = query(&miner, &other, &["-n", "3"]);
    assert!(!out.status.success());
    assert_eq!(s["ok"], 0, "summary: {s}");
    assert_eq!(s["errors"], 3, "summary: {s}");
    assert_eq!(s["connected"], false);
    let error = s["first_error"].as_str().unwrap();
    assert!(error.contains("hotkey"), "{error}");
}

#[test]
fn unknown_synapse_is_reported_as_an_error() {
    let miner = serve();
    let (out, s) = query(&miner, &miner.hotkey, &["-n", "2", "--synapse", "nope"]);
    assert!(!out.status.success());
    assert_eq!((s["ok"].as_u64(), s["errors"].as_u64()), (Some(0), Some(2)));
}

#[test]
fn readable_summary_names_the_figures() {
    let miner = serve();
    let port = miner.port.to_string();
    let out = Command::new(BIN)
        .args([
            "query",
            "--port",
            &port,
            "--hotkey",
            &miner.hotkey,
            "-n",
            "50",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "connect",
        "ok          50",
        "errors      0",
        "p50",
        "p99",
        "req/s",
        "MB/s",
    ] {
        assert!(text.contains(word), "{word:?} missing from:\n{text}");
    }
}

#[test]
fn serve_stops_on_sigterm() {
    let mut miner = serve();
    let pid = miner.guard.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = miner.guard.0.try_wait().unwrap() {
            assert!(status.success(), "serve exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_hex32(text: &str) -> [u8; 32] {
    assert_eq!(text.len(), 64, "{text}");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn keygen_json_seed_derives_its_hotkey() {
    let out = Command::new(BIN)
        .args(["keygen", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seed = parse_hex32(v["seed"].as_str().unwrap());
    assert_eq!(v["hotkey"], Keypair::from_seed(&seed).hotkey());

    let again = Command::new(BIN)
        .args(["keygen", "--json"])
        .output()
        .unwrap();
    let w: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_ne!(v["seed"], w["seed"], "two runs gave the same seed");
}

#[test]
fn keygen_text_names_seed_and_hotkey() {
    let out = Command::new(BIN).arg("keygen").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} line in {text}"))
            .to_string()
    };
    let seed = parse_hex32(&field("seed:"));
    assert_eq!(field("hotkey:"), Keypair::from_seed(&seed).hotkey());
}

#[test]
fn bad_seed_is_refused_with_a_reason() {
    for (seed, reason) in [
        ("abcd", "got 4 digits"),
        (&"zz".repeat(32)[..], "invalid hex digit 'z'"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--port", "0", "--seed", seed])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{stderr}");
    }
}

#[test]
fn a_packet_ceiling_out_of_range_is_refused_with_a_reason() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--port",
            "0",
            "--seed",
            MINER_SEED,
            "--max-udp-payload",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_udp_payload must be between 1200 and 65527 bytes"),
        "{stderr}"
    );
}

/// A report period that would overflow the clock is refused, not a panic.
#[test]
fn a_refusal_report_period_out_of_range_is_refused_with_a_reason() {
    let out = Command::new(BIN)
        .args(["serve", "--port", "0", "--seed", MINER_SEED])
        .args(["--refusals-every", "18446744073709551615"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not in 0..=86400"), "{stderr}");
}

#[test]
fn demo_runs_clean_with_short_steps() {
    let out = Command::new(BIN)
        .args(["demo", "--step-ms", "50"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{text}");
    assert!(text.contains("verdict: OK"), "{text}");
    for size in ["256 B", "1 KB", "64 KB", "1 MB", "1000 x 1 KB"] {
        assert!(text.contains(size), "{size} row missing:\n{text}");
    }
}

/// Large requests at a concurrency whose bytes exceed the miner's per-connection read
/// budget many times over: the requests that wait for budget must not take the
/// connection's flow-control window from those being read (before the fix, 4 MiB × 64
/// answered 77 of 256 and the rest timed out). Miner and validator in separate processes,
/// the validator with its default 10 s timeout.
#[test]
fn large_concurrent_echoes_all_succeed() {
    let miner = serve();
    for (size, concurrency, n) in [(4 << 20, 64, 128), (24 << 20, 16, 16)] {
        let (size, concurrency, n) = (size.to_string(), concurrency.to_string(), n.to_string());
        let (out, s) = query(
            &miner,
            &miner.hotkey,
            &["-n", &n, "--concurrency", &concurrency, "--size", &size],
        );
        report(&format!("{size} B x c={concurrency}"), &s);
        assert!(out.status.success(), "{size} B x c={concurrency}: {s}");
        assert_eq!(s["errors"], 0, "{size} B x c={concurrency}: {s}");
    }
}

/// A validator whose streaming queries time out abandons each stream mid-response; the
/// miner must give every abandoned stream's credit back, or the connection stops taking
/// requests after 128 of them (the miner's stream limit). The queries here all time out
/// by design; what must not happen is the connection wedging, which shows as queries that
/// never reached the miner, so a plain echo on the same connection follows each batch.
#[test]
fn abandoned_streams_do_not_wedge_the_connection() {
    let miner = serve();
    let (out, s) = query(
        &miner,
        &miner.hotkey,
        &[
            "-n",
            "1000",
            "--concurrency",
            "64",
            "--chunks",
            "100000",
            "--timeout-ms",
            "100",
            "--then-echo",
        ],
    );
    report("1000 abandoned streams, then an echo", &s);
    assert_eq!(s["errors"], 1000, "every stream times out by design: {s}");
    assert_eq!(
        s["then_echo"], "ok",
        "the connection no longer answers: {s}"
    );
    assert!(
        !out.status.success(),
        "failures must still set the exit status"
    );
}

/// Prints a query's figures even when the test passes (CI shows them).
fn report(what: &str, s: &serde_json::Value) {
    say(&format!(
        "{what}: ok {} errors {} p50 {} us p99 {} us ({} req/s)",
        s["ok"], s["errors"], s["p50_us"], s["p99_us"], s["req_per_s"]
    ));
}

/// Prints a line even when the test passes: libtest captures only the `print!` family.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

/// A streaming request costs the miner in proportion to what it sends: asking for zero
/// chunks of the largest size must not make it build a 16 MiB buffer (the filler used to
/// be generated a byte at a time per request: about 20 ms of CPU each).
#[test]
fn empty_streams_of_huge_chunks_cost_the_miner_nothing() {
    let miner = serve();
    let pid = miner.guard.0.id();
    let before = cpu_seconds(pid);
    let (out, s) = query(
        &miner,
        &miner.hotkey,
        &[
            "-n",
            "300",
            "--concurrency",
            "8",
            "--chunks",
            "0",
            "--chunk-size",
            "16777216",
        ],
    );
    let used = cpu_seconds(pid) - before;
    report("300 streams of 0 x 16 MiB", &s);
    say(&format!("miner CPU for them: {used:.2} s"));
    assert!(out.status.success(), "{s}");
    // A wide margin, not a speed goal: the 300 requests cost the miner about 0.02 s,
    // the old filler about 5 s.
    assert!(used < 1.5, "the miner used {used:.2} s of CPU");
}

/// `--validators FILE` admits the listed hotkeys only.
#[test]
fn serve_admits_only_listed_validators() {
    let dir = std::env::temp_dir().join(format!("lightning-validators-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let validator = Keypair::from_seed(&[0x07; 32]).hotkey();
    let other = Keypair::from_seed(&[0x08; 32]).hotkey();

    let listed = dir.join("listed.txt");
    std::fs::write(&listed, format!("# our validator\n{validator}\n\n")).unwrap();
    let miner = serve_with(&["--validators", listed.to_str().unwrap()]);
    let (out, s) = query(&miner, &miner.hotkey, &["-n", "3"]);
    assert!(out.status.success(), "listed validator refused: {s}");
    drop(miner);

    let unlisted = dir.join("unlisted.txt");
    std::fs::write(&unlisted, format!("{other}\n")).unwrap();
    let miner = serve_with(&["--validators", unlisted.to_str().unwrap()]);
    let (out, s) = query(&miner, &miner.hotkey, &["-n", "1", "--timeout-ms", "3000"]);
    assert!(!out.status.success(), "unlisted validator admitted: {s}");
    assert_eq!(s["connected"], false, "{s}");
    drop(miner);

    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "not-a-hotkey\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--port", "0", "--seed", MINER_SEED, "--validators"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.txt:1") && err.contains("not an SS58 hotkey"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refused validator learns no reason (the wire has none): the query names the usual
/// causes, and the miner prints the refusal with its reason.
#[test]
fn a_refused_handshake_is_explained_on_both_sides() {
    let dir = std::env::temp_dir().join(format!("lightning-refusals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("validators.txt");
    let other = Keypair::from_seed(&[0x08; 32]).hotkey();
    std::fs::write(&list, format!("{other}\n")).unwrap();
    let list = list.to_str().unwrap();
    let mut miner = serve_with_stderr(
        &["--validators", list, "--refusals-every", "1"],
        Stdio::piped(),
    );
    let stderr = BufReader::new(miner.guard.0.stderr.take().unwrap());
    // The miner's stderr, line by line, read on a thread so that a silent miner fails
    // the test by the deadline below instead of hanging it.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let (out, s) = query(&miner, &miner.hotkey, &["-n", "1", "--timeout-ms", "3000"]);
    assert!(!out.status.success(), "unlisted validator admitted: {s}");
    let error = s["first_error"].as_str().unwrap();
    assert!(error.ends_with("Handshake rejected by miner"), "{error}");
    let hint = s["hint"].as_str().unwrap_or_else(|| panic!("no hint: {s}"));
    assert!(
        hint.contains("--validators") && hint.contains("30 handshakes a minute"),
        "{hint}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("refused") => break line,
            Ok(_) => continue,
            Err(e) => panic!("the miner printed no refusal within 20 s ({e})"),
        }
    };
    assert!(
        report.contains(
            "refused 1 handshake in the last 1 s: not_permitted 1 (hotkey not in --validators)"
        ),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lightning query --json` towards 127.0.0.1:9, where nothing listens: it must fail;
/// returns its JSON summary.
fn query_nothing_listening(hotkey: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["query", "--port", "9", "--hotkey", hotkey])
        .args(["--seed", VALIDATOR_SEED, "--json"])
        .args(extra)
        .output()
        .expect("run query");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).expect("JSON summary")
}

/// The connect timeout comes with a hint on where to look.
#[test]
fn a_connect_timeout_names_what_to_check() {
    let hotkey = Keypair::from_seed(&[0x09; 32]).hotkey();
    let s = query_nothing_listening(&hotkey, &["--timeout-ms", "300"]);
    let error = s["first_error"].as_str().unwrap();
    assert!(
        error.ends_with("Connection to 127.0.0.1:9 timed out"),
        "{error}"
    );
    let hint = s["hint"].as_str().unwrap_or_else(|| panic!("no hint: {s}"));
    assert!(
        hint.contains("nothing answered the QUIC handshake"),
        "{hint}"
    );
}

#[test]
fn a_hotkey_that_is_not_ss58_fails_at_once() {
    // Before the check, this waited for the 10 s connect timeout.
    let started = Instant::now();
    let s = query_nothing_listening("notakey", &[]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s["connected"], false, "{s}");
    let error = s["first_error"].as_str().unwrap();
    assert!(
        error.contains("miner hotkey \"notakey\" is not a valid SS58 address"),
        "{error}"
    );
}

#[test]
fn a_request_over_the_frame_limit_is_refused_locally() {
    let miner = serve();
    // 70 MB: over the client's default max_frame_payload_bytes (64 MiB).
    let (out, s) = query(&miner, &miner.hotkey, &["--size", "70000000"]);
    assert!(!out.status.success());
    assert_eq!(
        (s["ok"].as_u64(), s["errors"].as_u64()),
        (Some(0), Some(1)),
        "{s}"
    );
    let error = s["first_error"].as_str().unwrap();
    assert!(
        error.contains("request frame of 700000")
            && error.contains("exceeds the client's max_frame_payload_bytes of 67108864 bytes"),
        "{error}"
    );
}

/// One HTTP/1.1 GET; returns the status line, the head and the body.
fn http_get(addr: &str, path: &str) -> (String, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_string(), body.to_string())
}

/// The value of sample `series` (name and labels, as printed) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn serve_metrics_endpoint_counts_the_traffic_sent() {
    // Two drivers: the scrape is the sum of both.
    let miner = serve_with(&["--metrics", "127.0.0.1:0", "--drivers", "2"]);
    let addr = miner
        .metrics
        .clone()
        .expect("the ready line names the metrics address");
    assert!(!addr.ends_with(":0"), "{addr}");

    let (status, head, before) = http_get(&addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let echo_ok = r#"lightning_server_requests_total{synapse="echo",outcome="ok"}"#;
    assert_eq!(sample(&before, echo_ok), Some(0.0), "{before}");

    let (out, s) = query(&miner, &miner.hotkey, &["-n", "25", "--concurrency", "4"]);
    assert!(out.status.success());
    assert_eq!(s["ok"].as_u64(), Some(25));
    let (out, _) = query(&miner, &miner.hotkey, &["-n", "3", "--synapse", "nope"]);
    assert!(!out.status.success());

    let (status, _, after) = http_get(&addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(sample(&after, echo_ok), Some(25.0), "{after}");
    let unknown =
        r#"lightning_server_requests_total{synapse="unknown",outcome="unrecognized_synapse"}"#;
    assert_eq!(sample(&after, unknown), Some(3.0), "{after}");
    assert!(!after.contains("nope"));
    assert_eq!(
        sample(&after, "lightning_server_handshakes_accepted_total"),
        Some(2.0)
    );
    assert_eq!(
        sample(&after, "lightning_server_connections_accepted_total"),
        Some(2.0)
    );
    let handled = r#"lightning_server_handler_duration_seconds_count{synapse="echo"}"#;
    assert_eq!(sample(&after, handled), Some(25.0));
    for dir in ["in", "out"] {
        let bytes = format!(r#"lightning_server_udp_bytes_total{{direction="{dir}"}}"#);
        let (b0, b1) = (sample(&before, &bytes), sample(&after, &bytes));
        assert!(b1 > b0, "{bytes}: {b0:?} then {b1:?}");
    }

    let (status, _, _) = http_get(&addr, "/");
    assert!(status.contains(" 404 "), "{status}");
}
