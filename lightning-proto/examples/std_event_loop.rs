//! A complete custom event loop over `std::net::UdpSocket`: no async runtime at all.
//!
//! One thread runs a miner (`Server`), another a validator (`Client`). Each loop does what
//! the crate documentation prescribes: feed datagrams and timeouts in, then drain transmits,
//! events and the next deadline. Run with `cargo run -p lightning-proto --example std_event_loop`.
// The IO side owns the clock and the socket; setup failures end the demo with a message.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::expect_used
)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use lightning_proto::endpoint::{
    Client, ClientConfig, ClientEvent, RequestOptions, Server, ServerConfig, ServerEvent,
    SynapseKind, Transmit,
};
use lightning_proto::endpoint::{Datagram, SansIo};
use lightning_proto::identity::{Keypair, KeypairSigner};
use lightning_proto::message::DataMap;

/// A datagram read from a plain `UdpSocket`, which reports neither ECN nor the local address.
fn received(remote: SocketAddr, payload: BytesMut) -> Datagram {
    Datagram {
        remote,
        local_ip: None,
        ecn: None,
        payload,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends every datagram of a transmit (splitting GSO batches by hand: plain sockets lack GSO).
fn send(socket: &UdpSocket, t: &Transmit, buf: &[u8]) {
    let seg = t.segment_size.unwrap_or(t.size);
    for datagram in buf[..t.size].chunks(seg) {
        let _ = socket.send_to(datagram, t.destination);
    }
}

/// Blocks until a datagram arrives or `deadline` passes; returns what arrived.
fn recv_until(socket: &UdpSocket, deadline: Option<Instant>) -> Option<(SocketAddr, BytesMut)> {
    let wait = deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(Duration::from_millis(100))
        .max(Duration::from_micros(100));
    socket.set_read_timeout(Some(wait)).ok()?;
    let mut buf = vec![0u8; 65_536];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some((from, BytesMut::from(&buf[..])))
}

fn run_server(socket: UdpSocket, mut server: Server, requests: usize) {
    let mut out = Vec::new();
    let mut answered = 0;
    while answered < requests {
        let now = Instant::now();
        // 1. transmits, 2. events, 3. deadline.
        while let Some(t) = server.poll_transmit(now, &mut out) {
            send(&socket, &t, &out);
        }
        while let Some(event) = server.poll_event() {
            if let ServerEvent::Request(req) = event {
                // An echo handler: hand the undecoded data straight back.
                let _ = server.respond::<()>(now, req.id, Ok(req.data));
                answered += 1;
            }
        }
        while let Some(t) = server.poll_transmit(now, &mut out) {
            send(&socket, &t, &out);
        }
        let deadline = server.poll_timeout();
        match recv_until(&socket, deadline) {
            Some((from, data)) => server.handle_datagram(Instant::now(), received(from, data)),
            None => server.handle_timeout(Instant::now()),
        }
    }
    // Let the last responses and ACKs leave.
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        let now = Instant::now();
        while let Some(t) = server.poll_transmit(now, &mut out) {
            send(&socket, &t, &out);
        }
        match recv_until(
            &socket,
            Some(until.min(server.poll_timeout().unwrap_or(until))),
        ) {
            Some((from, data)) => server.handle_datagram(Instant::now(), received(from, data)),
            None => server.handle_timeout(Instant::now()),
        }
    }
}

fn main() {
    let miner = Keypair::from_seed(&[1; 32]);
    let validator = Keypair::from_seed(&[2; 32]);
    let miner_hotkey = miner.hotkey();
    let requests = 20;

    let server_socket = UdpSocket::bind("127.0.0.1:0").expect("bind server socket");
    let server_addr = server_socket.local_addr().expect("server address");
    let mut server = Server::new(
        ServerConfig::default(),
        miner_hotkey.clone(),
        Arc::new(KeypairSigner::new(miner)),
        None,
        [7; 32], // use real randomness in production
        Instant::now(),
        unix_ms(),
    )
    .expect("server config");
    server.register_synapse("echo", SynapseKind::Unary);
    let server_thread = std::thread::spawn(move || run_server(server_socket, server, requests));

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client socket");
    let mut client = Client::new(
        ClientConfig::default(),
        validator.hotkey(),
        Arc::new(KeypairSigner::new(validator)),
        [9; 32],
        Instant::now(),
        unix_ms(),
    )
    .expect("client config");
    client
        .connect(Instant::now(), server_addr, [miner_hotkey.clone()])
        .expect("connect");

    let mut out = Vec::new();
    let mut sent = 0;
    let mut done = 0;
    let started = Instant::now();
    while done < requests {
        let now = Instant::now();
        while let Some(t) = client.poll_transmit(now, &mut out) {
            send(&socket, &t, &out);
        }
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Authenticated { hotkey, .. } => {
                    println!("authenticated miner {hotkey}");
                    for i in 0..requests {
                        let data =
                            DataMap::from_values([("n".to_string(), rmpv::Value::from(i as u64))])
                                .expect("data");
                        client
                            .request(
                                now,
                                server_addr,
                                &miner_hotkey,
                                "echo",
                                data,
                                RequestOptions::default(),
                            )
                            .expect("request");
                        sent += 1;
                    }
                }
                ClientEvent::Response {
                    response, latency, ..
                } => {
                    done += 1;
                    println!(
                        "response {done}/{sent}: n={:?} in {latency:?}",
                        response.data.get("n")
                    );
                }
                ClientEvent::HandshakeFailed { error, .. }
                | ClientEvent::RequestFailed { error, .. } => {
                    eprintln!("failed: {error}");
                    std::process::exit(1);
                }
                _ => {}
            }
        }
        while let Some(t) = client.poll_transmit(now, &mut out) {
            send(&socket, &t, &out);
        }
        match recv_until(&socket, client.poll_timeout()) {
            Some((from, data)) => client.handle_datagram(Instant::now(), received(from, data)),
            None => client.handle_timeout(Instant::now()),
        }
    }
    println!("{requests} echoes in {:?}", started.elapsed());
    let _ = server_thread.join();
}
