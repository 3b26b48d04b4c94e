//! The loopback suite: real UDP sockets, real TLS, real sr25519, written once against the
//! runtime-neutral API and instantiated for each adapter by `tests/loopback.rs`.
//!
//! Each function builds its own server and client, so the tests are independent.

use std::time::{Duration, Instant};

use lightning_driver::error::ReconnectError;
use lightning_driver::{
    ClientBuilder, ConnectCause, DataMap, LightningClient, LightningError, QuicAxonInfo,
    QuicRequest, Runtime,
};

use crate::{axon_of, payload, sleep, standard_server, Signal, MINER_SEED, VALIDATOR_SEED};

fn client<R: Runtime>(runtime: R) -> LightningClient {
    ClientBuilder::with_runtime(runtime)
        .seed(VALIDATOR_SEED)
        .bind_addr(([127, 0, 0, 1], 0).into())
        .build()
        .expect("client")
}

fn stream_request(n: u64, chunk_size: u64) -> QuicRequest {
    let data = DataMap::from_values([
        ("n".to_string(), n.into()),
        ("chunk_size".to_string(), chunk_size.into()),
    ])
    .expect("string keys");
    QuicRequest::new("stream", data)
}

/// Echo at 256 B, 1 KB and 1 MB, through the sync and the async handler; the data comes
/// back byte-identical.
pub async fn echo_sizes<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    let report = client
        .initialize_connections([axon.clone()])
        .await
        .expect("connect");
    assert_eq!(report.authenticated, vec![axon.clone()], "{report:?}");
    for size in [256, 1024, 1 << 20] {
        for synapse in ["echo", "echo_async"] {
            let data = payload(size);
            let response = client
                .query_axon(&axon, QuicRequest::new(synapse, data.clone()))
                .await
                .expect("query")
                .into_result()
                .expect("success");
            assert_eq!(response.data, data, "{synapse} at {size} B");
        }
    }
    server.stop().await.expect("stop");
}

/// 256 queries in flight at once on one connection (twice the server's stream credit, so
/// half of them wait for credit); every one is answered with its own data.
pub async fn concurrent_queries<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    let queries = (0..256u32).map(|i| {
        let client = client.clone();
        let axon = axon.clone();
        async move {
            let data = DataMap::from_values([("i".to_string(), i.into())]).expect("key");
            let response = client
                .query_axon(&axon, QuicRequest::new("echo", data.clone()))
                .await
                .expect("query")
                .into_result()
                .expect("success");
            assert_eq!(response.data, data);
        }
    });
    join_all(queries).await;
    let stats = client.connection_stats().await.expect("stats");
    assert_eq!(stats.connections, 1, "one connection carries every query");
    assert_eq!(stats.requests_in_flight, 0);
    let snapshot = server.stats().await.expect("server stats");
    assert_eq!(snapshot.stats.requests, 256);
    server.stop().await.expect("stop");
}

/// A streaming response of 1,000 chunks arrives complete and in order.
pub async fn streaming_thousand_chunks<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    let stream = client
        .query_axon_stream(&axon, stream_request(1000, 512))
        .await
        .expect("stream");
    let chunks = stream.collect_all().await.expect("chunks");
    assert_eq!(chunks.len(), 1000);
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.len(), 512);
        assert!(chunk.iter().all(|b| *b == (i % 256) as u8), "chunk {i}");
    }
    server.stop().await.expect("stop");
}

/// The miner restarts on the same port (same key); the next query reconnects by itself.
pub async fn reconnect_after_server_restart<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let addr = server.local_addr();
    let client = client(runtime.clone());
    let axon = axon_of(&server);
    let data = payload(64);
    let first = client
        .query_axon(&axon, QuicRequest::new("echo", data.clone()))
        .await
        .expect("first query");
    assert!(first.success);
    server.stop().await.expect("stop");

    let server = standard_server(runtime.clone(), None)
        .bind_addr(addr)
        .start()
        .await
        .expect("restarted server");
    // The client learns of the restart from the close frame; a query may meet the
    // reconnect backoff (1 s) once, as with btlightning.
    let started = Instant::now();
    let response = loop {
        match client
            .query_axon(&axon, QuicRequest::new("echo", data.clone()))
            .await
        {
            Ok(r) => break r,
            Err(LightningError::Connect(ConnectCause::Reconnect(e)))
                if started.elapsed() < Duration::from_secs(10) =>
            {
                assert!(
                    matches!(
                        e,
                        ReconnectError::Backoff { .. } | ReconnectError::InProgress
                    ),
                    "{e}"
                );
                sleep(&runtime, Duration::from_millis(200)).await;
            }
            Err(e) => panic!("query after restart: {e}"),
        }
    };
    assert_eq!(response.into_result().expect("success").data, data);
    server.stop().await.expect("stop");
}

