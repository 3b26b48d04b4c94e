//! The client and server endpoints, end to end, in the deterministic simulator.
//!
//! Real QUIC (quinn-proto), real TLS (rustls), real sr25519; only the network and the clock
//! are simulated. A failing seed is printed and can be replayed with LIGHTNING_SIM_SEED.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use lightning_proto::endpoint::{
    CancelReason, ClientConfig, ClientError, ClientEvent, HotkeyStatus, RequestOptions,
    ResetSecret, ServerConfig, ServerEvent, DEFAULT_MAX_UDP_PAYLOAD, LOOPBACK_MAX_UDP_PAYLOAD,
};
use lightning_proto::handshake::HandshakeError;
use lightning_proto::identity::Keypair;
use lightning_proto::message::DataMap;
use lightning_proto::sim::{run_seeds, LinkConditions};
use support::*;

const SERVER: &str = "10.0.0.1:8443";
const CLIENT: &str = "10.0.0.2:40000";
const SECOND: Duration = Duration::from_secs(1);

fn lan() -> LinkConditions {
    LinkConditions {
        latency: Duration::from_millis(5),
        ..LinkConditions::perfect()
    }
}

/// One server, one client with the default configs, on a 5 ms link.
fn pair(
    seed: u64,
) -> (
    World,
    lightning_proto::sim::NodeId,
    lightning_proto::sim::NodeId,
) {
    pair_with_server_config(seed, ServerConfig::default())
}

/// One server with `config`, one client with the default config, on a 5 ms link.
fn pair_with_server_config(
    seed: u64,
    config: ServerConfig,
) -> (
    World,
    lightning_proto::sim::NodeId,
    lightning_proto::sim::NodeId,
) {
    let mut w = World::new(seed);
    w.sim.set_default_link(lan());
    let s = w.add_server(SERVER, config, MINER_SEED);
    let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c = w.add_client(CLIENT, c);
    (w, s, c)
}

fn connect(w: &mut World, c: lightning_proto::sim::NodeId, hotkeys: &[String]) {
    let now = w.sim.now();
    w.client(c)
        .connect(now, addr(SERVER), hotkeys.iter().cloned())
        .unwrap();
}

fn connected_pair(
    seed: u64,
) -> (
    World,
    lightning_proto::sim::NodeId,
    lightning_proto::sim::NodeId,
) {
    let (mut w, s, c) = pair(seed);
    connect(&mut w, c, &[miner_hotkey()]);
    let hk = miner_hotkey();
    w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
    (w, s, c)
}

fn request(
    w: &mut World,
    c: lightning_proto::sim::NodeId,
    synapse: &str,
    data: DataMap,
    opts: RequestOptions,
) -> lightning_proto::endpoint::QueryId {
    request_to(w, c, SERVER, synapse, data, opts)
}

/// Like [`request`], to the miner at `server`.
fn request_to(
    w: &mut World,
    c: lightning_proto::sim::NodeId,
    server: &str,
    synapse: &str,
    data: DataMap,
    opts: RequestOptions,
) -> lightning_proto::endpoint::QueryId {
    let now = w.sim.now();
    let hk = miner_hotkey();
    w.client(c)
        .request(now, addr(server), &hk, synapse, data, opts)
        .unwrap()
}

fn wait_outcome(
    w: &mut World,
    c: lightning_proto::sim::NodeId,
    id: lightning_proto::endpoint::QueryId,
    limit: Duration,
) -> ClientEvent {
    w.run_until(limit, |w| w.outcome(c, id).is_some());
    w.outcome(c, id).unwrap()
}

#[test]
fn handshake_succeeds_and_echo_round_trips() {
    run_seeds(4, |seed| {
        let (mut w, s, c) = connected_pair(seed);
        assert_eq!(
            w.client(c).hotkey_status(addr(SERVER), &miner_hotkey()),
            Some(HotkeyStatus::Authenticated)
        );
        let validators: Vec<String> = w
            .server(s)
            .validators()
            .map(|(h, _)| h.to_string())
            .collect();
        if validators != vec![validator_hotkey()] {
            return Err(format!("server validators {validators:?}"));
        }
        echo_round_trip(&mut w, c, "hi")
    });
}

#[test]
fn retry_is_sent_when_always_required_and_handshake_still_succeeds() {
    let mut w = World::new(7);
    w.sim.set_default_link(lan());
    let config = ServerConfig {
        retry: lightning_proto::endpoint::RetryPolicy::Always,
        ..ServerConfig::default()
    };
    let s = w.add_server(SERVER, config, MINER_SEED);
    let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c = w.add_client(CLIENT, c);
    connect(&mut w, c, &[miner_hotkey()]);
    let hk = miner_hotkey();
    w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
    assert_eq!(w.server(s).stats().retried, 1);
}

#[test]
fn server_rejects_a_signature_from_the_wrong_key() {
    let (mut w, _s, _) = pair(11);
    // Claims the validator hotkey but signs with another key.
    let other = Keypair::from_seed(&[9; 32]);
    let signer = std::sync::Arc::new(lightning_proto::identity::CallbackSigner::new(
        move |m: &[u8]| Ok(other.sign(m).to_vec()),
    ));
    let now = w.sim.now();
    let unix = w.unix_ms();
    let client = lightning_proto::endpoint::Client::new(
        ClientConfig::default(),
        validator_hotkey(),
        signer,
        [5; 32],
        now,
        unix,
    )
    .unwrap();
    let c = w.add_client("10.0.0.3:40000", client);
    connect(&mut w, c, &[miner_hotkey()]);
    w.run_until(10 * SECOND, |w| w.handshake_failure(c).is_some());
    assert!(w.handshake_failure(c).unwrap().contains("rejected"));
    assert!(w
        .server_rejections()
        .iter()
        .any(|e| e.contains("BadSignature")));
}

#[test]
fn server_rejects_a_replayed_nonce() {
    let (w, _s, c1) = connected_pair(12);
    // A second client with the same injected randomness produces the same nonce.
    let now_rng = [42u8; 32];
    let mut w2 = w;
    let a = w2.make_client_with_rng(ClientConfig::default(), [3; 32], 0, now_rng);
    let b = w2.make_client_with_rng(ClientConfig::default(), [3; 32], 0, now_rng);
    let a = w2.add_client("10.0.0.3:1000", a);
    connect(&mut w2, a, &[miner_hotkey()]);
    let hk = miner_hotkey();
    w2.run_until(10 * SECOND, |w| w.authenticated(a, &hk));
    let b = w2.add_client("10.0.0.4:1000", b);
    connect(&mut w2, b, &[miner_hotkey()]);
    w2.run_until(10 * SECOND, |w| w.handshake_failure(b).is_some());
    assert!(w2.server_rejections().iter().any(|e| e.contains("Replay")));
    // The honest client is untouched.
    assert!(w2.authenticated(c1, &hk));
}

#[test]
fn server_rejects_stale_and_future_timestamps() {
    for (skew, expect) in [(-400i64, "TooOld"), (120, "TooFarInFuture")] {
        let (mut w, _s, _) = pair(13);
        let client = w.make_client(ClientConfig::default(), [4; 32], skew);
        let c = w.add_client("10.0.0.3:1000", client);
        connect(&mut w, c, &[miner_hotkey()]);
        w.run_until(10 * SECOND, |w| w.handshake_failure(c).is_some());
        let rejections = w.server_rejections();
        assert!(
            rejections.iter().any(|e| e.contains(expect)),
            "skew {skew}: {rejections:?}"
        );
    }
}

#[test]
fn client_rejects_a_miner_with_an_unexpected_hotkey() {
    let (mut w, _s, c) = pair(14);
    let impostor = Keypair::from_seed(&[7; 32]).hotkey();
    connect(&mut w, c, std::slice::from_ref(&impostor));
    w.run_until(10 * SECOND, |w| w.handshake_failure(c).is_some());
    let err = w.handshake_failure(c).unwrap();
    assert!(err.contains("Miner hotkey mismatch"), "{err}");
    assert_eq!(
        w.client(c).hotkey_status(addr(SERVER), &impostor),
        Some(HotkeyStatus::Failed)
    );
}

