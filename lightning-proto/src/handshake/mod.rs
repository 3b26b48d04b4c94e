//! The application-level handshake (PROTOCOL.md §5): signed strings,
//! certificate fingerprints, nonces, timestamp windows, signature checks, the
//! server's replay cache and per-IP rate limit.
//!
//! Everything is a pure function of its arguments; time and randomness are
//! passed in. The functions work on borrowed views ([`RequestFields`],
//! [`ResponseFields`]) so they do not depend on how messages are decoded.
//!
//! Server order (§5.7): [`HandshakeRateLimiter::check_and_record`] before
//! decoding, then [`verify_request`] (timestamp, nonce format, signature), then
//! [`NonceCache::check_and_insert`], then [`check_permit`], [`sign_response`],
//! [`connection_id`] and finally [`check_connection_limit`].
//!
//! Client order (§5.1, §5.9): [`generate_nonce`], [`build_request`], then
//! [`verify_response`] on the answer.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use rand_core::RngCore;

use crate::identity::{self, ss58, Signer};

mod error;
mod rate_limit;
mod replay;

pub use error::HandshakeError;
pub use rate_limit::{HandshakeRateLimiter, RATE_WINDOW_SECS};
pub use replay::NonceCache;

/// How far a request timestamp may lie in the server's future. Fixed in the
/// reference, not configurable.
pub const MAX_FUTURE_SKEW_SECS: u64 = 60;

/// Length of a well-formed nonce: 16 bytes as hex.
pub const NONCE_LEN: usize = 32;

/// Length of a 64-byte signature in padded base64.
pub const SIGNATURE_B64_LEN: usize = 88;

/// Length of a 32-byte fingerprint in padded base64.
pub const FINGERPRINT_B64_LEN: usize = 44;

/// The signed fields of a handshake request, borrowed from wherever the
/// decoded message lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFields<'a> {
    /// SS58 hotkey the validator claims, exactly as sent.
    pub validator_hotkey: &'a str,
    /// The validator's UNIX time in seconds.
    pub timestamp: u64,
    /// 32 hex digits, unique per handshake.
    pub nonce: &'a str,
    /// Base64 sr25519 signature over [`request_message`].
    pub signature: &'a str,
}

/// The fields of a handshake response the client checks (`connection_id` is
/// not used by clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFields<'a> {
    /// SS58 hotkey the miner claims.
    pub miner_hotkey: &'a str,
    /// The miner's UNIX time in seconds (signed, never freshness-checked).
    pub timestamp: u64,
    /// Base64 sr25519 signature over [`response_message`].
    pub signature: &'a str,
    /// Whether the miner accepted the handshake.
    pub accepted: bool,
    /// The miner's certificate fingerprint, base64.
    pub cert_fingerprint: Option<&'a str>,
}

/// A signed request ready to be put into a `HandshakeRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The validator hotkey string, as given to [`build_request`].
    pub validator_hotkey: String,
    /// UNIX seconds.
    pub timestamp: u64,
    /// The nonce.
    pub nonce: String,
    /// Base64 signature.
    pub signature: String,
}

impl SignedRequest {
    /// Borrowed view of the fields.
    pub fn fields(&self) -> RequestFields<'_> {
        RequestFields {
            validator_hotkey: &self.validator_hotkey,
            timestamp: self.timestamp,
            nonce: &self.nonce,
            signature: &self.signature,
        }
    }
}

/// The string a validator signs:
/// `handshake:{validator_hotkey}:{timestamp}:{nonce}:{fp_b64}`.
pub fn request_message(
    validator_hotkey: &str,
    timestamp: u64,
    nonce: &str,
    fp_b64: &str,
) -> String {
    format!("handshake:{validator_hotkey}:{timestamp}:{nonce}:{fp_b64}")
}

/// The string a miner signs:
/// `handshake_response:{validator_hotkey}:{miner_hotkey}:{timestamp}:{nonce}:{fp_b64}`.
pub fn response_message(
    validator_hotkey: &str,
    miner_hotkey: &str,
    timestamp: u64,
    nonce: &str,
    fp_b64: &str,
) -> String {
    format!("handshake_response:{validator_hotkey}:{miner_hotkey}:{timestamp}:{nonce}:{fp_b64}")
}

/// BLAKE2b-256 of the server's leaf certificate DER, padded standard base64
/// (44 characters). Both signed strings embed it, binding the handshake to
/// the TLS certificate.
pub fn cert_fingerprint(der: &[u8]) -> String {
    BASE64.encode(Blake2b::<U32>::digest(der))
}

