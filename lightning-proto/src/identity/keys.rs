//! sr25519 keypairs in the Substrate convention.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use schnorrkel::context::attach_rng;
use schnorrkel::{signing_context, ExpansionMode, MiniSecretKey, PublicKey, Signature};

use super::ss58;

/// Signing context of every Substrate (and so Bittensor) sr25519 signature.
/// A different context gives signatures no Substrate verifier accepts.
pub const SIGNING_CONTEXT: &[u8] = b"substrate";

/// An sr25519 keypair derived from a 32-byte seed exactly like Substrate's
/// `sr25519::Pair::from_seed`, so the same seed gives the same hotkey as
/// btcli, btwallet and the reference implementation.
///
/// The secret half is zeroed when the value is dropped (schnorrkel does that
/// for its key types). `Debug` shows only the public hotkey.
#[derive(Clone)]
pub struct Keypair {
    inner: schnorrkel::Keypair,
    public: [u8; 32],
}

impl Keypair {
    /// Derives the keypair from a 32-byte mini secret key, expanded in
    /// Ed25519 mode (the mode Substrate uses for every sr25519 seed).
    pub fn from_seed(seed: &[u8; 32]) -> Keypair {
        let mini = match MiniSecretKey::from_bytes(seed) {
            Ok(mini) => mini,
            // from_bytes only rejects slices that are not 32 bytes long, and
            // the argument's type already guarantees that length.
            Err(_) => unreachable!("a [u8; 32] is always a valid mini secret key"),
        };
        let inner = mini.expand_to_keypair(ExpansionMode::Ed25519);
        let public = inner.public.to_bytes();
        Keypair { inner, public }
    }

    /// Generates a fresh keypair from the injected RNG and returns it with
    /// its seed, which is what a caller has to store to recreate the key.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> (Keypair, [u8; 32]) {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        (Keypair::from_seed(&seed), seed)
    }

    /// The raw 32-byte sr25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The SS58 hotkey string with the generic Substrate prefix 42, the
    /// form Bittensor uses everywhere.
    pub fn hotkey(&self) -> String {
        ss58::encode(&self.public, ss58::DEFAULT_PREFIX)
    }

    /// The SS58 string of this key under another network prefix.
    pub fn hotkey_with_prefix(&self, prefix: u16) -> String {
        ss58::encode(&self.public, prefix)
    }

    /// Signs `message` with context `substrate`, deterministically.
    ///
    /// schnorrkel derives the signing witness from a transcript RNG keyed by
    /// the secret nonce key, the signing context, the message and the public
    /// key, and only then mixes in bytes from the attached RNG. Feeding it a
    /// fixed-seed RNG therefore yields a witness that is a pseudo-random
    /// function of (secret, message), the same construction as deterministic
    /// Ed25519 (RFC 8032): distinct messages get unrelated witnesses and the
    /// same message always gets the same signature, so no nonce can repeat
    /// across different messages. schnorrkel's warning against derandomizing
    /// applies to its multi-signature protocols, which are not used here.
    /// This keeps the core free of global randomness; use
    /// [`Keypair::sign_with_rng`] to add hedging entropy.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.sign_with_rng(message, &mut ChaCha20Rng::from_seed([0u8; 32]))
    }

    /// Signs `message` with extra entropy from `rng` mixed into the witness
    /// (a "hedged" signature). The secret-derived part of the witness stays,
    /// so even a weak RNG is no worse than [`Keypair::sign`].
    pub fn sign_with_rng<R: RngCore + CryptoRng + ?Sized>(
        &self,
        message: &[u8],
        rng: &mut R,
    ) -> [u8; 64] {
        let transcript = signing_context(SIGNING_CONTEXT).bytes(message);
        self.inner.sign(attach_rng(transcript, rng)).to_bytes()
    }

    /// 32 bytes that only the holder of this key can compute, for `context`: BLAKE2b-512
    /// over the context's length, the context and the secret key, truncated. Use one
    /// context per purpose; the result reveals nothing about the key.
    pub fn derive_secret(&self, context: &[u8]) -> [u8; 32] {
        use blake2::{Blake2b512, Digest};
        let mut secret = self.inner.secret.to_bytes();
        let mut hasher = Blake2b512::new();
        hasher.update((context.len() as u64).to_le_bytes());
        hasher.update(context);
        hasher.update(secret);
        secret.fill(0);
        let hash = hasher.finalize();
        let mut out = [0u8; 32];
        out.copy_from_slice(&hash[..32]);
        out
    }

    /// Verifies a signature made with this keypair's public key.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        verify(&self.public, message, signature)
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("hotkey", &self.hotkey())
            .finish_non_exhaustive()
    }
}

/// Verifies an sr25519 signature with context `substrate`, with the same
/// acceptance rules as Substrate's `sr25519::Pair::verify`: the signature must
/// carry schnorrkel's marker bit and the key must be a valid Ristretto point.
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(signature) = Signature::from_bytes(signature) else {
        return false;
    };
    let Ok(public) = PublicKey::from_bytes(public_key) else {
        return false;
    };
    public
        .verify_simple(SIGNING_CONTEXT, message, &signature)
        .is_ok()
}
