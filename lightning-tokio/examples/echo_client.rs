//! A validator querying the miner started by `echo_server` (another process).
//!
//! ```text
//! cargo run --release -p lightning-tokio --example echo_client -- PORT HOTKEY [IP]
//! ```
//!
//! It connects (QUIC + TLS + Lightning handshake), sends echoes of a few sizes, checks
//! each answer and prints the latency, then exits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lightning_tokio::{ClientBuilder, DataMap, QuicAxonInfo, QuicRequest};

#[tokio::main]
async fn main() -> lightning_tokio::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: echo_client PORT HOTKEY [IP]";
    let port: u16 = args.next().expect(usage).parse().expect(usage);
    let hotkey = args.next().expect(usage);
    let ip = args.next().unwrap_or_else(|| "127.0.0.1".into());

    let client = ClientBuilder::new()
        .seed([0x22; 32])
        .connect_timeout(Duration::from_secs(3))
        .build()?;
    let axon = QuicAxonInfo::new(hotkey, ip, port, 4);

    let started = Instant::now();
    let report = client.initialize_connections([axon.clone()]).await?;
    if let Some((miner, error)) = report.failed.first() {
        eprintln!("cannot reach {}:{}: {error}", miner.ip, miner.port);
        std::process::exit(1);
    }
    println!("connected and authenticated in {:?}", started.elapsed());

    for size in [16, 1024, 64 * 1024, 1024 * 1024] {
        let data = DataMap::from_values([("payload".to_string(), vec![0xAB_u8; size].into())])
            .expect("a map with a string key");
        let response = client
            .query_axon_with_timeout(
                &axon,
                QuicRequest::new("echo", data.clone()),
                Duration::from_secs(5),
            )
            .await?
            .into_result()?;
        assert_eq!(response.data, data, "the echo differs from what was sent");
        println!("echo of {size:>8} bytes: {:>8.3} ms", response.latency_ms());
    }

    client.close_all_connections().await?;
    Ok(())
}