/// A fresh nonce: 16 random bytes read as a big-endian 128-bit integer and
/// written as 32 lowercase, zero-padded hex digits.
pub fn generate_nonce<R: RngCore + ?Sized>(rng: &mut R) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    format!("{:032x}", u128::from_be_bytes(bytes))
}

/// Accepts exactly 32 ASCII hex digits, in either case (the reference
/// accepts upper case too).
pub fn check_nonce_format(nonce: &str) -> Result<(), HandshakeError> {
    if nonce.len() == NONCE_LEN && nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(HandshakeError::BadNonce)
    }
}

/// The server's freshness window for a request timestamp (§5.5): too old when
/// it is at least `max_age_secs` in the past, too new when more than
/// [`MAX_FUTURE_SKEW_SECS`] ahead.
pub fn check_timestamp(now_secs: u64, ts: u64, max_age_secs: u64) -> Result<(), HandshakeError> {
    if now_secs > ts && now_secs - ts >= max_age_secs {
        return Err(HandshakeError::TooOld {
            age: now_secs - ts,
            max: max_age_secs,
        });
    }
    if ts > now_secs.saturating_add(MAX_FUTURE_SKEW_SECS) {
        return Err(HandshakeError::TooFarInFuture {
            ahead: ts - now_secs,
        });
    }
    Ok(())
}

/// A raw signature as padded standard base64 (88 characters).
pub fn encode_signature(signature: &[u8; 64]) -> String {
    BASE64.encode(signature)
}

/// Decodes a base64 signature. Any length is handled without allocating:
/// long inputs are validated chunk by chunk so the error is the same one a
/// whole-string decode would give (bad base64 first, then the decoded length).
pub fn decode_signature(sig_b64: &str) -> Result<[u8; 64], HandshakeError> {
    // A multiple of 4, so every chunk but the last is whole base64 quanta and
    // validating chunk-wise accepts exactly what a one-shot decode accepts.
    const CHUNK: usize = 1024;
    let mut buf = [0u8; CHUNK / 4 * 3];
    let mut total = 0usize;
    let mut last_len = 0usize;
    for chunk in sig_b64.as_bytes().chunks(CHUNK) {
        last_len = BASE64
            .decode_slice(chunk, &mut buf)
            .map_err(|_| HandshakeError::MalformedBase64)?;
        total += last_len;
    }
    // 64 bytes come from at most 88 characters, i.e. a single chunk, so when
    // the total is 64 the whole signature is what the last chunk decoded.
    if total != 64 || last_len != 64 {
        return Err(HandshakeError::BadSignatureLength(total));
    }
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&buf[..64]);
    Ok(sig)
}

/// Verifies a base64 sr25519 signature over `message` under an SS58 hotkey,
/// checking in the reference's order: SS58, base64, length, signature.
pub fn verify_signature(
    hotkey_ss58: &str,
    message: &[u8],
    sig_b64: &str,
) -> Result<(), HandshakeError> {
    let (_, public_key) = ss58::decode(hotkey_ss58)?;
    verify_with_key(&public_key, message, sig_b64)
}

fn verify_with_key(
    public_key: &[u8; 32],
    message: &[u8],
    sig_b64: &str,
) -> Result<(), HandshakeError> {
    let signature = decode_signature(sig_b64)?;
    if identity::verify(public_key, message, &signature) {
        Ok(())
    } else {
        Err(HandshakeError::BadSignature)
    }
}

/// Server side, §5.7 steps 4–5: timestamp window, nonce format, then the
/// signature over the request string rebuilt with the server's **own**
/// fingerprint (so a request signed for another certificate fails here).
///
/// The replay check (step 6) is separate, [`NonceCache::check_and_insert`],
/// and must run only after this succeeds.
pub fn verify_request(
    request: &RequestFields<'_>,
    own_fp_b64: &str,
    now_secs: u64,
    max_age_secs: u64,
) -> Result<(), HandshakeError> {
    check_timestamp(now_secs, request.timestamp, max_age_secs)?;
    check_nonce_format(request.nonce)?;
    // Decoding the hotkey before building the message keeps an oversized
    // hotkey from being copied; the error order is unchanged.
    let (_, public_key) = ss58::decode(request.validator_hotkey)?;
    let message = request_message(
        request.validator_hotkey,
        request.timestamp,
        request.nonce,
        own_fp_b64,
    );
    verify_with_key(&public_key, message.as_bytes(), request.signature)
}

