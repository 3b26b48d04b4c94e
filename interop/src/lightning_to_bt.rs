//! A Lightning validator (our `LightningClient` on runtime `R`) querying a btlightning
//! 0.2.15 miner running with its default configuration, QUIC Retry included.

use btlightning::LightningServerConfig;
use lightning_driver::error::{HandshakeError, ResponseError, StreamFailure};
use lightning_driver::{
    ClientBuilder, DataMap, HandshakeCause, LightningClient, LightningError, ProtocolCause,
    QuicAxonInfo, QuicRequest, Runtime,
};

use crate::relay::RetryCountingRelay;
use crate::{
    chunk, hotkey, join_all, payload, sample_profile, stream_data, to_bt, to_ours, BtMiner,
    ProfileReply, SECOND_STRANGER_SEED, STRANGER_SEED, VALIDATOR_SEED,
};

/// Our validator on `runtime`, bound to loopback.
pub fn our_client<R: Runtime>(runtime: R) -> LightningClient {
    ClientBuilder::with_runtime(runtime)
        .seed(VALIDATOR_SEED)
        .bind_addr(([127, 0, 0, 1], 0).into())
        .build()
        .expect("client")
}

fn request(synapse: &str, data: &crate::BtData) -> QuicRequest {
    QuicRequest::new(synapse, to_ours(data))
}

/// Our handshake against btlightning's miner: one authenticated miner, and btlightning's
/// table holds our validator hotkey as verified.
pub async fn handshake<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let report = client
        .initialize_connections([miner.axon()])
        .await
        .expect("report");
    assert_eq!(report.authenticated, vec![miner.axon()], "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        client.authenticated_hotkeys().await.expect("hotkeys"),
        [miner.hotkey.clone()].into_iter().collect()
    );
    assert_eq!(
        client.connection_stats().await.expect("stats").connections,
        1
    );
    let (total, verified, validators) = miner.wait_verified(1).await;
    assert_eq!((total, verified), (1, 1));
    assert_eq!(validators, vec![hotkey(&VALIDATOR_SEED)]);
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// btlightning's miner sends a QUIC Retry to every unvalidated address (its default): our
/// client completes the connection through it, and later reconnects with the NEW_TOKEN
/// token it received, without a second Retry. A UDP relay between the two counts the Retry
/// packets on the wire; a miner with address validation switched off is the control (no
/// Retry), which shows the relay really recognises them.
pub async fn through_quic_retry<R: Runtime>(runtime: R) {
    for (validation, expect_retry) in [(true, true), (false, false)] {
        let mut config = LightningServerConfig::default();
        config.require_address_validation = validation;
        let miner = BtMiner::start_with(config).await;
        let relay = RetryCountingRelay::start(miner.addr).await;
        let axon = QuicAxonInfo::from_addr(miner.hotkey.clone(), relay.addr());
        let client = our_client(runtime.clone());
        let report = client
            .initialize_connections([axon.clone()])
            .await
            .expect("report");
        assert_eq!(report.authenticated, vec![axon.clone()], "{report:?}");
        let response = client
            .query_axon(&axon, request("echo", &payload(256)))
            .await
            .expect("query")
            .into_result()
            .expect("success");
        assert_eq!(to_bt(&response.data), payload(256));
        let retries = relay.retries();
        if expect_retry {
            assert!(retries >= 1, "btlightning sent no Retry");
        } else {
            assert_eq!(retries, 0, "Retry without address validation");
        }
        assert!(
            relay.long_header_packets() >= 2,
            "the relay saw the handshake"
        );

        // A fresh connection from the same client skips the Retry: btlightning's miner
        // (quinn's defaults) handed out NEW_TOKEN tokens on the first one, and a valid
        // token validates the address (not in PROTOCOL §1.1, which says every fresh
        // connection gets a Retry).
        client.close_all_connections().await.expect("close");
        let before = relay.long_header_packets();
        let again = client
            .query_axon(&axon, request("echo", &payload(256)))
            .await
            .expect("query on a new connection");
        assert!(again.success);
        assert!(relay.long_header_packets() > before, "a new QUIC handshake");
        assert_eq!(relay.retries(), retries, "no Retry on the reconnect");
        client.close_all_connections().await.expect("close");
        relay.stop();
        miner.stop().await;
    }
}

