//! Helpers shared by the integration tests.

use std::path::Path;
use std::process::Stdio;

use ipc_core::Address;
use ipc_testkit::{spawn, test_binary, ChildGuard};

/// The environment variable that tells a test binary re-run as a child
/// which role to play (its `child_entry` test reads it).
pub const ROLE: &str = "IPC_SHM_ROLE";
/// The environment variable with the address the child connects to.
pub const ADDR: &str = "IPC_SHM_ADDR";

/// Re-runs this test binary's `child_entry` test as a child in `role`
/// against `addr`, its stdin piped and its stdout as given.
#[allow(dead_code)]
pub fn spawn_child(role: &str, addr: &Address, stdout: Stdio) -> ChildGuard {
    let mut cmd = test_binary("child_entry");
    cmd.env(ROLE, role)
        .env(ADDR, addr.to_string())
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit());
    ChildGuard(spawn(&mut cmd))
}

/// A fresh `shm:` address: a socket in `dir` on Unix, a pipe name unique to
/// this process on Windows (pipes live in a namespace of their own).
#[cfg(unix)]
pub fn temp_addr(dir: &Path) -> Address {
    format!("shm:{}", dir.join("s.sock").display())
        .parse()
        .unwrap()
}

/// A fresh `shm:` address: a socket in `dir` on Unix, a pipe name unique to
/// this process on Windows (pipes live in a namespace of their own).
#[cfg(windows)]
pub fn temp_addr(_dir: &Path) -> Address {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("shm:ipc-shm-test-{}-{n}", std::process::id())
        .parse()
        .unwrap()
}
