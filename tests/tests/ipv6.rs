//! IPv6 end to end (PROTOCOL §13.13): a miner bound to `[::1]`, a validator on an IPv6
//! socket, an axon record with an IPv6 literal, on each runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv6Addr, SocketAddr};

use lightning_driver::{ClientBuilder, QuicAxonInfo, Runtime};
use lightning_smol::Smol;
use lightning_tests::{
    assert_echoes, assert_stream, smol_block_on, standard_server, tokio_block_on, VALIDATOR_SEED,
};
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
    assert_echoes(&client, &axon, "echo", &[64 * 1024]).await;
    assert_stream(&client, &axon, 50, 1000).await;
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