/// Dropping a query future cancels it on the wire: the handler sees the cancellation.
pub async fn dropped_query_cancels_handler<R: Runtime>(runtime: R) {
    let cancelled = Signal::default();
    let server = standard_server(runtime.clone(), Some(cancelled.clone()))
        .start()
        .await
        .expect("server");
    let client = client(runtime.clone());
    let axon = axon_of(&server);
    client
        .initialize_connections([axon.clone()])
        .await
        .expect("connect");
    let data = DataMap::from_values([("ms".to_string(), 10_000u64.into())]).expect("key");
    let query = client.query_axon(&axon, QuicRequest::new("slow", data));
    let finished_first = futures_lite::future::or(
        async {
            let _ = query.await;
            true
        },
        async {
            sleep(&runtime, Duration::from_millis(300)).await;
            false
        },
    )
    .await;
    assert!(!finished_first, "the slow handler cannot have answered");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cancelled.count() == 0 && Instant::now() < deadline {
        sleep(&runtime, Duration::from_millis(20)).await;
    }
    assert_eq!(cancelled.count(), 1, "the handler saw the cancellation");
    // The connection stays usable.
    let ok = client
        .query_axon(&axon, QuicRequest::new("echo", payload(8)))
        .await
        .expect("query after cancel");
    assert!(ok.success);
    server.stop().await.expect("stop");
}

/// A handler slower than `handler_timeout` is answered `handler timed out` by the server.
pub async fn handler_timeout<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .configure(|c| c.handler_timeout = Duration::from_millis(300))
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    let data = DataMap::from_values([("ms".to_string(), 5_000u64.into())]).expect("key");
    let response = client
        .query_axon(&axon, QuicRequest::new("slow", data))
        .await
        .expect("an answer");
    assert!(!response.success);
    assert_eq!(response.error.as_deref(), Some("handler timed out"));
    assert_eq!(
        response.into_result(),
        Err(LightningError::Remote("handler timed out".into()))
    );
    server.stop().await.expect("stop");
}

/// Unknown synapses, failing handlers and panicking handlers give the reference's strings,
/// and the connection stays usable after each.
pub async fn error_strings<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    for (synapse, expected) in [
        ("no_such_synapse", "unrecognized synapse type"),
        ("fail", "request processing failed"),
        ("panic", "request processing failed"),
        ("panic_async", "request processing failed"),
        ("panic_later", "request processing failed"),
    ] {
        let response = client
            .query_axon(&axon, QuicRequest::new(synapse, payload(16)))
            .await
            .expect("an answer");
        assert!(!response.success, "{synapse}");
        assert_eq!(response.error.as_deref(), Some(expected), "{synapse}");
    }
    let ok = client
        .query_axon(&axon, QuicRequest::new("echo", payload(16)))
        .await
        .expect("query");
    assert!(ok.success);
    server.stop().await.expect("stop");
}

/// A validator outside the permitted set is refused at the handshake; a permitted one is
/// served.
pub async fn permit_refused<R: Runtime>(runtime: R) {
    let permitted = lightning_driver::Identity::from_seed(&[0x33; 32])
        .hotkey()
        .to_string();
    let server = standard_server(runtime.clone(), None)
        .permit_resolver(Duration::from_secs(60), move || {
            let permitted = permitted.clone();
            async move { Ok::<_, String>([permitted].into_iter().collect()) }
        })
        .start()
        .await
        .expect("server");
    let axon = axon_of(&server);

    let refused = client(runtime.clone());
    let report = refused
        .initialize_connections([axon.clone()])
        .await
        .expect("report");
    assert!(report.authenticated.is_empty());
    assert_eq!(report.failed.len(), 1);
    assert!(
        matches!(report.failed[0].1, LightningError::Handshake(_)),
        "{:?}",
        report.failed[0].1
    );
    let err = refused
        .query_axon(&axon, QuicRequest::new("echo", payload(8)))
        .await
        .expect_err("refused validator cannot query");
    assert!(
        matches!(
            err,
            LightningError::Handshake(_) | LightningError::Connect(_)
        ),
        "{err}"
    );

    let allowed = ClientBuilder::with_runtime(runtime)
        .seed([0x33; 32])
        .bind_addr(([127, 0, 0, 1], 0).into())
        .build()
        .expect("client");
    let ok = allowed
        .query_axon(&axon, QuicRequest::new("echo", payload(8)))
        .await
        .expect("permitted validator");
    assert!(ok.success);
    let snapshot = server.stats().await.expect("stats");
    assert!(snapshot.stats.handshakes_rejected >= 1);
    server.stop().await.expect("stop");
}

