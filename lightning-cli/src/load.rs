//! The load engine behind `query` and `demo`: C workers on one client, each taking the
//! next request number until the count or the time budget runs out.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lightning_tokio::{
    ClientBuilder, CongestionControl, DataMap, Identity, LightningClient, QuicAxonInfo, QuicRequest,
};
use serde::{Deserialize, Serialize};

use crate::stats::{micros, Latencies};
use lightning_cli::synapses::filler;

/// Parameters of the `stream` synapse.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StreamParams {
    /// Number of chunks.
    pub n: u64,
    /// Bytes per chunk.
    pub chunk_size: u64,
}

/// What each request of a run does.
#[derive(Debug, Clone)]
pub enum Kind {
    /// One request, one answer. With `check_echo` the answer's data must equal `data`.
    /// `size` is the payload inside `data`, for throughput figures.
    Unary {
        synapse: String,
        data: DataMap,
        size: u64,
        check_echo: bool,
    },
    /// One request, a stream of exactly `params.n` chunks of `params.chunk_size` bytes.
    Stream {
        synapse: String,
        params: StreamParams,
    },
}

impl Kind {
    /// Payload bytes one successful request delivers (one way).
    pub fn bytes_per_request(&self) -> u64 {
        match self {
            Kind::Unary { size, .. } => *size,
            Kind::Stream { params, .. } => params.n.saturating_mul(params.chunk_size),
        }
    }
}

/// A run: at most `requests` requests, `concurrency` at a time, none started after
/// `duration` (when set).
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: Kind,
    pub requests: u64,
    pub duration: Option<Duration>,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub latencies: Latencies,
    pub elapsed: Duration,
    /// Payload bytes delivered by successful requests.
    pub bytes: u64,
    pub first_error: Option<String>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn req_per_s(&self) -> f64 {
        per_second(self.ok as f64, self.elapsed)
    }

    /// Payload megabytes (10^6 bytes) per second, one way.
    pub fn mb_per_s(&self) -> f64 {
        per_second(self.bytes as f64 / 1e6, self.elapsed)
    }
}

fn per_second(amount: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        amount / secs
    } else {
        0.0
    }
}

/// A client for load runs: it can reach `target` and accepts whole streams of
/// `stream_bytes`; `max_udp_payload` raises the MTU discovery ceiling towards other
/// hosts.
pub fn client(
    identity: Identity,
    target: SocketAddr,
    connect_timeout: Duration,
    stream_bytes: u64,
    congestion: CongestionControl,
    max_udp_payload: Option<u16>,
) -> Result<LightningClient, String> {
    let bind: SocketAddr = if target.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut builder = ClientBuilder::new()
        .identity(identity)
        .bind_addr(bind)
        .connect_timeout(connect_timeout)
        .congestion(congestion);
    if let Some(bytes) = max_udp_payload {
        builder = builder.max_udp_payload(bytes);
    }
    // The default cap (64 MiB) is right for miners we do not know; here we asked for it.
    const DEFAULT_STREAM_CAP: u64 = 64 << 20;
    if stream_bytes > DEFAULT_STREAM_CAP {
        builder = builder.max_stream_payload_bytes(stream_bytes.saturating_add(1 << 20));
    }
    builder
        .build()
        .map_err(|e| format!("cannot start the client: {e}"))
}

/// Runs `work` against `axon`; shows a progress line on stderr when `progress` is set and
/// stderr is a terminal.
pub async fn run(
    client: &LightningClient,
    axon: &QuicAxonInfo,
    work: &Workload,
    progress: bool,
) -> LoadResult {
    let shared = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = work.duration.map(|d| started + d);
    let meter = (progress && std::io::stderr().is_terminal())
        .then(|| Progress::start(shared.clone(), work.requests, started));

    let mut workers = Vec::with_capacity(work.concurrency);
    for _ in 0..work.concurrency.max(1) {
        let client = client.clone();
        let axon = axon.clone();
        let work = work.clone();
        let shared = shared.clone();
        workers.push(tokio::spawn(async move {
            worker(&client, &axon, &work, deadline, &shared).await
        }));
    }

    let mut result = LoadResult::default();
    let mut samples = Vec::new();
    for handle in workers {
        match handle.await {
            Ok(mut w) => {
                samples.append(&mut w.latencies_us);
                result.errors += w.errors;
                if result.first_error.is_none() {
                    result.first_error = w.first_error;
                }
            }
            Err(e) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("worker failed: {e}"));
            }
        }
    }
    result.elapsed = started.elapsed();
    if let Some(meter) = meter {
        meter.finish().await;
    }
    result.ok = samples.len() as u64;
    result.bytes = result.ok.saturating_mul(work.kind.bytes_per_request());
    result.latencies = Latencies::new(samples);
    result
}

#[derive(Debug, Default)]
struct Counters {
    next: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug, Default)]
