//! Input that can never work fails at once with an error that names it, and a miner's
//! refusals say they come from the miner (issue 15).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lightning_driver::error::FrameError;
use lightning_driver::{
    ClientBuilder, LightningError, ProtocolCause, QuicAxonInfo, QuicRequest, ServerConfig,
};
use lightning_tests::{axon_of, basic_server, payload, tokio_block_on, MINER_SEED, VALIDATOR_SEED};
use lightning_tokio::Tokio;

/// Far below the 10 s connect timeout an unreachable address would take.
const AT_ONCE: Duration = Duration::from_secs(2);

/// Bounds a call that must not wait on the network.
async fn at_once<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(AT_ONCE, f)
        .await
        .expect("did not fail at once")
}

#[test]
fn a_hotkey_that_is_not_ss58_fails_at_once() {
    tokio_block_on(async {
        let client = ClientBuilder::<Tokio>::new()
            .seed(VALIDATOR_SEED)
            .build()
            .expect("client");
        // Nothing listens on port 9: a connect attempt would wait for its timeout.
        let axon = QuicAxonInfo::new("notakey", "127.0.0.1", 9, 4);
        let started = Instant::now();
        let error = at_once(client.query_axon(&axon, QuicRequest::new("echo", payload(8))))
            .await
            .expect_err("notakey cannot be queried");
        assert!(
            matches!(&error, LightningError::InvalidHotkey { hotkey, .. } if hotkey == "notakey"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "config error: miner hotkey \"notakey\" is not a valid SS58 address \
             (wrong decoded length for an SS58 address)"
        );
        let error = at_once(client.query_axon_stream(&axon, QuicRequest::new("s", payload(8))))
            .await
            .expect_err("nor streamed from");
        assert!(
            matches!(error, LightningError::InvalidHotkey { .. }),
            "{error:?}"
        );
        let report = at_once(client.initialize_connections([axon.clone()]))
            .await
            .expect("report");
        assert!(report.authenticated.is_empty());
        assert!(
            matches!(&report.failed[..], [(a, LightningError::InvalidHotkey { .. })] if *a == axon),
            "{report:?}"
        );
        // A checksum error names itself too.
        let good = lightning_driver::Keypair::from_seed(&MINER_SEED).hotkey();
        let mut bad = good.into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'z' { b'y' } else { b'z' };
        let bad = String::from_utf8(bad).expect("ascii");
        let axon = QuicAxonInfo::new(bad, "127.0.0.1", 9, 4);
        let error = at_once(client.query_axon(&axon, QuicRequest::new("echo", payload(8))))
            .await
            .expect_err("bad checksum");
        assert!(
            error.to_string().contains("is not a valid SS58 address"),
            "{error}"
        );
        assert!(started.elapsed() < AT_ONCE);
        assert_eq!(
            client.connection_stats().await.expect("stats").peers.len(),
            0
        );
    });
}

#[test]
fn a_request_over_the_clients_frame_limit_is_refused_before_sending() {
    tokio_block_on(async {
        let server = basic_server(Tokio::default(), MINER_SEED)
            .start()
            .await
            .expect("server");
        let limit = 1 << 20;
        let client = ClientBuilder::<Tokio>::new()
            .seed(VALIDATOR_SEED)
            .max_frame_payload_bytes(limit)
            .build()
            .expect("client");
        let axon = axon_of(&server);
        let error = at_once(client.query_axon(&axon, QuicRequest::new("echo", payload(2 << 20))))
            .await
            .expect_err("2 MiB over a 1 MiB limit");
        let LightningError::RequestTooLarge { size, limit: l } = error else {
            panic!("{error:?}");
        };
        assert_eq!(l, limit);
        // The payload field, its MessagePack headers, the synapse name and the timestamp.
        assert!((2 << 20..(2 << 20) + 64).contains(&size), "{size}");
        let text = error.to_string();
        assert!(
            text.contains("max_frame_payload_bytes of 1048576 bytes")
                && text.contains(&format!("request frame of {size} bytes")),
            "{text}"
        );
        let error =
            at_once(client.query_axon_stream(&axon, QuicRequest::new("echo", payload(2 << 20))))
                .await
                .expect_err("streams too");
        assert!(
            matches!(error, LightningError::RequestTooLarge { .. }),
            "{error:?}"
        );
        // Nothing reached the miner; a request under the limit goes through.
        assert_eq!(server.stats().await.expect("stats").stats.accepted, 0);
        let data = payload(512 << 10);
        let answer = client
            .query_axon(&axon, QuicRequest::new("echo", data.clone()))
            .await
            .expect("512 KiB query")
            .into_result()
            .expect("echo");
        assert_eq!(answer.data, data);
        server.stop().await.expect("stop");
    });
}

#[test]
fn a_miner_that_cannot_read_a_request_is_named() {
    tokio_block_on(async {
        // The miner's limit is below the client's (64 MiB): the miner ends the stream
        // without an answer, as the reference does.
        let server = basic_server(Tokio::default(), MINER_SEED)
            .configure(|c: &mut ServerConfig| c.max_frame_payload_bytes = 1 << 20)
            .start()
            .await
            .expect("server");
        let client = ClientBuilder::<Tokio>::new()
            .seed(VALIDATOR_SEED)
            .build()
            .expect("client");
        let error = client
            .query_axon_with_timeout(
                &axon_of(&server),
                QuicRequest::new("echo", payload(2 << 20)),
                Duration::from_secs(20),
            )
            .await
            .expect_err("over the miner's limit");
        assert!(
            matches!(
                &error,
                LightningError::Protocol(ProtocolCause::Frame(FrameError::Truncated {
                    received: 0,
                    ..
                }))
            ) && error
                .to_string()
                .contains("the miner ended the stream without an answer"),
            "{error:?}"
        );
        server.stop().await.expect("stop");
    });
}

#[test]
fn a_stream_reset_by_the_miner_says_so() {
    tokio_block_on(async {
        // One request read at a time per connection and one waiting: the others are
        // refused at once with a reset (code 0x4c42).
        let server = basic_server(Tokio::default(), MINER_SEED)
            .configure(|c: &mut ServerConfig| {
                c.max_request_bytes_per_connection = 1;
                c.max_waiting_requests_per_connection = 1;
                c.small_request_reserve_bytes = 0;
            })
            .start()
            .await
            .expect("server");
        let client = ClientBuilder::<Tokio>::new()
            .seed(VALIDATOR_SEED)
            .build()
            .expect("client");
        let axon = axon_of(&server);
        client
            .initialize_connections([axon.clone()])
            .await
            .expect("connect");
        let data = payload(2 << 20);
        let queries = (0..8).map(|_| {
            let client = client.clone();
            let axon = axon.clone();
            let data = data.clone();
            tokio::spawn(async move {
                client
                    .query_axon_with_timeout(
                        &axon,
                        QuicRequest::new("echo", data.clone()),
                        Duration::from_secs(20),
                    )
                    .await
                    .map(|r| r.data == data)
            })
        });
        let mut resets = 0;
        for query in queries.collect::<Vec<_>>() {
            match query.await.expect("task") {
                Ok(same) => assert!(same, "echo came back different"),
                Err(LightningError::StreamReset { code }) => {
                    assert_eq!(code, 0x4c42);
                    let text = LightningError::StreamReset { code }.to_string();
                    assert!(
                        text.starts_with(
                            "transport error: the miner reset the stream (code 0x4c42: busy"
                        ),
                        "{text}"
                    );
                    resets += 1;
                }
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        assert!(resets > 0, "no request was refused");
        server.stop().await.expect("stop");
    });
}
