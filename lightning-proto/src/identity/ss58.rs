//! SS58 address strings, decoded with exactly the acceptance rules of
//! Substrate's `Ss58Codec::from_ss58check` (sp-core 34), which is what the
//! reference uses at both signature-verification sites (PROTOCOL.md §5.6).

use blake2::{Blake2b512, Digest};

/// The generic Substrate prefix, used by Bittensor. It is accepted even though
/// the registry marks nothing special about it, because Substrate accepts its
/// process-wide default format unconditionally.
pub const DEFAULT_PREFIX: u16 = 42;

/// Prefixes present in the SS58 registry, sorted ascending.
///
/// Source: `ss58-registry.json` of the `ss58-registry` crate, version 1.51.0
/// (the version sp-core 34 resolves to), every entry's `prefix` field. Substrate
/// treats any prefix outside this list as "custom" and refuses it (except the
/// default, 42), so the list is part of the compatibility surface.
const REGISTERED_PREFIXES: [u16; 149] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49,
    50, 51, 52, 53, 54, 55, 56, 57, 58, 63, 65, 66, 67, 68, 69, 71, 72, 73, 77, 78, 81, 88, 89, 90,
    92, 93, 98, 99, 100, 101, 105, 110, 113, 117, 126, 128, 129, 131, 136, 137, 172, 252, 255, 268,
    420, 440, 666, 777, 789, 995, 1110, 1221, 1222, 1284, 1285, 1328, 1337, 1516, 1985, 2007, 2009,
    2021, 2024, 2032, 2092, 2106, 2112, 2199, 2206, 2207, 2254, 3333, 4450, 5234, 5845, 6094, 7007,
    7013, 7306, 7391, 8866, 8883, 8886, 8888, 9072, 9807, 9935, 10041, 11330, 11331, 11486, 11820,
    12155, 12191, 12850, 13116, 14697, 14998, 29972,
];

/// Registry entries without a `standardAccount` (same source as
/// [`REGISTERED_PREFIXES`]). Substrate refuses them before the checksum check.
const RESERVED_PREFIXES: [u16; 2] = [46, 47];

/// Longest string any SS58 address can have: 2 prefix + 32 key + 2 checksum
/// bytes encode to at most 50 base58 digits. Anything longer is rejected before
/// base58 decoding, whose cost grows quadratically with the input.
const MAX_ENCODED_LEN: usize = 50;

const KEY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 2;
const HASH_PREFIX: &[u8] = b"SS58PRE";

/// Why a string is not an acceptable SS58 address. The variants follow
/// Substrate's `PublicError` cases in the order it checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ss58Error {
    /// Not valid base58 (Bitcoin alphabet).
    BadBase58,
    /// The decoded bytes are not prefix + 32-byte key + 2-byte checksum.
    BadLength,
    /// The first byte is not a valid 1- or 2-byte prefix (it is ≥ 128).
    InvalidPrefix,
    /// A reserved prefix (46 or 47).
    FormatNotAllowed,
    /// A prefix missing from the SS58 registry (and not the default 42).
    UnknownFormat(u16),
    /// The 2-byte checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for Ss58Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ss58Error::BadBase58 => f.write_str("not valid base58"),
            Ss58Error::BadLength => f.write_str("wrong decoded length for an SS58 address"),
            Ss58Error::InvalidPrefix => f.write_str("invalid SS58 prefix byte"),
            Ss58Error::FormatNotAllowed => f.write_str("reserved SS58 address format"),
            Ss58Error::UnknownFormat(p) => write!(f, "unknown SS58 address format {p}"),
            Ss58Error::BadChecksum => f.write_str("SS58 checksum mismatch"),
        }
    }
}

impl std::error::Error for Ss58Error {}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = Blake2b512::new();
    hasher.update(HASH_PREFIX);
    hasher.update(body);
    let hash = hasher.finalize();
    [hash[0], hash[1]]
}

/// True when Substrate would accept `prefix` in `from_ss58check`.
pub fn is_accepted_prefix(prefix: u16) -> bool {
    !RESERVED_PREFIXES.contains(&prefix)
        && (prefix == DEFAULT_PREFIX || REGISTERED_PREFIXES.binary_search(&prefix).is_ok())
}

