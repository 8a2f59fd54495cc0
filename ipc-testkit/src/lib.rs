//! What the workspace's tests and benchmark harnesses share: a second
//! process (often a copy of the running binary), started so that a
//! platform hiccup at process creation does not fail a run, and killed
//! however the test ends.
//!
//! ```no_run
//! use ipc_testkit::{spawn, test_binary, ChildGuard};
//!
//! // Re-run this binary executing only the test `child_entry`.
//! let mut cmd = test_binary("child_entry");
//! cmd.env("ROLE", "server");
//! let child = ChildGuard(spawn(&mut cmd));
//! // ... talk to it; it is killed and reaped when `child` drops.
//! # drop(child);
//! ```

use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The most attempts [`start`] makes at starting one process.
pub const SPAWN_ATTEMPTS: u32 = 5;

/// A command that re-runs the current test binary executing only the test
/// `test_name`, on one thread, with its output not captured. Add `--ignored`
/// when the entry point is an ignored test.
pub fn test_binary(test_name: &str) -> Command {
    let exe = std::env::current_exe().expect("the path of the running test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test_name, "--nocapture", "--test-threads=1"]);
    cmd
}

/// Starts `cmd`, panicking with the command and the OS error if it cannot
/// (after the retries of [`start`]).
pub fn spawn(cmd: &mut Command) -> Child {
    start(cmd).unwrap_or_else(|e| {
        panic!(
            "starting the child process {:?} {:?} failed: {e}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>()
        )
    })
}

/// Runs `cmd` to the end with its stdout and stderr captured, as
/// [`Command::output`] does, but started with [`start`]. Panics if it cannot
/// be started or waited for.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(cmd)
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {:?}: {e}", cmd.get_program()))
}

/// Starts `cmd`. A start-up failure the platform reports as an internal
/// error is tried again, up to [`SPAWN_ATTEMPTS`] times: Wine returns
/// `ERROR_INTERNAL_ERROR` (1359) from `CreateProcess` when the new process
/// dies while it is being set up, which happens on a loaded machine and
/// says nothing about the program started. Every other error is returned
/// at once.
///
/// # Errors
///
/// The error of the last attempt.
pub fn start(cmd: &mut Command) -> io::Result<Child> {
    let mut attempt = 1;
    loop {
        match cmd.spawn() {
            Err(e) if is_start_up_failure(&e) && attempt < SPAWN_ATTEMPTS => {
                eprintln!(
                    "starting {:?} failed at attempt {attempt} ({e}); trying again",
                    cmd.get_program()
                );
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Whether `e` is the platform failing to set a new process up, rather
/// than the command being wrong (missing file, no permission, ...).
fn is_start_up_failure(e: &io::Error) -> bool {
    /// `ERROR_INTERNAL_ERROR` from `winerror.h`.
    const ERROR_INTERNAL_ERROR: i32 = 1359;
    cfg!(windows) && e.raw_os_error() == Some(ERROR_INTERNAL_ERROR)
}

/// A child process that is killed and reaped when the test ends, however it
/// ends (a failed assertion included).
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_fails_at_once_naming_it() {
        // A retry would sleep 200 ms first.
        let started = std::time::Instant::now();
        let err = std::panic::catch_unwind(|| {
            ChildGuard(spawn(&mut Command::new("ipc-testkit-no-such-program")))
        })
        .expect_err("spawning a missing program must fail");
        let msg = err
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(msg.contains("ipc-testkit-no-such-program"), "{msg}");
        assert!(started.elapsed() < Duration::from_millis(200), "no retry");
    }

    #[test]
    fn output_captures_what_the_child_prints() {
        let out = output(&mut test_binary("tests::child_that_sleeps"));
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    #[test]
    fn only_the_internal_error_on_windows_is_a_start_up_failure() {
        let internal = std::io::Error::from_raw_os_error(1359);
        assert_eq!(is_start_up_failure(&internal), cfg!(windows));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!is_start_up_failure(&missing));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_guarded_child_is_killed_and_reaped_when_the_guard_drops() {
        let mut cmd = test_binary("tests::child_that_sleeps");
        cmd.env("IPC_TESTKIT_SLEEP", "1");
        let guard = ChildGuard(spawn(&mut cmd));
        let proc_entry = format!("/proc/{}", guard.0.id());
        assert!(std::path::Path::new(&proc_entry).exists());
        drop(guard);
        assert!(
            !std::path::Path::new(&proc_entry).exists(),
            "the child still exists (or was not reaped) after the guard dropped"
        );
    }

    /// The child of `a_guarded_child_is_killed_and_reaped_when_the_guard_drops`.
    #[test]
    fn child_that_sleeps() {
        if std::env::var_os("IPC_TESTKIT_SLEEP").is_some() {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}
