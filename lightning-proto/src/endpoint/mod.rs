//! The sans-IO endpoints: [`Client`] (validator) and [`Server`] (miner).
//!
//! Each owns a quinn-proto endpoint with all of its connections, runs the Lightning
//! handshake and the request/stream flows, and is driven through one small surface,
//! [`SansIo`]:
//!
//! | inputs | outputs |
//! |---|---|
//! | `handle_datagram(now, Datagram)` | `poll_transmit(now, buf)` → datagram(s) to send |
//! | `handle_timeout(now)` | `poll_timeout()` → when to call `handle_timeout` next |
//! | the role's commands (`connect`, `request`, `respond`, …) | `poll_event()` → application events |
//!
//! The order of those calls (the drive contract) is written down once, in [`SansIo`]'s
//! documentation. Nothing happens between calls: the endpoint never reads a clock, so
//! `now` is whatever you say it is. `examples/std_event_loop.rs` is a complete loop over
//! `std::net::UdpSocket`.

mod budget;
pub mod cid;
mod client;
mod clock;
mod config;
mod core;
mod error;
mod inq;
mod outq;
mod parking;
mod server;
mod shared;
mod surface;
mod timers;

pub use budget::{Reservation, Shortfall};
pub use client::{Client, ClientEvent, HotkeyStatus, RequestOptions};
pub use clock::WallClock;
pub use config::{
    ClientConfig, ConfigError, CongestionControl, ResetSecret, RetryPolicy, ServerConfig,
    TransportOptions, DEFAULT_MAX_UDP_PAYLOAD, LOOPBACK_MAX_UDP_PAYLOAD, MAX_UDP_PAYLOAD,
};
pub use error::{
    ClientError, ConnectFailure, ConnectionEnd, HandshakeProtocolError, LocalError, ResponseError,
    StreamFailure,
};
pub use server::{
    wire_errors, AnswerError, CancelReason, ChunkCredit, ConnId, GroupMember, IncomingRequest,
    Server, ServerEvent, ServerStats, SynapseIndex, SynapseKind, BUSY_ERROR_CODE,
    UNAUTHENTICATED_MAX_FRAME,
};
pub use shared::{HotkeyHolder, LocalLimits, SharedLimits, TableFull, UnauthenticatedFull};
pub use surface::{Datagram, SansIo};

pub use quinn_proto::{ConnectionStats, EcnCodepoint, Transmit};

use crate::identity::{ss58, Signer};

/// A request this validator sent, as its [`Client`] numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// A request this miner received, as its [`Server`] numbers them. Unrelated to the
/// sender's [`QueryId`]: neither travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What a deadline returned by `next_deadline` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutReason {
    /// QUIC: loss detection, pacing, idle timeout, keep-alive, close draining.
    Quic,
    /// Lightning: handshake and request deadlines, handler timeouts, cache cleanup.
    Application,
}

/// The earlier of quinn's next timer and the application's, with its reason.
fn earliest(
    quic: Option<std::time::Instant>,
    app: Option<std::time::Instant>,
) -> Option<(std::time::Instant, TimeoutReason)> {
    match (quic, app) {
        (Some(q), Some(a)) if a < q => Some((a, TimeoutReason::Application)),
        (Some(q), _) => Some((q, TimeoutReason::Quic)),
        (None, Some(a)) => Some((a, TimeoutReason::Application)),
        (None, None) => None,
    }
}

/// A signer that knows its public key must sign for the configured hotkey.
fn check_signer_matches(hotkey: &str, signer: &dyn Signer) -> Result<(), ConfigError> {
    let Some(public) = signer.public_key() else {
        return Ok(());
    };
    match ss58::decode(hotkey) {
        Ok((_, key)) if key == public => Ok(()),
        Ok(_) => Err(ConfigError::SignerMismatch {
            hotkey: hotkey.to_string(),
        }),
        Err(reason) => Err(ConfigError::InvalidHotkey {
            hotkey: hotkey.to_string(),
            reason,
        }),
    }
}
