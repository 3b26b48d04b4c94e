//! Refusals across the two implementations: each side must refuse what the other side
//! would refuse, with the reference's wire shapes (PROTOCOL §5.7, §5.9, §6.3).

use btlightning::{HandshakeResponse, Signer, Sr25519Signer};
use lightning_driver::error::HandshakeError;
use lightning_driver::{
    ClientBuilder, HandshakeCause, LightningError, LightningServer, QuicAxonInfo, QuicRequest,
    Runtime,
};

use crate::lightning_to_bt::our_client;
use crate::raw::{self, RawConnection};
use crate::{hotkey, lightning_miner, payload, to_ours, BtMiner, STRANGER_SEED, VALIDATOR_SEED};

/// Our client signs its handshake with a key other than the hotkey it claims (a callback
/// signer cannot be checked locally): btlightning's miner refuses it, our client reports
/// the refusal as a handshake error, and btlightning holds no authenticated validator.
pub async fn bt_miner_refuses_wrong_signature<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let wrong_key = Sr25519Signer::from_seed(STRANGER_SEED);
    let client = ClientBuilder::with_runtime(runtime)
        .callback_signer(hotkey(&VALIDATOR_SEED), move |message| {
            wrong_key.sign(message).map_err(|e| e.to_string())
        })
        .bind_addr(([127, 0, 0, 1], 0).into())
        .build()
        .expect("client");
    let report = client
        .initialize_connections([miner.axon()])
        .await
        .expect("report");
    assert!(report.authenticated.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(
        report.failed[0].1,
        LightningError::Handshake(HandshakeCause::Refused(HandshakeError::Rejected))
    );
    let err = client
        .query_axon(
            &miner.axon(),
            QuicRequest::new("echo", to_ours(&payload(8))),
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            LightningError::Handshake(_) | LightningError::Connect(_)
        ),
        "{err}"
    );
    let (_, verified, validators) = miner.connections().await;
    assert_eq!(verified, 0);
    assert!(validators.is_empty(), "{validators:?}");
    miner.stop().await;
}

/// Our client expects another hotkey at a btlightning miner's address: it refuses the
/// miner with the reference's message and sends no request.
pub async fn our_client_refuses_unexpected_bt_miner<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let client = our_client(runtime);
    let impostor = hotkey(&STRANGER_SEED);
    let axon = QuicAxonInfo::from_addr(impostor.clone(), miner.addr);
    let report = client
        .initialize_connections([axon.clone()])
        .await
        .expect("report");
    assert!(report.authenticated.is_empty(), "{report:?}");
    assert_eq!(
        report.failed,
        vec![(
            axon.clone(),
            LightningError::Handshake(HandshakeCause::Refused(HandshakeError::WrongHotkey {
                expected: impostor.clone(),
                got: miner.hotkey.clone(),
            }))
        )]
    );
    let err = client
        .query_axon(&axon, QuicRequest::new("echo", to_ours(&payload(8))))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            LightningError::Handshake(_) | LightningError::Connect(_)
        ),
        "{err}"
    );
    assert!(client
        .authenticated_hotkeys()
        .await
        .expect("hotkeys")
        .is_empty());
    miner.stop().await;
}

/// The shape of a handshake refusal after the request parsed (PROTOCOL §5.7): our miner's
/// hotkey, no signature, no connection id, no fingerprint.
fn assert_refused(response: &HandshakeResponse, server: &LightningServer) {
    assert!(!response.accepted, "{response:?}");
    assert_eq!(response.miner_hotkey, server.hotkey());
    assert_eq!(response.signature, "");
    assert_eq!(response.connection_id, "");
    assert_eq!(response.cert_fingerprint, None);
}

/// A request on a connection that never authenticated is answered `authentication failed`
/// and reaches no handler.
async fn assert_cannot_request(conn: &RawConnection) {
    let response = raw::request(&conn.connection, "echo", payload(8)).await;
    assert!(!response.success);
    assert!(response.data.is_empty());
    assert_eq!(response.error.as_deref(), Some("authentication failed"));
}

