use crate::identity::{SignError, Ss58Error};

/// Longest peer-supplied string kept inside an error. A hostile peer controls
/// the hotkey it sends; the error is logged, so it must not carry megabytes.
const MAX_ECHOED_LEN: usize = 128;

/// Every reason a handshake can be refused, on either side.
///
/// The reference sends no reason on the wire (PROTOCOL.md §5.7); these exist
/// for logs, metrics and tests. [`HandshakeError::reason_code`] gives a stable
/// short name for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The request timestamp is at least `max` seconds in the past.
    TooOld {
        /// How many seconds old the timestamp is.
        age: u64,
        /// The configured `max_signature_age_secs`.
        max: u64,
    },
    /// The request timestamp is more than 60 s in the future.
    TooFarInFuture {
        /// How many seconds ahead of the server clock it is.
        ahead: u64,
    },
    /// The nonce is not exactly 32 ASCII hex digits.
    BadNonce,
    /// The nonce was already used.
    Replay,
    /// The signature does not verify (also how a wrong fingerprint shows up
    /// on the server).
    BadSignature,
    /// The response names a different miner hotkey than the one dialed.
    WrongHotkey {
        /// The hotkey the client expected.
        expected: String,
        /// The hotkey the peer sent (truncated if very long).
        got: String,
    },
    /// The response's fingerprint differs from the certificate the client saw.
    FingerprintMismatch,
    /// The response carries no certificate fingerprint.
    FingerprintMissing,
    /// The signature is not standard padded base64.
    MalformedBase64,
    /// The signature does not decode to 64 bytes.
    BadSignatureLength(usize),
    /// The signer's hotkey is not an acceptable SS58 address.
    InvalidSs58(Ss58Error),
    /// The response has an empty signature.
    EmptySignature,
    /// The peer answered `accepted = false`. The wire carries no reason: a miner refuses
    /// for any of the server-side variants here (commonly [`NotPermitted`],
    /// [`RateLimited`], [`TooOld`] or [`TooFarInFuture`]: a clock off), and only the
    /// miner's side knows which (`ServerEvent::HandshakeRejected`, its metrics).
    ///
    /// [`NotPermitted`]: HandshakeError::NotPermitted
    /// [`RateLimited`]: HandshakeError::RateLimited
    /// [`TooOld`]: HandshakeError::TooOld
    /// [`TooFarInFuture`]: HandshakeError::TooFarInFuture
    Rejected,
    /// Too many handshake attempts from this IP in the last minute.
    RateLimited,
    /// The validator hotkey has no permit (or no permit source is configured).
    NotPermitted,
    /// The server already holds its maximum number of validator hotkeys.
    ConnectionLimit,
    /// Our own signer failed.
    Signing(SignError),
}

impl HandshakeError {
    /// A stable `snake_case` name for the variant, for metrics and log fields.
    pub fn reason_code(&self) -> &'static str {
        match self {
            HandshakeError::TooOld { .. } => "too_old",
            HandshakeError::TooFarInFuture { .. } => "too_far_in_future",
            HandshakeError::BadNonce => "bad_nonce",
            HandshakeError::Replay => "replay",
            HandshakeError::BadSignature => "bad_signature",
            HandshakeError::WrongHotkey { .. } => "wrong_hotkey",
            HandshakeError::FingerprintMismatch => "fingerprint_mismatch",
            HandshakeError::FingerprintMissing => "fingerprint_missing",
            HandshakeError::MalformedBase64 => "malformed_base64",
            HandshakeError::BadSignatureLength(_) => "bad_signature_length",
            HandshakeError::InvalidSs58(_) => "invalid_ss58",
            HandshakeError::EmptySignature => "empty_signature",
            HandshakeError::Rejected => "rejected",
            HandshakeError::RateLimited => "rate_limited",
            HandshakeError::NotPermitted => "not_permitted",
            HandshakeError::ConnectionLimit => "connection_limit",
            HandshakeError::Signing(_) => "signing",
        }
    }

    /// Builds [`HandshakeError::WrongHotkey`], truncating the peer's string.
    pub(crate) fn wrong_hotkey(expected: &str, got: &str) -> HandshakeError {
        HandshakeError::WrongHotkey {
            expected: expected.to_owned(),
            got: truncate(got),
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ECHOED_LEN {
        return s.to_owned();
    }
    let mut end = MAX_ECHOED_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::TooOld { age, max } => {
                write!(f, "handshake timestamp too old: {age}s old, limit {max}s")
            }
            HandshakeError::TooFarInFuture { ahead } => write!(
                f,
                "handshake timestamp {ahead}s in the future, limit {}s",
                super::MAX_FUTURE_SKEW_SECS
            ),
            HandshakeError::BadNonce => {
                f.write_str("invalid nonce: expected exactly 32 hex digits")
            }
            HandshakeError::Replay => f.write_str("nonce already used (replayed handshake)"),
            HandshakeError::BadSignature => f.write_str("signature verification failed"),
            HandshakeError::WrongHotkey { expected, got } => {
                write!(f, "Miner hotkey mismatch: expected {expected}, got {got}")
            }
            HandshakeError::FingerprintMismatch => {
                f.write_str("Cert fingerprint mismatch between TLS session and handshake response")
            }
            HandshakeError::FingerprintMissing => {
                f.write_str("Miner handshake response omitted required cert fingerprint")
            }
            HandshakeError::MalformedBase64 => {
                f.write_str("Failed to decode signature: not standard padded base64")
            }
            HandshakeError::BadSignatureLength(n) => write!(f, "Invalid signature length: {n}"),
            HandshakeError::InvalidSs58(e) => write!(f, "Invalid SS58 address: {e}"),
            HandshakeError::EmptySignature => f.write_str("Miner returned empty signature"),
            HandshakeError::Rejected => f.write_str("Handshake rejected by miner"),
            HandshakeError::RateLimited => {
                f.write_str("too many handshake attempts from this IP in the last minute")
            }
            HandshakeError::NotPermitted => f.write_str("validator hotkey has no permit"),
            HandshakeError::ConnectionLimit => {
                f.write_str("maximum number of validator connections reached")
            }
            HandshakeError::Signing(e) => write!(f, "signing failed: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::InvalidSs58(e) => Some(e),
            HandshakeError::Signing(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Ss58Error> for HandshakeError {
    fn from(e: Ss58Error) -> HandshakeError {
        HandshakeError::InvalidSs58(e)
    }
}

impl From<SignError> for HandshakeError {
    fn from(e: SignError) -> HandshakeError {
        HandshakeError::Signing(e)
    }
}
