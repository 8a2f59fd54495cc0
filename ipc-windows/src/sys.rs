//! Raw Win32 calls, each behind a safe function. The only file of the crate
//! with `unsafe`: every pointer handed to the OS lives in a local or in a
//! value owned here, and every buffer the OS allocates is freed by a guard.

use std::ffi::{c_void, OsStr};
use std::fmt;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;

use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::IntoRawHandle;

use tokio::net::windows::named_pipe::{NamedPipeClient, NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::{LocalFree, ERROR_INSUFFICIENT_BUFFER, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, ConvertStringSidToSidW, GetSecurityInfo,
    SDDL_REVISION_1, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    GetLengthSid, GetTokenInformation, IsValidSid, RevertToSelf, TokenUser,
    DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES, TOKEN_QUERY,
    TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_OVERLAPPED, SECURITY_IDENTIFICATION};
use windows_sys::Win32::System::Pipes::{
    GetNamedPipeClientProcessId, GetNamedPipeHandleStateW, GetNamedPipeInfo,
    GetNamedPipeServerProcessId, ImpersonateNamedPipeClient, SetNamedPipeHandleState,
    PIPE_READMODE_MESSAGE, PIPE_TYPE_MESSAGE,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, OpenProcess, OpenProcessToken, OpenThreadToken,
    PROCESS_QUERY_LIMITED_INFORMATION,
};

/// NUL-terminated UTF-16 for the `W` functions.
fn wide(s: &str) -> Vec<u16> {
    OsStr::new(s).encode_wide().chain(Some(0)).collect()
}

fn raw(h: &impl AsRawHandle) -> HANDLE {
    h.as_raw_handle() as HANDLE
}

/// Frees a `LocalAlloc`ed buffer handed to us by the OS.
struct LocalGuard(*mut c_void);

impl Drop for LocalGuard {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from an OS function documented to allocate
            // with LocalAlloc, and this guard is its only owner.
            unsafe { LocalFree(self.0) };
        }
    }
}

/// Reads a NUL-terminated UTF-16 string the OS allocated.
///
/// # Safety
///
/// `p` must be null or point at a NUL-terminated UTF-16 string.
unsafe fn read_wide(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the caller guarantees a terminating NUL, so every index up to it
    // is inside the string.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` u16s starting at `p` were just read one by one.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A security identifier (user or group), in binary form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sid {
    /// u32 storage keeps the 4-byte alignment the SID structure needs.
    buf: Vec<u32>,
}

impl Sid {
    /// Copies a SID.
    ///
    /// # Safety
    ///
    /// `psid` must point at a valid SID that stays alive during the call.
    unsafe fn copy_from(psid: PSID) -> io::Result<Sid> {
        // SAFETY: the caller guarantees `psid` is a live SID.
        if unsafe { IsValidSid(psid) } == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "invalid SID"));
        }
        // SAFETY: as above; the SID is valid.
        let len = unsafe { GetLengthSid(psid) } as usize;
        let mut buf = vec![0u32; len.div_ceil(4)];
        // SAFETY: `psid` has `len` readable bytes (GetLengthSid of a valid SID) and
        // `buf` has at least `len` writable bytes; the regions are distinct.
        unsafe { ptr::copy_nonoverlapping(psid as *const u8, buf.as_mut_ptr().cast::<u8>(), len) };
        Ok(Sid { buf })
    }

    /// Parses the string form, `S-1-5-21-...`.
    pub fn parse(s: &str) -> io::Result<Sid> {
        let valid_shape = s.strip_prefix("S-1-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .split('-')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        });
        if !valid_shape {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{s:?} is not a SID in string form (S-1-<authority>-<sub-authorities>, for example S-1-5-32-545)"),
            ));
        }
        let w = wide(s);
        let mut psid: PSID = ptr::null_mut();
        // SAFETY: `w` is NUL-terminated and outlives the call; `psid` is a local
        // out-pointer. On success the OS LocalAllocs the SID, freed by the guard.
        let ok = unsafe { ConvertStringSidToSidW(w.as_ptr(), &mut psid) };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        let _guard = LocalGuard(psid);
        // SAFETY: the OS just returned `psid` as a valid SID, alive until the guard drops.
        unsafe { Sid::copy_from(psid) }
    }

    fn as_psid(&self) -> PSID {
        self.buf.as_ptr() as PSID
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s: *mut u16 = ptr::null_mut();
        // SAFETY: `self.buf` holds a valid SID (checked when it was copied) and is
        // only read; `s` is a local out-pointer, LocalAlloced on success.
        let ok = unsafe { ConvertSidToStringSidW(self.as_psid(), &mut s) };
        if ok == 0 {
            return f.write_str("S-?");
        }
        let _guard = LocalGuard(s.cast());
        // SAFETY: on success `s` is a NUL-terminated string owned by the guard.
        f.write_str(&unsafe { read_wide(s) })
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({self})")
    }
}

