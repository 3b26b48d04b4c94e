//! Behaviour the fuzz targets in `fuzz/` rely on, pinned as ordinary tests.
//!
//! The one crash a fuzz run found so far (`handshake_verify`: the nonce cache could evict
//! the nonce just inserted) is pinned in `handshake_replay.rs`. These tests pin two more things:
//! the guarantee behind the one `sim_scenario` finding (a request can be over before the
//! application first sees it, and then a cancellation event always follows), and the
//! `authenticated_stream` seeds (arbitrary bytes on an authenticated connection are
//! answered or ended, and the session survives them).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use lightning_proto::endpoint::{
    AnswerError, CancelReason, ClientConfig, ClientError, ClientEvent, QueryId, RequestOptions,
    ServerConfig, ServerEvent,
};
use lightning_proto::sim::NodeId;
use support::*;

const SERVER: &str = "10.0.0.1:8443";
const CLIENT: &str = "10.0.0.2:40000";
const SECOND: Duration = Duration::from_secs(1);

fn connected_pair(seed: u64) -> (World, NodeId, NodeId) {
    let mut w = World::new(seed);
    let s = w.add_server(SERVER, ServerConfig::default(), MINER_SEED);
    let c = w.make_client(ClientConfig::default(), VALIDATOR_SEED, 0);
    let c = w.add_client(CLIENT, c);
    let now = w.sim.now();
    w.client(c)
        .connect(now, addr(SERVER), [miner_hotkey()])
        .unwrap();
    let hk = miner_hotkey();
    w.run_until(10 * SECOND, |w| w.authenticated(c, &hk));
    (w, s, c)
}

fn frame(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// PROTOCOL.md §4.5: SynapsePacket "echo" with `{"prompt": "hi"}`.
const ECHO_PACKET: &str = "93a46563686f81a670726f6d7074a26869ce6553f100";

fn send_raw(w: &mut World, c: NodeId, bytes: Vec<u8>) -> QueryId {
    let now = w.sim.now();
    w.client(c)
        .send_raw_stream_for_testing(now, addr(SERVER), Bytes::from(bytes))
        .unwrap()
}

fn outcome(w: &mut World, c: NodeId, id: QueryId) -> ClientEvent {
    w.run_until(45 * SECOND, |w| w.outcome(c, id).is_some());
    w.outcome(c, id).unwrap()
}

fn transport_error(ev: ClientEvent) -> String {
    match ev {
        ClientEvent::RequestFailed {
            error: ClientError::Transport(e),
            ..
        } => e.to_string(),
        ClientEvent::RequestFailed {
            error: ClientError::Frame(e),
            ..
        } => e.to_string(),
        other => panic!("expected a transport error, got {other:?}"),
    }
}

/// Found by `sim_scenario`: a `Request` event can be queued and its stream reset before
/// the application polls it. Answering is then refused, and `RequestCancelled` follows.
#[test]
fn request_cancelled_before_the_application_sees_it_is_reported() {
    let (mut w, s, c) = connected_pair(11);
    let now = w.sim.now();
    let hk = miner_hotkey();
    let id = w
        .client(c)
        .request(
            now,
            addr(SERVER),
            &hk,
            "echo",
            data(&[("prompt", "hi".into())]),
            RequestOptions::default(),
        )
        .unwrap();
    // Step without running the applications until the server has the request queued.
    let mut request = None;
    for _ in 0..1000 {
        assert!(w.sim.step(), "simulation went idle");
        while let Some(ev) = w.server(s).poll_event() {
            if let ServerEvent::Request(r) = ev {
                request = Some(r);
            }
        }
        if request.is_some() {
            break;
        }
    }
    let request = request.expect("the request reached the server");
    // The validator gives up before the miner's application looks at it.
    let now = w.sim.now();
    w.client(c).cancel(now, id);
    let mut cancelled = false;
    for _ in 0..1000 {
        if !w.sim.step() {
            break;
        }
        while let Some(ev) = w.server(s).poll_event() {
            if let ServerEvent::RequestCancelled { id, reason } = ev {
                assert_eq!(id, request.id);
                assert_eq!(reason, CancelReason::PeerCancelled);
                cancelled = true;
            }
        }
        if cancelled {
            break;
        }
    }
    assert!(cancelled, "no RequestCancelled for a reset request");
    let now = w.sim.now();
    let answer = w
        .server(s)
        .respond::<()>(now, request.id, Ok(request.data.clone()));
    assert_eq!(answer, Err(AnswerError::UnknownRequest));
    assert_eq!(w.server(s).requests_in_flight(), 0);
}

/// The `authenticated_stream` seeds: each raw stream gets an answer or an end, and the
/// validator's session keeps working.
#[test]
fn raw_streams_on_an_authenticated_connection_end_and_leave_it_usable() {
    let (mut w, s, c) = connected_pair(12);
    let echo = hex::decode(ECHO_PACKET).unwrap();

    // A well-formed request, written raw, is answered like any other.
    let id = send_raw(&mut w, c, frame(3, &echo));
    match outcome(&mut w, c, id) {
        ClientEvent::Response { response, .. } => {
            assert!(response.success);
            assert_eq!(response.data.get("prompt"), Some("hi".into()));
        }
        other => panic!("unexpected {other:?}"),
    }

    // Truncated, empty, oversize-declared and unknown-type streams end with no frame:
    // the server finishes them empty, as the reference does.
    let mut truncated = frame(3, &echo);
    truncated.truncate(truncated.len() - 3);
    let oversize = hex::decode("03ffffffff93").unwrap();
    for bytes in [truncated, Vec::new(), oversize, vec![0x07, 0, 0, 0, 0]] {
        let id = send_raw(&mut w, c, bytes.clone());
        let m = transport_error(outcome(&mut w, c, id));
        assert!(
            m.contains("stream closed after 0 of 5 bytes"),
            "{bytes:02x?}: {m}"
        );
    }

    // A message type only a server sends: also an empty stream.
    let end_ok = frame(6, &[0x92, 0xc3, 0xc0]);
    let id = send_raw(&mut w, c, end_ok);
    assert!(transport_error(outcome(&mut w, c, id)).contains("stream closed"));

    // A handshake on a stream of an authenticated connection is judged on its own (this
    // one is stale) and does not cost the connection its session.
    let handshake = frame(1, &[0x94, 0xa0, 0x00, 0xa0, 0xa0]);
    let id = send_raw(&mut w, c, handshake);
    assert!(transport_error(outcome(&mut w, c, id)).contains("unexpected response type"));

    assert_eq!(w.server(s).requests_in_flight(), 0);
    assert_eq!(w.server(s).queued_bytes(), 0);
    let now = w.sim.now();
    let hk = miner_hotkey();
    let id = w
        .client(c)
        .request(
            now,
            addr(SERVER),
            &hk,
            "echo",
            data(&[("after", true.into())]),
            RequestOptions::default(),
        )
        .unwrap();
    match outcome(&mut w, c, id) {
        ClientEvent::Response { response, .. } => assert!(response.success),
        other => panic!("honest request after raw streams: {other:?}"),
    }
}