/// Unary echo of 256 B, 1 KiB and 1 MiB through btlightning's sync and async handlers.
pub async fn echo_sizes<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let axon = miner.axon();
    for size in [256, 1024, 1 << 20] {
        for synapse in ["echo", "echo_async"] {
            let data = payload(size);
            let response = client
                .query_axon(&axon, request(synapse, &data))
                .await
                .expect("query")
                .into_result()
                .expect("success");
            assert_eq!(to_bt(&response.data), data, "{synapse} at {size} B");
        }
    }
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// 64 queries in flight at once from one client over one connection.
pub async fn concurrent_64<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let axon = miner.axon();
    client
        .initialize_connections([axon.clone()])
        .await
        .expect("connect");
    let queries = (0..64u64).map(|i| {
        let client = client.clone();
        let axon = axon.clone();
        async move {
            let mut data = payload(512);
            data.insert("i".into(), i.into());
            let response = client
                .query_axon(&axon, request("echo_async", &data))
                .await
                .expect("query")
                .into_result()
                .expect("success");
            // Compared as maps: btlightning re-encodes from a hash map, so key order is
            // arbitrary (PROTOCOL §13.14).
            assert_eq!(to_bt(&response.data), data, "query {i}");
        }
    });
    join_all(queries).await;
    let stats = client.connection_stats().await.expect("stats");
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.requests_in_flight, 0);
    let (total, verified, _) = miner.connections().await;
    assert_eq!((total, verified), (1, 1));
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// Our `query_axon_stream` against btlightning's streaming handler: 200 chunks in order,
/// an empty stream, and a handler failing after 3 chunks (the 3 chunks, then the
/// reference's `stream processing failed`).
pub async fn streaming<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let axon = miner.axon();

    let mut stream = client
        .query_axon_stream(&axon, request("stream", &stream_data(200, 4096, None)))
        .await
        .expect("stream");
    for i in 0..10 {
        let got = stream
            .next_chunk()
            .await
            .expect("chunk")
            .expect("not ended");
        assert_eq!(&got[..], &chunk(i, 4096)[..], "chunk {i}");
    }
    let rest = stream.collect_all().await.expect("rest");
    assert_eq!(rest.len(), 190);
    for (i, got) in rest.iter().enumerate() {
        assert_eq!(
            &got[..],
            &chunk(i as u64 + 10, 4096)[..],
            "chunk {}",
            i + 10
        );
    }

    let empty = client
        .query_axon_stream(&axon, request("stream", &stream_data(0, 1, None)))
        .await
        .expect("empty stream")
        .collect_all()
        .await
        .expect("ends cleanly");
    assert!(empty.is_empty());

    let mut failing = client
        .query_axon_stream(&axon, request("stream", &stream_data(10, 100, Some(3))))
        .await
        .expect("failing stream");
    for i in 0..3 {
        let got = failing.next_chunk().await.expect("chunk").expect("chunk");
        assert_eq!(&got[..], &chunk(i, 100)[..]);
    }
    let err = failing.next_chunk().await.expect_err("the handler failed");
    assert_eq!(
        err,
        LightningError::Stream(StreamFailure::Remote("stream processing failed".into()))
    );
    assert_eq!(failing.next_chunk().await.expect("after the error"), None);

    let ok = client
        .query_axon(&axon, request("echo", &payload(16)))
        .await
        .expect("query");
    assert!(ok.success);
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// btlightning's answer to an unknown synapse, read by our client.
pub async fn unknown_synapse<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let response = client
        .query_axon(&miner.axon(), request("no_such_synapse", &payload(8)))
        .await
        .expect("an answer");
    assert!(!response.success);
    assert!(response.data.is_empty());
    assert_eq!(response.error.as_deref(), Some("unrecognized synapse type"));
    assert_eq!(
        response.into_result(),
        Err(LightningError::Remote("unrecognized synapse type".into()))
    );
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// btlightning's answer to a failing handler, read by our client; the connection stays
/// usable.
pub async fn handler_error<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let axon = miner.axon();
    let response = client
        .query_axon(&axon, request("fail", &payload(8)))
        .await
        .expect("an answer");
    assert!(!response.success);
    assert_eq!(response.error.as_deref(), Some("request processing failed"));
    let ok = client
        .query_axon(&axon, request("echo", &payload(8)))
        .await
        .expect("query");
    assert!(ok.success);
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// Our `QuicRequest::from_typed` into btlightning's `typed_handler`, and our
/// `deserialize_data` on its typed answer.
pub async fn typed<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let request = sample_profile();
    let response = client
        .query_axon(
            &miner.axon(),
            QuicRequest::from_typed("profile", &request).expect("typed request"),
        )
        .await
        .expect("query")
        .into_result()
        .expect("success");
    let reply: ProfileReply = response.deserialize_data().expect("typed reply");
    assert_eq!(reply, crate::profile(request));
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// Several miner hotkeys at one address (PROTOCOL §8.2 item 7 and §5.8): the client is
/// given the real miner plus two records that claim the same `ip:port` with other hotkeys
/// (what a metagraph with copied axon entries looks like). A btlightning miner has exactly
/// one hotkey, so one connection is opened, the real hotkey authenticates on it, and each
/// fake is refused with a hotkey mismatch; queries to a fake fail without a dial, queries to
/// the real miner work.
pub async fn several_hotkeys_one_address<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let real = miner.axon();
    let fakes = [
        miner.axon_claiming(&hotkey(&STRANGER_SEED)),
        miner.axon_claiming(&hotkey(&SECOND_STRANGER_SEED)),
    ];
    let report = client
        .initialize_connections([fakes[0].clone(), real.clone(), fakes[1].clone()])
        .await
        .expect("report");
    assert_eq!(report.authenticated, vec![real.clone()], "{report:?}");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    for fake in &fakes {
        let (_, err) = report
            .failed
            .iter()
            .find(|(axon, _)| axon == fake)
            .expect("each fake is reported");
        let expected = HandshakeError::WrongHotkey {
            expected: fake.hotkey.clone(),
            got: miner.hotkey.clone(),
        };
        assert_eq!(
            *err,
            LightningError::Handshake(HandshakeCause::Refused(expected))
        );
    }
    let stats = client.connection_stats().await.expect("stats");
    assert_eq!(stats.connections, 1, "one address, one connection");
    assert_eq!(
        client.authenticated_hotkeys().await.expect("hotkeys"),
        [miner.hotkey.clone()].into_iter().collect()
    );

    let ok = client
        .query_axon(&real, request("echo", &payload(32)))
        .await
        .expect("query")
        .into_result()
        .expect("success");
    assert_eq!(to_bt(&ok.data), payload(32));
    for fake in &fakes {
        let err = client
            .query_axon(fake, request("echo", &payload(32)))
            .await
            .expect_err("a fake hotkey has no route");
        assert!(matches!(err, LightningError::Handshake(_)), "{err}");
    }
    let (total, verified, validators) = miner.connections().await;
    assert_eq!((total, verified), (1, 1));
    assert_eq!(validators, vec![hotkey(&VALIDATOR_SEED)]);
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// An empty data map and a map of every MessagePack kind btlightning's `rmpv` values carry
/// (nil, bool, negative int, u64, f32, f64, str, bin, array, nested map with a non-string
/// key, ext) come back from btlightning's echo unchanged.
pub async fn value_kinds<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let axon = miner.axon();
    let empty = client
        .query_axon(&axon, QuicRequest::new("echo", DataMap::new()))
        .await
        .expect("query")
        .into_result()
        .expect("success");
    assert!(empty.data.is_empty());

    let kinds = crate::value_kinds();
    let response = client
        .query_axon(&axon, request("echo", &kinds))
        .await
        .expect("query")
        .into_result()
        .expect("success");
    assert_eq!(to_bt(&response.data), kinds);
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// Typed data carrying a unit enum ([`crate::Ranked`]), across every pairing:
/// * both implementations encode it identically (the variant index);
/// * btlightning client -> btlightning miner: its typed handler cannot decode it, so the
///   reference answers `request processing failed` to itself;
/// * Lightning client -> btlightning miner: the same answer, so we match the reference;
/// * btlightning client -> Lightning miner: our typed handler decodes it and answers, and
///   btlightning's `deserialize_data` then fails on the enum in our (reference-encoded)
///   answer, while ours reads it.
pub async fn typed_unit_enum<R: Runtime>(runtime: R) {
    use crate::{bt_client, lightning_miner, our_axon, rank, Ranked, Tier};
    let ranked = Ranked {
        name: "ada".into(),
        tier: Tier::Silver,
    };
    let ours = DataMap::from_typed(&ranked).expect("our encoding");
    let theirs = btlightning::QuicRequest::from_typed("rank", &ranked).expect("bt encoding");
    assert_eq!(to_bt(&ours), theirs.data, "same named encoding");
    assert_eq!(theirs.data.get("tier"), Some(&rmpv::Value::from(1)));

    let miner = BtMiner::start().await;
    let mut bt = bt_client(VALIDATOR_SEED);
    bt.initialize_connections(vec![crate::bt_axon(&miner.hotkey, miner.addr)])
        .await
        .expect("initialize");
    let reference = bt
        .query_axon(crate::bt_axon(&miner.hotkey, miner.addr), theirs.clone())
        .await
        .expect("an answer");
    assert_eq!(
        (reference.success, reference.error.as_deref()),
        (false, Some("request processing failed")),
        "btlightning refuses its own enum encoding"
    );
    bt.close_all_connections().await.expect("close");

    let client = our_client(runtime.clone());
    let response = client
        .query_axon(&miner.axon(), QuicRequest::new("rank", ours))
        .await
        .expect("an answer");
    assert_eq!(
        (response.success, response.error.as_deref()),
        (false, Some("request processing failed"))
    );
    client.close_all_connections().await.expect("close");
    miner.stop().await;

    let server = lightning_miner(runtime).start().await.expect("server");
    let mut bt = bt_client(VALIDATOR_SEED);
    bt.initialize_connections(vec![our_axon(&server)])
        .await
        .expect("initialize");
    let answer = bt
        .query_axon(our_axon(&server), theirs)
        .await
        .expect("query")
        .into_result()
        .expect("our typed handler reads the index form");
    let err = answer
        .deserialize_data::<Ranked>()
        .expect_err("btlightning cannot read the index form");
    assert!(
        matches!(err, btlightning::LightningError::Serialization(_)),
        "{err}"
    );
    let read_by_us: Ranked = to_ours(&answer.data).deserialize().expect("we can");
    assert_eq!(read_by_us, rank(ranked));
    bt.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// btlightning's handler timeout (1 s here) read by our client: a unary handler answers
/// `handler timed out`; a streaming one delivers its first chunk, then ends with
/// `stream error: handler timed out` (PROTOCOL §6.3, §7).
pub async fn bt_handler_timeout<R: Runtime>(runtime: R) {
    let mut config = LightningServerConfig::default();
    config.handler_timeout_secs = 1;
    let miner = BtMiner::start_with(config).await;
    let client = our_client(runtime);
    let axon = miner.axon();
    client
        .initialize_connections([axon.clone()])
        .await
        .expect("connect");
    let unary = async {
        let response = client
            .query_axon(&axon, request("slow", &crate::slow_data(5_000)))
            .await
            .expect("an answer");
        assert!(!response.success);
        assert_eq!(response.error.as_deref(), Some("handler timed out"));
    };
    let streaming = async {
        let mut stream = client
            .query_axon_stream(&axon, request("slow_stream", &crate::slow_data(5_000)))
            .await
            .expect("stream");
        let first = stream.next_chunk().await.expect("chunk").expect("chunk");
        assert_eq!(&first[..], &chunk(0, 16)[..]);
        let err = stream.next_chunk().await.expect_err("timed out");
        assert_eq!(
            err,
            LightningError::Stream(StreamFailure::Remote("handler timed out".into()))
        );
    };
    futures_lite::future::zip(unary, streaming).await;
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// Our client giving up on btlightning's miner: `query_axon_with_timeout` fails with
/// `Timeout` after 300 ms, and dropping a `ChunkStream` after 5 of 100,000 chunks makes
/// btlightning abort its streaming handler (its next write fails, PROTOCOL §7), which shows
/// our client really stops the stream on the wire. The connection stays usable.
pub async fn our_timeout_and_dropped_stream<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let axon = miner.axon();
    let err = client
        .query_axon_with_timeout(
            &axon,
            request("slow", &crate::slow_data(10_000)),
            std::time::Duration::from_millis(300),
        )
        .await
        .expect_err("times out");
    assert!(matches!(err, LightningError::Timeout(_)), "{err}");

    let mut stream = client
        .query_axon_stream(&axon, request("stream", &stream_data(100_000, 1024, None)))
        .await
        .expect("stream");
    for i in 0..5 {
        let got = stream.next_chunk().await.expect("chunk").expect("chunk");
        assert_eq!(&got[..], &chunk(i, 1024)[..]);
    }
    drop(stream);
    assert_eq!(
        miner.tally.wait_for(1).await,
        1,
        "btlightning's handler stopped"
    );

    let ok = client
        .query_axon(&axon, request("echo", &payload(8)))
        .await
        .expect("query");
    assert!(ok.success);
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// The btlightning miner restarts on the same port (same key, new certificate, new Retry
/// token key): the next queries of our client reconnect by themselves, through Retry again.
/// While the old connection is being noticed or the reconnect backoff runs, a query may
/// fail with a connection error, as with btlightning's own client.
pub async fn reconnect_after_bt_restart<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let addr = miner.addr;
    let client = our_client(runtime);
    let axon = miner.axon();
    let first = client
        .query_axon(&axon, request("echo", &payload(64)))
        .await
        .expect("first query");
    assert!(first.success);
    miner.stop().await;
    crate::wait_port_free(addr).await;

    let miner = BtMiner::start_on(LightningServerConfig::default(), addr.port()).await;
    let started = std::time::Instant::now();
    let response = loop {
        match client
            .query_axon(&axon, request("echo", &payload(64)))
            .await
        {
            Ok(response) => break response,
            Err(LightningError::Connect(_) | LightningError::ConnectionLost(_))
                if started.elapsed() < std::time::Duration::from_secs(10) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("query after restart: {e}"),
        }
    };
    assert_eq!(
        to_bt(&response.into_result().expect("success").data),
        payload(64)
    );
    let (_, verified, validators) = miner.wait_verified(1).await;
    assert_eq!(verified, 1);
    assert_eq!(validators, vec![hotkey(&VALIDATOR_SEED)]);
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// The wrong reader for a synapse (PROTOCOL §6.1, §7, §13.10): our `query_axon_stream` on
/// btlightning's unary `echo` and on an unknown synapse meets its unary answer, and our
/// `query_axon` on its streaming `stream` meets a chunk; each gives the reference client's
/// message, and the connection stays usable.
pub async fn mismatched_reader<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let axon = miner.axon();
    for (synapse, detail, shown) in [
        ("echo", None, "no detail"),
        (
            "no_such_synapse",
            Some("unrecognized synapse type"),
            "unrecognized synapse type",
        ),
    ] {
        let result = async {
            client
                .query_axon_stream(&axon, request(synapse, &payload(8)))
                .await?
                .next_chunk()
                .await
        }
        .await;
        let err = result.expect_err(synapse);
        assert_eq!(
            err,
            LightningError::Stream(StreamFailure::UnaryAnswer(detail.map(str::to_string))),
            "{synapse}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "stream error: server returned SynapseResponse error on streaming path: {shown}"
            )
        );
    }
    let err = client
        .query_axon(&axon, request("stream", &stream_data(3, 8, None)))
        .await
        .expect_err("streaming answer");
    assert_eq!(
        err,
        LightningError::Protocol(ProtocolCause::Response(ResponseError::ChunkOnUnaryQuery))
    );
    let ok = client
        .query_axon(&axon, request("echo", &payload(8)))
        .await
        .expect("query");
    assert!(ok.success);
    client.close_all_connections().await.expect("close");
    miner.stop().await;
}

