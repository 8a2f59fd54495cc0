//! Sleeping and waking across the shared region.
//!
//! Side `i` sleeps on `bells[i]`. The protocol is an event count:
//!
//! - the sleeper reads `seq`, sets its `waiting` bits, issues a `SeqCst`
//!   fence, re-checks its condition, and only then sleeps while `seq` is
//!   unchanged;
//! - the waker publishes (head or tail store), issues a `SeqCst` fence, and
//!   only if `waiting` is set swaps it to 0, bumps `seq` and rings the
//!   doorbell the sleeper named (futex wake or a byte on the socket).
//!
//! The two fences order "publish, then look for a sleeper" against
//! "announce, then look for data": either the waker sees the announcement,
//! or the sleeper sees the data. A writer therefore pays a system call only
//! when its reader actually sleeps.
//!
//! A hostile peer can clear our `waiting` bits or never ring; that is no
//! worse than a peer that never sends, and its death still shows (on the
//! socket, or on Windows through its process handle).
//!
//! The doorbell itself ([`Door`]) is platform code: a futex on `seq` on
//! Linux, a pair of auto-reset events on Windows (see `crate::sys`).

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use crate::layout::{Bell, CLOSED_GONE, WAIT_FUTEX, WAIT_SOCKET};
use crate::region::Region;
use crate::sync::{fence, Ordering};
use crate::sys::door::Door;

/// This side's and the peer's bells in a region.
#[derive(Debug, Clone)]
pub(crate) struct Bells {
    /// Keeps the memory behind `mine` and `peer` alive.
    _region: Arc<Region>,
    /// `&region.ctl().bells[me]` and `[1 - me]`, resolved once.
    mine: NonNull<Bell>,
    peer: NonNull<Bell>,
    /// How this side sleeps and wakes the peer.
    door: Door,
}

// SAFETY: the pointers point into `_region`'s control block, which is Send +
// Sync and kept alive by the Arc; they are only read as `&Bell` (atomics).
// `Door` is Send + Sync itself.
unsafe impl Send for Bells {}
// SAFETY: as above.
unsafe impl Sync for Bells {}

impl Bells {
    pub(crate) fn new(region: Arc<Region>, me: usize, door: Door) -> Bells {
        let bells = &region.ctl().bells;
        let mine = NonNull::from(&bells[me].0);
        let peer = NonNull::from(&bells[1 - me].0);
        Bells {
            _region: region,
            mine,
            peer,
            door,
        }
    }

    /// The doorbell of this side.
    #[allow(dead_code)]
    pub(crate) fn door(&self) -> &Door {
        &self.door
    }

    /// The bell this side sleeps on.
    #[inline]
    pub(crate) fn mine(&self) -> &Bell {
        // SAFETY: points into the control block of `_region`, alive as long
        // as `self`; a `Bell` holds only atomics.
        unsafe { self.mine.as_ref() }
    }

    /// The bell the peer sleeps on.
    #[inline]
    pub(crate) fn peer(&self) -> &Bell {
        // SAFETY: as in `mine`.
        unsafe { self.peer.as_ref() }
    }

    /// Announces that this side is about to sleep on `how`
    /// ([`WAIT_FUTEX`] or [`WAIT_SOCKET`]); returns the sequence number to
    /// sleep on. The caller must re-check its condition afterwards and sleep
    /// only if it still does not hold.
    pub(crate) fn prepare_sleep(&self, how: u32) -> u32 {
        let bell = self.mine();
        // Read the sequence number before announcing: a wake-up that consumes
        // this announcement bumps `seq` after our read, so the sleep that
        // follows returns at once instead of waiting for a wake-up that the
        // cleared announcement will never get.
        // SYNC POINT with the Release `seq` increment in `ring_peer`: a wake-up
        // we read here published its data before it.
        let seq = bell.seq.load(Ordering::Acquire);
        bell.waiting.fetch_or(how, Ordering::SeqCst);
        // SYNC POINT with the fence in `ring_peer`: either the peer's load of
        // `waiting` sees our announcement, or our re-check after this fence
        // sees what the peer published before its fence.
        fence(Ordering::SeqCst);
        seq
    }

    /// After publishing data or freeing space: wakes the peer if it sleeps.
    /// Returns which doorbells to ring (the futex is rung here; the caller
    /// sends the socket byte, if [`WAIT_SOCKET`] is set).
    #[must_use]
    #[inline]
    pub(crate) fn ring_peer(&self) -> u32 {
        // SYNC POINT with the fence in `prepare_sleep` (see there).
        fence(Ordering::SeqCst);
        if self.peer().waiting.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.wake_peer()
    }

    /// The peer has announced that it sleeps: takes the announcement and
    /// wakes it (see [`Self::ring_peer`]).
    #[cold]
    #[inline(never)]
    fn wake_peer(&self) -> u32 {
        let bell = self.peer();
        let how = bell.waiting.swap(0, Ordering::AcqRel);
        if how == 0 {
            return 0;
        }
        // SYNC POINT with the Acquire `seq` load in `prepare_sleep`.
        bell.seq.fetch_add(1, Ordering::Release);
        if how & WAIT_FUTEX != 0 {
            self.door.wake_peer(bell);
        }
        how & WAIT_SOCKET
    }

    /// Wakes this side's own sleepers (to stop a waiting thread).
    #[allow(dead_code)]
    pub(crate) fn ring_self(&self) {
        let bell = self.mine();
        bell.seq.fetch_add(1, Ordering::Release);
        self.door.wake_self(bell);
    }

    /// Sleeps on this side's doorbell while its sequence number is `seq`, at
    /// most `timeout`. Returns `true` when the caller should check that the
    /// peer lives (the timeout expired, or the peer's process ended).
    pub(crate) fn sleep(&self, seq: u32, timeout: Option<Duration>) -> bool {
        self.door.wait(self.mine(), seq, timeout)
    }

    /// Marks this side closed (`CLOSED_WRITE` or `CLOSED_GONE`); the caller
    /// then rings the peer.
    pub(crate) fn close(&self, how: u32) {
        // SYNC POINT with the Acquire load in `peer_closed`: every record we
        // published before closing is visible to the peer once it sees this.
        self.mine().closed.fetch_or(how, Ordering::Release);
    }

    /// The peer's closed bits.
    #[inline]
    pub(crate) fn peer_closed(&self) -> u32 {
        // SYNC POINT with the Release in `close`.
        self.peer().closed.load(Ordering::Acquire)
    }

    /// Whether the peer has dropped the connection.
    #[inline]
    pub(crate) fn peer_gone(&self) -> bool {
        self.peer_closed() & CLOSED_GONE != 0
    }
}
