//! The systems under test, each behind the same synchronous interface: every call runs to
//! completion on the system's own executor, so the harness can interleave them.

use std::time::Duration;

pub mod btl;
pub mod lightning;
pub mod raw;

/// Seed of the miner (server) key, PROTOCOL.md §12.
pub const MINER_SEED: [u8; 32] = [1; 32];
/// Seed of the validator (client) key, PROTOCOL.md §12.
pub const VALIDATOR_SEED: [u8; 32] = [2; 32];
/// The synapse every system answers.
pub const SYNAPSE: &str = "echo";
/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Server settings for the many-connections cell: room for `n` validators from one IP.
#[derive(Debug, Clone, Copy)]
pub struct ManyConns {
    /// Connections to admit.
    pub n: usize,
}

/// What a connection-setup sample times, from building a new client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupKind {
    /// Until the connection is authenticated: QUIC + TLS + sr25519 (for quinn-raw, until
    /// the QUIC handshake completes).
    Authenticated,
    /// Until the answer to a first 64-byte echo, sent at once without connecting first
    /// (the client dials on demand).
    FirstReply,
}

/// One contender.
pub trait System: Send {
    /// Short stable name used in tables and JSON.
    fn name(&self) -> &'static str;
    /// Which btlightning flavour this system is compared with.
    fn baseline(&self) -> &'static str;

    /// Starts the long-lived server and a connected client.
    fn open(&mut self) -> Result<(), String>;
    /// Stops them.
    fn close(&mut self);

    /// `n` sequential echoes of `size` bytes; the latency of each in nanoseconds.
    fn latency(&mut self, size: usize, n: usize) -> Result<Vec<u64>, String>;
    /// Echoes of `size` bytes with `concurrency` in flight until `max` were started or
    /// `budget` passed; returns (successful requests, wall time).
    fn throughput(
        &mut self,
        size: usize,
        concurrency: usize,
        budget: Duration,
        max: u64,
    ) -> Result<(u64, Duration), String>;

    /// One connection-setup sample: fresh server (untimed), then new client + connect +
    /// handshake + first 64-byte echo (timed), then teardown (untimed).
    fn setup_once(&mut self) -> Result<Duration, String>;

    /// Connects a client (no server of its own) to a server at `addr` with miner `hotkey`,
    /// e.g. one in another process; [`latency`](Self::latency) and
    /// [`throughput`](Self::throughput) then use it, and [`close`](Self::close) ends it.
    fn open_remote(&mut self, addr: std::net::SocketAddr, hotkey: &str) -> Result<(), String>;

    /// One connection-setup sample against a server at `addr`: a new client with
    /// validator `seed`, timed as `kind` says, then torn down (untimed).
    fn setup_remote(
        &mut self,
        addr: std::net::SocketAddr,
        hotkey: &str,
        seed: [u8; 32],
        kind: SetupKind,
    ) -> Result<Duration, String>;

    /// Starts `servers` servers and connects one new client to all of them; returns the
    /// time to connect.
    fn fanout_open(&mut self, servers: usize) -> Result<Duration, String>;
    /// One fan-out round: the same `size`-byte echo to every server at once.
    fn fanout_round(&mut self, size: usize) -> Result<Duration, String>;
    /// Stops the fan-out servers and client.
    fn fanout_close(&mut self);

    /// Runs a server for the many-connections cell and returns (address, hotkey). It stays
    /// up until [`stop_many_server`](Self::stop_many_server).
    fn start_many_server(
        &mut self,
        cfg: ManyConns,
    ) -> Result<(std::net::SocketAddr, String), String>;
    /// Stops the many-connections server.
    fn stop_many_server(&mut self);
    /// Connects `n` distinct validators to `addr`, each with its own client, and checks
    /// that each answers one echo. The clients stay connected until
    /// [`drop_many_clients`](Self::drop_many_clients).
    fn connect_many(
        &mut self,
        addr: std::net::SocketAddr,
        hotkey: &str,
        n: usize,
    ) -> Result<Duration, String>;
    /// Disconnects the clients of [`connect_many`](Self::connect_many).
    fn drop_many_clients(&mut self);
}

/// The validator seed for the `i`-th of many validators (distinct hotkeys).
pub fn many_seed(i: usize) -> [u8; 32] {
    let mut seed = [3u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    seed
}

/// The miner seed of the `i`-th fan-out server: each server is a distinct miner, as on a
/// subnet (clients route by hotkey, so one hotkey at many addresses would collapse).
pub fn fan_seed(i: usize) -> [u8; 32] {
    let mut seed = [4u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    seed
}

/// The payload of PROTOCOL.md §12: `size` bytes of 0x42.
pub fn payload_bytes(size: usize) -> Vec<u8> {
    vec![0x42; size]
}

/// `{"payload": bin}` encoded as a MessagePack map, the data map every system sends.
pub fn payload_map_msgpack(size: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity(size + 16);
    raw.push(0x81);
    raw.push(0xa7);
    raw.extend_from_slice(b"payload");
    if size <= u8::MAX as usize {
        raw.extend_from_slice(&[0xc4, size as u8]);
    } else if size <= u16::MAX as usize {
        raw.push(0xc5);
        raw.extend_from_slice(&(size as u16).to_be_bytes());
    } else {
        raw.push(0xc6);
        raw.extend_from_slice(&(size as u32).to_be_bytes());
    }
    raw.extend_from_slice(&payload_bytes(size));
    raw
}

/// Bytes of the request frame, computed as PROTOCOL.md §12 does:
/// `5 + len(msgpack(SynapsePacket{"echo", data, 1700000000}))`.
pub fn wire_request_bytes(size: usize) -> usize {
    // array(3) + fixstr "echo" + map + uint32 timestamp
    5 + 1 + (1 + SYNAPSE.len()) + payload_map_msgpack(size).len() + 5
}

/// A fresh sr25519 hotkey for `seed`, in SS58.
pub fn hotkey(seed: &[u8; 32]) -> String {
    lightning_tokio::Identity::from_seed(seed)
        .hotkey()
        .to_owned()
}
