//! # lightning-proto
//!
//! The sans-IO core of Lightning: a QUIC transport for Bittensor that is
//! wire-compatible with btlightning 0.2.15.
//!
//! Nothing in this crate performs IO, reads a clock, spawns a thread or draws
//! from a global random source. Time comes in as an argument, randomness is
//! injected as a seed, and datagrams go in and out as bytes. That is what makes
//! the same state machines usable from tokio, smol, or a hand-written event
//! loop, and what makes them testable and fuzzable deterministically.
#![deny(missing_docs)]

pub mod endpoint;
pub mod frame;
pub mod handshake;
pub mod identity;
pub mod idhash;
pub mod message;
mod msgpack;
pub mod reconnect;
#[cfg(feature = "testing")]
pub mod sim;
pub mod tls;
