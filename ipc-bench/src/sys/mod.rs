//! What differs between operating systems: CPU time of processes, stopping
//! a process, a description of the machine, the platform's local transport
//! and the mechanisms that exist on one platform only. Each platform is one
//! module (`unix`, `windows`) with the same items; the rest of the crate
//! uses them through this one.

use serde::Serialize;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// The workspace's local stream on this platform (`ipc_unix` sockets,
/// `ipc_windows` named pipes): bind at an endpoint, connect to it, and the
/// name another crate's server binds for it.
pub use imp::{bind_local, connect_local, interprocess_name, local_name};

/// Connects our transport to another crate's server on this platform's
/// local stream at `endpoint` (jsonrpc-ipc-server's): `connect_local` on
/// Unix; on Windows a byte-mode tokio pipe client, since such servers make
/// byte-type pipes and `ipc_windows::connect` probes for message mode first,
/// which costs the server a pipe instance on every attempt.
pub use imp::connect_foreign;

/// The `shm:` name of the shared-memory endpoint at `endpoint`: its path on
/// Unix (the handshake socket's), a pipe name on Windows.
pub use imp::shm_name;

/// The raw baseline of this platform's local stream (a blocking Unix socket,
/// or a blocking Win32 named pipe): the floor the platform-independent
/// mechanisms (pipe pair, TCP, spin mapping) are compared with.
pub const LOCAL_RAW: &str = imp::LOCAL_RAW;

/// Baselines only this platform has.
pub fn raw_mechanisms() -> Vec<crate::mech::Mechanism> {
    imp::raw::mechanisms()
}

/// This workspace's transports only this platform has, at the raw-frame level.
pub fn our_mechanisms() -> Vec<crate::mech::Mechanism> {
    imp::ours::mechanisms()
}

/// Peer crates only this platform has.
pub fn peer_mechanisms() -> Vec<crate::mech::Mechanism> {
    imp::peers::mechanisms()
}

/// Mechanisms of the other platforms, named in the report as not built here.
pub fn not_built() -> Vec<(&'static str, &'static str)> {
    imp::not_built()
}

/// CPU time (user + system) a process has used, in nanoseconds, summed over
/// its threads; `None` where the OS does not tell.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    imp::cpu_ns(pid)
}

/// Puts the calling thread at the lowest scheduling priority the OS offers
/// (`SCHED_IDLE` on Linux, which runs only when nothing else wants the CPU;
/// `nice 19` on other Unix systems; `THREAD_PRIORITY_IDLE` on Windows) and
/// returns the name of it, for the busy loops of `--keep-cpus-awake`.
pub fn idle_priority() -> std::io::Result<&'static str> {
    imp::idle_priority()
}

/// Ends a child process at once (the watchdog's last resort).
pub fn kill(pid: u32) {
    imp::kill(pid);
}

/// This process's stdin and stdout as files, for blocking reads and writes
/// that bypass std's buffered `Stdin`/`Stdout`.
pub fn stdio_files() -> std::io::Result<(std::fs::File, std::fs::File)> {
    imp::stdio_files()
}

/// The 1-minute load average, where the OS tells.
pub fn load_average() -> Option<f64> {
    imp::load_average()
}

/// What the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// Operating system and kernel release.
    pub os: String,
    /// Architecture.
    pub arch: String,
    /// Host name.
    pub host: String,
    /// 1-minute load average when the run started and when it ended
    /// (other work on the machine disturbs the figures, spinning ones most).
    pub load: [Option<f64>; 2],
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Machine {
        let d = imp::describe();
        Machine {
            cpu: d.cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: d.os,
            arch: std::env::consts::ARCH.to_owned(),
            host: d.host,
            load: [None, None],
        }
    }
}

/// What the platform module tells about the machine.
#[derive(Debug, Default)]
struct Description {
    cpu: String,
    os: String,
    host: String,
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let me = std::process::id();
        #[cfg(windows)]
        if imp::under_wine() {
            // Wine reports the caller's times for every process: none is shown.
            assert_eq!(cpu_ns(me), None);
            return;
        }
        let before = cpu_ns(me).expect("this process's CPU time");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        // Windows counts process time in clock ticks (about 15.6 ms).
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ns(me).unwrap() > before);
    }

    #[test]
    fn pipe_names_come_from_the_endpoint_and_hold_only_allowed_characters() {
        #[cfg(windows)]
        {
            let p = std::path::Path::new(r"C:\Temp\ipc-bench-Ab12\ipc pipe.ep");
            assert_eq!(imp::pipe_name(p), "ipc-bench-Ab12-ipc_pipe.ep");
            assert_eq!(
                local_name(p).unwrap(),
                r"\\.\pipe\ipc-bench-Ab12-ipc_pipe.ep"
            );
            let a = imp::pipe_name(std::path::Path::new(r"C:\t\run-1\x.ep"));
            let b = imp::pipe_name(std::path::Path::new(r"C:\t\run-2\x.ep"));
            assert_ne!(a, b, "two runs' directories give two names");
        }
        #[cfg(unix)]
        {
            let p = std::path::Path::new("/tmp/ipc-bench-Ab12/unix-raw.ep");
            assert_eq!(local_name(p).unwrap(), "/tmp/ipc-bench-Ab12/unix-raw.ep");
        }
    }
}
