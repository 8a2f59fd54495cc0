//! The async byte-stream [`Transport`] over a shared region, and the
//! listener and connector that set it up.
//!
//! Waiting in async code uses the bootstrap socket as the doorbell: a task
//! that finds its ring empty (or full) announces it in its bell and waits
//! for the socket to become readable; the peer sends one byte only when it
//! sees the announcement. The socket is registered with the runtime's
//! reactor like any other, so no thread is parked or spawned per
//! connection, an idle connection costs nothing, and the peer's death (the
//! socket hanging up) wakes the same wait. Optionally, `poll_read` and
//! `poll_write` first spin for [`ShmOptions::async_spin`] for the lowest
//! latency.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipc_core::{Address, BoxTransport, Error, Listener, PeerInfo, Result, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

use crate::bell::Bells;
use crate::blocking::ShmConnection;
use crate::handshake;
use crate::layout::{CLIENT, CLOSED_GONE, CLOSED_WRITE, SERVER, WAIT_SOCKET};
use crate::link::{Link, WaitPolicy};
use crate::options::ShmOptions;
use crate::region::Region;
use crate::ring::{Consumer, Producer};
use crate::sync::spin_hint;

/// Wakes both the reading and the writing task when the socket rings.
#[derive(Debug, Default)]
struct Wakers {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl Wakers {
    fn set(slot: &Mutex<Option<Waker>>, w: &Waker) {
        let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
        if !g.as_ref().is_some_and(|old| old.will_wake(w)) {
            *g = Some(w.clone());
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        for slot in [&self.read, &self.write] {
            if let Some(w) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
        }
    }
}

/// An established shared-memory connection as a byte-stream [`Transport`].
///
/// Works with everything written against `Transport` (the JSON-RPC `Server`
/// and `Client`, codecs, `tokio::io` helpers). Bytes go through the ring
/// without system calls while both sides are busy; see the module
/// documentation for how waiting works.
pub struct ShmTransport {
    tx: Producer,
    rx: Consumer,
    partial: usize,
    bells: Bells,
    sock: UnixStream,
    peer: PeerInfo,
    wakers: Arc<Wakers>,
    joint: Waker,
    async_spin: Duration,
    hung_up: bool,
}

impl fmt::Debug for ShmTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmTransport")
            .field("peer", &self.peer)
            .field("ring_capacity", &self.tx.capacity())
            .finish_non_exhaustive()
    }
}

impl ShmTransport {
    fn new(
        region: Arc<Region>,
        side: usize,
        sock: UnixStream,
        peer: PeerInfo,
        opts: &ShmOptions,
    ) -> ShmTransport {
        let wakers = Arc::new(Wakers::default());
        ShmTransport {
            tx: Producer::new(region.clone(), side),
            rx: Consumer::new(region.clone(), 1 - side),
            partial: 0,
            bells: Bells::new(region, side),
            sock,
            peer,
            joint: Waker::from(wakers.clone()),
            wakers,
            async_spin: opts.async_spin,
            hung_up: false,
        }
    }

    /// Connects to the shared-memory server at `addr` (`shm:name`).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when nothing listens there; [`Error::Unauthorized`]
    /// when the server's auth policy refuses this process;
    /// [`Error::Protocol`] or [`Error::Corrupt`] when the server is not a
    /// shared-memory server or hands over a bad region.
    pub async fn connect(addr: &Address, opts: &ShmOptions) -> Result<ShmTransport> {
        let (region, sock, peer) = connect_raw(addr).await?;
        Ok(ShmTransport::new(region, CLIENT, sock, peer, opts))
    }

    fn notify(&self) {
        if self.bells.ring_peer() & WAIT_SOCKET != 0 {
            let _ = rustix::net::send(&self.sock, &[0], rustix::net::SendFlags::DONTWAIT);
        }
    }