/// A btlightning handshake replayed byte for byte on a second connection to our miner.
///
/// The signed message binds only the miner's certificate fingerprint, which is the same
/// for every connection to one running miner, so the replayed bytes verify; only the nonce
/// gives them away. Both connections come from the same UDP socket: the reference would
/// authorize the second one by source address (PROTOCOL §5.10), our miner authorizes per
/// connection, so the replaying connection must not be able to make requests even though
/// its sibling is authenticated.
pub async fn our_miner_refuses_replayed_handshake<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let endpoint = raw::endpoint();

    let first = raw::connect(&endpoint, server.local_addr()).await;
    assert_eq!(first.fingerprint, server.fingerprint());
    let handshake = raw::signed_handshake(
        VALIDATOR_SEED,
        btlightning::util::unix_timestamp_secs(),
        &raw::fresh_nonce(),
        &first.fingerprint,
    );
    let bytes = raw::encode_handshake(&handshake);
    let accepted = raw::handshake(&first.connection, &bytes).await;
    assert!(accepted.accepted, "{accepted:?}");
    assert_eq!(accepted.miner_hotkey, server.hotkey());
    assert_eq!(
        accepted.cert_fingerprint.as_deref(),
        Some(first.fingerprint.as_str())
    );
    let served = raw::request(&first.connection, "echo", payload(8)).await;
    assert!(served.success, "{served:?}");
    // `conn_{validator hotkey}_{unix millis}` (PROTOCOL §5.7 step 9).
    let millis = accepted
        .connection_id
        .strip_prefix(&format!("conn_{}_", handshake.validator_hotkey))
        .expect("connection id prefix");
    assert!(millis.len() >= 13 && millis.bytes().all(|b| b.is_ascii_digit()));

    let second = raw::connect(&endpoint, server.local_addr()).await;
    assert_eq!(second.fingerprint, first.fingerprint);
    let replayed = raw::handshake(&second.connection, &bytes).await;
    assert_refused(&replayed, &server);
    assert_cannot_request(&second).await;

    // The original connection keeps its authentication.
    let still = raw::request(&first.connection, "echo", payload(8)).await;
    assert!(still.success, "{still:?}");
    let snapshot = server.stats().await.expect("stats");
    assert_eq!(snapshot.stats.handshakes_ok, 1);
    assert_eq!(snapshot.stats.handshakes_rejected, 1);
    assert_eq!(snapshot.validators.len(), 1);
    endpoint.close(0u32.into(), b"done");
    server.stop().await.expect("stop");
}

/// btlightning handshakes whose timestamp is too old (301 s with the default 300 s limit)
/// or too far ahead (120 s, the limit being 60 s) are refused and leave the connection
/// unable to make requests; a fresh handshake on that same connection is then accepted, so
/// the timestamp alone decided.
pub async fn our_miner_refuses_stale_handshake<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime).start().await.expect("server");
    let endpoint = raw::endpoint();
    let conn = raw::connect(&endpoint, server.local_addr()).await;
    let now = btlightning::util::unix_timestamp_secs();

    for timestamp in [now - 301, now + 120] {
        let handshake = raw::signed_handshake(
            VALIDATOR_SEED,
            timestamp,
            &raw::fresh_nonce(),
            &conn.fingerprint,
        );
        let response = raw::handshake(&conn.connection, &raw::encode_handshake(&handshake)).await;
        assert_refused(&response, &server);
        assert_cannot_request(&conn).await;
    }

    let fresh = raw::signed_handshake(
        VALIDATOR_SEED,
        btlightning::util::unix_timestamp_secs(),
        &raw::fresh_nonce(),
        &conn.fingerprint,
    );
    let response = raw::handshake(&conn.connection, &raw::encode_handshake(&fresh)).await;
    assert!(response.accepted, "{response:?}");
    let served = raw::request(&conn.connection, "echo", payload(8)).await;
    assert!(served.success, "{served:?}");
    let snapshot = server.stats().await.expect("stats");
    assert_eq!(snapshot.stats.handshakes_rejected, 2);
    assert_eq!(snapshot.stats.handshakes_ok, 1);
    endpoint.close(0u32.into(), b"done");
    server.stop().await.expect("stop");
}

