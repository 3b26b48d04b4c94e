//! Attack traffic for the adversarial suite, on real UDP sockets.
//!
//! Two kinds of attacker, both bound to loopback addresses other than 127.0.0.1 (which the
//! honest validator uses), so that the server's per-IP limits see them as other hosts:
//!
//! * **agents**: raw QUIC clients on quinn-proto, one socket each, holding a number of
//!   connections and following a [`Plan`]: which handshake to send (none, a valid one, a
//!   forged one, captured bytes) and what to do next (hold, reconnect, slowloris streams,
//!   arbitrary first bytes on stream after stream). quinn-proto is used directly because no
//!   Lightning client API writes header-only or oversize frames;
//! * **sprayers**: plain sockets sending datagrams that are not valid QUIC, or fresh QUIC
//!   Initials that are never followed up, at a paced rate.
//! * **validators**: real Lightning clients ([`ValidatorSpec`]) running batches of queries,
//!   for the kinds of honest use that once broke a miner (queries abandoned by their
//!   timeout, large concurrent requests, streams of large chunks).
//!
//! Agents vanish when stopped (no CONNECTION_CLOSE), so the server must clean up on its own.
//!
//! The attackers run in a child process ([`RemoteAttack`]): the test binary started again
//! on one ignored test whose body is [`child_main`]. That keeps their memory out of the
//! VmRSS measured for the server, and gives them their own scheduler share.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use lightning_proto::handshake;
use lightning_proto::identity::Keypair;
use lightning_proto::message::{HandshakeRequest, HandshakeResponse, WireMessage};
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint,
    EndpointConfig, Event, IdleTimeout, ReadError, StreamEvent, StreamId, TransportConfig,
    TransportErrorCode, VarInt, WriteError,
};

/// The `n`th attacker source address: 127.0.0.2, 127.0.0.3, ... (never 127.0.0.1).
pub fn attacker_ip(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8))
}

/// Named counters shared by every thread of an attack.
#[derive(Debug, Default)]
pub struct Counters(Mutex<BTreeMap<String, u64>>);

impl Counters {
    /// Adds `n` to `key`.
    pub fn add(&self, key: &str, n: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key.to_string()).or_default() += n;
    }

    /// The value of `key` (0 if never touched).
    pub fn get(&self, key: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).copied().unwrap_or(0)
    }

    /// Sum over every key starting with `prefix`.
    pub fn sum_prefix(&self, prefix: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum()
    }

    /// Reads back what [`summary`](Self::summary) wrote.
    pub fn parse(summary: &str) -> Self {
        let counters = Self::default();
        for pair in summary.split_whitespace() {
            if let Some((k, v)) = pair.rsplit_once('=') {
                counters.add(k, v.parse().unwrap_or(0));
            }
        }
        counters
    }

    /// `key=value` pairs, for the printed report.
    pub fn summary(&self) -> String {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A small deterministic generator (splitmix64); attack traffic needs variety, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// 32 lowercase hex digits: the nonce format of PROTOCOL §5.4.
    pub fn nonce(&mut self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A correctly signed handshake frame (header included) for `key`, bound to `fingerprint`.
pub fn signed_handshake(key: &Keypair, fingerprint: &str, rng: &mut Rng) -> Bytes {
    let hotkey = key.hotkey();
    let nonce = rng.nonce();
    let timestamp = unix_secs();
    let message = handshake::request_message(&hotkey, timestamp, &nonce, fingerprint);
    let signature = handshake::encode_signature(&key.sign(message.as_bytes()));
    HandshakeRequest {
        validator_hotkey: hotkey,
        timestamp,
        nonce,
        signature,
    }
    .encode()
    .expect("a handshake encodes")
    .to_bytes()
}

/// A well-formed handshake frame for `hotkey` whose signature is 64 random bytes: it passes
/// every cheap check and fails only at sr25519 verification.
pub fn forged_handshake(hotkey: &str, rng: &mut Rng) -> Bytes {
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&rng.bytes(64));
    HandshakeRequest {
        validator_hotkey: hotkey.to_string(),
        timestamp: unix_secs(),
        nonce: rng.nonce(),
        signature: handshake::encode_signature(&signature),
    }
    .encode()
    .expect("a handshake encodes")
    .to_bytes()
}

/// A frame header: type byte and declared payload length (PROTOCOL §3).
pub fn frame_header(ty: u8, len: u32) -> Vec<u8> {
    let mut h = vec![ty];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

// ----- QUIC client configuration ------------------------------------------------------------

/// A quinn-proto client configuration speaking ALPN `btlightning`.
pub fn quic_client_config() -> ClientConfig {
    quic_client_config_with(|_| {})
}

/// A deaf agent's config: flow-control windows small enough that the server's answers
/// stay on the server (quinn's default would absorb 1.25 MB of every stream here).
fn deaf_client_config() -> ClientConfig {
    quic_client_config_with(|t| {
        t.stream_receive_window(VarInt::from_u32(64 * 1024));
        t.receive_window(VarInt::from_u32(1024 * 1024));
    })
}

fn quic_client_config_with(edit: impl FnOnce(&mut TransportConfig)) -> ClientConfig {
    let tls = lightning_tests::accept_any_cert_tls();
    let crypto = QuicClientConfig::try_from(tls).expect("QUIC TLS config");
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(Some(
        IdleTimeout::try_from(Duration::from_secs(10)).expect("idle timeout"),
    ));
    // No keep-alives: whatever keeps a connection alive must come from the server.
    transport.keep_alive_interval(None);
    // Enough in flight to push megabytes per stream on a few connections.
    transport.send_window(64 * 1024 * 1024);
    edit(&mut transport);
    let mut config = ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    config
}

fn new_endpoint() -> Endpoint {
    Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None)
}

/// The fingerprint of the certificate the server presented on `conn`.
fn peer_fingerprint(conn: &Connection) -> Option<String> {
    let identity = conn.crypto_session().peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    chain
        .first()
        .map(|c| handshake::cert_fingerprint(c.as_ref()))
}

// ----- plans --------------------------------------------------------------------------------

/// What an agent's connection sends on its first stream once QUIC is up.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No handshake at all.
    None,
    /// A correctly signed handshake with the connection's key.
    Valid,
    /// A handshake for the connection's hotkey with a random signature.
    Forged,
    /// Exactly these bytes (a captured handshake, a bare header, ...), then FIN.
    Raw(Bytes),
}

