//! CPU time of processes, and a description of the machine.

use serde::Serialize;

/// CPU time (user + system) a process has used, in nanoseconds, summed over
/// its threads; `None` where the OS does not tell.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // /proc/<pid>/task/<tid>/schedstat: "<ns on cpu> <ns waiting> <slices>",
        // nanosecond resolution, unlike the tick-based /proc/<pid>/stat.
        let mut total = 0u64;
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s.split_whitespace().next()?.parse::<u64>().ok()?;
            }
        }
        if total > 0 {
            return Some(total);
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

#[cfg(unix)]
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

#[cfg(not(unix))]
fn self_rusage_ns() -> Option<u64> {
    None
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

/// The 1-minute load average, where the OS tells.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Machine {
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
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os,
            arch: std::env::consts::ARCH.to_owned(),
            host,
            load: [None, None],
        }
    }
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
        let before = cpu_ns(me).expect("this process's CPU time");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ns(me).unwrap() > before);
    }
}
