//! A streaming synapse: the miner writes chunks as it produces them, the validator reads
//! them as they arrive.
//!
//! ```text
//! cargo run --release -p lightning-tokio --example streaming
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lightning_tokio::{
    ChunkSink, ClientBuilder, DataMap, QuicAxonInfo, QuicRequest, RequestContext, ServerBuilder,
};

/// Produces `count` "tokens", one every few milliseconds, like a model generating text.
async fn generate(data: DataMap, _ctx: RequestContext, sink: ChunkSink) -> Result<(), String> {
    let count = data
        .get("count")
        .and_then(|v| v.as_u64())
        .ok_or("expected {\"count\": N}")?;
    for i in 0..count {
        tokio::time::sleep(Duration::from_millis(5)).await;
        // `send` waits while the validator is behind, so memory stays bounded.
        sink.send(format!("token-{i} "))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn request(count: u64) -> QuicRequest {
    let data = DataMap::from_values([("count".to_string(), count.into())]).unwrap();
    QuicRequest::new("generate", data)
}

#[tokio::main]
async fn main() -> lightning_tokio::Result<()> {
    let server = ServerBuilder::new()
        .seed([1; 32])
        .bind_addr(([127, 0, 0, 1], 0).into())
        .streaming_handler("generate", generate)
        .start()
        .await?;
    let client = ClientBuilder::new().seed([2; 32]).build()?;
    let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());

    // 1. Read chunk by chunk, as they come.
    let started = Instant::now();
    let mut stream = client.query_axon_stream(&axon, request(10)).await?;
    while let Some(chunk) = stream.next_chunk().await? {
        println!(
            "{:>7.1} ms  {}",
            started.elapsed().as_secs_f64() * 1e3,
            String::from_utf8_lossy(&chunk)
        );
    }

    // 2. Or wait for the whole answer.
    let chunks = client
        .query_axon_stream(&axon, request(50))
        .await?
        .collect_all()
        .await?;
    let text: String = chunks.iter().map(|c| String::from_utf8_lossy(c)).collect();
    println!("collected {} chunks, {} bytes", chunks.len(), text.len());

    // 3. Stop early: dropping the stream cancels it on the wire, and the miner's handler
    //    is dropped at its next await instead of generating the rest.
    let mut stream = client.query_axon_stream(&axon, request(1_000_000)).await?;
    let first = stream.next_chunk().await?.expect("a first chunk");
    println!("took {:?} and hung up", String::from_utf8_lossy(&first));
    drop(stream);

    server.stop().await?;
    Ok(())
}
