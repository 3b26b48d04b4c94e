//! The core stays sans-IO: its source never reads a clock, opens a socket, spawns a thread
//! or draws global randomness. clippy's `disallowed-methods` catches calls it can resolve;
//! this also catches names clippy cannot see, such as types in signatures and macros.

#![allow(clippy::unwrap_used)]

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "UdpSocket",
    "TcpStream",
    "thread::spawn",
    "thread_rng",
    "OsRng",
    "getrandom",
    "rand::rng()",
];

fn scan(dir: &Path, hits: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, hits);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                // Unit-test modules sit at the end of a file and may use a real clock.
                if line.trim() == "#[cfg(test)]" {
                    break;
                }
                let code = line.split("//").next().unwrap_or("");
                for f in FORBIDDEN {
                    if code.contains(f) {
                        hits.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
}

#[test]
fn core_source_has_no_clock_socket_thread_or_global_rng() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = Vec::new();
    scan(&src, &mut hits);
    assert!(hits.is_empty(), "sans-IO violations:\n{}", hits.join("\n"));
}

#[test]
fn the_scan_finds_a_violation_when_there_is_one() {
    let dir = std::env::temp_dir().join(format!("lightning-sans-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.rs"),
        "fn f() { let _ = std::time::Instant::now(); }\n",
    )
    .unwrap();
    let mut hits = Vec::new();
    scan(&dir, &mut hits);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(hits.len(), 1);
}
