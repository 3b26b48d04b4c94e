//! The emulator itself, with plain UDP sockets on loopback: every test asserts behaviour
//! (order, counts, which datagrams arrive), never a tight timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lightning_netem::{LinkConfig, Profile, Relay, RelayConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// Longest any single wait may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// A server socket that reports every datagram (payload, source, arrival time) and
/// optionally echoes it.
struct Server {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<(Vec<u8>, SocketAddr, Instant)>,
}

impl Server {
    async fn start(echo: bool) -> Self {
        // Large buffers, as for any endpoint behind the relay: a burst that reaches the
        // relay together leaves it together (300 tiny datagrams overflow the default).
        let socket = Arc::new(lightning_netem::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap());
        let addr = socket.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = socket.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                if echo {
                    let _ = reader.send_to(&buf[..n], from).await;
                }
                if tx.send((buf[..n].to_vec(), from, Instant::now())).is_err() {
                    break;
                }
            }
        });
        Self { socket, addr, rx }
    }

    async fn next(&mut self) -> (Vec<u8>, SocketAddr, Instant) {
        timeout(WAIT, self.rx.recv())
            .await
            .expect("the server got nothing in time")
            .expect("server reader ended")
    }
}

async fn client_of(relay: &Relay) -> UdpSocket {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(relay.local_addr()).await.unwrap();
    client
}

async fn recv(client: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = timeout(WAIT, client.recv(&mut buf))
        .await
        .expect("the client got nothing in time")
        .unwrap();
    buf.truncate(n);
    buf
}

