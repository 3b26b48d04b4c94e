//! Several endpoint drivers behind one UDP port (`docs/multi-driver.md`).
//!
//! The first driver reads the socket and hands each datagram whose connection belongs
//! to another driver, by connection ID (`CidRouting`), to that driver's inbox
//! (`driver::Router`); each driver is the usual endpoint task with its own connections,
//! sending through its own handle on the same socket. What the drivers must agree on lives in one [`LocalLimits`] behind a
//! mutex, reached through [`GroupLimits`]: one short critical section per handshake,
//! connection change or request frame (reserve, release), never per datagram; the
//! queued-response total, touched more often, is an atomic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use lightning_proto::endpoint::{
    HotkeyHolder, LocalLimits, Reservation, SharedLimits, Shortfall, TableFull, UnauthenticatedFull,
};
use lightning_proto::handshake::HandshakeError;

use super::task::Command;

/// Most drivers one server runs (the first byte of a connection ID names one).
pub const MAX_DRIVERS: usize = 64;

/// Batches of datagrams waiting for one driver; a driver that falls this far behind
/// loses datagrams, as a full socket buffer would drop them.
pub(super) const INBOX_BATCHES: usize = 1024;

/// One driver as the others see it.
pub(super) struct Member {
    /// Its command queue (weak: the drivers must still stop when every handle is gone).
    pub(super) commands: async_channel::WeakSender<Command>,
    /// It has streams waiting for the group's totals.
    waiting_for_total: AtomicBool,
    /// A nudge is on its way to it.
    nudge_pending: AtomicBool,
}

impl Member {
    pub(super) fn new(commands: async_channel::WeakSender<Command>) -> Self {
        Self {
            commands,
            waiting_for_total: AtomicBool::new(false),
            nudge_pending: AtomicBool::new(false),
        }
    }

    fn send(&self, command: Command) {
        if let Some(tx) = self.commands.upgrade() {
            let _ = tx.try_send(command);
        }
    }
}

/// The state the drivers of one server share.
pub(super) struct Group {
    limits: Mutex<LocalLimits>,
    /// Response bytes queued over the group: touched several times per request, so kept
    /// out of the lock.
    queued_total: AtomicU64,
    pub(super) members: Vec<Member>,
}

impl Group {
    pub(super) fn new(limits: LocalLimits, members: Vec<Member>) -> Self {
        Self {
            limits: Mutex::new(limits),
            queued_total: AtomicU64::new(0),
            members,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LocalLimits> {
        // A panic inside one of these short sections leaves plain counters behind: still
        // usable, so a poisoned lock is taken as is.
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Driver `index` took its nudge: the next freeing may nudge it again.
    pub(super) fn nudged(&self, index: usize) {
        if let Some(m) = self.members.get(index) {
            m.nudge_pending.store(false, Ordering::Release);
        }
    }
}

/// [`SharedLimits`] of driver `index`, backed by the group's one [`LocalLimits`].
pub(super) struct GroupLimits {
    pub(super) group: std::sync::Arc<Group>,
    pub(super) index: usize,
}

impl SharedLimits for GroupLimits {
    fn check_handshake_rate(
        &mut self,
        ip: std::net::IpAddr,
        now_secs: u64,
    ) -> Result<(), HandshakeError> {
        self.group.lock().check_handshake_rate(ip, now_secs)
    }

    fn check_nonce(
        &mut self,
        nonce: &str,
        now_secs: u64,
        signed_at: u64,
    ) -> Result<(), HandshakeError> {
        self.group.lock().check_nonce(nonce, now_secs, signed_at)
    }

    fn evict_stale(&mut self, now_secs: u64) {
        self.group.lock().evict_stale(now_secs);
    }

    fn nonce_count(&self) -> usize {
        self.group.lock().nonce_count()
    }

    fn unauthenticated(&self, source: std::net::IpAddr) -> (usize, usize) {
        self.group.lock().unauthenticated(source)
    }

    fn count_unauthenticated(&mut self, source: std::net::IpAddr, validated: bool, starts: bool) {
        self.group
            .lock()
            .count_unauthenticated(source, validated, starts);
    }

    fn claim_unauthenticated(
        &mut self,
        source: std::net::IpAddr,
        validated: bool,
        max_total: usize,
        max_per_source: usize,
    ) -> Result<(), UnauthenticatedFull> {
        // One lock section: the check and the count together.
        self.group
            .lock()
            .claim_unauthenticated(source, validated, max_total, max_per_source)
    }

    fn hotkey_count(&self) -> usize {
        self.group.lock().hotkey_count()
    }

    fn hotkey_holder(&self, hotkey: &str) -> Option<HotkeyHolder> {
        self.group.lock().hotkey_holder(hotkey)
    }

    fn claim_hotkey(
        &mut self,
        hotkey: &str,
        holder: HotkeyHolder,
        max: usize,
    ) -> Result<Option<HotkeyHolder>, TableFull> {
        // One lock section: the table check and the registration together.
        self.group.lock().claim_hotkey(hotkey, holder, max)
    }

    fn release_hotkey(&mut self, hotkey: &str, holder: HotkeyHolder) {
        self.group.lock().release_hotkey(hotkey, holder);
    }

    fn close_elsewhere(&mut self, holder: HotkeyHolder, hotkey: &str) {
        if let Some(member) = self.group.members.get(usize::from(holder.endpoint())) {
            member.send(Command::CloseReplaced {
                holder,
                hotkey: hotkey.to_string(),
            });
        }
    }

    fn try_reserve(
        &mut self,
        conn_used: &mut u64,
        conn_small: &mut u64,
        authenticated: bool,
        bytes: u64,
    ) -> Result<Reservation, Shortfall> {
        self.group
            .lock()
            .try_reserve(conn_used, conn_small, authenticated, bytes)
    }

    fn release(&mut self, conn: Option<(&mut u64, &mut u64)>, reservation: Reservation) {
        self.group.lock().release(conn, reservation);
    }

    fn reserved_bytes(&self) -> u64 {
        self.group.lock().reserved_bytes()
    }

    fn queued_total(&self) -> u64 {
        self.group.queued_total.load(Ordering::Relaxed)
    }

    fn account_queued(&mut self, before: u64, after: u64) {
        let total = &self.group.queued_total;
        if after >= before {
            total.fetch_add(after - before, Ordering::Relaxed);
        } else {
            // Saturating, as a single endpoint's count is: a total that wrapped below
            // zero would read as a huge backlog and hold every request back.
            let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(before - after))
            });
        }
    }

    fn freed(&mut self) {
        for (i, member) in self.group.members.iter().enumerate() {
            if i != self.index
                && member.waiting_for_total.load(Ordering::Acquire)
                && !member.nudge_pending.swap(true, Ordering::AcqRel)
            {
                member.send(Command::Nudge);
            }
        }
    }

    fn set_waiting_for_total(&mut self, waiting: bool) {
        if let Some(me) = self.group.members.get(self.index) {
            me.waiting_for_total.store(waiting, Ordering::Release);
        }
    }
}
