//! Unix: a sealed memfd (an unlinked `shm_open` object off Linux) handed
//! over a Unix socket with `SCM_RIGHTS`; the socket then carries liveness
//! and, off Linux, the wake-ups.

pub(crate) mod door;
pub(crate) mod wire;

#[cfg(not(loom))]
mod handshake;
#[cfg(not(loom))]
pub(crate) mod map;

#[cfg(not(loom))]
pub(crate) use bootstrap::*;

#[cfg(not(loom))]
mod bootstrap {
    use std::os::fd::OwnedFd;
    use std::sync::Arc;
    use std::task::Waker;
    use std::time::Duration;

    use ipc_core::{Address, Error, Listener, PeerInfo, Result, Transport};
    use tokio::net::UnixStream;

    use super::door::Door;
    use super::handshake;
    use super::wire::{AsyncWire, Wire};
    use crate::options::ShmOptions;
    use crate::region::Region;
    use crate::transport::Established;

    /// The bootstrap socket of an established connection.
    #[derive(Debug)]
    pub(crate) struct Conn(UnixStream);

    impl Conn {
        /// For an async transport.
        pub(crate) fn into_async(self, _joint: &Waker) -> Result<(Door, AsyncWire)> {
            Ok((Door, AsyncWire::new(self.0)))
        }

        /// For the async message API: the socket stays with the runtime for
        /// waiting, and a duplicate of it sends the wake-ups.
        pub(crate) fn into_async_messages(
            self,
            joint: &Waker,
        ) -> Result<((Door, Wire), AsyncWire)> {
            use std::os::fd::AsFd;
            let dup = self
                .0
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io("duplicating the bootstrap socket", e))?;
            let (door, wire) = self.into_async(joint)?;
            Ok(((door, Wire::new(dup)), wire))
        }

        /// For a blocking connection: the socket leaves the runtime.
        pub(crate) fn into_blocking(self) -> Result<(Door, Wire)> {
            let std = self
                .0
                .into_std()
                .map_err(|e| Error::io("detaching the bootstrap socket from the runtime", e))?;
            let fd: OwnedFd = std.into();
            Ok((Door, Wire::new(fd)))
        }
    }

    /// Connects the socket and receives the region.
    pub(crate) async fn connect(
        addr: &Address,
        _opts: &ShmOptions,
    ) -> Result<(Arc<Region>, Conn, PeerInfo)> {
        let sock_addr = handshake::socket_address(addr)?;
        let t = ipc_unix::connect(&sock_addr).await?;
        let peer = t.peer().clone();
        let mut sock = t.into_stream();
        let region = handshake::receive_region(&mut sock).await?;
        Ok((region, Conn(sock), peer))
    }

    /// The listening socket, which owns the endpoint (its file is removed on
    /// close), and the task accepting on a duplicate of it.
    #[derive(Debug)]
    pub(crate) struct Endpoint {
        unix: ipc_unix::UnixListener,
        task: tokio::task::JoinHandle<()>,
    }

    impl Endpoint {
        pub(crate) fn close(&mut self) -> Result<()> {
            self.task.abort();
            Listener::close(&mut self.unix)
        }
    }

    impl Drop for Endpoint {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Binds the bootstrap socket of `addr` and spawns the task that
    /// accepts, authenticates and hands over regions into `queue`. Must be
    /// called within a Tokio runtime.
    pub(crate) fn bind(
        addr: &Address,
        opts: &ShmOptions,
        queue: tokio::sync::mpsc::Sender<Result<Established>>,
    ) -> Result<Endpoint> {
        let sock_addr = handshake::socket_address(addr)?;
        let unix = ipc_unix::UnixListener::bind_with(
            &sock_addr,
            &ipc_unix::BindOptions::new().mode(opts.socket_mode),
        )?;
        // The accept task works on a duplicate of the listening socket; the
        // original stays in the endpoint and owns it (its file is removed on
        // close even while the task is being torn down).
        let dup = unix.as_tokio().ok_or(Error::Shutdown).and_then(|l| {
            let fd = std::os::fd::AsFd::as_fd(l)
                .try_clone_to_owned()
                .map_err(|e| Error::io("duplicating the listening socket", e))?;
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(std))
                .map_err(|e| Error::io("registering the listening socket", e))
        })?;
        let task = tokio::spawn(accept_loop(dup, opts.clone(), queue));
        Ok(Endpoint { unix, task })
    }

    /// Accepts, authenticates and hands over regions until the listener goes.
    async fn accept_loop(
        listener: tokio::net::UnixListener,
        opts: ShmOptions,
        queue: tokio::sync::mpsc::Sender<Result<Established>>,
    ) {
        loop {
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    let err = Error::io("accepting a shared-memory client", e);
                    if queue.send(Err(err)).await.is_err() {
                        return;
                    }
                    // Out of descriptors and the like: back off a little.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let peer = match ipc_unix::peer_info(&sock) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "reading a shared-memory client's credentials failed");
                    continue;
                }
            };
            if !opts.auth.allows(&peer) {
                handshake::refuse(&mut sock, &peer, &opts.auth).await;
                continue;
            }
            let established = match super::map::create(opts.ring_capacity) {
                Ok((region, fd)) => match handshake::send_region(&sock, &fd).await {
                    Ok(()) => Ok((region, Conn(sock), peer)),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "shared-memory handshake failed");
                        continue;
                    }
                },
                Err(e) => Err(e),
            };
            if queue.send(established).await.is_err() {
                return;
            }
        }
    }
}
