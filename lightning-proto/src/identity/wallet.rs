//! Loading a hotkey from a Bittensor wallet directory.
//!
//! This module reads files. That is deliberate and the one exception to the
//! crate's no-IO rule: it is a setup-time helper the application calls once
//! before handing a [`Keypair`] to the event-driven core, which never calls it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{ss58, Keypair};

/// Why a hotkey file could not be turned into a keypair.
#[derive(Debug)]
pub enum WalletError {
    /// No file at this path.
    NotFound(PathBuf),
    /// Any other IO failure while reading the file.
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is encrypted; only unencrypted hotkeys can be loaded.
    Encrypted {
        /// The file.
        path: PathBuf,
        /// The encryption scheme its header names.
        scheme: &'static str,
    },
    /// The file is not the JSON layout btwallet writes.
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// `secretSeed` is not `0x` followed by 64 hex digits. The value itself is
    /// never echoed, since it is the secret.
    BadSeed(PathBuf),
    /// A public field of the file disagrees with the key derived from
    /// `secretSeed`, so the file was edited or assembled from two keys.
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The JSON field that disagrees.
        field: &'static str,
    },
}

impl std::fmt::Display for WalletError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalletError::NotFound(path) => {
                write!(f, "hotkey file {} not found", path.display())
            }
            WalletError::Io { path, source } => {
                write!(f, "cannot read hotkey file {}: {source}", path.display())
            }
            WalletError::Encrypted { path, scheme } => write!(
                f,
                "hotkey file {} is encrypted ({scheme}); decrypt it or regenerate the \
                 hotkey without encryption, as hotkeys normally are",
                path.display()
            ),
            WalletError::Malformed { path, detail } => {
                write!(f, "hotkey file {} is malformed: {detail}", path.display())
            }
            WalletError::BadSeed(path) => write!(
                f,
                "hotkey file {}: secretSeed must be 0x followed by 64 hex digits",
                path.display()
            ),
            WalletError::Mismatch { path, field } => write!(
                f,
                "hotkey file {}: {field} does not match the key derived from secretSeed",
                path.display()
            ),
        }
    }
}

impl std::error::Error for WalletError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalletError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Headers of the encrypted keyfile formats bittensor wallets have used.
const ENCRYPTED_HEADERS: [(&[u8], &str); 4] = [
    (b"$NACL", "NaCl secretbox"),
    (b"$ARGON2", "Argon2"),
    (b"$ANSIBLE_VAULT", "Ansible Vault"),
    // Fernet tokens, the legacy bittensor encryption, always begin like this.
    (b"gAAAAA", "legacy Fernet"),
];

/// The path btwallet uses for a hotkey: `<wallets>/<wallet>/hotkeys/<hotkey>`.
pub fn hotkey_path(wallets_dir: &Path, wallet_name: &str, hotkey_name: &str) -> PathBuf {
    wallets_dir
        .join(wallet_name)
        .join("hotkeys")
        .join(hotkey_name)
}

/// Loads the hotkey `hotkey_name` of wallet `wallet_name` under `wallets_dir`
/// (typically `~/.bittensor/wallets`; `~` is not expanded here).
pub fn load_hotkey(
    wallets_dir: &Path,
    wallet_name: &str,
    hotkey_name: &str,
) -> Result<Keypair, WalletError> {
    load_hotkey_file(&hotkey_path(wallets_dir, wallet_name, hotkey_name))
}

/// Loads an unencrypted btwallet keyfile: a JSON object whose `secretSeed` is
/// `0x` + 64 hex digits. `accountId`, `publicKey` (both `0x` + hex) and
/// `ss58Address`, when present and not null, must match the derived key.
/// `secretPhrase` and `privateKey` are not used: the seed alone determines the
/// key, and mnemonic derivation would need a PBKDF2 dependency for no gain.
pub fn load_hotkey_file(path: &Path) -> Result<Keypair, WalletError> {
    let data = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            WalletError::NotFound(path.to_path_buf())
        } else {
            WalletError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    parse_keyfile(&data, path)
}

fn malformed(path: &Path, detail: impl Into<String>) -> WalletError {
    WalletError::Malformed {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn parse_keyfile(data: &[u8], path: &Path) -> Result<Keypair, WalletError> {
    let trimmed = data.trim_ascii_start();
    if let Some((_, scheme)) = ENCRYPTED_HEADERS
        .iter()
        .find(|(header, _)| trimmed.starts_with(header))
    {
        return Err(WalletError::Encrypted {
            path: path.to_path_buf(),
            scheme,
        });
    }
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| malformed(path, format!("not valid JSON ({e})")))?;
    let Value::Object(map) = value else {
        return Err(malformed(path, "expected a JSON object"));
    };

    let seed_text = string_field(&map, "secretSeed", path)?
        .ok_or_else(|| malformed(path, "no secretSeed field"))?;
    let seed: [u8; 32] =
        decode_hex_32(seed_text).ok_or_else(|| WalletError::BadSeed(path.to_path_buf()))?;
    let keypair = Keypair::from_seed(&seed);
    let public = keypair.public_key();

    for field in ["accountId", "publicKey"] {
        if let Some(text) = string_field(&map, field, path)? {
            let claimed = decode_hex_32(text)
                .ok_or_else(|| malformed(path, format!("{field} is not 0x + 64 hex digits")))?;
            if claimed != public {
                return Err(WalletError::Mismatch {
                    path: path.to_path_buf(),
                    field,
                });
            }
        }
    }
    if let Some(text) = string_field(&map, "ss58Address", path)? {
        let (_, claimed) =
            ss58::decode(text).map_err(|e| malformed(path, format!("ss58Address: {e}")))?;
        if claimed != public {
            return Err(WalletError::Mismatch {
                path: path.to_path_buf(),
                field: "ss58Address",
            });
        }
    }
    Ok(keypair)
}

/// A string field, treating absent and `null` alike (btwallet writes `null`
/// for parts a keypair does not have).
fn string_field<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    path: &Path,
) -> Result<Option<&'a str>, WalletError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(path, format!("{name} is not a string"))),
    }
}

fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
        .as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    Some(out)
}
