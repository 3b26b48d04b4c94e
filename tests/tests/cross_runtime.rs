//! A client on one runtime and a server on the other, unary and streaming, both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_driver::{ClientBuilder, Runtime};
use lightning_smol::Smol;
use lightning_tests::{assert_echoes, assert_stream, axon_of, standard_server, VALIDATOR_SEED};
use lightning_tokio::Tokio;

/// Echo at two sizes and a 200-chunk stream from a client on `client_rt` to a server on
/// `server_rt`.
async fn exchange<S: Runtime, C: Runtime>(server_rt: S, client_rt: C) {
    let server = standard_server(server_rt, None)
        .start()
        .await
        .expect("server");
    let client = ClientBuilder::with_runtime(client_rt)
        .seed(VALIDATOR_SEED)
        .bind_addr(([127, 0, 0, 1], 0).into())
        .build()
        .expect("client");
    let axon = axon_of(&server);
    assert_echoes(&client, &axon, "echo_async", &[1024, 256 * 1024]).await;
    assert_stream(&client, &axon, 200, 4096).await;
    server.stop().await.expect("stop");
}

#[test]
fn tokio_client_smol_server() {
    // The test body runs on tokio; the server's tasks run on smol's executor and reactor.
    lightning_tests::tokio_block_on(exchange(Smol::default(), Tokio::default()));
}

#[test]
fn smol_client_tokio_server() {
    // A tokio runtime exists only to host the server; the test body runs under smol.
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server_rt = Tokio::new(tokio_rt.handle().clone());
    lightning_tests::smol_block_on(exchange(server_rt, Smol::default()));
}
