//! A small world for driving real `Client`/`Server` endpoints through the simulator.
//!
//! The server side answers like the CLI's demo server: `echo` returns the data unchanged,
//! `fail` fails, `slow` never answers, and the streaming synapse `stream` sends `n` chunks of
//! `size` bytes, honouring backpressure.
#![allow(
    dead_code,
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lightning_proto::endpoint::{
    Client, ClientConfig, ClientEvent, Datagram, QueryId, RequestId, SansIo, Server, ServerConfig,
    ServerEvent, SynapseKind, TimeoutReason, Transmit,
};
use lightning_proto::identity::{Keypair, KeypairSigner, Signer};
use lightning_proto::message::DataMap;
use lightning_proto::sim::{NodeId, Simulator};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
// Tests drive endpoints through their one surface.
pub use lightning_proto::endpoint::SansIo as _;

pub const MINER_SEED: [u8; 32] = [1; 32];
pub const VALIDATOR_SEED: [u8; 32] = [2; 32];
/// 2023-11-14T22:13:20Z, the timestamp of PROTOCOL.md's vectors.
pub const UNIX_START_MS: u64 = 1_700_000_000_000;

pub fn miner_hotkey() -> String {
    Keypair::from_seed(&MINER_SEED).hotkey()
}

pub fn validator_hotkey() -> String {
    Keypair::from_seed(&VALIDATOR_SEED).hotkey()
}

pub fn signer(seed: [u8; 32]) -> Arc<dyn Signer> {
    Arc::new(KeypairSigner::new(Keypair::from_seed(&seed)))
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A real endpoint in the simulator, optionally drained in a random legal order.
pub struct Peer {
    ep: Endpoint,
    /// Set by [`World::shuffle_drains`]: drives the random interleaving.
    shuffle: Option<ChaCha20Rng>,
    /// Events already taken from the endpoint but not yet handed to the application.
    stash: VecDeque<PeerEvent>,
}

/// Either role.
pub enum Endpoint {
    Client(Box<Client>),
    Server(Box<Server>),
}

/// An event of either role.
pub enum PeerEvent {
    Client(ClientEvent),
    Server(ServerEvent),
}

impl Peer {
    pub fn client_node(client: Client) -> Self {
        Self::new(Endpoint::Client(Box::new(client)))
    }

    pub fn server_node(server: Server) -> Self {
        Self::new(Endpoint::Server(Box::new(server)))
    }

    fn new(ep: Endpoint) -> Self {
        Self {
            ep,
            shuffle: None,
            stash: VecDeque::new(),
        }
    }

    pub fn client(&mut self) -> &mut Client {
        match &mut self.ep {
            Endpoint::Client(c) => c,
            Endpoint::Server(_) => panic!("not a client"),
        }
    }

    pub fn server(&mut self) -> &mut Server {
        match &mut self.ep {
            Endpoint::Server(s) => s,
            Endpoint::Client(_) => panic!("not a server"),
        }
    }

    fn endpoint_event(&mut self) -> Option<PeerEvent> {
        match &mut self.ep {
            Endpoint::Client(c) => c.poll_event().map(PeerEvent::Client),
            Endpoint::Server(s) => s.poll_event().map(PeerEvent::Server),
        }
    }

    /// In shuffled mode, does some of the other legal calls at a random point of a drain:
    /// takes events early (kept for the application, in order) and reads the deadline
    /// before transmits are drained (the contract only requires a *last* read after them).
    fn shuffle_step(&mut self) {
        while let Some(choice) = self.shuffle.as_mut().map(|rng| rng.next_u32() % 4) {
            match choice {
                0 => {
                    if let Some(ev) = self.endpoint_event() {
                        self.stash.push_back(ev);
                    }
                }
                1 => {
                    let _ = self.next_deadline_of_endpoint();
                }
                _ => return,
            }
        }
    }

    fn next_deadline_of_endpoint(&mut self) -> Option<(Instant, TimeoutReason)> {
        match &mut self.ep {
            Endpoint::Client(c) => c.next_deadline(),
            Endpoint::Server(s) => s.next_deadline(),
        }
    }
}

impl SansIo for Peer {
    type Event = PeerEvent;

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        match &mut self.ep {
            Endpoint::Client(c) => c.handle_datagram(now, d),
            Endpoint::Server(s) => s.handle_datagram(now, d),
        }
        self.shuffle_step();
    }
    fn handle_timeout(&mut self, now: Instant) {
        match &mut self.ep {
            Endpoint::Client(c) => c.handle_timeout(now),
            Endpoint::Server(s) => s.handle_timeout(now),
        }
        self.shuffle_step();
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.shuffle_step();
        match &mut self.ep {
            Endpoint::Client(c) => c.poll_transmit(now, buf),
            Endpoint::Server(s) => s.poll_transmit(now, buf),
        }
    }
    fn poll_event(&mut self) -> Option<PeerEvent> {
        self.stash.pop_front().or_else(|| self.endpoint_event())
    }
    fn next_deadline(&mut self) -> Option<(Instant, TimeoutReason)> {
        self.next_deadline_of_endpoint()
    }
    fn set_max_gso_segments(&mut self, n: usize) {
        match &mut self.ep {
            Endpoint::Client(c) => c.set_max_gso_segments(n),
            Endpoint::Server(s) => s.set_max_gso_segments(n),
        }
    }
}