#[test]
fn client_rejects_a_fingerprint_that_is_not_the_tls_certificate() {
    let (mut w, s, c) = pair(15);
    w.server(s).override_advertised_fingerprint_for_testing(
        "uUk+L0nGSZdCQ1R18MTb5ShIRfEEiWkhmXtrts1ftjg=",
    );
    connect(&mut w, c, &[miner_hotkey()]);
    w.run_until(10 * SECOND, |w| w.handshake_failure(c).is_some());
    let err = w.handshake_failure(c).unwrap();
    assert!(err.contains("fingerprint"), "{err}");
}

#[test]
fn request_without_authentication_gets_authentication_failed() {
    let (mut w, _s, c) = pair(16);
    // QUIC only (no hotkeys to authenticate), then a request pushed without a handshake.
    let now = w.sim.now();
    w.client(c)
        .connect(now, addr(SERVER), Vec::<String>::new())
        .unwrap();
    w.run_until(5 * SECOND, |w| w.client(c).peers().any(|(_, up)| up));
    let now = w.sim.now();
    let id = w
        .client(c)
        .send_unauthenticated_for_testing(now, addr(SERVER), "echo", DataMap::default())
        .unwrap();
    let ClientEvent::Response { response, .. } = wait_outcome(&mut w, c, id, 5 * SECOND) else {
        panic!("no response");
    };
    assert!(!response.success);
    assert_eq!(response.error.as_deref(), Some("authentication failed"));
}

#[test]
fn unknown_synapse_and_handler_failure_use_the_exact_wire_strings() {
    let (mut w, _s, c) = connected_pair(17);
    let id = request(
        &mut w,
        c,
        "nope",
        DataMap::default(),
        RequestOptions::default(),
    );
    let ClientEvent::Response { response, .. } = wait_outcome(&mut w, c, id, 5 * SECOND) else {
        panic!("no response");
    };
    assert_eq!(response.error.as_deref(), Some("unrecognized synapse type"));
    let id = request(
        &mut w,
        c,
        "fail",
        DataMap::default(),
        RequestOptions::default(),
    );
    let ClientEvent::Response { response, .. } = wait_outcome(&mut w, c, id, 5 * SECOND) else {
        panic!("no response");
    };
    assert_eq!(response.error.as_deref(), Some("request processing failed"));
}

#[test]
fn a_refusal_sends_its_reason_unary_and_streaming() {
    let (mut w, _s, c) = connected_pair(23);
    let id = request(
        &mut w,
        c,
        "refuse",
        DataMap::default(),
        RequestOptions::default(),
    );
    let ClientEvent::Response { response, .. } = wait_outcome(&mut w, c, id, 5 * SECOND) else {
        panic!("no response");
    };
    assert!(!response.success);
    assert_eq!(response.error.as_deref(), Some("403 not on the list"));
    let id = request(
        &mut w,
        c,
        "refuse_stream",
        DataMap::default(),
        RequestOptions {
            streaming: true,
            ..Default::default()
        },
    );
    match wait_outcome(&mut w, c, id, 5 * SECOND) {
        ClientEvent::RequestFailed {
            error: lightning_proto::endpoint::ClientError::Stream(message),
            ..
        } => assert_eq!(
            message,
            lightning_proto::endpoint::StreamFailure::Remote("403 not on the list".into())
        ),
        other => panic!("expected a failed stream, got {other:?}"),
    }
}

#[test]
fn handler_timeout_answers_handler_timed_out_at_the_configured_time() {
    let mut w = World::new(18);
    w.sim.set_default_link(lan());
    let config = ServerConfig {
        handler_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    };
    w.add_server(SERVER, config, MINER_SEED);
    let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c = w.add_client(CLIENT, c);
    connect(&mut w, c, &[miner_hotkey()]);
    let hk = miner_hotkey();
    w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
    let sent_at = w.sim.elapsed();
    let id = request(
        &mut w,
        c,
        "slow",
        DataMap::default(),
        RequestOptions::default(),
    );
    let ClientEvent::Response { response, .. } = wait_outcome(&mut w, c, id, 10 * SECOND) else {
        panic!("no response");
    };
    assert_eq!(response.error.as_deref(), Some("handler timed out"));
    let took = w.sim.elapsed() - sent_at;
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
        "{took:?}"
    );
    assert!(w.responder.events.iter().any(|e| matches!(
        e,
        ServerEvent::RequestCancelled {
            reason: CancelReason::TimedOut,
            ..
        }
    )));
}

#[test]

fn ten_thousand_requests_under_loss_reordering_and_duplication_each_answered_once() {
    run_seeds(1, |seed| {
        let mut w = World::new(seed);
        w.sim.set_default_link(lan());
        w.add_server(SERVER, ServerConfig::default(), MINER_SEED);
        let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
        let c = w.add_client(CLIENT, c);
        connect(&mut w, c, &[miner_hotkey()]);
        let hk = miner_hotkey();
        w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
        // Jitter is kept below the packet spacing: per-packet jitter larger than that
        // reorders nearly every packet, which no real path does and which QUIC's loss
        // detection reads as loss. Reordering is explicit instead.
        w.sim.set_default_link(LinkConditions {
            latency: Duration::from_millis(10),
            jitter: Duration::from_micros(200),
            loss: 0.10,
            duplicate: 0.02,
            reorder: 0.02,
            reorder_delay: Duration::from_millis(5),
            ..LinkConditions::perfect()
        });
        let mut rng = w.sim.derive_rng();
        let mut expected: HashMap<lightning_proto::endpoint::QueryId, Vec<u8>> = HashMap::new();
        let total = 10_000usize;
        let mut sent = 0usize;
        let mut answered = 0usize;
        let mut checked = 0usize;
        while answered < total {
            // Keep 64 requests in flight.
            while sent < total && sent - answered < 64 {
                use rand_core::RngCore;
                // Log-uniform sizes from 256 B to 1 MiB, mostly small.
                let exp = 8 + (rng.next_u32() % 13);
                let size = if exp >= 18 && rng.next_u32() % 8 != 0 {
                    256
                } else {
                    1usize << exp
                };
                let fill = (sent % 251) as u8;
                let body = vec![fill; size];
                let id = request(
                    &mut w,
                    c,
                    "echo",
                    payload_data(body.clone()),
                    RequestOptions::default(),
                );
                expected.insert(id, body);
                sent += 1;
            }
            w.run_until(120 * SECOND, |w| {
                w.events(c).iter().any(|e| {
                    matches!(
                        e,
                        ClientEvent::Response { .. } | ClientEvent::RequestFailed { .. }
                    )
                })
            });
            for ev in std::mem::take(w.events(c)) {
                match ev {
                    ClientEvent::Response { id, response, .. } => {
                        let body = expected
                            .remove(&id)
                            .ok_or_else(|| format!("{id:?} answered twice or never sent"))?;
                        if !response.success {
                            return Err(format!("{id:?} failed: {:?}", response.error));
                        }
                        let got = response.data.get("payload");
                        if got != Some(rmpv::Value::Binary(body)) {
                            return Err(format!("{id:?} payload corrupted"));
                        }
                        answered += 1;
                        checked += 1;
                    }
                    ClientEvent::RequestFailed { id, error } => {
                        let stats = w.client(c).connection_stats(addr(SERVER));
                        return Err(format!(
                            "{id:?} failed at {:?}: {error}; in flight {}; {stats:?}",
                            w.sim.elapsed(),
                            w.client(c).requests_in_flight()
                        ));
                    }
                    _ => {}
                }
            }
        }
        eprintln!("10k requests took {:?} of virtual time", w.sim.elapsed());
        if checked != total || !expected.is_empty() || w.responder.duplicates != 0 {
            return Err(format!(
                "checked {checked}, left {}, duplicates {}",
                expected.len(),
                w.responder.duplicates
            ));
        }
        let stats = w.sim.stats();
        if stats.lost.datagrams == 0 || stats.duplicated.datagrams == 0 {
            return Err("the network did not actually misbehave".into());
        }
        Ok(())
    });
}

