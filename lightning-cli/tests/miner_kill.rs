//! A miner killed with SIGKILL under load and restarted on the same port with a new TLS
//! certificate (issue 15): a `lightning serve` child process behind a `lightning-netem`
//! relay, queried by an in-process `LightningClient`. The validator reconnects by itself
//! and every query is either answered (with its own data) or reported failed: none lost,
//! none answered twice. Bounds are generous; nothing asserts a tight timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lightning_netem::{Profile, Relay};
use lightning_tokio::{ClientBuilder, DataMap, LightningError, QuicAxonInfo, QuicRequest};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_lightning");
const MINER_SEED: &str = "4242424242424242424242424242424242424242424242424242424242424242";
const VALIDATOR_SEED: [u8; 32] = [7; 32];
const CONCURRENCY: usize = 8;
/// No query may take longer than this: a hang fails the test instead of stalling it.
const HANG: Duration = Duration::from_secs(20);

/// A `lightning serve` child; killed (SIGKILL) when dropped.
struct Miner {
    child: Child,
    port: u16,
    hotkey: String,
    fingerprint: String,
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Miner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(port: u16) -> Miner {
    let mut child = Command::new(BIN)
        .args(["serve", "--host", "127.0.0.1", "--seed", MINER_SEED])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lightning serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    let ready: serde_json::Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => {
            let _ = child.kill();
            panic!("ready line {line:?}: {e}");
        }
    };
    Miner {
        port: u16::try_from(ready["port"].as_u64().unwrap()).unwrap(),
        hotkey: ready["hotkey"].as_str().unwrap().to_string(),
        fingerprint: ready["fingerprint"].as_str().unwrap().to_string(),
        child,
        _stdout: stdout,
    }
}

#[derive(Debug)]
struct Outcome {
    id: u64,
    started: Instant,
    result: Result<(), LightningError>,
}

fn ok_since(outcomes: &[Outcome], since: Instant) -> usize {
    outcomes
        .iter()
        .filter(|o| o.started >= since && o.result.is_ok())
        .count()
}

/// Collects outcomes until `n` queries started at `since` or later were answered.
async fn collect_until(
    outcomes: &mut Vec<Outcome>,
    rx: &mut mpsc::UnboundedReceiver<Outcome>,
    since: Instant,
    n: usize,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while ok_since(outcomes, since) < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(o)) => outcomes.push(o),
            Ok(None) => panic!("the workers stopped"),
            Err(_) => panic!("fewer than {n} answers within {limit:?}"),
        }
    }
}

#[test]
fn miner_killed_and_restarted_with_a_new_certificate_under_load() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A fixed port, as a miner's axon has: the stateless-reset secret derives from the
        // key and the port, so only a miner restarted on its port inherits it.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let first = serve(port);
        assert_eq!(first.port, port);
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            ([127, 0, 0, 1], port).into(),
            Profile::Lan.config(17),
        )
        .unwrap();
        // Default client settings: a killed miner sends no CONNECTION_CLOSE, and without
        // help the client would learn of its death only from the 150 s idle timeout. The
        // restarted miner keys its stateless resets with a secret derived from its key and
        // port, like its predecessor, so it resets the old connection at its next packet.
        let client = ClientBuilder::new()
            .seed(VALIDATOR_SEED)
            .bind_addr(([127, 0, 0, 1], 0).into())
            .build()
            .unwrap();
        let axon = QuicAxonInfo::from_addr(first.hotkey.clone(), relay.local_addr());
        let report = client.initialize_connections([axon.clone()]).await.unwrap();
        assert_eq!(report.authenticated.len(), 1, "{report:?}");

        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(1));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let (client, axon, stop, next, tx) = (
                    client.clone(),
                    axon.clone(),
                    stop.clone(),
                    next.clone(),
                    tx.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        let data = DataMap::from_values([("id".to_string(), id.into())]).unwrap();
                        let started = Instant::now();
                        let query = client.query_axon_with_timeout(
                            &axon,
                            QuicRequest::new("echo", data.clone()),
                            Duration::from_secs(2),
                        );
                        let result = match tokio::time::timeout(HANG, query).await {
                            Err(_) => panic!("query {id} hung"),
                            Ok(Ok(r)) => match r.into_result() {
                                Ok(r) if r.data == data => Ok(()),
                                Ok(_) => panic!("query {id} got someone else's answer"),
                                Err(e) => Err(e),
                            },
                            Ok(Err(e)) => Err(e),
                        };
                        let failed = result.is_err();
                        let _ = tx.send(Outcome {
                            id,
                            started,
                            result,
                        });
                        if failed {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        drop(tx);

        let mut outcomes: Vec<Outcome> = Vec::new();
        let start = Instant::now();
        collect_until(&mut outcomes, &mut rx, start, 200, Duration::from_secs(20)).await;

        // SIGKILL: no close frame, no goodbye.
        let old_fingerprint = first.fingerprint.clone();
        let killed_at = Instant::now();
        drop(first);
        let second = serve(port);
        assert_eq!(second.hotkey, axon.hotkey);
        assert_ne!(second.fingerprint, old_fingerprint, "the same certificate");
        let restarted = Instant::now();
        collect_until(
            &mut outcomes,
            &mut rx,
            restarted,
            200,
            Duration::from_secs(30),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            tokio::time::timeout(HANG, worker)
                .await
                .expect("a worker hung")
                .expect("a worker panicked");
        }
        while let Some(o) = rx.recv().await {
            outcomes.push(o);
        }

        // None lost: every id handed out finished exactly once.
        let issued = next.load(Ordering::Relaxed) - 1;
        let mut ids: Vec<u64> = outcomes.iter().map(|o| o.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=issued).collect::<Vec<_>>(), "lost or duplicated");
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for o in &outcomes {
            let kind = match &o.result {
                Ok(()) => "ok".to_string(),
                Err(LightningError::Timeout(_)) => "timeout".to_string(),
                Err(LightningError::ConnectionLost(_)) => "connection lost".to_string(),
                Err(LightningError::Connect(m)) => format!("connect: {m}"),
                Err(e) => panic!("query {} failed with {e:?}", o.id),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        let first_ok = outcomes
            .iter()
            .filter(|o| o.started >= killed_at && o.result.is_ok())
            .map(|o| o.started)
            .min()
            .expect("answered after the restart");
        eprintln!(
            "outcomes {kinds:?}; first answered query after the kill started {:?} after it",
            first_ok - killed_at
        );
        assert!(kinds.get("ok").copied().unwrap_or(0) >= 400);
        // The reset, the query timeouts in flight (2 s) and the first reconnect backoff
        // steps (1 s, 2 s), generously; far below the 150 s idle timeout.
        assert!(first_ok - killed_at < Duration::from_secs(20));
        // The miner came back with a new certificate and the same hotkey.
        let hotkeys = client.authenticated_hotkeys().await.unwrap();
        assert!(hotkeys.contains(&axon.hotkey));
        drop(second);
    });
}
