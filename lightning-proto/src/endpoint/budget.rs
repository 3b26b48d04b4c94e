//! How many request bytes the server may be receiving at once.
//!
//! A request frame declares its length in its 5-byte header. The server reserves that
//! length before it reads the payload and releases it when the frame is complete (or the
//! stream goes away). A stream whose frame does not fit is simply not read: its bytes wait
//! in QUIC's receive buffers, which flow control bounds, and the sender slows down. Because
//! a frame only starts once its whole length is reserved, every started frame can finish,
//! so honest requests never deadlock on the budget.
//!
//! Authenticated and unauthenticated connections draw from separate pools, so a flood of
//! connections that never authenticate cannot starve validators' requests. Validators'
//! small frames (up to [`SMALL_FRAME`]) may also draw from a reserve of their own when
//! the main pool is full, one frame per connection at a time: a few peers that hold the
//! whole pool with large frames they send slowly cannot stall everyone's small requests
//! while the minimum-rate rule catches up with them.

/// Largest frame that may use the small-frame reserve.
pub(crate) const SMALL_FRAME: u64 = 1024 * 1024;

/// Which pool a reservation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Authenticated,
    Unauthenticated,
    SmallReserve,
}

/// Which limit a frame did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// Its connection's share is in use: only a release on that connection helps.
    Connection,
    /// The pool's total is in use: a release on any connection may help.
    Total,
}

/// Bytes held for one frame in progress; given back with
/// [`SharedLimits::release`](super::SharedLimits::release).
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    bytes: u64,
    pool: Pool,
}

#[derive(Debug)]
struct Limits {
    per_connection: u64,
    total: u64,
    used: u64,
}

impl Limits {
    /// A frame fits if it stays within both limits, or if the level it would overflow has
    /// nothing reserved: one frame of the largest allowed size must always be able to start.
    fn fits(&self, conn_used: u64, bytes: u64) -> Result<(), Shortfall> {
        if conn_used != 0 && conn_used.saturating_add(bytes) > self.per_connection {
            return Err(Shortfall::Connection);
        }
        if self.used != 0 && self.used.saturating_add(bytes) > self.total {
            return Err(Shortfall::Total);
        }
        Ok(())
    }
}

/// The server's request-byte budget (see the module docs).
#[derive(Debug)]
pub(crate) struct ReadBudget {
    authenticated: Limits,
    unauthenticated: Limits,
    small: Limits,
}

impl ReadBudget {
    pub(crate) fn new(
        per_connection: u64,
        total: u64,
        unauth_per_connection: u64,
        unauth_total: u64,
        small_reserve: u64,
    ) -> Self {
        Self {
            small: Limits {
                per_connection: SMALL_FRAME,
                total: small_reserve,
                used: 0,
            },
            authenticated: Limits {
                per_connection,
                total,
                used: 0,
            },
            unauthenticated: Limits {
                per_connection: unauth_per_connection,
                total: unauth_total,
                used: 0,
            },
        }
    }

    /// Reserves `bytes` for a frame on a connection that has `conn_used` reserved already
    /// in the main pools and `conn_small` in the small-frame reserve (the one the
    /// reservation comes from is updated); the limit it does not fit otherwise.
    pub(crate) fn try_reserve(
        &mut self,
        conn_used: &mut u64,
        conn_small: &mut u64,
        authenticated: bool,
        bytes: u64,
    ) -> Result<Reservation, Shortfall> {
        match self.try_reserve_in(conn_used, authenticated, bytes) {
            Err(Shortfall::Total) if authenticated && bytes <= SMALL_FRAME => {
                // One frame per connection at a time, within the reserve's total.
                let small = &mut self.small;
                if *conn_small != 0 || small.used.saturating_add(bytes) > small.total {
                    return Err(Shortfall::Total);
                }
                small.used += bytes;
                *conn_small += bytes;
                Ok(Reservation {
                    bytes,
                    pool: Pool::SmallReserve,
                })
            }
            other => other,
        }
    }

    fn try_reserve_in(
        &mut self,
        conn_used: &mut u64,
        authenticated: bool,
        bytes: u64,
    ) -> Result<Reservation, Shortfall> {
        let pool = if authenticated {
            Pool::Authenticated
        } else {
            Pool::Unauthenticated
        };
        let limits = self.limits(pool);
        limits.fits(*conn_used, bytes)?;
        limits.used += bytes;
        *conn_used += bytes;
        Ok(Reservation { bytes, pool })
    }

    /// Gives a reservation back; `conn` is its connection's (main, small-reserve) counts,
    /// if the connection still exists.
    pub(crate) fn release(&mut self, conn: Option<(&mut u64, &mut u64)>, reservation: Reservation) {
        let pool = reservation.pool;
        let limits = self.limits(pool);
        limits.used = limits.used.saturating_sub(reservation.bytes);
        if let Some((used, small)) = conn {
            let count = if pool == Pool::SmallReserve {
                small
            } else {
                used
            };
            *count = count.saturating_sub(reservation.bytes);
        }
    }

