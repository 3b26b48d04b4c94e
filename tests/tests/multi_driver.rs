//! Several endpoint drivers behind one port (issue 16, `docs/multi-driver.md`): real UDP,
//! TLS and sr25519 against a miner started with `ServerBuilder::drivers(2)`.
//!
//! Which driver serves a new connection follows a keyed hash of the client's first
//! connection ID, so a test that needs both drivers involved either opens enough
//! connections that both are used with overwhelming probability (and says so), or keeps
//! opening them until the per-driver counters show it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "adversarial/attack.rs"]
#[allow(dead_code)]
mod attack;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use attack::{attacker_ip, signed_handshake, AgentSpec, Attack, Auth, Rng, Stage, Then};
use lightning_driver::{
    ClientBuilder, DataMap, Keypair, LightningClient, LightningServer, QuicAxonInfo, QuicRequest,
    ServerBuilder, ServerSnapshot,
};
use lightning_netem::{Profile, Relay};
use lightning_tests::{basic_server, payload, tokio_block_on, MINER_SEED};
use lightning_tokio::Tokio;

const DRIVERS: usize = 2;

fn miner() -> ServerBuilder<Tokio> {
    basic_server(Tokio::default(), MINER_SEED).drivers(DRIVERS)
}

fn validator(seed: u8, ip: IpAddr) -> LightningClient {
    ClientBuilder::<Tokio>::new()
        .seed([seed; 32])
        .bind_addr(SocketAddr::new(ip, 0))
        .build()
        .expect("client")
}

fn axon(server: &LightningServer) -> QuicAxonInfo {
    QuicAxonInfo::from_addr(server.hotkey(), server.local_addr())
}

async fn echo(client: &LightningClient, axon: &QuicAxonInfo, n: usize) {
    let request = QuicRequest::new("echo", payload(n));
    let response = client
        .query_axon(axon, request)
        .await
        .expect("echo answered");
    assert!(response.success, "{response:?}");
    assert_eq!(response.data, payload(n));
}

