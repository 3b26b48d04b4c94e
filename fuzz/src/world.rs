//! Real `Client` and `Server` endpoints in the deterministic simulator, with an
//! application on each side that checks what it sees.
//!
//! The server application answers like the test suite's demo server: `echo` returns the
//! request data unchanged, `fail` fails, `slow` never answers (the handler timeout does),
//! and the streaming synapse `stream` sends `n` chunks of `size` bytes. The client
//! application records every event and panics on anything the endpoint promised never to
//! do: a second terminal event for a request, an event for an unknown or cancelled
//! request, a chunk after the end, an echo that changed the data.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lightning_proto::endpoint::{
    AnswerError, Client, ClientConfig, ClientError, ClientEvent, Datagram, QueryId, RequestId,
    RequestOptions, SansIo, Server, ServerConfig, ServerEvent, SynapseKind, TimeoutReason,
    Transmit,
};
use lightning_proto::identity::{Keypair, KeypairSigner, Signer};
use lightning_proto::message::DataMap;
use lightning_proto::sim::{NodeId, Simulator};
use lightning_proto::tls::TlsIdentity;

/// Seed of the miner key of PROTOCOL.md §4.5.
pub const MINER_SEED: [u8; 32] = [1; 32];
/// Seed of the validator key of PROTOCOL.md §4.5.
pub const VALIDATOR_SEED: [u8; 32] = [2; 32];
/// UNIX time of the §4.5 vectors, in milliseconds.
pub const UNIX_START_MS: u64 = 1_700_000_000_000;
/// Where the server listens.
pub const SERVER_ADDR: &str = "10.0.0.1:8443";
/// Where the client sits.
pub const CLIENT_ADDR: &str = "10.0.0.2:40000";

/// Largest chunk count and size the `stream` synapse honours, to keep runs short.
const MAX_STREAM_CHUNKS: u64 = 64;
const MAX_STREAM_CHUNK: u64 = 4096;

/// The miner's SS58 hotkey.
pub fn miner_hotkey() -> String {
    static HK: OnceLock<String> = OnceLock::new();
    HK.get_or_init(|| Keypair::from_seed(&MINER_SEED).hotkey())
        .clone()
}

/// The validator's SS58 hotkey.
pub fn validator_hotkey() -> String {
    static HK: OnceLock<String> = OnceLock::new();
    HK.get_or_init(|| Keypair::from_seed(&VALIDATOR_SEED).hotkey())
        .clone()
}

/// A signer for a seed.
pub fn signer(seed: [u8; 32]) -> Arc<dyn Signer> {
    Arc::new(KeypairSigner::new(Keypair::from_seed(&seed)))
}

/// One certificate for every server, so each run does not pay for key generation.
pub fn tls_identity() -> TlsIdentity {
    static ID: OnceLock<TlsIdentity> = OnceLock::new();
    ID.get_or_init(|| TlsIdentity::self_signed([7; 32])).clone()
}

/// Parses a literal address.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// A server with the demo synapses registered.
pub fn make_server(config: ServerConfig, now: Instant, unix_ms: u64) -> Server {
    let mut s = Server::new(
        config,
        miner_hotkey(),
        signer(MINER_SEED),
        Some(tls_identity()),
        [3; 32],
        now,
        unix_ms,
    )
    .expect("server config");
    s.register_synapse("echo", SynapseKind::Unary);
    s.register_synapse("fail", SynapseKind::Unary);
    s.register_synapse("slow", SynapseKind::Unary);
    s.register_synapse("stream", SynapseKind::Streaming);
    s
}

/// A client authenticating as the validator key.
pub fn make_client(config: ClientConfig, seed: [u8; 32], now: Instant, unix_ms: u64) -> Client {
    Client::new(
        config,
        validator_hotkey(),
        signer(VALIDATOR_SEED),
        seed,
        now,
        unix_ms,
    )
    .expect("client config")
}

/// Either endpoint.
pub enum Endpoint {
    /// The validator side.
    Client(Box<Client>),
    /// The miner side.
    Server(Box<Server>),
}

