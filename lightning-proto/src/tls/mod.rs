//! TLS for Lightning's QUIC connections (PROTOCOL §1.2).
//!
//! Both sides speak TLS 1.3 only (QUIC requires it) with ALPN `btlightning` and rustls'
//! ring provider, selected explicitly so no other provider is ever pulled in.
//!
//! Identity is not proven by a certificate chain: the application handshake binds the
//! validator's and miner's sr25519 hotkeys to the certificate fingerprint (§5). The
//! reference client therefore accepts any certificate — and also skips checking the TLS 1.3
//! CertificateVerify signature, which lets an attacker replay a miner's certificate without
//! its key (§13.1). Our client still skips chain and name validation, but it does verify
//! CertificateVerify against the presented leaf key, so whoever completes TLS holds the key
//! of the certificate we fingerprint. This stays compatible with the reference server.

mod cert;

use std::sync::Arc;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

pub use cert::{InvalidIdentity, TlsIdentity};

/// The one ALPN protocol id both sides offer.
pub const ALPN: &[u8] = b"btlightning";

/// A second ALPN id that a Lightning miner prefers and a Lightning validator offers too.
/// When both ends speak it, the validator sends its first requests right behind its
/// handshake and the miner holds them until the handshake is checked: the first answer
/// comes 2 RTT after the QUIC handshake starts instead of 3. A btlightning peer offers or
/// accepts only [`ALPN`], so it never selects this one, and nothing else changes.
pub const PIPELINE_ALPN: &[u8] = b"lightning-pipeline/1";

/// Whether the connection's TLS handshake selected [`PIPELINE_ALPN`].
pub(crate) fn negotiated_pipelining(conn: &quinn_proto::Connection) -> bool {
    conn.crypto_session()
        .handshake_data()
        .and_then(|d| {
            d.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                .ok()
        })
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == PIPELINE_ALPN)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Skips chain and name checks (identity comes from the sr25519 handshake) but verifies
/// the handshake signature against the certificate the server presented.
#[derive(Debug)]
struct FingerprintBoundVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for FingerprintBoundVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC never negotiates TLS 1.2; refusing keeps the verifier honest if it ever did.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client-side QUIC crypto configuration.
pub(crate) fn client_crypto() -> Result<Arc<QuicClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(FingerprintBoundVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // The server picks: a btlightning miner takes `btlightning`, ours the pipelining id.
    tls.alpn_protocols = vec![ALPN.to_vec(), PIPELINE_ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls)
        .map_err(|e| rustls::Error::General(format!("QUIC initial suite: {e}")))?;
    Ok(Arc::new(quic))
}

/// The server-side QUIC crypto configuration presenting `identity`.
pub(crate) fn server_crypto(
    identity: &TlsIdentity,
) -> Result<Arc<QuicServerConfig>, rustls::Error> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert()], identity.key())?;
    // In order of preference: rustls takes the first of ours that the client offers, so a
    // btlightning validator (offering only `btlightning`) gets `btlightning`.
    tls.alpn_protocols = vec![PIPELINE_ALPN.to_vec(), ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls)
        .map_err(|e| rustls::Error::General(format!("QUIC initial suite: {e}")))?;
    Ok(Arc::new(quic))
}

/// The end-entity certificate the peer presented, if the TLS session has one.
pub(crate) fn peer_leaf_der(conn: &quinn_proto::Connection) -> Option<Vec<u8>> {
    let identity = conn.crypto_session().peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(|c| c.as_ref().to_vec())
}