#[test]
fn thousand_chunk_stream_arrives_in_order() {
    let (mut w, _s, c) = connected_pair(19);
    let id = request(
        &mut w,
        c,
        "stream",
        data(&[("n", 1000u64.into()), ("size", 100u64.into())]),
        RequestOptions {
            streaming: true,
            ..Default::default()
        },
    );
    let mut chunks = Vec::new();
    loop {
        w.run_until(30 * SECOND, |w| !w.events(c).is_empty());
        let mut done = false;
        for ev in std::mem::take(w.events(c)) {
            match ev {
                ClientEvent::Chunk { data, .. } => {
                    chunks.push(data);
                    let now = w.sim.now();
                    w.client(c).consume_chunks(now, id, 1);
                }
                ClientEvent::StreamEnd { .. } => done = true,
                ClientEvent::RequestFailed { error, .. } => panic!("{error}"),
                _ => {}
            }
        }
        if done {
            break;
        }
    }
    assert_eq!(chunks.len(), 1000);
    for (i, chunk) in chunks.iter().enumerate() {
        let seq = 1000 - i as u64;
        assert_eq!(chunk.len(), 100);
        assert!(
            chunk.iter().all(|b| *b == (seq % 251) as u8),
            "chunk {i} out of order"
        );
    }
}

/// A handler that sends only within the credit the core grants (as the driver's sink
/// does) is never refused, and its connection's queued chunks stay within the
/// connection's cap plus one oversized chunk, however many streams it runs and however
/// large its chunks: the core is the one owner of streaming backpressure.
#[test]
fn chunk_credit_is_never_refused_and_bounds_a_connection_that_does_not_read() {
    let config = ServerConfig {
        max_queued_chunk_bytes: 64 * 1024,
        max_queued_response_bytes_per_connection: 256 * 1024,
        ..ServerConfig::default()
    };
    let (mut w, c) = {
        let (mut w, _s, c) = pair_with_server_config(31, config.clone());
        connect(&mut w, c, &[miner_hotkey()]);
        let hk = miner_hotkey();
        w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
        (w, c)
    };
    // Eight streams of 200 KiB chunks (over the per-stream byte cap), never consumed.
    let chunk = 200 * 1024;
    let ids: Vec<_> = (0..8)
        .map(|_| {
            request(
                &mut w,
                c,
                "credit_stream",
                data(&[("n", 20u64.into()), ("size", (chunk as u64).into())]),
                RequestOptions {
                    streaming: true,
                    ..Default::default()
                },
            )
        })
        .collect();
    // Shorter than `send_progress_timeout`, which would end a connection that reads nothing.
    w.run_for(Duration::from_secs(2));
    assert_eq!(w.responder.refused_within_credit, 0);
    let bound = config.max_queued_response_bytes_per_connection as usize
        + chunk
        + 8 * 64
        + config.transport.send_window as usize;
    assert!(
        w.responder.max_queued_bytes <= bound,
        "server queued {} bytes, bound {bound}",
        w.responder.max_queued_bytes
    );
    // Reading everything delivers every chunk of every stream.
    let mut ended = 0;
    let mut chunks = 0;
    w.run_until(120 * SECOND, |w| {
        for ev in std::mem::take(w.events(c)) {
            match ev {
                ClientEvent::Chunk { id, .. } => {
                    chunks += 1;
                    let now = w.sim.now();
                    w.client(c).consume_chunks(now, id, 1);
                }
                ClientEvent::StreamEnd { .. } => ended += 1,
                ClientEvent::RequestFailed { error, .. } => panic!("{error}"),
                _ => {}
            }
        }
        ended == ids.len()
    });
    assert_eq!(ended, ids.len());
    assert_eq!(chunks, 8 * 20);
    assert_eq!(w.responder.refused_within_credit, 0);
}

/// A connection the miner closes gives back its queued answers and cancels its requests
/// at once, not when QUIC has drained it (three probe timeouts, seconds with a silent
/// peer): the bytes a validator that stopped reading made the miner queue stop counting
/// against everyone's cap the moment the miner gives up on it.
#[test]
fn a_closed_connection_drops_its_queued_answers_at_once() {
    let (mut w, s, c) = connected_pair(41);
    let ids: Vec<_> = (0..4)
        .map(|_| {
            request(
                &mut w,
                c,
                "stream",
                data(&[("n", 1000u64.into()), ("size", (64 * 1024u64).into())]),
                RequestOptions {
                    streaming: true,
                    ..Default::default()
                },
            )
        })
        .collect();
    // The validator never consumes a chunk: answers pile up on the miner.
    w.run_for(2 * SECOND);
    assert!(w.server(s).queued_bytes() > 0, "nothing queued: no test");
    assert_eq!(w.server(s).requests_in_flight(), ids.len());
    let conn = w
        .responder
        .events
        .iter()
        .find_map(|e| match e {
            ServerEvent::Authenticated { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();
    let now = w.sim.now();
    w.server(s).close_connection(now, conn, "cleanup");
    assert_eq!(w.server(s).queued_bytes(), 0);
    assert_eq!(w.server(s).requests_in_flight(), 0);
    assert!(
        w.server(s).connection_count() > 0,
        "closed only once drained"
    );
    w.run_for(Duration::from_millis(1));
    let cancelled = w
        .responder
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ServerEvent::RequestCancelled {
                    reason: CancelReason::ConnectionLost,
                    ..
                }
            )
        })
        .count();
    assert_eq!(cancelled, ids.len());
}

#[test]
fn slow_consumer_backpressure_bounds_server_memory_and_cancel_reaches_the_server() {
    let (mut w, _s, c) = connected_pair(20);
    let id = request(
        &mut w,
        c,
        "stream",
        data(&[("n", 100_000u64.into()), ("size", 16_384u64.into())]),
        RequestOptions {
            streaming: true,
            ..Default::default()
        },
    );
    // The client never consumes: after read-ahead chunks it stops reading.
    w.run_for(Duration::from_secs(5));
    let delivered = w
        .events(c)
        .iter()
        .filter(|e| matches!(e, ClientEvent::Chunk { .. }))
        .count();
    let read_ahead = ClientConfig::default().stream_read_ahead_chunks;
    assert_eq!(
        delivered, read_ahead,
        "client delivered beyond its read-ahead"
    );
    // Server memory stays bounded: our queue (32 chunks) plus QUIC's send window.
    let bound = 32 * (16_384 + 16) + ServerConfig::default().transport.send_window as usize;
    assert!(
        w.responder.max_queued_bytes <= bound,
        "server queued {} bytes",
        w.responder.max_queued_bytes
    );
    // 100 000 chunks were never produced: the handler was held back.
    let now = w.sim.now();
    w.client(c).cancel(now, id);
    w.run_until(5 * SECOND, |w| {
        w.responder.events.iter().any(|e| {
            matches!(
                e,
                ServerEvent::RequestCancelled {
                    reason: CancelReason::PeerCancelled,
                    ..
                }
            )
        })
    });
}

#[test]
fn keep_alive_holds_an_idle_connection_and_idle_timeout_fires_when_the_peer_is_gone() {
    let (mut w, _s, c) = connected_pair(21);
    let start = w.sim.stats().delivered.datagrams;
    w.run_for(Duration::from_secs(600));
    // Both sides PING every 30 s: 10 minutes is about 20 pings plus their ACKs.
    let idle_traffic = w.sim.stats().delivered.datagrams - start;
    assert!(
        (20..=80).contains(&idle_traffic),
        "{idle_traffic} datagrams in 10 idle minutes"
    );
    assert!(!w
        .events(c)
        .iter()
        .any(|e| matches!(e, ClientEvent::ConnectionLost { .. })));

    // Cut the link: the 150 s idle timeout closes the connection.
    w.sim.partition(addr(SERVER), addr(CLIENT));
    let cut = w.sim.elapsed();
    w.run_until(Duration::from_secs(300), |w| {
        w.events(c)
            .iter()
            .any(|e| matches!(e, ClientEvent::ConnectionLost { .. }))
    });
    let after = w.sim.elapsed() - cut;
    assert!(
        after >= Duration::from_secs(120) && after <= Duration::from_secs(151),
        "lost after {after:?}"
    );
}

