//! Metrics over real sockets: the server's and the client's snapshots and their
//! Prometheus text move with the traffic a test sends (counts only, no timing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lightning_driver::{
    ClientBuilder, DataMap, LightningClient, QuicRequest, Runtime, ServerMetrics,
    UNKNOWN_SYNAPSE_LABEL,
};
use lightning_tests::{axon_of, payload, standard_server, tokio_block_on, VALIDATOR_SEED};
use lightning_tokio::Tokio;

fn client<R: Runtime>(runtime: R) -> LightningClient {
    ClientBuilder::with_runtime(runtime)
        .seed(VALIDATOR_SEED)
        .build()
        .expect("client")
}

/// The sample of `name{labels}` in Prometheus text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const N: u64 = 20;

#[test]
fn counters_move_by_the_queries_sent() {
    tokio_block_on(async {
        let runtime = Tokio::default();
        let server = standard_server(runtime.clone(), None)
            .start()
            .await
            .expect("server");
        let client = client(runtime);
        let axon = axon_of(&server);
        for _ in 0..N {
            let r = client
                .query_axon(&axon, QuicRequest::new("echo", payload(1024)))
                .await
                .expect("query");
            assert!(r.success);
        }
        for _ in 0..3 {
            let r = client
                .query_axon(&axon, QuicRequest::new("echo_async", payload(64)))
                .await
                .expect("query");
            assert!(r.success);
        }
        for _ in 0..2 {
            let r = client
                .query_axon(&axon, QuicRequest::new("fail", payload(8)))
                .await
                .expect("query");
            assert!(!r.success);
        }
        let stream_req = DataMap::from_values([
            ("n".to_string(), 4u64.into()),
            ("chunk_size".to_string(), 1000u64.into()),
        ])
        .expect("keys");
        let mut stream = client
            .query_axon_stream(&axon, QuicRequest::new("stream", stream_req))
            .await
            .expect("stream");
        let mut chunks = 0;
        while let Some(chunk) = futures_lite::StreamExt::next(&mut stream).await {
            chunk.expect("chunk");
            chunks += 1;
        }
        assert_eq!(chunks, 4);

        // The server.
        let m = server.metrics().await.expect("metrics");
        let echo = m.synapse("echo").expect("echo registered");
        assert_eq!(echo.ok, N, "{echo:?}");
        assert_eq!(echo.requests(), N);
        assert_eq!(echo.handler_seconds.count(), N);
        assert_eq!(m.synapse("echo_async").map(|s| s.ok), Some(3));
        assert_eq!(m.synapse("fail").map(|s| s.error), Some(2));
        let stream_m = m.synapse("stream").expect("stream registered");
        assert_eq!((stream_m.ok, stream_m.stream_chunks), (1, 4));
        assert_eq!(stream_m.stream_chunk_bytes, 4000);
        assert_eq!(m.stats.handshakes_ok, 1);
        assert_eq!(m.stats.accepted, 1);
        assert_eq!((m.connections, m.unauthenticated, m.validators), (1, 0, 1));
        assert!(
            m.io.datagrams_in > N && m.io.datagrams_out > N,
            "{:?}",
            m.io
        );
        assert!(
            m.io.bytes_in > N * 1024 && m.io.bytes_out > N * 1024,
            "{:?}",
            m.io
        );
        assert_eq!(m.path.connections, 1);
        assert!(m.path.rtt_max > Duration::ZERO && m.path.cwnd_min > 0);

        let text = server.metrics_text().await.expect("text");
        let echo_ok = r#"lightning_server_requests_total{synapse="echo",outcome="ok"}"#;
        assert_eq!(sample(&text, echo_ok), Some(N as f64), "{text}");
        let handled = r#"lightning_server_handler_duration_seconds_count{synapse="echo"}"#;
        assert_eq!(sample(&text, handled), Some(N as f64));
        assert_eq!(
            sample(&text, "lightning_server_handshakes_accepted_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"lightning_server_connections{state="authenticated"}"#
            ),
            Some(1.0)
        );
        assert!(
            sample(&text, r#"lightning_server_udp_bytes_total{direction="in"}"#)
                .is_some_and(|b| b > (N * 1024) as f64)
        );

        // The client.
        let c = client.metrics().await.expect("client metrics");
        let echo = c.synapse("echo").expect("echo");
        assert_eq!(echo.outcome("ok"), N);
        assert_eq!(echo.latency_seconds.count(), N);
        assert_eq!(c.synapse("fail").map(|s| s.outcome("error")), Some(2));
        let stream_c = c.synapse("stream").expect("stream");
        assert_eq!((stream_c.outcome("ok"), stream_c.stream_chunks), (1, 4));
        assert_eq!(c.handshakes_ok, 1);
        assert_eq!(c.connections, 1);
        assert!(c.io.bytes_out > N * 1024 && c.io.bytes_in > N * 1024);
        assert_eq!(c.path.connections, 1);
        let text = client.metrics_text().await.expect("client text");
        let echo_ok = r#"lightning_client_requests_total{synapse="echo",outcome="ok"}"#;
        assert_eq!(sample(&text, echo_ok), Some(N as f64), "{text}");
        let latency = r#"lightning_client_request_duration_seconds_count{synapse="echo"}"#;
        assert_eq!(sample(&text, latency), Some(N as f64));

        // Closing from the client shows on the server as a close by the peer.
        client.close_all_connections().await.expect("close");
        let m = wait_for(&server, |m| m.closed.total() == 1).await;
        assert_eq!(m.closed.get(lightning_driver::CloseReason::PeerClosed), 1);
        assert_eq!(m.connections, 0);
        server.stop().await.expect("stop");
    });
}

#[test]
fn unknown_synapse_names_count_under_one_label() {
    tokio_block_on(async {
        let runtime = Tokio::default();
        let server = standard_server(runtime.clone(), None)
            .start()
            .await
            .expect("server");
        let client = client(runtime);
        let axon = axon_of(&server);
        for i in 0..5 {
            let r = client
                .query_axon(&axon, QuicRequest::new(format!("nope{i}"), payload(8)))
                .await
                .expect("query");
            assert!(!r.success);
        }
        let m = server.metrics().await.expect("metrics");
        assert_eq!(m.stats.unknown_synapse, 5);
        assert!(m.synapses.iter().all(|s| !s.synapse.starts_with("nope")));
        assert_eq!(m.synapses.iter().map(|s| s.requests()).sum::<u64>(), 0);
        let text = m.to_prometheus();
        assert!(!text.contains("nope"), "{text}");
        let unknown = format!(
            r#"lightning_server_requests_total{{synapse="{UNKNOWN_SYNAPSE_LABEL}",outcome="unrecognized_synapse"}}"#
        );
        assert_eq!(sample(&text, &unknown), Some(5.0), "{text}");
        server.stop().await.expect("stop");
    });
}

#[test]
fn timed_out_and_cancelled_requests_count_as_such() {
    tokio_block_on(async {
        let runtime = Tokio::default();
        let server = standard_server(runtime.clone(), None)
            .configure(|c| c.handler_timeout = Duration::from_secs(1))
            .start()
            .await
            .expect("server");
        let client = client(runtime);
        let axon = axon_of(&server);
        let slow = DataMap::from_values([("ms".to_string(), 60_000u64.into())]).expect("key");
        let r = client
            .query_axon(&axon, QuicRequest::new("slow", slow.clone()))
            .await
            .expect("an answer");
        assert_eq!(r.error.as_deref(), Some("handler timed out"));

        // A query dropped once its handler is running: the server sees the stream stopped.
        let query = client.query_axon(&axon, QuicRequest::new("slow", slow));
        let running = async {
            wait_for(&server, |m| m.requests_in_flight == 1).await;
        };
        futures_lite::future::or(
            async {
                let r = query.await;
                panic!("answered before it was dropped: {r:?}");
            },
            running,
        )
        .await;

        let m = wait_for(&server, |m| {
            m.synapse("slow").is_some_and(|s| s.peer_cancelled == 1)
        })
        .await;
        let s = m.synapse("slow").expect("slow");
        assert_eq!((s.timed_out, s.peer_cancelled, s.ok), (1, 1, 0), "{s:?}");
        // Neither handler finished, so neither has a handler time.
        assert_eq!(s.handler_seconds.count(), 0);
        let c = client.metrics().await.expect("client metrics");
        let slow = c.synapse("slow").expect("slow");
        assert_eq!(
            (slow.outcome("error"), slow.outcome("cancelled")),
            (1, 1),
            "{slow:?}"
        );
        server.stop().await.expect("stop");
    });
}

/// Polls the server's metrics until `done` holds (a close takes a round trip).
async fn wait_for(
    server: &lightning_tokio::LightningServer,
    done: impl Fn(&ServerMetrics) -> bool,
) -> ServerMetrics {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let m = server.metrics().await.expect("metrics");
        if done(&m) || Instant::now() > give_up {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
