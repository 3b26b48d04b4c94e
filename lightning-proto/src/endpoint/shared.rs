//! The state a miner's endpoints must agree on when several of them serve one port.
//!
//! A miner may run several endpoint drivers behind one UDP port (`docs/multi-driver.md`),
//! each owning its own connections. What protects the miner as a whole must still be one
//! thing: a handshake replayed to another driver is still a replay, a source's
//! unauthenticated connections count together, `max_connections` counts every validator,
//! a hotkey's new connection replaces its old one wherever that lives (PROTOCOL §13.6),
//! and the request-byte budget and the queued-response cap bound the whole process.
//!
//! The sans-IO [`Server`](super::Server) reaches that state through [`SharedLimits`] and
//! never knows whether it is shared: [`LocalLimits`] is the plain implementation one
//! server owns alone (and the one the simulator and fuzz targets use), and a driver crate
//! wraps one `LocalLimits` behind a lock for a group of servers on several threads. Each
//! call is one short critical section, made once per handshake, per connection change or
//! per request frame, never per datagram.

use std::collections::HashMap;
use std::net::IpAddr;

use super::budget::{ReadBudget, Reservation, Shortfall};
use super::config::ServerConfig;
use super::core::ConnRef;
use super::server::{UNAUTHENTICATED_MAX_FRAME, UNAUTHENTICATED_READ_TOTAL};
use crate::handshake::{HandshakeError, HandshakeRateLimiter, NonceCache};

/// The connection that holds a validator hotkey: which endpoint of the group, and which of
/// its connections. Opaque outside this crate; a driver hands it back to
/// [`Server::close_replaced`](super::Server::close_replaced) on the endpoint that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotkeyHolder {
    pub(crate) endpoint: u8,
    pub(crate) conn: ConnRef,
}

impl HotkeyHolder {
    /// Which endpoint of the group holds the connection.
    pub fn endpoint(&self) -> u8 {
        self.endpoint
    }
}

/// The limits a miner's endpoints share (see the module docs). Every method is a short,
/// non-blocking step; none may call back into a [`Server`](super::Server).
pub trait SharedLimits: Send {
    /// Records a handshake attempt from `ip`; refused over the per-IP rate.
    fn check_handshake_rate(&mut self, ip: IpAddr, now_secs: u64) -> Result<(), HandshakeError>;
    /// Records a handshake nonce; refused if it was seen within the signature window.
    fn check_nonce(
        &mut self,
        nonce: &str,
        now_secs: u64,
        signed_at: u64,
    ) -> Result<(), HandshakeError>;
    /// Forgets nonces and rate records older than their windows.
    fn evict_stale(&mut self, now_secs: u64);
    /// Nonces held by the replay cache.
    fn nonce_count(&self) -> usize;

    /// Unauthenticated connections over the group, and those of them with a proven
    /// address from `source` (see `admission::source_of`).
    fn unauthenticated(&self, source: IpAddr) -> (usize, usize);
    /// A connection from `source` starts (`starts`) or stops counting as unauthenticated.
    fn count_unauthenticated(&mut self, source: IpAddr, validated: bool, starts: bool);
    /// Counts a new connection from `source` as unauthenticated if there is room: fewer
    /// than `max_total` in all and fewer than `max_per_source` with a proven address from
    /// `source`. One step, so that two endpoints admitting at once cannot both take the
    /// last place.
    fn claim_unauthenticated(
        &mut self,
        source: IpAddr,
        validated: bool,
        max_total: usize,
        max_per_source: usize,
    ) -> Result<(), UnauthenticatedFull> {
        let (total, from_source) = self.unauthenticated(source);
        if total >= max_total {
            return Err(UnauthenticatedFull::Total);
        }
        if from_source >= max_per_source {
            return Err(UnauthenticatedFull::Source);
        }
        self.count_unauthenticated(source, validated, true);
        Ok(())
    }

