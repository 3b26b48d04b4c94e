//! An echo miner and a validator in a plain `smol::block_on` application (no tokio).
//!
//! `cargo run --release -p lightning-smol --example smol_echo`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use lightning_smol::{ClientBuilder, DataMap, QuicAxonInfo, QuicRequest, ServerBuilder};

fn main() -> lightning_smol::Result<()> {
    smol::block_on(async {
        let server = ServerBuilder::new()
            .seed([1; 32])
            .bind_addr(([127, 0, 0, 1], 0).into())
            .handler("echo", |data, _ctx| Ok::<_, String>(data))
            .start()
            .await?;
        println!("miner {} on {}", server.hotkey(), server.local_addr());

        let client = ClientBuilder::new().seed([2; 32]).build()?;
        let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());
        let data = DataMap::from_values([("payload".to_string(), vec![7u8; 1024].into())])
            .expect("a map with a string key");
        let started = Instant::now();
        let n = 1000;
        for _ in 0..n {
            let response = client
                .query_axon(&axon, QuicRequest::new("echo", data.clone()))
                .await?
                .into_result()?;
            assert_eq!(response.data, data);
        }
        println!("{n} sequential echoes of 1 KiB in {:?}", started.elapsed());
        server.stop().await
    })
}
