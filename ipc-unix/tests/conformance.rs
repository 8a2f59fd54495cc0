//! The ipc-core conformance suite, run against Unix sockets bound at paths
//! and (on Linux) in the abstract namespace, and again at paths with busy
//! polling on both ends.
#![cfg(unix)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ipc_core::conformance::Backend;
use ipc_core::{Address, BoxListener, BoxTransport, Result};
use ipc_unix::UnixListener;

fn bind(addr: &Address) -> Result<BoxListener> {
    Ok(Box::new(UnixListener::bind(addr)?))
}

/// Sockets at fresh paths in a private temporary directory, optionally with
/// busy-polled reads on both ends.
struct PathBackend {
    dir: tempfile::TempDir,
    next: AtomicUsize,
    busy_poll: Option<Duration>,
}

impl PathBackend {
    fn new() -> Self {
        PathBackend {
            dir: tempfile::tempdir().expect("tempdir"),
            next: AtomicUsize::new(0),
            busy_poll: None,
        }
    }

    fn busy_polling(budget: Duration) -> Self {
        PathBackend {
            busy_poll: Some(budget),
            ..PathBackend::new()
        }
    }

    fn bind(&self, addr: &Address) -> Result<BoxListener> {
        match self.busy_poll {
            None => bind(addr),
            Some(b) => Ok(Box::new(UnixListener::bind_with(
                addr,
                &ipc_unix::BindOptions::new().busy_poll(b),
            )?)),
        }
    }
}

#[async_trait]
impl Backend for PathBackend {
    fn name(&self) -> String {
        match self.busy_poll {
            None => "unix-path".into(),
            Some(b) => format!("unix-path-busy-poll-{b:?}"),
        }
    }

    async fn bind(&self) -> Result<BoxListener> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        PathBackend::bind(
            self,
            &Address::Unix(self.dir.path().join(format!("s{n}.sock"))),
        )
    }

    async fn connect(&self, addr: &Address) -> Result<BoxTransport> {
        let mut t = ipc_unix::connect(addr).await?;
        t.set_busy_poll(self.busy_poll);
        assert_eq!(t.busy_poll(), self.busy_poll);
        Ok(Box::new(t))
    }

    async fn bind_at(&self, addr: &Address) -> Option<Result<BoxListener>> {
        Some(PathBackend::bind(self, addr))
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

mod path_busy_poll {
    ipc_core::conformance_tests!(super::PathBackend::busy_polling(
        std::time::Duration::from_micros(50)
    ));
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
        Ok(Box::new(ipc_unix::connect(addr).await?))
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
