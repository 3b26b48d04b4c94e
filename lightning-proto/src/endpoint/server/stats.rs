//! The miner's counters for operators.

/// Counters for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connection attempts refused (caps).
    pub refused: u64,
    /// Retry packets sent.
    pub retried: u64,
    /// Initials dropped by the source allow-list.
    pub ignored: u64,
    /// Handshakes accepted.
    pub handshakes_ok: u64,
    /// Handshakes rejected.
    pub handshakes_rejected: u64,
    /// Requests delivered to the application.
    pub requests: u64,
    /// Requests answered by the server itself with an error string.
    pub request_errors: u64,
    /// Connections closed for not authenticating in time.
    pub auth_timeouts: u64,
    /// Streams reset for not delivering a request in time.
    pub read_timeouts: u64,
    /// Idle validators' connections closed to admit a new validator at `max_connections`.
    pub evicted: u64,
    /// Response streams reset because the validator read none of them in time.
    pub send_timeouts: u64,
    /// Of `refused`: the cap on unauthenticated connections was reached
    /// (`max_unauthenticated_connections`).
    pub refused_unauthenticated: u64,
    /// Of `refused`: the source held its share of unauthenticated connections
    /// (`max_unauthenticated_per_ip`).
    pub refused_per_source: u64,
    /// Of `refused`: `max_connections` validators were held and none could be evicted.
    pub refused_full: u64,
    /// Of `request_errors`: requests naming no registered synapse.
    pub unknown_synapse: u64,
    /// Of `request_errors`: requests on a connection with no authenticated validator.
    pub unauthenticated_requests: u64,
    /// Of `request_errors`: payloads that did not decode as a `SynapsePacket`.
    pub malformed_requests: u64,
}

impl ServerStats {
    /// Adds another endpoint's counters (the drivers of one port are summed this way).
    pub fn add(&mut self, other: &ServerStats) {
        // Destructured so that a new counter cannot be forgotten here.
        let Self {
            accepted,
            refused,
            retried,
            ignored,
            handshakes_ok,
            handshakes_rejected,
            requests,
            request_errors,
            auth_timeouts,
            read_timeouts,
            evicted,
            send_timeouts,
            refused_unauthenticated,
            refused_per_source,
            refused_full,
            unknown_synapse,
            unauthenticated_requests,
            malformed_requests,
        } = other;
        self.accepted += accepted;
        self.refused += refused;
        self.retried += retried;
        self.ignored += ignored;
        self.handshakes_ok += handshakes_ok;
        self.handshakes_rejected += handshakes_rejected;
        self.requests += requests;
        self.request_errors += request_errors;
        self.auth_timeouts += auth_timeouts;
        self.read_timeouts += read_timeouts;
        self.evicted += evicted;
        self.send_timeouts += send_timeouts;
        self.refused_unauthenticated += refused_unauthenticated;
        self.refused_per_source += refused_per_source;
        self.refused_full += refused_full;
        self.unknown_synapse += unknown_synapse;
        self.unauthenticated_requests += unauthenticated_requests;
        self.malformed_requests += malformed_requests;
    }
}
