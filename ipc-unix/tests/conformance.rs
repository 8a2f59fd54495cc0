//! The ipc-core conformance suite, run against Unix sockets bound at paths
//! and (on Linux) in the abstract namespace.
#![cfg(unix)]

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ipc_core::conformance::Backend;
use ipc_core::{Address, BoxListener, BoxTransport, Result};
use ipc_unix::UnixListener;

async fn connect(addr: &Address) -> Result<BoxTransport> {
    Ok(Box::new(ipc_unix::connect(addr).await?))
}

fn bind(addr: &Address) -> Result<BoxListener> {
    Ok(Box::new(UnixListener::bind(addr)?))
}

/// Sockets at fresh paths in a private temporary directory.
struct PathBackend {
    dir: tempfile::TempDir,
    next: AtomicUsize,
}

impl PathBackend {
    fn new() -> Self {
        PathBackend {
            dir: tempfile::tempdir().expect("tempdir"),
            next: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Backend for PathBackend {
    fn name(&self) -> String {
        "unix-path".into()
    }

    async fn bind(&self) -> Result<BoxListener> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        bind(&Address::Unix(self.dir.path().join(format!("s{n}.sock"))))
    }

    async fn connect(&self, addr: &Address) -> Result<BoxTransport> {
        connect(addr).await
    }

    async fn bind_at(&self, addr: &Address) -> Option<Result<BoxListener>> {
        Some(bind(addr))
    }

    fn endpoint_exists(&self, addr: &Address) -> Option<bool> {
        match addr {
            Address::Unix(p) => Some(p.symlink_metadata().is_ok()),
            _ => None,
        }
    }
}

mod path {
    ipc_core::conformance_tests!(super::PathBackend::new());
}

/// Sockets with fresh names in the Linux abstract namespace.
#[cfg(any(target_os = "linux", target_os = "android"))]
struct AbstractBackend {
    prefix: String,
    next: AtomicUsize,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl AbstractBackend {
    fn new() -> Self {
        static INSTANCE: AtomicUsize = AtomicUsize::new(0);
        AbstractBackend {
            prefix: format!(
                "ipc-unix-conformance-{}-{}",
                std::process::id(),
                INSTANCE.fetch_add(1, Ordering::Relaxed)
            ),
            next: AtomicUsize::new(0),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[async_trait]
impl Backend for AbstractBackend {
    fn name(&self) -> String {
        "unix-abstract".into()
    }

    async fn bind(&self) -> Result<BoxListener> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        bind(&Address::UnixAbstract(format!("{}-{n}", self.prefix)))
    }

    async fn connect(&self, addr: &Address) -> Result<BoxTransport> {
        connect(addr).await
    }

    async fn bind_at(&self, addr: &Address) -> Option<Result<BoxListener>> {
        Some(bind(addr))
    }

    /// Listening abstract sockets are listed in /proc/net/unix as `@name`.
    fn endpoint_exists(&self, addr: &Address) -> Option<bool> {
        let Address::UnixAbstract(name) = addr else {
            return None;
        };
        let table = std::fs::read_to_string("/proc/net/unix").ok()?;
        let needle = format!("@{name}");
        Some(
            table
                .lines()
                .any(|l| l.split_whitespace().last() == Some(needle.as_str())),
        )
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod abstract_namespace {
    ipc_core::conformance_tests!(super::AbstractBackend::new());
}
