//! Admission: which connection attempts become connections (source allowlist, Retry,
//! per-IP and global limits, eviction of the longest-idle connection when the table is
//! full) and the transport limits a connection gets once it is authenticated.

use super::*;
use crate::endpoint::shared::UnauthenticatedFull;

/// Why a connection attempt is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `max_unauthenticated_connections` are open.
    Unauthenticated,
    /// The source holds its `max_unauthenticated_per_ip`.
    Source,
    /// `max_connections` validators and none may be evicted.
    Full,
}

impl Server {
    pub(super) fn admit(&mut self, now: Instant, incoming: Incoming) {
        let remote = incoming.remote_address();
        if let Some(allowed) = &self.allowlist {
            if !allowed.contains(&remote.ip()) {
                self.stats.ignored += 1;
                self.core.endpoint.ignore(incoming);
                return;
            }
        }
        let (unauthenticated, from_source) = self.unauthenticated_counts(remote.ip());
        let full = self.limits.hotkey_count() >= self.config.max_connections
            && !self
                .core
                .states()
                .map(|(_, c)| c)
                .any(|c| c.remote == remote)
            && self.eviction_candidate(now, None).is_none();
        let validated = incoming.remote_address_validated();
        let source_full = from_source >= self.config.max_unauthenticated_per_ip;
        if source_full && !validated && incoming.may_retry() {
            // Make the source prove its address before it is counted against its share:
            // Initials with a spoofed address never come back.
            self.send_retry(incoming);
            return;
        }
        if unauthenticated >= self.config.max_unauthenticated_connections {
            return self.refuse_incoming(incoming, Refusal::Unauthenticated);
        }
        if source_full {
            return self.refuse_incoming(incoming, Refusal::Source);
        }
        if full {
            return self.refuse_incoming(incoming, Refusal::Full);
        }
        let want_retry = match self.config.retry {
            RetryPolicy::Always => true,
            RetryPolicy::Never => false,
            RetryPolicy::WhenUnauthenticatedAtLeast(n) => unauthenticated >= n,
        };
        if want_retry && !validated && incoming.may_retry() {
            self.send_retry(incoming);
            return;
        }
        // Counted now, in one step with the check: another endpoint of the group may have
        // taken the last place since the counts above were read.
        let source = source_of(remote.ip());
        if let Err(which) = self.limits.claim_unauthenticated(
            source,
            validated,
            self.config.max_unauthenticated_connections,
            self.config.max_unauthenticated_per_ip,
        ) {
            return self.refuse_incoming(
                incoming,
                match which {
                    UnauthenticatedFull::Total => Refusal::Unauthenticated,
                    UnauthenticatedFull::Source => Refusal::Source,
                },
            );
        }
        self.scratch.clear();
        let quic =
            crate::endpoint::config::is_loopback(remote.ip()).then(|| self.quic_loopback.clone());
        match self
            .core
            .endpoint
            .accept(incoming, now, &mut self.scratch, quic)
        {
            Ok((ch, quic)) => {
                self.stats.accepted += 1;
                // The connection's serial in the table is its `ConnId`: never reused.
                let id = ConnId(self.core.next_serial());
                let conn = self.core.insert(
                    ch,
                    quic,
                    SConn {
                        id,
                        remote,
                        streams: HashMap::new(),
                        hotkeys: Vec::new(),
                        last_progress: now,
                        rate: RequestRate::new(now),
                        validated,
                        reserved: 0,
                        reserved_small: 0,
                        window_extensions: 0,
                        open_streams: 0,
                        queued_out: 0,
                        owed: 0,
                        last_send_progress: now,
                        chunks: ChunkBook::default(),
                        held: Vec::new(),
                        handshake_failed: false,
                        counted_unauthenticated: true,
                    },
                );
                self.deadlines
                    .schedule(now + self.config.handshake_timeout, Deadline::Auth(conn));
                self.drive(now, ch);
            }
            Err(e) => {
                self.limits.count_unauthenticated(source, validated, false);
                if let Some(t) = e.response {
                    let buf = std::mem::take(&mut self.scratch);
                    self.core.push_response(t, &buf);
                    self.scratch = buf;
                }
            }
        }
    }

