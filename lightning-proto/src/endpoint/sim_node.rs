//! Lets the endpoints run inside the deterministic simulator.

use std::time::Instant;

use bytes::Bytes;

use super::{Client, EcnCodepoint, Server};
use crate::sim::{Datagram, Node, Transmit};

fn ecn_in(bits: Option<u8>) -> Option<EcnCodepoint> {
    bits.and_then(EcnCodepoint::from_bits)
}

fn to_sim(t: quinn_proto::Transmit, buf: &[u8]) -> Transmit {
    Transmit {
        dst: t.destination,
        ecn: t.ecn.map(|e| e as u8),
        payload: Bytes::copy_from_slice(&buf[..t.size]),
        segment_size: t.segment_size,
    }
}

macro_rules! sim_node {
    ($ty:ty) => {
        impl Node for $ty {
            fn handle_datagram(&mut self, now: Instant, d: Datagram) {
                self.handle_datagram(now, d.src, Some(d.dst.ip()), ecn_in(d.ecn), d.payload);
            }

            fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
                let mut buf = Vec::new();
                let t = <$ty>::poll_transmit(self, now, &mut buf)?;
                Some(to_sim(t, &buf))
            }

            fn poll_timeout(&mut self) -> Option<Instant> {
                <$ty>::poll_timeout(self)
            }

            fn handle_timeout(&mut self, now: Instant) {
                <$ty>::handle_timeout(self, now)
            }
        }
    };
}

sim_node!(Client);
sim_node!(Server);
