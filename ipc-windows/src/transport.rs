//! The connection type, [`PipeTransport`], and the client side: [`connect`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use ipc_core::{Address, Error, PeerInfo, Result, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::windows::named_pipe::{NamedPipeClient, NamedPipeServer};
use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_PIPE_BUSY};

use crate::sys::{self, Sid};

/// How long [`connect`] keeps retrying while every pipe instance is busy.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The user this process runs as, read once.
pub(crate) fn current_user() -> Result<&'static Sid> {
    static ME: OnceLock<std::result::Result<Sid, String>> = OnceLock::new();
    ME.get_or_init(|| sys::current_user().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| {
            Error::io(
                "reading the current user's SID",
                io::Error::other(e.clone()),
            )
        })
}

/// The Windows pipe path for `pipe:name` and `local:name`: `\\.\pipe\name`.
///
/// # Errors
///
/// [`Error::InvalidAddress`] for any other kind of address.
pub fn pipe_path(addr: &Address) -> Result<String> {
    match addr {
        Address::Pipe(name) | Address::Local(name) => Ok(Address::pipe_path(name)),
        other => Err(Error::InvalidAddress {
            input: other.to_string(),
            reason: format!(
                "the named-pipe backend does not serve {}: addresses",
                other.scheme()
            ),
            expected: "pipe:name or local:name",
        }),
    }
}

/// Either end of a pipe, shared with the task that may finish a shutdown.
#[derive(Clone)]
enum Inner {
    Server(Arc<NamedPipeServer>),
    Client(Arc<NamedPipeClient>),
}

macro_rules! on_pipe {
    ($inner:expr, $pipe:ident => $e:expr) => {
        match $inner {
            Inner::Server($pipe) => $e,
            Inner::Client($pipe) => $e,
        }
    };
}

impl Inner {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_pipe!(self, p => p.poll_read_ready(cx))
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        on_pipe!(self, p => p.try_read(buf))
    }
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_pipe!(self, p => p.poll_write_ready(cx))
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        on_pipe!(self, p => p.try_write(buf))
    }
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        on_pipe!(self, p => p.try_write_vectored(bufs))
    }
    async fn writable(&self) -> io::Result<()> {
        on_pipe!(self, p => p.writable().await)
    }

    /// Sends the end-of-stream marker, a zero-length message, once earlier
    /// writes have gone out.
    async fn send_eof(self) {
        loop {
            if self.writable().await.is_err() {
                return;
            }
            match self.try_write(&[]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }
}

/// A connected named pipe, from [`crate::PipeListener::accept`] or [`connect`].
///
/// A byte stream, like a socket. Named pipes have no half-close of their own:
/// the pipe runs in message mode and `poll_shutdown` sends a zero-length
/// message, which the peer's transport reads as end-of-stream (and keeps
/// reading as such) while it can still write back. Writes after shutdown
/// fail; an empty write sends nothing.
///
/// A client connected to another server's byte-type pipe reads it in byte
/// mode; there `poll_shutdown` only stops further writes, and the server
/// sees end-of-stream when the pipe closes.
pub struct PipeTransport {
    inner: Inner,
    peer: PeerInfo,
    /// Reads messages (so a zero-length one is end-of-stream); false only
    /// for a client of a byte-type pipe.
    messages: bool,
    read_eof: bool,
    write_shut: bool,
    /// Sends the end-of-stream marker behind a write still in flight.
    eof_task: Option<tokio::task::JoinHandle<()>>,
}

impl PipeTransport {
    fn new(inner: Inner, peer: PeerInfo, messages: bool) -> Self {
        PipeTransport {
            inner,
            peer,
            messages,
            read_eof: false,
            write_shut: false,
            eof_task: None,
        }
    }

    pub(crate) fn from_server(server: NamedPipeServer, peer: PeerInfo) -> Self {
        Self::new(Inner::Server(Arc::new(server)), peer, true)
    }

    /// The identity of the process on the other end.
    pub fn peer_info(&self) -> &PeerInfo {
        &self.peer
    }
}

impl Drop for PipeTransport {
    fn drop(&mut self) {
        // Closing the pipe ends the stream anyway; the handle must not
        // outlive the transport.
        if let Some(task) = self.eof_task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for PipeTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.inner {
            Inner::Server(_) => "server",
            Inner::Client(_) => "client",
        };
        f.debug_struct("PipeTransport")
            .field("side", &side)
            .field("peer", &self.peer)
            .field("messages", &self.messages)
            .field("read_eof", &self.read_eof)
            .field("write_shut", &self.write_shut)
            .finish()
    }
}

fn write_after_shutdown() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "write after shutdown: this side of the pipe was closed for writing",
    )
}

