//! Receive buffers for large datagrams, recycled once QUIC lets go of them.
//!
//! Each received datagram is copied out of the socket's batch buffer into a buffer of its
//! own, because quinn keeps stream data as slices of the datagram it came in: one buffer
//! per datagram bounds what a retained chunk can pin (a shared batch buffer would let one
//! chunk pin the whole batch). Towards a loopback peer packets grow to 64 KiB (path MTU
//! discovery, `LOOPBACK_MAX_UDP_PAYLOAD`), and 64 KiB buffers allocated fresh for every
//! datagram made glibc grow and trim its heap over and over: a miner reading 1 MB
//! requests at c=4 took ~230 page faults per request, 88% of them in this copy.
//!
//! [`RecvSlots`] keeps up to [`SLOTS`] buffers of 64 KiB for datagrams of
//! [`SLOTTED_MIN_BYTES`] and more. A datagram goes into the first buffer quinn has
//! dropped every slice of (reclaimed in place, no allocation): taking the lowest free one,
//! not the next in a ring, reuses the same few buffers while they are still in the CPU
//! cache (a ring cycled 4 MiB; the change gave 12% more 1 MB requests/s at c=4 and c=16,
//! two processes). If every buffer is still held (stream chunks not read yet), one is
//! left to its holder and a new one takes its place. So a buffer never holds more than
//! one datagram, at most [`SLOT_BYTES`] / [`SLOTTED_MIN_BYTES`] times its size, and the
//! memory kept idle is bounded: [`SLOTS`] x [`SLOT_BYTES`], allocated only once large
//! datagrams arrive. Smaller datagrams (every one on an Ethernet path) are allocated
//! exactly as before: the allocator's caches serve those sizes without growing its heap.

use bytes::BytesMut;

/// Room in one slot: the largest UDP payload.
pub(crate) const SLOT_BYTES: usize = 64 * 1024;

/// Buffers kept: 4 MiB at most per endpoint socket, enough for several 1 MB requests and
/// answers in flight.
pub(crate) const SLOTS: usize = 64;

/// Datagrams shorter than this get a buffer of their exact size, as before.
pub(crate) const SLOTTED_MIN_BYTES: usize = 8 * 1024;

/// Recycled datagram buffers (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct RecvSlots {
    /// Each slot's handle on its buffer: empty, pointing just past the last datagram it
    /// was given, sharing the allocation with that datagram until quinn drops it.
    ring: Vec<BytesMut>,
    /// The slot replaced next when every buffer is held (round robin).
    next: usize,
}

impl RecvSlots {
    /// `datagram` copied into a buffer of its own.
    pub(crate) fn copy(&mut self, datagram: &[u8]) -> BytesMut {
        if !(SLOTTED_MIN_BYTES..=SLOT_BYTES).contains(&datagram.len()) {
            return BytesMut::from(datagram);
        }
        // The lowest slot whose buffer nothing holds any more: reusing the same few
        // buffers keeps them in the CPU cache.
        let free = self
            .ring
            .iter_mut()
            .position(|slot| slot.try_reclaim(SLOT_BYTES));
        let index = match free {
            Some(index) => index,
            None if self.ring.len() < SLOTS => {
                self.ring.push(BytesMut::with_capacity(SLOT_BYTES));
                self.ring.len() - 1
            }
            None => {
                // Every buffer is still held: leave one to its holder, start a new one.
                let index = self.next;
                self.next = (self.next + 1) % SLOTS;
                self.ring[index] = BytesMut::with_capacity(SLOT_BYTES);
                index
            }
        };
        let slot = &mut self.ring[index];
        slot.extend_from_slice(datagram);
        slot.split_to(datagram.len())
    }

    /// Slots allocated so far.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_buffer_is_reused_by_the_next_large_datagram() {
        let mut slots = RecvSlots::default();
        let first = slots.copy(&[1; 60_000]);
        let at = first.as_ptr();
        assert_eq!(&first[..], &[1; 60_000][..]);
        drop(first);
        let again = slots.copy(&[3; SLOT_BYTES]);
        assert_eq!(again.as_ptr(), at, "the freed buffer was not reused");
        assert_eq!(&again[..], &[3; SLOT_BYTES][..]);
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn a_held_datagram_is_never_overwritten() {
        let mut slots = RecvSlots::default();
        // A frozen slice of the datagram, as quinn keeps stream data.
        let held = slots.copy(&[7; 20_000]).freeze().slice(100..900);
        for i in 0..3 * SLOTS {
            let d = slots.copy(&[(i % 251) as u8; 65_507]);
            assert_eq!(d.len(), 65_507);
        }
        assert_eq!(&held[..], &[7; 800][..]);
        // Each datagram above was dropped before the next: one buffer served them all.
        assert_eq!(slots.len(), 2);
    }

    #[test]
    fn buffers_stay_bounded_while_every_one_is_held() {
        let mut slots = RecvSlots::default();
        let held: Vec<_> = (0..3 * SLOTS)
            .map(|i| slots.copy(&[(i % 251) as u8; 9_000]).freeze())
            .collect();
        for (i, d) in held.iter().enumerate() {
            assert_eq!(&d[..], &[(i % 251) as u8; 9_000][..], "datagram {i}");
        }
        assert_eq!(slots.len(), SLOTS);
    }

    #[test]
    fn small_datagrams_get_buffers_of_their_own() {
        let mut slots = RecvSlots::default();
        let packet = slots.copy(&[1; SLOTTED_MIN_BYTES - 1]);
        assert_eq!(packet.len(), SLOTTED_MIN_BYTES - 1);
        assert_eq!(slots.len(), 0);
    }
}