fn seq(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn config(link: LinkConfig, seed: u64) -> RelayConfig {
    eprintln!("netem seed {seed}");
    RelayConfig::symmetric(link, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_forwards_both_ways_with_one_mapping() {
    let server = Server::start(true).await;
    let relay = Relay::start(
        "127.0.0.1:0".parse().unwrap(),
        server.addr,
        Profile::Lan.config(1),
    )
    .unwrap();
    let client = client_of(&relay).await;
    for i in 0..100 {
        client.send(&seq(i)).await.unwrap();
        assert_eq!(recv(&client).await, seq(i));
    }
    let stats = relay.stats();
    assert_eq!(stats.flows, 1);
    assert_eq!(stats.to_server.forwarded, 100);
    assert_eq!(stats.to_client.forwarded, 100);
    assert_eq!(stats.to_server.forwarded_bytes, 400);
    let flows = relay.handle().flows();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].0, client.local_addr().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_delays_without_reordering() {
    let mut server = Server::start(false).await;
    let link = LinkConfig {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(5),
        ..LinkConfig::default()
    };
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), server.addr, config(link, 2)).unwrap();
    let client = client_of(&relay).await;
    for i in 0..300 {
        client.send(&seq(i)).await.unwrap();
    }
    for i in 0..300 {
        let (data, _, _) = server.next().await;
        assert_eq!(data, seq(i), "datagram {i} out of order");
    }
    assert_eq!(relay.stats().to_server.forwarded, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_is_never_shorter_than_configured() {
    let server = Server::start(true).await;
    let link = LinkConfig {
        delay: Duration::from_millis(30),
        ..LinkConfig::default()
    };
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), server.addr, config(link, 3)).unwrap();
    let client = client_of(&relay).await;
    for i in 0..5 {
        let start = Instant::now();
        client.send(&seq(i)).await.unwrap();
        assert_eq!(recv(&client).await, seq(i));
        // 30 ms each way.
        assert!(start.elapsed() >= Duration::from_millis(60));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordering_happens_only_when_asked() {
    let mut server = Server::start(false).await;
    let link = LinkConfig {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(15),
        reorder: true,
        ..LinkConfig::default()
    };
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), server.addr, config(link, 4)).unwrap();
    let client = client_of(&relay).await;
    for i in 0..300 {
        client.send(&seq(i)).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..300 {
        got.push(server.next().await.0);
    }
    let in_order: Vec<Vec<u8>> = (0..300).map(seq).collect();
    assert_ne!(
        got, in_order,
        "30 ms of jitter with reordering reordered nothing"
    );
    got.sort();
    assert_eq!(got, in_order, "every datagram arrives exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_rate_is_roughly_the_configured_one() {
    let server = Server::start(false).await;
    let link = LinkConfig {
        loss: 0.1,
        ..LinkConfig::default()
    };
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), server.addr, config(link, 5)).unwrap();
    let client = client_of(&relay).await;
    for i in 0..5000 {
        client.send(&seq(i)).await.unwrap();
        if i % 200 == 0 {
            // Let the relay read, so the kernel does not drop on its socket.
            tokio::task::yield_now().await;
        }
    }
    // The relay counts every datagram it reads; wait until it has read them all or no
    // more come (a kernel drop before the relay is not the relay's loss).
    let deadline = Instant::now() + WAIT;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let received = relay.stats().to_server.received;
        if received == 5000 || received == last || Instant::now() > deadline {
            break;
        }
        last = received;
    }
    let s = relay.stats().to_server;
    assert!(s.received > 1000, "{s:?}");
    let rate = s.lost as f64 / s.received as f64;
    assert!((0.07..0.13).contains(&rate), "loss rate {rate}: {s:?}");
    assert_eq!(s.forwarded + s.lost + s.send_errors, s.received, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_above_the_path_mtu_are_dropped() {
    let mut server = Server::start(false).await;
    let link = LinkConfig {
        mtu: Some(1500),
        ..LinkConfig::default()
    };
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), server.addr, config(link, 6)).unwrap();
    let client = client_of(&relay).await;
    // IPv4: 20 + 8 header bytes, so 1472 is the largest payload that fits.
    client.send(&[1u8; 1472]).await.unwrap();
    client.send(&[2u8; 1473]).await.unwrap();
    client.send(b"marker").await.unwrap();
    assert_eq!(server.next().await.0.len(), 1472);
    // Order is kept, so the marker coming next means the 1473-byte datagram is gone.
    assert_eq!(server.next().await.0, b"marker");
    let s = relay.stats().to_server;
    assert_eq!(s.mtu_dropped, 1);
    assert_eq!(s.forwarded, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_drops_both_ways_until_healed() {
    let mut server = Server::start(false).await;
    let relay = Relay::start(
        "127.0.0.1:0".parse().unwrap(),
        server.addr,
        Profile::Lan.config(7),
    )
    .unwrap();
    let handle = relay.handle();
    let client = client_of(&relay).await;
    client.send(b"hello").await.unwrap();
    let (_, mapped, _) = server.next().await;

    handle.blackhole(Duration::from_secs(3600));
    assert!(handle.is_blackholed());
    for i in 0..20 {
        client.send(&seq(i)).await.unwrap();
        server.socket.send_to(&seq(i), mapped).await.unwrap();
    }
    // Each direction is read in order: once a datagram sent after the heal arrives, the
    // ones sent before it have been dropped.
    client.send(b"sync").await.unwrap();
    server.socket.send_to(b"sync", mapped).await.unwrap();
    // The syncs may be read before or after the heal: settle until both are counted.
    let deadline = Instant::now() + WAIT;
    while {
        let s = relay.stats();
        s.to_server.received < 22 || s.to_client.received < 21
    } {
        assert!(Instant::now() < deadline, "{:?}", relay.stats());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    handle.heal();
    client.send(b"after").await.unwrap();
    server.socket.send_to(b"after", mapped).await.unwrap();
    assert_eq!(server.next().await.0, b"after");
    assert_eq!(recv(&client).await, b"after");
    let s = relay.stats();
    assert_eq!(s.to_server.blackholed, 21, "{s:?}");
    assert_eq!(s.to_client.blackholed, 21, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_ends_by_itself() {
    let server = Server::start(true).await;
    let relay = Relay::start(
        "127.0.0.1:0".parse().unwrap(),
        server.addr,
        Profile::Lan.config(8),
    )
    .unwrap();
    let client = client_of(&relay).await;
    let start = Instant::now();
    relay.handle().blackhole(Duration::from_millis(300));
    let mut buf = [0u8; 64];
    let mut i = 0;
    loop {
        client.send(&seq(i)).await.unwrap();
        i += 1;
        if let Ok(got) = timeout(Duration::from_millis(50), client.recv(&mut buf)).await {
            got.unwrap();
            break;
        }
        assert!(start.elapsed() < WAIT, "the blackhole never ended");
    }
    // Whatever got through was sent after the window closed.
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(!relay.handle().is_blackholed());
    assert!(relay.stats().to_server.blackholed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_gives_the_client_a_new_source_port() {
    let mut server = Server::start(true).await;
    let relay = Relay::start(
        "127.0.0.1:0".parse().unwrap(),
        server.addr,
        Profile::Lan.config(9),
    )
    .unwrap();
    let handle = relay.handle();
    let client = client_of(&relay).await;
    let me = client.local_addr().unwrap();

    client.send(b"one").await.unwrap();
    let (_, before, _) = server.next().await;
    assert_eq!(recv(&client).await, b"one");
    assert_eq!(handle.flows(), vec![(me, before)]);

    let after = handle.rebind(me).unwrap();
    assert_ne!(after.port(), before.port());
    assert_eq!(handle.flows(), vec![(me, after)]);
    client.send(b"two").await.unwrap();
    let (data, source, _) = server.next().await;
    assert_eq!((data.as_slice(), source), (&b"two"[..], after));
    // The answer to the new address finds its way back.
    assert_eq!(recv(&client).await, b"two");
    // The old mapping is gone: what the server sends there never reaches the client.
    server.socket.send_to(b"stale", before).await.unwrap();
    client.send(b"three").await.unwrap();
    assert_eq!(recv(&client).await, b"three");
    assert_eq!(relay.stats().rebinds, 1);
    assert!(handle.rebind("127.0.0.1:1".parse().unwrap()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_bounds_throughput_and_drops_at_the_tail() {
    let mut server = Server::start(false).await;
    let rate = 8_000_000u64; // 1 MB/s
    let link = LinkConfig {
        rate_bits_per_s: Some(rate),
        queue_bytes: 200_000,
        ..LinkConfig::default()
    };
    let relay = Relay::start(
        "127.0.0.1:0".parse().unwrap(),
        server.addr,
        config(link, 10),
    )
    .unwrap();
    let client = client_of(&relay).await;
    let start = Instant::now();
    // 1 MB offered at once: about a fifth fits the queue, the rest is dropped.
    for _ in 0..1000 {
        client.send(&[0u8; 1000]).await.unwrap();
    }
    // Wait until the relay has read everything we sent (or stopped reading).
    let deadline = Instant::now() + WAIT;
    while {
        let s = relay.stats().to_server;
        s.received < 1000 && Instant::now() < deadline
    } {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = relay.stats().to_server;
    assert!(s.queue_dropped > 0, "{s:?}");
    assert!(s.forwarded + s.queue_dropped <= s.received, "{s:?}");
    let accepted = s.received - s.queue_dropped;
    assert!(
        accepted >= 100,
        "a 200 kB queue holds ~194 datagrams: {s:?}"
    );
    let mut last = start;
    for _ in 0..accepted {
        last = server.next().await.2;
    }
    // Departures are spaced by the link rate from the first arrival on, so the bytes that
    // arrived cannot have taken less time than the link needs for them.
    let wire_bits = (accepted * (1000 + 28) * 8) as f64;
    let achieved = wire_bits / last.duration_since(start).as_secs_f64();
    assert!(
        achieved <= rate as f64 * 1.05,
        "achieved {achieved:.0} bit/s through an {rate} bit/s link"
    );
}

/// A relay on its own thread serves callers that have no tokio runtime.
#[test]
fn a_relay_thread_works_without_a_runtime() {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    let relay = lightning_netem::RelayThread::start(
        "127.0.0.1:0".parse().unwrap(),
        server.local_addr().unwrap(),
        Profile::Continent.config(11),
    )
    .unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.connect(relay.local_addr()).unwrap();
    let mut buf = [0u8; 64];
    // Continent loses 0.1%: retry a few times rather than depend on one datagram.
    let mut answered = false;
    for i in 0..10u32 {
        client.send(&seq(i)).unwrap();
        let Ok((n, from)) = server.recv_from(&mut buf) else {
            continue;
        };
        server.send_to(&buf[..n], from).unwrap();
        if client.recv(&mut buf).is_ok() {
            answered = true;
            break;
        }
    }
    assert!(answered);
    assert!(relay.stats().to_client.forwarded >= 1);
    drop(relay);
}
