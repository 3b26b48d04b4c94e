//! Identities: sr25519 keys, SS58 hotkey strings, pluggable signers and the
//! Bittensor wallet hotkey loader.
//!
//! Everything here except [`wallet`] is pure computation. Key generation and
//! signing never touch a global random source: keygen takes an injected RNG and
//! signing is deterministic (see [`Keypair::sign`]).

mod keys;
mod signer;
pub mod ss58;
pub mod wallet;

pub use keys::{verify, Keypair, SIGNING_CONTEXT};
pub use signer::{CallbackSigner, KeypairSigner, SignError, Signer};
pub use ss58::Ss58Error;
pub use wallet::{load_hotkey, load_hotkey_file, WalletError};
