//! Windows: an unnamed, pagefile-backed file mapping and two auto-reset
//! events, created by the client and duplicated out of it by the server
//! after the server authenticated it on a named pipe (the ipc-windows
//! crate). Afterwards the events carry the wake-ups and each side watches
//! the other's process handle to learn of its death.

pub(crate) mod door;
pub(crate) mod wire;

#[cfg(not(loom))]
mod handshake;
#[cfg(not(loom))]
pub(crate) mod map;
#[cfg(not(loom))]
mod process;

#[cfg(not(loom))]
pub(crate) use bootstrap::*;

#[cfg(not(loom))]
mod bootstrap {
    use std::sync::Arc;
    use std::task::Waker;
    use std::time::Duration;

    use ipc_core::{Address, Error, PeerInfo, Result};
    use ipc_windows::{PipeListener, PipeOptions};
    use tokio::sync::mpsc::Sender;

    use super::door::Door;
    use super::wire::{AsyncWire, Wire};
    use super::{handshake, process};
    use crate::options::ShmOptions;
    use crate::region::Region;
    use crate::transport::Established;

    /// How long a client may take over the handshake before the server
    /// gives up on it.
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// The handles of an established connection.
    #[derive(Debug)]
    pub(crate) struct Conn(Door);

    impl Conn {
        /// For an async transport: registers the waits that wake `joint`.
        pub(crate) fn into_async(self, joint: &Waker) -> Result<(Door, AsyncWire)> {
            let wire = AsyncWire::new(&self.0, joint)
                .map_err(|e| Error::io("registering the doorbell with the thread pool", e))?;
            Ok((self.0, wire))
        }

        /// For the async message API: the waits registered for the task,
        /// and the door (which sets the peer's event) for the wake-ups.
        pub(crate) fn into_async_messages(
            self,
            joint: &Waker,
        ) -> Result<((Door, Wire), AsyncWire)> {
            let (door, wire) = self.into_async(joint)?;
            Ok(((door, Wire::connected()), wire))
        }

        /// For a blocking connection.
        pub(crate) fn into_blocking(self) -> Result<(Door, Wire)> {
            Ok((self.0, Wire::connected()))
        }
    }

    /// The named pipe a `shm:` address bootstraps over: `shm:name` is
    /// `pipe:name` (`\\.\pipe\name`).
    pub(crate) fn pipe_address(addr: &Address) -> Result<Address> {
        match addr {
            Address::Shm(name) => Ok(Address::Pipe(name.clone())),
            other => Err(Error::InvalidAddress {
                input: other.to_string(),
                reason: "the shared-memory backend serves only shm: addresses".into(),
                expected: "shm:name",
            }),
        }
    }

    /// Connects the pipe, hands over a region and waits for the server to
    /// take it.
    pub(crate) async fn connect(
        addr: &Address,
        _opts: &ShmOptions,
    ) -> Result<(Arc<Region>, Conn, PeerInfo)> {
        let pipe_addr = pipe_address(addr)?;
        let connected_at = process::now();
        let mut pipe = ipc_windows::connect(&pipe_addr).await?;
        let peer = pipe.peer_info().clone();
        let (region, door) = handshake::connect(&mut pipe, &peer, connected_at).await?;
        Ok((region, Conn(door), peer))
    }

    /// The pipe's accept loop, on a thread of its own so that closing the
    /// endpoint can wait until the pipe is gone.
    #[derive(Debug)]
    pub(crate) struct Endpoint {
        stop: Option<tokio::sync::oneshot::Sender<std::sync::mpsc::Sender<()>>>,
    }

    impl Endpoint {
        /// Closes the pipe; returns once no client can reach it.
        pub(crate) fn close(&mut self) -> Result<()> {
            if let Some(stop) = self.stop.take() {
                let (ack, closed) = std::sync::mpsc::channel();
                if stop.send(ack).is_ok() {
                    let _ = closed.recv_timeout(Duration::from_secs(10));
                }
            }
            Ok(())
        }
    }

    impl Drop for Endpoint {
        fn drop(&mut self) {
            let _ = self.close();
        }
    }

