//! Busy polling of reads: the adaptive policy behind
//! [`UnixTransport::set_busy_poll`](crate::UnixTransport::set_busy_poll), the
//! non-blocking receive it retries and how it hands the thread back between
//! two tries.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::RecvFlags;
use tokio::io::ReadBuf;
use tokio::net::UnixStream;

/// Weight of a new sample in the wait estimate: `1 / 2^EWMA_SHIFT`.
const EWMA_SHIFT: u32 = 2;

/// The busy-poll state of one transport.
///
/// A *wait* starts when a read finds no data and ends when a read returns
/// data (or end of stream, or an error). The policy keeps an exponentially
/// weighted estimate of how long recent waits lasted, each sample capped at
/// twice the budget, and polls during a new wait only while that estimate
/// is below the budget: a peer that answers within the budget is polled
/// for, a slow or idle one is waited for on the reactor straight away. A
/// wait that parked is still timed (until the woken read gets its data), so
/// the estimate falls again once the peer answers quickly, and polling
/// resumes.
///
/// A wait polls from the read that starts it until the budget has passed,
/// then waits on the reactor; the CPU spent polling is at most one budget
/// per wait. Between two polls the runtime runs the other tasks ready on
/// its thread (see [`poll_again`]), so polling never holds the thread.
#[derive(Debug, Clone)]
pub(crate) struct BusyPoll {
    budget: Duration,
    /// Estimated wait, in nanoseconds.
    estimate: u64,
    /// When the current wait started, if a read is waiting.
    waiting_since: Option<Instant>,
    /// Until when the current wait polls; `None` once it waits on the reactor.
    poll_until: Option<Instant>,
}

