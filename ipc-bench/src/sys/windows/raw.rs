//! The named-pipe baseline: a byte-mode Win32 named pipe with blocking
//! `ReadFile`/`WriteFile` (std's `File`), the server made with
//! `CreateNamedPipeW` and `ConnectNamedPipe`, one thread per connection.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::io::{FromRawHandle, OwnedHandle};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use windows_sys::Win32::Foundation::{ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_FIRST_PIPE_INSTANCE, PIPE_ACCESS_DUPLEX};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};

use super::local_name;
use crate::mech::{Group, Mechanism, ServeCtx, ServerKind, SyncSession};
use crate::proto;
use crate::streams::RawSync;

/// In and out buffer of each pipe instance: the size `ipc_windows` uses.
const BUFFER: u32 = 64 * 1024;
/// How long a client retries while every instance is busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn mechanisms() -> Vec<Mechanism> {
    vec![Mechanism {
        name: "npipe-raw",
        group: Group::Baseline,
        baseline: "npipe-raw",
        about: "a byte-mode Win32 named pipe (CreateNamedPipeW, ConnectNamedPipe), blocking \
                ReadFile/WriteFile through std::fs::File on both sides",
        server: ServerKind::Child,
        serve,
        connect: |ctx| {
            let path = local_name(&ctx.endpoint)?;
            let f = open(&path)?;
            Ok(Box::new(SyncSession(RawSync::new(f.try_clone()?, f))))
        },
    }]
}

/// Opens the client end, retrying while every instance is busy (between
/// a connection and the server's next instance).
fn open(path: &str) -> anyhow::Result<File> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => return Ok(f),
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).with_context(|| format!("open {path}")),
        }
    }
}

/// One blocking server instance of the pipe at `path`.
fn instance(path: &[u16], first: bool) -> io::Result<File> {
    let mode = PIPE_ACCESS_DUPLEX
        | if first {
            FILE_FLAG_FIRST_PIPE_INSTANCE
        } else {
            0
        };
    // SAFETY: `path` is NUL-terminated UTF-16 that outlives the call; a null
    // security-attributes pointer asks for the default descriptor.
    let h = unsafe {
        CreateNamedPipeW(
            path.as_ptr(),
            mode,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            PIPE_UNLIMITED_INSTANCES,
            BUFFER,
            BUFFER,
            0,
            std::ptr::null(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a valid pipe handle just created, owned by nothing else.
    Ok(File::from(unsafe { OwnedHandle::from_raw_handle(h) }))
}

/// Waits for a client on `pipe` (blocking, no overlapped I/O).
fn accept(pipe: &File) -> io::Result<()> {
    use std::os::windows::io::AsRawHandle;
    // SAFETY: the handle is a pipe server instance open for the whole call;
    // a null OVERLAPPED pointer makes the call synchronous, as the handle was
    // created without FILE_FLAG_OVERLAPPED.
    let ok = unsafe { ConnectNamedPipe(pipe.as_raw_handle(), std::ptr::null_mut()) };
    if ok != 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // A client that connected between CreateNamedPipeW and ConnectNamedPipe.
    if e.raw_os_error() == Some(ERROR_PIPE_CONNECTED as i32) {
        return Ok(());
    }
    Err(e)
}

fn serve(ctx: &ServeCtx) -> anyhow::Result<()> {
    let path = local_name(&ctx.endpoint)?;
    let wide: Vec<u16> = path.encode_utf16().chain(Some(0)).collect();
    let mut next = instance(&wide, true).with_context(|| format!("create {path}"))?;
    ctx.ready("")?;
    loop {
        accept(&next).with_context(|| format!("accept on {path}"))?;
        let conn = std::mem::replace(
            &mut next,
            instance(&wide, false).with_context(|| format!("create {path}"))?,
        );
        std::thread::spawn(move || {
            let r = conn.try_clone()?;
            proto::serve_sync(&mut RawSync::new(r, conn))
        });
    }
}
