//! Raw QUIC connections that speak btlightning's wire structs, built only from what
//! btlightning 0.2.15 exports: `HandshakeRequest`/`HandshakeResponse`/`SynapsePacket`/
//! `SynapseResponse`, `types::{write_frame_and_finish, read_frame}`, `MessageType`, its
//! `Sr25519Signer`, and quinn (its transport). Its client always builds a fresh handshake,
//! so this is how a replayed or stale btlightning handshake reaches our miner.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use btlightning::types::{read_frame, write_frame_and_finish};
use btlightning::{
    HandshakeRequest, HandshakeResponse, MessageType, Signer, Sr25519Signer, SynapsePacket,
    SynapseResponse, DEFAULT_MAX_FRAME_PAYLOAD,
};

use crate::BtData;

/// A quinn client endpoint on 127.0.0.1 speaking ALPN `btlightning`. Must run inside a
/// tokio runtime.
pub fn endpoint() -> quinn::Endpoint {
    let tls = lightning_tests::accept_any_cert_tls();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("quinn endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// A connection and the fingerprint of the certificate the server presented on it.
#[derive(Debug)]
pub struct RawConnection {
    /// The QUIC connection.
    pub connection: quinn::Connection,
    /// Standard base64 of BLAKE2b-256 of the leaf certificate (PROTOCOL §5.3).
    pub fingerprint: String,
}

/// Connects to `server` and fingerprints its certificate.
pub async fn connect(endpoint: &quinn::Endpoint, server: SocketAddr) -> RawConnection {
    let connection = endpoint
        .connect(server, "localhost")
        .expect("connect")
        .await
        .expect("QUIC/TLS handshake");
    let chain = connection
        .peer_identity()
        .expect("server certificate")
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .expect("rustls certificate chain");
    let leaf = chain.first().expect("leaf certificate");
    let digest = Blake2b::<U32>::digest(leaf.as_ref());
    RawConnection {
        connection,
        fingerprint: base64::engine::general_purpose::STANDARD.encode(digest),
    }
}

/// A handshake request from the validator with `seed`, signed with btlightning's
/// `Sr25519Signer` over `handshake:{hotkey}:{timestamp}:{nonce}:{fingerprint}`.
pub fn signed_handshake(
    seed: [u8; 32],
    timestamp: u64,
    nonce: &str,
    fingerprint: &str,
) -> HandshakeRequest {
    let validator_hotkey = crate::hotkey(&seed);
    let message = format!("handshake:{validator_hotkey}:{timestamp}:{nonce}:{fingerprint}");
    let signature = Sr25519Signer::from_seed(seed)
        .sign(message.as_bytes())
        .expect("sign");
    HandshakeRequest {
        validator_hotkey,
        timestamp,
        nonce: nonce.to_string(),
        signature: base64::engine::general_purpose::STANDARD.encode(signature),
    }
}

/// The payload bytes of a handshake request, encoded as btlightning encodes it.
pub fn encode_handshake(request: &HandshakeRequest) -> Vec<u8> {
    rmp_serde::to_vec(request).expect("encode")
}

/// Sends one handshake frame with `payload` on a new stream and reads the response.
pub async fn handshake(connection: &quinn::Connection, payload: &[u8]) -> HandshakeResponse {
    let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
    write_frame_and_finish(&mut send, MessageType::HandshakeRequest, payload)
        .await
        .expect("write handshake");
    let (kind, body) = read_frame(&mut recv, DEFAULT_MAX_FRAME_PAYLOAD)
        .await
        .expect("handshake response frame");
    assert_eq!(kind, MessageType::HandshakeResponse);
    rmp_serde::from_slice(&body).expect("decode handshake response")
}

/// Sends one synapse request on a new stream and reads the unary response.
pub async fn request(
    connection: &quinn::Connection,
    synapse: &str,
    data: BtData,
) -> SynapseResponse {
    let packet = SynapsePacket {
        synapse_type: synapse.to_string(),
        data,
        timestamp: btlightning::util::unix_timestamp_secs(),
    };
    let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
    write_frame_and_finish(
        &mut send,
        MessageType::SynapsePacket,
        &rmp_serde::to_vec(&packet).expect("encode"),
    )
    .await
    .expect("write request");
    let (kind, body) = read_frame(&mut recv, DEFAULT_MAX_FRAME_PAYLOAD)
        .await
        .expect("response frame");
    assert_eq!(kind, MessageType::SynapseResponse);
    rmp_serde::from_slice(&body).expect("decode response")
}

/// 32 lowercase hex digits of fresh randomness (the nonce format of PROTOCOL §5.4).
pub fn fresh_nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An empty data map.
pub fn no_data() -> BtData {
    HashMap::new()
}

/// Writes `bytes` verbatim on a new stream, finishes it, and reads one frame back with
/// btlightning's reader (its error, if the stream ends without one).
pub async fn exchange(
    connection: &quinn::Connection,
    bytes: &[u8],
) -> btlightning::Result<(MessageType, Vec<u8>)> {
    let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("write");
    send.finish().expect("finish");
    read_frame(&mut recv, DEFAULT_MAX_FRAME_PAYLOAD).await
}

/// A frame: type byte, u32 BE payload length, payload (PROTOCOL §3).
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}
