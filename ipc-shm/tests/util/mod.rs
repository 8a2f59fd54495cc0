//! Helpers shared by the integration tests.

use std::path::Path;

use ipc_core::Address;

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
