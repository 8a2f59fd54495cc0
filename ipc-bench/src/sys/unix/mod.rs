//! Unix: CPU time from `/proc` (Linux) or `getrusage`, `kill(2)`, and the
//! local stream is a Unix domain socket (`ipc_unix`).

use std::path::Path;

pub mod ours;
pub mod peers;
pub mod raw;

pub const LOCAL_RAW: &str = "unix-raw";

/// The address of the socket at `endpoint`.
fn addr(endpoint: &Path) -> ipc_core::Address {
    ipc_core::Address::Unix(endpoint.to_path_buf())
}

/// Binds the workspace's Unix-socket listener at `endpoint`.
pub fn bind_local(endpoint: &Path) -> ipc_core::Result<ipc_unix::UnixListener> {
    ipc_unix::UnixListener::bind(&addr(endpoint))
}

/// Connects the workspace's Unix-socket transport to `endpoint`.
pub async fn connect_local(endpoint: &Path) -> ipc_core::Result<ipc_unix::UnixTransport> {
    ipc_unix::connect(&addr(endpoint)).await
}

/// Connects to another crate's server at `endpoint`: a Unix socket like ours.
pub async fn connect_foreign(endpoint: &Path) -> ipc_core::Result<ipc_unix::UnixTransport> {
    connect_local(endpoint).await
}

pub fn shm_name(endpoint: &Path) -> String {
    endpoint.to_string_lossy().into_owned()
}

/// What another crate's server binds for `endpoint`: the socket's path.
pub fn local_name(endpoint: &Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let s = endpoint.to_str().with_context(|| {
        format!(
            "{} is not UTF-8; set IPC_BENCH_ENDPOINT_DIR to a UTF-8 path",
            endpoint.display()
        )
    })?;
    Ok(s.to_owned())
}

/// The `interprocess` local-socket name for `endpoint`: the socket's path.
pub fn interprocess_name(
    endpoint: &Path,
) -> std::io::Result<interprocess::local_socket::Name<'static>> {
    use interprocess::local_socket::{GenericFilePath, ToFsName as _};
    endpoint.to_path_buf().to_fs_name::<GenericFilePath>()
}

pub fn not_built() -> Vec<(&'static str, &'static str)> {
    vec![(
        "npipe-raw, ipc-pipe, ipc-pipe-bytes, tokio-pipe",
        "Windows named pipes: Windows builds only",
    )]
}

pub fn cpu_ns(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // /proc/<pid>/task/<tid>/schedstat: "<ns on cpu> <ns waiting> <slices>",
        // nanosecond resolution, unlike the tick-based /proc/<pid>/stat. A
        // thread that exits while the list is read leaves an empty or missing
        // file: it is skipped, not taken as the whole process being unknown.
        // A process just forked may not have run yet: 0 ns is a figure too.
        let mut total = None;
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for t in tasks.flatten() {
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(ns) = ns {
                total = Some(total.unwrap_or(0) + ns);
            }
        }
        if total.is_some() {
            return total;
        }
        if pid == std::process::id() {
            return self_rusage_ns();
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    {
        if pid == std::process::id() {
            self_rusage_ns()
        } else {
            None
        }
    }
}

fn self_rusage_ns() -> Option<u64> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the pointer it is
    // given, which points to a zeroed, properly aligned rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it was zeroed before).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

pub fn kill(pid: u32) {
    // SAFETY: kill(2) has no memory effects; the caller passes its own
    // child, which is not reaped while the test it watches still runs.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

pub fn idle_priority() -> std::io::Result<&'static str> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with a
        // valid parameter block; it has no memory effects on our side.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok("SCHED_IDLE")
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: setpriority(2) on this process (id 0); no memory effects.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok("nice 19")
    }
}

pub fn stdio_files() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::AsFd;
    let r = std::io::stdin().as_fd().try_clone_to_owned()?;
    let w = std::io::stdout().as_fd().try_clone_to_owned()?;
    Ok((r.into(), w.into()))
}

pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(super) fn describe() -> super::Description {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let os = if kernel.is_empty() {
        std::env::consts::OS.to_owned()
    } else {
        format!("{} {kernel}", std::env::consts::OS)
    };
    let host = read("/proc/sys/kernel/hostname").trim().to_owned();
    super::Description { cpu, os, host }
}
