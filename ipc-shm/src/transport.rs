//! The async byte-stream [`Transport`] over a shared region, and the
//! listener and connector that set it up. How an async task waits is in
//! `crate::async_wait`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipc_core::{Address, BoxTransport, Error, Listener, PeerInfo, Result, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::async_messages::AsyncShmConnection;
use crate::async_wait::{AsyncWaits, Task};
use crate::bell::Bells;
use crate::blocking::ShmConnection;
use crate::layout::{CLIENT, CLOSED_GONE, CLOSED_WRITE, SERVER, WAIT_SOCKET};
use crate::link::{Link, WaitPolicy};
use crate::options::ShmOptions;
use crate::region::Region;
use crate::ring::{Consumer, Producer};
use crate::sync::Ordering;
use crate::sys::door::Door;
use crate::sys::wire::Wire;
use crate::sys::{self, Conn};

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
    waits: AsyncWaits,
    peer: PeerInfo,
    /// When the current read found the ring empty, while it spins.
    read_spin: Option<Instant>,
    /// When the current write found the ring full, while it spins.
    write_spin: Option<Instant>,
    /// The socket hung up (or, on Windows, the peer's process ended).
    hung_up: AtomicBool,
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
        let (door, waits) = AsyncWaits::new(opts.async_spin, |joint| conn.into_async(joint))?;
        Ok(ShmTransport {
            tx: Producer::new(region.clone(), side),
            rx: Consumer::new(region.clone(), 1 - side),
            partial: 0,
            // An async side parks far more often than a blocking one (its
            // spin is short and comes in slices), and a barrier at each park
            // interrupted the peer's CPU often enough to cost more than the
            // fences it saved (see `crate::bell`): it keeps the fences.
            bells: Bells::new(region, side, door, false),
            waits,
            peer,
            read_spin: None,
            write_spin: None,
            hung_up: AtomicBool::new(false),
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
            self.waits.send_wake();
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
        // The common case: bytes waiting, read without the machinery of a
        // wait (`poll_until` below, which looks again first).
        match this
            .rx
            .try_read_stream(buf.initialize_unfilled(), &mut this.partial)
        {
            Ok(Some(n)) => {
                this.read_spin = None;
                buf.advance(n);
                this.notify();
                return Poll::Ready(Ok(()));
            }
            Err(e) => return Poll::Ready(Err(e.into())),
            Ok(None) => {}
        }
        let ShmTransport {
            rx,
            partial,
            bells,
            waits,
            read_spin,
            hung_up,
            ..
        } = this;
        let read = waits.poll_until(
            cx,
            Task::Read,
            bells,
            hung_up,
            read_spin,
            &mut (rx, partial, buf),
            |(rx, partial, buf)| {
                // The closed flag first: what the peer published before
                // closing is then visible to the read below.
                let closed = hung_up.load(Ordering::Relaxed) || bells.peer_closed() != 0;
                Ok(
                    match rx.try_read_stream(buf.initialize_unfilled(), partial)? {
                        Some(n) => {
                            buf.advance(n);
                            Some(true)
                        }
                        // The end of the stream: nothing read.
                        None if closed => Some(false),
                        None => None,
                    },
                )
            },
            |(rx, _, _)| rx.watch() || bells.peer_closed() != 0,
        );
        match read {
            Poll::Ready(Ok(true)) => {
                this.notify();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(false)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
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
        // The common case: room in the ring (as in `poll_read`).
        if !this.hung_up.load(Ordering::Relaxed) && this.bells.peer_closed() & CLOSED_GONE == 0 {
            match this.tx.try_write_stream(buf) {
                Ok(Some(n)) => {
                    this.write_spin = None;
                    this.notify();
                    return Poll::Ready(Ok(n));
                }
                Err(e) => return Poll::Ready(Err(e.into())),
                Ok(None) => {}
            }
        }
        let ShmTransport {
            tx,
            bells,
            waits,
            write_spin,
            hung_up,
            ..
        } = this;
        let written = waits.poll_until(
            cx,
            Task::Write,
            bells,
            hung_up,
            write_spin,
            tx,
            |tx| {
                if hung_up.load(Ordering::Relaxed) || bells.peer_closed() & CLOSED_GONE != 0 {
                    return Err(Error::Disconnected);
                }
                tx.try_write_stream(buf)
            },
            // Only the peer's going away ends a write (a peer that shut
            // down its write half still reads): anything else that made the
            // spin look again would keep it in place past its slice.
            |tx| tx.tail_moved().unwrap_or(true) || bells.peer_closed() & CLOSED_GONE != 0,
        );
        match written {
            Poll::Ready(Ok(n)) => {
                this.notify();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
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
    Ok(message_connection(
        region, side, door, wire, peer, opts, opts.spin,
    ))
}

/// The async message API over an established connection: the blocking
/// API's halves, whose link rings the peer, and the waits of an async task.
pub(crate) fn async_connection(
    region: Arc<Region>,
    side: usize,
    conn: Conn,
    peer: PeerInfo,
    opts: &ShmOptions,
) -> Result<AsyncShmConnection> {
    let ((door, wire), waits) =
        AsyncWaits::new(opts.async_spin, |joint| conn.into_async_messages(joint))?;
    // No blocking spin: it parks as often as the async Transport, so it keeps
    // the fences too, and is rung once a large message is in.
    let conn = message_connection(region, side, door, wire, peer, opts, Duration::ZERO);
    Ok(AsyncShmConnection::new(conn, waits))
}

/// The halves of the message API over `region`, side `side`, whose link
/// rings the peer through `door` and `wire`; `spin` is the blocking spin
/// (zero for the async API, whose waits do not read the policy).
fn message_connection(
    region: Arc<Region>,
    side: usize,
    door: Door,
    wire: Wire,
    peer: PeerInfo,
    opts: &ShmOptions,
    spin: Duration,
) -> ShmConnection {
    let link = Arc::new(Link {
        bells: Bells::new(region.clone(), side, door, !spin.is_zero()),
        wire,
        policy: WaitPolicy {
            spin,
            liveness: opts.liveness,
            busy_spin: crate::link::BUSY_SPIN,
        },
        hung_up: Default::default(),
    });
    ShmConnection::from_parts(
        Producer::new(region.clone(), side),
        Consumer::new(region, 1 - side),
        link,
        opts.max_message,
        peer,
    )
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

    /// Accepts the next client for the async message API.
    ///
    /// # Errors
    ///
    /// As [`accept_shm`](Self::accept_shm).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`accept_shm`](Self::accept_shm).
    pub async fn accept_async_connection(&mut self) -> Result<AsyncShmConnection> {
        let (region, conn, peer) = self.accept_raw().await?;
        async_connection(region, SERVER, conn, peer, &self.opts)
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
