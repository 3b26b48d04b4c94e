//! A btlightning 0.2.15 validator (its `LightningClient`) querying a Lightning miner.
//!
//! Each scenario starts its own Lightning miner on runtime `R` and a btlightning client on
//! the ambient tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use btlightning::{LightningError as BtError, QuicRequest as BtRequest};
use lightning_driver::{RetryPolicy, Runtime};

use crate::{
    bt_client, bt_client_of, chunk, hotkey, join_all, lightning_miner, lightning_miner_tallied,
    our_axon, payload, sample_profile, slow_data, stream_data, ProfileReply, Tally, MINER_SEED,
    STRANGER_SEED, VALIDATOR_SEED,
};

/// The btlightning handshake against our miner: the client reports one authenticated
/// miner on one connection, and our miner records btlightning's validator hotkey on that
/// connection.
pub async fn handshake<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let authenticated = client.authenticated_hotkeys().await;
    assert_eq!(
        authenticated.into_iter().collect::<Vec<_>>(),
        vec![hotkey(&MINER_SEED)]
    );
    let stats = client.get_connection_stats().await.expect("client stats");
    assert_eq!(
        stats.get("total_connections").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        stats
            .get(&format!("connection_{}", axon.addr_key()))
            .map(String::as_str),
        Some("active"),
        "{stats:?}"
    );

    let snapshot = server.stats().await.expect("server stats");
    assert_eq!(snapshot.stats.handshakes_ok, 1);
    assert_eq!(snapshot.stats.handshakes_rejected, 0);
    assert_eq!(snapshot.validators.len(), 1);
    assert_eq!(snapshot.validators[0].0, hotkey(&VALIDATOR_SEED));
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// Our miner set to send QUIC Retry to every new address: btlightning's client follows it.
pub async fn follows_our_retry<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime)
        .configure(|c| c.retry = RetryPolicy::Always)
        .start()
        .await
        .expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let response = client
        .query_axon(axon, BtRequest::new("echo".into(), payload(64)))
        .await
        .expect("query");
    assert!(response.success, "{:?}", response.error);
    let snapshot = server.stats().await.expect("server stats");
    assert!(snapshot.stats.retried >= 1, "{:?}", snapshot.stats);
    assert_eq!(snapshot.stats.handshakes_ok, 1);
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// Unary echo of 256 B, 1 KiB and 1 MiB through our sync and async handlers: the data map
/// comes back equal, value for value.
pub async fn echo_sizes<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    for size in [256, 1024, 1 << 20] {
        for synapse in ["echo", "echo_async"] {
            let data = payload(size);
            let response = client
                .query_axon(axon.clone(), BtRequest::new(synapse.into(), data.clone()))
                .await
                .expect("query")
                .into_result()
                .expect("success");
            assert_eq!(response.data, data, "{synapse} at {size} B");
            assert!(response.latency_ms >= 0.0);
        }
    }
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// 64 queries in flight at once from one btlightning client, each on its own tokio task:
/// every one gets its own answer, over a single connection.
pub async fn concurrent_64<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let client = Arc::new(client);
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let client = client.clone();
            let axon = axon.clone();
            tokio::spawn(async move {
                let mut data = payload(512);
                data.insert("i".into(), i.into());
                let response = client
                    .query_axon(axon, BtRequest::new("echo_async".into(), data.clone()))
                    .await
                    .expect("query")
                    .into_result()
                    .expect("success");
                assert_eq!(response.data, data, "query {i}");
            })
        })
        .collect();
    for task in join_all(tasks).await {
        task.expect("query task");
    }
    let snapshot = server.stats().await.expect("server stats");
    assert_eq!(snapshot.stats.requests, 64);
    assert_eq!(
        snapshot.connections, 1,
        "one connection carries every query"
    );
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// btlightning's `query_axon_stream` against our streaming handler: 200 chunks of 4 KiB in
/// order through `next_chunk` and `collect_all`, an empty stream, and a handler that fails
/// after 3 chunks (the 3 chunks, then `stream error: stream processing failed`).
pub async fn streaming<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;

    let mut stream = client
        .query_axon_stream(
            axon.clone(),
            BtRequest::new("stream".into(), stream_data(200, 4096, None)),
        )
        .await
        .expect("stream");
    for i in 0..10 {
        let got = stream
            .next_chunk()
            .await
            .expect("chunk")
            .expect("not ended");
        assert_eq!(got, chunk(i, 4096), "chunk {i}");
    }
    let rest = stream.collect_all().await.expect("rest");
    assert_eq!(rest.len(), 190);
    for (i, got) in rest.iter().enumerate() {
        assert_eq!(*got, chunk(i as u64 + 10, 4096), "chunk {}", i + 10);
    }

    let mut empty = client
        .query_axon_stream(
            axon.clone(),
            BtRequest::new("stream".into(), stream_data(0, 1, None)),
        )
        .await
        .expect("empty stream");
    assert_eq!(empty.next_chunk().await.expect("end"), None);

    let mut failing = client
        .query_axon_stream(
            axon.clone(),
            BtRequest::new("stream".into(), stream_data(10, 100, Some(3))),
        )
        .await
        .expect("failing stream");
    for i in 0..3 {
        let got = failing.next_chunk().await.expect("chunk").expect("chunk");
        assert_eq!(got, chunk(i, 100));
    }
    let err = failing.next_chunk().await.expect_err("the handler failed");
    assert!(
        matches!(&err, BtError::Stream(m) if m == "stream processing failed"),
        "{err}"
    );
    assert_eq!(err.to_string(), "stream error: stream processing failed");

    // The connection is still good.
    let ok = client
        .query_axon(axon, BtRequest::new("echo".into(), payload(16)))
        .await
        .expect("query");
    assert!(ok.success);
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// An unknown synapse is answered with the reference's exact string, without the name.
pub async fn unknown_synapse<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let response = client
        .query_axon(
            axon.clone(),
            BtRequest::new("no_such_synapse".into(), payload(8)),
        )
        .await
        .expect("an answer");
    assert!(!response.success);
    assert!(response.data.is_empty());
    assert_eq!(response.error.as_deref(), Some("unrecognized synapse type"));
    let err = response.into_result().expect_err("failure");
    assert_eq!(err.to_string(), "handler error: unrecognized synapse type");
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// A failing handler is answered `request processing failed`; its own message stays on
/// the miner. The connection stays usable.
pub async fn handler_error<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let response = client
        .query_axon(axon.clone(), BtRequest::new("fail".into(), payload(8)))
        .await
        .expect("an answer");
    assert!(!response.success);
    assert_eq!(response.error.as_deref(), Some("request processing failed"));
    assert_echo_answers(&client, axon).await;
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// btlightning's `QuicRequest::from_typed` into our typed handler, and its
/// `deserialize_data` on our typed answer: nested struct, optional fields present and
/// absent, a float, a sequence and a unit enum survive both ways.
pub async fn typed<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let request = sample_profile();
    let response = client
        .query_axon(
            axon,
            BtRequest::from_typed("profile", &request).expect("typed request"),
        )
        .await
        .expect("query")
        .into_result()
        .expect("success");
    let reply: ProfileReply = response.deserialize_data().expect("typed reply");
    assert_eq!(reply, crate::profile(request));
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// A btlightning client that expects another hotkey at our miner's address refuses it:
/// no authenticated miner, and queries to it fail without reaching a handler.
pub async fn refuses_unexpected_miner<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let mut axon = our_axon(&server);
    axon.hotkey = hotkey(&STRANGER_SEED);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    assert!(client.authenticated_hotkeys().await.is_empty());
    let err = client
        .query_axon(axon, BtRequest::new("echo".into(), payload(8)))
        .await
        .expect_err("refused");
    // The query dials again and btlightning names the mismatch (PROTOCOL §5.9 step 2).
    let expected = format!(
        "Miner hotkey mismatch: expected {}, got {}",
        hotkey(&STRANGER_SEED),
        hotkey(&MINER_SEED)
    );
    assert!(
        matches!(&err, BtError::Handshake(m) if *m == expected),
        "{err}"
    );
    let snapshot = server.stats().await.expect("server stats");
    assert_eq!(snapshot.stats.requests, 0);
    server.stop().await.expect("stop");
}

