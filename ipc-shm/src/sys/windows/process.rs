//! The peer's process: opened by the id the named pipe reports for it,
//! checked to be the process that was there when the pipe connected, and
//! the source of the handles the client hands over.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

use ipc_core::{Error, Result};
use windows_sys::Win32::Foundation::{DuplicateHandle, DUPLICATE_SAME_ACCESS, FILETIME, HANDLE};
use windows_sys::Win32::System::SystemInformation::GetSystemTimePreciseAsFileTime;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetProcessTimes, OpenProcess, PROCESS_SYNCHRONIZE,
};

/// The system time now, in 100 ns units since 1601 (a FILETIME).
pub(crate) fn now() -> u64 {
    let mut ft = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    // SAFETY: writes the current time into `ft`, a valid out pointer.
    unsafe { GetSystemTimePreciseAsFileTime(&mut ft) };
    (u64::from(ft.dwHighDateTime) << 32) | u64::from(ft.dwLowDateTime)
}

/// Opens process `pid` with `access`, and checks it was created no later
/// than `not_after` (a [`now`] taken when its pipe connected): a process id
/// freed by a dead peer and reused since is refused.
pub(crate) fn open(pid: u32, access: u32, not_after: u64, who: &str) -> Result<OwnedHandle> {
    // SAFETY: plain call; the returned handle is checked and then owned by
    // exactly one OwnedHandle.
    let h = unsafe { OpenProcess(access, 0, pid) };
    if h.is_null() {
        return Err(Error::io(
            format!("opening the {who} process (pid {pid})"),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `h` is a fresh, valid handle owned by nobody else.
    let process = unsafe { OwnedHandle::from_raw_handle(h) };
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the handle is valid and was opened with query access; the
    // four out pointers are valid FILETIMEs.
    let ok = unsafe {
        GetProcessTimes(
            process.as_raw_handle(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    if ok == 0 {
        return Err(Error::io(
            format!("reading the start time of the {who} process (pid {pid})"),
            io::Error::last_os_error(),
        ));
    }
    let created = (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime);
    if created > not_after {
        return Err(Error::Protocol(format!(
            "the {who} process (pid {pid}) started after its pipe connected: the process that \
             connected has exited and its id was reused; connect again"
        )));
    }
    Ok(process)
}

/// Duplicates `value`, a handle in `process` named by that process, into
/// this process with the same access (never more than the peer had). The
/// result is a fresh handle of ours, so no value the peer sends can alias a
/// handle this process already holds.
pub(crate) fn duplicate_from(process: &OwnedHandle, value: u64, what: &str) -> Result<OwnedHandle> {
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: the source handle value is only interpreted in the peer's
    // handle table (a bad value fails the call); `out` is a valid out
    // pointer; the result, if any, is a new handle owned by nobody else.
    let ok = unsafe {
        DuplicateHandle(
            process.as_raw_handle(),
            value as usize as HANDLE,
            GetCurrentProcess(),
            &mut out,
            0,
            0,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == 0 || out.is_null() {
        return Err(Error::Protocol(format!(
            "the client's {what} handle {value:#x} cannot be duplicated ({}); the client sent a \
             value that is not an open handle of its own",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: `out` is a fresh, valid handle owned by nobody else.
    Ok(unsafe { OwnedHandle::from_raw_handle(out) })
}

/// A handle to the same process that can only wait for it to end: the
/// server keeps this one for the life of the connection, not the handle
/// that can duplicate out of the client.
pub(crate) fn watch_only(process: &OwnedHandle) -> Result<OwnedHandle> {
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: duplicates a valid handle of ours within this process, with
    // less access; `out` is a valid out pointer.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            process.as_raw_handle(),
            GetCurrentProcess(),
            &mut out,
            PROCESS_SYNCHRONIZE,
            0,
            0,
        )
    };
    if ok == 0 || out.is_null() {
        return Err(Error::io(
            "keeping a handle to the peer process",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `out` is a fresh, valid handle owned by nobody else.
    Ok(unsafe { OwnedHandle::from_raw_handle(out) })
}
