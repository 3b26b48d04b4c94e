//! # lightning-netem
//!
//! A userspace WAN emulator: a UDP relay that sits between a QUIC client and a server and
//! impairs the path in each direction. The client sends to the relay's address; the relay
//! forwards to the server from a socket of its own (one per client source address, like a
//! NAT mapping) and sends the server's answers back.
//!
//! Per direction ([`LinkConfig`]): one-way delay, jitter (without reordering unless
//! asked), random loss from a seeded RNG, a rate limit with a bounded drop-tail queue, and
//! a path MTU (datagrams that do not fit are dropped, like a router that cannot fragment).
//! At run time, through a [`RelayHandle`]: [`blackhole`](RelayHandle::blackhole) (drop
//! everything both ways for a while) and [`rebind`](RelayHandle::rebind) (move a client's
//! upstream socket to a new source port, so the server sees a migration). Counters of
//! forwarded and dropped datagrams are in [`RelayStats`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use lightning_netem::{Profile, Relay};
//! let server: std::net::SocketAddr = "127.0.0.1:8091".parse().unwrap();
//! let relay = Relay::start(
//!     "127.0.0.1:0".parse().unwrap(),
//!     server,
//!     Profile::Continent.config(7),
//! )?;
//! // Point the client at relay.local_addr() instead of the server.
//! relay.handle().blackhole(std::time::Duration::from_secs(5));
//! println!("{:?}", relay.stats());
//! # Ok(()) }
//! ```
//!
//! Delayed datagrams wait in one thread per direction, which sleeps until the next is due
//! and sends it with a non-blocking system call: a datagram leaves within the kernel's
//! timer slack (tens of microseconds) of its due time on an idle machine
//! ([`DirectionStats::late_us_total`] measures it). Profiles without added delay
//! ([`Profile::Lan`]) forward at once, from the relay's tokio tasks.
#![deny(missing_docs)]

mod link;
mod profile;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

pub use link::{DirectionStats, LinkConfig};
pub use profile::{ParseProfileError, Profile};

use link::{Dest, Link};

/// Socket buffers asked from the kernel for every relay socket (capped by
/// `net.core.rmem_max` / `wmem_max`).
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of IPv4 + UDP headers, added to a datagram's payload when comparing it with the
/// path MTU and when charging it to the rate limit.
pub const IPV4_UDP_OVERHEAD: usize = 28;
/// Bytes of IPv6 + UDP headers (see [`IPV4_UDP_OVERHEAD`]).
pub const IPV6_UDP_OVERHEAD: usize = 48;

/// Everything a relay does to the traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Impairments from the client to the server.
    pub to_server: LinkConfig,
    /// Impairments from the server to the client.
    pub to_client: LinkConfig,
    /// Seed of the loss and jitter decisions. The relay runs in real time, so a replay
    /// with the same seed makes the same decisions for the same sequence of datagrams per
    /// direction, not necessarily the same run.
    pub seed: u64,
    /// Client source addresses mapped at once; datagrams from further new addresses are
    /// dropped (counted in [`DirectionStats::no_mapping`]).
    pub max_flows: usize,
}

impl RelayConfig {
    /// The same impairments both ways.
    pub fn symmetric(link: LinkConfig, seed: u64) -> Self {
        Self {
            to_server: link.clone(),
            to_client: link,
            seed,
            max_flows: 1024,
        }
    }
}

impl Default for RelayConfig {
    /// No impairment (like [`Profile::Lan`]), seed 0.
    fn default() -> Self {
        Self::symmetric(LinkConfig::default(), 0)
    }
}

/// A snapshot of a relay's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to server.
    pub to_server: DirectionStats,
    /// Server to client.
    pub to_client: DirectionStats,
    /// Client source addresses currently mapped.
    pub flows: usize,
    /// Rebindings done through [`RelayHandle::rebind`].
    pub rebinds: u64,
}

/// A running relay. Dropping it stops every task of the relay and closes its sockets
/// (handles obtained from it stop working).
#[derive(Debug)]
pub struct Relay {
    handle: RelayHandle,
}

/// Controls a running relay: faults, mappings and counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    inner: Arc<Inner>,
}