/// Encodes a public key as an SS58 string under `prefix`.
///
/// Like Substrate, only the low 14 bits of `prefix` are used (the format has
/// no room for more); callers pass registry prefixes, which all fit except the
/// registry's one oddity, 29972.
pub fn encode(public_key: &[u8; 32], prefix: u16) -> String {
    let ident = prefix & 0x3FFF;
    let mut body = [0u8; 2 + KEY_LEN + CHECKSUM_LEN];
    let prefix_len = if ident < 64 {
        body[0] = ident as u8;
        1
    } else {
        // Two bytes 01aaaaaa bbcccccc carry the little-endian value
        // aaaaaabb 00cccccc: the low byte is split across both.
        body[0] = 0b0100_0000 | ((ident & 0b1111_1100) >> 2) as u8;
        body[1] = ((ident >> 8) as u8) | (((ident & 0b11) as u8) << 6);
        2
    };
    body[prefix_len..prefix_len + KEY_LEN].copy_from_slice(public_key);
    let end = prefix_len + KEY_LEN;
    let sum = checksum(&body[..end]);
    body[end..end + CHECKSUM_LEN].copy_from_slice(&sum);
    bs58::encode(&body[..end + CHECKSUM_LEN]).into_string()
}

/// Decodes an SS58 string into its prefix and 32-byte public key, accepting
/// exactly what Substrate's `from_ss58check` accepts.
///
/// The checks run in Substrate's order (length, prefix byte, length, reserved
/// format, checksum, registry), so each input yields the same error kind the
/// reference would report, with one exception: strings longer than any SS58
/// address are refused up front as [`Ss58Error::BadLength`] (or
/// [`Ss58Error::BadBase58`] when they contain a non-base58 character) instead
/// of being decoded; some of them would be `InvalidPrefix` in Substrate.
/// Either way they are rejected.
pub fn decode(s: &str) -> Result<(u16, [u8; 32]), Ss58Error> {
    if s.len() > MAX_ENCODED_LEN {
        let all_base58 = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'));
        return Err(if all_base58 {
            Ss58Error::BadLength
        } else {
            Ss58Error::BadBase58
        });
    }
    // 50 base58 digits never decode to more than 50 bytes.
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let len = bs58::decode(s)
        .onto(&mut buf)
        .map_err(|_| Ss58Error::BadBase58)?;
    let data = &buf[..len];
    if data.len() < 2 {
        return Err(Ss58Error::BadLength);
    }
    let (prefix_len, ident) = match data[0] {
        0..=63 => (1, u16::from(data[0])),
        64..=127 => {
            let lower = (data[0] << 2) | (data[1] >> 6);
            let upper = data[1] & 0b0011_1111;
            (2, u16::from(lower) | (u16::from(upper) << 8))
        }
        _ => return Err(Ss58Error::InvalidPrefix),
    };
    if data.len() != prefix_len + KEY_LEN + CHECKSUM_LEN {
        return Err(Ss58Error::BadLength);
    }
    if RESERVED_PREFIXES.contains(&ident) {
        return Err(Ss58Error::FormatNotAllowed);
    }
    let body_end = prefix_len + KEY_LEN;
    if data[body_end..] != checksum(&data[..body_end]) {
        return Err(Ss58Error::BadChecksum);
    }
    if !is_accepted_prefix(ident) {
        return Err(Ss58Error::UnknownFormat(ident));
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&data[prefix_len..body_end]);
    Ok((ident, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_tables_are_sorted_and_consistent() {
        assert!(REGISTERED_PREFIXES.windows(2).all(|w| w[0] < w[1]));
        for p in RESERVED_PREFIXES {
            assert!(REGISTERED_PREFIXES.binary_search(&p).is_ok());
            assert!(!is_accepted_prefix(p));
        }
    }

    #[test]
    fn max_len_bound_holds_for_extreme_bodies() {
        for body in [[0xFFu8; 36], [0x00u8; 36]] {
            assert!(bs58::encode(&body).into_string().len() <= MAX_ENCODED_LEN);
        }
    }
}
