//! Keypairs and signers against the §4.5 key vectors.

use std::sync::Arc;

use lightning_proto::identity::{
    self, ss58, CallbackSigner, Keypair, KeypairSigner, SignError, Signer,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const MINER_HOTKEY: &str = "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH";
const MINER_PUBLIC: &str = "189dac29296d31814dc8c56cf3d36a0543372bba7538fa322a4aebfebc39e056";
const VALIDATOR_HOTKEY: &str = "5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq";
const VALIDATOR_PUBLIC: &str = "1a4fee48c1ba1a48e8cd43782a8485d635aa91cfb82cbb477f0c1c576bc4031c";

#[test]
fn seed_vectors_give_listed_hotkeys_and_public_keys() {
    let miner = Keypair::from_seed(&[0x01; 32]);
    assert_eq!(miner.hotkey(), MINER_HOTKEY);
    assert_eq!(hex::encode(miner.public_key()), MINER_PUBLIC);
    assert_eq!(miner.hotkey_with_prefix(42), MINER_HOTKEY);

    let validator = Keypair::from_seed(&[0x02; 32]);
    assert_eq!(validator.hotkey(), VALIDATOR_HOTKEY);
    assert_eq!(hex::encode(validator.public_key()), VALIDATOR_PUBLIC);
}

#[test]
fn other_prefix_encodes_the_same_key() {
    let miner = Keypair::from_seed(&[0x01; 32]);
    let polkadot = miner.hotkey_with_prefix(0);
    assert_ne!(polkadot, MINER_HOTKEY);
    assert_eq!(ss58::decode(&polkadot), Ok((0, miner.public_key())));
}

#[test]
fn signing_is_deterministic_and_verifies() {
    let kp = Keypair::from_seed(&[0x02; 32]);
    let a = kp.sign(b"hello");
    let b = kp.sign(b"hello");
    assert_eq!(a, b, "signing must not draw randomness");
    assert_ne!(a, kp.sign(b"hellp"));
    assert!(kp.verify(b"hello", &a));
    assert!(identity::verify(&kp.public_key(), b"hello", &a));
    assert!(!kp.verify(b"hellp", &a));
    let other = Keypair::from_seed(&[0x01; 32]);
    assert!(!other.verify(b"hello", &a));
}

#[test]
fn hedged_signatures_differ_but_verify() {
    let kp = Keypair::from_seed(&[0x07; 32]);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a = kp.sign_with_rng(b"m", &mut rng);
    let b = kp.sign_with_rng(b"m", &mut rng);
    assert_ne!(a, b);
    assert!(kp.verify(b"m", &a) && kp.verify(b"m", &b));
}

#[test]
fn generate_returns_the_seed_of_the_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let (kp, seed) = Keypair::generate(&mut rng);
    assert_eq!(Keypair::from_seed(&seed).public_key(), kp.public_key());
    let (kp2, seed2) = Keypair::generate(&mut rng);
    assert_ne!(seed, seed2);
    assert_ne!(kp.public_key(), kp2.public_key());
}

#[test]
fn debug_shows_no_secret() {
    let seed = [0xAB; 32];
    let kp = Keypair::from_seed(&seed);
    let text = format!("{kp:?} {:?}", KeypairSigner::new(kp.clone()));
    assert!(text.contains(&kp.hotkey()));
    assert!(!text.to_lowercase().contains("abab"));
    assert!(!text.contains("171, 171"));
    assert!(!text.to_lowercase().contains("secret"));
}

#[test]
fn keypair_signer_signs_with_its_key() {
    let signer = KeypairSigner::from_seed(&[0x01; 32]);
    let sig = signer.sign(b"x").unwrap();
    let pk = signer.public_key().unwrap();
    assert_eq!(hex::encode(pk), MINER_PUBLIC);
    assert!(identity::verify(&pk, b"x", &sig));
}

#[test]
fn callback_signer_checks_length_and_passes_errors() {
    let kp = Keypair::from_seed(&[0x02; 32]);
    let inner = kp.clone();
    let good =
        CallbackSigner::new(move |m| Ok(inner.sign(m).to_vec())).with_public_key(kp.public_key());
    let sig = good.sign(b"abc").unwrap();
    assert!(kp.verify(b"abc", &sig));
    assert_eq!(good.public_key(), Some(kp.public_key()));

    let short = CallbackSigner::new(|_| Ok(vec![0u8; 32]));
    assert_eq!(short.sign(b"abc"), Err(SignError::BadLength(32)));
    assert_eq!(short.public_key(), None);
    let long = CallbackSigner::new(|_| Ok(vec![0u8; 65]));
    assert_eq!(long.sign(b"abc"), Err(SignError::BadLength(65)));

    let failing = CallbackSigner::new(|_| Err("wallet locked".to_owned()));
    let err = failing.sign(b"abc").unwrap_err();
    assert_eq!(err, SignError::Failed("wallet locked".into()));
    assert!(err.to_string().contains("wallet locked"));
}

#[test]
fn signer_forwarding_impls() {
    let kp = Keypair::from_seed(&[0x03; 32]);
    let arc: Arc<dyn Signer> = Arc::new(KeypairSigner::new(kp.clone()));
    let boxed: Box<dyn Signer> = Box::new(KeypairSigner::new(kp.clone()));
    let arc_concrete = Arc::new(KeypairSigner::new(kp.clone()));
    for s in [&arc as &dyn Signer, &boxed, &arc_concrete] {
        assert_eq!(s.public_key(), Some(kp.public_key()));
        assert!(kp.verify(b"q", &s.sign(b"q").unwrap()));
    }
}

#[test]
fn sign_error_display() {
    assert_eq!(SignError::NoSigner.to_string(), "No signer configured");
    assert!(SignError::BadLength(3).to_string().contains('3'));
}

#[test]
fn derived_secrets_depend_on_key_and_context_only() {
    let a = Keypair::from_seed(&[1; 32]);
    let b = Keypair::from_seed(&[2; 32]);
    let secret = a.derive_secret(b"purpose one");
    assert_eq!(
        secret,
        Keypair::from_seed(&[1; 32]).derive_secret(b"purpose one")
    );
    assert_ne!(secret, a.derive_secret(b"purpose two"));
    assert_ne!(secret, b.derive_secret(b"purpose one"));
    // The context's length is hashed, so contexts cannot run into the key.
    assert_ne!(a.derive_secret(b""), a.derive_secret(b"\0"));
}