    /// Binds the pipe of `addr` and starts the loop that accepts,
    /// authenticates and hands over regions into `queue`.
    pub(crate) fn bind(
        addr: &Address,
        opts: &ShmOptions,
        queue: Sender<Result<Established>>,
    ) -> Result<Endpoint> {
        let pipe_addr = pipe_address(addr)?;
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("ipc-shm-accept".into())
            .spawn(move || accept_thread(pipe_addr, opts, queue, ready_tx, stopped))
            .map_err(|e| Error::io("starting the shared-memory accept thread", e))?;
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Protocol(
                    "the shared-memory accept thread ended during bind".into(),
                ))
            }
        }
        Ok(Endpoint { stop: Some(stop) })
    }

    fn accept_thread(
        pipe_addr: Address,
        opts: ShmOptions,
        queue: Sender<Result<Established>>,
        ready: std::sync::mpsc::Sender<Result<()>>,
        mut stopped: tokio::sync::oneshot::Receiver<std::sync::mpsc::Sender<()>>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(Error::io("starting the accept runtime", e)));
                return;
            }
        };
        rt.block_on(async move {
            let mut listener =
                match PipeListener::bind_when_released(&pipe_addr, &PipeOptions::new()).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
            let _ = ready.send(Ok(()));
            // Closing the listener closes the queue before it stops the
            // endpoint, so either may come first; both end here, and the
            // thread ends (dropping `stopped`, which releases a waiting
            // `close`) only once the pipe is gone.
            let ack = loop {
                tokio::select! {
                    biased;
                    ack = &mut stopped => break ack.ok(),
                    () = queue.closed() => break None,
                    accepted = listener.accept() => match accepted {
                        Ok(pipe) => {
                            let at = process::now();
                            tokio::spawn(admit(pipe, at, opts.clone(), queue.clone()));
                        }
                        Err(e) => {
                            if queue.send(Err(e)).await.is_err() {
                                break None;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    },
                }
            };
            listener.close();
            drop(listener);
            pipe_gone(&pipe_addr).await;
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        });
    }

    /// Waits (at most five seconds) until no instance of the pipe exists: a
    /// closed instance's handle is released only once the runtime has seen
    /// its pending connect cancelled. `PipeListener::close` already keeps
    /// clients from reaching such an instance; this makes `close` return
    /// only once the name is gone, so it can be bound again at once. The
    /// bound is in time, not in checks: on a loaded machine the release can
    /// take a while.
    async fn pipe_gone(pipe_addr: &Address) {
        use windows_sys::Win32::Foundation::{GetLastError, ERROR_FILE_NOT_FOUND};
        use windows_sys::Win32::System::Pipes::WaitNamedPipeW;
        let Ok(path) = ipc_windows::pipe_path(pipe_addr) else {
            return;
        };
        let wide: Vec<u16> = path.encode_utf16().chain(Some(0)).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            // SAFETY: `wide` is a NUL-terminated UTF-16 string that outlives
            // the call; GetLastError reads this thread's last error.
            let gone = unsafe {
                WaitNamedPipeW(wide.as_ptr(), 1) == 0 && GetLastError() == ERROR_FILE_NOT_FOUND
            };
            if gone {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pipe = %path, "the pipe still has instances 5 s after closing");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Authenticates one client and hands it a region.
    async fn admit(
        mut pipe: ipc_windows::PipeTransport,
        accepted_at: u64,
        opts: ShmOptions,
        queue: Sender<Result<Established>>,
    ) {
        let peer = pipe.peer_info().clone();
        if !opts.auth.allows(&peer) {
            handshake::refuse(&mut pipe, &peer, &opts.auth).await;
            return;
        }
        let served = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake::serve(&mut pipe, &peer, accepted_at, opts.ring_capacity),
        )
        .await;
        match served {
            Ok(Ok((region, door))) => {
                let _ = queue.send(Ok((region, Conn(door), peer))).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "shared-memory handshake failed");
            }
            Err(_) => {
                tracing::debug!(%peer, "shared-memory handshake timed out");
            }
        }
    }
}
