//! An echo miner in its own process; pair it with `echo_client`.
//!
//! ```text
//! cargo run --release -p lightning-tokio --example echo_server            # random port
//! cargo run --release -p lightning-tokio --example echo_server -- 8091    # fixed port
//! ```
//!
//! It prints the port and hotkey, plus the client command to paste, and serves until
//! Ctrl-C. The miner key comes from a fixed seed so the hotkey is the same every run;
//! never do that with a key that matters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;

use lightning_tokio::{DataMap, RequestContext, ServerBuilder};

/// Seed of the example miner's key (public, so for demos only).
const MINER_SEED: [u8; 32] = [0x11; 32];

#[tokio::main]
async fn main() -> lightning_tokio::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("usage: echo_server [PORT]"),
        None => 0,
    };
    let server = ServerBuilder::new()
        .seed(MINER_SEED)
        .bind_addr(([127, 0, 0, 1], port).into())
        // A sync handler runs inline on the endpoint task: right for work this small.
        .handler("echo", |data: DataMap, ctx: RequestContext| {
            eprintln!(
                "echo of {} bytes for validator {}",
                data.raw().len(),
                ctx.validator_hotkey()
            );
            Ok::<_, Infallible>(data)
        })
        .start()
        .await?;

    let port = server.local_addr().port();
    println!("port   {port}");
    println!("hotkey {}", server.hotkey());
    println!(
        "run:   cargo run --release -p lightning-tokio --example echo_client -- {port} {}",
        server.hotkey()
    );
    println!("serving until Ctrl-C");
    server.serve_forever().await;
    Ok(())
}