    /// Waits for a wake-up byte or a hang-up on the socket.
    fn poll_socket(&mut self) -> Poll<()> {
        let mut cx = Context::from_waker(&self.joint);
        match self.sock.poll_read_ready(&mut cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => {
                self.hung_up = true;
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => {
                let mut buf = [0u8; 64];
                loop {
                    match self.sock.try_read(&mut buf) {
                        Ok(0) => {
                            self.hung_up = true;
                            break;
                        }
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => {
                            self.hung_up = true;
                            break;
                        }
                    }
                }
                Poll::Ready(())
            }
        }
    }

    fn spin_until(&mut self, mut ready: impl FnMut(&mut Self) -> bool) {
        let start = Instant::now();
        let mut n = 0u32;
        while !ready(self) {
            spin_hint();
            n = n.wrapping_add(1);
            if n % 32 == 0 && start.elapsed() >= self.async_spin {
                break;
            }
        }
    }
}

impl Transport for ShmTransport {
    fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl AsyncRead for ShmTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let (mut spun, mut prepared) = (this.async_spin.is_zero(), false);
        loop {
            // The closed flag first: what the peer published before closing
            // is then visible to the read below.
            let closed = this.hung_up || this.bells.peer_closed() != 0;
            match this
                .rx
                .try_read_stream(buf.initialize_unfilled(), &mut this.partial)
            {
                Err(e) => return Poll::Ready(Err(e.into())),
                Ok(Some(n)) => {
                    buf.advance(n);
                    this.notify();
                    return Poll::Ready(Ok(()));
                }
                Ok(None) if closed => return Poll::Ready(Ok(())),
                Ok(None) => {}
            }
            if !spun {
                spun = true;
                this.spin_until(|t| t.rx.watch().unwrap_or(true) || t.bells.peer_closed() != 0);
                continue;
            }
            if !prepared {
                Wakers::set(&this.wakers.read, cx.waker());
                this.bells.prepare_sleep(WAIT_SOCKET);
                prepared = true;
                continue;
            }
            match this.poll_socket() {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => prepared = false,
            }
        }
    }
}

impl AsyncWrite for ShmTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let (mut spun, mut prepared) = (this.async_spin.is_zero(), false);
        loop {
            if this.hung_up || this.bells.peer_closed() & CLOSED_GONE != 0 {
                return Poll::Ready(Err(Error::Disconnected.into()));
            }
            match this.tx.try_write_stream(buf) {
                Err(e) => return Poll::Ready(Err(e.into())),
                Ok(Some(n)) => {
                    this.notify();
                    return Poll::Ready(Ok(n));
                }
                Ok(None) => {}
            }
            if !spun {
                spun = true;
                this.spin_until(|t| {
                    t.tx.tail_moved().unwrap_or(true) || t.bells.peer_closed() != 0
                });
                continue;
            }
            if !prepared {
                Wakers::set(&this.wakers.write, cx.waker());
                this.bells.prepare_sleep(WAIT_SOCKET);
                prepared = true;
                continue;
            }
            match this.poll_socket() {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => prepared = false,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write is published before poll_write returns.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.bells.close(CLOSED_WRITE);
        this.notify();
        Poll::Ready(Ok(()))
    }
}

impl Drop for ShmTransport {
    fn drop(&mut self) {
        self.bells.close(CLOSED_WRITE | CLOSED_GONE);
        self.notify();
    }
}

/// Connects the socket and receives the region.
async fn connect_raw(addr: &Address) -> Result<(Arc<Region>, UnixStream, PeerInfo)> {
    let sock_addr = handshake::socket_address(addr)?;
    let t = ipc_unix::connect(&sock_addr).await?;
    let peer = t.peer().clone();
    let mut sock = t.into_stream();
    let region = handshake::receive_region(&mut sock).await?;
    Ok((region, sock, peer))
}

fn blocking_connection(
    region: Arc<Region>,
    side: usize,
    sock: UnixStream,
    peer: PeerInfo,
    opts: &ShmOptions,
) -> Result<ShmConnection> {
    let std = sock
        .into_std()
        .map_err(|e| Error::io("detaching the bootstrap socket from the runtime", e))?;
    let fd: OwnedFd = std.into();
    let link = Arc::new(Link {
        bells: Bells::new(region.clone(), side),
        sock: Some(fd),
        policy: WaitPolicy {
            spin: opts.spin,
            liveness: opts.liveness,
        },
        hung_up: Default::default(),
    });
    Ok(ShmConnection::from_parts(
        Producer::new(region.clone(), side),
        Consumer::new(region, 1 - side),
        link,
        opts.max_message,
        peer,
    ))
}

impl ShmConnection {
    /// Connects to the shared-memory server at `addr` (`shm:name`) for the
    /// blocking message API, from any thread: the handshake runs on a small
    /// runtime of its own, so no async runtime is needed.
    ///
    /// # Errors
    ///
    /// As [`ShmTransport::connect`].
    pub fn connect(addr: &Address, opts: &ShmOptions) -> Result<ShmConnection> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io("starting a runtime for the handshake", e))?;
        rt.block_on(Self::connect_async(addr, opts))
    }

    /// Connects for the blocking message API from async code.
    ///
    /// # Errors
    ///
    /// As [`ShmTransport::connect`].
    pub async fn connect_async(addr: &Address, opts: &ShmOptions) -> Result<ShmConnection> {
        let (region, sock, peer) = connect_raw(addr).await?;
        blocking_connection(region, CLIENT, sock, peer, opts)
    }
}