/// One client source address and the relay socket that speaks for it upstream.
#[derive(Debug)]
pub(crate) struct Flow {
    client: SocketAddr,
    upstream: RwLock<Arc<UdpSocket>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Flow {
    pub(crate) fn upstream(&self) -> Arc<UdpSocket> {
        match self.upstream.read() {
            Ok(socket) => socket.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    runtime: Handle,
    listen: Arc<UdpSocket>,
    local_addr: SocketAddr,
    target: SocketAddr,
    seed: u64,
    max_flows: usize,
    epoch: Instant,
    /// End of the current blackhole, in nanoseconds since `epoch` (0: none).
    blackhole_until: AtomicU64,
    flows: Mutex<HashMap<SocketAddr, Arc<Flow>>>,
    rebinds: AtomicU64,
    to_server: Link,
    to_client: Link,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Binds a UDP socket with [`SOCKET_BUFFER_BYTES`] kernel buffers (as the relay's own
/// sockets) and registers it with tokio; must run inside a tokio runtime. Endpoints that
/// talk through a relay need such buffers too: a burst that reaches the relay together
/// leaves its delay queue together, which can overflow the kernel's default ~208 KiB.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind_socket(addr)
}

/// Binds a UDP socket with large kernel buffers and registers it with tokio.
fn bind_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: the kernel caps these, and a smaller buffer only means earlier drops.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Where a relay's upstream sockets bind to reach `target`. For a server on a loopback
/// address: the relay's own listening address when that is a specific one (so a relay on
/// the host's network address presents that address to the server, which then treats the
/// path as one to another host, as the client does), else the server's loopback address.
/// For other servers: the wildcard.
fn upstream_bind_addr(target: SocketAddr, listen: SocketAddr) -> SocketAddr {
    let ip = match target.ip() {
        ip if ip.is_loopback() => {
            let own = listen.ip();
            if own.is_unspecified() || own.is_ipv4() != ip.is_ipv4() {
                ip
            } else {
                own
            }
        }
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

impl Relay {
    /// Binds `listen` (port 0 picks one; see [`local_addr`](Self::local_addr)) and starts
    /// relaying to `target`. Must be called inside a tokio runtime (with the time and IO
    /// drivers enabled); the relay's tasks run on that runtime.
    pub fn start(listen: SocketAddr, target: SocketAddr, config: RelayConfig) -> io::Result<Self> {
        let runtime = Handle::try_current().map_err(|_| {
            io::Error::other("lightning-netem: Relay::start must run inside a tokio runtime")
        })?;
        let _guard = runtime.enter();
        let listen = Arc::new(bind_socket(listen)?);
        let local_addr = listen.local_addr()?;
        let overhead = if target.is_ipv4() {
            IPV4_UDP_OVERHEAD
        } else {
            IPV6_UDP_OVERHEAD
        };
        let (to_server, to_server_rx) = Link::new(config.to_server, config.seed, overhead);
        let (to_client, to_client_rx) = Link::new(
            config.to_client,
            config.seed ^ 0x9e37_79b9_7f4a_7c15,
            overhead,
        );
        let inner = Arc::new(Inner {
            runtime: runtime.clone(),
            listen,
            local_addr,
            target,
            seed: config.seed,
            max_flows: config.max_flows,
            epoch: Instant::now(),
            blackhole_until: AtomicU64::new(0),
            flows: Mutex::new(HashMap::new()),
            rebinds: AtomicU64::new(0),
            to_server,
            to_client,
            tasks: Mutex::new(Vec::new()),
        });
        for (to_server, rx) in [(true, to_server_rx), (false, to_client_rx)] {
            if let Some(rx) = rx {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name("lightning-netem-delay".into())
                    .spawn(move || link::deliver(inner, to_server, rx))?;
            }
        }
        *lock(&inner.tasks) = vec![runtime.spawn(client_reader(inner.clone()))];
        Ok(Self {
            handle: RelayHandle { inner },
        })
    }

    /// A handle to control the relay from elsewhere.
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The relay's counters (see [`RelayHandle::stats`]).
    pub fn stats(&self) -> RelayStats {
        self.handle.stats()
    }

    /// The seed of the loss and jitter decisions (print it to replay a failure).
    pub fn seed(&self) -> u64 {
        self.handle.inner.seed
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.handle.inner.stop();
    }
}

/// A relay running on a thread of its own, with its own single-threaded tokio runtime:
/// for callers without a tokio runtime (smol, async-std, plain threads), or to keep the
/// relay's work off the runtime it measures. Dropping it stops the relay and joins the
/// thread.
#[derive(Debug)]
pub struct RelayThread {
    handle: RelayHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayThread {
    /// Starts a thread named `lightning-netem` running [`Relay::start`] with these
    /// arguments; returns once the relay is listening.
    pub fn start(listen: SocketAddr, target: SocketAddr, config: RelayConfig) -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lightning-netem".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Relay::start(listen, target, config) {
                        Ok(relay) => {
                            let _ = ready_tx.send(Ok(relay.handle()));
                            // Runs until the owner stops it (or is dropped).
                            let _ = stop_rx.await;
                            drop(relay);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| io::Error::other("lightning-netem: the relay thread ended early"))??;
        Ok(Self {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// A handle to control the relay (faults, mappings, counters).
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The relay's counters.
    pub fn stats(&self) -> RelayStats {
        self.handle.stats()
    }
}

impl Drop for RelayThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Inner {
    fn stop(&self) {
        self.to_server.stop();
        self.to_client.stop();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        for (_, flow) in lock(&self.flows).drain() {
            if let Some(reader) = lock(&flow.reader).take() {
                reader.abort();
            }
        }
    }

    pub(crate) fn blackholed(&self, now: Instant) -> bool {
        let until = self.blackhole_until.load(Ordering::Relaxed);
        until != 0 && (now.saturating_duration_since(self.epoch).as_nanos() as u64) < until
    }

    pub(crate) fn listen(&self) -> &UdpSocket {
        &self.listen
    }

    pub(crate) fn target(&self) -> SocketAddr {
        self.target
    }

    pub(crate) fn link(&self, to_server: bool) -> &Link {
        if to_server {
            &self.to_server
        } else {
            &self.to_client
        }
    }

    /// The mapping for `client`, made on its first datagram.
    fn flow_for(self: &Arc<Self>, client: SocketAddr) -> io::Result<Option<Arc<Flow>>> {
        let mut flows = lock(&self.flows);
        if let Some(flow) = flows.get(&client) {
            return Ok(Some(flow.clone()));
        }
        if flows.len() >= self.max_flows {
            return Ok(None);
        }
        let socket = Arc::new(self.bind_upstream()?);
        let flow = Arc::new(Flow {
            client,
            upstream: RwLock::new(socket.clone()),
            reader: Mutex::new(None),
        });
        let reader = self
            .runtime
            .spawn(server_reader(self.clone(), flow.clone(), socket));
        *lock(&flow.reader) = Some(reader);
        flows.insert(client, flow.clone());
        Ok(Some(flow))
    }

    fn bind_upstream(&self) -> io::Result<UdpSocket> {
        let _guard = self.runtime.enter();
        bind_socket(upstream_bind_addr(self.target, self.local_addr))
    }
}

/// Datagrams from clients: map the source, then send them down the client-to-server link.
async fn client_reader(inner: Arc<Inner>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, from) = match inner.listen.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors reported on the socket, or a datagram that vanished: keep going.
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let data = &buf[..n];
        match inner.flow_for(from) {
            Ok(Some(flow)) => {
                inner
                    .to_server
                    .submit(&inner, data, Dest::Server(flow))
                    .await
            }
            Ok(None) | Err(_) => inner.to_server.refuse_unmapped(data.len()),
        }
    }
}

/// Datagrams from the server to one flow's upstream socket: back to that client.
async fn server_reader(inner: Arc<Inner>, flow: Arc<Flow>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        // Like a NAT mapping, the upstream socket only admits the server it speaks to.
        if from != inner.target {
            continue;
        }
        inner
            .to_client
            .submit(&inner, &buf[..n], Dest::Client(flow.client))
            .await;
    }
}

impl RelayHandle {
    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The server the relay forwards to.
    pub fn target(&self) -> SocketAddr {
        self.inner.target
    }

    /// The seed of the loss and jitter decisions.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Drops every datagram, both ways, for `duration` from now (datagrams already delayed
    /// in the relay that fall due inside the window are dropped too). A new call replaces
    /// the current window.
    pub fn blackhole(&self, duration: Duration) {
        let end = Instant::now()
            .saturating_duration_since(self.inner.epoch)
            .saturating_add(duration)
            .as_nanos()
            .max(1);
        let end = u64::try_from(end).unwrap_or(u64::MAX);
        self.inner.blackhole_until.store(end, Ordering::Relaxed);
    }

    /// Ends a blackhole now.
    pub fn heal(&self) {
        self.inner.blackhole_until.store(0, Ordering::Relaxed);
    }

    /// Whether a blackhole is in force.
    pub fn is_blackholed(&self) -> bool {
        self.inner.blackholed(Instant::now())
    }

    /// The current mappings: each client source address and the local address of the
    /// relay socket that sends its datagrams to the server.
    pub fn flows(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let flows: Vec<Arc<Flow>> = lock(&self.inner.flows).values().cloned().collect();
        flows
            .iter()
            .filter_map(|flow| {
                let upstream = flow.upstream().local_addr().ok()?;
                Some((flow.client, upstream))
            })
            .collect()
    }

    /// Moves `client`'s mapping to a new upstream socket (a new source port, as when a NAT
    /// rebinds): from now on the server sees that client's datagrams from the new address,
    /// and datagrams the server sends to the old one are dropped. Returns the new source
    /// address; fails with [`io::ErrorKind::NotFound`] if `client` has no mapping.
    pub fn rebind(&self, client: SocketAddr) -> io::Result<SocketAddr> {
        let flow = lock(&self.inner.flows)
            .get(&client)
            .cloned()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no mapping for client {client}"),
                )
            })?;
        let socket = Arc::new(self.inner.bind_upstream()?);
        let addr = socket.local_addr()?;
        let reader = self.inner.runtime.spawn(server_reader(
            self.inner.clone(),
            flow.clone(),
            socket.clone(),
        ));
        match flow.upstream.write() {
            Ok(mut current) => *current = socket,
            Err(poisoned) => *poisoned.into_inner() = socket,
        }
        if let Some(old) = lock(&flow.reader).replace(reader) {
            old.abort();
        }
        self.inner.rebinds.fetch_add(1, Ordering::Relaxed);
        Ok(addr)
    }

    /// Rebinds every client (see [`rebind`](Self::rebind)); returns the new source
    /// addresses.
    pub fn rebind_all(&self) -> io::Result<Vec<SocketAddr>> {
        let clients: Vec<SocketAddr> = lock(&self.inner.flows).keys().copied().collect();
        clients.into_iter().map(|c| self.rebind(c)).collect()
    }

    /// The relay's counters.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            to_server: self.inner.to_server.stats(),
            to_client: self.inner.to_client.stats(),
            flows: lock(&self.inner.flows).len(),
            rebinds: self.inner.rebinds.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::upstream_bind_addr;
    use std::net::SocketAddr;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn upstream_sockets_speak_from_the_relays_own_address_to_a_loopback_server() {
        // (server, relay listening on, where the upstream sockets bind)
        let cases = [
            // A relay on the host's network address: the server sees that address.
            ("127.0.0.1:9000", "192.0.2.2:7000", "192.0.2.2:0"),
            ("127.0.0.1:9000", "127.0.0.1:7000", "127.0.0.1:0"),
            // A wildcard listener, or one of the other family: the server's loopback
            // address.
            ("127.0.0.1:9000", "0.0.0.0:7000", "127.0.0.1:0"),
            ("127.0.0.1:9000", "[::1]:7000", "127.0.0.1:0"),
            // A server elsewhere: whatever address routes there.
            ("198.51.100.7:9000", "127.0.0.1:7000", "0.0.0.0:0"),
            ("[2001:db8::1]:9000", "[::1]:7000", "[::]:0"),
        ];
        for (server, listen, expected) in cases {
            assert_eq!(
                upstream_bind_addr(addr(server), addr(listen)),
                addr(expected),
                "server {server}, relay on {listen}"
            );
        }
    }
}
