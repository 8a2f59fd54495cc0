//! The async byte-stream [`Transport`] over a shared region, and the
//! listener and connector that set it up.
//!
//! Waiting in async code: a task that finds its ring empty (or full)
//! announces it in its bell and waits for the doorbell; the peer rings only
//! when it sees the announcement. On Unix the doorbell is the bootstrap
//! socket (the peer sends one byte), registered with the runtime's reactor
//! like any other, and the peer's death (the socket hanging up) wakes the
//! same wait. On Windows it is this side's auto-reset event, and the peer's
//! process handle signals its death; both are waited on by the system
//! thread pool (`RegisterWaitForSingleObject`), which wakes the task. Either
//! way no thread is parked or spawned per connection and an idle connection
//! costs nothing. Optionally, `poll_read` and `poll_write` first spin for
//! [`ShmOptions::async_spin`] for the lowest latency, a few microseconds at a
//! time, handing the thread back to the runtime in between so that the other
//! tasks on it keep running.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipc_core::{Address, BoxTransport, Error, Listener, PeerInfo, Result, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bell::Bells;
use crate::blocking::ShmConnection;
use crate::layout::{CLIENT, CLOSED_GONE, CLOSED_WRITE, SERVER, WAIT_SOCKET};
use crate::link::{Link, WaitPolicy};
use crate::options::ShmOptions;
use crate::region::Region;
use crate::ring::{Consumer, Producer};
use crate::sync::spin_hint;
use crate::sys::wire::{AsyncWire, ASYNC_SLEEP};
use crate::sys::{self, Conn};

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
    wire: AsyncWire,
    peer: PeerInfo,
    wakers: Arc<Wakers>,
    joint: Waker,
    async_spin: Duration,
    /// When the current read found the ring empty, while it spins.
    read_spin: Option<Instant>,
    /// When the current write found the ring full, while it spins.
    write_spin: Option<Instant>,
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
        conn: Conn,
        peer: PeerInfo,
        opts: &ShmOptions,
    ) -> Result<ShmTransport> {
        let wakers = Arc::new(Wakers::default());
        let joint = Waker::from(wakers.clone());
        let (door, wire) = conn.into_async(&joint)?;
        Ok(ShmTransport {
            tx: Producer::new(region.clone(), side),
            rx: Consumer::new(region.clone(), 1 - side),
            partial: 0,
            // An async side parks far more often than a blocking one (its
            // spin is short and comes in slices), and a barrier at each park
            // interrupted the peer's CPU often enough to cost more than the
            // fences it saved (see `crate::bell`): it keeps the fences.
            bells: Bells::new(region, side, door, false),
            wire,
            peer,
            joint,
            wakers,
            async_spin: opts.async_spin,
            read_spin: None,
            write_spin: None,
            hung_up: false,
        })
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
        let (region, conn, peer) = sys::connect(addr, opts).await?;
        ShmTransport::new(region, CLIENT, conn, peer, opts)
    }

    fn notify(&self) {
        if self.bells.ring_peer() & WAIT_SOCKET != 0 {
            self.wire.send_wake();
        }
    }

    /// Waits for the doorbell or the peer's death.
    fn poll_socket(&mut self) -> Poll<()> {
        self.wire.poll_wait(&self.joint, &mut self.hung_up)
    }

    /// Spins for what `ready` waits for, as part of a wait that started at
    /// `*since` (now, if it is `None`): in place for at most [`SPIN_SLICE`],
    /// then, while the wait's [`ShmOptions::async_spin`] lasts, by handing
    /// the thread back to the runtime and spinning again when polled.
    ///
    /// Handing the thread back matters when what the peer waits for is a
    /// task of this process (a reply queued for another task to write, a
    /// caller about to send its next request): it runs before the next
    /// slice instead of after the whole spin.
    fn spin(
        &mut self,
        since: &mut Option<Instant>,
        cx: &mut Context<'_>,
        mut ready: impl FnMut(&mut Self) -> bool,
    ) -> Spin {
        if self.async_spin.is_zero() {
            return Spin::Over;
        }
        let now = Instant::now();
        let start = *since.get_or_insert(now);
        let left = self
            .async_spin
            .saturating_sub(now.saturating_duration_since(start));
        if left.is_zero() {
            return Spin::Over;
        }
        let slice = left.min(SPIN_SLICE);
        let mut n = 0u32;
        loop {
            if ready(self) {
                return Spin::Ready;
            }
            spin_hint();
            n = n.wrapping_add(1);
            if n % 32 == 0 && now.elapsed() >= slice {
                if slice == left {
                    return Spin::Over;
                }
                // Its first poll arranges the wake-up and returns `Pending`.
                let _ = pin!(tokio::task::yield_now()).poll(cx);
                return Spin::Again;
            }
        }
    }
}

/// Longest a spinning read or write holds the runtime's thread at a time.
const SPIN_SLICE: Duration = Duration::from_micros(2);

