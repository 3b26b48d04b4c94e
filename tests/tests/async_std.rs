//! An async-std application querying a Lightning server, through lightning-smol (async-std
//! shares the async-io reactor). Tasks are spawned on async-std's own executor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_driver::ClientBuilder;
use lightning_smol::Smol;
use lightning_tests::{assert_echoes, axon_of, standard_server, VALIDATOR_SEED};

fn async_std_runtime() -> Smol {
    Smol::with_spawner(|task| {
        async_std::task::spawn(task);
    })
}

#[async_std::test]
async fn async_std_application_queries() {
    let server = standard_server(async_std_runtime(), None)
        .start()
        .await
        .expect("server");
    let client = ClientBuilder::with_runtime(async_std_runtime())
        .seed(VALIDATOR_SEED)
        .bind_addr(([127, 0, 0, 1], 0).into())
        .build()
        .expect("client");
    let axon = axon_of(&server);
    assert_echoes(&client, &axon, "echo", &[256, 64 * 1024]).await;
    server.stop().await.expect("stop");
}
