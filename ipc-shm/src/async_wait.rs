//! Waiting in async code, for the byte-stream [`crate::ShmTransport`] and
//! the async message API ([`crate::AsyncShmConnection`]).
//!
//! A task that finds its ring empty (or full) announces it in its bell and
//! waits for the doorbell; the peer rings only when it sees the
//! announcement. On Unix the doorbell is the bootstrap socket (the peer
//! sends one byte), registered with the runtime's reactor like any other,
//! and the peer's death (the socket hanging up) wakes the same wait. On
//! Windows it is this side's auto-reset event, and the peer's process
//! handle signals its death; both are waited on by the system thread pool
//! (`RegisterWaitForSingleObject`), which wakes the task. Either way no
//! thread is parked or spawned per connection and an idle connection costs
//! nothing. Optionally a wait first spins for [`ShmOptions::async_spin`]
//! for the lowest latency, a few microseconds at a time, handing the thread
//! back to the runtime in between so that the other tasks on it keep
//! running.
//!
//! [`ShmOptions::async_spin`]: crate::ShmOptions::async_spin

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use ipc_core::Result;

use crate::bell::Bells;
use crate::sync::spin_hint;
use crate::sys::wire::{AsyncWire, ASYNC_SLEEP};

/// Wakes both the reading and the writing task when the doorbell rings.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl Wakers {
    fn slot(&self, task: Task) -> &Mutex<Option<Waker>> {
        match task {
            Task::Read => &self.read,
            Task::Write => &self.write,
        }
    }

    /// Wakes `task`, if it waits.
    fn wake_task(&self, task: Task) {
        let waker = self
            .slot(task)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn set(slot: &Mutex<Option<Waker>>, w: &Waker) {
        let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
        if !g.as_ref().is_some_and(|old| old.will_wake(w)) {
            *g = Some(w.clone());
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        for slot in [&self.read, &self.write] {
            if let Some(w) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
        }
    }
}

/// Which task of a connection waits: each has its own waker slot, and the
/// doorbell wakes both.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Task {
    Read,
    Write,
}

impl Task {
    fn other(self) -> Task {
        match self {
            Task::Read => Task::Write,
            Task::Write => Task::Read,
        }
    }
}

/// What one connection's async tasks wait with: the doorbell as registered
/// with the runtime (or the thread pool), the wakers it wakes, and the
/// spin time.
#[derive(Debug)]
pub(crate) struct AsyncWaits {
    wire: AsyncWire,
    wakers: Arc<Wakers>,
    joint: Waker,
    async_spin: Duration,
}

/// Longest a spinning wait holds the runtime's thread at a time.
const SPIN_SLICE: Duration = Duration::from_micros(2);

/// What [`AsyncWaits::spin`] came to.
enum Spin {
    /// What it waited for may have come: look again.
    Ready,
    /// Not yet; the task is to be polled again soon, and the poll returns
    /// `Pending`.
    Again,
    /// The spin is over: wait on the doorbell.
    Over,
}

impl AsyncWaits {
    /// Builds the waits around the doorbell that `register` makes for the
    /// joint waker it is given; also returns what else `register` made.
    pub(crate) fn new<D>(
        async_spin: Duration,
        register: impl FnOnce(&Waker) -> Result<(D, AsyncWire)>,
    ) -> Result<(D, AsyncWaits)> {
        let wakers = Arc::new(Wakers::default());
        let joint = Waker::from(wakers.clone());
        let (made, wire) = register(&joint)?;
        let waits = AsyncWaits {
            wire,
            wakers,
            joint,
            async_spin,
        };
        Ok((made, waits))
    }

    /// Sends a wake-up on the socket (Unix; on Windows the bells ring the
    /// peer's event themselves).
    pub(crate) fn send_wake(&self) {
        self.wire.send_wake();
    }

    /// Polls until `attempt` returns a value or an error: first at once,
    /// then spinning while `ready` (a cheap look at what `attempt` waits
    /// for) says nothing has come, for the spin time, then waiting on the
    /// doorbell, with this side's announcement in `bells`, between attempts.
    /// `since` keeps the start of the spin across polls (`None` when no wait
    /// is under way). A hang-up of the socket (the peer's death) sets
    /// `hung_up` and ends the sleep; `attempt` must then end the wait (with
    /// what is left, or an error).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn poll_until<S, T>(
        &self,
        cx: &mut Context<'_>,
        task: Task,
        bells: &Bells,
        hung_up: &AtomicBool,
        since: &mut Option<Instant>,
        state: &mut S,
        mut attempt: impl FnMut(&mut S) -> Result<Option<T>>,
        mut ready: impl FnMut(&mut S) -> bool,
    ) -> Poll<Result<T>> {
        let mut prepared = false;
        loop {
            match attempt(state) {
                Ok(None) => {}
                Ok(Some(v)) => {
                    *since = None;
                    return Poll::Ready(Ok(v));
                }
                Err(e) => {
                    *since = None;
                    return Poll::Ready(Err(e));
                }
            }
            if !prepared {
                match self.spin(since, cx, || ready(state)) {
                    Spin::Ready => continue,
                    Spin::Again => return Poll::Pending,
                    Spin::Over => {}
                }
                Wakers::set(self.wakers.slot(task), cx.waker());
                bells.prepare_sleep(ASYNC_SLEEP);
                prepared = true;
                continue;
            }
            match self.wire.poll_wait(&self.joint, hung_up) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    // The doorbell rings for the side, not for a task: this
                    // task may have taken a wake-up meant for the other one,
                    // which the runtime woke only if it was waiting on the
                    // socket just then. Wake it to look again.
                    self.wakers.wake_task(task.other());
                    prepared = false;
                }
            }
        }
    }

    /// Spins for what `ready` waits for, as part of a wait that started at
    /// `*since` (now, if it is `None`): in place for at most [`SPIN_SLICE`],
    /// then, while the wait's spin time lasts, by handing the thread back to
    /// the runtime and spinning again when polled.
    ///
    /// Handing the thread back matters when what the peer waits for is a
    /// task of this process (a reply queued for another task to write, a
    /// caller about to send its next request): it runs before the next
    /// slice instead of after the whole spin.
    #[inline]
    fn spin(
        &self,
        since: &mut Option<Instant>,
        cx: &mut Context<'_>,
        mut ready: impl FnMut() -> bool,
    ) -> Spin {
        if self.async_spin.is_zero() {
            return Spin::Over;
        }
        let now = Instant::now();
        let start = *since.get_or_insert(now);
        let left = self
            .async_spin
            .saturating_sub(now.saturating_duration_since(start));
        if left.is_zero() {
            return Spin::Over;
        }
        let slice = left.min(SPIN_SLICE);
        let mut n = 0u32;
        loop {
            if ready() {
                return Spin::Ready;
            }
            spin_hint();
            n = n.wrapping_add(1);
            if n % 32 == 0 && now.elapsed() >= slice {
                if slice == left {
                    return Spin::Over;
                }
                // Its first poll arranges the wake-up and returns `Pending`.
                let _ = pin!(tokio::task::yield_now()).poll(cx);
                return Spin::Again;
            }
        }
    }
}
