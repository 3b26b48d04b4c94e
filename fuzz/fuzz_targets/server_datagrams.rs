//! A `Server` fed arbitrary datagrams from several source addresses, next to one honest
//! client whose own datagrams the input may tamper with, replay or spoof.
//!
//! Input: `[setup]` then operations (see `Op`): raw datagrams, tampering with the
//! client's next datagram, replays of earlier client datagrams from other addresses,
//! time jumps (the fake clock only moves forward), and honest requests.
//!
//! Checks, after every operation: no panic; connections stay within the configured caps;
//! bytes queued for sending stay small; the replay cache stays within its cap; every
//! request the application received is answered. At the end, after the clock has run
//! long enough, no unauthenticated connection is left.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lightning_fuzz::world::{
    addr, data, make_client, make_server, miner_hotkey, CLIENT_ADDR, SERVER_ADDR, UNIX_START_MS,
};
use lightning_fuzz::Cursor;
use lightning_proto::endpoint::{
    Client, ClientConfig, RequestOptions, RetryPolicy, Server, ServerConfig, ServerEvent,
};
use lightning_proto::endpoint::{Datagram, SansIo};

const MAX_UNAUTH: usize = 4;
const MAX_VALIDATORS: usize = 2;
const MAX_NONCES: usize = 16;
const MAX_OPS: usize = 96;
/// Echo answers are tiny; anything near this means responses pile up.
const MAX_QUEUED: usize = 64 * 1024;

fn source(b: u8) -> SocketAddr {
    match b % 8 {
        0 => addr(CLIENT_ADDR),
        1 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 40001),
        2 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), 5000),
        3 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 1),
        4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)), 0),
        5 => SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)), 443),
        6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 65535),
        _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)), 53),
    }
}

/// What to do to the client's next outgoing datagram.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    Drop,
    Flip { at: u16, mask: u8 },
    Truncate(u16),
    Duplicate,
    FromAddress(u8),
}

struct Harness {
    now: Instant,
    server: Server,
    client: Client,
    tamper: Vec<Tamper>,
    /// Recent client datagrams, for replays.
    history: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl Harness {
    fn send_to_server(&mut self, from: SocketAddr, bytes: &[u8]) {
        let local = Some(addr(SERVER_ADDR).ip());
        self.server.handle_datagram(
            self.now,
            Datagram {
                remote: from,
                local_ip: local,
                ecn: None,
                payload: BytesMut::from(bytes),
            },
        );
    }

    /// Moves datagrams both ways until neither side has anything to send, applying the
    /// pending tampering to the client's datagrams; answers server requests.
    fn settle(&mut self) {
        let client_addr = addr(CLIENT_ADDR);
        for _ in 0..64 {
            let mut moved = false;
            while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
                moved = true;
                if t.destination != client_addr {
                    continue;
                }
                let seg = t.segment_size.unwrap_or(t.size).max(1);
                for chunk in self.buf[..t.size].chunks(seg) {
                    self.client.handle_datagram(
                        self.now,
                        Datagram {
                            remote: addr(SERVER_ADDR),
                            local_ip: Some(client_addr.ip()),
                            ecn: None,
                            payload: BytesMut::from(chunk),
                        },
                    );
                }
            }
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
                moved = true;
                let seg = t.segment_size.unwrap_or(t.size).max(1);
                let datagrams: Vec<Vec<u8>> =
                    self.buf[..t.size].chunks(seg).map(<[u8]>::to_vec).collect();
                for mut d in datagrams {
                    if self.history.len() < 32 {
                        self.history.push(d.clone());
                    }
                    let mut from = client_addr;
                    let mut copies = 1;
                    match self.tamper.pop() {
                        None => {}
                        Some(Tamper::Drop) => continue,
                        Some(Tamper::Flip { at, mask }) if !d.is_empty() => {
                            let i = usize::from(at) % d.len();
                            d[i] ^= mask.max(1);
                        }
                        Some(Tamper::Flip { .. }) => {}
                        Some(Tamper::Truncate(n)) => d.truncate(usize::from(n)),
                        Some(Tamper::Duplicate) => copies = 2,
                        Some(Tamper::FromAddress(b)) => from = source(b),
                    }
                    for _ in 0..copies {
                        self.send_to_server(from, &d);
                    }
                }
            }
            self.pump();
            if !moved {
                break;
            }
        }
    }

    fn pump(&mut self) {
        while let Some(ev) = self.server.poll_event() {
            if let ServerEvent::Request(req) = ev {
                let _ = self
                    .server
                    .respond::<()>(self.now, req.id, Ok(req.data.clone()));
            }
        }
        while self.client.poll_event().is_some() {}
    }

    /// Moves the clock forward by `d`, firing every timer on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for round in 0.. {
            assert!(round < 100_000, "timers keep firing without time moving");
            self.settle();
            let next = [self.server.poll_timeout(), self.client.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.server.handle_timeout(self.now);
                    self.client.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
        self.server.handle_timeout(self.now);
        self.client.handle_timeout(self.now);
        self.settle();
    }

    fn check(&mut self) {
        let s = &self.server;
        assert!(
            s.connection_count() <= MAX_UNAUTH + MAX_VALIDATORS,
            "{} connections open (caps {MAX_UNAUTH} + {MAX_VALIDATORS})",
            s.connection_count()
        );
        assert!(s.unauthenticated_count() <= s.connection_count());
        assert!(s.validators().count() <= MAX_VALIDATORS);
        assert!(
            s.queued_bytes() <= MAX_QUEUED,
            "{} bytes queued",
            s.queued_bytes()
        );
        assert!(s.active_nonce_count() <= MAX_NONCES);
        assert_eq!(
            s.requests_in_flight(),
            0,
            "a delivered request went unanswered"
        );
    }
}