/// An endpoint with hooks that tamper with the datagrams it receives.
pub struct FuzzNode {
    /// The endpoint.
    pub ep: Endpoint,
    /// XOR the next received datagram at `(offset % len)` with the mask.
    pub corrupt_next: Vec<(usize, u8)>,
    /// Deliver the next received datagram twice.
    pub duplicate_next: usize,
    /// Truncate the next received datagram to this length.
    pub truncate_next: Option<usize>,
}

impl FuzzNode {
    fn new(ep: Endpoint) -> Self {
        Self {
            ep,
            corrupt_next: Vec::new(),
            duplicate_next: 0,
            truncate_next: None,
        }
    }

    /// Removes every pending tamper hook.
    pub fn clear_hooks(&mut self) {
        self.corrupt_next.clear();
        self.duplicate_next = 0;
        self.truncate_next = None;
    }

    fn deliver(&mut self, now: Instant, d: Datagram) {
        match &mut self.ep {
            Endpoint::Client(c) => c.handle_datagram(now, d),
            Endpoint::Server(s) => s.handle_datagram(now, d),
        }
    }
}

/// Either role's event.
pub enum FuzzEvent {
    /// From the client.
    Client(ClientEvent),
    /// From the server.
    Server(ServerEvent),
}

impl SansIo for FuzzNode {
    type Event = FuzzEvent;

    fn handle_datagram(&mut self, now: Instant, mut d: Datagram) {
        if let Some(len) = self.truncate_next.take() {
            d.payload.truncate(len);
        }
        if let Some((offset, mask)) = self.corrupt_next.pop() {
            if !d.payload.is_empty() {
                let i = offset % d.payload.len();
                d.payload[i] ^= mask.max(1);
            }
        }
        if self.duplicate_next > 0 {
            self.duplicate_next -= 1;
            let copy = Datagram {
                remote: d.remote,
                local_ip: d.local_ip,
                ecn: d.ecn,
                payload: BytesMut::from(&d.payload[..]),
            };
            self.deliver(now, copy);
        }
        self.deliver(now, d);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        match &mut self.ep {
            Endpoint::Client(c) => c.poll_transmit(now, buf),
            Endpoint::Server(s) => s.poll_transmit(now, buf),
        }
    }

    fn poll_event(&mut self) -> Option<FuzzEvent> {
        match &mut self.ep {
            Endpoint::Client(c) => c.poll_event().map(FuzzEvent::Client),
            Endpoint::Server(s) => s.poll_event().map(FuzzEvent::Server),
        }
    }

