//! A client and a server in the simulator, driven by a script the input spells out:
//! connect, requests of every kind, cancellations, partitions, lossy or reordering links,
//! corrupted, truncated and duplicated datagrams, disconnects and time jumps.
//!
//! Input: `[seed]` then one operation per byte (with its arguments following).
//!
//! Checks, after every step (inside `World::pump`): no request ends twice, no event for an
//! unknown or cancelled request, no chunk after the end, echoes return the data unchanged,
//! streams deliver exactly the chunks sent, no request reaches the server twice. At the
//! end, once the network is healed and the clock has run long enough, every request has
//! ended, and a fresh honest request succeeds.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lightning_fuzz::world::{addr, data, Expect, Outcome, World, CLIENT_ADDR, SERVER_ADDR};
use lightning_fuzz::Cursor;
use lightning_proto::endpoint::{ClientConfig, QueryId, RequestOptions, ServerConfig};
use lightning_proto::sim::LinkConditions;

const MAX_OPS: usize = 48;

fn timeout(b: u8) -> Option<Duration> {
    match b % 4 {
        0 => None,
        1 => Some(Duration::from_millis(200)),
        2 => Some(Duration::from_secs(2)),
        _ => Some(Duration::from_secs(20)),
    }
}

fn link(c: &mut Cursor<'_>) -> LinkConditions {
    let b = c.u8();
    LinkConditions {
        latency: Duration::from_millis(u64::from(c.u8() % 200)),
        jitter: Duration::from_millis(u64::from(c.u8() % 50)),
        loss: [0.0, 0.05, 0.3, 1.0][usize::from(b % 4)],
        duplicate: [0.0, 0.2][usize::from((b >> 2) & 1)],
        reorder: [0.0, 0.3][usize::from((b >> 3) & 1)],
        reorder_delay: Duration::from_millis(50),
        mtu: [65_527, 1200, 1300, 600][usize::from((b >> 4) & 3)],
        bandwidth: [None, Some(200_000), Some(5_000_000), None][usize::from((b >> 6) & 3)],
        queue_bytes: 64 * 1024,
    }
}

fuzz_target!(|input: &[u8]| {
    let mut c = Cursor::new(input);
    let seed = u64::from(c.u8());
    let mut w = World::new(seed, ServerConfig::default(), ClientConfig::default());
    let (client, server) = (addr(CLIENT_ADDR), addr(SERVER_ADDR));
    let mut issued: Vec<QueryId> = Vec::new();

    let mut ops = 0;
    while !c.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = c.u8();
        match op % 16 {
            0 => {
                let _ = w.connect();
            }
            1 | 2 => {
                let n = usize::from(c.u8()) * 16;
                let d = data(&[("payload", rmpv::Value::Binary(vec![op; n]))]);
                let sent = d.raw().clone();
                let opts = RequestOptions {
                    timeout: timeout(c.u8()),
                    streaming: false,
                };
                if let Ok(id) = w.request("echo", d, opts, Expect::Echo(sent)) {
                    issued.push(id);
                }
            }
            3 => {
                let n = u64::from(c.u8() % 40);
                let size = u64::from(c.u16() % 3000);
                let d = data(&[
                    ("n", rmpv::Value::from(n)),
                    ("size", rmpv::Value::from(size)),
                ]);
                let opts = RequestOptions {
                    timeout: timeout(c.u8()),
                    streaming: true,
                };
                if let Ok(id) = w.request("stream", d, opts, Expect::Stream { n, size }) {
                    issued.push(id);
                }
            }
            4 => {
                let b = c.u8();
                let (synapse, expect, streaming) = match b % 5 {
                    0 => ("fail", Expect::Fail, false),
                    1 => ("slow", Expect::Slow, false),
                    2 => ("nope", Expect::Anything, false),
                    3 => ("echo", Expect::Anything, true),
                    _ => ("stream", Expect::Anything, false),
                };
                let opts = RequestOptions {
                    timeout: timeout(b >> 4),
                    streaming,
                };
                if let Ok(id) = w.request(synapse, data(&[]), opts, expect) {
                    issued.push(id);
                }
            }
            5 => {
                let i = usize::from(c.u8());
                if !issued.is_empty() {
                    w.cancel(issued[i % issued.len()]);
                }
            }
            6 => w.sim.partition(client, server),
            7 => w.sim.heal(client, server),
            8 | 9 => {
                let b = c.u8();
                let d = Duration::from_millis(1u64 << (b % 17)); // 1 ms .. 65 s
                w.run_for(d);
            }
            10 => {
                let node = if c.u8() & 1 == 0 { w.client } else { w.server };
                let at = usize::from(c.u16());
                let mask = c.u8();
                w.sim.node_mut(node).corrupt_next.push((at, mask));
            }
            11 => {
                let node = if c.u8() & 1 == 0 { w.client } else { w.server };
                w.sim.node_mut(node).duplicate_next += 1;
            }
            12 => {
                let node = if c.u8() & 1 == 0 { w.client } else { w.server };
                let len = usize::from(c.u16() % 1500);
                w.sim.node_mut(node).truncate_next = Some(len);
            }
            13 => {
                let conditions = link(&mut c);
                if c.u8() & 1 == 0 {
                    w.sim.set_link(client, server, conditions);
                } else {
                    w.sim.set_link(server, client, conditions);
                }
            }
            14 => {
                let now = w.sim.now();
                match c.u8() % 3 {
                    0 => w.client().disconnect(now, server, "fuzz"),
                    1 => w.client().reset_backoff(server),
                    _ => w.server().close(now),
                }
            }
            _ => {
                // Let the network run until nothing is due right now.
                let _ = w.run_until(Duration::from_millis(1), |_| false);
            }
        }
        w.pump();
    }

    // Heal everything; every request must end (the longest wait is a connection that
    // only the idle timeout can declare dead).
    w.sim.heal(client, server);
    w.sim.set_link(client, server, LinkConditions::perfect());
    w.sim.set_link(server, client, LinkConditions::perfect());
    w.sim.node_mut(w.client).clear_hooks();
    w.sim.node_mut(w.server).clear_hooks();
    let all_ended = w.run_until(Duration::from_secs(400), |w| w.open_requests().is_empty());
    assert!(all_ended, "requests never ended: {:?}", w.open_requests());

    // The pair recovers: a fresh handshake if needed, then an honest request succeeds.
    // (A minute first, so a script that spent the handshake rate limit is not held to it.)
    w.run_for(Duration::from_secs(61));
    w.client().reset_backoff(server);
    let _ = w.connect();
    let d = data(&[("after", rmpv::Value::from(true))]);
    let sent = d.raw().clone();
    let opts = RequestOptions {
        timeout: Some(Duration::from_secs(30)),
        streaming: false,
    };
    let id = w
        .request("echo", d, opts, Expect::Echo(sent))
        .expect("request after healing");
    assert!(w.run_until(Duration::from_secs(40), |w| w.outcome(id).is_some()));
    assert!(
        matches!(w.outcome(id), Some(Outcome::Response { success: true, .. })),
        "honest request after healing failed: {:?}",
        w.outcome(id)
    );
});
