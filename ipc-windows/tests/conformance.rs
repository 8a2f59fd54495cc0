//! The ipc-core conformance suite, run against named pipes.
#![cfg(windows)]

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ipc_core::conformance::Backend;
use ipc_core::{Address, BoxListener, BoxTransport, Result};
use ipc_windows::{PipeListener, PipeOptions};

/// Pipes with fresh names, unique to this process and backend instance.
struct PipeBackend {
    prefix: String,
    next: AtomicUsize,
}

impl PipeBackend {
    fn new() -> Self {
        static INSTANCE: AtomicUsize = AtomicUsize::new(0);
        PipeBackend {
            prefix: format!(
                "ipc-windows-conformance-{}-{}",
                std::process::id(),
                INSTANCE.fetch_add(1, Ordering::Relaxed)
            ),
            next: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Backend for PipeBackend {
    fn name(&self) -> String {
        "windows-pipe".into()
    }

    async fn bind(&self) -> Result<BoxListener> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let addr = Address::Pipe(format!("{}-{n}", self.prefix));
        Ok(Box::new(PipeListener::bind(&addr)?))
    }

    async fn connect(&self, addr: &Address) -> Result<BoxTransport> {
        Ok(Box::new(ipc_windows::connect(addr).await?))
    }

    /// As the facade binds: a name that was just closed gets its instances
    /// released first (see `PipeListener::bind_when_released`).
    async fn bind_at(&self, addr: &Address) -> Option<Result<BoxListener>> {
        let bound = PipeListener::bind_when_released(addr, &PipeOptions::new()).await;
        Some(bound.map(|l| Box::new(l) as BoxListener))
    }
}

ipc_core::conformance_tests!(PipeBackend::new());