/// What a connection does after its handshake (or at once with [`Auth::None`]).
#[derive(Debug, Clone)]
pub enum Then {
    /// Keep the connection and send nothing more.
    Hold,
    /// Close the connection; the agent opens a new one.
    Reconnect,
    /// Keep every stream the server allows open, each carrying only these bytes and never
    /// a FIN; reopen streams as the server kills them.
    Slowloris(Bytes),
    /// Keep opening streams, each carrying the next of these payloads and a FIN.
    Streams(Vec<Bytes>),
    /// Keep opening streams, each carrying the next of these payloads and a FIN, as fast
    /// as the server grants stream credit, and never read an answer.
    Deaf(Vec<Bytes>),
    /// Like `Slowloris`, but also write one more byte on one of the streams every `drip`,
    /// so that the connection as a whole never looks idle.
    Hog {
        /// What each stream carries before stalling.
        prefix: Bytes,
        /// Interval between single bytes.
        drip: Duration,
    },
}

/// One agent: a socket on `ip` holding `connections` QUIC connections that follow a plan.
/// A refused handshake closes the connection, and the agent opens another.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Source address.
    pub ip: IpAddr,
    /// Connections kept open at once (a lost one is replaced after `reconnect_delay`).
    pub connections: usize,
    /// The handshake.
    pub auth: Auth,
    /// What follows it.
    pub then: Then,
    /// Keys the connections sign with (round robin); a fresh one per agent when empty.
    pub keys: Vec<Keypair>,
    /// Pause before replacing a lost connection.
    pub reconnect_delay: Duration,
    /// Most streams open at once per connection.
    pub max_streams: usize,
}

impl AgentSpec {
    /// One connection from `ip` following `auth` then `then`.
    pub fn new(ip: IpAddr, auth: Auth, then: Then) -> Self {
        Self {
            ip,
            connections: 1,
            auth,
            then,
            keys: Vec::new(),
            reconnect_delay: Duration::from_millis(20),
            max_streams: 256,
        }
    }

    /// Connections kept open at once.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Signs with these keys.
    pub fn keys(mut self, keys: Vec<Keypair>) -> Self {
        self.keys = keys;
        self
    }

    /// Pause before replacing a lost connection.
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// Most streams open at once per connection.
    pub fn max_streams(mut self, n: usize) -> Self {
        self.max_streams = n;
        self
    }
}

/// A kind of junk datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Junk {
    /// Random bytes of random length (0 to 1500).
    Random,
    /// A QUIC v1 long header (Initial, Handshake, 0-RTT or Retry type) with random contents.
    LongHeader,
    /// A short-header packet with random connection ID and contents.
    ShortHeader,
    /// A real client Initial cut short.
    TruncatedInitial,
    /// A real client Initial with a few bytes flipped.
    CorruptedInitial,
    /// A fresh, complete client Initial (new connection ID), never followed up.
    FreshInitial,
}

/// A sprayer: `sockets` sockets over `ips`, sending about `per_second` datagrams per second,
/// of kinds drawn from `kinds`.
#[derive(Debug, Clone)]
pub struct SpraySpec {
    /// Source addresses (sockets are spread over them).
    pub ips: Vec<IpAddr>,
    /// Sockets, i.e. distinct source ports.
    pub sockets: usize,
    /// Target rate.
    pub per_second: u32,
    /// Kinds, drawn uniformly.
    pub kinds: Vec<Junk>,
}

/// A validator on a real Lightning client (tokio), bound to `ip`, that runs `batches` one
/// after the other against the miner `hotkey` (once, or over and over with `repeat` until
/// the attack stops).
#[derive(Debug, Clone)]
pub struct ValidatorSpec {
    /// Source address.
    pub ip: IpAddr,
    /// The validator's key.
    pub seed: [u8; 32],
    /// The miner's hotkey.
    pub hotkey: String,
    /// Run one after the other.
    pub batches: Vec<Batch>,
    /// Run the batches again and again until stopped, instead of once.
    pub repeat: bool,
}

/// `total` queries of one kind, `concurrency` at a time.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Prefix of this batch's counters (`<name>_ok`, `<name>_err_<kind>`, ...).
    pub name: &'static str,
    /// The synapse asked.
    pub synapse: &'static str,
    /// The request's data map.
    pub data: lightning_tokio::DataMap,
    /// A streaming query (every chunk is read) instead of a unary one.
    pub streaming: bool,
    /// Queries in the batch.
    pub total: u64,
    /// Queries in flight at once.
    pub concurrency: u64,
    /// Each query's deadline (`None`: as long as the connection lives).
    pub timeout: Option<Duration>,
}