    fn next_deadline(&mut self) -> Option<(Instant, TimeoutReason)> {
        match &mut self.ep {
            Endpoint::Client(c) => c.next_deadline(),
            Endpoint::Server(s) => s.next_deadline(),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match &mut self.ep {
            Endpoint::Client(c) => c.handle_timeout(now),
            Endpoint::Server(s) => s.handle_timeout(now),
        }
    }

    fn set_max_gso_segments(&mut self, n: usize) {
        match &mut self.ep {
            Endpoint::Client(c) => c.set_max_gso_segments(n),
            Endpoint::Server(s) => s.set_max_gso_segments(n),
        }
    }
}

/// What a request expects as its answer.
#[derive(Debug, Clone)]
pub enum Expect {
    /// `echo`: a successful response carrying exactly these data bytes.
    Echo(Bytes),
    /// `fail`: an error response.
    Fail,
    /// `slow`: the handler timeout, or the client's own timeout.
    Slow,
    /// `stream`: `n` chunks of `size` bytes, then a successful end.
    Stream {
        /// Chunks.
        n: u64,
        /// Bytes per chunk.
        size: u64,
    },
    /// Anything (raw bytes, mismatched kinds): only the terminal-event rules apply.
    Anything,
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A unary response.
    Response {
        /// Whether the miner reported success.
        success: bool,
        /// The miner's error text.
        error: Option<String>,
    },
    /// A stream ended successfully.
    StreamEnd,
    /// The request failed.
    Failed(ClientError),
}

#[derive(Debug)]
struct Tracked {
    expect: Expect,
    chunks: u64,
    outcome: Option<Outcome>,
    cancelled: bool,
}

/// A client and a server in the simulator, with checking applications on both sides.
pub struct World {
    /// The network.
    pub sim: Simulator<FuzzNode>,
    /// Simulation start.
    pub start: Instant,
    /// The server's node.
    pub server: NodeId,
    /// The client's node.
    pub client: NodeId,
    requests: HashMap<QueryId, Tracked>,
    /// Server side: streams still being produced (chunks left, chunk size).
    streams: HashMap<RequestId, (u64, usize)>,
    /// Server side: request ids delivered, to catch a double delivery.
    seen: HashSet<RequestId>,
    /// Client `Authenticated` events seen.
    pub authentications: usize,
    /// Highest `queued_bytes` the server reported.
    pub max_queued_bytes: usize,
}

impl World {
    /// A server and a client with these configurations on perfect links.
    pub fn new(seed: u64, server_config: ServerConfig, client_config: ClientConfig) -> Self {
        let start = Instant::now();
        let mut sim = Simulator::new(seed, start);
        let server = make_server(server_config, start, UNIX_START_MS);
        let server = sim.add_node(
            addr(SERVER_ADDR),
            FuzzNode::new(Endpoint::Server(Box::new(server))),
        );
        let mut rng_seed = [0u8; 32];
        rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
        let client = make_client(client_config, rng_seed, start, UNIX_START_MS);
        let client = sim.add_node(
            addr(CLIENT_ADDR),
            FuzzNode::new(Endpoint::Client(Box::new(client))),
        );
        Self {
            sim,
            start,
            server,
            client,
            requests: HashMap::new(),
            streams: HashMap::new(),
            seen: HashSet::new(),
            authentications: 0,
            max_queued_bytes: 0,
        }
    }

    /// The client endpoint.
    pub fn client(&mut self) -> &mut Client {
        match &mut self.sim.node_mut(self.client).ep {
            Endpoint::Client(c) => c,
            Endpoint::Server(_) => unreachable!("client node holds a client"),
        }
    }

    /// The server endpoint.
    pub fn server(&mut self) -> &mut Server {
        match &mut self.sim.node_mut(self.server).ep {
            Endpoint::Server(s) => s,
            Endpoint::Client(_) => unreachable!("server node holds a server"),
        }
    }

    /// The client starts connecting to the server and authenticating the miner hotkey.
    pub fn connect(&mut self) -> Result<(), ClientError> {
        let now = self.sim.now();
        self.client()
            .connect(now, addr(SERVER_ADDR), [miner_hotkey()])
    }

    /// Whether the client currently has the miner hotkey authenticated.
    pub fn is_authenticated(&mut self) -> bool {
        let hk = miner_hotkey();
        self.client()
            .authenticated()
            .any(|(a, h)| a == addr(SERVER_ADDR) && h == hk)
    }

    /// Issues a request and starts tracking it.
    pub fn request(
        &mut self,
        synapse: &str,
        data: DataMap,
        opts: RequestOptions,
        expect: Expect,
    ) -> Result<QueryId, ClientError> {
        let now = self.sim.now();
        let hk = miner_hotkey();
        let id = self
            .client()
            .request(now, addr(SERVER_ADDR), &hk, synapse, data, opts)?;
        self.track(id, expect);
        Ok(id)
    }

    /// Starts tracking a request issued directly on the client.
    pub fn track(&mut self, id: QueryId, expect: Expect) {
        let previous = self.requests.insert(
            id,
            Tracked {
                expect,
                chunks: 0,
                outcome: None,
                cancelled: false,
            },
        );
        assert!(previous.is_none(), "request id {id:?} issued twice");
    }

    /// Cancels a tracked request; no event may follow for it.
    pub fn cancel(&mut self, id: QueryId) {
        self.pump();
        let now = self.sim.now();
        self.client().cancel(now, id);
        if let Some(t) = self.requests.get_mut(&id) {
            t.cancelled = true;
        }
    }

