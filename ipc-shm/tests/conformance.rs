//! The ipc-core conformance suite, run against the shared-memory transport
//! (bootstrapped over Unix sockets, or named pipes on Windows).
#![cfg(any(unix, windows))]

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ipc_core::conformance::Backend;
use ipc_core::{Address, BoxListener, BoxTransport, Result};
use ipc_shm::{ShmListener, ShmOptions, ShmTransport};

/// Rings small enough that the 4 MiB messages of the suite wrap many times,
/// large enough to buffer the 100 kB reply of `half_close` (as a socket does).
fn opts() -> ShmOptions {
    ShmOptions::new().ring_capacity(256 * 1024)
}

/// Endpoints at fresh socket paths in a private temporary directory (on
/// Windows, fresh pipe names unique to this process).
struct ShmBackend {
    dir: tempfile::TempDir,
    next: AtomicUsize,
}

impl ShmBackend {
    fn new() -> Self {
        ShmBackend {
            dir: tempfile::tempdir().expect("tempdir"),
            next: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Backend for ShmBackend {
    fn name(&self) -> String {
        "shm".into()
    }

    async fn bind(&self) -> Result<BoxListener> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let addr: Address = if cfg!(windows) {
            // One pipe namespace for every test of this process.
            static PIPES: AtomicUsize = AtomicUsize::new(0);
            let n = PIPES.fetch_add(1, Ordering::Relaxed);
            format!("shm:ipc-shm-conformance-{}-{n}", std::process::id()).parse()?
        } else {
            let path = self.dir.path().join(format!("s{n}.sock"));
            format!("shm:{}", path.display()).parse()?
        };
        Ok(Box::new(ShmListener::bind_with(&addr, opts())?))
    }

    async fn connect(&self, addr: &Address) -> Result<BoxTransport> {
        Ok(Box::new(ShmTransport::connect(addr, &opts()).await?))
    }

    async fn bind_at(&self, addr: &Address) -> Option<Result<BoxListener>> {
        Some(ShmListener::bind_with(addr, opts()).map(|l| Box::new(l) as BoxListener))
    }

    /// A socket file on Unix; a pipe has no file (connecting tells instead).
    fn endpoint_exists(&self, addr: &Address) -> Option<bool> {
        match addr {
            Address::Shm(p) if cfg!(unix) => Some(std::path::Path::new(p).exists()),
            _ => None,
        }
    }
}

ipc_core::conformance_tests!(ShmBackend::new());
