//! Arbitrary bytes on streams of an authenticated connection.
//!
//! A client authenticates to a server in the simulator, then writes each of up to four
//! input blobs verbatim on its own new stream (then FIN), optionally next to an honest
//! request.
//!
//! Input: `[flags] ([u16 length] [bytes])...`.
//!
//! Checks: no panic; every raw stream ends (the server answers, or finishes or resets the
//! stream) within the server's own timeouts; the server holds no request or queued bytes
//! afterwards; the connection still authenticates and answers an honest echo request.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use lightning_fuzz::world::{addr, data, Expect, Outcome, World, SERVER_ADDR};
use lightning_fuzz::Cursor;
use lightning_proto::endpoint::{ClientConfig, RequestOptions, ServerConfig};

const SECOND: Duration = Duration::from_secs(1);

fn echo(w: &mut World, tag: u8) -> lightning_proto::endpoint::QueryId {
    let d = data(&[("tag", rmpv::Value::from(tag))]);
    let sent = d.raw().clone();
    w.request("echo", d, RequestOptions::default(), Expect::Echo(sent))
        .expect("honest request accepted")
}

fuzz_target!(|input: &[u8]| {
    let mut c = Cursor::new(input);
    let flags = c.u8();
    let server_config = ServerConfig::default();
    // Everything the server does on its own ends within these.
    let patience = server_config.handler_timeout + server_config.request_read_timeout + 10 * SECOND;
    let mut w = World::new(0x5eed, server_config, ClientConfig::default());
    w.connect().expect("connect");
    assert!(
        w.run_until(10 * SECOND, |w| w.is_authenticated()),
        "honest client did not authenticate"
    );

    let mut raw = Vec::new();
    while !c.is_empty() && raw.len() < 4 {
        let bytes = Bytes::copy_from_slice(c.blob());
        let now = w.sim.now();
        let id = w
            .client()
            .send_raw_stream_for_testing(now, addr(SERVER_ADDR), bytes)
            .expect("a fresh stream on a live connection");
        w.track(id, Expect::Anything);
        raw.push(id);
    }
    // Optionally an honest request racing the raw ones.
    let racing = (flags & 1 != 0).then(|| echo(&mut w, 1));

    let ended = w.run_until(patience, |w| raw.iter().all(|id| w.outcome(*id).is_some()));
    assert!(ended, "a raw stream got neither an answer nor a reset");
    if let Some(id) = racing {
        assert!(
            w.run_until(10 * SECOND, |w| w.outcome(id).is_some()),
            "racing honest request unanswered"
        );
        assert!(
            matches!(w.outcome(id), Some(Outcome::Response { success: true, .. })),
            "racing honest request failed: {:?}",
            w.outcome(id)
        );
    }

    // The server holds nothing for streams that are over.
    w.run_for(SECOND);
    assert_eq!(w.server().requests_in_flight(), 0);
    assert!(w.max_queued_bytes < 1 << 20);

    // Still usable: an honest request on the same connection is answered.
    assert!(
        w.is_authenticated(),
        "raw bytes cost the validator its session"
    );
    let id = echo(&mut w, 2);
    assert!(
        w.run_until(10 * SECOND, |w| w.outcome(id).is_some()),
        "honest request after raw streams unanswered"
    );
    assert!(
        matches!(w.outcome(id), Some(Outcome::Response { success: true, .. })),
        "honest request after raw streams failed: {:?}",
        w.outcome(id)
    );
});