/// btlightning's `query_axon_with_timeout` gives up on a slow handler of ours: it reports
/// `transport error: query timed out` and drops its end of the stream (quinn sends
/// STOP_SENDING), our miner takes that as a cancellation and drops the handler, and the
/// connection stays usable.
pub async fn timeout_cancels_our_handler<R: Runtime>(runtime: R) {
    let tally = Tally::default();
    let server = lightning_miner_tallied(runtime, tally.clone())
        .start()
        .await
        .expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let err = client
        .query_axon_with_timeout(
            axon.clone(),
            BtRequest::new("slow".into(), slow_data(10_000)),
            Duration::from_millis(300),
        )
        .await
        .expect_err("times out");
    assert!(
        matches!(&err, BtError::Transport(m) if m == "query timed out"),
        "{err}"
    );
    assert_eq!(
        tally.wait_for(1).await,
        1,
        "the abandoned handler was dropped"
    );
    assert_echo_answers(&client, axon).await;
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// A btlightning client that drops its `StreamingResponse` after 5 of 100,000 chunks stops
/// our streaming handler (PROTOCOL §7: dropping the reader stops the stream); the
/// connection stays usable.
pub async fn dropped_stream_stops_our_handler<R: Runtime>(runtime: R) {
    let tally = Tally::default();
    let server = lightning_miner_tallied(runtime, tally.clone())
        .start()
        .await
        .expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let mut stream = client
        .query_axon_stream(
            axon.clone(),
            BtRequest::new("stream".into(), stream_data(100_000, 1024, None)),
        )
        .await
        .expect("stream");
    for i in 0..5 {
        let got = stream.next_chunk().await.expect("chunk").expect("chunk");
        assert_eq!(got, chunk(i, 1024));
    }
    drop(stream);
    assert_eq!(tally.wait_for(1).await, 1, "the streaming handler stopped");
    assert_echo_answers(&client, axon).await;
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// Our miner restarts on the same port (same key, new certificate): btlightning's client
/// notices the closed connection and reconnects on a later query, within its backoff.
pub async fn reconnects_after_our_restart<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime.clone())
        .start()
        .await
        .expect("server");
    let addr = server.local_addr();
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let first = client
        .query_axon(axon.clone(), BtRequest::new("echo".into(), payload(64)))
        .await
        .expect("first query");
    assert!(first.success);
    server.stop().await.expect("stop");
    crate::wait_port_free(addr).await;

    let server = lightning_miner(runtime)
        .bind_addr(addr)
        .start()
        .await
        .expect("restarted server");
    let started = std::time::Instant::now();
    let response = loop {
        match client
            .query_axon(axon.clone(), BtRequest::new("echo".into(), payload(64)))
            .await
        {
            Ok(response) => break response,
            Err(BtError::Connection(_) | BtError::Transport(_))
                if started.elapsed() < Duration::from_secs(15) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("query after restart: {e}"),
        }
    };
    assert_eq!(response.into_result().expect("success").data, payload(64));
    assert_eq!(server.stats().await.expect("stats").stats.handshakes_ok, 1);
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// An empty data map and every MessagePack value kind (see [`crate::value_kinds`]) from a
/// btlightning client come back from our echo unchanged.
pub async fn value_kinds<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    for data in [crate::BtData::new(), crate::value_kinds()] {
        let response = client
            .query_axon(axon.clone(), BtRequest::new("echo".into(), data.clone()))
            .await
            .expect("query")
            .into_result()
            .expect("success");
        assert_eq!(response.data, data);
    }
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// Our miner's handler timeout (300 ms here) read by btlightning's client: a unary handler
/// answers `handler timed out`; a streaming one delivers its first chunk, then
/// btlightning reports `stream error: handler timed out`.
pub async fn our_handler_timeout<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime)
        .configure(|c| c.handler_timeout = Duration::from_millis(300))
        .start()
        .await
        .expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    let response = client
        .query_axon(
            axon.clone(),
            BtRequest::new("slow".into(), slow_data(5_000)),
        )
        .await
        .expect("an answer");
    assert!(!response.success);
    assert_eq!(response.error.as_deref(), Some("handler timed out"));

    let mut stream = client
        .query_axon_stream(axon, BtRequest::new("slow_stream".into(), slow_data(5_000)))
        .await
        .expect("stream");
    assert_eq!(
        stream.next_chunk().await.expect("chunk"),
        Some(chunk(0, 16))
    );
    let err = stream.next_chunk().await.expect_err("timed out");
    assert!(
        matches!(&err, BtError::Stream(m) if m == "handler timed out"),
        "{err}"
    );
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// Several hotkeys claim our miner's address in btlightning's client (PROTOCOL §8.2): it
/// opens one connection, handshakes each hotkey on it, keeps only ours (the fake one gets
/// a hotkey mismatch), and refuses to route queries for the fake one.
pub async fn several_hotkeys_one_address<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let real = our_axon(&server);
    let mut fake = real.clone();
    fake.hotkey = hotkey(&STRANGER_SEED);
    let mut client = bt_client(VALIDATOR_SEED);
    client
        .initialize_connections(vec![fake.clone(), real.clone()])
        .await
        .expect("initialize");
    assert_eq!(
        client
            .authenticated_hotkeys()
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        vec![hotkey(&MINER_SEED)]
    );
    let stats = client.get_connection_stats().await.expect("stats");
    assert_eq!(
        stats.get("total_connections").map(String::as_str),
        Some("1")
    );
    assert_echo_answers(&client, real).await;
    let err = client
        .query_axon(fake.clone(), BtRequest::new("echo".into(), payload(8)))
        .await
        .expect_err("no route for the fake hotkey");
    let expected = format!(
        "no authenticated route for {} at {}",
        fake.hotkey,
        fake.addr_key()
    );
    assert!(
        matches!(&err, BtError::Handshake(m) if *m == expected),
        "{err}"
    );
    let snapshot = server.stats().await.expect("server stats");
    assert_eq!(snapshot.connections, 1);
    assert_eq!(snapshot.validators.len(), 1);
    assert_eq!(snapshot.stats.requests, 1);
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// A btlightning client whose `CallbackSigner` signs with a key other than the hotkey it
/// claims: our miner refuses the handshake, btlightning authenticates nothing, and its
/// queries never reach a handler.
pub async fn our_miner_refuses_wrong_signature<R: Runtime>(runtime: R) {
    use btlightning::Signer as _;
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let wrong_key = btlightning::Sr25519Signer::from_seed(STRANGER_SEED);
    let mut client = btlightning::LightningClient::new(hotkey(&VALIDATOR_SEED));
    client.set_signer(Box::new(btlightning::CallbackSigner::new(
        move |message: &[u8]| wrong_key.sign(message),
    )));
    client
        .initialize_connections(vec![axon.clone()])
        .await
        .expect("initialize");
    assert!(client.authenticated_hotkeys().await.is_empty());
    let err = client
        .query_axon(axon, BtRequest::new("echo".into(), payload(8)))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, BtError::Handshake(m) if m == "Handshake rejected by miner"),
        "{err}"
    );
    let snapshot = server.stats().await.expect("server stats");
    assert_eq!(snapshot.stats.handshakes_ok, 0);
    assert!(
        snapshot.stats.handshakes_rejected >= 2,
        "{:?}",
        snapshot.stats
    );
    assert_eq!(snapshot.stats.requests, 0);
    assert!(snapshot.validators.is_empty());
    server.stop().await.expect("stop");
}