/// A btlightning miner already holding `max_connections` (1 here) validators refuses a
/// new validator's connection at the QUIC level (PROTOCOL §1.1, CONNECTION_REFUSED); our
/// client reports a connection error and the first validator keeps being served.
pub async fn bt_miner_at_capacity_refuses_new_validator<R: Runtime>(runtime: R) {
    let mut config = btlightning::LightningServerConfig::default();
    config.max_connections = 1;
    let miner = BtMiner::start_with(config).await;
    let first = our_client(runtime.clone());
    let report = first
        .initialize_connections([miner.axon()])
        .await
        .expect("report");
    assert_eq!(report.authenticated, vec![miner.axon()]);
    miner.wait_verified(1).await;

    let second = ClientBuilder::with_runtime(runtime)
        .seed(STRANGER_SEED)
        .bind_addr(([127, 0, 0, 1], 0).into())
        .build()
        .expect("client");
    let report = second
        .initialize_connections([miner.axon()])
        .await
        .expect("report");
    assert!(report.authenticated.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1);
    let err = &report.failed[0].1;
    assert!(matches!(err, LightningError::Connect(_)), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");

    let ok = first
        .query_axon(
            &miner.axon(),
            QuicRequest::new("echo", to_ours(&payload(8))),
        )
        .await
        .expect("query");
    assert!(ok.success);
    let (_, verified, validators) = miner.connections().await;
    assert_eq!(verified, 1);
    assert_eq!(validators, vec![hotkey(&VALIDATOR_SEED)]);
    miner.stop().await;
}

/// The mirror case: our miner already holding `max_connections` (1) validators refuses a
/// second btlightning validator at the QUIC level, as the reference does; btlightning's
/// client ends up with no authenticated miner and its queries fail with a connection
/// error, while the admitted btlightning validator keeps being served.
pub async fn our_miner_at_capacity_refuses_bt_validator<R: Runtime>(runtime: R) {
    let server = lightning_miner(runtime)
        .configure(|c| c.max_connections = 1)
        .start()
        .await
        .expect("server");
    let axon = crate::our_axon(&server);
    let mut first = crate::bt_client(VALIDATOR_SEED);
    first
        .initialize_connections(vec![axon.clone()])
        .await
        .expect("initialize");
    assert_eq!(first.authenticated_hotkeys().await.len(), 1);

    let mut second = crate::bt_client(STRANGER_SEED);
    second
        .initialize_connections(vec![axon.clone()])
        .await
        .expect("initialize");
    assert!(second.authenticated_hotkeys().await.is_empty());
    let err = second
        .query_axon(
            axon.clone(),
            btlightning::QuicRequest::new("echo".into(), payload(8)),
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(err, btlightning::LightningError::Connection(_)),
        "{err}"
    );

    let ok = first
        .query_axon(
            axon,
            btlightning::QuicRequest::new("echo".into(), payload(8)),
        )
        .await
        .expect("query");
    assert!(ok.success);
    let snapshot = server.stats().await.expect("stats");
    assert!(snapshot.stats.refused >= 1, "{:?}", snapshot.stats);
    assert_eq!(snapshot.validators.len(), 1);
    assert_eq!(snapshot.validators[0].0, hotkey(&VALIDATOR_SEED));
    first.close_all_connections().await.expect("close");
    server.stop().await.expect("stop");
}

/// A nonce replayed by our client: two clients built with the same `rng_seed` (meant for
/// reproducible runs) draw the same handshake nonce. btlightning's miner accepts the
/// first and refuses the second by its replay cache (PROTOCOL §5.7 step 6), even though
/// its timestamp and signature are fresh; the first validator keeps being served.
pub async fn bt_miner_refuses_replayed_nonce<R: Runtime>(runtime: R) {
    let miner = BtMiner::start().await;
    let build = || {
        ClientBuilder::with_runtime(runtime.clone())
            .seed(VALIDATOR_SEED)
            .rng_seed([0x5a; 32])
            .bind_addr(([127, 0, 0, 1], 0).into())
            .build()
            .expect("client")
    };
    let first = build();
    let report = first
        .initialize_connections([miner.axon()])
        .await
        .expect("report");
    assert_eq!(report.authenticated, vec![miner.axon()], "{report:?}");
    miner.wait_verified(1).await;

    let second = build();
    let report = second
        .initialize_connections([miner.axon()])
        .await
        .expect("report");
    assert!(report.authenticated.is_empty(), "{report:?}");
    assert_eq!(
        report.failed[0].1,
        LightningError::Handshake(HandshakeCause::Refused(HandshakeError::Rejected))
    );
    let ok = first
        .query_axon(
            &miner.axon(),
            QuicRequest::new("echo", to_ours(&payload(8))),
        )
        .await
        .expect("query");
    assert!(ok.success, "the first connection was not replaced");
    miner.stop().await;
}

/// What our miner answers on the wire when btlightning's frame reader is on the other end
/// and the frames are wrong, before any handshake (PROTOCOL §2, §5.7, §6.3): an
/// undecodable handshake gets the pre-auth rejection (empty miner hotkey); an undecodable
/// request gets `invalid request format`; a frame of a server-to-client type, an unknown
/// type byte and a truncated frame each get a stream finished with no bytes, which
/// btlightning reads as `stream closed after 0 of 5 bytes`. A well-formed request is still
/// `authentication failed`.
pub async fn our_miner_wire_edges<R: Runtime>(runtime: R) {
    use btlightning::{LightningError as BtError, MessageType};
    let server = lightning_miner(runtime).start().await.expect("server");
    let endpoint = raw::endpoint();
    let conn = raw::connect(&endpoint, server.local_addr()).await;
    // A valid MessagePack document of the wrong shape.
    let junk = rmp_serde::to_vec(&("not", "a", "message", 1, 2, 3, 4)).expect("encode");

    let (kind, body) = raw::exchange(&conn.connection, &raw::frame(0x01, &junk))
        .await
        .expect("a handshake response");
    assert_eq!(kind, MessageType::HandshakeResponse);
    let response: HandshakeResponse = rmp_serde::from_slice(&body).expect("decode");
    assert!(!response.accepted);
    assert_eq!(response.miner_hotkey, "", "pre-auth rejection");
    assert_eq!(response.signature, "");
    assert_eq!(response.cert_fingerprint, None);

    let (kind, body) = raw::exchange(&conn.connection, &raw::frame(0x03, &junk))
        .await
        .expect("a synapse response");
    assert_eq!(kind, MessageType::SynapseResponse);
    let response: btlightning::SynapseResponse = rmp_serde::from_slice(&body).expect("decode");
    assert!(!response.success);
    assert_eq!(response.error.as_deref(), Some("invalid request format"));

    let truncated = &raw::frame(0x03, &junk)[..8];
    for bytes in [
        raw::frame(0x04, &junk),
        raw::frame(0x09, &junk),
        truncated.to_vec(),
    ] {
        let err = raw::exchange(&conn.connection, &bytes)
            .await
            .expect_err("nothing comes back");
        assert!(
            matches!(&err, BtError::Transport(m) if m == "stream closed after 0 of 5 bytes"),
            "{:02x?}: {err}",
            &bytes[..1]
        );
    }
    assert_cannot_request(&conn).await;
    endpoint.close(0u32.into(), b"done");
    server.stop().await.expect("stop");
}
