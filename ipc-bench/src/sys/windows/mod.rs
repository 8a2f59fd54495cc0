//! Windows: CPU time from `GetProcessTimes`, `TerminateProcess`, and the
//! local stream is a named pipe (`ipc_windows`). The only file of the
//! platform module with `unsafe` besides the raw pipe baseline (`raw.rs`).

use std::os::windows::io::{AsHandle, FromRawHandle, OwnedHandle};
use std::path::Path;

use windows_sys::Win32::Foundation::FILETIME;
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, TerminateProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    PROCESS_TERMINATE,
};

pub mod ours;
pub mod peers;
pub mod raw;

pub const LOCAL_RAW: &str = "npipe-raw";

/// The pipe name for `endpoint`: the names of its directory (a fresh
/// `ipc-bench-XXXXXX`, so runs do not collide) and of its file (the
/// mechanism's), with anything a pipe name may not hold replaced by `_`.
pub fn pipe_name(endpoint: &Path) -> String {
    let part = |p: Option<&std::ffi::OsStr>| p.map(|s| s.to_string_lossy().into_owned());
    let dir = part(endpoint.parent().and_then(Path::file_name));
    let file = part(endpoint.file_name()).unwrap_or_else(|| "endpoint".to_owned());
    let joined = match dir {
        Some(d) => format!("{d}-{file}"),
        None => file,
    };
    joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn addr(endpoint: &Path) -> ipc_core::Address {
    ipc_core::Address::Pipe(pipe_name(endpoint))
}

/// Binds the workspace's named-pipe listener for `endpoint`.
pub fn bind_local(endpoint: &Path) -> ipc_core::Result<ipc_windows::PipeListener> {
    ipc_windows::PipeListener::bind(&addr(endpoint))
}

/// Connects the workspace's named-pipe transport for `endpoint`.
pub async fn connect_local(endpoint: &Path) -> ipc_core::Result<ipc_windows::PipeTransport> {
    ipc_windows::connect(&addr(endpoint)).await
}

/// Connects to another crate's server for `endpoint`: a byte-mode tokio
/// pipe client (retrying while every instance is busy) as a transport.
pub async fn connect_foreign(
    endpoint: &Path,
) -> anyhow::Result<ipc_core::StreamTransport<tokio::net::windows::named_pipe::NamedPipeClient>> {
    let pipe = peers::open(&local_name(endpoint)?).await?;
    Ok(ipc_core::StreamTransport::new(
        pipe,
        ipc_core::PeerInfo::default(),
    ))
}

pub fn shm_name(endpoint: &Path) -> String {
    pipe_name(endpoint)
}

/// What another crate's server binds for `endpoint`: `\\.\pipe\<name>`.
pub fn local_name(endpoint: &Path) -> anyhow::Result<String> {
    Ok(ipc_core::Address::pipe_path(&pipe_name(endpoint)))
}

/// The `interprocess` local-socket name for `endpoint`: the same pipe name,
/// in the pipe namespace.
pub fn interprocess_name(
    endpoint: &Path,
) -> std::io::Result<interprocess::local_socket::Name<'static>> {
    use interprocess::local_socket::{GenericNamespaced, ToNsName as _};
    pipe_name(endpoint).to_ns_name::<GenericNamespaced>()
}

pub fn not_built() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "unix-raw, ipc-unix, ipc-unix-bytes, ipc-unix-busypoll, ipc-fifo, tokio-unix",
            "Unix sockets and FIFOs: Unix builds only",
        ),
        ("iceoryx2", "benchmarked on Unix only"),
    ]
}

/// Opens process `pid` with `access`; `None` when it is gone or refused.
fn open_process(pid: u32, access: u32) -> Option<OwnedHandle> {
    // SAFETY: OpenProcess takes no pointers; a null result is checked below.
    let h = unsafe { OpenProcess(access, 0, pid) };
    if h.is_null() {
        return None;
    }
    // SAFETY: `h` is a valid process handle just returned to us, owned by
    // nothing else; OwnedHandle closes it once.
    Some(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Kernel plus user time from `GetProcessTimes`, in 100 ns units summed over
/// the process's threads. The OS updates it at clock ticks (about 15.6 ms),
/// so short tests carry that much uncertainty. `None` under Wine, whose
/// `GetProcessTimes` answers with the calling process's times whatever
/// process it is asked about.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    use std::os::windows::io::AsRawHandle;
    if under_wine() {
        return None;
    }
    let process = open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the handle is open with query rights for the whole call, and
    // each pointer is to a local FILETIME the call fills in.
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
        return None;
    }
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    Some((ticks(kernel) + ticks(user)) * 100)
}

pub fn kill(pid: u32) {
    use std::os::windows::io::AsRawHandle;
    if let Some(process) = open_process(pid, PROCESS_TERMINATE) {
        // SAFETY: the handle is open with terminate rights for the call.
        unsafe { TerminateProcess(process.as_raw_handle(), 1) };
    }
}

pub fn idle_priority() -> std::io::Result<&'static str> {
    use windows_sys::Win32::System::Threading::{
        GetCurrentThread, SetThreadPriority, THREAD_PRIORITY_IDLE,
    };
    // SAFETY: GetCurrentThread returns a pseudo-handle to the calling
    // thread, valid for the call; SetThreadPriority has no memory effects.
    if unsafe { SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_IDLE) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok("THREAD_PRIORITY_IDLE")
}

pub fn stdio_files() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let r = std::io::stdin().as_handle().try_clone_to_owned()?;
    let w = std::io::stdout().as_handle().try_clone_to_owned()?;
    Ok((r.into(), w.into()))
}

/// Windows has no load average.
pub fn load_average() -> Option<f64> {
    None
}

/// Whether this process runs under Wine (read once).
pub fn under_wine() -> bool {
    static WINE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WINE.get_or_init(|| wine_version().is_some())
}

/// The version of Wine when this runs under it (figures then describe Wine,
/// not Windows), from ntdll's `wine_get_version`.
fn wine_version() -> Option<String> {
    let ntdll: Vec<u16> = "ntdll.dll\0".encode_utf16().collect();
    // SAFETY: the name is a NUL-terminated UTF-16 string that outlives the call.
    let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
    if module.is_null() {
        return None;
    }
    // SAFETY: the module handle is ntdll's (never unloaded), the name is a
    // NUL-terminated ASCII string.
    let f = unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }?;
    // SAFETY: Wine's `const char *wine_get_version(void)` has this signature
    // and returns a static NUL-terminated string.
    let get = unsafe {
        std::mem::transmute::<
            unsafe extern "system" fn() -> isize,
            unsafe extern "C" fn() -> *const std::ffi::c_char,
        >(f)
    };
    // SAFETY: see above: a static string, or null (checked).
    let p = unsafe { get() };
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null, NUL-terminated static string.
    let v = unsafe { std::ffi::CStr::from_ptr(p) };
    Some(v.to_string_lossy().into_owned())
}

pub(super) fn describe() -> super::Description {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let cpu = match env("PROCESSOR_IDENTIFIER") {
        s if s.is_empty() => "unknown".to_owned(),
        s => s,
    };
    let os = match wine_version() {
        Some(v) => format!("windows (under Wine {v}: figures describe Wine, not Windows)"),
        None => "windows".to_owned(),
    };
    super::Description {
        cpu,
        os,
        host: env("COMPUTERNAME"),
    }
}