/// Streams in progress on the server: remaining chunks and their size.
#[derive(Default)]
pub struct Responder {
    streams: HashMap<RequestId, (u64, usize)>,
    /// Streams of `credit_stream`, which send only within the credit the server grants,
    /// with that credit as the application counts it.
    credited: HashMap<RequestId, lightning_proto::endpoint::ChunkCredit>,
    /// Chunks sent within credit that the server refused anyway (must stay 0).
    pub refused_within_credit: usize,
    pub events: Vec<ServerEvent>,
    /// Requests seen, to check that none is delivered twice.
    pub seen: HashSet<(NodeId, RequestId)>,
    pub duplicates: usize,
    /// Highest bytes queued on a server at any pump.
    pub max_queued_bytes: usize,
}

pub struct World {
    pub sim: Simulator<Peer>,
    pub start: Instant,
    pub servers: Vec<NodeId>,
    pub clients: Vec<NodeId>,
    pub responder: Responder,
    /// Client events by client node.
    pub client_events: HashMap<NodeId, Vec<ClientEvent>>,
    /// Seed of the random drain order, when shuffled.
    shuffle: Option<u64>,
}

impl World {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Self {
            sim: Simulator::new(seed, start),
            start,
            servers: Vec::new(),
            clients: Vec::new(),
            responder: Responder::default(),
            client_events: HashMap::new(),
            shuffle: None,
        }
    }

    /// From now on, every node (present and future) is drained in a random legal order
    /// drawn from `seed`: see `Peer::shuffle_step`.
    pub fn shuffle_drains(&mut self, seed: u64) {
        self.shuffle = Some(seed);
        for (n, id) in self
            .servers
            .clone()
            .into_iter()
            .chain(self.clients.clone())
            .enumerate()
        {
            if self.sim.node_at(self.sim.addr(id)) == Some(id) {
                self.sim.node_mut(id).shuffle = Some(ChaCha20Rng::seed_from_u64(seed ^ n as u64));
            }
        }
    }

    /// A node for the simulator, shuffled if [`World::shuffle_drains`] was called.
    fn node(&self, mut peer: Peer) -> Peer {
        if let Some(seed) = self.shuffle {
            let n = (self.servers.len() + self.clients.len()) as u64;
            peer.shuffle = Some(ChaCha20Rng::seed_from_u64(seed ^ n));
        }
        peer
    }

    pub fn unix_ms(&self) -> u64 {
        UNIX_START_MS + self.sim.elapsed().as_millis() as u64
    }

    pub fn make_server(&mut self, config: ServerConfig, miner_seed: [u8; 32]) -> Server {
        let mut rng_seed = [0u8; 32];
        rand_fill(&mut self.sim, &mut rng_seed);
        let hotkey = Keypair::from_seed(&miner_seed).hotkey();
        let mut s = Server::new(
            config,
            hotkey,
            signer(miner_seed),
            None,
            rng_seed,
            self.sim.now(),
            self.unix_ms(),
        )
        .unwrap();
        s.register_synapse("echo", SynapseKind::Unary);
        s.register_synapse("fail", SynapseKind::Unary);
        s.register_synapse("slow", SynapseKind::Unary);
        s.register_synapse("stream", SynapseKind::Streaming);
        s.register_synapse("credit_stream", SynapseKind::Streaming);
        s.register_synapse("refuse", SynapseKind::Unary);
        s.register_synapse("refuse_stream", SynapseKind::Streaming);
        s
    }

    pub fn add_server(&mut self, at: &str, config: ServerConfig, miner_seed: [u8; 32]) -> NodeId {
        let s = self.make_server(config, miner_seed);
        let peer = self.node(Peer::server_node(s));
        let id = self.sim.add_node(addr(at), peer);
        self.servers.push(id);
        id
    }

    pub fn make_client(
        &mut self,
        config: ClientConfig,
        validator_seed: [u8; 32],
        clock_skew_secs: i64,
    ) -> Client {
        let mut rng_seed = [0u8; 32];
        rand_fill(&mut self.sim, &mut rng_seed);
        self.make_client_with_rng(config, validator_seed, clock_skew_secs, rng_seed)
    }

    pub fn make_client_with_rng(
        &mut self,
        config: ClientConfig,
        validator_seed: [u8; 32],
        clock_skew_secs: i64,
        rng_seed: [u8; 32],
    ) -> Client {
        let hotkey = Keypair::from_seed(&validator_seed).hotkey();
        let unix = (self.unix_ms() as i64 + clock_skew_secs * 1000) as u64;
        Client::new(
            config,
            hotkey,
            signer(validator_seed),
            rng_seed,
            self.sim.now(),
            unix,
        )
        .unwrap()
    }

    pub fn add_client(&mut self, at: &str, client: Client) -> NodeId {
        let peer = self.node(Peer::client_node(client));
        let id = self.sim.add_node(addr(at), peer);
        self.clients.push(id);
        self.client_events.insert(id, Vec::new());
        id
    }

    pub fn client(&mut self, id: NodeId) -> &mut Client {
        self.sim.node_mut(id).client()
    }

    pub fn server(&mut self, id: NodeId) -> &mut Server {
        self.sim.node_mut(id).server()
    }

    /// Runs until `done` holds, pumping events in between; panics after `limit` virtual time.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut World) -> bool) {
        let deadline = self.sim.elapsed() + limit;
        loop {
            self.pump();
            if done(self) {
                return;
            }
            if self.sim.elapsed() >= deadline {
                panic!(
                    "condition not reached within {limit:?} (virtual time {:?})",
                    self.sim.elapsed()
                );
            }
            if !self.sim.step() {
                self.pump();
                if done(self) {
                    return;
                }
                panic!(
                    "simulation idle before condition (virtual time {:?})",
                    self.sim.elapsed()
                );
            }
        }
    }

    /// Advances virtual time by `d`, pumping events every few milliseconds.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.sim.elapsed() + d;
        while self.sim.elapsed() < deadline {
            let step = (deadline - self.sim.elapsed()).min(Duration::from_millis(5));
            self.sim.advance(step);
            self.pump();
        }
    }

    /// Drains every node's events; the server answers requests.
    pub fn pump(&mut self) {
        let now = self.sim.now();
        for &id in &self.clients.clone() {
            let peer = self.sim.node_mut(id);
            while let Some(PeerEvent::Client(ev)) = peer.poll_event() {
                self.client_events.entry(id).or_default().push(ev);
            }
        }
        for &sid in &self.servers.clone() {
            if self.sim.node_at(self.sim.addr(sid)) != Some(sid) {
                continue;
            }
            let peer = self.sim.node_mut(sid);
            let r = &mut self.responder;
            while let Some(PeerEvent::Server(ev)) = peer.poll_event() {
                let server = peer.server();
                match &ev {
                    ServerEvent::Request(req) => {
                        if !r.seen.insert((sid, req.id)) {
                            r.duplicates += 1;
                        }
                        match req.synapse_type.as_str() {
                            "echo" => {
                                server
                                    .respond::<()>(now, req.id, Ok(req.data.clone()))
                                    .unwrap();
                            }
                            "fail" => {
                                server.respond(now, req.id, Err("secret detail")).unwrap();
                            }
                            // Unary or streaming alike: refused with a reason the peer reads.
                            "refuse" | "refuse_stream" => {
                                server.refuse(now, req.id, "403 not on the list").unwrap();
                            }
                            "stream" | "credit_stream" => {
                                let n = get_u64(&req.data, "n").unwrap_or(3);
                                let size = get_u64(&req.data, "size").unwrap_or(3) as usize;
                                r.streams.insert(req.id, (n, size));
                                if req.synapse_type == "credit_stream" {
                                    r.credited.insert(req.id, Default::default());
                                }
                            }
                            _ => {}
                        }
                    }
                    ServerEvent::RequestCancelled { id, .. } => {
                        r.streams.remove(id);
                        r.credited.remove(id);
                    }
                    _ => {}
                }
                r.events.push(ev);
            }
            let server = peer.server();
            // Push stream chunks until the queue is full.
            let ids: Vec<RequestId> = r.streams.keys().copied().collect();
            for id in ids {
                while let Some((left, size)) = r.streams.get_mut(&id) {
                    if *left == 0 {
                        let _ = server.end_stream::<()>(now, id, Ok(()));
                        r.streams.remove(&id);
                        r.credited.remove(&id);
                        break;
                    }
                    let seq = *left;
                    let chunk = Bytes::from(vec![(seq % 251) as u8; *size]);
                    if let Some(credit) = r.credited.get_mut(&id) {
                        // Like a driver: ask for credit, send only within it.
                        if let Ok(grant) = server.grant_chunk_credit(now, id) {
                            credit.add(grant);
                        }
                        let cap = server.config().max_queued_chunk_bytes;
                        if !credit.fits(chunk.len() as u64, cap) {
                            if credit.chunks > 0 && credit.bytes > 0 {
                                // Too little for this chunk: give it back so the
                                // connection's other streams can use it.
                                let back = std::mem::take(&mut credit.bytes);
                                let _ =
                                    server.return_chunk_credit(now, id, back, chunk.len() as u64);
                            }
                            break;
                        }
                        credit.consume(chunk.len() as u64);
                    }
                    match server.send_chunk(now, id, chunk) {
                        Ok(()) => *left -= 1,
                        Err(lightning_proto::endpoint::AnswerError::Full) => {
                            if r.credited.contains_key(&id) {
                                r.refused_within_credit += 1;
                            }
                            break;
                        }
                        Err(_) => {
                            r.streams.remove(&id);
                            break;
                        }
                    }
                }
            }
            r.max_queued_bytes = r.max_queued_bytes.max(server.queued_bytes());
        }
    }

    pub fn events(&mut self, client: NodeId) -> &mut Vec<ClientEvent> {
        self.client_events.entry(client).or_default()
    }

    pub fn authenticated(&mut self, client: NodeId, hotkey: &str) -> bool {
        self.events(client)
            .iter()
            .any(|e| matches!(e, ClientEvent::Authenticated { hotkey: h, .. } if h == hotkey))
    }

    pub fn handshake_failure(&mut self, client: NodeId) -> Option<String> {
        self.events(client).iter().find_map(|e| match e {
            ClientEvent::HandshakeFailed { error, .. } => Some(error.to_string()),
            _ => None,
        })
    }

    pub fn server_rejections(&self) -> Vec<String> {
        self.responder
            .events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::HandshakeRejected { error, .. } => Some(format!("{error:?}")),
                _ => None,
            })
            .collect()
    }

    /// The outcome of request `id`, if it has one.
    pub fn outcome(&mut self, client: NodeId, id: QueryId) -> Option<ClientEvent> {
        self.events(client)
            .iter()
            .find(|e| match e {
                ClientEvent::Response { id: i, .. }
                | ClientEvent::StreamEnd { id: i, .. }
                | ClientEvent::RequestFailed { id: i, .. } => *i == id,
                _ => false,
            })
            .cloned()
    }
}

pub fn get_u64(data: &DataMap, key: &str) -> Option<u64> {
    data.get(key).and_then(|v| v.as_u64())
}

pub fn data(pairs: &[(&str, rmpv::Value)]) -> DataMap {
    DataMap::from_values(pairs.iter().map(|(k, v)| (k.to_string(), v.clone()))).unwrap()
}

pub fn payload_data(bytes: Vec<u8>) -> DataMap {
    data(&[("payload", rmpv::Value::Binary(bytes))])
}

fn rand_fill(sim: &mut Simulator<Peer>, out: &mut [u8; 32]) {
    use rand_core::RngCore;
    sim.derive_rng().fill_bytes(out);
}