#[test]
fn reconnect_follows_the_backoff_schedule_then_recovers() {
    let (mut w, _s, c) = connected_pair(22);
    let hk = miner_hotkey();
    w.sim.partition(addr(SERVER), addr(CLIENT));
    w.run_until(Duration::from_secs(200), |w| {
        w.events(c)
            .iter()
            .any(|e| matches!(e, ClientEvent::ConnectionLost { .. }))
    });
    // Each on-demand attempt times out after connect_timeout (10 s) and backs off 1, 2, 4, 8 s.
    let mut failures_at = Vec::new();
    for expected_backoff in [1u64, 2, 4, 8] {
        let id = request(
            &mut w,
            c,
            "echo",
            DataMap::default(),
            RequestOptions::default(),
        );
        let ClientEvent::RequestFailed { .. } = wait_outcome(&mut w, c, id, 30 * SECOND) else {
            panic!("request through a partition succeeded");
        };
        failures_at.push(w.sim.elapsed());
        // Immediately after a failure we are in backoff: an error without dialling.
        let now = w.sim.now();
        let err = w
            .client(c)
            .request(
                now,
                addr(SERVER),
                &hk,
                "echo",
                DataMap::default(),
                RequestOptions::default(),
            )
            .unwrap_err();
        assert!(matches!(err, ClientError::Reconnect(_)), "{err}");
        w.run_for(Duration::from_secs(expected_backoff));
    }
    // Heal: the next attempt reconnects and the request goes through.
    w.sim.heal(addr(SERVER), addr(CLIENT));
    let id = request(
        &mut w,
        c,
        "echo",
        data(&[("k", 1u64.into())]),
        RequestOptions::default(),
    );
    let ClientEvent::Response { response, .. } = wait_outcome(&mut w, c, id, 30 * SECOND) else {
        panic!("no recovery");
    };
    assert!(response.success);
}

/// Restarts the miner of a connected pair the way a crash does (no close frame, a new
/// certificate, the same `config`), then queries until one is answered; fails if that
/// takes `within` or longer after the restart.
fn restart_and_query_until_answered(seed: u64, config: ServerConfig, within: Duration) {
    let (mut w, s, c) = pair_with_server_config(seed, config.clone());
    connect(&mut w, c, &[miner_hotkey()]);
    let hk = miner_hotkey();
    w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
    let old_fp = w.server(s).fingerprint().to_string();
    w.sim.remove_node(s);
    w.servers.retain(|id| *id != s);
    let fresh = w.make_server(config, MINER_SEED);
    assert_ne!(fresh.fingerprint(), old_fp);
    let s2 = w.sim.add_node(addr(SERVER), Peer::server_node(fresh));
    w.servers.push(s2);
    let restarted = w.sim.elapsed();
    loop {
        assert!(w.sim.elapsed() < restarted + within, "never recovered");
        let now = w.sim.now();
        let Ok(id) = w.client(c).request(
            now,
            addr(SERVER),
            &hk,
            "echo",
            DataMap::default(),
            RequestOptions {
                timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            },
        ) else {
            w.run_for(SECOND);
            continue;
        };
        if let ClientEvent::Response { response, .. } = wait_outcome(&mut w, c, id, 30 * SECOND) {
            assert!(response.success);
            break;
        }
        w.run_for(SECOND);
    }
}

/// Queries fail until the old connection is declared dead (its 150 s idle timeout), then
/// reconnect transparently.
#[test]
fn server_restart_with_a_new_certificate_is_survived_by_reconnect() {
    restart_and_query_until_answered(23, ServerConfig::default(), Duration::from_secs(400));
}

/// The same restart, with a stateless-reset secret that both lives share: the new server
/// resets the old connection at its first packet, and the client is answered again
/// within seconds instead of after its 150 s idle timeout.
#[test]
fn server_restart_with_a_shared_reset_secret_resets_the_old_connection() {
    let config = ServerConfig {
        stateless_reset_secret: Some(ResetSecret([5; 32])),
        ..ServerConfig::default()
    };
    // Far below the idle timeout: the reset, then the first reconnect backoff steps.
    restart_and_query_until_answered(25, config, Duration::from_secs(20));
}

#[test]
fn two_miners_on_one_ip_and_a_fake_hotkey_at_a_real_address() {
    let mut w = World::new(24);
    w.sim.set_default_link(lan());
    let other_seed = [8u8; 32];
    let other_hotkey = Keypair::from_seed(&other_seed).hotkey();
    w.add_server(SERVER, ServerConfig::default(), MINER_SEED);
    w.add_server("10.0.0.1:8444", ServerConfig::default(), other_seed);
    let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c = w.add_client(CLIENT, c);
    let now = w.sim.now();
    // The real hotkey plus a fake one claiming the same address; the second miner next door.
    w.client(c)
        .connect(now, addr(SERVER), [miner_hotkey(), other_hotkey.clone()])
        .unwrap();
    w.client(c)
        .connect(now, addr("10.0.0.1:8444"), [other_hotkey.clone()])
        .unwrap();
    let hk = miner_hotkey();
    let ok = other_hotkey.clone();
    w.run_until(10 * SECOND, |w| {
        w.authenticated(c, &hk)
            && w.events(c).iter().any(|e| matches!(e, ClientEvent::Authenticated { addr: a, hotkey, .. } if *a == addr("10.0.0.1:8444") && *hotkey == ok))
            && w.handshake_failure(c).is_some()
    });
    assert_eq!(
        w.client(c).hotkey_status(addr(SERVER), &other_hotkey),
        Some(HotkeyStatus::Failed)
    );
    let mut authed: Vec<(std::net::SocketAddr, String)> = w
        .client(c)
        .authenticated()
        .map(|(a, h)| (a, h.to_string()))
        .collect();
    authed.sort();
    assert_eq!(
        authed,
        vec![
            (addr(SERVER), miner_hotkey()),
            (addr("10.0.0.1:8444"), other_hotkey.clone())
        ]
    );
    // Each miner answers on its own route; the fake route is refused locally.
    let now = w.sim.now();
    let id = w
        .client(c)
        .request(
            now,
            addr("10.0.0.1:8444"),
            &other_hotkey,
            "echo",
            DataMap::default(),
            RequestOptions::default(),
        )
        .unwrap();
    assert!(matches!(
        wait_outcome(&mut w, c, id, 5 * SECOND),
        ClientEvent::Response { .. }
    ));
    let now = w.sim.now();
    let err = w
        .client(c)
        .request(
            now,
            addr(SERVER),
            &other_hotkey,
            "echo",
            DataMap::default(),
            RequestOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, ClientError::NoRoute { .. }));
}