// ----- the running attack -------------------------------------------------------------------

/// A running attack. [`stop`](Self::stop) ends it: agents vanish without closing.
#[derive(Debug)]
pub struct Attack {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Attack {
    /// Starts the agents (on one thread with its own runtime) and the sprayers (one thread
    /// each) against `server`.
    pub fn start(server: SocketAddr, stage: Stage) -> Attack {
        let Stage {
            agents,
            sprays,
            validators,
            ..
        } = stage;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut threads = Vec::new();
        for spec in validators {
            let stop = stop.clone();
            let counters = counters.clone();
            threads.push(std::thread::spawn(move || {
                run_validator(server, spec, counters, stop)
            }));
        }
        if !agents.is_empty() {
            let stop = stop.clone();
            let counters = counters.clone();
            threads.push(std::thread::spawn(move || {
                run_agents(server, agents, counters, stop)
            }));
        }
        for (i, spec) in sprays.into_iter().enumerate() {
            let stop = stop.clone();
            let counters = counters.clone();
            threads.push(std::thread::spawn(move || {
                spray(server, spec, i as u64, counters, stop)
            }));
        }
        Attack {
            stop,
            threads,
            counters,
        }
    }

    /// The attack's counters so far.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Stops every thread and returns the counters. Panics if an attacker thread panicked.
    pub fn stop(self) -> Arc<Counters> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("attacker thread panicked");
        }
        self.counters
    }
}

