//! [`UnixTransport`], [`connect`] and [`peer_info`].

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use ipc_core::{Address, Error, PeerInfo, Result, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

use crate::busy::{self, BusyPoll};
use crate::endpoint;
use crate::listener::{require_runtime, Target};
use crate::sys;

/// A connected Unix domain socket with the peer's credentials.
///
/// Reads and writes go straight to the socket (vectored writes included);
/// `poll_shutdown` shuts down the write half, so the peer reads end-of-stream
/// while it can still reply.
///
/// Reads can trade CPU time for latency with
/// [`set_busy_poll`](Self::set_busy_poll) (off by default).
///
/// # Examples
///
/// ```no_run
/// use ipc_core::Transport;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// let mut conn = ipc_unix::connect(&"unix:/run/node/admin.sock".parse()?).await?;
/// println!("server runs as uid {:?}", conn.peer().uid);
/// conn.write_all(b"ping").await?;
/// conn.shutdown().await?;
/// let mut reply = String::new();
/// conn.read_to_string(&mut reply).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UnixTransport {
    stream: UnixStream,
    peer: PeerInfo,
    busy: Option<BusyPoll>,
}

impl UnixTransport {
    /// Wraps a connected stream, reading its peer's credentials.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the OS does not report the credentials.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Transport;
    /// use ipc_unix::UnixTransport;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (a, _b) = tokio::net::UnixStream::pair()?;
    /// let a = UnixTransport::from_stream(a)?;
    /// assert!(a.peer().same_user);
    /// # Ok(()) }
    /// ```
    pub fn from_stream(stream: UnixStream) -> Result<Self> {
        let peer = peer_info(&stream)
            .map_err(|e| Error::io("reading the peer's credentials of a Unix socket", e))?;
        Ok(UnixTransport {
            stream,
            peer,
            busy: None,
        })
    }

    /// Lets a read that finds no data poll the socket for up to `budget`
    /// before it waits on the runtime's reactor; `None` (the default) or a
    /// zero budget turns it off.
    ///
    /// A read that waits on the reactor costs a failed `recv`, an
    /// `epoll_wait` that puts the thread to sleep, a wake-up and a second
    /// `recv`: several microseconds that a blocking socket read does not pay.
    /// With busy polling, a read that finds the socket empty keeps retrying
    /// a non-blocking `recv` and returns as soon as data comes, saving the
    /// sleep and the wake-up when the answer comes within the budget. Before
    /// each retry it yields the CPU, so a peer waiting for this core can
    /// run, and hands the thread back to the runtime, so the other tasks
    /// ready on it run too (a reply another task is to write, the caller of
    /// a request about to send the next one): the read is polled again
    /// after them, rather than waiting on the reactor.
    ///
    /// It is adaptive: it keeps an estimate of how long recent reads waited
    /// (each wait counted at most twice the budget) and polls only while
    /// that estimate is below the budget. A peer that answers slower than
    /// the budget, or a connection that is idle, makes reads wait on the
    /// reactor at once after a few waits. A quiet connection costs at most
    /// one budget of CPU per wait: each wait polls from the read that starts
    /// it until the budget has passed, then sleeps on the reactor.
    ///
    /// # When to turn it on
    ///
    /// Off by default because it spends CPU for latency: while a read polls,
    /// the runtime's thread does not sleep. Turn it on for a
    /// latency-sensitive request/response connection whose peer usually
    /// answers within tens of microseconds (a local service called in a
    /// loop), on a machine with a core to spare for each polling thread.
    /// Leave it off for connections that mostly idle or stream, for many
    /// connections on one runtime, and on machines whose cores are all busy:
    /// there the poller takes the CPU its peer needs and latency gets worse
    /// (tails especially).
    ///
    /// Poll on a runtime with one worker (a current-thread runtime, or a
    /// multi-thread one with `worker_threads(1)`). While one worker polls,
    /// another one asleep in the reactor is still woken by every message
    /// the socket receives, and on a machine with few cores that costs more
    /// than polling saves: on a 2-vCPU machine, JSON-RPC calls one at a
    /// time with both ends polling ran at about 25k calls/s with a
    /// two-worker server runtime and 63-75k with a one-worker one.
    ///
    /// A budget of 10 to 50 µs suits a local peer. A read stops polling once
    /// the budget has passed since it found the socket empty. Reads stay
    /// cancel safe: data is only ever read into the caller's buffer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let mut conn = ipc_unix::connect(&"unix:/run/node/admin.sock".parse()?).await?;
    /// conn.set_busy_poll(Some(Duration::from_micros(20)));
    /// conn.write_all(b"ping").await?;
    /// let mut reply = [0; 4];
    /// conn.read_exact(&mut reply).await?; // polls up to 20 µs before parking
    /// # Ok(()) }
    /// ```
    ///
    /// A server sets it for every accepted connection with
    /// [`BindOptions::busy_poll`](crate::BindOptions::busy_poll).
    pub fn set_busy_poll(&mut self, budget: Option<Duration>) {
        self.busy = budget.and_then(BusyPoll::new);
    }

