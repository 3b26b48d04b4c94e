//! Wire interoperability between Lightning and the published `btlightning` 0.2.15, the
//! implementation every other miner and validator on a subnet runs today.
//!
//! Everything here runs over real UDP sockets on 127.0.0.1, real TLS and real sr25519
//! keys. The scenarios are written once, generic over Lightning's [`Runtime`], and
//! instantiated for tokio and smol by `tests/interop.rs`; btlightning itself always runs
//! on tokio (it needs it), so every test body runs inside a tokio runtime and Lightning's
//! smol endpoints run beside it on smol's executor and reactor.
//!
//! * [`bt_to_lightning`]: a btlightning validator querying a Lightning miner;
//! * [`lightning_to_bt`]: a Lightning validator querying a btlightning miner, including
//!   QUIC Retry and several hotkeys claiming one address;
//! * [`rejections`]: refusals across the two implementations (bad signature, replayed and
//!   stale handshakes, unexpected miner hotkey);
//! * [`raw`] and [`relay`]: the tools those need (raw quinn connections speaking
//!   btlightning's wire structs, and a UDP relay that counts Retry packets).
#![deny(missing_docs)]
// Test support: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bt_to_lightning;
pub mod lightning_to_bt;
pub mod raw;
pub mod rejections;
pub mod relay;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use btlightning::{
    AsyncSynapseHandler, LightningError as BtError, LightningServerConfig, StreamingSynapseHandler,
    SynapseHandler,
};
use lightning_driver::{DataMap, Identity, LightningServer, QuicAxonInfo, Runtime, ServerBuilder};
use serde::{Deserialize, Serialize};

/// Seed of the miner on either side (the reference's own tests use 32 × 0x01).
pub const MINER_SEED: [u8; 32] = [0x01; 32];
/// Seed of the validator on either side (the reference's tests use 32 × 0x02).
pub const VALIDATOR_SEED: [u8; 32] = [0x02; 32];
/// A key nobody serves with: the wrong signer, the wrong expected miner, a fake hotkey.
pub const STRANGER_SEED: [u8; 32] = [0x03; 32];
/// Another key, for a second fake hotkey.
pub const SECOND_STRANGER_SEED: [u8; 32] = [0x04; 32];

/// The SS58 hotkey (prefix 42) of a seed, derived by Lightning.
pub fn hotkey(seed: &[u8; 32]) -> String {
    Identity::from_seed(seed).hotkey().to_string()
}

/// Runs `future` on a fresh two-worker tokio runtime: btlightning's client and server need
/// tokio whatever runtime the Lightning side uses.
pub fn run<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

// ----- data ---------------------------------------------------------------------------------

/// btlightning's data map type.
pub type BtData = HashMap<String, rmpv::Value>;

/// `{"payload": <size bytes as bin>}`, a pattern that is not all one byte so reordering or
/// truncation shows.
pub fn payload(size: usize) -> BtData {
    let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    HashMap::from([("payload".to_string(), rmpv::Value::Binary(bytes))])
}

/// A btlightning data map as Lightning's.
pub fn to_ours(data: &BtData) -> DataMap {
    DataMap::try_from(data.clone()).expect("string keys")
}

/// A Lightning data map as btlightning's.
pub fn to_bt(data: &DataMap) -> BtData {
    data.to_values().expect("well-formed data map")
}

/// `{"n": n, "chunk_size": size}` plus `{"fail_after": k}` when given: the request both
/// implementations' `stream` handlers understand.
pub fn stream_data(n: u64, chunk_size: u64, fail_after: Option<u64>) -> BtData {
    let mut data = HashMap::from([
        ("n".to_string(), rmpv::Value::from(n)),
        ("chunk_size".to_string(), rmpv::Value::from(chunk_size)),
    ]);
    if let Some(k) = fail_after {
        data.insert("fail_after".to_string(), rmpv::Value::from(k));
    }
    data
}

/// Chunk `i` of a `stream` response: `size` bytes of `i % 256`.
pub fn chunk(i: u64, size: u64) -> Vec<u8> {
    vec![(i % 256) as u8; size as usize]
}

fn stream_params(data: &BtData) -> (u64, u64, Option<u64>) {
    let get = |key: &str| data.get(key).and_then(rmpv::Value::as_u64);
    (
        get("n").unwrap_or(0),
        get("chunk_size").unwrap_or(0),
        get("fail_after"),
    )
}