/// Runs `queries` echoes of `size(n)` bytes (n = 0, 1, ...) on each client at once, each
/// client on a task of its own, and waits until all are answered.
async fn echo_from_each<'a>(
    clients: impl IntoIterator<Item = &'a LightningClient>,
    axon: &QuicAxonInfo,
    queries: usize,
    size: fn(usize) -> usize,
) {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let (c, axon) = (c.clone(), axon.clone());
            tokio::spawn(async move {
                for n in 0..queries {
                    echo(&c, &axon, size(n)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every driver serves a connection, and the drivers' shares of requests and connections
/// add up to the server's totals (`requests` of them).
fn assert_spread_and_summed(s: &ServerSnapshot, requests: u64) {
    assert_eq!(s.drivers.len(), DRIVERS);
    for (i, d) in s.drivers.iter().enumerate() {
        assert!(
            d.connections > 0,
            "driver {i} served nothing: {:?}",
            s.drivers
        );
    }
    let per_driver: u64 = s.drivers.iter().map(|d| d.stats.requests).sum();
    assert_eq!(per_driver, requests);
    let connections: usize = s.drivers.iter().map(|d| d.connections).sum();
    assert_eq!(connections, s.connections);
}

/// Polls the server until `done` holds (or `limit` passes), returning the last snapshot.
async fn until(
    server: &LightningServer,
    limit: Duration,
    done: impl Fn(&ServerSnapshot) -> bool,
) -> ServerSnapshot {
    let start = Instant::now();
    loop {
        let s = server.stats().await.unwrap();
        if done(&s) || start.elapsed() > limit {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 64 validators from 8 source addresses, 10 queries each: every query is answered, the
/// connections are spread over both drivers (all 64 on one has probability 2^-63), and the
/// server's stats and metrics are the sums of the drivers'.
#[test]
fn sixty_four_validators_are_all_answered_and_counted_across_drivers() {
    tokio_block_on(async {
        let server = miner().start().await.unwrap();
        assert_eq!(server.drivers(), DRIVERS);
        let axon = axon(&server);
        let clients: Vec<LightningClient> = (0..64u8)
            .map(|i| validator(i + 1, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i % 8))))
            .collect();
        echo_from_each(&clients, &axon, 10, |n| 100 + n).await;

        let s = server.stats().await.unwrap();
        assert_eq!(s.connections, 64, "{s:?}");
        assert_eq!(s.validators.len(), 64);
        assert_eq!(s.stats.handshakes_ok, 64);
        assert_eq!(s.stats.requests, 640);
        assert_spread_and_summed(&s, 640);

        let m = server.metrics().await.unwrap();
        assert_eq!(m.synapse("echo").unwrap().ok, 640);
        assert_eq!(m.connections, 64);
        assert_eq!(m.validators, 64);
        assert_eq!(m.stats.requests, 640);
        assert!(
            m.io.datagrams_in >= 640 && m.io.datagrams_out >= 640,
            "{:?}",
            m.io
        );
        assert_eq!(m.path.connections, 64);
        let text = server.metrics_text().await.unwrap();
        assert!(
            text.contains("lightning_server_requests_total{synapse=\"echo\",outcome=\"ok\"} 640"),
            "{text}"
        );
        server.stop().await.unwrap();
    });
}

/// A validator's handshake, accepted once, is replayed verbatim on 32 new connections
/// from 16 addresses: whichever driver receives a replay refuses it, because the nonce
/// cache is the group's.
#[test]
fn a_handshake_replayed_to_another_driver_is_refused() {
    tokio_block_on(async {
        let server = miner().start().await.unwrap();
        let victim = Keypair::from_seed(&[0x51; 32]);
        let captured = signed_handshake(&victim, server.fingerprint(), &mut Rng::new(3));
        let original = Attack::start(
            server.local_addr(),
            Stage {
                agents: vec![AgentSpec::new(
                    attacker_ip(0),
                    Auth::Raw(captured.clone()),
                    Then::Hold,
                )],
                ..Stage::default()
            },
        );
        let s = until(&server, Duration::from_secs(10), |s| {
            s.stats.handshakes_ok == 1
        })
        .await;
        assert_eq!(s.stats.handshakes_ok, 1, "the original was not accepted");
        let owner = s
            .drivers
            .iter()
            .position(|d| d.stats.handshakes_ok == 1)
            .unwrap();

        let replayers: Vec<AgentSpec> = (1..=16)
            .map(|i| {
                AgentSpec::new(attacker_ip(i), Auth::Raw(captured.clone()), Then::Hold)
                    .connections(2)
                    .reconnect_delay(Duration::from_millis(50))
            })
            .collect();
        let replay = Attack::start(
            server.local_addr(),
            Stage {
                agents: replayers,
                ..Stage::default()
            },
        );
        let s = until(&server, Duration::from_secs(15), |s| {
            s.drivers
                .iter()
                .enumerate()
                .any(|(i, d)| i != owner && d.stats.handshakes_rejected > 0)
        })
        .await;
        let counters = replay.stop();
        original.stop();
        eprintln!("drivers: {:?}", s.drivers);
        assert_eq!(counters.get("hs_accepted"), 0, "a replay was accepted");
        assert!(counters.get("hs_rejected") > 0);
        assert_eq!(s.stats.handshakes_ok, 1);
        assert!(
            s.drivers
                .iter()
                .enumerate()
                .any(|(i, d)| i != owner && d.stats.handshakes_rejected > 0),
            "no replay reached the other driver: {:?}",
            s.drivers
        );
        server.stop().await.unwrap();
    });
}

/// With 10 handshakes a minute allowed per IP, 24 connections from one address with
/// distinct hotkeys get exactly 10 accepted in all, though both drivers take some.
#[test]
fn the_per_ip_handshake_rate_holds_across_drivers() {
    tokio_block_on(async {
        let server = miner()
            .configure(|c| c.max_handshake_attempts_per_minute = 10)
            .start()
            .await
            .unwrap();
        let keys: Vec<Keypair> = (0..24u8)
            .map(|i| Keypair::from_seed(&[0x60 + i; 32]))
            .collect();
        let agent = AgentSpec::new(attacker_ip(40), Auth::Valid, Then::Hold)
            .connections(24)
            .keys(keys)
            .reconnect_delay(Duration::from_millis(200));
        let attack = Attack::start(
            server.local_addr(),
            Stage {
                agents: vec![agent],
                ..Stage::default()
            },
        );
        let s = until(&server, Duration::from_secs(15), |s| {
            s.stats.handshakes_ok + s.stats.handshakes_rejected >= 24
        })
        .await;
        let counters = attack.stop();
        eprintln!("drivers: {:?}", s.drivers);
        assert_eq!(s.stats.handshakes_ok, 10, "{:?}", s.stats);
        assert_eq!(counters.get("hs_accepted"), 10);
        assert!(s.stats.handshakes_rejected >= 14);
        // All 24 first connections on one driver has probability 2^-23.
        for (i, d) in s.drivers.iter().enumerate() {
            assert!(
                d.stats.handshakes_ok + d.stats.handshakes_rejected > 0,
                "driver {i} saw no handshake: {:?}",
                s.drivers
            );
        }
        server.stop().await.unwrap();
    });
}

/// A validator hotkey that authenticates on a connection served by the other driver
/// replaces its old connection there (PROTOCOL §13.6): the old one is closed and the
/// hotkey counts once.
#[test]
fn a_hotkey_moving_to_the_other_driver_replaces_its_old_connection() {
    tokio_block_on(async {
        let server = miner().start().await.unwrap();
        let axon = axon(&server);
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let first = validator(0x33, localhost);
        echo(&first, &axon, 10).await;
        let s = server.stats().await.unwrap();
        let home = s
            .drivers
            .iter()
            .position(|d| d.stats.handshakes_ok == 1)
            .unwrap();
        // New clients with the same key until one lands on the other driver (each try
        // has probability 1/2; 40 tries all failing, 2^-40).
        let mut clients = vec![first];
        let mut moved = false;
        for _ in 0..40 {
            let c = validator(0x33, localhost);
            echo(&c, &axon, 10).await;
            clients.push(c);
            let s = server.stats().await.unwrap();
            if s.drivers
                .iter()
                .enumerate()
                .any(|(i, d)| i != home && d.stats.handshakes_ok > 0)
            {
                moved = true;
                break;
            }
        }
        assert!(moved, "no connection reached the other driver");
        let s = until(&server, Duration::from_secs(5), |s| s.connections == 1).await;
        assert_eq!(
            s.connections, 1,
            "old connections left open: {:?}",
            s.drivers
        );
        assert_eq!(s.validators.len(), 1);
        let m = server.metrics().await.unwrap();
        assert_eq!(m.validators, 1);
        // The newest client is the one still connected and answered.
        echo(clients.last().unwrap(), &axon, 20).await;
        let s = server.stats().await.unwrap();
        assert_eq!(s.stats.handshakes_ok as usize, clients.len());
        server.stop().await.unwrap();
    });
}

/// A validator whose source port changes twice mid-conversation (a NAT rebinding, through
/// the WAN emulator) keeps its connection and its authentication: datagrams follow the
/// connection ID to the driver that owns it, whatever address they come from.
#[test]
fn a_rebinding_validator_keeps_its_connection_with_two_drivers() {
    tokio_block_on(async {
        let server = miner().start().await.unwrap();
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr(),
            Profile::Lan.config(1),
        )
        .unwrap();
        let client = validator(0x44, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let axon = QuicAxonInfo::from_addr(server.hotkey(), relay.local_addr());
        for n in 0..20 {
            echo(&client, &axon, 50 + n).await;
        }
        for round in 0..2 {
            let moved = relay.handle().rebind_all().unwrap();
            assert_eq!(moved.len(), 1, "round {round}");
            for n in 0..20 {
                echo(&client, &axon, 50 + n).await;
            }
        }
        let s = server.stats().await.unwrap();
        assert_eq!(s.stats.accepted, 1, "a new connection: {:?}", s.stats);
        assert_eq!(s.stats.handshakes_ok, 1);
        assert_eq!(s.stats.requests, 60);
        assert_eq!(s.connections, 1);
        assert_eq!(relay.stats().rebinds, 2);
        server.stop().await.unwrap();
    });
}

/// Handlers registered on the running server reach every driver with the same index:
/// validators on both drivers are answered by the new handler, and unregistering it
/// answers `unrecognized synapse type` everywhere.
#[test]
fn handlers_registered_at_runtime_reach_every_driver() {
    tokio_block_on(async {
        let server = miner().start().await.unwrap();
        let axon = axon(&server);
        let replaced = server
            .register_handler("late", |data: DataMap, _ctx| Ok::<_, String>(data))
            .await
            .unwrap();
        assert!(!replaced);
        let clients: Vec<LightningClient> = (0..16u8)
            .map(|i| validator(0x70 + i, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20 + i))))
            .collect();
        for c in &clients {
            let r = c
                .query_axon(&axon, QuicRequest::new("late", payload(8)))
                .await
                .unwrap();
            assert!(r.success, "{r:?}");
        }
        let s = server.stats().await.unwrap();
        // 16 connections all on one driver has probability 2^-15.
        assert!(
            s.drivers.iter().all(|d| d.connections > 0),
            "{:?}",
            s.drivers
        );
        assert!(server.unregister_handler("late").await.unwrap());
        for c in &clients {
            let r = c
                .query_axon(&axon, QuicRequest::new("late", payload(8)))
                .await
                .unwrap();
            assert!(!r.success);
            assert_eq!(r.error.as_deref(), Some("unrecognized synapse type"));
        }
        server.stop().await.unwrap();
    });
}

/// `drivers(0)` and more than the maximum are refused with a clear error.
#[test]
fn an_impossible_driver_count_is_refused() {
    tokio_block_on(async {
        for n in [0, lightning_driver::MAX_DRIVERS + 1] {
            let err = miner().drivers(n).start().await.unwrap_err();
            assert!(
                err.to_string().contains("drivers must be between 1 and"),
                "{err}"
            );
        }
    });
}

/// 1 MB echoes from several validators at once, through the WAN emulator's `lan` path and
/// directly: every one is answered, whichever driver owns its connection.
///
/// Regression: the reading driver used to go to sleep after a receive batch that held only
/// other drivers' datagrams, without the socket having said `WouldBlock`, so nothing woke
/// it for its own connections' next datagrams; a large request then stalled until its
/// read timeout reset it (about one run in three of this test).
#[test]
fn one_megabyte_echoes_from_several_validators_with_two_drivers() {
    tokio_block_on(async {
        let server = miner().start().await.unwrap();
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr(),
            Profile::Lan.config(4),
        )
        .unwrap();
        for through_relay in [true, false] {
            let to = if through_relay {
                relay.local_addr()
            } else {
                server.local_addr()
            };
            let axon = QuicAxonInfo::from_addr(server.hotkey(), to);
            let clients: Vec<LightningClient> = (0..4u8)
                .map(|v| {
                    validator(
                        0x90 + v + 4 * u8::from(through_relay),
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                    )
                })
                .collect();
            echo_from_each(&clients, &axon, 3, |_| 1 << 20).await;
        }
        let s = server.stats().await.unwrap();
        assert_eq!(s.stats.requests, 24, "{:?}", s.stats);
        assert_eq!(s.stats.read_timeouts, 0);
        server.stop().await.unwrap();
    });
}

/// The reading role moves to the driver that gets most of the traffic and back: a lone
/// validator whose connection lives on the second driver sends thousands of queries (the
/// role moves to its driver after a 2,048-datagram window), then one on the first driver
/// does the same (and it moves back). Every query is answered: no hand-over leaves a
/// driver asleep with datagrams waiting.
#[test]
fn the_reading_role_follows_a_lone_validator_and_back() {
    tokio_block_on(async {
        let server = miner().start().await.unwrap();
        let axon = axon(&server);
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // A validator on each driver (each try lands on either with probability 1/2).
        let mut on = [None, None];
        for seed in 0xa0..0xe0u8 {
            if on.iter().all(Option::is_some) {
                break;
            }
            let before = server.stats().await.unwrap();
            let c = validator(seed, localhost);
            echo(&c, &axon, 16).await;
            let after = server.stats().await.unwrap();
            let landed = (0..DRIVERS)
                .find(|&i| after.drivers[i].stats.accepted > before.drivers[i].stats.accepted)
                .unwrap();
            if on[landed].is_none() {
                on[landed] = Some(c);
            }
        }
        let [Some(first), Some(second)] = on else {
            panic!("no validator landed on one of the drivers");
        };
        for c in [&second, &first] {
            // 8 tasks on the one client; two datagrams each way per query: past the
            // window several times.
            echo_from_each(std::iter::repeat_n(c, 8), &axon, 600, |n| 1300 + n % 200).await;
        }
        let s = server.stats().await.unwrap();
        assert!(s.stats.requests >= 9600, "{:?}", s.stats);
        assert_eq!(s.stats.read_timeouts, 0);
        server.stop().await.unwrap();
    });
}

/// The same group on smol (and so async-std): 32 validators on smol from 8 sources, 5
/// echoes each, against a smol miner with two drivers. Every echo is answered, both
/// drivers serve connections (all 32 on one has probability 2^-31), and the per-driver
/// shares add up to the totals.
#[test]
fn two_drivers_on_smol_answer_every_validator() {
    use lightning_smol::Smol;
    lightning_tests::smol_block_on(async {
        let server = basic_server(Smol::default(), MINER_SEED)
            .drivers(DRIVERS)
            .start()
            .await
            .unwrap();
        assert_eq!(server.drivers(), DRIVERS);
        let axon = axon(&server);
        let clients: Vec<LightningClient> = (0..32u8)
            .map(|i| {
                ClientBuilder::with_runtime(Smol::default())
                    .seed([0x40 + i; 32])
                    .bind_addr(SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i % 8)),
                        0,
                    ))
                    .build()
                    .expect("client")
            })
            .collect();
        let tasks: Vec<_> = clients
            .iter()
            .map(|c| {
                let (c, axon) = (c.clone(), axon.clone());
                smol::spawn(async move {
                    for n in 0..5 {
                        let response = c
                            .query_axon(&axon, QuicRequest::new("echo_async", payload(200 + n)))
                            .await
                            .expect("echo answered");
                        assert_eq!(response.data, payload(200 + n));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let s = server.stats().await.unwrap();
        assert_eq!(s.stats.requests, 160, "{:?}", s.stats);
        assert_eq!(s.connections, 32);
        assert_spread_and_summed(&s, 160);
        server.stop().await.unwrap();
    });
}