    /// Refuses a connection attempt (QUIC `CONNECTION_REFUSED`), counting why.
    fn refuse_incoming(&mut self, incoming: Incoming, why: Refusal) {
        self.stats.refused += 1;
        match why {
            Refusal::Unauthenticated => self.stats.refused_unauthenticated += 1,
            Refusal::Source => self.stats.refused_per_source += 1,
            Refusal::Full => self.stats.refused_full += 1,
        }
        self.scratch.clear();
        let t = self.core.endpoint.refuse(incoming, &mut self.scratch);
        let buf = std::mem::take(&mut self.scratch);
        self.core.push_response(t, &buf);
        self.scratch = buf;
    }

    pub(super) fn send_retry(&mut self, incoming: Incoming) {
        self.scratch.clear();
        match self.core.endpoint.retry(incoming, &mut self.scratch) {
            Ok(t) => {
                self.stats.retried += 1;
                let buf = std::mem::take(&mut self.scratch);
                self.core.push_response(t, &buf);
                self.scratch = buf;
            }
            Err(e) => self.core.endpoint.ignore(e.into_incoming()),
        }
    }

    /// The authenticated connection to close so that a new validator can get in when
    /// `max_connections` hotkeys are held, if any may go (the policy of
    /// [`ServerConfig::evict_idle_after`]): only connections with no request stream open
    /// and no request bytes for `evict_idle_after`; among them, hotkeys without a permit
    /// before permitted ones, then connections from the source holding the most, then the
    /// one idle longest. `except` is the connection asking.
    pub(super) fn eviction_candidate(
        &self,
        now: Instant,
        except: Option<ConnectionHandle>,
    ) -> Option<ConnectionHandle> {
        let idle_after = self.config.evict_idle_after?;
        let idle = |c: &SConn| {
            !c.hotkeys.is_empty()
                && c.open_streams == 0
                && now.saturating_duration_since(c.last_progress) >= idle_after
        };
        let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
        for c in self
            .core
            .states()
            .map(|(_, c)| c)
            .filter(|c| !c.hotkeys.is_empty())
        {
            *per_source.entry(source_of(c.remote.ip())).or_default() += 1;
        }
        self.core
            .states()
            .filter(|(ch, c)| Some(*ch) != except && idle(c))
            .min_by_key(|(_, c)| {
                let permitted = c.hotkeys.iter().any(|h| self.permits.contains(h));
                let share = per_source
                    .get(&source_of(c.remote.ip()))
                    .copied()
                    .unwrap_or(0);
                (permitted, std::cmp::Reverse(share), c.last_progress)
            })
            .map(|(ch, _)| ch)
    }

    /// Closes an idle connection to make room (reason `evicted`); its hotkeys stop
    /// counting at once.
    pub(super) fn evict(&mut self, now: Instant, ch: ConnectionHandle) {
        if let (Some(c), Some(holder)) = (self.core.state(ch), self.holder_of(ch)) {
            tracing::debug!(remote = %c.remote, hotkeys = ?c.hotkeys, "evicting an idle validator");
            for hk in &c.hotkeys {
                self.limits.release_hotkey(hk, holder);
            }
        }
        self.stats.evicted += 1;
        self.close_quic(now, ch, b"evicted");
    }

    /// All unauthenticated connections (over the group, when endpoints share a port),
    /// and those of them with a proven address from `ip`'s source (the address itself for
    /// IPv4, its /64 for IPv6).
    pub(super) fn unauthenticated_counts(&self, ip: IpAddr) -> (usize, usize) {
        self.limits.unauthenticated(source_of(ip))
    }

    /// Connection `ch` no longer counts as unauthenticated (it authenticated or closed).
    pub(super) fn uncount_unauthenticated(&mut self, ch: ConnectionHandle) {
        if let Some(c) = self.core.state_mut(ch) {
            uncount(self.limits.as_mut(), c);
        }
    }

    /// Lifts the unauthenticated limits of a connection that has just authenticated.
    pub(super) fn raise_limits(&mut self, ch: ConnectionHandle) {
        if let Some(conn) = self.core.conn_mut(ch) {
            conn.set_max_concurrent_streams(
                Dir::Bi,
                VarInt::from_u32(self.config.max_concurrent_bidi_streams),
            );
        }
        self.apply_window(ch);
    }
}

/// Connection `c` stops counting among the unauthenticated connections, if it did.
pub(super) fn uncount(limits: &mut dyn SharedLimits, c: &mut SConn) {
    if std::mem::take(&mut c.counted_unauthenticated) {
        limits.count_unauthenticated(source_of(c.remote.ip()), c.validated, false);
    }
}

/// The unit that per-source limits count in: an IPv4 address (IPv4-mapped IPv6 included),
/// or the /64 of an IPv6 address, the usual allocation to one host or site.
pub(super) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}