/// Runs one [`ValidatorSpec`] on a runtime of its own; a finite one adds 1 to
/// [`VALIDATORS_DONE`] when its batches are over, then stays connected until the stop.
fn run_validator(
    server: SocketAddr,
    spec: ValidatorSpec,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    lightning_tests::tokio_block_on(async move {
        let client = lightning_tokio::ClientBuilder::new()
            .seed(spec.seed)
            .bind_addr(SocketAddr::new(spec.ip, 0))
            .max_stream_payload_bytes(1 << 30)
            .build()
            .expect("attacker validator");
        let axon = lightning_tokio::QuicAxonInfo::from_addr(&spec.hotkey, server);
        let report = client
            .initialize_connections([axon.clone()])
            .await
            .expect("connect");
        assert_eq!(report.authenticated.len(), 1, "{report:?}");
        loop {
            for batch in &spec.batches {
                run_batch(&client, &axon, batch, &counters, &stop).await;
            }
            if !spec.repeat || stop.load(Ordering::SeqCst) {
                break;
            }
        }
        if !spec.repeat {
            counters.add(VALIDATORS_DONE, 1);
        }
        // Stay connected until the attack stops, as a validator would, then leave
        // properly: these are honest validators, and the miner need not wait for its idle
        // timeout to forget them.
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = client.close_all_connections().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
}

/// Runs `batch.total` queries, `batch.concurrency` at a time (fewer once stopped), and
/// counts their outcomes under the batch's name: `_ok`, `_err_<LightningError variant>`,
/// `_chunks`, `_bytes`.
async fn run_batch(
    client: &lightning_tokio::LightningClient,
    axon: &lightning_tokio::QuicAxonInfo,
    batch: &Batch,
    counters: &Arc<Counters>,
    stop: &Arc<AtomicBool>,
) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..batch.concurrency)
        .map(|_| {
            let (client, axon, batch) = (client.clone(), axon.clone(), batch.clone());
            let (counters, stop, next) = (counters.clone(), stop.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < batch.total {
                    let outcome = one_query(&client, &axon, &batch, &counters).await;
                    let key = match outcome {
                        Ok(()) => "ok".to_string(),
                        Err(e) => {
                            // The first few, in full, on stderr (the test's output).
                            let shown = format!("printed_errors_{}", batch.name);
                            if counters.get(&shown) < 3 {
                                counters.add(&shown, 1);
                                eprintln!("attacker validator, {}: {e}", batch.name);
                            }
                            // The variant's name: `Timeout(100ms)` counts as `err_Timeout`.
                            let debug = format!("{e:?}");
                            let end = debug
                                .find(|c: char| !c.is_ascii_alphanumeric())
                                .unwrap_or(debug.len());
                            format!("err_{}", &debug[..end])
                        }
                    };
                    counters.add(&format!("{}_{key}", batch.name), 1);
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("validator worker");
    }
}

/// One query of `batch`: a unary answer must echo the request's data map, a stream is
/// read to its end.
async fn one_query(
    client: &lightning_tokio::LightningClient,
    axon: &lightning_tokio::QuicAxonInfo,
    batch: &Batch,
    counters: &Counters,
) -> Result<(), lightning_tokio::LightningError> {
    let request = lightning_tokio::QuicRequest::new(batch.synapse, batch.data.clone());
    if !batch.streaming {
        let response = match batch.timeout {
            Some(t) => client.query_axon_with_timeout(axon, request, t).await,
            None => client.query_axon(axon, request).await,
        }?
        .into_result()?;
        if response.data != batch.data {
            // The miner answered, but not with the request: counted as its failure.
            return Err(lightning_tokio::LightningError::Remote(
                "echo mismatch".into(),
            ));
        }
        counters.add(
            &format!("{}_bytes", batch.name),
            response.data.raw().len() as u64,
        );
        return Ok(());
    }
    let mut stream = match batch.timeout {
        Some(t) => {
            client
                .query_axon_stream_with_timeout(axon, request, t)
                .await
        }
        None => client.query_axon_stream(axon, request).await,
    }?;
    // Counted once per query, whatever its end: chunks arrive by the thousand.
    let (mut chunks, mut bytes) = (0u64, 0u64);
    let end = loop {
        match stream.next_chunk().await {
            Ok(Some(chunk)) => {
                if chunks == 0 {
                    // The miner received the query and its handler answered.
                    counters.add(&format!("{}_started", batch.name), 1);
                }
                chunks += 1;
                bytes += chunk.len() as u64;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    counters.add(&format!("{}_chunks", batch.name), chunks);
    counters.add(&format!("{}_bytes", batch.name), bytes);
    end
}

fn run_agents(
    server: SocketAddr,
    specs: Vec<AgentSpec>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("attacker runtime");
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let config = match spec.then {
                Then::Deaf(_) => deaf_client_config(),
                _ => quic_client_config(),
            };
            let agent = Agent::new(
                server,
                spec,
                config,
                i as u64,
                counters.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(agent.run()));
        }
        for t in tasks {
            t.await.expect("agent task");
        }
    });
}

#[derive(Debug)]
struct AStream {
    handshake: bool,
    pending: Bytes,
    fin: bool,
    received: Vec<u8>,
}

struct AConn {
    quic: Connection,
    key: Option<Keypair>,
    /// Lost or closed by us: no longer counts towards the agent's connections.
    gone: bool,
    /// `then` has started.
    running: bool,
    streams: HashMap<StreamId, AStream>,
    next_payload: usize,
    last_drip: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Finished,
    Reset,
}

/// Largest response kept per stream; answers are small, and an attacker reads no more.
const MAX_KEPT: usize = 64 * 1024;

struct Agent {
    socket: tokio::net::UdpSocket,
    endpoint: Endpoint,
    config: ClientConfig,
    server: SocketAddr,
    spec: AgentSpec,
    conns: HashMap<ConnectionHandle, AConn>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    rng: Rng,
    own_key: Keypair,
    next_key: usize,
    next_connect_at: Instant,
    tx: Vec<u8>,
}

impl Agent {
    fn new(
        server: SocketAddr,
        spec: AgentSpec,
        config: ClientConfig,
        seed: u64,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(spec.ip, 0)).expect("bind agent");
        socket.set_nonblocking(true).expect("nonblocking");
        let socket = tokio::net::UdpSocket::from_std(socket).expect("register agent socket");
        let mut rng = Rng::new(0xA77A_C4E5 ^ seed.wrapping_mul(0x1000_0001));
        let mut key_seed = [0u8; 32];
        key_seed.copy_from_slice(&rng.bytes(32));
        Self {
            socket,
            endpoint: new_endpoint(),
            config,
            server,
            spec,
            conns: HashMap::new(),
            counters,
            stop,
            rng,
            own_key: Keypair::from_seed(&key_seed),
            next_key: 0,
            next_connect_at: Instant::now(),
            tx: Vec::with_capacity(1500),
        }
    }

    async fn run(mut self) {
        let mut rx = vec![0u8; 65_536];
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.maintain(now);
            self.drip(now);
            self.flush(now).await;
            let deadline = self.next_wake(now);
            let received = {
                let socket = &self.socket;
                let rx = &mut rx;
                futures_lite::future::or(async move { socket.recv_from(rx).await.ok() }, async {
                    tokio::time::sleep_until(deadline.into()).await;
                    None
                })
                .await
            };
            let now = Instant::now();
            if let Some((n, from)) = received {
                self.on_datagram(now, from, &rx[..n]);
                for _ in 0..64 {
                    match self.socket.try_recv_from(&mut rx) {
                        Ok((n, from)) => self.on_datagram(now, from, &rx[..n]),
                        Err(_) => break,
                    }
                }
            }
            self.on_timers(now);
        }
    }

    fn active(&self) -> usize {
        self.conns.values().filter(|c| !c.gone).count()
    }

    fn maintain(&mut self, now: Instant) {
        if now < self.next_connect_at {
            return;
        }
        for _ in self.active()..self.spec.connections {
            match self
                .endpoint
                .connect(now, self.config.clone(), self.server, "localhost")
            {
                Ok((ch, quic)) => {
                    self.counters.add("connects", 1);
                    let key = match self.spec.auth {
                        Auth::Valid | Auth::Forged if !self.spec.keys.is_empty() => {
                            self.next_key += 1;
                            Some(self.spec.keys[self.next_key % self.spec.keys.len()].clone())
                        }
                        Auth::Valid | Auth::Forged => Some(self.own_key.clone()),
                        _ => None,
                    };
                    self.conns.insert(
                        ch,
                        AConn {
                            quic,
                            key,
                            gone: false,
                            running: false,
                            streams: HashMap::new(),
                            next_payload: 0,
                            last_drip: now,
                        },
                    );
                }
                Err(e) => {
                    self.counters.add(&format!("connect_error_{e}"), 1);
                    self.next_connect_at = now + Duration::from_millis(100);
                    return;
                }
            }
        }
    }

    fn next_wake(&mut self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_millis(50);
        if let Then::Hog { drip, .. } = self.spec.then {
            wake = wake.min(now + drip);
        }
        for c in self.conns.values_mut() {
            if let Some(t) = c.quic.poll_timeout() {
                wake = wake.min(t);
            }
        }
        if self.active() < self.spec.connections {
            wake = wake.min(self.next_connect_at.max(now));
        }
        wake
    }

    async fn flush(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            loop {
                // quinn appends to the buffer: it must start empty.
                self.tx.clear();
                let Some(t) = c.quic.poll_transmit(now, 1, &mut self.tx) else {
                    break;
                };
                // Wait for room rather than drop: self-inflicted loss would throttle the
                // bulk attacks through congestion control.
                let datagram = &self.tx[..t.size];
                while let Err(e) = self.socket.try_send_to(datagram, t.destination) {
                    if e.kind() != std::io::ErrorKind::WouldBlock
                        || self.socket.writable().await.is_err()
                    {
                        break;
                    }
                }
            }
        }
    }

    /// One more byte on one stream of each hogging connection, when due.
    fn drip(&mut self, now: Instant) {
        let Then::Hog { drip, .. } = self.spec.then else {
            return;
        };
        for c in self.conns.values_mut() {
            if !c.running || c.gone || now < c.last_drip + drip {
                continue;
            }
            c.last_drip = now;
            let idle = c
                .streams
                .iter()
                .find(|(_, s)| !s.handshake && s.pending.is_empty())
                .map(|(id, _)| *id);
            if let Some(id) = idle {
                if c.quic.send_stream(id).write(&[0x5A]).is_ok() {
                    self.counters.add("drips", 1);
                }
            }
        }
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let data = BytesMut::from(data);
        self.tx.clear();
        match self
            .endpoint
            .handle(now, from, None, None, data, &mut self.tx)
        {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.quic.handle_event(event);
                }
                self.process(now, ch);
            }
            Some(DatagramEvent::Response(t)) => {
                let _ = self.socket.try_send_to(&self.tx[..t.size], t.destination);
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.endpoint.ignore(incoming),
            None => {}
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let due: Vec<ConnectionHandle> = self
            .conns
            .iter_mut()
            .filter_map(|(ch, c)| c.quic.poll_timeout().filter(|t| *t <= now).map(|_| *ch))
            .collect();
        for ch in due {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.quic.handle_timeout(now);
            }
            self.process(now, ch);
        }
    }

    fn process(&mut self, now: Instant, ch: ConnectionHandle) {
        loop {
            let Some(c) = self.conns.get_mut(&ch) else {
                return;
            };
            while let Some(ev) = c.quic.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, ev) {
                    c.quic.handle_event(back);
                }
            }
            let Some(event) = c.quic.poll() else {
                break;
            };
            self.on_event(now, ch, event);
        }
        if self.conns.get(&ch).is_some_and(|c| c.quic.is_drained()) {
            self.conns.remove(&ch);
        }
    }

    fn on_event(&mut self, now: Instant, ch: ConnectionHandle, event: Event) {
        match event {
            Event::Connected => {
                self.counters.add("connected", 1);
                self.on_connected(now, ch);
            }
            Event::ConnectionLost { reason } => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    if !c.gone {
                        c.gone = true;
                        self.counters.add(&lost_reason(&reason), 1);
                        self.next_connect_at =
                            self.next_connect_at.max(now + self.spec.reconnect_delay);
                    }
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => self.read(now, ch, id),
            Event::Stream(StreamEvent::Writable { id }) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    write_pending(c, id);
                }
            }
            Event::Stream(StreamEvent::Stopped { id, .. }) => {
                self.counters.add("stream_stopped_by_server", 1);
                if let Some(c) = self.conns.get_mut(&ch) {
                    if let Some(s) = c.streams.get_mut(&id) {
                        s.pending = Bytes::new();
                        s.fin = false;
                    }
                    // quinn leaves answering STOP_SENDING to the application; until the
                    // reset, the server keeps counting the stream against our stream limit.
                    let _ = c.quic.send_stream(id).reset(VarInt::from_u32(0));
                }
            }
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => self.fill_streams(ch),
            _ => {}
        }
    }

    fn on_connected(&mut self, now: Instant, ch: ConnectionHandle) {
        let Some(c) = self.conns.get_mut(&ch) else {
            return;
        };
        let first = match &self.spec.auth {
            Auth::None => None,
            Auth::Raw(bytes) => Some(bytes.clone()),
            Auth::Valid => {
                let key = c.key.as_ref().expect("a key for a valid handshake");
                match peer_fingerprint(&c.quic) {
                    Some(fp) => Some(signed_handshake(key, &fp, &mut self.rng)),
                    None => {
                        self.counters.add("no_peer_certificate", 1);
                        return;
                    }
                }
            }
            Auth::Forged => {
                let key = c.key.as_ref().expect("a key for a forged handshake");
                Some(forged_handshake(&key.hotkey(), &mut self.rng))
            }
        };
        match first {
            None => self.start_then(now, ch),
            Some(bytes) => {
                if open_stream(c, bytes, true, true) {
                    self.counters.add("handshakes_sent", 1);
                } else {
                    self.counters.add("no_stream_credit", 1);
                }
            }
        }
    }

    fn start_then(&mut self, now: Instant, ch: ConnectionHandle) {
        let Some(c) = self.conns.get_mut(&ch) else {
            return;
        };
        c.running = true;
        match self.spec.then {
            Then::Hold => {}
            Then::Reconnect => self.close(now, ch, "again"),
            Then::Slowloris(_) | Then::Streams(_) | Then::Deaf(_) | Then::Hog { .. } => {
                self.fill_streams(ch)
            }
        }
    }

    fn close(&mut self, now: Instant, ch: ConnectionHandle, reason: &'static str) {
        if let Some(c) = self.conns.get_mut(&ch) {
            c.quic.close(
                now,
                VarInt::from_u32(0),
                Bytes::from_static(reason.as_bytes()),
            );
            if !c.gone {
                c.gone = true;
                self.counters.add("closed_by_us", 1);
                self.next_connect_at = self.next_connect_at.max(now + self.spec.reconnect_delay);
            }
        }
    }

    fn fill_streams(&mut self, ch: ConnectionHandle) {
        let Some(c) = self.conns.get_mut(&ch) else {
            return;
        };
        if !c.running || c.gone {
            return;
        }
        let deaf = matches!(self.spec.then, Then::Deaf(_));
        // A deaf agent keeps no count of its streams: it opens what the server's stream
        // credit allows, and the server frees the ones it gives up on.
        while deaf || c.streams.len() < self.spec.max_streams {
            let (bytes, fin) = match &self.spec.then {
                Then::Slowloris(prefix) | Then::Hog { prefix, .. } => (prefix.clone(), false),
                Then::Streams(payloads) | Then::Deaf(payloads) if !payloads.is_empty() => {
                    c.next_payload += 1;
                    (payloads[c.next_payload % payloads.len()].clone(), true)
                }
                _ => return,
            };
            if !open_stream(c, bytes, fin, false) {
                return;
            }
            self.counters.add("streams_opened", 1);
        }
    }

    fn read(&mut self, now: Instant, ch: ConnectionHandle, id: StreamId) {
        let deaf = matches!(self.spec.then, Then::Deaf(_));
        let Some(c) = self.conns.get_mut(&ch) else {
            return;
        };
        if deaf && c.streams.get(&id).is_some_and(|s| !s.handshake) {
            // Never read an answer: the server's flow control fills and stays full. The
            // stream's entry goes, so the agent's own tables stay small.
            c.streams.remove(&id);
            return;
        }
        let mut end = None;
        {
            let mut recv = c.quic.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else {
                return;
            };
            let mut kept = c.streams.get_mut(&id).map(|s| &mut s.received);
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => {
                        if let Some(kept) = kept.as_mut() {
                            let room = MAX_KEPT.saturating_sub(kept.len());
                            kept.extend_from_slice(&chunk.bytes[..chunk.bytes.len().min(room)]);
                        }
                    }
                    Ok(None) => {
                        end = Some(StreamEnd::Finished);
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(_)) => {
                        end = Some(StreamEnd::Reset);
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
        }
        let Some(end) = end else {
            return;
        };
        let Some(stream) = c.streams.remove(&id) else {
            return;
        };
        if stream.handshake {
            self.on_handshake_answer(now, ch, &stream.received, end);
        } else {
            self.counters.add(&answer_kind(&stream.received, end), 1);
            self.fill_streams(ch);
        }
    }

    fn on_handshake_answer(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        received: &[u8],
        end: StreamEnd,
    ) {
        match decode_handshake_response(received) {
            Some(r) if r.accepted => {
                self.counters.add("hs_accepted", 1);
                self.start_then(now, ch);
            }
            Some(r) => {
                self.counters.add("hs_rejected", 1);
                // An empty miner hotkey means the server refused before looking at the
                // request's content (rate limit, undecodable); otherwise it checked it.
                if r.miner_hotkey.is_empty() {
                    self.counters.add("hs_rejected_preauth", 1);
                } else {
                    self.counters.add("hs_rejected_checked", 1);
                }
                self.close(now, ch, "rejected");
            }
            None => {
                let kind = answer_kind(received, end);
                self.counters.add(&format!("hs_no_answer_{kind}"), 1);
                self.close(now, ch, "no answer");
            }
        }
    }
}