/// A data map with every MessagePack kind btlightning's `rmpv` values carry: nil, bool,
/// negative int, u64 max, f32, f64, str, bin, array, a nested map with a non-string key,
/// ext.
pub fn value_kinds() -> BtData {
    use rmpv::Value;
    [
        ("nil", Value::Nil),
        ("bool", Value::Boolean(true)),
        ("neg", Value::from(-123_456_789i64)),
        ("big", Value::from(u64::MAX)),
        ("f32", Value::F32(1.5)),
        ("f64", Value::F64(-2.25)),
        ("str", Value::from("héllo")),
        ("bin", Value::Binary(vec![0, 1, 2, 255])),
        (
            "array",
            Value::Array(vec![Value::from(1), Value::from("two"), Value::Nil]),
        ),
        (
            "map",
            Value::Map(vec![
                (Value::from("k"), Value::from(1)),
                (Value::from(7), Value::from("int key")),
            ]),
        ),
        ("ext", Value::Ext(5, vec![9, 8, 7])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Typed request of the `profile` synapse: enough shapes (nested struct, optional fields,
/// sequences, a float) to catch a disagreement in the named encoding (PROTOCOL §4.4).
/// Enums are left to [`Ranked`]: btlightning cannot decode them (see there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRequest {
    /// A string field.
    pub name: String,
    /// A negative-capable integer.
    pub score: i64,
    /// A float.
    pub ratio: f64,
    /// A sequence of strings.
    pub tags: Vec<String>,
    /// An optional field that is absent.
    pub nickname: Option<String>,
    /// An optional field that is present.
    pub motto: Option<String>,
    /// A nested struct.
    pub position: Position,
}

/// Nested struct inside [`ProfileRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Horizontal.
    pub x: i32,
    /// Vertical.
    pub y: i32,
}

/// A unit enum: both implementations encode a unit variant as its index (PROTOCOL §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Tier {
    /// Variant 0.
    Bronze,
    /// Variant 1.
    Silver,
    /// Variant 2.
    Gold,
}

/// Typed response of the `profile` synapse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileReply {
    /// `"hello, <name>"`.
    pub greeting: String,
    /// `score * 2`.
    pub doubled: i64,
    /// `ratio / 2`.
    pub half_ratio: f64,
    /// Number of tags.
    pub tag_count: u32,
    /// Whether a nickname was given.
    pub had_nickname: bool,
    /// The motto, upper-cased.
    pub motto: Option<String>,
    /// The position moved by (1, -1).
    pub moved: Position,
}

/// Typed data of the `rank` synapse, which carries a unit enum.
///
/// btlightning 0.2.15 encodes the variant as its index (its named serializer) but decodes
/// typed data with `rmpv::ext::from_value`, which only reads enums as
/// `[index, [fields]]`: its typed handlers and `deserialize_data` refuse the encoding its
/// own `from_typed` and typed handlers produce. Lightning reads the index form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// Who.
    pub name: String,
    /// The tier.
    pub tier: Tier,
}

/// The `rank` handler logic: promote by one tier (saturating).
pub fn rank(req: Ranked) -> Ranked {
    Ranked {
        name: req.name,
        tier: match req.tier {
            Tier::Bronze => Tier::Silver,
            Tier::Silver | Tier::Gold => Tier::Gold,
        },
    }
}

/// The `profile` handler logic, shared by both implementations' miners so a mismatch can
/// only come from the wire.
pub fn profile(req: ProfileRequest) -> ProfileReply {
    ProfileReply {
        greeting: format!("hello, {}", req.name),
        doubled: req.score * 2,
        half_ratio: req.ratio / 2.0,
        tag_count: req.tags.len() as u32,
        had_nickname: req.nickname.is_some(),
        motto: req.motto.map(|m| m.to_uppercase()),
        moved: Position {
            x: req.position.x + 1,
            y: req.position.y - 1,
        },
    }
}

/// A request exercising every field of [`ProfileRequest`].
pub fn sample_profile() -> ProfileRequest {
    ProfileRequest {
        name: "ada".into(),
        score: -21,
        ratio: 0.75,
        tags: vec!["a".into(), "bb".into(), "ccc".into()],
        nickname: None,
        motto: Some("keep going".into()),
        position: Position { x: 10, y: -10 },
    }
}