    /// Validator hotkeys authenticated over the group (what `max_connections` bounds).
    fn hotkey_count(&self) -> usize;
    /// Which connection holds `hotkey`, if any.
    fn hotkey_holder(&self, hotkey: &str) -> Option<HotkeyHolder>;
    /// Makes `holder` hold `hotkey` if the table has room for it: the hotkey is held
    /// already (by any connection, which `holder` replaces) or fewer than `max` hotkeys
    /// are. Returns the previous holder. One step, so that two endpoints authenticating
    /// at once cannot both take the last place.
    fn claim_hotkey(
        &mut self,
        hotkey: &str,
        holder: HotkeyHolder,
        max: usize,
    ) -> Result<Option<HotkeyHolder>, TableFull>;
    /// `holder` lets go of `hotkey` (nothing happens if another connection holds it now).
    fn release_hotkey(&mut self, hotkey: &str, holder: HotkeyHolder);
    /// Asks the endpoint owning `holder` to close it: `hotkey` moved to a connection of
    /// another endpoint. A single endpoint never asks (its holders are all its own).
    fn close_elsewhere(&mut self, holder: HotkeyHolder, hotkey: &str) {
        let _ = (holder, hotkey);
    }

    /// Reserves `bytes` of the request-byte budget for one frame (see `budget`);
    /// `conn_used` and `conn_small` are its connection's own counts.
    fn try_reserve(
        &mut self,
        conn_used: &mut u64,
        conn_small: &mut u64,
        authenticated: bool,
        bytes: u64,
    ) -> Result<Reservation, Shortfall>;
    /// Gives a reservation back (with its connection's counts, if it still exists).
    fn release(&mut self, conn: Option<(&mut u64, &mut u64)>, reservation: Reservation);
    /// Request bytes reserved over the group.
    fn reserved_bytes(&self) -> u64;

    /// Response bytes queued over the group.
    fn queued_total(&self) -> u64;
    /// One stream's queued response bytes changed from `before` to `after`.
    fn account_queued(&mut self, before: u64, after: u64);

    /// This endpoint released budget or queued bytes: endpoints whose streams wait for
    /// the group's totals may try them again.
    fn freed(&mut self) {}
    /// Whether this endpoint has streams waiting for the group's totals (so that it is
    /// told when another endpoint frees some).
    fn set_waiting_for_total(&mut self, waiting: bool) {
        let _ = waiting;
    }
}

/// `max_connections` hotkeys are held ([`SharedLimits::claim_hotkey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// Which limit on unauthenticated connections has no room
/// ([`SharedLimits::claim_unauthenticated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnauthenticatedFull {
    /// `max_unauthenticated_connections`.
    Total,
    /// `max_unauthenticated_per_ip`.
    Source,
}

/// [`SharedLimits`] held by one endpoint alone: plain fields, no lock.
#[derive(Debug)]
pub struct LocalLimits {
    nonces: NonceCache,
    rate: HandshakeRateLimiter,
    unauthenticated: usize,
    /// Unauthenticated connections with a proven address, per source.
    unauthenticated_by_source: HashMap<IpAddr, usize>,
    hotkeys: HashMap<String, HotkeyHolder>,
    budget: ReadBudget,
    queued_total: u64,
}

impl LocalLimits {
    /// The limits `config` sets.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            nonces: NonceCache::new(config.max_nonce_entries, config.max_signature_age_secs),
            rate: HandshakeRateLimiter::new(
                config.max_handshake_attempts_per_minute as usize,
                config.max_tracked_rate_ips,
            ),
            unauthenticated: 0,
            unauthenticated_by_source: HashMap::new(),
            hotkeys: HashMap::new(),
            budget: ReadBudget::new(
                config.max_request_bytes_per_connection,
                config.max_request_bytes_total,
                u64::from(UNAUTHENTICATED_MAX_FRAME),
                UNAUTHENTICATED_READ_TOTAL,
                config.small_request_reserve_bytes,
            ),
            queued_total: 0,
        }
    }
}

impl SharedLimits for LocalLimits {
    fn check_handshake_rate(&mut self, ip: IpAddr, now_secs: u64) -> Result<(), HandshakeError> {
        self.rate.check_and_record(ip, now_secs)
    }

    fn check_nonce(
        &mut self,
        nonce: &str,
        now_secs: u64,
        signed_at: u64,
    ) -> Result<(), HandshakeError> {
        self.nonces
            .check_and_insert_signed_at(nonce, now_secs, signed_at)
    }