fn open_stream(c: &mut AConn, bytes: Bytes, fin: bool, handshake: bool) -> bool {
    let Some(id) = c.quic.streams().open(Dir::Bi) else {
        return false;
    };
    c.streams.insert(
        id,
        AStream {
            handshake,
            pending: bytes,
            fin,
            received: Vec::new(),
        },
    );
    write_pending(c, id);
    true
}

fn write_pending(c: &mut AConn, id: StreamId) {
    let Some(s) = c.streams.get_mut(&id) else {
        return;
    };
    while !s.pending.is_empty() {
        match c.quic.send_stream(id).write(&s.pending) {
            Ok(n) => {
                let _ = s.pending.split_to(n);
            }
            Err(WriteError::Blocked) => return,
            Err(_) => {
                s.pending = Bytes::new();
                s.fin = false;
                return;
            }
        }
    }
    if s.fin {
        s.fin = false;
        let _ = c.quic.send_stream(id).finish();
    }
}

/// The handshake response in `received`, if it holds one.
fn decode_handshake_response(received: &[u8]) -> Option<HandshakeResponse> {
    if received.len() < 5 || received[0] != 0x02 {
        return None;
    }
    let len = u32::from_be_bytes([received[1], received[2], received[3], received[4]]) as usize;
    let payload = received.get(5..5 + len)?;
    HandshakeResponse::decode(&Bytes::copy_from_slice(payload)).ok()
}

