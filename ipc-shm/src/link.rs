//! What both ends of a blocking connection share: the bells, the platform's
//! link to the peer (the bootstrap socket on Unix: liveness and, off Linux,
//! the doorbell; the peer's process handle on Windows) and the wait policy.

use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_core::{Error, Result};

use crate::bell::Bells;
use crate::layout::{WAIT_FUTEX, WAIT_SOCKET};
use crate::region::Region;
use crate::sync::{spin_hint, Ordering};
use crate::sys::door::Door;
use crate::sys::wire::{Wire, BLOCKING_SLEEP};

/// The longest a wait goes on spinning, past its spin time, while `ready`
/// reports the peer busy (see [`Link::wait_until`]): long enough for a
/// message of several megabytes to be copied in, short enough that a peer
/// killed while it copies is noticed soon after (by the liveness check of
/// the sleep that follows).
pub(crate) const BUSY_SPIN: Duration = Duration::from_millis(10);

/// How long to spin before sleeping, and how often a sleeper checks that the
/// peer is alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPolicy {
    pub spin: Duration,
    pub liveness: Duration,
    /// The longest a wait spins on past `spin` while the peer is busy
    /// ([`BUSY_SPIN`] but in tests).
    pub busy_spin: Duration,
}

#[derive(Debug)]
pub(crate) struct Link {
    pub bells: Bells,
    /// The platform's link to the peer; unconnected for a region on the heap
    /// (tests).
    pub wire: Wire,
    pub policy: WaitPolicy,
    /// The peer process is gone (the socket hung up, or its process ended).
    pub hung_up: AtomicBool,
}

impl Link {
    /// One end of a connection whose peer lives in this process (a region on
    /// the heap, for tests and the loom model).
    #[allow(dead_code)]
    pub(crate) fn in_process(
        region: Arc<Region>,
        me: usize,
        door: Door,
        policy: WaitPolicy,
    ) -> Link {
        Link {
            bells: Bells::new(region, me, door, !policy.spin.is_zero()),
            wire: Wire::unconnected(),
            policy,
            hung_up: AtomicBool::new(false),
        }
    }

