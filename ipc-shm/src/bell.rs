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
//! On Linux the waker's fence, paid on every message, can go: a blocking
//! connection that spins before it sleeps (so it sleeps rarely) follows
//! its fence with a process-wide barrier
//! (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`),
//! which makes every CPU running a thread of a registered process execute
//! a full barrier, and says so in its bell ([`BARRIER_ON_SLEEP`]). A waker
//! whose process is registered then needs only a compiler fence: if its
//! look at `waiting` came before the barrier reached its CPU, the barrier
//! made its earlier stores visible before the sleeper's re-check; if after,
//! the announcement was visible before the barrier started. The 64 B round
//! trip of the blocking API is 3-4% shorter and a stream of 64 B messages
//! 40-60% faster; a sleep costs a system call and an interrupt of the CPUs
//! running registered processes. An async transport parks too often for
//! that: with `async_spin(20 us)` on both sides, making the barrier at each
//! park took one-at-a-time JSON-RPC calls from 45-50k to 29-41k a second
//! and a 64 B stream from 16 to 11 million messages a second, so it keeps
//! the fences for its own sleeps (and wakes a blocking peer without one).
//! Elsewhere (and under Miri and loom) both sides use the fences.
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

use std::sync::atomic::{compiler_fence, AtomicBool};

use crate::layout::{Bell, BARRIER_ON_SLEEP, CLOSED_GONE, EARLY_WAKE, WAIT_FUTEX, WAIT_SOCKET};
use crate::region::Region;
use crate::sync::{fence, Ordering};
use crate::sys::door::Door;

/// This side's and the peer's bells in a region.
#[derive(Debug)]
pub(crate) struct Bells {
    /// Keeps the memory behind `mine` and `peer` alive.
    _region: Arc<Region>,
    /// `&region.ctl().bells[me]` and `[1 - me]`, resolved once.
    mine: NonNull<Bell>,
    peer: NonNull<Bell>,
    /// How this side sleeps and wakes the peer.
    door: Door,
    /// This process receives process-wide barriers: when the peer makes
    /// them, waking it needs no fence.
    registered: bool,
    /// This side makes a process-wide barrier when it announces a sleep
    /// (and says so in its bell).
    barrier_on_sleep: AtomicBool,
}

// SAFETY: the pointers point into `_region`'s control block, which is Send +
// Sync and kept alive by the Arc; they are only read as `&Bell` (atomics).
// `Door` is Send + Sync itself.
unsafe impl Send for Bells {}
// SAFETY: as above.
unsafe impl Sync for Bells {}