/// How the server answered a non-handshake stream.
fn answer_kind(received: &[u8], end: StreamEnd) -> String {
    match (end, received.first()) {
        (StreamEnd::Reset, _) => "answer_reset".into(),
        (StreamEnd::Finished, None) => "answer_empty_fin".into(),
        (StreamEnd::Finished, Some(0x02)) => match decode_handshake_response(received) {
            Some(r) if r.accepted => "answer_hs_accepted".into(),
            Some(r) if r.miner_hotkey.is_empty() => "answer_hs_rejected_preauth".into(),
            Some(_) => "answer_hs_rejected_checked".into(),
            None => "answer_hs_undecodable".into(),
        },
        (StreamEnd::Finished, Some(ty)) => format!("answer_type_{ty:#04x}"),
    }
}

fn lost_reason(reason: &ConnectionError) -> String {
    match reason {
        ConnectionError::ConnectionClosed(c)
            if c.error_code == TransportErrorCode::CONNECTION_REFUSED =>
        {
            "lost_refused".into()
        }
        ConnectionError::ConnectionClosed(c) => format!("lost_transport_{:?}", c.error_code),
        ConnectionError::ApplicationClosed(c) => {
            format!("lost_app_{}", String::from_utf8_lossy(&c.reason))
        }
        ConnectionError::TimedOut => "lost_timed_out".into(),
        ConnectionError::Reset => "lost_reset".into(),
        ConnectionError::LocallyClosed => "lost_locally_closed".into(),
        other => format!("lost_{other}"),
    }
}

