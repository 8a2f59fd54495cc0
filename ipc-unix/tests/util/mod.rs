//! Helpers shared by the integration tests: unique paths, a second process
//! (this test binary re-executed to run one test in a given role), and the
//! `nobody` identity for tests that need another user.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Environment variable that tells a re-executed test binary which role
/// the test should play.
pub const ROLE_VAR: &str = "IPC_UNIX_TEST_ROLE";
/// Environment variable carrying the address or path a child should use.
pub const ARG_VAR: &str = "IPC_UNIX_TEST_ARG";
/// Prefix of the lines a child reports on stdout.
pub const REPORT: &str = "IPC-CHILD:";

/// The role this process plays, if it is a child started by [`spawn_self`].
///
/// A child exits by itself after two minutes, so a parent waiting on its
/// report never hangs for ever.
pub fn child_role() -> Option<(String, String)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    static WATCHDOG: std::sync::Once = std::sync::Once::new();
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(120));
            eprintln!("child test process ran for 120 s; exiting");
            std::process::exit(3);
        });
    });
    Some((role, std::env::var(ARG_VAR).unwrap_or_default()))
}

/// Prints a line for the parent.
pub fn report(line: impl AsRef<str>) {
    println!("{REPORT} {}", line.as_ref());
}

/// A child process, killed on drop so a failed test leaves none behind.
pub struct ChildProc {
    pub child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl ChildProc {
    /// The next report line from the child; panics on end of output.
    pub fn next_report(&mut self) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("reading the child's stdout");
            // libtest may have printed "test name ... " on the same line.
            if let Some(at) = line.find(REPORT) {
                return line[at + REPORT.len()..].trim().to_owned();
            }
        }
        let status = self.child.wait();
        panic!("child ended without reporting (status {status:?})");
    }

    /// Waits for the child to exit and checks it succeeded.
    pub fn wait_ok(&mut self) {
        let status = self.child.wait().expect("waiting for the child");
        assert!(status.success(), "child failed: {status}");
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the test `test` of this test binary in a child process, playing
/// `role` with `arg`; optionally as another user and group.
pub fn spawn_self(test: &str, role: &str, arg: &str, user: Option<(u32, u32)>) -> ChildProc {
    let exe = std::env::current_exe().expect("current_exe");
    let exe = match user {
        Some(_) => reachable_by_everyone(&exe),
        None => exe,
    };
    let mut cmd = Command::new(&exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(ARG_VAR, arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some((uid, gid)) = user {
        // std drops supplementary groups (setgroups(0)) when root sets a uid.
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().expect("spawning the test binary as a child");
    let stdout = child.stdout.take().expect("child stdout");
    ChildProc {
        child,
        lines: BufReader::new(stdout).lines(),
    }
}

/// Blocks until the parent closes our stdin (or dies): a child's way to
/// stay alive exactly as long as the parent wants.
pub fn wait_for_parent() {
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

/// The test binary itself if every user can run it where it is, else a
/// copy in a world-readable temporary directory.
fn reachable_by_everyone(exe: &Path) -> PathBuf {
    let ok = exe.ancestors().skip(1).all(|d| {
        d.as_os_str().is_empty()
            || std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    }) && std::fs::metadata(exe).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
    if ok {
        return exe.to_owned();
    }
    let dir = public_tempdir().keep();
    let copy = dir.join(exe.file_name().expect("exe name"));
    std::fs::copy(exe, &copy).expect("copying the test binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// A temporary directory that every user may enter (mode 0755).
pub fn public_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A unique name for this process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The uid and gid of `nobody` (from /etc/passwd, else 65534).
pub fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == "nobody")
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
        .unwrap_or((65534, 65534))
}

/// Permission bits of the file at `path` (not following a symlink).
pub fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Names in a directory, sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Awaits `fut`, failing the test if it takes longer than a minute (a hang,
/// never a speed limit).
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(std::time::Duration::from_secs(60), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within 60 s: it hangs"),
    }
}
