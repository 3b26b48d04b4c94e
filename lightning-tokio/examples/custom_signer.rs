//! Keys that live outside Lightning: a `Signer` implementation (say, an HSM or a remote
//! wallet service) for the miner, and a plain callback for the validator.
//!
//! ```text
//! cargo run --release -p lightning-tokio --example custom_signer
//! ```
//!
//! Lightning only ever asks the signer to sign handshake messages (sr25519, context
//! `substrate`); it never sees the secret key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lightning_tokio::{
    ClientBuilder, DataMap, Identity, Keypair, QuicAxonInfo, QuicRequest, RequestContext,
    ServerBuilder, SignError, Signer,
};

/// Stands in for a hardware module: holds the key, counts what it signs.
struct Vault {
    key: Keypair,
    signatures: AtomicUsize,
}

impl Signer for Vault {
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        self.signatures.fetch_add(1, Ordering::Relaxed);
        Ok(self.key.sign(message))
    }

    // Optional: lets Lightning check at start-up that the hotkey matches the key.
    fn public_key(&self) -> Option<[u8; 32]> {
        Some(self.key.public_key())
    }
}

#[tokio::main]
async fn main() -> lightning_tokio::Result<()> {
    // The miner signs through the vault.
    let vault = Arc::new(Vault {
        key: Keypair::from_seed(&[3; 32]),
        signatures: AtomicUsize::new(0),
    });
    let miner_hotkey = vault.key.hotkey();
    let server = ServerBuilder::new()
        .identity(Identity::from_signer(miner_hotkey.clone(), vault.clone()))
        .bind_addr(([127, 0, 0, 1], 0).into())
        .handler("whoami", |_data: DataMap, ctx: RequestContext| {
            let answer = [("validator".to_string(), ctx.validator_hotkey().into())];
            Ok::<_, Infallible>(DataMap::from_values(answer).unwrap())
        })
        .start()
        .await?;

    // The validator signs through a callback: any function from message to 64 bytes.
    let validator_key = Keypair::from_seed(&[4; 32]);
    let validator_hotkey = validator_key.hotkey();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let client = ClientBuilder::new()
        .callback_signer(validator_hotkey.clone(), move |message: &[u8]| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(validator_key.sign(message).to_vec())
        })
        .build()?;

    let axon = QuicAxonInfo::from_addr(miner_hotkey.as_str(), server.local_addr());
    let response = client
        .query_axon(&axon, QuicRequest::new("whoami", DataMap::new()))
        .await?
        .into_result()?;
    let seen = response.data.get("validator").expect("a validator entry");
    let seen = seen.as_str().expect("a string");
    println!("miner {miner_hotkey} saw validator {seen}");
    assert_eq!(seen, validator_hotkey);
    println!(
        "signatures: miner vault {}, validator callback {}",
        vault.signatures.load(Ordering::Relaxed),
        calls.load(Ordering::Relaxed)
    );

    // A signer that fails makes the handshake fail with the signer's reason.
    let broken = ClientBuilder::new()
        .callback_signer(validator_hotkey, |_message: &[u8]| {
            Err("vault is locked".to_string())
        })
        .build()?;
    let report = broken.initialize_connections([axon]).await?;
    for (_, error) in &report.failed {
        println!("broken signer: {error}");
    }

    server.stop().await?;
    Ok(())
}