    fn evict_stale(&mut self, now_secs: u64) {
        self.nonces.evict_stale(now_secs);
        self.rate.evict_stale(now_secs);
    }

    fn nonce_count(&self) -> usize {
        self.nonces.len()
    }

    fn unauthenticated(&self, source: IpAddr) -> (usize, usize) {
        (
            self.unauthenticated,
            self.unauthenticated_by_source
                .get(&source)
                .copied()
                .unwrap_or(0),
        )
    }

    fn count_unauthenticated(&mut self, source: IpAddr, validated: bool, starts: bool) {
        if starts {
            self.unauthenticated += 1;
            if validated {
                *self.unauthenticated_by_source.entry(source).or_default() += 1;
            }
            return;
        }
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
        if validated {
            if let Some(n) = self.unauthenticated_by_source.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    self.unauthenticated_by_source.remove(&source);
                }
            }
        }
    }

    fn hotkey_count(&self) -> usize {
        self.hotkeys.len()
    }

    fn hotkey_holder(&self, hotkey: &str) -> Option<HotkeyHolder> {
        self.hotkeys.get(hotkey).copied()
    }

    fn claim_hotkey(
        &mut self,
        hotkey: &str,
        holder: HotkeyHolder,
        max: usize,
    ) -> Result<Option<HotkeyHolder>, TableFull> {
        if let Some(current) = self.hotkeys.get_mut(hotkey) {
            return Ok(Some(std::mem::replace(current, holder)));
        }
        if self.hotkeys.len() >= max {
            return Err(TableFull);
        }
        self.hotkeys.insert(hotkey.to_string(), holder);
        Ok(None)
    }

    fn release_hotkey(&mut self, hotkey: &str, holder: HotkeyHolder) {
        if self.hotkeys.get(hotkey) == Some(&holder) {
            self.hotkeys.remove(hotkey);
        }
    }

    fn try_reserve(
        &mut self,
        conn_used: &mut u64,
        conn_small: &mut u64,
        authenticated: bool,
        bytes: u64,
    ) -> Result<Reservation, Shortfall> {
        self.budget
            .try_reserve(conn_used, conn_small, authenticated, bytes)
    }

    fn release(&mut self, conn: Option<(&mut u64, &mut u64)>, reservation: Reservation) {
        self.budget.release(conn, reservation);
    }

    fn reserved_bytes(&self) -> u64 {
        self.budget.in_use()
    }

    fn queued_total(&self) -> u64 {
        self.queued_total
    }

    fn account_queued(&mut self, before: u64, after: u64) {
        self.queued_total = (self.queued_total + after).saturating_sub(before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::ConnectionHandle;

    fn holder(endpoint: u8, serial: u64) -> HotkeyHolder {
        HotkeyHolder {
            endpoint,
            conn: ConnRef {
                handle: ConnectionHandle(serial as usize),
                serial,
            },
        }
    }

    #[test]
    fn a_hotkey_is_claimed_only_with_room_or_over_its_own_place() {
        let mut limits = LocalLimits::new(&ServerConfig::default());
        assert_eq!(limits.claim_hotkey("a", holder(0, 1), 2), Ok(None));
        assert_eq!(limits.claim_hotkey("b", holder(1, 2), 2), Ok(None));
        // Full: a third hotkey is refused and nothing changes...
        assert_eq!(limits.claim_hotkey("c", holder(0, 3), 2), Err(TableFull));
        assert_eq!(limits.hotkey_count(), 2);
        assert_eq!(limits.hotkey_holder("c"), None);
        // ...but a held hotkey moving to a new connection keeps its place.
        assert_eq!(
            limits.claim_hotkey("a", holder(1, 4), 2),
            Ok(Some(holder(0, 1)))
        );
        assert_eq!(limits.hotkey_holder("a"), Some(holder(1, 4)));
        limits.release_hotkey("b", holder(1, 2));
        assert_eq!(limits.claim_hotkey("c", holder(0, 3), 2), Ok(None));
        assert_eq!(limits.hotkey_count(), 2);
    }
}
