//! The link to the peer after the handshake. Windows needs no socket for
//! it: wake-ups go through the events of [`Door`] and the peer's death shows
//! on its process handle. Blocking calls wait on both at once; async tasks
//! have both waited on by the system thread pool
//! (`RegisterWaitForSingleObject`), whose callback wakes the task.

use std::ffi::c_void;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Threading::{
    RegisterWaitForSingleObject, UnregisterWaitEx, INFINITE, WT_EXECUTEONLYONCE,
};

use super::door::Door;
use crate::bell::Bells;
use crate::layout::WAIT_FUTEX;

/// Blocking calls sleep on the door (the event), like the futex on Linux.
pub(crate) const BLOCKING_SLEEP: u32 = WAIT_FUTEX;

/// Async tasks sleep on the door too (through a registered wait).
pub(crate) const ASYNC_SLEEP: u32 = WAIT_FUTEX;

/// The link of a blocking connection: whether a peer process is watched.
#[derive(Debug)]
pub(crate) struct Wire {
    connected: bool,
}

impl Wire {
    pub(crate) fn unconnected() -> Wire {
        Wire { connected: false }
    }

    pub(crate) fn connected() -> Wire {
        Wire { connected: true }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Nothing to send: the peer's event is set by the door.
    pub(crate) fn send_wake(&self) {}

    /// After a sleep that ended without a wake-up: notes whether the peer's
    /// process has ended.
    pub(crate) fn check_alive(&self, bells: &Bells, hung_up: &AtomicBool) {
        if bells.door().peer_exited() {
            hung_up.store(true, Ordering::Relaxed);
        }
    }

    /// Never used on Windows (blocking calls sleep on the door); waits on
    /// the door for completeness.
    pub(crate) fn wait(&self, timeout: Option<Duration>, bells: &Bells, hung_up: &AtomicBool) {
        if bells.sleep(0, timeout) {
            self.check_alive(bells, hung_up);
        }
    }
}

/// What the thread-pool callbacks reach: the task's waker and whether the
/// peer's process has ended.
#[derive(Debug)]
struct Shared {
    joint: Waker,
    died: AtomicBool,
}

/// The registered waits of an async connection, unregistered on drop.
#[derive(Debug)]
pub(crate) struct AsyncWire {
    /// Boxed so its address, given to the callbacks, stays put; freed only
    /// after both waits are unregistered (no callback runs after that).
    shared: Box<Shared>,
    event_wait: HANDLE,
    process_wait: HANDLE,
    /// Keeps the waited-on handles open while the waits are registered.
    _door: Door,
}

// SAFETY: the wait handles are plain kernel handles, usable from any thread;
// `Shared` is Send + Sync.
unsafe impl Send for AsyncWire {}
// SAFETY: `&AsyncWire` gives out nothing but reads of `Shared`'s atomics.
unsafe impl Sync for AsyncWire {}

/// Runs on a thread-pool thread when this side's event is set.
unsafe extern "system" fn on_event(ctx: *mut c_void, _timed_out: bool) {
    // SAFETY: `ctx` is the `Shared` boxed in the AsyncWire, which frees it
    // only after unregistering this wait and waiting for running callbacks.
    let shared = unsafe { &*(ctx as *const Shared) };
    shared.joint.wake_by_ref();
}

/// Runs on a thread-pool thread when the peer's process ends.
unsafe extern "system" fn on_exit(ctx: *mut c_void, _timed_out: bool) {
    // SAFETY: as in `on_event`.
    let shared = unsafe { &*(ctx as *const Shared) };
    shared.died.store(true, Ordering::Release);
    shared.joint.wake_by_ref();
}

/// Registers a wait on `object` calling `callback(ctx)`.
fn register(
    object: HANDLE,
    callback: unsafe extern "system" fn(*mut c_void, bool),
    ctx: *const Shared,
    flags: u32,
) -> io::Result<HANDLE> {
    let mut wait: HANDLE = std::ptr::null_mut();
    // SAFETY: `object` is a valid handle kept open by the caller while the
    // wait is registered; `ctx` outlives the registration (see AsyncWire);
    // `wait` is a valid out pointer.
    let ok = unsafe {
        RegisterWaitForSingleObject(
            &mut wait,
            object,
            Some(callback),
            ctx as *const c_void,
            INFINITE,
            flags,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(wait)
}

/// Unregisters a wait and waits for its running callbacks to return.
fn unregister(wait: HANDLE) {
    if !wait.is_null() {
        // SAFETY: `wait` came from RegisterWaitForSingleObject and is
        // unregistered once; INVALID_HANDLE_VALUE makes the call wait for
        // callbacks in progress, so none touches `Shared` afterwards.
        unsafe { UnregisterWaitEx(wait, INVALID_HANDLE_VALUE) };
    }
}

impl AsyncWire {
    /// Registers the waits: this side's event (every time it is set) and
    /// the peer's process (once), both waking `joint`.
    pub(crate) fn new(door: &Door, joint: &Waker) -> io::Result<AsyncWire> {
        let mut wire = AsyncWire {
            shared: Box::new(Shared {
                joint: joint.clone(),
                died: AtomicBool::new(false),
            }),
            event_wait: std::ptr::null_mut(),
            process_wait: std::ptr::null_mut(),
            _door: door.clone(),
        };
        let ctx: *const Shared = &*wire.shared;
        wire.event_wait = register(door.my_event().as_raw_handle(), on_event, ctx, 0)?;
        if let Some(process) = door.peer_process() {
            wire.process_wait =
                register(process.as_raw_handle(), on_exit, ctx, WT_EXECUTEONLYONCE)?;
        }
        Ok(wire)
    }

    /// Nothing to send: the peer's event is set by the door.
    pub(crate) fn send_wake(&self) {}

    /// The registered waits wake the task; here only the peer's death is
    /// reported (and sets `hung_up`).
    pub(crate) fn poll_wait(&self, _joint: &Waker, hung_up: &AtomicBool) -> Poll<()> {
        if self.shared.died.load(Ordering::Acquire) {
            hung_up.store(true, Ordering::Relaxed);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for AsyncWire {
    fn drop(&mut self) {
        unregister(self.event_wait);
        unregister(self.process_wait);
    }
}
