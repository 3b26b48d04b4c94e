//! Pluggable signers, so a key can live outside the process (a wallet
//! service, an HSM, a Python callback) and the core still signs handshakes.

use std::sync::Arc;

use super::Keypair;

/// Why a signer could not produce a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// No signer is configured where one is required.
    NoSigner,
    /// The signer itself failed; the text is the signer's own explanation.
    Failed(String),
    /// The signer returned something that is not a 64-byte sr25519 signature.
    BadLength(usize),
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::NoSigner => f.write_str("No signer configured"),
            SignError::Failed(msg) => write!(f, "signer failed: {msg}"),
            SignError::BadLength(n) => write!(
                f,
                "signer returned {n} bytes, expected a 64-byte sr25519 signature"
            ),
        }
    }
}

impl std::error::Error for SignError {}

/// Produces sr25519 signatures (context `substrate`) over raw message bytes.
///
/// Signing may be slow (a remote wallet); adapters decide whether to run it
/// off their event loop. The core only calls it synchronously.
pub trait Signer: Send + Sync {
    /// Signs `message`, returning the raw 64-byte signature.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError>;

    /// The signer's public key, when it knows it. Lets callers check that a
    /// configured hotkey string really belongs to the signer, which the
    /// reference never does (PROTOCOL.md §13.7).
    fn public_key(&self) -> Option<[u8; 32]> {
        None
    }
}

/// A [`Signer`] holding its key in process memory.
#[derive(Clone, Debug)]
pub struct KeypairSigner {
    keypair: Keypair,
}

impl KeypairSigner {
    /// Wraps an existing keypair.
    pub fn new(keypair: Keypair) -> KeypairSigner {
        KeypairSigner { keypair }
    }

    /// Derives the key from a 32-byte seed (see [`Keypair::from_seed`]).
    pub fn from_seed(seed: &[u8; 32]) -> KeypairSigner {
        KeypairSigner::new(Keypair::from_seed(seed))
    }

    /// The wrapped keypair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }
}

impl From<Keypair> for KeypairSigner {
    fn from(keypair: Keypair) -> KeypairSigner {
        KeypairSigner::new(keypair)
    }
}

impl Signer for KeypairSigner {
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        Ok(self.keypair.sign(message))
    }

    fn public_key(&self) -> Option<[u8; 32]> {
        Some(self.keypair.public_key())
    }
}

type SignFn = dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync;

/// A [`Signer`] backed by a caller-supplied function, for keys held
/// elsewhere. The function's output length is checked, because a wrong-length
/// blob would otherwise only surface as a failed handshake on the peer.
pub struct CallbackSigner {
    callback: Box<SignFn>,
    public_key: Option<[u8; 32]>,
}

impl CallbackSigner {
    /// Wraps `callback`, which returns the raw signature bytes or an error text.
    pub fn new<F>(callback: F) -> CallbackSigner
    where
        F: Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    {
        CallbackSigner {
            callback: Box::new(callback),
            public_key: None,
        }
    }

    /// Records the public key the callback signs for.
    pub fn with_public_key(mut self, public_key: [u8; 32]) -> CallbackSigner {
        self.public_key = Some(public_key);
        self
    }
}

impl std::fmt::Debug for CallbackSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSigner")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl Signer for CallbackSigner {
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        let bytes = (self.callback)(message).map_err(SignError::Failed)?;
        <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| SignError::BadLength(bytes.len()))
    }

    fn public_key(&self) -> Option<[u8; 32]> {
        self.public_key
    }
}

impl<T: Signer + ?Sized> Signer for Arc<T> {
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        (**self).sign(message)
    }

    fn public_key(&self) -> Option<[u8; 32]> {
        (**self).public_key()
    }
}

impl<T: Signer + ?Sized> Signer for Box<T> {
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        (**self).sign(message)
    }

    fn public_key(&self) -> Option<[u8; 32]> {
        (**self).public_key()
    }
}

impl<T: Signer + ?Sized> Signer for &T {
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        (**self).sign(message)
    }

    fn public_key(&self) -> Option<[u8; 32]> {
        (**self).public_key()
    }
}