/// A shared-memory server endpoint: a local socket at the `shm:` address
/// where clients are authenticated and handed their rings.
///
/// A background task accepts clients as they connect, checks each one's
/// credentials against the auth policy (refusing, with the reason sent to
/// the client, those it does not admit) and hands it a fresh region; the
/// established connections wait in a queue (like a socket's backlog) until
/// [`accept`](Listener::accept) takes them. So a client's `connect` completes
/// even before the server calls `accept`.
///
/// # Examples
///
/// ```no_run
/// use ipc_core::Listener;
/// use ipc_shm::{ShmListener, ShmOptions};
///
/// # #[allow(dead_code)]
/// # async fn run() -> ipc_core::Result<()> {
/// let mut listener = ShmListener::bind_with(&"shm:fast".parse()?, ShmOptions::new())?;
/// let conn = listener.accept().await?; // a BoxTransport
/// # drop(conn);
/// # Ok(())
/// # }
/// ```
pub struct ShmListener {
    unix: ipc_unix::UnixListener,
    addr: Address,
    opts: ShmOptions,
    queue: tokio::sync::mpsc::Receiver<Result<Established>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

type Established = (Arc<Region>, UnixStream, PeerInfo);

/// Connections handed over but not yet accepted.
const BACKLOG: usize = 64;

impl fmt::Debug for ShmListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmListener")
            .field("addr", &self.addr)
            .field("opts", &self.opts)
            .finish()
    }
}

impl ShmListener {
    /// Binds `addr` (`shm:name` or `shm:/path`) with the default options.
    ///
    /// # Errors
    ///
    /// As `ipc_unix::UnixListener::bind` for the bootstrap socket, and
    /// [`Error::InvalidAddress`] for an address that is not `shm:`.
    ///
    /// Must be called within a Tokio runtime.
    pub fn bind(addr: &Address) -> Result<ShmListener> {
        Self::bind_with(addr, ShmOptions::default())
    }

    /// Binds `addr` with the given options.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind), and [`Error::Protocol`] for a ring capacity
    /// out of range.
    pub fn bind_with(addr: &Address, opts: ShmOptions) -> Result<ShmListener> {
        crate::layout::check_capacity(opts.ring_capacity).map_err(Error::Protocol)?;
        let sock_addr = handshake::socket_address(addr)?;
        let unix = ipc_unix::UnixListener::bind_with(
            &sock_addr,
            &ipc_unix::BindOptions::new().mode(opts.socket_mode),
        )?;
        // The accept task works on a duplicate of the listening socket; the
        // original stays here and owns the endpoint (its file is removed on
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
        let (tx, queue) = tokio::sync::mpsc::channel(BACKLOG);
        let task = tokio::spawn(accept_loop(dup, opts.clone(), tx));
        Ok(ShmListener {
            unix,
            addr: addr.clone(),
            opts,
            queue,
            task: Some(task),
        })
    }

    async fn accept_raw(&mut self) -> Result<Established> {
        if self.task.is_none() {
            return Err(Error::Shutdown);
        }
        match self.queue.recv().await {
            Some(r) => r,
            None => Err(Error::Shutdown),
        }
    }

    /// Accepts the next client as an async [`ShmTransport`].
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] after close; accept errors of the socket, and
    /// failures to create a region (out of memory or descriptors), after
    /// which the listener is still usable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: established connections wait in the queue.
    pub async fn accept_shm(&mut self) -> Result<ShmTransport> {
        let (region, sock, peer) = self.accept_raw().await?;
        Ok(ShmTransport::new(region, SERVER, sock, peer, &self.opts))
    }

    /// Accepts the next client for the blocking message API.
    ///
    /// # Errors
    ///
    /// As [`accept_shm`](Self::accept_shm).
    pub async fn accept_connection(&mut self) -> Result<ShmConnection> {
        let (region, sock, peer) = self.accept_raw().await?;
        blocking_connection(region, SERVER, sock, peer, &self.opts)
    }

    /// The options this listener was bound with.
    pub fn options(&self) -> &ShmOptions {
        &self.opts
    }
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
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
        let established = match crate::map::create(opts.ring_capacity) {
            Ok((region, fd)) => match handshake::send_region(&sock, &fd).await {
                Ok(()) => Ok((region, sock, peer)),
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

#[async_trait]
impl Listener for ShmListener {
    async fn accept(&mut self) -> Result<BoxTransport> {
        Ok(Box::new(self.accept_shm().await?))
    }

    fn local_addr(&self) -> &Address {
        &self.addr
    }

    fn close(&mut self) -> Result<()> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.queue.close();
        Listener::close(&mut self.unix)
    }
}