/// A client that expects another hotkey at the miner's address refuses the miner.
pub async fn wrong_miner_hotkey_refused<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let impostor = lightning_driver::Identity::from_seed(&[0x44; 32]);
    let axon = QuicAxonInfo::from_addr(impostor.hotkey(), server.local_addr());
    let err = client
        .query_axon(&axon, QuicRequest::new("echo", payload(8)))
        .await
        .expect_err("wrong hotkey");
    assert!(matches!(err, LightningError::Handshake(_)), "{err}");
    assert_ne!(
        lightning_driver::Identity::from_seed(&MINER_SEED).hotkey(),
        impostor.hotkey()
    );
    server.stop().await.expect("stop");
}

/// Dropping a stream mid-way cancels it; the connection stays usable.
pub async fn dropped_stream_cancels<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    let mut stream = client
        .query_axon_stream(&axon, stream_request(100_000, 1024))
        .await
        .expect("stream");
    for _ in 0..10 {
        assert!(stream.next_chunk().await.expect("chunk").is_some());
    }
    drop(stream);
    let ok = client
        .query_axon(&axon, QuicRequest::new("echo", payload(8)))
        .await
        .expect("query");
    assert!(ok.success);
    let snapshot = server.stats().await.expect("stats");
    assert!(
        snapshot.queued_bytes < 64 * 1024 * 1024,
        "the cancelled stream does not keep queueing"
    );
    server.stop().await.expect("stop");
}

/// A query with a timeout shorter than the handler fails with `Timeout`.
pub async fn client_timeout<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    let data = DataMap::from_values([("ms".to_string(), 5_000u64.into())]).expect("key");
    let err = client
        .query_axon_with_timeout(
            &axon,
            QuicRequest::new("slow", data),
            Duration::from_millis(200),
        )
        .await
        .expect_err("times out");
    assert!(matches!(err, LightningError::Timeout(_)), "{err}");
    server.stop().await.expect("stop");
}

/// Polls every future to completion concurrently on the current task.
pub async fn join_all<F: std::future::Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    futures_lite::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// `update_miner_registry` drops a miner that left the list (closing its connection) and
/// connects the one that joined (PROTOCOL §8.3).
pub async fn registry_reconciliation<R: Runtime>(runtime: R) {
    let first = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let second = standard_server(runtime.clone(), None)
        .seed([0x55; 32])
        .start()
        .await
        .expect("second server");
    let client = client(runtime.clone());
    let (a, b) = (axon_of(&first), axon_of(&second));

    let report = client
        .update_miner_registry([a.clone()])
        .await
        .expect("registry");
    assert_eq!(report.authenticated, vec![a.clone()]);
    let hotkeys = client.authenticated_hotkeys().await.expect("hotkeys");
    assert_eq!(hotkeys, [a.hotkey.clone()].into_iter().collect());

    let report = client
        .update_miner_registry([b.clone()])
        .await
        .expect("registry");
    assert_eq!(report.authenticated, vec![b.clone()]);
    let hotkeys = client.authenticated_hotkeys().await.expect("hotkeys");
    assert_eq!(hotkeys, [b.hotkey.clone()].into_iter().collect());
    let stats = client.connection_stats().await.expect("stats");
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.peers[0].addr, b.addr().expect("addr"));

    // The first miner sees its validator go away.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snapshot = first.stats().await.expect("stats");
        if snapshot.connections == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connection to the dropped miner closed"
        );
        sleep(&runtime, Duration::from_millis(20)).await;
    }
    first.stop().await.expect("stop");
    second.stop().await.expect("stop");
}