/// Client side, §5.1 steps 5–6: signs the request string. `fp_b64` is the
/// fingerprint of the certificate the server presented in this TLS session.
pub fn build_request(
    signer: &dyn Signer,
    validator_hotkey: &str,
    now_secs: u64,
    nonce: &str,
    fp_b64: &str,
) -> Result<SignedRequest, HandshakeError> {
    let message = request_message(validator_hotkey, now_secs, nonce, fp_b64);
    let signature = signer.sign(message.as_bytes())?;
    Ok(SignedRequest {
        validator_hotkey: validator_hotkey.to_owned(),
        timestamp: now_secs,
        nonce: nonce.to_owned(),
        signature: encode_signature(&signature),
    })
}

/// Server side, §5.7 step 8: the base64 signature for an accepted response.
pub fn sign_response(
    signer: &dyn Signer,
    validator_hotkey: &str,
    miner_hotkey: &str,
    now_secs: u64,
    nonce: &str,
    own_fp_b64: &str,
) -> Result<String, HandshakeError> {
    let message = response_message(validator_hotkey, miner_hotkey, now_secs, nonce, own_fp_b64);
    Ok(encode_signature(&signer.sign(message.as_bytes())?))
}

/// Client side, §5.9, in order: accepted, miner hotkey, fingerprint present
/// and equal, signature non-empty, signature valid over the response string
/// built from the client's own hotkey, nonce and fingerprint.
pub fn verify_response(
    response: &ResponseFields<'_>,
    expected_miner_hotkey: &str,
    own_validator_hotkey: &str,
    own_nonce: &str,
    own_fp_b64: &str,
) -> Result<(), HandshakeError> {
    if !response.accepted {
        return Err(HandshakeError::Rejected);
    }
    if response.miner_hotkey != expected_miner_hotkey {
        return Err(HandshakeError::wrong_hotkey(
            expected_miner_hotkey,
            response.miner_hotkey,
        ));
    }
    match response.cert_fingerprint {
        None => return Err(HandshakeError::FingerprintMissing),
        Some(fp) if fp != own_fp_b64 => return Err(HandshakeError::FingerprintMismatch),
        Some(_) => {}
    }
    if response.signature.is_empty() {
        return Err(HandshakeError::EmptySignature);
    }
    let message = response_message(
        own_validator_hotkey,
        response.miner_hotkey,
        response.timestamp,
        own_nonce,
        own_fp_b64,
    );
    verify_signature(
        response.miner_hotkey,
        message.as_bytes(),
        response.signature,
    )
}

/// §5.7 step 7, for servers that set `require_validator_permit`: `permits` is
/// the cached permit set, or `None` when no permit resolver is configured
/// (which refuses everyone). Matching is by exact hotkey string.
pub fn check_permit(
    permits: Option<&std::collections::HashSet<String>>,
    validator_hotkey: &str,
) -> Result<(), HandshakeError> {
    match permits {
        Some(set) if set.contains(validator_hotkey) => Ok(()),
        _ => Err(HandshakeError::NotPermitted),
    }
}

/// §5.7 step 10: a hotkey that is not registered yet is refused once
/// `registered` validators already fill `max_connections`. Re-handshakes of a
/// registered hotkey always pass.
pub fn check_connection_limit(
    already_registered: bool,
    registered: usize,
    max_connections: usize,
) -> Result<(), HandshakeError> {
    if !already_registered && registered >= max_connections {
        Err(HandshakeError::ConnectionLimit)
    } else {
        Ok(())
    }
}

/// The server's `connection_id`: `conn_{validator_hotkey}_{unix_millis}`.
pub fn connection_id(validator_hotkey: &str, unix_millis: u64) -> String {
    format!("conn_{validator_hotkey}_{unix_millis}")
}

impl<'a> From<&'a crate::message::HandshakeRequest> for RequestFields<'a> {
    fn from(r: &'a crate::message::HandshakeRequest) -> Self {
        RequestFields {
            validator_hotkey: &r.validator_hotkey,
            timestamp: r.timestamp,
            nonce: &r.nonce,
            signature: &r.signature,
        }
    }
}

impl<'a> From<&'a crate::message::HandshakeResponse> for ResponseFields<'a> {
    fn from(r: &'a crate::message::HandshakeResponse) -> Self {
        ResponseFields {
            miner_hotkey: &r.miner_hotkey,
            timestamp: r.timestamp,
            signature: &r.signature,
            accepted: r.accepted,
            cert_fingerprint: r.cert_fingerprint.as_deref(),
        }
    }
}
