//! An async-std application: a miner and a validator whose tasks run on async-std's
//! executor. lightning-smol needs nothing more than a spawner, because async-std and smol
//! share the async-io reactor.
//!
//! `cargo run --release -p lightning-smol --example async_std_client`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_smol::{ClientBuilder, DataMap, QuicAxonInfo, QuicRequest, ServerBuilder, Smol};

fn runtime() -> Smol {
    Smol::with_spawner(|task| {
        async_std::task::spawn(task);
    })
}

#[async_std::main]
async fn main() -> lightning_smol::Result<()> {
    let server = ServerBuilder::with_runtime(runtime())
        .seed([1; 32])
        .bind_addr(([127, 0, 0, 1], 0).into())
        .async_handler("greet", |data: DataMap, ctx| async move {
            let name = data
                .get("name")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let reply = format!("hello {name}, validator {}", ctx.validator_hotkey());
            DataMap::from_values([("reply".to_string(), reply.into())])
        })
        .start()
        .await?;
    let client = ClientBuilder::with_runtime(runtime())
        .seed([2; 32])
        .build()?;
    let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());
    let request = DataMap::from_values([("name".to_string(), "async-std".into())]).unwrap();
    let response = client
        .query_axon(&axon, QuicRequest::new("greet", request))
        .await?
        .into_result()?;
    println!("{}", response.data.get("reply").unwrap());
    server.stop().await
}
