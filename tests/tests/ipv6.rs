//! IPv6 end to end (PROTOCOL §13.13): a miner bound to `[::1]`, a validator on an IPv6
//! socket, an axon record with an IPv6 literal, on each runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv6Addr, SocketAddr};

use lightning_driver::{ClientBuilder, DataMap, QuicAxonInfo, QuicRequest, Runtime};
use lightning_smol::Smol;
use lightning_tests::{payload, smol_block_on, standard_server, tokio_block_on, VALIDATOR_SEED};
use lightning_tokio::Tokio;

async fn over_ipv6<R: Runtime>(runtime: R) {
    let loopback = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
    let server = standard_server(runtime.clone(), None)
        .bind_addr(loopback)
        .start()
        .await
        .expect("server on [::1]");
    assert!(server.local_addr().is_ipv6());
    let client = ClientBuilder::with_runtime(runtime)
        .seed(VALIDATOR_SEED)
        .bind_addr(loopback)
        .build()
        .expect("client on [::1]");
    // As a metagraph would publish it: the bare literal, protocol 6.
    let axon = QuicAxonInfo::new(server.hotkey(), "::1", server.local_addr().port(), 6);
    let report = client
        .initialize_connections([axon.clone()])
        .await
        .expect("connect");
    assert_eq!(report.authenticated, vec![axon.clone()], "{report:?}");
    let data = payload(64 * 1024);
    let response = client
        .query_axon(&axon, QuicRequest::new("echo", data.clone()))
        .await
        .expect("query")
        .into_result()
        .expect("success");
    assert_eq!(response.data, data);
    let request = DataMap::from_values([
        ("n".to_string(), 50u64.into()),
        ("chunk_size".to_string(), 1000u64.into()),
    ])
    .unwrap();
    let chunks = client
        .query_axon_stream(&axon, QuicRequest::new("stream", request))
        .await
        .expect("stream")
        .collect_all()
        .await
        .expect("chunks");
    assert_eq!(chunks.len(), 50);
    let stats = server.stats().await.expect("stats");
    assert_eq!(stats.validators.len(), 1, "{stats:?}");
    // The bracketed form that some tools print is accepted too.
    let bracketed = QuicAxonInfo::new(server.hotkey(), "[::1]", server.local_addr().port(), 6);
    assert_eq!(bracketed.addr().unwrap(), axon.addr().unwrap());
    server.stop().await.expect("stop");
}

#[test]
fn ipv6_on_tokio() {
    tokio_block_on(over_ipv6(Tokio::default()));
}

#[test]
fn ipv6_on_smol() {
    smol_block_on(over_ipv6(Smol::default()));
}
