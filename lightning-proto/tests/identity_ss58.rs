//! SS58 encoding and Substrate-compatible decoding.

use lightning_proto::identity::ss58::{self, Ss58Error};

const MINER_HOTKEY: &str = "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH";

fn key() -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    k
}

#[test]
fn round_trips_for_one_and_two_byte_prefixes() {
    // 255 and 2254 are registered and need the 2-byte form.
    for prefix in [0u16, 2, 42, 63, 255, 2254, 14998] {
        let s = ss58::encode(&key(), prefix);
        assert_eq!(
            ss58::decode(&s),
            Ok((prefix, key())),
            "prefix {prefix}: {s}"
        );
    }
}

#[test]
fn default_prefix_gives_bittensor_style_strings() {
    let s = ss58::encode(&key(), ss58::DEFAULT_PREFIX);
    assert_eq!(s.len(), 48);
    assert!(s.starts_with('5'));
}

#[test]
fn known_hotkey_decodes() {
    let (prefix, pk) = ss58::decode(MINER_HOTKEY).unwrap();
    assert_eq!(prefix, 42);
    assert_eq!(
        hex::encode(pk),
        "189dac29296d31814dc8c56cf3d36a0543372bba7538fa322a4aebfebc39e056"
    );
}

#[test]
fn reserved_prefixes_rejected() {
    for prefix in [46u16, 47] {
        let s = ss58::encode(&key(), prefix);
        assert_eq!(ss58::decode(&s), Err(Ss58Error::FormatNotAllowed));
        assert!(!ss58::is_accepted_prefix(prefix));
    }
}

#[test]
fn custom_prefixes_rejected() {
    for prefix in [9999u16, 59, 64, 16383] {
        let s = ss58::encode(&key(), prefix);
        assert_eq!(ss58::decode(&s), Err(Ss58Error::UnknownFormat(prefix)));
    }
}

#[test]
fn bad_checksum_rejected() {
    let mut raw = bs58::decode(MINER_HOTKEY).into_vec().unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    let s = bs58::encode(&raw).into_string();
    assert_eq!(ss58::decode(&s), Err(Ss58Error::BadChecksum));
    // A flipped key byte breaks the checksum too.
    let mut raw = bs58::decode(MINER_HOTKEY).into_vec().unwrap();
    raw[10] ^= 0x80;
    assert_eq!(
        ss58::decode(&bs58::encode(&raw).into_string()),
        Err(Ss58Error::BadChecksum)
    );
}

#[test]
fn malformed_strings_rejected_with_substrate_error_kinds() {
    assert_eq!(ss58::decode(""), Err(Ss58Error::BadLength));
    assert_eq!(ss58::decode("2"), Err(Ss58Error::BadLength)); // one byte
    assert_eq!(ss58::decode("0OIl"), Err(Ss58Error::BadBase58));
    assert_eq!(ss58::decode("not an address!"), Err(Ss58Error::BadBase58));
    // A valid prefix byte but one key byte short, or one too many.
    for len in [34usize, 36] {
        let mut raw = vec![42u8];
        raw.resize(len, 7);
        assert_eq!(
            ss58::decode(&bs58::encode(&raw).into_string()),
            Err(Ss58Error::BadLength)
        );
    }
    // Dropping a character changes the leading byte as well (base58 is a
    // big number), which Substrate reports as a bad prefix.
    assert!(ss58::decode(&MINER_HOTKEY[..47]).is_err());
    // First byte >= 128.
    let mut raw = vec![0x80u8];
    raw.extend_from_slice(&[0u8; 34]);
    assert_eq!(
        ss58::decode(&bs58::encode(&raw).into_string()),
        Err(Ss58Error::InvalidPrefix)
    );
    // Too long: rejected without decoding.
    let long = "5".repeat(10_000);
    assert_eq!(ss58::decode(&long), Err(Ss58Error::BadLength));
    let long_bad = format!("{}0", "5".repeat(10_000));
    assert_eq!(ss58::decode(&long_bad), Err(Ss58Error::BadBase58));
}

#[test]
fn two_byte_prefix_layout_matches_substrate() {
    // The two prefix bytes 01aaaaaa bbcccccc carry the little-endian value
    // aaaaaabb 00cccccc (sp-core's to_ss58check_with_version).
    let s = ss58::encode(&key(), 0b0011_1111_1010_1010);
    let raw = bs58::decode(&s).into_vec().unwrap();
    assert_eq!(raw[0], 0b0100_0000 | 0b101010);
    assert_eq!(raw[1], 0b1011_1111);
}
