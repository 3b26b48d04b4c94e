//! Where a command's sr25519 key comes from: `--seed`, a bittensor wallet, or a fresh
//! random seed.

use std::path::PathBuf;

use clap::Args;
use lightning_tokio::Identity;
use rand_core::{OsRng, RngCore};

/// Key options shared by `serve` and `query`.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// 32-byte secret seed as 64 hex digits (an optional `0x` prefix is accepted).
    #[arg(long, value_name = "HEX", conflicts_with = "wallet_name", value_parser = parse_seed)]
    pub seed: Option<[u8; 32]>,

    /// Directory holding bittensor wallets (`~` is expanded).
    #[arg(long, value_name = "DIR", default_value = "~/.bittensor/wallets")]
    pub wallet_path: String,

    /// Wallet name; selects the key `<wallet-path>/<wallet-name>/hotkeys/<hotkey>`.
    #[arg(long, value_name = "NAME")]
    pub wallet_name: Option<String>,
}

/// Which source the identity came from, so callers can say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Seed,
    Wallet,
    Random,
}

impl KeyArgs {
    /// The identity these options select (`hotkey_name` names the wallet's hotkey file); a
    /// random one when neither a seed nor a wallet is given.
    pub fn identity(&self, hotkey_name: &str) -> Result<(Identity, KeySource), String> {
        if let Some(seed) = &self.seed {
            return Ok((Identity::from_seed(seed), KeySource::Seed));
        }
        if let Some(wallet) = &self.wallet_name {
            let dir = expand_home(&self.wallet_path);
            let identity = Identity::from_wallet(&dir, wallet, hotkey_name)
                .map_err(|e| format!("wallet {wallet}, hotkey {hotkey_name}: {e}"))?;
            return Ok((identity, KeySource::Wallet));
        }
        Ok((Identity::from_seed(&random_seed()), KeySource::Random))
    }
}

/// 32 bytes from the operating system's generator.
pub fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    seed
}

/// Parses 64 hex digits (optionally `0x`-prefixed, either case) into a seed.
pub fn parse_seed(text: &str) -> Result<[u8; 32], String> {
    let digits = text.trim();
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .unwrap_or(digits);
    if let Some((i, c)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid hex digit {c:?} at position {i}; expected 64 hex digits (32 bytes)"
        ));
    }
    if digits.len() != 64 {
        return Err(format!(
            "expected 64 hex digits (32 bytes), got {} digit{}",
            digits.len(),
            if digits.len() == 1 { "" } else { "s" }
        ));
    }
    let mut seed = [0u8; 32];
    for (byte, pair) in seed.iter_mut().zip(digits.as_bytes().chunks_exact(2)) {
        *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Ok(seed)
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The value of one ASCII hex digit, already checked by the caller.
fn nibble(c: u8) -> u8 {
    char::from(c).to_digit(16).map_or(0, |d| d as u8)
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ if path == "~" => std::env::var_os("HOME").map_or_else(|| path.into(), PathBuf::from),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let hex = "00ff10AbcdEF0123456789abcdef0123456789abcdef0123456789abcdef0102";
        let seed = parse_seed(hex).unwrap();
        assert_eq!(seed[..4], [0x00, 0xff, 0x10, 0xab]);
        assert_eq!(to_hex(&seed), hex.to_ascii_lowercase());
        assert_eq!(parse_seed(&format!("0x{hex}")).unwrap(), seed);
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let short = parse_seed("abcd").unwrap_err();
        assert!(short.contains("got 4 digits"), "{short}");
        let bad = parse_seed(&format!("{}zz", "0".repeat(62))).unwrap_err();
        assert!(bad.contains("'z' at position 62"), "{bad}");
        let long = parse_seed(&"1".repeat(66)).unwrap_err();
        assert!(long.contains("got 66 digits"), "{long}");
    }

    #[test]
    fn random_seeds_differ() {
        assert_ne!(random_seed(), random_seed());
    }
}