/// What [`ShmTransport::spin`] came to.
enum Spin {
    /// What it waited for may have come: look again.
    Ready,
    /// Not yet; the task is to be polled again soon, and the poll returns
    /// `Pending`.
    Again,
    /// The spin is over: wait on the doorbell.
    Over,
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
        let mut prepared = false;
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
                    this.read_spin = None;
                    buf.advance(n);
                    this.notify();
                    return Poll::Ready(Ok(()));
                }
                Ok(None) if closed => {
                    this.read_spin = None;
                    return Poll::Ready(Ok(()));
                }
                Ok(None) => {}
            }
            if !prepared {
                let mut since = this.read_spin.take();
                let spun = this.spin(&mut since, cx, |t| {
                    t.rx.watch() || t.bells.peer_closed() != 0
                });
                this.read_spin = since;
                match spun {
                    Spin::Ready => continue,
                    Spin::Again => return Poll::Pending,
                    Spin::Over => {}
                }
                Wakers::set(&this.wakers.read, cx.waker());
                this.bells.prepare_sleep(ASYNC_SLEEP);
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
        let mut prepared = false;
        loop {
            if this.hung_up || this.bells.peer_closed() & CLOSED_GONE != 0 {
                return Poll::Ready(Err(Error::Disconnected.into()));
            }
            match this.tx.try_write_stream(buf) {
                Err(e) => return Poll::Ready(Err(e.into())),
                Ok(Some(n)) => {
                    this.write_spin = None;
                    this.notify();
                    return Poll::Ready(Ok(n));
                }
                Ok(None) => {}
            }
            if !prepared {
                let mut since = this.write_spin.take();
                // Only the peer's going away ends a write (a peer that shut
                // down its write half still reads): anything else that made
                // the spin look again would keep it in place past its slice.
                let spun = this.spin(&mut since, cx, |t| {
                    t.tx.tail_moved().unwrap_or(true) || t.bells.peer_closed() & CLOSED_GONE != 0
                });
                this.write_spin = since;
                match spun {
                    Spin::Ready => continue,
                    Spin::Again => return Poll::Pending,
                    Spin::Over => {}
                }
                Wakers::set(&this.wakers.write, cx.waker());
                this.bells.prepare_sleep(ASYNC_SLEEP);
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

fn blocking_connection(
    region: Arc<Region>,
    side: usize,
    conn: Conn,
    peer: PeerInfo,
    opts: &ShmOptions,
) -> Result<ShmConnection> {
    let (door, wire) = conn.into_blocking()?;
    let link = Arc::new(Link {
        bells: Bells::new(region.clone(), side, door, !opts.spin.is_zero()),
        wire,
        policy: WaitPolicy {
            spin: opts.spin,
            liveness: opts.liveness,
            busy_spin: crate::link::BUSY_SPIN,
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
        let (region, conn, peer) = sys::connect(addr, opts).await?;
        blocking_connection(region, CLIENT, conn, peer, opts)
    }
}

/// A shared-memory server endpoint: a local socket at the `shm:` address
/// (a Unix socket, or a named pipe on Windows) where clients are
/// authenticated and handed their rings.
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
    endpoint: sys::Endpoint,
    addr: Address,
    opts: ShmOptions,
    queue: tokio::sync::mpsc::Receiver<Result<Established>>,
    closed: bool,
}

/// A client admitted and handed its region, waiting to be accepted.
pub(crate) type Established = (Arc<Region>, Conn, PeerInfo);

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
    /// As the bootstrap endpoint's bind (`ipc_unix::UnixListener::bind`, or
    /// `ipc_windows::PipeListener::bind` on Windows: [`Error::AddressInUse`]
    /// when a live server holds it), and [`Error::InvalidAddress`] for an
    /// address that is not `shm:`.
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
        let (tx, queue) = tokio::sync::mpsc::channel(BACKLOG);
        let endpoint = sys::bind(addr, &opts, tx)?;
        Ok(ShmListener {
            endpoint,
            addr: addr.clone(),
            opts,
            queue,
            closed: false,
        })
    }

    async fn accept_raw(&mut self) -> Result<Established> {
        if self.closed {
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
        let (region, conn, peer) = self.accept_raw().await?;
        ShmTransport::new(region, SERVER, conn, peer, &self.opts)
    }

    /// Accepts the next client for the blocking message API.
    ///
    /// # Errors
    ///
    /// As [`accept_shm`](Self::accept_shm).
    pub async fn accept_connection(&mut self) -> Result<ShmConnection> {
        let (region, conn, peer) = self.accept_raw().await?;
        blocking_connection(region, SERVER, conn, peer, &self.opts)
    }

    /// The options this listener was bound with.
    pub fn options(&self) -> &ShmOptions {
        &self.opts
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
        self.closed = true;
        self.queue.close();
        self.endpoint.close()
    }
}