// ----- sprayers -----------------------------------------------------------------------------

/// Makes real client Initials: a new connection per call, never continued.
struct InitialFactory {
    endpoint: Endpoint,
    config: ClientConfig,
    server: SocketAddr,
    made: usize,
    buf: Vec<u8>,
}

impl InitialFactory {
    fn new(server: SocketAddr) -> Self {
        Self {
            endpoint: new_endpoint(),
            config: quic_client_config(),
            server,
            made: 0,
            buf: Vec::with_capacity(1500),
        }
    }

    fn next(&mut self) -> Vec<u8> {
        // The endpoint remembers every connection it started; start afresh now and then.
        if self.made % 256 == 255 {
            self.endpoint = new_endpoint();
        }
        self.made += 1;
        let now = Instant::now();
        let (_, mut conn) = self
            .endpoint
            .connect(now, self.config.clone(), self.server, "localhost")
            .expect("connect");
        self.buf.clear();
        let t = conn
            .poll_transmit(now, 1, &mut self.buf)
            .expect("an Initial to send");
        self.buf[..t.size].to_vec()
    }
}

fn spray(
    server: SocketAddr,
    spec: SpraySpec,
    seed: u64,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let sockets: Vec<std::net::UdpSocket> = (0..spec.sockets.max(1))
        .map(|i| {
            let s = std::net::UdpSocket::bind(SocketAddr::new(spec.ips[i % spec.ips.len()], 0))
                .expect("bind sprayer");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let mut rng = Rng::new(0x5EED_0000 + seed);
    let mut factory = InitialFactory::new(server);
    let samples: Vec<Vec<u8>> = (0..16).map(|_| factory.next()).collect();
    const BATCH: u32 = 16;
    let period = Duration::from_secs_f64(f64::from(BATCH) / f64::from(spec.per_second.max(1)));
    let mut next = Instant::now();
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            let kind = spec.kinds[rng.below(spec.kinds.len() as u64) as usize];
            let datagram = junk(kind, &mut rng, &samples, &mut factory);
            k += 1;
            let socket = &sockets[k % sockets.len()];
            match socket.send_to(&datagram, server) {
                Ok(_) => counters.add(&format!("sent_{kind:?}"), 1),
                Err(_) => counters.add("send_failed", 1),
            }
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_millis(100) {
            // Cannot keep up: do not try to catch up in a burst.
            next = now;
        }
    }
}

fn junk(kind: Junk, rng: &mut Rng, samples: &[Vec<u8>], factory: &mut InitialFactory) -> Vec<u8> {
    match kind {
        Junk::Random => {
            let len = rng.below(1501) as usize;
            rng.bytes(len)
        }
        Junk::LongHeader => {
            let len = 20 + rng.below(1400) as usize;
            let mut d = rng.bytes(len);
            // Form bit, fixed bit, any packet type; version 1; connection IDs of any length.
            d[0] = 0xC0 | (d[0] & 0x3F);
            d[1..5].copy_from_slice(&1u32.to_be_bytes());
            d[5] = (rng.below(21)) as u8;
            d
        }
        Junk::ShortHeader => {
            let len = 1 + rng.below(1400) as usize;
            let mut d = rng.bytes(len);
            d[0] = 0x40 | (d[0] & 0x3F);
            d
        }
        Junk::TruncatedInitial => {
            let sample = &samples[rng.below(samples.len() as u64) as usize];
            let cut = rng.below(sample.len() as u64) as usize;
            sample[..cut].to_vec()
        }
        Junk::CorruptedInitial => {
            let mut d = samples[rng.below(samples.len() as u64) as usize].clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(d.len() as u64) as usize;
                d[i] ^= 1 << rng.below(8);
            }
            d
        }
        Junk::FreshInitial => factory.next(),
    }
}

// ----- the attacker process -----------------------------------------------------------------

