//! Hotkey loading from a btwallet-style directory tree, with fixtures written
//! into a fresh temporary directory per test.
// Fixture helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lightning_proto::identity::{load_hotkey, load_hotkey_file, Keypair, WalletError};

const SEED1_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const MINER_PUBLIC: &str = "189dac29296d31814dc8c56cf3d36a0543372bba7538fa322a4aebfebc39e056";
const MINER_HOTKEY: &str = "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH";
const VALIDATOR_HOTKEY: &str = "5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq";

struct TempWallets(PathBuf);

impl TempWallets {
    fn new() -> TempWallets {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lightning-wallet-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempWallets(dir)
    }

    fn write(&self, wallet: &str, hotkey: &str, contents: &[u8]) -> PathBuf {
        let dir = self.0.join(wallet).join("hotkeys");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(hotkey);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempWallets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn full_keyfile(ss58: &str) -> String {
    format!(
        r#"{{"accountId": "0x{MINER_PUBLIC}", "publicKey": "0x{MINER_PUBLIC}",
            "secretPhrase": null, "secretSeed": "0x{SEED1_HEX}", "ss58Address": "{ss58}"}}"#
    )
}

#[test]
fn loads_a_complete_keyfile() {
    let w = TempWallets::new();
    w.write("default", "miner", full_keyfile(MINER_HOTKEY).as_bytes());
    let kp = load_hotkey(w.path(), "default", "miner").unwrap();
    assert_eq!(kp.hotkey(), MINER_HOTKEY);
    assert_eq!(kp.public_key(), Keypair::from_seed(&[1u8; 32]).public_key());
}

#[test]
fn loads_a_seed_only_keyfile_with_upper_case_hex() {
    let w = TempWallets::new();
    let seed = "0x".to_owned() + &"AB".repeat(32);
    let path = w.write("w", "h", format!(r#"{{"secretSeed":"{seed}"}}"#).as_bytes());
    let kp = load_hotkey_file(&path).unwrap();
    assert_eq!(
        kp.public_key(),
        Keypair::from_seed(&[0xAB; 32]).public_key()
    );
}

#[test]
fn missing_file_is_not_found() {
    let w = TempWallets::new();
    match load_hotkey(w.path(), "nope", "none") {
        Err(WalletError::NotFound(p)) => {
            assert_eq!(p, w.path().join("nope").join("hotkeys").join("none"));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn encrypted_files_are_recognised() {
    let w = TempWallets::new();
    for (i, header) in [
        &b"$NACL"[..],
        b"$ARGON2",
        b"$ANSIBLE_VAULT;1.1;AES256",
        b"gAAAAABk",
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = header.to_vec();
        body.extend_from_slice(&[0x9c, 0x00, 0xff, 0x12]);
        let path = w.write("w", &format!("h{i}"), &body);
        let err = load_hotkey_file(&path).unwrap_err();
        assert!(matches!(err, WalletError::Encrypted { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("encrypted"), "{text}");
        assert!(text.contains("decrypt"), "{text}");
    }
}

#[test]
fn malformed_files_are_reported() {
    let w = TempWallets::new();
    let cases: [&[u8]; 5] = [
        b"{not json",
        b"[1, 2, 3]",
        br#"{"ss58Address": "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH"}"#,
        br#"{"secretSeed": 7}"#,
        b"",
    ];
    for (i, body) in cases.into_iter().enumerate() {
        let path = w.write("w", &format!("m{i}"), body);
        let err = load_hotkey_file(&path).unwrap_err();
        assert!(
            matches!(err, WalletError::Malformed { .. }),
            "case {i}: {err:?}"
        );
    }
    // A public field with bad hex is malformed, not a mismatch.
    let path = w.write(
        "w",
        "badpub",
        format!(r#"{{"secretSeed":"0x{SEED1_HEX}","publicKey":"0x12"}}"#).as_bytes(),
    );
    assert!(matches!(
        load_hotkey_file(&path),
        Err(WalletError::Malformed { .. })
    ));
}

#[test]
fn bad_seed_is_reported_without_echoing_it() {
    let w = TempWallets::new();
    for (i, seed) in [
        "0x1234",
        "0xzz01010101010101010101010101010101010101010101010101010101010101",
    ]
    .into_iter()
    .enumerate()
    {
        let path = w.write(
            "w",
            &format!("s{i}"),
            format!(r#"{{"secretSeed":"{seed}"}}"#).as_bytes(),
        );
        let err = load_hotkey_file(&path).unwrap_err();
        assert!(matches!(err, WalletError::BadSeed(_)), "{err:?}");
        assert!(!err.to_string().contains(seed));
    }
}

#[test]
fn mismatched_public_fields_are_refused() {
    let w = TempWallets::new();
    let path = w.write("w", "ss58", full_keyfile(VALIDATOR_HOTKEY).as_bytes());
    match load_hotkey_file(&path) {
        Err(WalletError::Mismatch { field, .. }) => assert_eq!(field, "ss58Address"),
        other => panic!("expected Mismatch, got {other:?}"),
    }

    let other_pub = "1a4fee48c1ba1a48e8cd43782a8485d635aa91cfb82cbb477f0c1c576bc4031c";
    let path = w.write(
        "w",
        "pub",
        format!(r#"{{"secretSeed":"0x{SEED1_HEX}","publicKey":"0x{other_pub}"}}"#).as_bytes(),
    );
    match load_hotkey_file(&path) {
        Err(WalletError::Mismatch { field, .. }) => assert_eq!(field, "publicKey"),
        other => panic!("expected Mismatch, got {other:?}"),
    }
}