    /// Ids of tracked requests, in issue order.
    pub fn request_ids(&self) -> Vec<QueryId> {
        let mut ids: Vec<QueryId> = self.requests.keys().copied().collect();
        ids.sort();
        ids
    }

    /// How request `id` ended, if it did.
    pub fn outcome(&self, id: QueryId) -> Option<&Outcome> {
        self.requests.get(&id).and_then(|t| t.outcome.as_ref())
    }

    /// Requests neither cancelled nor ended.
    pub fn open_requests(&self) -> Vec<QueryId> {
        let mut open: Vec<QueryId> = self
            .requests
            .iter()
            .filter(|(_, t)| !t.cancelled && t.outcome.is_none())
            .map(|(id, _)| *id)
            .collect();
        open.sort();
        open
    }

    /// Steps the simulation until `done` holds (true) or `limit` of virtual time passes
    /// or nothing is left to happen (false). Both applications run between events.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut World) -> bool) -> bool {
        let deadline = self.sim.elapsed() + limit;
        loop {
            self.pump();
            if done(self) {
                return true;
            }
            if self.sim.elapsed() >= deadline {
                return false;
            }
            if !self.sim.step() {
                self.pump();
                return done(self);
            }
        }
    }

    /// Advances virtual time by `d`, running the applications in between.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.sim.elapsed() + d;
        while self.sim.elapsed() < deadline {
            self.pump();
            let step = (deadline - self.sim.elapsed()).min(Duration::from_millis(50));
            self.sim.advance(step);
        }
        self.pump();
    }

    /// Runs both applications once: drains events, answers requests, checks invariants.
    pub fn pump(&mut self) {
        self.pump_server();
        self.pump_client();
    }

    fn pump_server(&mut self) {
        let now = self.sim.now();
        let server = match &mut self.sim.node_mut(self.server).ep {
            Endpoint::Server(s) => s.as_mut(),
            Endpoint::Client(_) => unreachable!("server node holds a server"),
        };
        // Requests that ended between being queued as events and being seen here; each
        // must be followed by its `RequestCancelled` in the same queue.
        let mut must_cancel: HashSet<RequestId> = HashSet::new();
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Request(req) => {
                    assert!(
                        self.seen.insert(req.id),
                        "request {:?} delivered twice",
                        req.id
                    );
                    match req.synapse_type.as_str() {
                        "echo" => {
                            let r = server.respond::<()>(now, req.id, Ok(req.data.clone()));
                            gone_before_answer(r, req.id, &mut must_cancel);
                        }
                        "fail" => {
                            let r = server.respond(now, req.id, Err("handler failed"));
                            gone_before_answer(r, req.id, &mut must_cancel);
                        }
                        "stream" => {
                            let n = get_u64(&req.data, "n").unwrap_or(3).min(MAX_STREAM_CHUNKS);
                            let size = get_u64(&req.data, "size")
                                .unwrap_or(3)
                                .min(MAX_STREAM_CHUNK);
                            self.streams.insert(req.id, (n, size as usize));
                        }
                        _ => {}
                    }
                }
                ServerEvent::RequestCancelled { id, .. } => {
                    must_cancel.remove(&id);
                    self.streams.remove(&id);
                    // The request is gone: answering it now must be refused, not panic.
                    let r = server.respond::<()>(now, id, Ok(DataMap::new()));
                    assert!(r.is_err(), "cancelled request {id:?} still answerable");
                }
                ServerEvent::StreamWritable { .. }
                | ServerEvent::Authenticated { .. }
                | ServerEvent::HandshakeRejected { .. }
                | ServerEvent::ConnectionClosed { .. } => {}
            }
        }
        assert!(
            must_cancel.is_empty(),
            "requests {must_cancel:?} vanished without a RequestCancelled event"
        );
        let ids: Vec<RequestId> = self.streams.keys().copied().collect();
        for id in ids {
            while let Some((left, size)) = self.streams.get_mut(&id) {
                if *left == 0 {
                    let _ = server.end_stream::<()>(now, id, Ok(()));
                    self.streams.remove(&id);
                    break;
                }
                let chunk = Bytes::from(vec![(*left % 251) as u8; *size]);
                match server.send_chunk(now, id, chunk) {
                    Ok(()) => *left -= 1,
                    Err(AnswerError::Full) => break,
                    Err(_) => {
                        self.streams.remove(&id);
                        break;
                    }
                }
            }
        }
        self.max_queued_bytes = self.max_queued_bytes.max(server.queued_bytes());
    }

    fn pump_client(&mut self) {
        let now = self.sim.now();
        let client = match &mut self.sim.node_mut(self.client).ep {
            Endpoint::Client(c) => c.as_mut(),
            Endpoint::Server(_) => unreachable!("client node holds a client"),
        };
        while let Some(ev) = client.poll_event() {
            let (id, outcome) = match ev {
                ClientEvent::Authenticated { .. } => {
                    self.authentications += 1;
                    continue;
                }
                ClientEvent::HandshakeFailed { .. } | ClientEvent::ConnectionLost { .. } => {
                    continue
                }
                ClientEvent::Chunk { id, data } => {
                    client.consume_chunks(now, id, 1);
                    let t = tracked(&mut self.requests, id);
                    assert!(t.outcome.is_none(), "chunk for {id:?} after its end");
                    t.chunks += 1;
                    if let Expect::Stream { n, size } = t.expect {
                        assert!(t.chunks <= n, "{id:?}: more than {n} chunks");
                        assert_eq!(data.len() as u64, size, "{id:?}: chunk size");
                        let seq = n - (t.chunks - 1);
                        assert!(
                            data.iter().all(|b| u64::from(*b) == seq % 251),
                            "{id:?}: chunk {seq} content"
                        );
                    }
                    continue;
                }
                ClientEvent::Response { id, response, .. } => {
                    let t = tracked(&mut self.requests, id);
                    if let (Expect::Echo(sent), true) = (&t.expect, response.success) {
                        assert_eq!(response.data.raw(), sent, "{id:?}: echo changed the data");
                    }
                    if matches!(t.expect, Expect::Fail) && response.success {
                        panic!("{id:?}: failing handler reported success");
                    }
                    (
                        id,
                        Outcome::Response {
                            success: response.success,
                            error: response.error,
                        },
                    )
                }
                ClientEvent::StreamEnd { id, .. } => {
                    let t = tracked(&mut self.requests, id);
                    if let Expect::Stream { n, .. } = t.expect {
                        assert_eq!(
                            t.chunks, n,
                            "{id:?}: stream ended after {} chunks",
                            t.chunks
                        );
                    }
                    (id, Outcome::StreamEnd)
                }
                ClientEvent::RequestFailed { id, error } => (id, Outcome::Failed(error)),
            };
            let t = tracked(&mut self.requests, id);
            assert!(
                t.outcome.is_none(),
                "{id:?} ended twice: {:?} then {outcome:?}",
                t.outcome
            );
            t.outcome = Some(outcome);
        }
    }
}

/// A fresh request may already be over when the application first sees it (the peer
/// reset the stream, the connection dropped); answering is then refused, and a
/// cancellation event must be queued behind it.
fn gone_before_answer(
    r: Result<(), AnswerError>,
    id: RequestId,
    must_cancel: &mut HashSet<RequestId>,
) {
    match r {
        Ok(()) => {}
        Err(AnswerError::UnknownRequest) => {
            must_cancel.insert(id);
        }
        Err(e) => panic!("answering fresh request {id:?} failed: {e:?}"),
    }
}

fn tracked(requests: &mut HashMap<QueryId, Tracked>, id: QueryId) -> &mut Tracked {
    let t = requests
        .get_mut(&id)
        .unwrap_or_else(|| panic!("event for request {id:?} that was never issued"));
    assert!(!t.cancelled, "event for cancelled request {id:?}");
    t
}

/// An unsigned integer entry of a data map.
pub fn get_u64(data: &DataMap, key: &str) -> Option<u64> {
    data.get(key).and_then(|v| v.as_u64())
}

/// A data map from literal entries.
pub fn data(pairs: &[(&str, rmpv::Value)]) -> DataMap {
    DataMap::from_values(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .expect("small literal map")
}
