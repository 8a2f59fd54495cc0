//! The doorbell on Unix: the futex on `Bell::seq` on Linux (shared, not
//! process-private, since the other process waits on the same physical
//! page); elsewhere sleepers wait on the socket, so the door only naps.

use std::time::Duration;

use crate::layout::Bell;

/// Sleeping and waking on a bell. Stateless on Unix: the futex word lives in
/// the shared region.
#[derive(Debug, Clone, Default)]
pub(crate) struct Door;

impl Door {
    /// The doors of two ends in one process (a region on the heap in tests).
    #[allow(dead_code)]
    pub(crate) fn pair_in_process() -> std::io::Result<(Door, Door)> {
        Ok((Door, Door))
    }

    /// Sleeps while `bell.seq` is `seq`, at most `timeout`. Returns `true`
    /// when the timeout expired.
    pub(crate) fn wait(&self, bell: &Bell, seq: u32, timeout: Option<Duration>) -> bool {
        imp::wait(bell, seq, timeout)
    }

    /// Wakes the peer sleeping on `bell` (its bell).
    pub(crate) fn wake_peer(&self, bell: &Bell) {
        imp::wake(bell);
    }

    /// Wakes this side's own sleepers on `bell` (its own bell).
    pub(crate) fn wake_self(&self, bell: &Bell) {
        imp::wake(bell);
    }

    /// Registers this process for process-wide memory barriers (see
    /// [`Self::barrier`]); returns whether it is registered. Linux 4.16 or
    /// later: `membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)`.
    /// Registering again is harmless.
    pub(crate) fn register_barrier() -> bool {
        imp::register_barrier()
    }

    /// Makes every CPU that runs a thread of a registered process (see
    /// [`Self::register_barrier`]) execute a full memory barrier before
    /// this returns, and one on this thread; `false` if that failed.
    /// Linux: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`.
    pub(crate) fn barrier(&self) -> bool {
        imp::barrier()
    }
}

#[cfg(all(target_os = "linux", not(loom)))]
mod imp {
    use std::time::Duration;

    use rustix::thread::futex;

    use crate::layout::Bell;

    pub(super) fn wait(bell: &Bell, seq: u32, timeout: Option<Duration>) -> bool {
        let ts = timeout.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos().into(),
        });
        // EAGAIN (seq already moved), EINTR and ETIMEDOUT all mean "re-check".
        matches!(
            futex::wait(&bell.seq, futex::Flags::empty(), seq, ts.as_ref()),
            Err(rustix::io::Errno::TIMEDOUT)
        )
    }

    pub(super) fn wake(bell: &Bell) {
        let _ = futex::wake(&bell.seq, futex::Flags::empty(), u32::MAX);
    }

    /// Miri cannot make the system call: no barriers there (the fences of
    /// the protocol are then used on both sides).
    pub(super) fn register_barrier() -> bool {
        #[cfg(miri)]
        return false;
        #[cfg(not(miri))]
        {
            use rustix::thread::{membarrier, membarrier_query, MembarrierCommand as Cmd};
            let offered = membarrier_query();
            offered.contains_command(Cmd::GlobalExpedited)
                && offered.contains_command(Cmd::RegisterGlobalExpedited)
                && membarrier(Cmd::RegisterGlobalExpedited).is_ok()
        }
    }

    pub(super) fn barrier() -> bool {
        #[cfg(miri)]
        return false;
        #[cfg(not(miri))]
        rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_ok()
    }
}

/// No futex outside Linux: sleepers wait on the socket (or a short timed
/// sleep), so a wake-up here has nothing to do.
#[cfg(all(not(target_os = "linux"), not(loom)))]
mod imp {
    use std::time::Duration;

    use crate::layout::Bell;

    pub(super) fn wait(_bell: &Bell, _seq: u32, timeout: Option<Duration>) -> bool {
        let nap = Duration::from_millis(1);
        std::thread::sleep(timeout.map_or(nap, |t| t.min(nap)));
        true
    }

    pub(super) fn wake(_bell: &Bell) {}

    /// No process-wide barrier here: the protocol's fences are used.
    pub(super) fn register_barrier() -> bool {
        false
    }

    pub(super) fn barrier() -> bool {
        false
    }
}

/// The futex modelled for loom with a mutex and condition variable: `wait`
/// blocks while `seq` equals the expected value, `wake` wakes every waiter.
#[cfg(loom)]
mod imp {
    use std::time::Duration;

    use crate::layout::Bell;
    use crate::sync::Ordering;

    pub(super) fn wait(bell: &Bell, seq: u32, _timeout: Option<Duration>) -> bool {
        let mut guard = bell.park.0.lock().unwrap();
        while bell.seq.load(Ordering::SeqCst) == seq {
            guard = bell.park.1.wait(guard).unwrap();
        }
        false
    }

    pub(super) fn wake(bell: &Bell) {
        let _guard = bell.park.0.lock().unwrap();
        bell.park.1.notify_all();
    }

    /// Loom cannot model a barrier made on another thread's behalf: the
    /// model checks the protocol's fences.
    pub(super) fn register_barrier() -> bool {
        false
    }

    pub(super) fn barrier() -> bool {
        false
    }
}
