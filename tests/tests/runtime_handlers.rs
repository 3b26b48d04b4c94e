//! Handlers registered, replaced and removed on a server that is already running, over
//! real sockets: what btlightning's Python `register_synapse_handler` allows at any time,
//! and what the Python package builds on.
// A failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_driver::{ClientBuilder, DataMap, QuicRequest};
use lightning_tests::{axon_of, basic_server, payload, MINER_SEED, VALIDATOR_SEED};
use lightning_tokio::Tokio;

fn tagged(tag: &str) -> DataMap {
    DataMap::from_values([("tag".to_string(), tag.into())]).expect("string key")
}

#[test]
fn handlers_registered_after_start() {
    lightning_tests::tokio_block_on(async {
        let server = basic_server(Tokio::default(), MINER_SEED)
            .start()
            .await
            .expect("server");
        let client = ClientBuilder::with_runtime(Tokio::default())
            .seed(VALIDATOR_SEED)
            .bind_addr(([127, 0, 0, 1], 0).into())
            .build()
            .expect("client");
        let axon = axon_of(&server);

        // Not there yet: the core answers on its own.
        let before = client
            .query_axon(&axon, QuicRequest::new("late", payload(8)))
            .await
            .expect("an answer");
        assert_eq!(
            before.error.as_deref(),
            Some("unrecognized synapse type"),
            "{before:?}"
        );

        // A sync handler added while serving answers the very next query.
        let replaced = server
            .register_handler("late", |_data, _ctx| Ok::<_, String>(tagged("sync")))
            .await
            .expect("register");
        assert!(!replaced);
        let answer = client
            .query_axon(&axon, QuicRequest::new("late", payload(8)))
            .await
            .expect("query")
            .into_result()
            .expect("success");
        assert_eq!(answer.data, tagged("sync"));

        // Replacing it by an async handler that sees the caller's hotkey.
        let replaced = server
            .register_async_handler("late", |_data, ctx| async move {
                Ok::<_, String>(tagged(ctx.validator_hotkey()))
            })
            .await
            .expect("replace");
        assert!(replaced);
        let answer = client
            .query_axon(&axon, QuicRequest::new("late", payload(8)))
            .await
            .expect("query")
            .into_result()
            .expect("success");
        assert_eq!(answer.data, tagged(client.hotkey()));

        // A streaming handler added while serving.
        server
            .register_streaming_handler("late_stream", |_data, _ctx, sink| async move {
                for i in 0..3u8 {
                    sink.send(vec![i; 4]).await.map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
            .await
            .expect("register stream");
        let chunks = client
            .query_axon_stream(&axon, QuicRequest::new("late_stream", DataMap::new()))
            .await
            .expect("stream")
            .collect_all()
            .await
            .expect("chunks");
        let expected: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 4]).collect();
        let got: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        assert_eq!(got, expected);

        // Removed again, including one registered at build time.
        assert!(server.unregister_handler("late").await.expect("remove"));
        assert!(server.unregister_handler("echo").await.expect("remove"));
        assert!(!server.unregister_handler("never").await.expect("remove"));
        for synapse in ["late", "echo"] {
            let gone = client
                .query_axon(&axon, QuicRequest::new(synapse, payload(8)))
                .await
                .expect("an answer");
            assert_eq!(
                gone.error.as_deref(),
                Some("unrecognized synapse type"),
                "{synapse}"
            );
        }

        server.stop().await.expect("stop");
        // A stopped server refuses changes instead of pretending to apply them.
        assert!(server
            .register_handler("after_stop", |d, _c| Ok::<_, String>(d))
            .await
            .is_err());
    });
}