/// Typed handlers and typed requests: structs in, structs out, by field names.
pub async fn typed_round_trip<R: Runtime>(runtime: R) {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Sum {
        a: u64,
        b: u64,
        label: String,
    }
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Total {
        total: u64,
        label: String,
    }
    let server = standard_server(runtime.clone(), None)
        .typed_handler("sum", |req: Sum, _ctx| {
            Ok::<_, String>(Total {
                total: req.a + req.b,
                label: req.label,
            })
        })
        .typed_async_handler("sum_async", |req: Sum, ctx| async move {
            Ok::<_, String>(Total {
                total: req.a * req.b,
                label: format!("{} from {}", req.label, &ctx.validator_hotkey()[..4]),
            })
        })
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    let request = Sum {
        a: 20,
        b: 22,
        label: "x".into(),
    };
    let total: Total = client
        .query_axon(
            &axon,
            QuicRequest::from_typed("sum", &request).expect("encode"),
        )
        .await
        .expect("query")
        .into_result()
        .expect("success")
        .deserialize_data()
        .expect("decode");
    assert_eq!(
        total,
        Total {
            total: 42,
            label: "x".into()
        }
    );
    let product: Total = client
        .query_axon(
            &axon,
            QuicRequest::from_typed("sum_async", &request).expect("encode"),
        )
        .await
        .expect("query")
        .into_result()
        .expect("success")
        .deserialize_data()
        .expect("decode");
    assert_eq!(product.total, 440);
    assert!(product.label.starts_with("x from 5"), "{}", product.label);
    // A request that does not decode is a handler error.
    let bad = client
        .query_axon(&axon, QuicRequest::new("sum", payload(4)))
        .await
        .expect("answer");
    assert_eq!(bad.error.as_deref(), Some("request processing failed"));
    server.stop().await.expect("stop");
}

/// A callback signer (a key held elsewhere) authenticates like a seed.
pub async fn callback_signer<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let key = lightning_driver::Keypair::from_seed(&[0x66; 32]);
    let hotkey = key.hotkey();
    let calls = Signal::default();
    let counter = calls.clone();
    let client = ClientBuilder::with_runtime(runtime)
        .callback_signer(hotkey.clone(), move |message| {
            counter.notify();
            Ok(key.sign(message).to_vec())
        })
        .bind_addr(([127, 0, 0, 1], 0).into())
        .build()
        .expect("client");
    let axon = axon_of(&server);
    let ok = client
        .query_axon(&axon, QuicRequest::new("echo", payload(8)))
        .await
        .expect("query");
    assert!(ok.success);
    assert_eq!(calls.count(), 1, "one signature per connection");
    let snapshot = server.stats().await.expect("stats");
    assert_eq!(snapshot.validators.len(), 1);
    assert_eq!(snapshot.validators[0].0, hotkey);
    server.stop().await.expect("stop");
}

/// 16 concurrent 1 MiB echoes: the congestion window grows large enough for full GSO
/// batches. (Batches over 64 KiB used to be refused by the kernel and silently dropped,
/// stalling the connection until the server reset the streams.)
pub async fn concurrent_large_payloads<R: Runtime>(runtime: R) {
    let server = standard_server(runtime.clone(), None)
        .start()
        .await
        .expect("server");
    let client = client(runtime);
    let axon = axon_of(&server);
    let data = payload(1 << 20);
    let queries = (0..16).map(|_| {
        let client = client.clone();
        let axon = axon.clone();
        let data = data.clone();
        async move {
            let response = client
                .query_axon(&axon, QuicRequest::new("echo", data.clone()))
                .await
                .expect("query")
                .into_result()
                .expect("success");
            assert_eq!(response.data, data);
        }
    });
    join_all(queries).await;
    let stats = client.connection_stats().await.expect("stats");
    let quic = stats.peers[0].quic.expect("quic stats");
    assert!(
        quic.udp_tx.bytes > 16 << 20,
        "all requests went out: {quic:?}"
    );
    // Loopback loses next to nothing; dropped GSO batches showed up as 15-30 % loss
    // (and as most packets lost once a batch's segments grew to the loopback MTU).
    assert!(
        quic.path.lost_packets * 10 < quic.path.sent_packets,
        "lost {} of {} packets",
        quic.path.lost_packets,
        quic.path.sent_packets
    );
    // Towards a loopback peer, path MTU discovery grows packets to the device's 64 KiB.
    assert!(
        quic.path.current_mtu > 60_000,
        "path MTU {} on loopback",
        quic.path.current_mtu
    );
    let snapshot = server.stats().await.expect("stats");
    assert_eq!(snapshot.stats.read_timeouts, 0);
    server.stop().await.expect("stop");
}