    /// After publishing data or freeing space: wakes the peer if it sleeps.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.bells.ring_peer() & WAIT_SOCKET != 0 {
            self.wire.send_wake();
        }
    }

    /// Whether the peer has gone (socket hang-up or its closed flag).
    #[inline]
    pub(crate) fn gone(&self) -> bool {
        self.hung_up.load(Ordering::Relaxed) || self.bells.peer_gone()
    }

    /// Calls `ready(gone, quick)` until it returns a value: first at once,
    /// then spinning for the policy's spin time, then sleeping on the
    /// doorbell between calls. `gone` tells `ready` that the peer has died,
    /// so it can return what is left and then an error. `quick` is set for
    /// the spinning calls, where `ready` may look only at what is cheapest
    /// to watch; the first call and the one after announcing a sleep (the
    /// re-check of the bell protocol) have it clear and must look at
    /// everything that could end the wait.
    ///
    /// `ready` sets `busy` when it finds nothing and the peer is copying in a
    /// message for it (see [`crate::layout::Bell::writing`]): the spin then
    /// goes on past its time, and a sleeper woken early by the announcement
    /// spins again, for at most the policy's `busy_spin` in all
    /// ([`BUSY_SPIN`]), so that a message that takes longer to copy in than
    /// the spin time is not met by a sleep and a wake-up (40-65 us on a
    /// virtual machine). Not with a spin of zero.
    ///
    /// `ready` sets `moved` when it took or wrote a piece of a message sent
    /// in pieces without finishing it. The peer is then busy with the same
    /// message: when the spin time runs out and `moved` is set, the wait
    /// clears it and spins again, and a sleeper that finds it set on waking
    /// returns to spinning. A message of many pieces takes longer than one
    /// spin, but its next piece comes sooner than a sleeper wakes up.
    ///
    /// For a receiver, that first full look reads the producer's head (see
    /// `crate::ring`): measured with 64 B round trips between two
    /// processes on an AMD EPYC guest, this cut the blocking API's p50 by
    /// 10% when cache-line transfers were fast and by 20% when they were
    /// slow (on a Xeon guest it cost 2-3% instead), although the head
    /// tells a receiver nothing its spin on the record's word does not. Why
    /// is not established: a fixed pause before spinning gained nothing,
    /// reading a line of the other ring that the peer also writes gained
    /// nothing, and a prefetch of the head's line gained as much as reading
    /// it. What seems to count is that the head's line is in the receiver's
    /// cache when the sender stores the head.
    ///
    /// With a `timeout`, gives up with [`Error::Timeout`] once it has
    /// passed, after a last full look (so a zero timeout still looks once
    /// the way a sleeper would before it gives up). An announcement of a
    /// sleep that is not slept (a timeout, or a piece that moved) stays set:
    /// the peer's next notification then makes one needless wake-up call,
    /// which is cheaper than clearing it safely while the other half of the
    /// connection may be sleeping on the same bell.
    pub(crate) fn wait_until<T>(
        &self,
        timeout: Option<Duration>,
        moved: &Cell<bool>,
        busy: &Cell<bool>,
        mut ready: impl FnMut(bool, bool) -> Result<Option<T>>,
    ) -> Result<T> {
        if let Some(v) = ready(self.gone(), false)? {
            return Ok(v);
        }
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        // The end of a spin that starts at `now`.
        let spin_end = |now: Instant| match deadline {
            Some((d, _)) => (now + self.policy.spin).min(d),
            None => now + self.policy.spin,
        };
        let how = BLOCKING_SLEEP;
        // Whether `ready` reported the peer busy and the spins that adds to
        // this wait (from the first report on) are not over at `now`.
        let mut busy_until = None;
        let mut still_busy = |now: Instant| {
            busy.take() && now < *busy_until.get_or_insert(now + self.policy.busy_spin)
        };
        'spin: loop {
            if cfg!(loom) {
                spin_hint();
            } else if !self.policy.spin.is_zero() {
                let mut spin_until = spin_end(Instant::now());
                let mut n = 0u32;
                loop {
                    if let Some(v) = ready(false, true)? {
                        return Ok(v);
                    }
                    spin_hint();
                    n = n.wrapping_add(1);
                    if n % 32 == 0 {
                        let now = Instant::now();
                        if now >= spin_until {
                            if !(moved.take() || still_busy(now))
                                || deadline.is_some_and(|(d, _)| now >= d)
                            {
                                break;
                            }
                            spin_until = spin_end(now);
                        }
                    }
                }
            }
            loop {
                let seq = self.bells.prepare_sleep(how);
                let gone = self.gone();
                if let Some(v) = ready(gone, false)? {
                    return Ok(v);
                }
                let moving = moved.take();
                // The peer announced a message and is copying it in: spin
                // for it (within the busy spin) rather than sleep, unless
                // this side does not spin at all.
                let busy_now = !gone && !self.policy.spin.is_zero() && still_busy(Instant::now());
                if gone && !moving {
                    // `ready` saw the peer gone and had nothing left to return.
                    return Err(Error::Disconnected);
                }
                // How long this sleep may last: until the next liveness
                // check, or the deadline if that comes first.
                let mut nap = self.policy.liveness;
                if let Some((d, t)) = deadline {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(t));
                    }
                    nap = nap.min(left);
                }
                if moving || busy_now {
                    // A piece came or went, or a message is being copied in:
                    // spin for it.
                    continue 'spin;
                }
                if how == WAIT_FUTEX {
                    let nap = if cfg!(loom) || (!self.wire.is_connected() && deadline.is_none()) {
                        None
                    } else {
                        Some(nap)
                    };
                    if self.bells.sleep(seq, nap) && self.wire.is_connected() {
                        self.wire.check_alive(&self.bells, &self.hung_up);
                    }
                } else {
                    self.wire.wait(Some(nap), &self.bells, &self.hung_up);
                }
            }
        }
    }
}