// ----- handler bookkeeping ------------------------------------------------------------------

/// Counts handler runs that ended without finishing: dropped (cancelled or aborted by the
/// server) or stopped because their stream went away. A deliberate failure is not counted.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<AtomicUsize>);

impl Tally {
    /// A guard for one handler run; call [`Run::finish`] when it completes on purpose.
    pub fn start(&self) -> Run {
        Run {
            tally: self.0.clone(),
            finished: false,
        }
    }

    /// Runs that ended without finishing so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits (on tokio) until the count reaches `n`, or returns the count after 5 s.
    pub async fn wait_for(&self, n: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.count() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.count()
    }
}

/// One handler run; counts itself in its [`Tally`] when dropped unfinished.
#[derive(Debug)]
pub struct Run {
    tally: Arc<AtomicUsize>,
    finished: bool,
}

impl Run {
    /// The run completed (successfully or by deliberate failure).
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.finished {
            self.tally.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `{"ms": ms}`: how long the `slow` handlers take.
pub fn slow_data(ms: u64) -> BtData {
    HashMap::from([("ms".to_string(), rmpv::Value::from(ms))])
}

fn slow_ms(data: &BtData) -> u64 {
    data.get("ms")
        .and_then(rmpv::Value::as_u64)
        .unwrap_or(5_000)
}

// ----- a Lightning miner --------------------------------------------------------------------

/// A Lightning miner on 127.0.0.1 (port 0) with the handlers the suite queries:
/// * `echo` (sync) and `echo_async` return the data map unchanged;
/// * `fail` returns an error;
/// * `stream` answers [`stream_data`] with `n` chunks ([`chunk`]), failing after
///   `fail_after` chunks when asked;
/// * `profile` and `rank` are typed ([`profile`], [`rank`]);
/// * `slow` (async) answers [`slow_data`] after `ms` milliseconds;
/// * `slow_stream` sends one 16-byte chunk, then takes `ms` milliseconds to end.
pub fn lightning_miner<R: Runtime>(runtime: R) -> ServerBuilder<R> {
    lightning_miner_tallied(runtime, Tally::default())
}

/// [`lightning_miner`] whose `stream` and `slow` handlers report unfinished runs to
/// `tally`.
pub fn lightning_miner_tallied<R: Runtime>(runtime: R, tally: Tally) -> ServerBuilder<R> {
    let stream_tally = tally.clone();
    let slow_runtime = runtime.clone();
    let slow_stream_runtime = runtime.clone();
    lightning_tests::basic_server(runtime, MINER_SEED)
        .streaming_handler("stream", move |data, _ctx, sink| {
            let run = stream_tally.start();
            async move {
                let (n, size, fail_after) = stream_params(&to_bt(&data));
                for i in 0..n {
                    if fail_after == Some(i) {
                        run.finish();
                        return Err("deliberate stream failure".to_string());
                    }
                    sink.send(chunk(i, size)).await.map_err(|e| e.to_string())?;
                }
                run.finish();
                Ok(())
            }
        })
        .streaming_handler("slow_stream", move |data, _ctx, sink| {
            let runtime = slow_stream_runtime.clone();
            async move {
                sink.send(chunk(0, 16)).await.map_err(|e| e.to_string())?;
                lightning_tests::sleep(&runtime, Duration::from_millis(slow_ms(&to_bt(&data))))
                    .await;
                Ok::<_, String>(())
            }
        })
        .async_handler("slow", move |data, _ctx| {
            let run = tally.start();
            let runtime = slow_runtime.clone();
            async move {
                lightning_tests::sleep(&runtime, Duration::from_millis(slow_ms(&to_bt(&data))))
                    .await;
                run.finish();
                Ok::<_, String>(data)
            }
        })
        .typed_handler("profile", |req: ProfileRequest, _ctx| {
            Ok::<_, String>(profile(req))
        })
        .typed_handler("rank", |req: Ranked, _ctx| Ok::<_, String>(rank(req)))
}

/// The record a validator needs to reach a Lightning miner.
pub fn our_axon(server: &LightningServer) -> btlightning::QuicAxonInfo {
    bt_axon(server.hotkey(), server.local_addr())
}

/// A btlightning miner record.
pub fn bt_axon(hotkey: &str, addr: SocketAddr) -> btlightning::QuicAxonInfo {
    btlightning::QuicAxonInfo::new(hotkey.to_string(), addr.ip().to_string(), addr.port(), 4)
}

// ----- a btlightning validator --------------------------------------------------------------

/// A btlightning validator signing with `seed`; call `initialize_connections` next.
pub fn bt_client(seed: [u8; 32]) -> btlightning::LightningClient {
    let mut client = btlightning::LightningClient::new(hotkey(&seed));
    client.set_signer(Box::new(btlightning::Sr25519Signer::from_seed(seed)));
    client
}

/// A btlightning validator with `seed` that has run `initialize_connections` for `axon`.
pub async fn bt_client_of(
    seed: [u8; 32],
    axon: &btlightning::QuicAxonInfo,
) -> btlightning::LightningClient {
    let mut client = bt_client(seed);
    client
        .initialize_connections(vec![axon.clone()])
        .await
        .expect("initialize");
    client
}

// ----- a btlightning miner ------------------------------------------------------------------

struct BtEcho;

impl SynapseHandler for BtEcho {
    fn handle(&self, _synapse: &str, data: BtData) -> btlightning::Result<BtData> {
        Ok(data)
    }
}

struct BtEchoAsync;

#[async_trait::async_trait]
impl AsyncSynapseHandler for BtEchoAsync {
    async fn handle(&self, _synapse: &str, data: BtData) -> btlightning::Result<BtData> {
        Ok(data)
    }
}

struct BtFail;

impl SynapseHandler for BtFail {
    fn handle(&self, _synapse: &str, _data: BtData) -> btlightning::Result<BtData> {
        Err(BtError::handler("deliberate failure"))
    }
}

struct BtStream(Tally);

#[async_trait::async_trait]
impl StreamingSynapseHandler for BtStream {
    async fn handle(
        &self,
        _synapse: &str,
        data: BtData,
        sender: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> btlightning::Result<()> {
        let run = self.0.start();
        let (n, size, fail_after) = stream_params(&data);
        for i in 0..n {
            if fail_after == Some(i) {
                run.finish();
                return Err(BtError::handler("deliberate stream failure"));
            }
            sender
                .send(chunk(i, size))
                .await
                .map_err(|e| BtError::Stream(e.to_string()))?;
        }
        run.finish();
        Ok(())
    }
}

struct BtSlow;

#[async_trait::async_trait]
impl AsyncSynapseHandler for BtSlow {
    async fn handle(&self, _synapse: &str, data: BtData) -> btlightning::Result<BtData> {
        tokio::time::sleep(Duration::from_millis(slow_ms(&data))).await;
        Ok(data)
    }
}

/// Sends one 16-byte chunk, then takes `ms` milliseconds before the next.
struct BtSlowStream;

#[async_trait::async_trait]
impl StreamingSynapseHandler for BtSlowStream {
    async fn handle(
        &self,
        _synapse: &str,
        data: BtData,
        sender: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> btlightning::Result<()> {
        sender
            .send(chunk(0, 16))
            .await
            .map_err(|e| BtError::Stream(e.to_string()))?;
        tokio::time::sleep(Duration::from_millis(slow_ms(&data))).await;
        Ok(())
    }
}

/// A btlightning miner serving on 127.0.0.1 (port 0) with the same handlers as
/// [`lightning_miner`], each registered the btlightning way, plus `slow_stream` (one chunk,
/// then `ms` milliseconds before the end).
pub struct BtMiner {
    server: Arc<btlightning::LightningServer>,
    serving: tokio::task::JoinHandle<btlightning::Result<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its hotkey.
    pub hotkey: String,
    /// Unfinished runs of its `stream` handler.
    pub tally: Tally,
}

impl BtMiner {
    /// Starts a miner with the default configuration (QUIC Retry on, as deployed).
    pub async fn start() -> Self {
        Self::start_with(LightningServerConfig::default()).await
    }

    /// Starts a miner with `config`. Must run inside a tokio runtime.
    pub async fn start_with(config: LightningServerConfig) -> Self {
        Self::start_on(config, 0).await
    }

    /// Starts a miner with `config` on 127.0.0.1:`port` (0 picks a free port).
    pub async fn start_on(config: LightningServerConfig, port: u16) -> Self {
        let hotkey = hotkey(&MINER_SEED);
        let tally = Tally::default();
        let mut server = btlightning::LightningServer::with_config(
            hotkey.clone(),
            "127.0.0.1".into(),
            port,
            config,
        )
        .expect("btlightning server config");
        server.set_miner_keypair(MINER_SEED);
        server
            .register_synapse_handler("echo".into(), Arc::new(BtEcho))
            .await
            .expect("register echo");
        server
            .register_async_synapse_handler("echo_async".into(), Arc::new(BtEchoAsync))
            .await
            .expect("register echo_async");
        server
            .register_synapse_handler("fail".into(), Arc::new(BtFail))
            .await
            .expect("register fail");
        server
            .register_streaming_handler("stream".into(), Arc::new(BtStream(tally.clone())))
            .await
            .expect("register stream");
        server
            .register_async_synapse_handler("slow".into(), Arc::new(BtSlow))
            .await
            .expect("register slow");
        server
            .register_streaming_handler("slow_stream".into(), Arc::new(BtSlowStream))
            .await
            .expect("register slow_stream");
        server
            .register_synapse_handler(
                "profile".into(),
                btlightning::typed_handler(|req: ProfileRequest| {
                    Ok::<_, std::convert::Infallible>(profile(req))
                }),
            )
            .await
            .expect("register profile");
        server
            .register_synapse_handler(
                "rank".into(),
                btlightning::typed_handler(|req: Ranked| {
                    Ok::<_, std::convert::Infallible>(rank(req))
                }),
            )
            .await
            .expect("register rank");
        server.start().await.expect("btlightning start");
        let addr = server.local_addr().expect("bound");
        let server = Arc::new(server);
        let serving = tokio::spawn({
            let server = server.clone();
            async move { server.serve_forever().await }
        });
        Self {
            server,
            serving,
            addr,
            hotkey,
            tally,
        }
    }

    /// The record a Lightning validator uses to reach this miner.
    pub fn axon(&self) -> QuicAxonInfo {
        QuicAxonInfo::from_addr(self.hotkey.clone(), self.addr)
    }

    /// A record claiming `hotkey` at this miner's address.
    pub fn axon_claiming(&self, hotkey: &str) -> QuicAxonInfo {
        QuicAxonInfo::from_addr(hotkey, self.addr)
    }

    /// btlightning's own connection table: (`total_connections`, `verified_connections`,
    /// validator hotkeys with an entry).
    pub async fn connections(&self) -> (usize, usize, Vec<String>) {
        let stats = self.server.get_connection_stats().await.expect("stats");
        let count = |key: &str| {
            stats
                .get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX)
        };
        let mut hotkeys: Vec<String> = stats
            .keys()
            .filter_map(|k| k.strip_prefix("connection_").map(str::to_string))
            .collect();
        hotkeys.sort();
        (
            count("total_connections"),
            count("verified_connections"),
            hotkeys,
        )
    }

    /// Waits until btlightning's table shows `verified` validators (its bookkeeping runs on
    /// its own tasks), or returns what it shows after 5 s.
    pub async fn wait_verified(&self, verified: usize) -> (usize, usize, Vec<String>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.connections().await;
            if seen.1 == verified || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and its accept loop.
    pub async fn stop(self) {
        self.server.stop().await.expect("btlightning stop");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.serving).await;
    }
}

/// Waits (on tokio) until nothing is bound to UDP `addr` any more, so a restarted server
/// can take the same port.
pub async fn wait_port_free(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while std::net::UdpSocket::bind(addr).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still bound after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls every future to completion concurrently on the current task (no spawning, so it
/// works for futures tied to any runtime).
pub async fn join_all<T, F: Future<Output = T>>(futures: impl IntoIterator<Item = F>) -> Vec<T> {
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> = futures
        .into_iter()
        .enumerate()
        .map(|(i, f)| (i, Box::pin(f)))
        .collect();
    let mut done: Vec<Option<T>> = (0..pending.len()).map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => {
                done[*i] = Some(out);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter().map(|o| o.expect("completed")).collect()
}
