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
pub mod pool;
pub mod reconnect;
#[cfg(feature = "testing")]
pub mod sim;
pub mod tls;

#[cfg(test)]
mod test_clock {
    //! The one place the crate's unit tests take an `Instant`: there is no way to build
    //! one without reading the clock. Only differences from this origin matter; no state
    //! machine under test reads the clock itself.

    use std::time::Instant;

    /// An arbitrary origin for unit tests.
    #[allow(clippy::disallowed_methods)] // The single, test-only clock read of the crate.
    pub(crate) fn origin() -> Instant {
        Instant::now()
    }
}
