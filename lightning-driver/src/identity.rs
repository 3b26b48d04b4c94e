//! Where an endpoint's sr25519 key comes from: a seed, a wallet, or any `Signer`.

use std::path::Path;
use std::sync::Arc;

use lightning_proto::identity::{
    load_hotkey, CallbackSigner, Keypair, KeypairSigner, SignError, Signer,
};

use crate::error::{ConfigCause, LightningError, Result};

/// An SS58 hotkey with the signer that signs for it.
#[derive(Clone)]
pub struct Identity {
    pub(crate) hotkey: String,
    pub(crate) signer: Arc<dyn Signer>,
    /// The key, when it is in memory, to derive a miner's stateless-reset secret from
    /// (see [`Identity::reset_secret`]).
    reset_key: Option<Keypair>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("hotkey", &self.hotkey)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The key derived from a 32-byte seed (Substrate's seed expansion).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_keypair(Keypair::from_seed(seed))
    }

    /// A key already in memory.
    pub fn from_keypair(keypair: Keypair) -> Self {
        Self {
            hotkey: keypair.hotkey(),
            reset_key: Some(keypair.clone()),
            signer: Arc::new(KeypairSigner::new(keypair)),
        }
    }

    /// The hotkey `hotkey` of wallet `wallet` under `wallets_dir` (btwallet layout:
    /// `<dir>/<wallet>/hotkeys/<hotkey>`; the file must be unencrypted).
    pub fn from_wallet(wallets_dir: &Path, wallet: &str, hotkey: &str) -> Result<Self> {
        let keypair = load_hotkey(wallets_dir, wallet, hotkey)
            .map_err(|e| LightningError::Config(ConfigCause::Wallet(e.to_string())))?;
        Ok(Self::from_keypair(keypair))
    }

    /// Any signer for `hotkey`. If the signer knows its public key, the endpoint checks that
    /// it matches the hotkey.
    pub fn from_signer(hotkey: impl Into<String>, signer: Arc<dyn Signer>) -> Self {
        Self {
            hotkey: hotkey.into(),
            signer,
            reset_key: None,
        }
    }

    /// A callback returning a 64-byte sr25519 signature (context `substrate`) of its input.
    /// It runs on the endpoint task: keep it quick.
    pub fn from_callback<F>(hotkey: impl Into<String>, callback: F) -> Self
    where
        F: Fn(&[u8]) -> std::result::Result<Vec<u8>, String> + Send + Sync + 'static,
    {
        Self::from_signer(hotkey, Arc::new(CallbackSigner::new(callback)))
    }

    /// The SS58 hotkey.
    pub fn hotkey(&self) -> &str {
        &self.hotkey
    }

    /// The secret that keys a miner's QUIC stateless resets on UDP `port`: derived from
    /// the secret key and the port, so a miner restarted on the same port resets its
    /// predecessor's connections, while miners with the same key on other ports (or other
    /// tests in one process) do not share it. `None` without the key in memory (callback
    /// and remote signers) or for port 0.
    pub(crate) fn reset_secret(&self, port: u16) -> Option<[u8; 32]> {
        if port == 0 {
            return None;
        }
        let context = format!("lightning/quic-stateless-reset/v1/udp-port/{port}");
        Some(self.reset_key.as_ref()?.derive_secret(context.as_bytes()))
    }

    /// Signs `message` (for tests and tools).
    pub fn sign(&self, message: &[u8]) -> std::result::Result<[u8; 64], SignError> {
        self.signer.sign(message)
    }
}

/// 32 bytes from the operating system's generator, for the core's seeded RNG.
pub(crate) fn os_seed() -> [u8; 32] {
    use rand_core::RngCore;
    let mut seed = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut seed);
    seed
}

/// Milliseconds since the Unix epoch, to anchor the core's wall clock.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