fuzz_target!(|input: &[u8]| {
    let mut c = Cursor::new(input);
    let setup = c.u8();
    let config = ServerConfig {
        max_unauthenticated_connections: MAX_UNAUTH,
        max_connections: MAX_VALIDATORS,
        max_nonce_entries: MAX_NONCES,
        retry: match setup % 3 {
            0 => RetryPolicy::Never,
            1 => RetryPolicy::Always,
            _ => RetryPolicy::WhenUnauthenticatedAtLeast(2),
        },
        ..ServerConfig::default()
    };
    let now = Instant::now();
    let mut h = Harness {
        now,
        server: make_server(config, now, UNIX_START_MS),
        client: make_client(ClientConfig::default(), [9; 32], now, UNIX_START_MS),
        tamper: Vec::new(),
        history: Vec::new(),
        buf: Vec::new(),
    };
    if setup & 0x80 != 0 {
        let _ = h.client.connect(h.now, addr(SERVER_ADDR), [miner_hotkey()]);
        h.settle();
    }

    let mut ops = 0;
    while !c.is_empty() && ops < MAX_OPS {
        ops += 1;
        match c.u8() % 10 {
            0..=2 => {
                let from = source(c.u8());
                let len = usize::from(c.u16() % 1500);
                let bytes = c.bytes(len).to_vec();
                h.send_to_server(from, &bytes);
            }
            3 => {
                let t = match c.u8() % 5 {
                    0 => Tamper::Drop,
                    1 => Tamper::Flip {
                        at: c.u16(),
                        mask: c.u8(),
                    },
                    2 => Tamper::Truncate(c.u16() % 1500),
                    3 => Tamper::Duplicate,
                    _ => Tamper::FromAddress(c.u8()),
                };
                h.tamper.insert(0, t);
            }
            4 => {
                // Replay an earlier client datagram, possibly from elsewhere.
                let i = usize::from(c.u8());
                let from = source(c.u8());
                if !h.history.is_empty() {
                    let d = h.history[i % h.history.len()].clone();
                    h.send_to_server(from, &d);
                }
            }
            5 => {
                // An earlier client datagram with a span overwritten by input bytes.
                let i = usize::from(c.u8());
                let at = usize::from(c.u16());
                let patch = c.blob().to_vec();
                if !h.history.is_empty() {
                    let mut d = h.history[i % h.history.len()].clone();
                    let at = at % (d.len() + 1);
                    let end = (at + patch.len()).min(d.len());
                    d[at..end].copy_from_slice(&patch[..end - at]);
                    h.send_to_server(source(0), &d);
                }
            }
            6 | 7 => {
                let b = c.u8();
                let ms = 1u64 << (b % 18); // 1 ms .. 131 s
                h.advance(Duration::from_millis(ms));
            }
            8 => {
                let _ = h.client.connect(h.now, addr(SERVER_ADDR), [miner_hotkey()]);
            }
            _ => {
                let n = usize::from(c.u8());
                let d = data(&[("payload", rmpv::Value::Binary(vec![0x42; n]))]);
                let opts = RequestOptions {
                    timeout: Some(Duration::from_secs(5)),
                    streaming: false,
                };
                let hk = miner_hotkey();
                let _ = h
                    .client
                    .request(h.now, addr(SERVER_ADDR), &hk, "echo", d, opts);
            }
        }
        h.settle();
        h.check();
    }

    // Long enough for the handshake timeout, the idle timeout and draining: every
    // connection that never authenticated must be gone by then.
    for _ in 0..8 {
        h.advance(Duration::from_secs(30));
        h.check();
    }
    assert_eq!(
        h.server.unauthenticated_count(),
        0,
        "unauthenticated connections outlived every timeout"
    );
});
