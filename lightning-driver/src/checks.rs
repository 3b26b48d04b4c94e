//! Checks of a caller's input at the client's public entry points, so that input that can
//! never work fails at once, naming what is wrong, instead of after a network round trip
//! or a timeout.

use std::cell::RefCell;
use std::collections::HashSet;

use lightning_proto::frame::FRAME_HEADER_LEN;
use lightning_proto::identity::ss58;
use lightning_proto::message::{encode_synapse_packet, EncodeError};

use crate::error::{LightningError, LocalCause, Result};
use crate::types::QuicRequest;

/// Hotkeys each thread has found valid, so a query pays a hash lookup (~30 ns) rather
/// than a base58 decode and a BLAKE2b checksum (~1 µs). Cleared when full.
const VALID_CACHE_ENTRIES: usize = 4096;

thread_local! {
    static VALID: RefCell<HashSet<Box<str>>> = RefCell::new(HashSet::new());
}

/// Fails with [`LightningError::InvalidHotkey`] unless `hotkey` is an SS58 address: a
/// miner can only ever prove a hotkey that is one.
pub(crate) fn hotkey(hotkey: &str) -> Result<()> {
    if VALID.with(|valid| valid.borrow().contains(hotkey)) {
        return Ok(());
    }
    match ss58::decode(hotkey) {
        Ok(_) => {
            VALID.with(|valid| {
                let mut valid = valid.borrow_mut();
                if valid.len() >= VALID_CACHE_ENTRIES {
                    valid.clear();
                }
                valid.insert(hotkey.into());
            });
            Ok(())
        }
        Err(e) => Err(LightningError::InvalidHotkey {
            hotkey: hotkey.to_string(),
            reason: e,
        }),
    }
}

/// MessagePack bytes of a request frame's payload besides the synapse name and the data
/// map, at most: the 3-element array header (1), the name's string header (up to 5) and
/// the timestamp (up to 9).
const PACKET_OVERHEAD: u64 = 1 + 5 + 9;

/// Fails with [`LightningError::RequestTooLarge`] when `request`'s frame payload would
/// exceed `limit` (the client's `max_frame_payload_bytes`): a miner with the same limit
/// could not read it, and the stream would end without an answer. Requests well under
/// the limit cost one comparison.
pub(crate) fn request_size(request: &QuicRequest, limit: u32) -> Result<()> {
    let upper =
        request.data.raw().len() as u64 + request.synapse_type.len() as u64 + PACKET_OVERHEAD;
    if upper <= u64::from(limit) {
        return Ok(());
    }
    // Near or over the limit: the exact size, as the endpoint will encode it.
    let now_secs = crate::identity::unix_ms() / 1000;
    let size = match encode_synapse_packet(&request.synapse_type, &request.data, now_secs) {
        Ok(frame) => frame.len().saturating_sub(FRAME_HEADER_LEN) as u64,
        Err(EncodeError::PayloadTooLarge { len }) => len as u64,
        Err(e) => return Err(LightningError::Local(LocalCause::EncodeRequest(e))),
    };
    if size > u64::from(limit) {
        return Err(LightningError::RequestTooLarge { size, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_proto::message::DataMap;

    fn request(payload: usize) -> QuicRequest {
        let data =
            DataMap::from_values([("payload".to_string(), vec![7u8; payload].into())]).unwrap();
        QuicRequest::new("echo", data)
    }

    #[test]
    fn a_request_of_exactly_the_limit_passes_and_one_byte_more_fails() {
        let limit = 1 << 20;
        let probe = request(limit as usize);
        let Err(LightningError::RequestTooLarge { size, .. }) = request_size(&probe, limit) else {
            panic!("a payload field of the whole limit cannot fit");
        };
        let overhead = size - u64::from(limit);
        let fits = request(limit as usize - overhead as usize);
        assert_eq!(request_size(&fits, limit), Ok(()));
        let over = request(limit as usize - overhead as usize + 1);
        assert_eq!(
            request_size(&over, limit),
            Err(LightningError::RequestTooLarge {
                size: u64::from(limit) + 1,
                limit
            })
        );
    }

    #[test]
    fn hotkeys_must_be_ss58() {
        let key = lightning_proto::identity::Keypair::from_seed(&[3; 32]).hotkey();
        assert_eq!(hotkey(&key), Ok(()));
        let Err(e) = hotkey("notakey") else {
            panic!("notakey accepted");
        };
        assert!(
            e.to_string()
                .contains("\"notakey\" is not a valid SS58 address"),
            "{e}"
        );
    }
}