struct WorkerResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(
    client: &LightningClient,
    axon: &QuicAxonInfo,
    work: &Workload,
    deadline: Option<Instant>,
    shared: &Counters,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    loop {
        if shared.next.fetch_add(1, Ordering::Relaxed) >= work.requests {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let sent = Instant::now();
        match one_request(client, axon, work).await {
            Ok(()) => {
                out.latencies_us.push(micros(sent.elapsed()));
                shared.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    out
}

async fn one_request(
    client: &LightningClient,
    axon: &QuicAxonInfo,
    work: &Workload,
) -> Result<(), String> {
    match &work.kind {
        Kind::Unary {
            synapse,
            data,
            check_echo,
            ..
        } => {
            let request = QuicRequest::new(synapse.as_str(), data.clone());
            let response = client
                .query_axon_with_timeout(axon, request, work.timeout)
                .await
                .map_err(|e| e.to_string())?;
            if !response.success {
                let why = response.error.as_deref().unwrap_or("no error text");
                return Err(format!("handler error: {why}"));
            }
            if *check_echo && response.data != *data {
                return Err(format!(
                    "echo mismatch: sent a {}-byte data map, got {} bytes back",
                    data.raw().len(),
                    response.data.raw().len()
                ));
            }
            Ok(())
        }
        Kind::Stream { synapse, params } => {
            let request =
                QuicRequest::from_typed(synapse.as_str(), params).map_err(|e| e.to_string())?;
            let mut stream = client
                .query_axon_stream_with_timeout(axon, request, work.timeout)
                .await
                .map_err(|e| e.to_string())?;
            let mut count: u64 = 0;
            while let Some(chunk) = stream.next_chunk().await.map_err(|e| e.to_string())? {
                count += 1;
                if chunk.len() as u64 != params.chunk_size {
                    return Err(format!(
                        "chunk {count} has {} bytes, expected {}",
                        chunk.len(),
                        params.chunk_size
                    ));
                }
            }
            if count != params.n {
                return Err(format!("got {count} chunks, expected {}", params.n));
            }
            Ok(())
        }
    }
}

/// A carriage-return progress line on stderr, refreshed a few times a second once a run
/// has lasted a second (short runs stay quiet).
struct Progress {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<bool>,
}

impl Progress {
    fn start(shared: Arc<Counters>, total: u64, started: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut shown = false;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let elapsed = started.elapsed();
                if elapsed < Duration::from_secs(1) {
                    continue;
                }
                let ok = shared.ok.load(Ordering::Relaxed);
                let errors = shared.errors.load(Ordering::Relaxed);
                let rate = per_second(ok as f64, elapsed);
                let of = if total == u64::MAX {
                    String::new()
                } else {
                    format!("/{total}")
                };
                eprint!(
                    "\r\x1b[2K  {done}{of}  ok {ok}  errors {errors}  {rate:.0} req/s",
                    done = ok + errors
                );
                shown = true;
            }
            shown
        });
        Self { stop, task }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(true) = self.task.await {
            eprint!("\r\x1b[2K");
        }
    }
}

/// The data map `{"payload": <size bytes>}`, encoded directly (MessagePack `bin`).
pub fn payload_map(size: usize) -> Result<DataMap, String> {
    let mut raw = Vec::with_capacity(size + 16);
    raw.push(0x81); // map of one entry
    raw.push(0xa0 | 7); // fixstr of 7 bytes
    raw.extend_from_slice(b"payload");
    if let Ok(n) = u8::try_from(size) {
        raw.extend_from_slice(&[0xc4, n]);
    } else if let Ok(n) = u16::try_from(size) {
        raw.push(0xc5);
        raw.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(size) {
        raw.push(0xc6);
        raw.extend_from_slice(&n.to_be_bytes());
    } else {
        return Err(format!("payload of {size} bytes is too large"));
    }
    raw.extend(filler(size));
    DataMap::from_raw(raw.into()).map_err(|e| format!("cannot build the payload map: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_repeats_its_pattern() {
        for len in [0, 1, 250, 251, 252, 1000, 65_537] {
            let f = filler(len);
            assert_eq!(f.len(), len);
            assert!(
                f.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
                "{len}"
            );
        }
    }

    #[test]
    fn payload_map_holds_the_payload() {
        for size in [0, 1, 255, 256, 65_535, 65_536, 1 << 20] {
            let map = payload_map(size).unwrap();
            assert_eq!(map.len(), 1);
            let value = map.get("payload").unwrap();
            let bytes = value.as_slice().unwrap();
            assert_eq!(bytes.len(), size);
            assert_eq!(bytes, &filler(size)[..]);
        }
    }

    #[test]
    fn stream_params_round_trip() {
        let params = StreamParams {
            n: 1000,
            chunk_size: 1 << 20,
        };
        let request = QuicRequest::from_typed("stream", &params).unwrap();
        let back: StreamParams = request.data.deserialize().unwrap();
        assert_eq!((back.n, back.chunk_size), (1000, 1 << 20));
    }
}
