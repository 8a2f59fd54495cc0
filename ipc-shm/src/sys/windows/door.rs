//! The doorbell on Windows: one auto-reset event per side. A side sleeps on
//! its own event (and on the peer's process handle, which is signalled when
//! the peer dies) and wakes the peer by setting the peer's event.
//! `WaitOnAddress` would be the futex's twin, but it works within one
//! process only.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::sync::Arc;
use std::time::Duration;

use windows_sys::Win32::Foundation::WAIT_OBJECT_0;
use windows_sys::Win32::System::Threading::{
    CreateEventW, SetEvent, WaitForMultipleObjects, WaitForSingleObject, INFINITE,
};

use crate::layout::Bell;

/// Sleeping on this side's event and waking the peer's.
#[derive(Debug, Clone)]
pub(crate) struct Door(Arc<Handles>);

#[derive(Debug)]
struct Handles {
    /// This side sleeps on it; the peer sets it.
    mine: OwnedHandle,
    /// The peer sleeps on it; this side sets it.
    peer: OwnedHandle,
    /// Signalled when the peer's process ends; `None` when the peer lives
    /// in this process (tests).
    peer_process: Option<OwnedHandle>,
}

/// A new unnamed auto-reset event, not inheritable.
pub(crate) fn new_event() -> io::Result<OwnedHandle> {
    // SAFETY: plain call with no security attributes and no name; the
    // returned handle is checked and then owned by exactly one OwnedHandle.
    let h = unsafe { CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a fresh, valid handle owned by nobody else.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Waits on `handle` for at most `ms` milliseconds; true when signalled.
pub(crate) fn signalled(handle: &OwnedHandle, ms: u32) -> bool {
    // SAFETY: the handle is valid (owned) for the duration of the call.
    unsafe { WaitForSingleObject(handle.as_raw_handle(), ms) == WAIT_OBJECT_0 }
}

/// Milliseconds for a wait, rounded up so a short timeout does not spin.
fn millis(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => INFINITE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(u128::from(INFINITE - 1)) as u32
        }
    }
}

impl Door {
    /// The door of one side: `mine` to sleep on, `peer` to set, and the
    /// peer's process to watch.
    pub(crate) fn new(
        mine: OwnedHandle,
        peer: OwnedHandle,
        peer_process: Option<OwnedHandle>,
    ) -> Door {
        Door(Arc::new(Handles {
            mine,
            peer,
            peer_process,
        }))
    }

    /// The doors of two ends in one process (a region on the heap in tests).
    #[allow(dead_code)]
    pub(crate) fn pair_in_process() -> io::Result<(Door, Door)> {
        let (a, b) = (new_event()?, new_event()?);
        let (a2, b2) = (a.try_clone()?, b.try_clone()?);
        Ok((Door::new(a, b, None), Door::new(b2, a2, None)))
    }

    /// Sleeps until this side's event is set, at most `timeout`. Returns
    /// `true` when the caller should check that the peer lives (the timeout
    /// expired, the peer's process ended, or the wait failed).
    pub(crate) fn wait(&self, _bell: &Bell, _seq: u32, timeout: Option<Duration>) -> bool {
        let ms = millis(timeout);
        let r = match &self.0.peer_process {
            Some(process) => {
                let handles = [self.0.mine.as_raw_handle(), process.as_raw_handle()];
                // SAFETY: both handles are valid (owned by `self`) for the call;
                // the array outlives it.
                unsafe { WaitForMultipleObjects(2, handles.as_ptr(), 0, ms) }
            }
            // SAFETY: the handle is valid (owned by `self`) for the call.
            None => unsafe { WaitForSingleObject(self.0.mine.as_raw_handle(), ms) },
        };
        r != WAIT_OBJECT_0
    }

    /// Wakes the peer.
    pub(crate) fn wake_peer(&self, _bell: &Bell) {
        // SAFETY: the handle is valid (owned by `self`); setting an event
        // has no memory effects on this process.
        unsafe { SetEvent(self.0.peer.as_raw_handle()) };
    }

    /// Wakes this side's own sleeper.
    pub(crate) fn wake_self(&self, _bell: &Bell) {
        // SAFETY: as in `wake_peer`.
        unsafe { SetEvent(self.0.mine.as_raw_handle()) };
    }

    /// No process-wide memory barrier on Windows (`FlushProcessWriteBuffers`
    /// reaches only this process's threads): the protocol's fences are used
    /// on both sides.
    pub(crate) fn register_barrier() -> bool {
        false
    }

    /// See [`Self::register_barrier`]: never called.
    pub(crate) fn barrier(&self) -> bool {
        false
    }

    /// Whether the peer's process has ended.
    pub(crate) fn peer_exited(&self) -> bool {
        self.0
            .peer_process
            .as_ref()
            .is_some_and(|p| signalled(p, 0))
    }

    /// This side's event (for a registered wait).
    pub(crate) fn my_event(&self) -> &OwnedHandle {
        &self.0.mine
    }

    /// The peer's process, if it lives in another one.
    pub(crate) fn peer_process(&self) -> Option<&OwnedHandle> {
        self.0.peer_process.as_ref()
    }
}
