//! Connection IDs that name their endpoint, so one socket can feed several endpoints.
//!
//! When a miner runs several endpoint drivers behind one port, each datagram must reach
//! the endpoint that owns its connection, whatever address it comes from (a validator's
//! NAT may rebind its port mid-connection: QUIC migration). The destination connection
//! ID is the one thing every packet of a connection carries, so the IDs our endpoints
//! issue carry their endpoint's index in the first byte:
//!
//! `[endpoint index][4 random bytes][3-byte tag]`
//!
//! The tag is a keyed hash of the first five bytes, so a router can tell our IDs from a
//! client's own choice (the destination ID of a connection's first Initials) and quinn
//! can drop packets with IDs we never issued without answering them. Datagrams whose ID
//! is not ours go to the endpoint picked by a keyed hash of that ID: retransmitted
//! Initials (same ID) then reach the same endpoint, and no endpoint answers for another's
//! connection. The index is visible to observers; it tells them only which of a miner's
//! threads serves a connection.

use std::hash::{DefaultHasher, Hash, Hasher};

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Length of the connection IDs we issue.
const CID_LEN: usize = 8;
/// Bytes covered by the tag: the index and the random part.
const TAGGED: usize = 5;

/// The routing rule shared by a group of endpoints: how many there are, and the key that
/// tags their connection IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidRouting {
    endpoints: u8,
    key: u64,
}

impl CidRouting {
    /// A rule for `endpoints` endpoints (at least 1) with the secret `key`.
    pub fn new(endpoints: u8, key: u64) -> Self {
        Self {
            endpoints: endpoints.max(1),
            key,
        }
    }

    /// How many endpoints share the port.
    pub fn endpoints(&self) -> u8 {
        self.endpoints
    }

    fn tag(&self, bytes: &[u8]) -> [u8; CID_LEN - TAGGED] {
        let mut h = DefaultHasher::new();
        self.key.hash(&mut h);
        bytes.hash(&mut h);
        let full = h.finish().to_le_bytes();
        [full[0], full[1], full[2]]
    }

    /// Whether `cid` is one of ours: the right length, a valid index, its tag matching.
    pub fn is_ours(&self, cid: &[u8]) -> bool {
        cid.len() == CID_LEN && cid[0] < self.endpoints && self.tag(&cid[..TAGGED]) == cid[TAGGED..]
    }

    /// The endpoint that must handle `datagram` (an index below [`endpoints`](Self::endpoints)).
    ///
    /// Our own connection IDs name their endpoint; any other ID (a client's first
    /// Initials, garbage) is spread by a keyed hash; a datagram too short to hold an ID
    /// goes to endpoint 0, which drops it as any endpoint would.
    pub fn route(&self, datagram: &[u8]) -> usize {
        if self.endpoints == 1 {
            return 0;
        }
        let Some(cid) = destination_cid(datagram) else {
            return 0;
        };
        if self.is_ours(cid) {
            return usize::from(cid[0]);
        }
        let mut h = DefaultHasher::new();
        (self.key ^ 0x9e37_79b9_7f4a_7c15).hash(&mut h);
        cid.hash(&mut h);
        (h.finish() % u64::from(self.endpoints)) as usize
    }

    /// The generator of endpoint `index`'s connection IDs, drawing its random part from
    /// `seed` (so a seeded endpoint stays deterministic).
    pub fn generator(&self, index: u8, seed: [u8; 32]) -> EndpointCids {
        EndpointCids {
            routing: *self,
            index,
            rng: ChaCha20Rng::from_seed(seed),
        }
    }
}

/// The destination connection ID of a QUIC packet: a long header states its length, a
/// short header's is ours and [`CID_LEN`] long.
fn destination_cid(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 {
        datagram.get(1..1 + CID_LEN)
    } else {
        let len = usize::from(*datagram.get(5)?);
        datagram.get(6..6 + len)
    }
}

/// Issues one endpoint's connection IDs (see the module docs).
#[derive(Debug, Clone)]
pub struct EndpointCids {
    routing: CidRouting,
    index: u8,
    rng: ChaCha20Rng,
}

impl ConnectionIdGenerator for EndpointCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.index;
        self.rng.fill_bytes(&mut bytes[1..TAGGED]);
        let tag = self.routing.tag(&bytes[..TAGGED]);
        bytes[TAGGED..].copy_from_slice(&tag);
        ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if self.routing.is_ours(cid) && cid[0] == self.index {
            Ok(())
        } else {
            Err(InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_header(cid: &[u8]) -> Vec<u8> {
        let mut d = vec![0x40];
        d.extend_from_slice(cid);
        d.extend_from_slice(&[0u8; 20]);
        d
    }

    fn long_header(cid: &[u8]) -> Vec<u8> {
        let mut d = vec![0xc0, 0, 0, 0, 1, cid.len() as u8];
        d.extend_from_slice(cid);
        d.extend_from_slice(&[0u8; 20]);
        d
    }

    #[test]
    fn our_ids_route_to_their_endpoint_in_either_header() {
        let routing = CidRouting::new(4, 0x1234);
        for index in 0..4u8 {
            let mut g = routing.generator(index, [index; 32]);
            for _ in 0..50 {
                let cid = g.generate_cid();
                assert!(g.validate(&cid).is_ok());
                assert_eq!(routing.route(&short_header(&cid)), usize::from(index));
                assert_eq!(routing.route(&long_header(&cid)), usize::from(index));
            }
        }
    }

    #[test]
    fn an_endpoint_refuses_another_endpoints_ids_and_foreign_ones() {
        let routing = CidRouting::new(2, 7);
        let mut zero = routing.generator(0, [1; 32]);
        let one = routing.generator(1, [2; 32]);
        let cid = zero.generate_cid();
        assert!(one.validate(&cid).is_err());
        let other_key = CidRouting::new(2, 8).generator(0, [1; 32]);
        assert!(other_key.validate(&cid).is_err());
    }

    #[test]
    fn client_chosen_ids_spread_over_endpoints_and_stick() {
        let routing = CidRouting::new(2, 99);
        let mut counts = [0usize; 2];
        for i in 0..1000u32 {
            let cid: Vec<u8> = (0..12).map(|b| (i.wrapping_mul(31) as u8) ^ b).collect();
            let cid = [&i.to_le_bytes()[..], &cid[4..]].concat();
            let first = routing.route(&long_header(&cid));
            assert_eq!(routing.route(&long_header(&cid)), first);
            counts[first] += 1;
        }
        assert!(counts.iter().all(|&n| n > 350), "{counts:?}");
    }

    #[test]
    fn truncated_datagrams_go_to_endpoint_zero() {
        let routing = CidRouting::new(3, 5);
        assert_eq!(routing.route(&[]), 0);
        assert_eq!(routing.route(&[0x40, 1, 2]), 0);
        assert_eq!(routing.route(&[0xc0, 0, 0, 0, 1, 20, 1]), 0);
    }
}