impl Bells {
    /// Side `me`'s bells. `spins`: this side is a blocking one that spins
    /// before it sleeps, so it sleeps rarely enough to pay for a
    /// process-wide barrier each time, where the platform has them (see the
    /// module docs), and it spins on for an announced message (so the peer
    /// wakes it early, [`Bell::early_wake`]).
    pub(crate) fn new(region: Arc<Region>, me: usize, door: Door, spins: bool) -> Bells {
        let bells = &region.ctl().bells;
        let mine = NonNull::from(&bells[me].0);
        let peer = NonNull::from(&bells[1 - me].0);
        if spins {
            // Before this side first sleeps; a hint the peer may read at any
            // time (reading 0, it rings only once a message is in).
            bells[me].0.early_wake.store(EARLY_WAKE, Ordering::Relaxed);
        }
        let registered = Door::register_barrier();
        let barrier_on_sleep = registered && spins;
        if barrier_on_sleep {
            // Before this side first sleeps. The peer may read it at any
            // time: a peer that reads 0 keeps its fence, which is always
            // enough.
            bells[me]
                .0
                .barrier
                .store(BARRIER_ON_SLEEP, Ordering::Relaxed);
        }
        Bells {
            _region: region,
            mine,
            peer,
            door,
            registered,
            barrier_on_sleep: AtomicBool::new(barrier_on_sleep),
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
        // SYNC POINT with the compiler fence in `ring_peer` (module docs): the
        // barrier orders the peer's publishing before its look at `waiting`.
        if self.barrier_on_sleep.load(Ordering::Relaxed) && !self.door.barrier() {
            self.stop_barriers();
        }
        seq
    }

    /// The process-wide barrier failed (it cannot once registered; this is
    /// for a kernel that says otherwise): stop announcing it. A wake-up the
    /// peer sent without a fence while this happened can be missed; the
    /// sleep then ends at the next liveness check.
    #[cold]
    #[inline(never)]
    fn stop_barriers(&self) {
        tracing::warn!(
            "membarrier failed: wake-ups of this shared-memory connection fall back to fences"
        );
        self.barrier_on_sleep.store(false, Ordering::Relaxed);
        self.mine().barrier.store(0, Ordering::Relaxed);
    }

    /// After publishing data or freeing space: wakes the peer if it sleeps.
    /// Returns which doorbells to ring (the futex is rung here; the caller
    /// sends the socket byte, if [`WAIT_SOCKET`] is set).
    #[must_use]
    #[inline]
    pub(crate) fn ring_peer(&self) -> u32 {
        let peer = self.peer();
        if self.registered && peer.barrier.load(Ordering::Relaxed) == BARRIER_ON_SLEEP {
            // SYNC POINT with the process-wide barrier in the peer's
            // `prepare_sleep` (module docs): it stands in for our fence.
            compiler_fence(Ordering::SeqCst);
        } else {
            // SYNC POINT with the fence in `prepare_sleep` (see there).
            fence(Ordering::SeqCst);
        }
        if peer.waiting.load(Ordering::Relaxed) == 0 {
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

    /// Tells the peer that our ring will reach position `end` once the
    /// message we are about to copy in is there (see [`Bell::writing`]).
    #[inline]
    pub(crate) fn announce_writing(&self, end: u64) {
        // A hint only: the peer reads the message through its header word.
        self.mine().writing.store(end, Ordering::Relaxed);
    }

    /// Whether the peer spins on for an announced message, so that waking
    /// it when the message is announced pays (see [`Bell::early_wake`]).
    #[inline]
    pub(crate) fn peer_wakes_early(&self) -> bool {
        self.peer().early_wake.load(Ordering::Relaxed) == EARLY_WAKE
    }

    /// Whether the peer has announced a message that its ring has not
    /// brought to position `tail` yet: it is still copying it in, or it is
    /// in and not taken. A hint; the peer may set any value.
    #[inline]
    pub(crate) fn peer_writing_past(&self, tail: u64) -> bool {
        self.peer().writing.load(Ordering::Relaxed) > tail
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::{Line, CLIENT, MIN_RING_CAPACITY, SERVER};
    use crate::sync::AtomicU64;

    /// The store-buffering test of the protocol, many times over: one side
    /// publishes and rings, the other announces a sleep and re-checks, both
    /// starting together, with the offset between them swept over a few
    /// hundred nanoseconds. In every round the sleeper must see the data or
    /// be rung. Run with the process-wide barrier made by the sleeper (on
    /// Linux) and without it (fences on both sides).
    #[test]
    fn a_sleeper_sees_the_data_or_is_rung() {
        let rounds: u64 = if cfg!(miri) { 50 } else { 20_000 };
        for barrier in [true, false] {
            let region = Arc::new(Region::heap(MIN_RING_CAPACITY));
            let (a, b) = Door::pair_in_process().unwrap();
            let waker = Bells::new(region.clone(), CLIENT, a, barrier);
            let sleeper = Bells::new(region.clone(), SERVER, b, barrier);
            if cfg!(all(target_os = "linux", not(miri))) {
                let flag = sleeper.mine().barrier.load(Ordering::Relaxed);
                assert_eq!(flag == BARRIER_ON_SLEEP, barrier);
            }
            // What the waker publishes: on a line of its own.
            let data: &AtomicU64 = &region.ctl().rings[0].head.0;
            // Lines the sleeper reads and the waker writes before `data`, as a
            // payload is written before its record's header: stores waiting
            // for those lines hold `data` back, which widens the window where
            // a missing fence shows.
            let payload: Vec<Line<AtomicU64>> = (0..8).map(|_| Line(AtomicU64::new(0))).collect();
            // Meeting k: both sides bump it, then wait for the other.
            let start = AtomicU64::new(0);
            let meet = |k: u64| {
                start.fetch_add(1, Ordering::AcqRel);
                while start.load(Ordering::Acquire) < 2 * k {
                    std::hint::spin_loop();
                }
            };
            let delay = |n: u64| {
                for _ in 0..n {
                    std::hint::spin_loop();
                }
            };
            let lost = std::thread::scope(|s| {
                s.spawn(|| {
                    for round in 1..=rounds {
                        meet(2 * round - 1);
                        delay(round % 16);
                        for line in &payload {
                            line.0.store(round, Ordering::Relaxed);
                        }
                        data.store(round, Ordering::Relaxed);
                        let _ = waker.ring_peer();
                        meet(2 * round);
                    }
                });
                let mut lost = 0;
                for round in 1..=rounds {
                    let read: u64 = payload.iter().map(|l| l.0.load(Ordering::Relaxed)).sum();
                    std::hint::black_box(read);
                    meet(2 * round - 1);
                    delay(round / 16 % 16);
                    let seq = sleeper.prepare_sleep(WAIT_FUTEX);
                    let seen = data.load(Ordering::Relaxed) == round;
                    // Once the waker has rung (or not) for this round.
                    meet(2 * round);
                    let rung = sleeper.mine().seq.load(Ordering::Acquire) != seq;
                    if !seen && !rung {
                        lost += 1;
                    }
                    sleeper.mine().waiting.store(0, Ordering::Relaxed);
                }
                lost
            });
            assert_eq!(
                lost, 0,
                "barrier {barrier}: {lost} of {rounds} rounds lost their wake-up"
            );
        }
    }
}