/// NEW_TOKEN frames received by `client` on its connection to `addr`, after one query.
async fn new_tokens_received(client: &LightningClient, axon: &QuicAxonInfo) -> u64 {
    let ok = client
        .query_axon(axon, request("echo", &payload(8)))
        .await
        .expect("query");
    assert!(ok.success);
    let addr = axon.addr().expect("addr");
    let stats = client.connection_stats().await.expect("stats");
    let peer = stats
        .peers
        .iter()
        .find(|p| p.addr == addr)
        .expect("peer stats");
    peer.quic.as_ref().expect("QUIC stats").frame_rx.new_token
}

/// Adding btlightning to the workspace switches on quinn-proto's default `bloom` feature
/// in every build that includes this crate (`cargo test --workspace`), and quinn-proto's
/// default server then hands each client 2 NEW_TOKEN address-validation tokens. Our
/// sans-IO server pins its token configuration so it behaves the same in every build (no
/// NEW_TOKEN, as in a build of `lightning-proto` alone, where seeds from the simulator are
/// replayed). btlightning's miner, on quinn's defaults, does send them (the count depends
/// on its path validations): the control shows the counter is live.
pub async fn new_token_independent_of_build<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime.clone());
    let control = new_tokens_received(&client, &miner.axon()).await;
    assert!(
        control >= 1,
        "btlightning sends quinn's default NEW_TOKEN frames"
    );
    client.close_all_connections().await.expect("close");
    miner.stop().await;

    let server = crate::lightning_miner(runtime.clone())
        .start()
        .await
        .expect("server");
    let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());
    let client = our_client(runtime);
    assert_eq!(new_tokens_received(&client, &axon).await, 0);
    client.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}