/// The user SID in an access token.
fn token_user(token: &OwnedHandle) -> io::Result<Sid> {
    let mut len = 0u32;
    // SAFETY: a size query: a null buffer of length 0, `len` a local out-param.
    unsafe { GetTokenInformation(raw(token), TokenUser, ptr::null_mut(), 0, &mut len) };
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32) || len == 0 {
        return Err(err);
    }
    // u64 storage: TOKEN_USER starts with a pointer.
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buf` has `len` writable bytes, suitably aligned for TOKEN_USER.
    let ok = unsafe {
        GetTokenInformation(
            raw(token),
            TokenUser,
            buf.as_mut_ptr().cast(),
            len,
            &mut len,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the buffer holds a TOKEN_USER whose SID pointer points
    // into `buf`, which is alive for the rest of this function.
    unsafe {
        let user = &*(buf.as_ptr() as *const TOKEN_USER);
        Sid::copy_from(user.User.Sid)
    }
}

/// The user this process runs as.
pub fn current_user() -> io::Result<Sid> {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing;
    // `token` is a local out-param.
    let ok = unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success `token` is a handle we now own.
    let token = unsafe { OwnedHandle::from_raw_handle(token as _) };
    token_user(&token)
}

/// The user a process runs as, by process id.
pub fn process_user(pid: u32) -> io::Result<Sid> {
    // SAFETY: plain call; a null result is an error checked below.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-null result is a process handle we now own.
    let process = unsafe { OwnedHandle::from_raw_handle(process as _) };
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: `process` is a live handle; `token` is a local out-param.
    let ok = unsafe { OpenProcessToken(raw(&process), TOKEN_QUERY, &mut token) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success `token` is a handle we now own.
    let token = unsafe { OwnedHandle::from_raw_handle(token as _) };
    token_user(&token)
}

/// Ends an impersonation when dropped.
struct RevertGuard;

impl Drop for RevertGuard {
    fn drop(&mut self) {
        // SAFETY: plain call, ends this thread's impersonation.
        if unsafe { RevertToSelf() } == 0 {
            // Running on as the client would be a privilege confusion; there is no
            // safe way to continue.
            eprintln!(
                "ipc-windows: RevertToSelf failed ({}); aborting",
                io::Error::last_os_error()
            );
            std::process::abort();
        }
    }
}

/// The user of the client connected to a server pipe instance, read from the
/// client's own token by impersonating it on this thread for the duration of
/// the call (never across an await).
pub fn pipe_client_user(pipe: &impl AsRawHandle) -> io::Result<Sid> {
    // SAFETY: `pipe` is a live server pipe handle.
    if unsafe { ImpersonateNamedPipeClient(raw(pipe)) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = {
        let _revert = RevertGuard;
        let mut token: HANDLE = ptr::null_mut();
        // SAFETY: GetCurrentThread is a pseudo-handle; `token` a local out-param.
        // OpenAsSelf = TRUE checks access as this process, not as the client.
        let ok = unsafe { OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, 1, &mut token) };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on success `token` is a handle we now own.
        unsafe { OwnedHandle::from_raw_handle(token as _) }
    };
    token_user(&token)
}

/// The process id of the client connected to a server pipe instance.
pub fn pipe_client_pid(pipe: &impl AsRawHandle) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: `pipe` is a live server pipe handle; `pid` a local out-param.
    if unsafe { GetNamedPipeClientProcessId(raw(pipe), &mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// The process id of the server at the other end of a client pipe.
pub fn pipe_server_pid(pipe: &impl AsRawHandle) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: `pipe` is a live client pipe handle; `pid` a local out-param.
    if unsafe { GetNamedPipeServerProcessId(raw(pipe), &mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// Opens and at once closes every instance of the pipe at `path` that still
/// listens, at most `limit`; stops at the first open that fails (no instance
/// left, or only busy ones).
pub fn take_listening_instances(path: &str, limit: usize) {
    for _ in 0..limit {
        let taken = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .security_qos_flags(SECURITY_IDENTIFICATION)
            .open(path);
        if taken.is_err() {
            break;
        }
    }
}

/// Opens the client end of a named pipe, once: every open takes one of the
/// server's instances, so the read mode is chosen on this very handle.
/// Message-type pipes (ours) are read in message mode, which carries the
/// zero-length end-of-stream message; byte-type pipes (other servers') stay
/// in byte mode. Returns the pipe and whether it reads messages.
///
/// The server may learn who we are but not act as us
/// (`SECURITY_IDENTIFICATION`). Must be called within a tokio runtime.
pub fn open_pipe_client(path: &str) -> io::Result<(NamedPipeClient, bool)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .share_mode(0)
        .custom_flags(FILE_FLAG_OVERLAPPED)
        .security_qos_flags(SECURITY_IDENTIFICATION)
        .open(path)?;
    let mut flags = 0u32;
    // SAFETY: `file` is a live pipe handle; `flags` a local out-param; the
    // other out-params are optional and null.
    let ok = unsafe {
        GetNamedPipeInfo(
            raw(&file),
            &mut flags,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let messages = flags & PIPE_TYPE_MESSAGE != 0;
    if messages {
        let mode = PIPE_READMODE_MESSAGE;
        // SAFETY: `file` is a live pipe handle; `mode` a local read by the
        // call; the optional collection parameters are null.
        let ok = unsafe { SetNamedPipeHandleState(raw(&file), &mode, ptr::null(), ptr::null()) };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: the handle is an open, overlapped named-pipe client handle whose
    // ownership moves from `file` to the returned pipe.
    let client = unsafe { NamedPipeClient::from_raw_handle(file.into_raw_handle())? };
    Ok((client, messages))
}

/// How many instances of the pipe exist, ours included.
pub fn pipe_instances(pipe: &impl AsRawHandle) -> io::Result<u32> {
    let mut count = 0u32;
    // SAFETY: `pipe` is a live pipe handle; `count` a local out-param; the other
    // out-params are optional and null.
    let ok = unsafe {
        GetNamedPipeHandleStateW(
            raw(pipe),
            ptr::null_mut(),
            &mut count,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(count)
}

/// An owned, self-relative security descriptor built from SDDL.
pub struct SecurityDescriptor {
    ptr: PSECURITY_DESCRIPTOR,
    sddl: String,
}

// SAFETY: the descriptor is immutable after creation, owned only by this
// value, and the OS only reads it.
unsafe impl Send for SecurityDescriptor {}
// SAFETY: as above; shared references only ever read it.
unsafe impl Sync for SecurityDescriptor {}

impl SecurityDescriptor {
    /// Builds a descriptor from its SDDL form.
    pub fn from_sddl(sddl: &str) -> io::Result<SecurityDescriptor> {
        let w = wide(sddl);
        let mut ptr: PSECURITY_DESCRIPTOR = ptr::null_mut();
        // SAFETY: `w` is NUL-terminated and outlives the call; `ptr` is a local
        // out-param, LocalAlloced on success and freed in Drop.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                w.as_ptr(),
                SDDL_REVISION_1,
                &mut ptr,
                ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SecurityDescriptor {
            ptr,
            sddl: sddl.to_owned(),
        })
    }

    /// The SDDL it was built from.
    pub fn sddl(&self) -> &str {
        &self.sddl
    }

    /// Creates a pipe instance carrying this descriptor.
    pub fn create_pipe(&self, options: &ServerOptions, path: &str) -> io::Result<NamedPipeServer> {
        let mut attrs = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.ptr,
            bInheritHandle: 0,
        };
        // SAFETY: `attrs` is a valid SECURITY_ATTRIBUTES on this stack frame whose
        // descriptor is owned by `self`; both outlive the call, which only reads them.
        unsafe {
            options.create_with_security_attributes_raw(
                path,
                (&mut attrs as *mut SECURITY_ATTRIBUTES).cast(),
            )
        }
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        drop(LocalGuard(self.ptr));
    }
}

impl fmt::Debug for SecurityDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecurityDescriptor")
            .field(&self.sddl)
            .finish()
    }
}

/// The DACL of a live kernel object, in SDDL form.
pub fn object_dacl_sddl(handle: &impl AsRawHandle) -> io::Result<String> {
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `handle` is live; all out-params are locals or null where
    // optional; the descriptor is LocalAlloced and freed by the guard.
    let rc = unsafe {
        GetSecurityInfo(
            raw(handle),
            SE_KERNEL_OBJECT,
            DACL_SECURITY_INFORMATION,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    let _sd = LocalGuard(sd);
    let mut s: *mut u16 = ptr::null_mut();
    // SAFETY: `sd` is the valid descriptor just returned; `s` a local out-param.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut s,
            ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let _s = LocalGuard(s.cast());
    // SAFETY: on success `s` is a NUL-terminated string owned by the guard.
    Ok(unsafe { read_wide(s) })
}
