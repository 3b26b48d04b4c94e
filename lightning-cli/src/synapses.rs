//! The synapses every `lightning` miner serves (`serve`, `demo`): `echo`, which hands the
//! request's data map back, and `stream`, which sends `n` chunks of `chunk_size` bytes.

use std::convert::Infallible;

use bytes::Bytes;
use lightning_tokio::{ChunkSink, DataMap, RequestContext, ServerBuilder};
use serde::Deserialize;

/// Largest chunk the `stream` synapse will produce.
const MAX_CHUNK_BYTES: u64 = 16 << 20;
/// Largest whole stream the `stream` synapse will produce.
const MAX_STREAM_BYTES: u64 = 1 << 30;

/// The `stream` synapse's request.
#[derive(Debug, Deserialize)]
struct StreamRequest {
    n: u64,
    chunk_size: u64,
}

/// Adds the synapses every `lightning` miner serves.
pub fn with_synapses(builder: ServerBuilder) -> ServerBuilder {
    builder
        // Inline and zero-copy: the data map is handed back as the bytes that arrived.
        .handler("echo", |data: DataMap, _ctx: RequestContext| {
            Ok::<_, Infallible>(data)
        })
        .streaming_handler("stream", stream_chunks)
}

/// The `stream` synapse: `n` chunks of `chunk_size` bytes, sliced from one shared buffer.
pub async fn stream_chunks(
    data: DataMap,
    _ctx: RequestContext,
    sink: ChunkSink,
) -> Result<(), String> {
    let req: StreamRequest = data
        .deserialize()
        .map_err(|e| format!("expected {{\"n\": N, \"chunk_size\": S}}: {e}"))?;
    if req.chunk_size > MAX_CHUNK_BYTES {
        return Err(format!(
            "chunk_size {} is above the limit of {MAX_CHUNK_BYTES} bytes",
            req.chunk_size
        ));
    }
    if req.n.saturating_mul(req.chunk_size) > MAX_STREAM_BYTES {
        return Err(format!(
            "n * chunk_size is above the limit of {MAX_STREAM_BYTES} bytes"
        ));
    }
    // One buffer shared by every chunk of every request: a slice of `Bytes` copies
    // nothing, so a request costs the miner no CPU or memory in proportion to its size.
    let chunk: Bytes = shared_filler().slice(..req.chunk_size as usize);
    for _ in 0..req.n {
        sink.send(chunk.clone()).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The filler of the largest chunk, built once on the first streaming request.
fn shared_filler() -> &'static Bytes {
    static FILLER: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    FILLER.get_or_init(|| filler(MAX_CHUNK_BYTES as usize))
}

/// `len` bytes of a repeating pattern, so that a corrupted payload does not pass for
/// a zeroed one.
pub fn filler(len: usize) -> Bytes {
    // One period of the pattern, then doubling copies: memcpy speed, not a byte at a time.
    let mut out: Vec<u8> = (0..len.min(251)).map(|i| i as u8).collect();
    out.reserve_exact(len - out.len());
    while out.len() < len {
        let more = out.len().min(len - out.len());
        out.extend_from_within(..more);
    }
    out.into()
}