/// The wrong reader for a synapse (PROTOCOL §6.1, §7, §13.10): btlightning's
/// `query_axon_stream` on our unary `echo` and on an unknown synapse meets our unary
/// answer, and its `query_axon` on our streaming `stream` meets a chunk; each is the
/// reference's error, and the connection stays usable.
pub async fn mismatched_reader<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let axon = our_axon(&server);
    let client = bt_client_of(VALIDATOR_SEED, &axon).await;
    for (synapse, detail) in [
        ("echo", "no detail"),
        ("no_such_synapse", "unrecognized synapse type"),
    ] {
        let mut stream = client
            .query_axon_stream(axon.clone(), BtRequest::new(synapse.into(), payload(8)))
            .await
            .expect("stream opened");
        let err = stream.next_chunk().await.expect_err("unary answer");
        let expected = format!("server returned SynapseResponse error on streaming path: {detail}");
        assert!(
            matches!(&err, BtError::Stream(m) if *m == expected),
            "{synapse}: {err}"
        );
    }
    let err = client
        .query_axon(
            axon.clone(),
            BtRequest::new("stream".into(), stream_data(3, 8, None)),
        )
        .await
        .expect_err("streaming answer");
    assert!(
        matches!(&err, BtError::Transport(m) if m == "received StreamChunk on non-streaming query; use query_axon_stream for streaming synapses"),
        "{err}"
    );
    assert_echo_answers(&client, axon).await;
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// Our miner still answers a btlightning echo on `client`'s connection.
async fn assert_echo_answers(
    client: &btlightning::LightningClient,
    axon: btlightning::QuicAxonInfo,
) {
    let ok = client
        .query_axon(axon, BtRequest::new("echo".into(), payload(8)))
        .await
        .expect("query");
    assert!(ok.success);
}
