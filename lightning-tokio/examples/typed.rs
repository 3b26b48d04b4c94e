//! Typed synapses: serde structs instead of raw data maps, on the wire exactly like
//! btlightning's typed helpers (struct fields become map entries by name).
//!
//! ```text
//! cargo run --release -p lightning-tokio --example typed
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_tokio::{ClientBuilder, QuicAxonInfo, QuicRequest, RequestContext, ServerBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct ScoreRequest {
    prompt: String,
    candidates: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ScoreResponse {
    best: usize,
    scores: Vec<f32>,
    scored_by: String,
}

/// Scores each candidate by how many of the prompt's words it contains.
fn score(req: ScoreRequest, ctx: RequestContext) -> Result<ScoreResponse, String> {
    if req.candidates.is_empty() {
        return Err("no candidates".into());
    }
    let words: Vec<&str> = req.prompt.split_whitespace().collect();
    let scores: Vec<f32> = req
        .candidates
        .iter()
        .map(|c| words.iter().filter(|w| c.contains(*w)).count() as f32 / words.len() as f32)
        .collect();
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
        .unwrap_or(0);
    Ok(ScoreResponse {
        best,
        scores,
        scored_by: format!("miner, for {}", ctx.validator_hotkey()),
    })
}

#[tokio::main]
async fn main() -> lightning_tokio::Result<()> {
    let server = ServerBuilder::new()
        .seed([1; 32])
        .bind_addr(([127, 0, 0, 1], 0).into())
        .typed_handler("score", score)
        .start()
        .await?;
    let client = ClientBuilder::new().seed([2; 32]).build()?;
    let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());

    let request = ScoreRequest {
        prompt: "quick brown fox".into(),
        candidates: vec![
            "a lazy dog".into(),
            "the quick brown fox jumps".into(),
            "a brown bear".into(),
        ],
    };
    let response = client
        .query_axon(&axon, QuicRequest::from_typed("score", &request)?)
        .await?
        .into_result()?;
    let scored: ScoreResponse = response.deserialize_data()?;
    println!("{scored:#?}");
    assert_eq!(scored.best, 1);

    // A handler error comes back as `success == false` with the miner's text.
    let empty = ScoreRequest {
        prompt: "anything".into(),
        candidates: vec![],
    };
    let failed = client
        .query_axon(&axon, QuicRequest::from_typed("score", &empty)?)
        .await?;
    println!(
        "empty request: success={} error={:?}",
        failed.success, failed.error
    );

    server.stop().await?;
    Ok(())
}