    /// The busy-poll budget, `None` when reads wait on the reactor at once.
    pub fn busy_poll(&self) -> Option<Duration> {
        self.busy.as_ref().map(BusyPoll::budget)
    }

    /// The socket, for socket-level operations (such as passing file
    /// descriptors).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The socket, mutably.
    pub fn stream_mut(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Unwraps the socket.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

/// The credentials of the process on the other end of `stream`:
/// `SO_PEERCRED` on Linux (uid, gid, pid), `getpeereid` and `LOCAL_PEERPID`
/// on macOS, `getpeereid` elsewhere. `same_user` is true when the peer's uid
/// is this process's effective uid.
///
/// For a connection the credentials are those the peer had when it called
/// `connect` (or, seen from a client, when the server called `listen`).
pub fn peer_info(stream: &UnixStream) -> io::Result<PeerInfo> {
    let cred = stream.peer_cred()?;
    let pid = cred
        .pid()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p != 0);
    Ok(PeerInfo::unix(
        cred.uid(),
        cred.gid(),
        pid,
        cred.uid() == sys::euid(),
    ))
}

/// How long [`connect`] keeps retrying while the server's accept queue is
/// full, before it reports the server as overloaded.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(2);

/// Connects to a Unix socket server: `unix:/path`, `unix:@name` (Linux) or
/// `local:name`.
///
/// # Errors
///
/// - [`Error::NotFound`]: no socket at the path, or a stale socket file
///   whose server is gone.
/// - [`Error::PermissionDenied`]: the socket's mode or directory forbids
///   this user.
/// - [`Error::PathTooLong`], [`Error::InvalidAddress`].
/// - [`Error::Io`]: anything else, for example a server whose accept queue
///   stayed full.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// match ipc_unix::connect(&"local:node".parse()?).await {
///     Ok(_conn) => { /* talk */ }
///     Err(ipc_core::Error::NotFound { .. }) => eprintln!("is the node running?"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
pub async fn connect(addr: &Address) -> Result<UnixTransport> {
    require_runtime("ipc_unix::connect")?;
    let target = Target::resolve(addr)?;
    let endpoint = target.endpoint(addr);
    let os_path = match &target {
        Target::Path(p) => {
            endpoint::check_socket_path_len(p, None)?;
            p.clone()
        }
        // Tokio takes a leading NUL as the abstract namespace.
        Target::Abstract(name) => format!("\0{name}").into(),
    };
    let mut delay = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    let stream = loop {
        match UnixStream::connect(&os_path).await {
            Ok(s) => break s,
            // The accept queue is full: the server is alive but busy.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && waited < BUSY_RETRY_FOR => {
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(connect_error(e, &target, &endpoint)),
        }
    };
    UnixTransport::from_stream(stream)
}

fn connect_error(e: io::Error, target: &Target, endpoint: &str) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            endpoint: endpoint.to_owned(),
        },
        io::ErrorKind::ConnectionRefused => {
            if let Target::Path(p) = target {
                if let Some(what) = not_a_socket(p) {
                    return Error::io(format!("connecting to {endpoint}: {what}"), e);
                }
            }
            // A socket file nobody accepts on: its server exited.
            Error::NotFound {
                endpoint: endpoint.to_owned(),
            }
        }
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            endpoint: endpoint.to_owned(),
        },
        io::ErrorKind::WouldBlock => Error::io(
            format!(
                "connecting to {endpoint}: the server's accept queue stayed full for {:?}; it is \
                 overloaded or not accepting",
                BUSY_RETRY_FOR
            ),
            e,
        ),
        _ => Error::io(format!("connecting to {endpoint}"), e),
    }
}

fn not_a_socket(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    use std::os::unix::fs::FileTypeExt;
    (!meta.file_type().is_socket()).then(|| format!("{} is not a socket", path.display()))
}

impl AsyncRead for UnixTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(policy) = this.busy.as_mut() else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let r = match busy::recv_now(&this.stream, buf) {
            Some(r) => r,
            None if policy.keep_polling(Instant::now()) => {
                ready!(busy::poll_again(&this.stream, buf, cx))
            }
            None => ready!(Pin::new(&mut this.stream).poll_read(cx, buf)),
        };
        if policy.waiting() {
            policy.end_wait(Instant::now());
        }
        Poll::Ready(r)
    }
}

impl AsyncWrite for UnixTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Transport for UnixTransport {
    fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}