/// Carries `name`, the server address and its fingerprint to the attacker process.
const ATTACK_ENV: &str = "LIGHTNING_ADVERSARIAL_ATTACK";
/// Printed by the attacker process once every stage is running.
const READY: &str = "ATTACKER-READY";
/// Prefixes each stage's counters printed by the attacker process when it stops.
const COUNTERS_LINE: &str = "ATTACKER-COUNTERS";
/// Printed by the attacker process once every finite [`ValidatorSpec`] has run its batches.
const DONE: &str = "ATTACKER-DONE";
/// The counter of finite validators whose batches are over.
const VALIDATORS_DONE: &str = "validators_done";

/// What an attack plan knows about its target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's UDP address.
    pub addr: SocketAddr,
    /// Its certificate fingerprint, as signed in handshakes.
    pub fingerprint: String,
}

/// One step of an attack plan: agents and sprayers started together, then (optionally) a
/// wait until one of their counters reaches a value before the next stage starts.
#[derive(Debug, Default)]
pub struct Stage {
    /// QUIC agents.
    pub agents: Vec<AgentSpec>,
    /// Datagram sprayers.
    pub sprays: Vec<SpraySpec>,
    /// Lightning validators.
    pub validators: Vec<ValidatorSpec>,
    /// Counter name and value to wait for.
    pub wait_for: Option<(&'static str, u64)>,
}

/// The body of the attacker process's entry test: runs the stages `plan` gives for the
/// attack named in the environment until stdin closes, then prints each stage's counters.
/// Without the environment variable (a plain `--ignored` run) it does nothing.
pub fn child_main(plan: fn(&str, &Target) -> Vec<Stage>) {
    let Ok(spec) = std::env::var(ATTACK_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (Some(name), Some(addr), Some(fingerprint)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("malformed {ATTACK_ENV}: {spec}");
    };
    let target = Target {
        addr: addr.parse().expect("server address"),
        fingerprint: fingerprint.to_string(),
    };
    let mut attacks = Vec::new();
    let stages = plan(name, &target);
    let finite: u64 = stages
        .iter()
        .map(|s| s.validators.iter().filter(|v| !v.repeat).count() as u64)
        .sum();
    for stage in stages {
        let wait_for = stage.wait_for;
        let attack = Attack::start(target.addr, stage);
        if let Some((key, value)) = wait_for {
            let deadline = Instant::now() + Duration::from_secs(10);
            while attack.counters().get(key) < value {
                assert!(Instant::now() < deadline, "{key} never reached {value}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        attacks.push(attack);
    }
    let mut out = std::io::stdout().lock();
    // On a line of its own: the test harness has printed `test ... ` without a newline.
    writeln!(out, "\n{READY}").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    if finite > 0 {
        let counters: Vec<Arc<Counters>> = attacks.iter().map(|a| a.counters().clone()).collect();
        std::thread::spawn(move || {
            while counters.iter().map(|c| c.get(VALIDATORS_DONE)).sum::<u64>() < finite {
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "\n{DONE}").expect("stdout");
            out.flush().expect("stdout");
        });
    }
    // The parent closes our stdin to stop us (or dies, which closes it too).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let counters: Vec<Arc<Counters>> = attacks.into_iter().map(Attack::stop).collect();
    let mut out = std::io::stdout().lock();
    for (i, c) in counters.iter().enumerate() {
        writeln!(out, "{COUNTERS_LINE} {i} {}", c.summary()).expect("stdout");
    }
    out.flush().expect("stdout");
}

/// An attack running in a child process.
#[derive(Debug)]
pub struct RemoteAttack {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    done: bool,
}

impl RemoteAttack {
    /// Starts this test binary again on `entry_test` (whose body calls [`child_main`]) to
    /// run the attack `name` against `target`; returns once every stage is running.
    /// Blocks: call it from a blocking context.
    pub fn start(entry_test: &str, name: &str, target: &Target) -> RemoteAttack {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                entry_test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                ATTACK_ENV,
                format!("{name}|{}|{}", target.addr, target.fingerprint),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the attacker process");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let remote = RemoteAttack {
            child,
            stdin,
            lines,
            done: false,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match remote.lines.recv_timeout(left) {
                Ok(line) if line.trim() == READY => return remote,
                Ok(_) => {}
                Err(e) => panic!("the attacker process did not get ready: {e}"),
            }
        }
    }

    /// Whether every finite [`ValidatorSpec`] of the attack has run its batches (reads the
    /// child's output so far; lines before its counters carry nothing else).
    pub fn done(&mut self) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            self.done |= line.trim() == DONE;
        }
        self.done
    }

    /// The attacker process's resident set.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib_of(&format!("/proc/{}/status", self.child.id()))
    }

    /// Stops the attackers (they vanish without closing connections) and returns each
    /// stage's counters. Blocks.
    pub fn stop(mut self) -> Vec<Arc<Counters>> {
        drop(self.stdin.take());
        let mut stages = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            if let Some(rest) = line.strip_prefix(COUNTERS_LINE) {
                let summary = rest.trim_start().split_once(' ').map_or("", |(_, s)| s);
                stages.push(Arc::new(Counters::parse(summary)));
            }
        }
        let status = self.child.wait().expect("attacker process");
        assert!(status.success(), "the attacker process failed: {status}");
        stages
    }
}

impl Drop for RemoteAttack {
    fn drop(&mut self) {
        // A test that failed half-way must not leave attackers running.
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmRSS from a `/proc/*/status` file.
pub fn rss_kib_of(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