#[test]
fn same_validator_hotkey_on_a_new_connection_replaces_the_old_one() {
    let (mut w, s, c1) = connected_pair(25);
    let c2 = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c2 = w.add_client("10.0.0.9:5000", c2);
    connect(&mut w, c2, &[miner_hotkey()]);
    let hk = miner_hotkey();
    w.run_until(10 * SECOND, |w| {
        w.authenticated(c2, &hk)
            && w.events(c1)
                .iter()
                .any(|e| matches!(e, ClientEvent::ConnectionLost { .. }))
    });
    let reason = w
        .events(c1)
        .iter()
        .find_map(|e| match e {
            ClientEvent::ConnectionLost { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.to_string().contains("replaced"), "{reason}");
    assert_eq!(w.server(s).validators().count(), 1);
}

/// A hotkey's share of the read budget is one connection's: when it connects again, the
/// connection it replaces gives back what it held at once, not when QUIC has finished
/// draining it (three probe timeouts, which a slow or silent peer stretches to seconds).
/// Otherwise a hotkey that keeps reconnecting mid-request holds a share per connection.
#[test]
fn a_replaced_connection_gives_its_read_budget_back_at_once() {
    let mut w = World::new(27);
    w.sim.set_default_link(lan());
    let s = w.add_server(SERVER, ServerConfig::default(), MINER_SEED);
    let hk = miner_hotkey();
    // The first connection: a 300 ms path at 1 MB/s, so an 8 MiB request takes seconds.
    let slow = LinkConditions {
        latency: Duration::from_millis(150),
        bandwidth: Some(1_000_000),
        queue_bytes: 1 << 30,
        ..LinkConditions::perfect()
    };
    w.sim.set_link(addr(CLIENT), addr(SERVER), slow);
    w.sim.set_link(addr(SERVER), addr(CLIENT), slow);
    let c1 = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c1 = w.add_client(CLIENT, c1);
    connect(&mut w, c1, std::slice::from_ref(&hk));
    w.run_until(10 * SECOND, |w| w.authenticated(c1, &hk));
    let eight_mib = |byte: u8| payload_data(vec![byte; 8 << 20]);
    let _ = request(&mut w, c1, "echo", eight_mib(7), RequestOptions::default());
    w.run_until(10 * SECOND, |w| w.server(s).reserved_request_bytes() > 0);
    let held = w.server(s).reserved_request_bytes();
    assert!(held >= 8 << 20, "the request holds {held} bytes");
    // The old path goes silent (the validator moved), and the same hotkey connects again.
    w.sim.partition(addr(CLIENT), addr(SERVER));
    let c2 = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c2 = w.add_client("10.0.0.9:5000", c2);
    connect(&mut w, c2, std::slice::from_ref(&hk));
    w.run_until(10 * SECOND, |w| w.authenticated(c2, &hk));
    assert_eq!(w.server(s).validators().count(), 1);
    assert_eq!(
        w.server(s).reserved_request_bytes(),
        0,
        "the replaced connection still holds read budget"
    );
    // The new connection has the whole share.
    let id = request(&mut w, c2, "echo", eight_mib(9), RequestOptions::default());
    assert!(matches!(
        wait_outcome(&mut w, c2, id, 30 * SECOND),
        ClientEvent::Response { ref response, .. } if response.success
    ));
}

#[test]
fn unauthenticated_connections_are_closed_at_the_handshake_deadline() {
    let mut w = World::new(26);
    w.sim.set_default_link(lan());
    let s = w.add_server(SERVER, ServerConfig::default(), MINER_SEED);
    // Connect to a hotkey list that is empty: QUIC comes up but no handshake is ever sent.
    let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c = w.add_client(CLIENT, c);
    let now = w.sim.now();
    w.client(c)
        .connect(now, addr(SERVER), Vec::<String>::new())
        .unwrap();
    w.run_until(5 * SECOND, |w| w.server(s).connection_count() == 1);
    assert_eq!(w.server(s).unauthenticated_count(), 1);
    w.run_until(15 * SECOND, |w| w.server(s).connection_count() == 0);
    assert_eq!(w.server(s).stats().auth_timeouts, 1);
    let _ = HandshakeError::Replay;
}

/// The unauthenticated connections counted against `max_unauthenticated_connections` are
/// counted up and down as connections come, authenticate and go (the count is kept, not
/// recomputed, so that several endpoints can share it): with room for two, six rounds of
/// a connection that times out before authenticating and one that authenticates leave
/// room for two again, and nothing was refused on the way.
#[test]
fn unauthenticated_counts_return_to_zero_as_connections_come_and_go() {
    let mut w = World::new(27);
    w.sim.set_default_link(lan());
    let config = ServerConfig {
        max_unauthenticated_connections: 2,
        handshake_timeout: 2 * SECOND,
        ..ServerConfig::default()
    };
    let s = w.add_server(SERVER, config, MINER_SEED);
    let hk = miner_hotkey();
    for round in 0..6u8 {
        let silent = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
        let silent = w.add_client(&format!("10.0.1.{}:4000", round + 1), silent);
        let now = w.sim.now();
        w.client(silent)
            .connect(now, addr(SERVER), Vec::<String>::new())
            .unwrap();
        let mut seed = VALIDATOR_SEED;
        seed[0] ^= round + 1;
        let honest = w.make_client(ClientConfig::default(), seed, 0);
        let honest = w.add_client(&format!("10.0.2.{}:4000", round + 1), honest);
        connect(&mut w, honest, std::slice::from_ref(&hk));
        w.run_until(10 * SECOND, |w| w.authenticated(honest, &hk));
        // The silent one times out and drains away (a closing connection still counts
        // until it is gone, as before); the authenticated ones stay.
        let timeouts = u64::from(round) + 1;
        let open = usize::from(round) + 1;
        w.run_until(15 * SECOND, |w| {
            w.server(s).stats().auth_timeouts == timeouts && w.server(s).connection_count() == open
        });
    }
    assert_eq!(w.server(s).stats().refused, 0, "{:?}", w.server(s).stats());
    assert_eq!(w.server(s).unauthenticated_count(), 0);
    // Room for two unauthenticated connections again: both come up.
    let clients: Vec<_> = (0..2u8)
        .map(|i| {
            let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
            w.add_client(&format!("10.0.3.{}:4000", i + 1), c)
        })
        .collect();
    for &c in &clients {
        let now = w.sim.now();
        w.client(c)
            .connect(now, addr(SERVER), Vec::<String>::new())
            .unwrap();
    }
    w.run_until(5 * SECOND, |w| w.server(s).unauthenticated_count() == 2);
    assert_eq!(w.server(s).unauthenticated_count(), 2);
    assert_eq!(w.server(s).stats().refused, 0);
}

/// Requests beyond the request-byte budget wait, unread, instead of being buffered, and
/// every one of them is still answered exactly once: a frame starts only once its whole
/// declared length is reserved, so started frames always finish.
#[test]
fn request_budget_bounds_buffering_and_every_request_is_answered() {
    run_seeds(2, |seed| {
        let mut w = World::new(seed);
        w.sim.set_default_link(lan());
        let per_connection = 1024 * 1024;
        let total = 2 * 1024 * 1024;
        let config = ServerConfig {
            max_request_bytes_per_connection: per_connection,
            max_request_bytes_total: total,
            ..ServerConfig::default()
        };
        let s = w.add_server(SERVER, config, MINER_SEED);
        let clients: Vec<_> = (0..3u8)
            .map(|i| {
                let mut seed = VALIDATOR_SEED;
                seed[0] ^= i + 1;
                let client = w.make_client(ClientConfig::default(), seed, 0);
                w.add_client(&format!("10.0.0.{}:40000", 10 + i), client)
            })
            .collect();
        let hk = miner_hotkey();
        for &c in &clients {
            connect(&mut w, c, std::slice::from_ref(&hk));
        }
        w.run_until(10 * SECOND, |w| {
            clients.iter().all(|&c| w.authenticated(c, &hk))
        });
        let size = 256 * 1024;
        let mut expected = HashMap::new();
        for &c in &clients {
            for n in 0..24u8 {
                let body = vec![n; size];
                let id = request(
                    &mut w,
                    c,
                    "echo",
                    payload_data(body.clone()),
                    RequestOptions::default(),
                );
                expected.insert((c, id), body);
            }
        }
        let frame = (size + 64) as u64;
        let (mut peak, mut parked_seen) = (0u64, false);
        let mut answered = 0;
        while answered < expected.len() {
            w.run_until(60 * SECOND, |w| {
                let server = w.server(s);
                peak = peak.max(server.reserved_request_bytes());
                parked_seen |= server.parked_streams() > 0;
                clients.iter().any(|&c| !w.events(c).is_empty())
            });
            for &c in &clients {
                for ev in std::mem::take(w.events(c)) {
                    match ev {
                        ClientEvent::Response { id, response, .. } => {
                            let body = expected
                                .get(&(c, id))
                                .ok_or_else(|| format!("{id:?} never sent"))?;
                            if !response.success
                                || response.data.get("payload")
                                    != Some(rmpv::Value::Binary(body.clone()))
                            {
                                return Err(format!("{id:?} wrong answer: {:?}", response.error));
                            }
                            answered += 1;
                        }
                        ClientEvent::RequestFailed { id, error } => {
                            return Err(format!("{id:?} failed: {error}"));
                        }
                        _ => {}
                    }
                }
            }
        }
        if w.responder.duplicates != 0 {
            return Err(format!("{} duplicate answers", w.responder.duplicates));
        }
        if peak > total + frame {
            return Err(format!("{peak} bytes reserved at peak, budget {total}"));
        }
        if !parked_seen {
            return Err("no stream ever waited for budget: the test did not exercise it".into());
        }
        let left = w.server(s).reserved_request_bytes();
        if left != 0 {
            return Err(format!("{left} bytes still reserved after every answer"));
        }
        Ok(())
    });
}

/// Every way a validator abandons a query — cancelling a unary request the miner is still
/// working on, dropping a streaming response mid-stream, letting a request time out — must
/// give the stream's credit back on both sides. Otherwise the connection stops admitting
/// requests after `max_concurrent_bidi_streams` abandoned ones.
#[test]
fn ten_thousand_abandoned_queries_leave_the_connection_usable() {
    let (mut w, s, c) = connected_pair(31);
    let rounds = 100;
    let per_round = 100;
    for round in 0..rounds {
        let mut ids = Vec::with_capacity(per_round);
        for i in 0..per_round {
            let id = match i % 3 {
                // The miner never answers `slow`: the client cancels it while it is handled.
                0 => request(
                    &mut w,
                    c,
                    "slow",
                    DataMap::default(),
                    RequestOptions::default(),
                ),
                // A stream far longer than the client will read. (Chunks of a few KiB:
                // quinn looks up unacknowledged data by a linear scan over its segments,
                // which makes thousands of tiny in-flight chunks slow to simulate.)
                1 => request(
                    &mut w,
                    c,
                    "stream",
                    data(&[("n", 1_000_000u64.into()), ("size", 4096u64.into())]),
                    RequestOptions {
                        streaming: true,
                        ..Default::default()
                    },
                ),
                // A client-side timeout, which aborts the stream like a cancel.
                _ => request(
                    &mut w,
                    c,
                    "slow",
                    DataMap::default(),
                    RequestOptions {
                        timeout: Some(Duration::from_millis(30)),
                        ..Default::default()
                    },
                ),
            };
            ids.push((i % 3, id));
        }
        w.run_for(Duration::from_millis(40));
        let now = w.sim.now();
        for (kind, id) in ids {
            if kind != 2 {
                w.client(c).cancel(now, id);
            } else if !matches!(
                w.outcome(c, id),
                Some(ClientEvent::RequestFailed {
                    error: ClientError::Timeout(_),
                    ..
                })
            ) {
                panic!(
                    "round {round}: request {id:?} did not time out: {:?}",
                    w.outcome(c, id)
                );
            }
        }
        w.events(c).clear();
        w.run_for(Duration::from_millis(20));
    }
    // Everything abandoned has left the miner's tables…
    w.run_until(10 * SECOND, |w| w.server(s).requests_in_flight() == 0);
    assert_eq!(w.server(s).queued_bytes(), 0);
    // …and the connection still answers at once.
    if let Err(e) = echo_round_trip(&mut w, c, "still here") {
        panic!("after 10 000 abandoned queries: {e}");
    }
}

/// Requests a handler holds count against the queued-answer cap until they are answered:
/// a validator cannot make the miner hold more request bytes than the cap plus the frames
/// being read when it is reached by sending many large requests to a slow handler (their
/// read budget is given back once their frames are read). Answering them lets the rest
/// in; every request is answered once.
#[test]
fn requests_with_a_slow_handler_count_against_the_queued_answer_cap() {
    let cap = 2 * 1024 * 1024;
    let reading = 1024 * 1024;
    let config = ServerConfig {
        max_queued_response_bytes_per_connection: cap,
        max_request_bytes_per_connection: reading,
        ..ServerConfig::default()
    };
    let (mut w, s, c) = pair_with_server_config(37, config);
    connect(&mut w, c, &[miner_hotkey()]);
    let hk = miner_hotkey();
    w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
    let size = 128 * 1024;
    let count = 64;
    let ids: Vec<_> = (0..count)
        .map(|n| {
            request(
                &mut w,
                c,
                "slow",
                payload_data(vec![n as u8; size]),
                RequestOptions::default(),
            )
        })
        .collect();
    w.run_for(5 * SECOND);
    let held = |w: &World| {
        w.responder
            .events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Request(r) => Some(r.id),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let first = held(&w);
    // The cap's worth, plus what was being read when it was reached, plus one frame.
    let bound = (cap + reading) as usize / size + 1;
    assert!(
        first.len() >= cap as usize / size && first.len() <= bound,
        "{} of {count} requests of {size} bytes handed to a handler that answers none \
         (cap {cap}, reading {reading}: between {} and {bound} expected)",
        first.len(),
        cap as usize / size
    );
    // Answer as they come: the rest get in, and every query has its own answer.
    let mut answered = std::collections::HashSet::new();
    w.run_until(60 * SECOND, |w| {
        let now = w.sim.now();
        let pending: Vec<_> = w
            .responder
            .events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Request(r) if !answered.contains(&r.id) => {
                    Some((r.id, r.data.clone()))
                }
                _ => None,
            })
            .collect();
        for (id, data) in pending {
            w.server(s).respond::<()>(now, id, Ok(data)).unwrap();
            answered.insert(id);
        }
        ids.iter().all(|id| w.outcome(c, *id).is_some())
    });
    for (n, id) in ids.iter().enumerate() {
        match w.outcome(c, *id) {
            Some(ClientEvent::Response { response, .. }) => assert_eq!(
                response.data.get("payload"),
                Some(rmpv::Value::Binary(vec![n as u8; size])),
                "query {n} got another query's answer"
            ),
            other => panic!("query {n}: {other:?}"),
        }
    }
    assert_eq!(w.responder.duplicates, 0);
    w.run_until(10 * SECOND, |w| w.server(s).queued_bytes() == 0);
}

/// One echo of `text` on `c`'s connection, answered within 5 s.
fn echo_round_trip(
    w: &mut World,
    c: lightning_proto::sim::NodeId,
    text: &str,
) -> Result<(), String> {
    let id = request(
        w,
        c,
        "echo",
        data(&[("prompt", text.into())]),
        RequestOptions::default(),
    );
    match wait_outcome(w, c, id, 5 * SECOND) {
        ClientEvent::Response { response, .. }
            if response.success && response.data.get("prompt") == Some(text.into()) =>
        {
            Ok(())
        }
        other => Err(format!("echo of {text:?}: {other:?}")),
    }
}

/// At `max_connections`, a new validator gets in by evicting a connection that has been
/// idle, throwaway hotkeys first holding the table; while every connection is busy, the
/// newcomer is refused as before.
#[test]
fn a_full_table_admits_a_newcomer_by_evicting_the_longest_idle_connection() {
    let mut w = World::new(27);
    w.sim.set_default_link(lan());
    let config = ServerConfig {
        max_connections: 3,
        evict_idle_after: Some(2 * SECOND),
        ..ServerConfig::default()
    };
    let s = w.add_server(SERVER, config, MINER_SEED);
    let hk = miner_hotkey();
    let mut holders = Vec::new();
    for i in 0..3u8 {
        let mut seed = VALIDATOR_SEED;
        seed[0] ^= 0x40 + i;
        let c = w.make_client(ClientConfig::default(), seed, 0);
        let c = w.add_client(&format!("10.0.1.{}:4000", i + 1), c);
        connect(&mut w, c, std::slice::from_ref(&hk));
        w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
        holders.push(c);
        w.run_for(Duration::from_millis(100));
    }
    // Every holder has a request in flight: nobody may be evicted.
    let busy: Vec<_> = holders
        .iter()
        .map(|&c| {
            let now = w.sim.now();
            let id = w
                .client(c)
                .request(
                    now,
                    addr(SERVER),
                    &hk,
                    "slow",
                    DataMap::default(),
                    RequestOptions::default(),
                )
                .unwrap();
            (c, id)
        })
        .collect();
    w.run_for(3 * SECOND);
    let newcomer = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let newcomer = w.add_client("10.0.2.1:4000", newcomer);
    connect(&mut w, newcomer, std::slice::from_ref(&hk));
    w.run_until(15 * SECOND, |w| w.handshake_failure(newcomer).is_some());
    assert_eq!(w.server(s).stats().evicted, 0);
    // The holders' requests end; after the idle time the oldest-idle holder makes room.
    for (c, id) in busy {
        let now = w.sim.now();
        w.client(c).cancel(now, id);
    }
    w.run_for(Duration::from_millis(50));
    let now = w.sim.now();
    w.client(newcomer)
        .forget_hotkey(now, addr(SERVER), &hk, "retry");
    w.events(newcomer).clear();
    w.run_for(3 * SECOND);
    connect(&mut w, newcomer, std::slice::from_ref(&hk));
    w.run_until(10 * SECOND, |w| w.authenticated(newcomer, &hk));
    assert_eq!(w.server(s).stats().evicted, 1);
    // The close reaches the evicted holder one link delay later.
    w.run_for(Duration::from_millis(100));
    let evicted: Vec<_> = holders
        .iter()
        .filter(|&&c| {
            w.events(c).iter().any(|e| {
                matches!(e, ClientEvent::ConnectionLost { reason, .. } if reason.to_string().contains("evicted"))
            })
        })
        .collect();
    assert_eq!(
        evicted,
        vec![&holders[0]],
        "the first holder was idle longest"
    );
    assert_eq!(w.server(s).validators().count(), 3);
}

/// quinn reuses a closed connection's handle for the next connection. A deadline set for
/// the old connection (its dial timeout) must not fire on the new one: a miner dialled
/// just before the old deadline would fail at once instead of after `connect_timeout`.
#[test]
fn a_stale_dial_deadline_does_not_fail_a_newer_connection_on_the_same_handle() {
    let (mut w, _s, c) = connected_pair(28);
    let first_dial = w.sim.now();
    let now = w.sim.now();
    w.client(c).disconnect(now, addr(SERVER), "done");
    // Until just before the first connection's dial deadline (10 s after it started).
    let connect_timeout = ClientConfig::default().connect_timeout;
    w.run_for(connect_timeout - 2 * SECOND);
    // A miner that never answers: nothing listens there.
    let silent = addr("10.0.0.99:8443");
    let dialled = w.sim.now();
    let now = w.sim.now();
    w.client(c).connect(now, silent, [miner_hotkey()]).unwrap();
    w.run_until(2 * connect_timeout, |w| w.handshake_failure(c).is_some());
    let failed_after = w.sim.now() - dialled;
    assert!(
        failed_after >= connect_timeout,
        "the silent miner failed {failed_after:?} after its dial ({:?} after the first \
         connection's): {:?}",
        w.sim.now() - first_dial,
        w.handshake_failure(c)
    );
}

/// The drive contract (`lightning_proto::endpoint::SansIo`) lets a driver interleave
/// `poll_transmit`, `poll_event` and early `poll_timeout` reads in any order, as long as
/// the deadline is read again after the last transmit. Every node here does that in an
/// order drawn from the seed, on a lossy, duplicating, reordering link, with echoes of
/// mixed sizes and short streams in flight together: each request still ends exactly
/// once, with the right answer.
#[test]
fn every_request_is_answered_once_whatever_the_drain_order() {
    run_seeds(6, |seed| {
        let mut w = World::new(seed);
        w.shuffle_drains(seed.rotate_left(17));
        w.sim.set_default_link(lan());
        w.add_server(SERVER, ServerConfig::default(), MINER_SEED);
        let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
        let c = w.add_client(CLIENT, c);
        connect(&mut w, c, &[miner_hotkey()]);
        let hk = miner_hotkey();
        w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
        w.sim.set_default_link(LinkConditions {
            latency: Duration::from_millis(5),
            jitter: Duration::from_micros(100),
            loss: 0.05,
            duplicate: 0.02,
            reorder: 0.02,
            reorder_delay: Duration::from_millis(3),
            ..LinkConditions::perfect()
        });
        let mut rng = w.sim.derive_rng();
        // What each request must end with: an echo's body, or a stream's chunk count.
        let mut expected: HashMap<lightning_proto::endpoint::QueryId, Result<Vec<u8>, u64>> =
            HashMap::new();
        let mut chunks: HashMap<lightning_proto::endpoint::QueryId, u64> = HashMap::new();
        let total = 300usize;
        let (mut sent, mut ended) = (0usize, 0usize);
        while ended < total {
            while sent < total && sent - ended < 32 {
                use rand_core::RngCore;
                if rng.next_u32() % 4 == 0 {
                    let n = 1 + u64::from(rng.next_u32() % 20);
                    let id = request(
                        &mut w,
                        c,
                        "stream",
                        data(&[("n", n.into()), ("size", 200u64.into())]),
                        RequestOptions {
                            streaming: true,
                            ..Default::default()
                        },
                    );
                    expected.insert(id, Err(n));
                } else {
                    let body = vec![(sent % 251) as u8; 1 << (6 + rng.next_u32() % 12)];
                    let id = request(
                        &mut w,
                        c,
                        "echo",
                        payload_data(body.clone()),
                        RequestOptions::default(),
                    );
                    expected.insert(id, Ok(body));
                }
                sent += 1;
            }
            w.run_until(60 * SECOND, |w| !w.events(c).is_empty());
            for ev in std::mem::take(w.events(c)) {
                match ev {
                    ClientEvent::Response { id, response, .. } => {
                        let want = expected
                            .remove(&id)
                            .ok_or_else(|| format!("{id:?} ended twice or never sent"))?;
                        let Ok(body) = want else {
                            return Err(format!("{id:?}: a stream got a unary response"));
                        };
                        if !response.success
                            || response.data.get("payload") != Some(rmpv::Value::Binary(body))
                        {
                            return Err(format!("{id:?}: wrong echo {:?}", response.error));
                        }
                        ended += 1;
                    }
                    ClientEvent::Chunk { id, .. } => {
                        *chunks.entry(id).or_default() += 1;
                        let now = w.sim.now();
                        w.client(c).consume_chunks(now, id, 1);
                    }
                    ClientEvent::StreamEnd { id, .. } => {
                        let want = expected
                            .remove(&id)
                            .ok_or_else(|| format!("{id:?} ended twice or never sent"))?;
                        let got = chunks.remove(&id).unwrap_or(0);
                        if want != Err(got) {
                            return Err(format!("{id:?}: {got} chunks, wanted {want:?}"));
                        }
                        ended += 1;
                    }
                    ClientEvent::RequestFailed { id, error } => {
                        return Err(format!("{id:?} failed: {error}"));
                    }
                    _ => {}
                }
            }
        }
        if !expected.is_empty() || w.responder.duplicates != 0 {
            return Err(format!(
                "left {}, duplicates {}",
                expected.len(),
                w.responder.duplicates
            ));
        }
        if w.sim.stats().lost.datagrams == 0 {
            return Err("the network did not actually lose anything".into());
        }
        Ok(())
    });
}

/// Dials the miner with a first query at once, on a 20 ms one-way link, and returns the
/// time to its answer in round trips, with `pipeline` as the client's
/// `pipeline_first_requests`, and the answer.
fn first_answer_in_rtts(seed: u64, pipeline: bool, server: ServerConfig) -> (f64, ClientEvent) {
    let one_way = Duration::from_millis(20);
    let mut w = World::new(seed);
    w.sim.set_default_link(LinkConditions {
        latency: one_way,
        ..LinkConditions::perfect()
    });
    w.add_server(SERVER, server, MINER_SEED);
    let config = ClientConfig {
        pipeline_first_requests: pipeline,
        ..ClientConfig::default()
    };
    let c = w.make_client(config, VALIDATOR_SEED, 0);
    let c = w.add_client(CLIENT, c);
    let start = w.sim.elapsed();
    let id = request(
        &mut w,
        c,
        "echo",
        data(&[("k", 7u64.into())]),
        RequestOptions::default(),
    );
    let outcome = wait_outcome(&mut w, c, id, 10 * SECOND);
    let rtts = (w.sim.elapsed() - start).as_secs_f64() / (2.0 * one_way.as_secs_f64());
    (rtts, outcome)
}

/// Issue 15's setup goal: against a Lightning miner the first query travels right behind
/// the handshake (both ends negotiated `PIPELINE_ALPN`) and is answered after 2 round
/// trips (QUIC + TLS, then handshake and query together) instead of 3.
#[test]
fn a_pipelined_first_query_is_answered_after_two_round_trips() {
    let (pipelined, outcome) = first_answer_in_rtts(41, true, ServerConfig::default());
    let ClientEvent::Response { response, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(response.success);
    let (waited, _) = first_answer_in_rtts(41, false, ServerConfig::default());
    assert!(pipelined < 2.5, "pipelined: {pipelined:.2} RTT");
    assert!(waited >= 2.5, "not pipelined: {waited:.2} RTT");
}

/// A pipelined query behind a handshake the miner refuses is refused at once with
/// `authentication failed`, like any unauthenticated request, not left to time out.
#[test]
fn a_pipelined_query_behind_a_refused_handshake_is_refused_at_once() {
    let server = ServerConfig {
        require_validator_permit: true,
        ..ServerConfig::default()
    };
    let (rtts, outcome) = first_answer_in_rtts(42, true, server);
    let outcome_text = format!("{outcome:?}");
    match outcome {
        ClientEvent::Response { response, .. } => {
            assert!(!response.success);
            assert_eq!(
                response.error.as_deref(),
                Some(lightning_proto::endpoint::wire_errors::AUTHENTICATION_FAILED)
            );
        }
        ClientEvent::RequestFailed { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(rtts < 3.0, "{rtts:.2} RTT: {outcome_text}");
}

/// The path MTU both ends reach after one 256 KB echo between `server` and `client` over
/// `link`: (validator's, miner's) current UDP payload ceiling.
fn mtu_after_an_echo(
    seed: u64,
    server: &str,
    client: &str,
    link: LinkConditions,
    settle: Duration,
) -> ((u16, u64), (u16, u64)) {
    let mut w = World::new(seed);
    w.sim.set_default_link(link);
    let s = w.add_server(server, ServerConfig::default(), MINER_SEED);
    let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c = w.add_client(client, c);
    let hk = miner_hotkey();
    let now = w.sim.now();
    w.client(c)
        .connect(now, addr(server), [hk.clone()])
        .unwrap();
    w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
    let body = vec![7u8; 256 * 1024];
    let id = request_to(
        &mut w,
        c,
        server,
        "echo",
        payload_data(body.clone()),
        RequestOptions::default(),
    );
    match wait_outcome(&mut w, c, id, 10 * SECOND) {
        ClientEvent::Response { response, .. }
            if response.success
                && response.data.get("payload") == Some(rmpv::Value::Binary(body)) => {}
        other => panic!("echo over {server}: {other:?}"),
    }
    // MTU discovery runs beside the traffic; give its last probes time to settle.
    w.run_for(settle);
    let validator = w.client(c).connection_stats(addr(server)).unwrap();
    let miner = w.server(s).connection_stats().next().unwrap().1;
    (
        (
            validator.path.current_mtu,
            validator.path.sent_plpmtud_probes,
        ),
        (miner.path.current_mtu, miner.path.sent_plpmtud_probes),
    )
}

/// Towards a peer on a loopback address both ends send 64 KiB datagrams (what a loopback
/// device carries) from the start, so a validator and a miner on one host exchange a
/// fraction of the packets; towards any other host the ceiling stays at quinn's 1,452
/// bytes, even where the link would carry more, because probes far above an Ethernet
/// path's MTU hold back data. Where a loopback path carries less (macOS: 16 KiB), the
/// answers still arrive: black-hole detection drops the packets to 1,200 bytes, and after
/// quinn's one-minute cooldown discovery finds the path's size.
#[test]
fn packets_grow_to_the_loopback_mtu_only_towards_a_loopback_peer() {
    let wide = || LinkConditions {
        latency: Duration::from_millis(1),
        ..LinkConditions::perfect()
    };
    let (validator, miner) =
        mtu_after_an_echo(51, "127.0.0.1:8443", "127.0.0.1:40000", wide(), 2 * SECOND);
    // From the start, without a probe: each costs its receiver ~1.3 ms of CPU.
    assert_eq!(
        (validator, miner),
        ((LOOPBACK_MAX_UDP_PAYLOAD, 0), (LOOPBACK_MAX_UDP_PAYLOAD, 0)),
        "loopback: (MTU, probes sent)"
    );
    let ((validator, _), (miner, _)) = mtu_after_an_echo(52, SERVER, CLIENT, wide(), 2 * SECOND);
    assert_eq!(
        (validator, miner),
        (DEFAULT_MAX_UDP_PAYLOAD, DEFAULT_MAX_UDP_PAYLOAD),
        "another host"
    );
    let narrow = LinkConditions {
        mtu: 16_384,
        ..wide()
    };
    let ((validator, _), (miner, _)) =
        mtu_after_an_echo(53, "127.0.0.1:8443", "127.0.0.1:40000", narrow, 70 * SECOND);
    assert!(
        (8_000..=16_384).contains(&validator) && (8_000..=16_384).contains(&miner),
        "16 KiB loopback: {validator} / {miner} bytes"
    );
}

/// 64 KiB packets towards a loopback peer must not hold back queries. When connections
/// still probed up to that size, quinn counted each probe against the congestion window
/// until it was acknowledged or lost: with Cubic's 14,720-byte start the first query took
/// 5.1 RTT. Now they start at it: the pipelined first query is answered after 2 RTT and
/// the next 1 KB queries after one each. Behind a loopback address with a 1,500-byte path
/// (a local relay or port forward) the first large datagrams are lost until black-hole
/// detection drops the packet size (10.25 RTT for the first query here), and the next
/// queries take one RTT each.
#[test]
fn loopback_packet_size_does_not_hold_back_queries() {
    let one_way = Duration::from_millis(20);
    for (seed, mtu) in [(61, 1_500), (62, 65_527)] {
        let mut w = World::new(seed);
        w.sim.set_default_link(LinkConditions {
            latency: one_way,
            mtu,
            ..LinkConditions::perfect()
        });
        let server = "127.0.0.1:8443";
        w.add_server(server, ServerConfig::default(), MINER_SEED);
        let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
        let c = w.add_client("127.0.0.1:40000", c);
        let mut rtts = Vec::new();
        for n in 0..5u8 {
            let start = w.sim.elapsed();
            let id = request_to(
                &mut w,
                c,
                server,
                "echo",
                payload_data(vec![n; 1024]),
                RequestOptions::default(),
            );
            let outcome = wait_outcome(&mut w, c, id, 10 * SECOND);
            assert!(
                matches!(&outcome, ClientEvent::Response { response, .. } if response.success),
                "{outcome:?}"
            );
            rtts.push((w.sim.elapsed() - start).as_secs_f64() / (2.0 * one_way.as_secs_f64()));
        }
        let first_limit = if mtu < 2_000 { 15.0 } else { 2.5 };
        assert!(
            rtts[0] < first_limit && rtts[1..].iter().all(|r| *r < 1.5),
            "path MTU {mtu}: answers after {rtts:.2?} RTT"
        );
    }
}