    /// Bytes reserved now, over all pools.
    pub(crate) fn in_use(&self) -> u64 {
        self.authenticated.used + self.unauthenticated.used + self.small.used
    }

    fn limits(&mut self, pool: Pool) -> &mut Limits {
        match pool {
            Pool::Authenticated => &mut self.authenticated,
            Pool::Unauthenticated => &mut self.unauthenticated,
            Pool::SmallReserve => &mut self.small,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limit_holds_but_one_frame_always_starts() {
        let mut budget = ReadBudget::new(100, 1000, 10, 100, 0);
        let mut conn = 0;
        let Ok(big) = budget.try_reserve(&mut conn, &mut 0, true, 500) else {
            panic!("an idle connection may start a frame over its limit");
        };
        assert_eq!(
            budget.try_reserve(&mut conn, &mut 0, true, 1),
            Err(Shortfall::Connection)
        );
        budget.release(Some((&mut conn, &mut 0)), big);
        assert_eq!(conn, 0);
        assert!(budget.try_reserve(&mut conn, &mut 0, true, 60).is_ok());
        assert!(budget.try_reserve(&mut conn, &mut 0, true, 40).is_ok());
        assert_eq!(
            budget.try_reserve(&mut conn, &mut 0, true, 1),
            Err(Shortfall::Connection)
        );
        assert_eq!(budget.in_use(), 100);
    }

    #[test]
    fn total_limit_spans_connections_and_pools_are_separate() {
        let mut budget = ReadBudget::new(100, 150, 10, 20, 0);
        let (mut c1, mut c2, mut c3) = (0, 0, 0);
        assert!(budget.try_reserve(&mut c1, &mut 0, true, 100).is_ok());
        assert!(budget.try_reserve(&mut c2, &mut 0, true, 50).is_ok());
        assert_eq!(
            budget.try_reserve(&mut c3, &mut 0, true, 1),
            Err(Shortfall::Total),
            "total reached"
        );
        // The unauthenticated pool is untouched by validators' requests, and vice versa.
        assert!(budget.try_reserve(&mut c3, &mut 0, false, 10).is_ok());
        assert_eq!(
            budget.try_reserve(&mut c3, &mut 0, false, 1),
            Err(Shortfall::Connection),
            "its connection limit"
        );
        let mut c4 = 0;
        assert!(budget.try_reserve(&mut c4, &mut 0, false, 10).is_ok());
        let mut c5 = 0;
        assert_eq!(
            budget.try_reserve(&mut c5, &mut 0, false, 1),
            Err(Shortfall::Total),
            "its total"
        );
        assert_eq!(budget.in_use(), 170);
    }

    #[test]
    fn release_without_connection_frees_the_pool() {
        let mut budget = ReadBudget::new(100, 100, 10, 10, 0);
        let mut conn = 0;
        let r = budget.try_reserve(&mut conn, &mut 0, true, 80);
        assert!(r.is_ok());
        if let Ok(r) = r {
            budget.release(None, r);
        }
        assert_eq!(budget.in_use(), 0);
        let mut other = 0;
        assert!(budget.try_reserve(&mut other, &mut 0, true, 100).is_ok());
    }
}

#[cfg(test)]
mod small_reserve_tests {
    use super::*;

    #[test]
    fn small_frames_fall_back_to_the_reserve_one_per_connection() {
        let mut budget = ReadBudget::new(100, 100, 10, 10, 2 * SMALL_FRAME);
        let (mut hog, mut hog_small) = (0, 0);
        assert!(budget
            .try_reserve(&mut hog, &mut hog_small, true, 100)
            .is_ok());
        // The pool is full: a small frame from another validator uses the reserve...
        let (mut a, mut a_small) = (0, 0);
        let r = budget.try_reserve(&mut a, &mut a_small, true, 1000);
        let Ok(r) = r else {
            panic!("small frame refused: {r:?}");
        };
        assert_eq!((a, a_small), (0, 1000));
        // ...one at a time per connection, and never a large one or an unauthenticated one.
        assert_eq!(
            budget.try_reserve(&mut a, &mut a_small, true, 10),
            Err(Shortfall::Total)
        );
        let (mut b, mut b_small) = (0, 0);
        assert_eq!(
            budget.try_reserve(&mut b, &mut b_small, true, SMALL_FRAME + 1),
            Err(Shortfall::Total)
        );
        budget.release(Some((&mut a, &mut a_small)), r);
        assert_eq!((a, a_small), (0, 0));
        assert_eq!(budget.in_use(), 100);
    }
}
