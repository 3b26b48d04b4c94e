//! A minimal self-signed Ed25519 certificate, built from injected key material.
//!
//! Nothing in the protocol depends on certificate fields: peers bind the handshake to the
//! BLAKE2b-256 fingerprint of the DER (PROTOCOL §5.3). What matters is that the certificate
//! parses as X.509 v3 (our client verifies the TLS 1.3 CertificateVerify signature against
//! its key) and that generating it needs no global randomness. Ed25519 signs
//! deterministically, so the whole identity follows from a 32-byte seed.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate and its private key, in the forms rustls consumes.
#[derive(Clone)]
pub struct TlsIdentity {
    cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_len", &self.cert.len())
            .finish_non_exhaustive()
    }
}

/// The certificate or key given to [`TlsIdentity::from_der`] was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidIdentity(pub String);

impl std::fmt::Display for InvalidIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid TLS identity: {}", self.0)
    }
}

impl std::error::Error for InvalidIdentity {}

const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_COMMON_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x11];
/// PKCS#8 v1 wrapper of a raw Ed25519 seed (RFC 8410 §7); the seed follows.
const PKCS8_ED25519_PREFIX: &[u8] = &[
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl TlsIdentity {
    /// Generates a self-signed Ed25519 certificate whose key is derived from `seed`.
    ///
    /// The same seed always yields the same certificate (and fingerprint). Servers
    /// normally pass fresh random bytes per start, as the reference does (PROTOCOL §1.2).
    pub fn self_signed(seed: [u8; 32]) -> Self {
        let mut key_pkcs8 = Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + 32);
        key_pkcs8.extend_from_slice(PKCS8_ED25519_PREFIX);
        key_pkcs8.extend_from_slice(&seed);
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .unwrap_or_else(|_| unreachable!("every 32-byte string is an Ed25519 seed"));
        let public = ring::signature::KeyPair::public_key(&pair).as_ref();

        let alg = der(0x30, OID_ED25519);
        let name = name_lightning();
        // Serial: positive, derived from the public key so it is stable per key.
        let mut serial = [0u8; 16];
        serial.copy_from_slice(&public[..16]);
        serial[0] &= 0x7f;
        serial[0] |= 0x01;

        let mut tbs = Vec::with_capacity(256);
        tbs.extend(der(0xa0, &der(0x02, &[0x02]))); // version v3
        tbs.extend(der(0x02, &serial));
        tbs.extend_from_slice(&alg);
        tbs.extend_from_slice(&name);
        let mut validity = der(0x17, b"750101000000Z");
        validity.extend(der(0x18, b"40960101000000Z"));
        tbs.extend(der(0x30, &validity));
        tbs.extend_from_slice(&name);
        let mut bitstring = vec![0u8];
        bitstring.extend_from_slice(public);
        let mut spki = alg.clone();
        spki.extend(der(0x03, &bitstring));
        tbs.extend(der(0x30, &spki));
        // subjectAltName = DNS:localhost, like the reference (meaningless but conventional).
        let san = der(0x30, &der(0x82, b"localhost"));
        let mut ext = OID_SUBJECT_ALT_NAME.to_vec();
        ext.extend(der(0x04, &san));
        tbs.extend(der(0xa3, &der(0x30, &der(0x30, &ext))));
        let tbs = der(0x30, &tbs);

        let signature = pair.sign(&tbs);
        let mut sig_bits = vec![0u8];
        sig_bits.extend_from_slice(signature.as_ref());
        let mut cert = tbs;
        cert.extend_from_slice(&alg);
        cert.extend(der(0x03, &sig_bits));
        let cert = der(0x30, &cert);

        Self {
            cert: CertificateDer::from(cert),
            key_pkcs8,
        }
    }

    /// Uses a caller-supplied certificate (DER) and PKCS#8 private key (DER).
    ///
    /// The key must be one rustls' ring provider can sign with (Ed25519, ECDSA P-256/P-384
    /// or RSA).
    pub fn from_der(cert_der: Vec<u8>, key_pkcs8_der: Vec<u8>) -> Result<Self, InvalidIdentity> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.clone()));
        rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| InvalidIdentity(format!("unusable private key: {e}")))?;
        Ok(Self {
            cert: CertificateDer::from(cert_der),
            key_pkcs8: key_pkcs8_der,
        })
    }

    /// The certificate's DER bytes (what the fingerprint is computed over).
    pub fn cert_der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    pub(crate) fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

fn name_lightning() -> Vec<u8> {
    let mut atv = OID_COMMON_NAME.to_vec();
    atv.extend(der(0x0c, b"lightning self signed cert"));
    der(0x30, &der(0x31, &der(0x30, &atv)))
}

/// Encodes one DER TLV with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 4);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_certificate_other_seed_other_certificate() {
        let a = TlsIdentity::self_signed([7; 32]);
        let b = TlsIdentity::self_signed([7; 32]);
        let c = TlsIdentity::self_signed([8; 32]);
        assert_eq!(a.cert_der(), b.cert_der());
        assert_ne!(a.cert_der(), c.cert_der());
    }

    #[test]
    fn certificate_carries_the_key_rustls_signs_with() {
        let id = TlsIdentity::self_signed([3; 32]);
        let key = rustls::crypto::ring::sign::any_supported_type(&id.key()).unwrap();
        assert!(key
            .choose_scheme(&[rustls::SignatureScheme::ED25519])
            .is_some());
        // The SPKI rustls derives from the private key appears verbatim in the certificate.
        let spki = key.public_key().unwrap();
        let der = id.cert_der();
        assert!(der.windows(spki.len()).any(|w| w == spki.as_ref()));
    }
}