impl BusyPoll {
    /// The policy for `budget`; `None` (no busy polling) for a zero budget.
    pub(crate) fn new(budget: Duration) -> Option<BusyPoll> {
        (!budget.is_zero()).then_some(BusyPoll {
            budget,
            estimate: 0,
            waiting_since: None,
            poll_until: None,
        })
    }

    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    fn budget_ns(&self) -> u64 {
        u64::try_from(self.budget.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current estimate of a wait.
    #[cfg(test)]
    pub(crate) fn estimate(&self) -> Duration {
        Duration::from_nanos(self.estimate)
    }

    /// A read found no data at `now`: whether it should poll again rather
    /// than wait on the reactor. A wait polls from its first read (when
    /// recent waits were shorter than the budget) until the budget has
    /// passed; after that it waits on the reactor until it ends.
    pub(crate) fn keep_polling(&mut self, now: Instant) -> bool {
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
            self.poll_until = (self.estimate < self.budget_ns()).then(|| now + self.budget);
        }
        let polling = self.poll_until.is_some_and(|until| now < until);
        if !polling {
            self.poll_until = None;
        }
        polling
    }

    /// A read returned at `now`; ends the current wait, if any, and adds its
    /// length to the estimate.
    pub(crate) fn end_wait(&mut self, now: Instant) {
        self.poll_until = None;
        if let Some(since) = self.waiting_since.take() {
            let cap = self.budget_ns().saturating_mul(2);
            let sample = u64::try_from(now.saturating_duration_since(since).as_nanos())
                .unwrap_or(u64::MAX)
                .min(cap);
            self.estimate = self.estimate - (self.estimate >> EWMA_SHIFT) + (sample >> EWMA_SHIFT);
        }
    }

    /// Whether a read is waiting (so ending it needs the time).
    pub(crate) fn waiting(&self) -> bool {
        self.waiting_since.is_some()
    }
}

/// One more poll of a wait that keeps polling: yields the CPU
/// (`sched_yield`), tries a receive, and when there is still no data, has
/// the runtime poll the task again once the other tasks ready on its thread
/// have run (the wake-up [`tokio::task::yield_now`] arranges), without
/// registering with the reactor.
///
/// The yield of the CPU matters when the peer waits for this very core: the
/// kernel tends to wake a socket's reader on the writer's CPU, so a peer
/// woken by this process's last write often sits in this core's run queue
/// behind the poller. Yielding lets it run at once, and costs one cheap
/// system call when nothing else wants the core. Handing the thread back to
/// the runtime between polls matters when the peer waits for a task of this
/// process: a reply queued for another task to write, or a caller about to
/// send its next request, runs before the next poll instead of after the
/// budget.
pub(crate) fn poll_again(
    stream: &UnixStream,
    buf: &mut ReadBuf<'_>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    std::thread::yield_now();
    if let Some(r) = recv_now(stream, buf) {
        return Poll::Ready(r);
    }
    // Its first poll arranges the wake-up and returns `Pending`.
    let _ = pin!(tokio::task::yield_now()).poll(cx);
    Poll::Pending
}

/// One `recv(MSG_DONTWAIT)` into the unfilled part of `buf`: `None` when no
/// data is there yet, otherwise what the read returned (no bytes filled
/// means end of stream).
///
/// This goes to the socket directly rather than through Tokio, whose cached
/// readiness would answer "not ready" without asking the kernel until the
/// reactor has run again. Reading behind the reactor's back is sound: the
/// socket is non-blocking, and a readiness event for data taken here only
/// makes Tokio's next read find nothing and wait again.
pub(crate) fn recv_now(stream: &UnixStream, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
    loop {
        // SAFETY: `unfilled_mut` requires that no initialised byte of the
        // buffer is de-initialised through the slice; `recv` only writes
        // received bytes into it.
        let dst = unsafe { buf.unfilled_mut() };
        let n = match rustix::net::recv(stream, dst, RecvFlags::DONTWAIT) {
            Ok(((filled, _), _)) => filled.len(),
            Err(Errno::INTR) => continue,
            Err(e) if e == Errno::AGAIN || e == Errno::WOULDBLOCK => return None,
            Err(e) => return Some(Err(e.into())),
        };
        // SAFETY: `recv` initialised the first `n` bytes of the unfilled
        // part (it reports the bytes it wrote, at most the slice's length).
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        return Some(Ok(()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Runs one wait of `len` starting at `t` and returns whether it polled.
    fn wait(p: &mut BusyPoll, t: &mut Instant, len: Duration) -> bool {
        let spun = p.keep_polling(*t);
        *t += len;
        p.end_wait(*t);
        spun
    }

    #[test]
    fn zero_budget_is_off() {
        assert!(BusyPoll::new(Duration::ZERO).is_none());
        assert_eq!(BusyPoll::new(US).unwrap().budget(), US);
    }

    #[test]
    fn fast_peer_keeps_spinning() {
        let mut p = BusyPoll::new(50 * US).unwrap();
        let mut t = Instant::now();
        for _ in 0..100 {
            assert!(wait(&mut p, &mut t, 10 * US));
        }
        assert!(p.estimate() < 50 * US);
    }

    #[test]
    fn slow_peer_stops_spinning_within_a_few_waits_and_fast_one_resumes_it() {
        let mut p = BusyPoll::new(50 * US).unwrap();
        let mut t = Instant::now();
        let spun: Vec<bool> = (0..10)
            .map(|_| wait(&mut p, &mut t, Duration::from_secs(1)))
            .collect();
        // An idle second counts as twice the budget: after three such waits
        // the estimate passes the budget and waits park at once.
        assert_eq!(spun.iter().filter(|&&s| s).count(), 3, "{spun:?}");
        assert!(!spun[9]);
        assert!(p.estimate() <= 100 * US);
        // Quick answers (a woken read still measures them) bring it back.
        let resumed = (0..10).position(|_| {
            let s = p.keep_polling(t);
            t += 5 * US;
            p.end_wait(t);
            s
        });
        assert!(matches!(resumed, Some(1..=5)), "{resumed:?}");
    }

    #[test]
    fn a_wait_polls_until_its_budget_has_passed() {
        let mut p = BusyPoll::new(50 * US).unwrap();
        let t = Instant::now();
        assert!(p.keep_polling(t));
        assert!(p.waiting());
        assert!(p.keep_polling(t + 49 * US));
        assert!(!p.keep_polling(t + 50 * US), "the budget has passed");
        // Once it waits on the reactor, a poll of the same wait (a spurious
        // wake) does not start polling again.
        assert!(!p.keep_polling(t + 10 * US));
        p.end_wait(t + 60 * US);
        assert!(!p.waiting());
        // A new wait polls again (its estimate is still below the budget).
        assert!(p.keep_polling(t + 61 * US));
    }

    #[test]
    fn ending_without_a_wait_changes_nothing() {
        let mut p = BusyPoll::new(50 * US).unwrap();
        p.end_wait(Instant::now());
        assert_eq!(p.estimate(), Duration::ZERO);
    }
}
