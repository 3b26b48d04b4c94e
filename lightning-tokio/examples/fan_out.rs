//! A validator querying many miners at once: 16 in-process miners (each slower than the
//! last), plus one address where nobody listens.
//!
//! ```text
//! cargo run --release -p lightning-tokio --example fan_out
//! ```
//!
//! One client holds one QUIC connection per miner; `initialize_connections` opens and
//! authenticates them all concurrently and reports which failed, and queries to different
//! miners run side by side on the same client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lightning_tokio::{
    ClientBuilder, DataMap, LightningServer, QuicAxonInfo, QuicRequest, RequestContext,
    ServerBuilder,
};

const MINERS: u8 = 16;

async fn start_miner(i: u8) -> lightning_tokio::Result<LightningServer> {
    // Miner i takes i milliseconds to answer, so the latencies below differ.
    let delay = Duration::from_millis(u64::from(i));
    ServerBuilder::new()
        .seed([i + 1; 32])
        .bind_addr(([127, 0, 0, 1], 0).into())
        .async_handler(
            "echo",
            move |data: DataMap, _ctx: RequestContext| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, String>(data)
            },
        )
        .start()
        .await
}

#[tokio::main]
async fn main() -> lightning_tokio::Result<()> {
    let mut miners = Vec::new();
    for i in 0..MINERS {
        miners.push(start_miner(i).await?);
    }
    let mut axons: Vec<QuicAxonInfo> = miners
        .iter()
        .map(|m| QuicAxonInfo::from_addr(m.hotkey(), m.local_addr()))
        .collect();
    // A registered miner that is offline: its port is closed.
    let offline = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let offline_addr = offline.local_addr().unwrap();
    drop(offline);
    axons.push(QuicAxonInfo::from_addr(
        "5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM",
        offline_addr,
    ));

    let client = ClientBuilder::new()
        .seed([0xAA; 32])
        .connect_timeout(Duration::from_secs(1))
        .build()?;
    let started = Instant::now();
    let report = client.initialize_connections(axons.clone()).await?;
    println!(
        "connected to {} miners in {:?}; {} failed",
        report.authenticated.len(),
        started.elapsed(),
        report.failed.len()
    );
    for (miner, error) in &report.failed {
        println!("  {}:{} -> {error}", miner.ip, miner.port);
    }

    // Query every miner concurrently (the offline one too); all tasks share one client.
    let data = DataMap::from_values([("payload".to_string(), vec![1u8; 4096].into())]).unwrap();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, axon) in axons.iter().cloned().enumerate() {
        let client = client.clone();
        let request = QuicRequest::new("echo", data.clone());
        tasks.spawn(async move {
            let result = client
                .query_axon_with_timeout(&axon, request, Duration::from_secs(2))
                .await
                .and_then(|r| r.into_result());
            (i, axon, result)
        });
    }
    let mut rows = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        rows.push(joined.expect("query task"));
    }
    println!(
        "all {} queries settled in {:?}",
        rows.len(),
        started.elapsed()
    );
    rows.sort_by_key(|(i, _, _)| *i);
    for (i, axon, result) in rows {
        let who = format!(
            "miner {i:>2} ({}.., port {:>5})",
            &axon.hotkey[..8],
            axon.port
        );
        match result {
            Ok(r) => println!("  {who}: {:>6.2} ms", r.latency_ms()),
            Err(e) => println!("  {who}: {e}"),
        }
    }

    client.close_all_connections().await?;
    for miner in &miners {
        miner.stop().await?;
    }
    Ok(())
}