impl AsyncRead for PipeTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_eof || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            match this.inner.try_read(buf.initialize_unfilled()) {
                // Zero bytes: the peer's end-of-stream message, or the pipe
                // closed. Either way nothing more comes.
                Ok(0) => {
                    this.read_eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for PipeTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_shut {
            return Poll::Ready(Err(write_after_shutdown()));
        }
        // An empty message would read as end-of-stream on the other side.
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            ready!(this.inner.poll_write_ready(cx))?;
            match this.inner.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_shut {
            return Poll::Ready(Err(write_after_shutdown()));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            ready!(this.inner.poll_write_ready(cx))?;
            match this.inner.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes are handed to the OS as they are made; closing the handle
        // does not cancel them.
        Poll::Ready(Ok(()))
    }

    /// Sends the end-of-stream marker: now if no write is in flight, else
    /// from a task once it is, so shutdown never waits for the peer to read.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_shut {
            return Poll::Ready(Ok(()));
        }
        this.write_shut = true;
        if !this.messages {
            // A byte-type pipe has no end-of-stream message.
            return Poll::Ready(Ok(()));
        }
        match this.inner.try_write(&[]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                this.eof_task = Some(tokio::spawn(this.inner.clone().send_eof()));
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(e)),
            Ok(_) => Poll::Ready(Ok(())),
        }
    }
}

impl Transport for PipeTransport {
    fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

/// How [`connect_with`] connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    busy_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }
}

impl ConnectOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long to keep retrying while every instance of the pipe is busy
    /// (`ERROR_PIPE_BUSY`); zero fails at the first busy answer.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

/// Connects to `pipe:name` or `local:name` with the defaults.
///
/// Each attempt opens the pipe once and picks the read mode on that handle:
/// message mode for a message-type pipe (our servers'), byte mode for a
/// byte-type pipe of another server. Nothing is opened and thrown away, which
/// would use up one of the server's instances.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main] async fn main() -> ipc_core::Result<()> {
/// use tokio::io::AsyncWriteExt;
///
/// let mut pipe = ipc_windows::connect(&"pipe:node-admin".parse()?).await?;
/// assert!(pipe.peer_info().same_user, "the server runs as another user");
/// pipe.write_all(b"hello").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::NotFound`] when no server serves the name,
/// [`Error::PermissionDenied`] when its security descriptor excludes us, an
/// I/O error saying so when every instance stayed busy for the busy timeout.
/// A server that has closed its listener but still has connections open
/// answers busy, not not-found: a pipe's name lives as long as any of its
/// instances, connected ones included.
pub async fn connect(addr: &Address) -> Result<PipeTransport> {
    connect_with(addr, &ConnectOptions::default()).await
}

/// Connects with explicit options.
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with(addr: &Address, options: &ConnectOptions) -> Result<PipeTransport> {
    let path = pipe_path(addr)?;
    let me = current_user()?;
    let deadline = Instant::now() + options.busy_timeout;
    let mut delay = Duration::from_millis(1);
    let (client, messages) = loop {
        match sys::open_pipe_client(&path) {
            Ok(opened) => break opened,
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::io(
                        format!(
                            "connecting to {path}: every instance of the pipe stayed busy for {:?}: \
                             the server is not accepting connections fast enough, or it has \
                             stopped listening while connections it accepted stay open (a pipe's \
                             name lives as long as any of its instances); retry later",
                            options.busy_timeout
                        ),
                        e,
                    ));
                }
                tokio::time::sleep(delay.min(deadline - now)).await;
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(open_error(&path, e)),
        }
    };
    let peer = server_peer(&client, me);
    Ok(PipeTransport::new(
        Inner::Client(Arc::new(client)),
        peer,
        messages,
    ))
}

fn open_error(path: &str, e: io::Error) -> Error {
    match e.raw_os_error().map(|c| c as u32) {
        Some(ERROR_FILE_NOT_FOUND) => Error::NotFound {
            endpoint: path.to_owned(),
        },
        Some(ERROR_ACCESS_DENIED) => Error::PermissionDenied {
            endpoint: path.to_owned(),
        },
        _ => Error::io(format!("connecting to {path}"), e),
    }
}

/// Who serves the pipe we connected to. An identity that cannot be read is
/// reported as unknown and not the same user.
fn server_peer(client: &NamedPipeClient, me: &Sid) -> PeerInfo {
    let pid = sys::pipe_server_pid(client)
        .map_err(|e| tracing::debug!(error = %e, "server process id unavailable"))
        .ok();
    let sid = pid.and_then(|pid| {
        sys::process_user(pid)
            .map_err(|e| tracing::debug!(error = %e, pid, "server user unavailable"))
            .ok()
    });
    let same_user = sid.as_ref() == Some(me);
    PeerInfo::windows(pid, sid.map(|s| s.to_string()), same_user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_and_local_map_to_pipe_paths() {
        let p = pipe_path(&"pipe:node".parse().unwrap()).unwrap();
        assert_eq!(p, r"\\.\pipe\node");
        let p = pipe_path(&"local:node".parse().unwrap()).unwrap();
        assert_eq!(p, r"\\.\pipe\node");
        let e = pipe_path(&"unix:/tmp/a.sock".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipe:name or local:name"), "{e}");
    }
}
