//! The `lightning-netem` command itself, as a shell or a script runs it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An interrupted relay prints its counters and exits even while its stdin stays open (a
/// terminal, or a script's pipe): the stdin reader must not keep the process alive.
#[test]
fn an_interrupt_prints_the_counters_and_exits_with_stdin_still_open() {
    let mut relay = Command::new(env!("CARGO_BIN_EXE_lightning-netem"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--profile",
            "lan",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lightning-netem");
    let mut ready = String::new();
    BufReader::new(relay.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("ready line");
    assert!(ready.contains("\"listen\""), "ready line: {ready}");

    let killed = Command::new("kill")
        .args(["-INT", &relay.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = relay.try_wait().expect("wait") {
            break status;
        }
        if asked.elapsed() > Duration::from_secs(10) {
            let _ = relay.kill();
            panic!("the relay did not exit within 10 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let mut err = String::new();
    relay
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(err.contains("to server: received 0"), "counters: {err}");
    // stdin (still open until here) is dropped with `relay`.
}
