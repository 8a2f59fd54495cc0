//! [`UnixListener`] and its [`BindOptions`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use ipc_core::{Address, BoxTransport, Error, Listener, Result};

use crate::endpoint::{self, Kind, Location, Owned, Staging, STAGED};
use crate::sys;
use crate::transport::UnixTransport;

/// The default accept-queue length (the kernel caps it at `somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// The default mode of a socket file: owner read/write only.
pub const DEFAULT_MODE: u32 = 0o600;

/// How a [`UnixListener`] creates its endpoint.
///
/// The default is owner-only access (mode `0600`), which together with the
/// default `SameUser` auth policy admits only processes of the same user.
///
/// # Examples
///
/// A socket the members of a group may use:
///
/// ```no_run
/// use ipc_unix::{BindOptions, UnixListener};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// let addr = "unix:/run/node/admin.sock".parse()?;
/// let opts = BindOptions::new().mode(0o660).group(120);
/// let _listener = UnixListener::bind_with(&addr, &opts)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BindOptions {
    mode: Option<u32>,
    group: Option<u32>,
    backlog: u32,
    busy_poll: Option<Duration>,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            mode: None,
            group: None,
            backlog: DEFAULT_BACKLOG,
            busy_poll: None,
        }
    }
}

impl BindOptions {
    /// Owner-only (`0600`), the process's group, a backlog of
    /// [`DEFAULT_BACKLOG`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The permission bits of the socket file, for example `0o660` to let a
    /// group connect. Must include `0o600` and nothing beyond `0o777`.
    ///
    /// The mode is exact (the umask does not apply) and holds from the
    /// moment the socket is reachable at its path.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The group that owns the socket file; combine with [`mode`](Self::mode)
    /// `0o660`. The process must be root or a member of the group.
    pub fn group(mut self, gid: u32) -> Self {
        self.group = Some(gid);
        self
    }

    /// The length of the queue of connections not yet accepted.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog.max(1);
        self
    }

    /// Busy-polls reads of every accepted connection for up to `budget`
    /// before they wait on the reactor (a zero budget: off, the default).
    /// See [`UnixTransport::set_busy_poll`] for the trade and when it pays.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use ipc_unix::{BindOptions, UnixListener};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let opts = BindOptions::new().busy_poll(Duration::from_micros(20));
    /// let mut listener = UnixListener::bind_with(&"unix:/run/node/rpc.sock".parse()?, &opts)?;
    /// let conn = listener.accept_unix().await?;
    /// assert_eq!(conn.busy_poll(), Some(Duration::from_micros(20)));
    /// # Ok(()) }
    /// ```
    pub fn busy_poll(mut self, budget: Duration) -> Self {
        self.busy_poll = (!budget.is_zero()).then_some(budget);
        self
    }

    /// The busy-poll budget of accepted connections, if any.
    pub fn get_busy_poll(&self) -> Option<Duration> {
        self.busy_poll
    }

    /// The mode the socket file gets.
    pub fn get_mode(&self) -> u32 {
        self.mode.unwrap_or(DEFAULT_MODE)
    }

    /// The group the socket file gets, if one was asked for.
    pub fn get_group(&self) -> Option<u32> {
        self.group
    }
}

/// Where an [`Address`] leads on this platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Path(PathBuf),
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    Abstract(String),
}

impl Target {
    /// Resolves the addresses this backend serves: `unix:/path`,
    /// `unix:@name` (Linux and Android) and `local:name`.
    pub(crate) fn resolve(addr: &Address) -> Result<Target> {
        match addr {
            Address::Unix(path) => Ok(Target::Path(path.clone())),
            Address::Local(name) => Ok(Target::Path(Address::local_socket_path(name))),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Address::UnixAbstract(name) => Ok(Target::Abstract(name.clone())),
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Address::UnixAbstract(_) => Err(Error::InvalidAddress {
                input: addr.to_string(),
                reason: "abstract-namespace sockets (unix:@name) exist only on Linux and Android"
                    .into(),
                expected: "unix:/path/to.sock or local:name",
            }),
            other => Err(Error::InvalidAddress {
                input: other.to_string(),
                reason: format!(
                    "the Unix socket backend serves unix: and local: addresses, not {}:",
                    other.scheme()
                ),
                expected: "unix:/path/to.sock, unix:@name or local:name",
            }),
        }
    }

    /// How the endpoint is named in messages: the address, plus the path a
    /// `local:` name maps to.
    pub(crate) fn endpoint(&self, addr: &Address) -> String {
        match (addr, self) {
            (Address::Local(_), Target::Path(p)) => format!("{addr} ({})", p.display()),
            _ => addr.to_string(),
        }
    }
}

pub(crate) fn require_runtime(what: &str) -> Result<()> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| {
            Error::io(
                format!("{what} must be called from within a Tokio runtime"),
                io::Error::other("no Tokio runtime is running"),
            )
        })
}

/// A Unix domain socket server endpoint.
///
/// A path socket is created owner-only (mode `0600` unless [`BindOptions`]
/// say otherwise) with no moment in which it is reachable with looser
/// permissions, without touching the process umask: it is bound inside a
/// fresh private (`0700`) directory next to the target path, given its mode
/// and group there, checked with `stat`, then renamed atomically into place.
///
/// Binding never takes over a live server's socket (`AddressInUse`), replaces
/// a stale socket whose server is gone (nothing accepts on it; found by
/// connecting to it, so a live server sees that probe as a client that
/// closes without sending anything), and never
/// deletes a path that is not a socket (`NotASocket`) or is a symlink
/// (`Insecure`). It refuses directories that every user can write to unless
/// they have the sticky bit (as `/tmp` does).
///
/// The listener removes its socket file on [`close`](Listener::close) and on
/// drop, but only if the file at the path is still the one it created, so it
/// never deletes another server's socket.
///
/// # Abstract sockets
///
/// `unix:@name` binds in the Linux abstract namespace. Abstract sockets have
/// no file and so no mode: any process in the same network namespace can
/// connect. What protects them is the server's auth policy (the default,
/// `SameUser`, checks the peer's uid from `SO_PEERCRED`). Asking for a mode
/// or group on an abstract address is an error rather than silently ignored.
///
/// # Examples
///
/// ```no_run
/// use ipc_core::Transport;
/// use ipc_unix::UnixListener;
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// let mut listener = UnixListener::bind(&"unix:/run/node/admin.sock".parse()?)?;
/// loop {
///     let mut conn = listener.accept_unix().await?;
///     if !conn.peer().same_user {
///         continue; // dropped: closes the connection
///     }
///     conn.write_all(b"hello\n").await?;
/// }
/// # }
/// ```
pub struct UnixListener {
    io: Option<tokio::net::UnixListener>,
    addr: Address,
    endpoint: String,
    owned: Option<Owned>,
    busy_poll: Option<Duration>,
}

impl UnixListener {
    /// Binds `addr` (`unix:/path`, `unix:@name` on Linux, or `local:name`)
    /// owner-only.
    ///
    /// # Errors
    ///
    /// - [`Error::AddressInUse`]: a live server owns the endpoint.
    /// - [`Error::NotASocket`]: the path exists and is not a socket.
    /// - [`Error::Insecure`]: the path is a symlink, or its directory is
    ///   world-writable without the sticky bit.
    /// - [`Error::PathTooLong`]: the path does not fit a socket address.
    /// - [`Error::InvalidAddress`]: not an address this backend serves.
    /// - [`Error::Io`]: anything else, saying what was being done.
    ///
    /// Must be called within a Tokio runtime with IO enabled. Binding a path
    /// takes a short advisory lock on its directory so that servers starting
    /// at once on the same path take turns; it blocks the calling thread
    /// while another process holds that lock (microseconds normally, at most
    /// two seconds before going ahead without it).
    pub fn bind(addr: &Address) -> Result<Self> {
        Self::bind_with(addr, &BindOptions::default())
    }

    /// Binds `addr` with the given mode, group and backlog.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind), and an error when the mode is not within
    /// `0o600..=0o777`, the group cannot be set, or a mode or group is given
    /// for an abstract socket (which has no file to carry them).
    pub fn bind_with(addr: &Address, opts: &BindOptions) -> Result<Self> {
        require_runtime("UnixListener::bind")?;
        let target = Target::resolve(addr)?;
        let endpoint = target.endpoint(addr);
        let (io, owned) = match &target {
            Target::Path(path) => {
                let (io, owned) = bind_path(path, opts, &endpoint)?;
                (io, Some(owned))
            }
            Target::Abstract(name) => (bind_abstract(name, opts, &endpoint)?, None),
        };
        let std = std::os::unix::net::UnixListener::from(io);
        let io = tokio::net::UnixListener::from_std(std)
            .map_err(|e| Error::io(format!("{endpoint}: registering with the runtime"), e))?;
        tracing::debug!(%endpoint, mode = format_args!("{:o}", opts.get_mode()), "listening");
        Ok(UnixListener {
            io: Some(io),
            addr: addr.clone(),
            endpoint,
            owned,
            busy_poll: opts.busy_poll,
        })
    }

    /// Waits for the next connection and returns it with the peer's
    /// credentials (and the busy-poll budget of the [`BindOptions`]).
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] after [`close`](Listener::close); OS accept errors
    /// (such as running out of file descriptors) as [`Error::Io`], after
    /// which the listener is still usable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a connection is never lost by dropping the future.
    pub async fn accept_unix(&mut self) -> Result<UnixTransport> {
        let io = self.io.as_ref().ok_or(Error::Shutdown)?;
        let (stream, _) = io
            .accept()
            .await
            .map_err(|e| Error::io(format!("{}: accepting a connection", self.endpoint), e))?;
        let mut t = UnixTransport::from_stream(stream)?;
        t.set_busy_poll(self.busy_poll);
        Ok(t)
    }

    /// The socket file's path; `None` for an abstract socket.
    pub fn path(&self) -> Option<&Path> {
        self.owned.as_ref().map(|o| o.loc.path.as_path())
    }

    /// The underlying Tokio listener; `None` after close.
    pub fn as_tokio(&self) -> Option<&tokio::net::UnixListener> {
        self.io.as_ref()
    }

    fn close_inner(&mut self) -> Result<()> {
        // The file goes first, so no client finds a path nobody accepts on.
        let removed = match self.owned.take() {
            Some(owned) => owned
                .remove()
                .map_err(|e| Error::io(format!("{}: removing the socket file", self.endpoint), e)),
            None => Ok(false),
        };
        if self.io.take().is_some() {
            tracing::debug!(endpoint = %self.endpoint, removed = ?removed.as_ref().ok(), "closed");
        }
        removed.map(drop)
    }
}

fn bind_path(
    path: &Path,
    opts: &BindOptions,
    endpoint: &str,
) -> Result<(std::os::fd::OwnedFd, Owned)> {
    let mode = opts.get_mode();
    endpoint::check_mode(mode, endpoint)?;
    check_group(opts.group, endpoint)?;
    endpoint::check_socket_path_len(path, None)?;
    let loc = Location::open(path, endpoint)?;
    endpoint::check_socket_path_len(path, Some(Staging::staged_path_len(&loc)))?;
    if mode & 0o006 != 0 {
        tracing::warn!(%endpoint, mode = format_args!("{mode:o}"),
            "socket is open to every user; only the auth policy protects it");
    }
    let (fd, id) =
        endpoint::create_node(&loc, Kind::Socket, mode, opts.group, endpoint, |staging| {
            let fd = sys::stream_socket(true)
                .map_err(|e| Error::io(format!("{endpoint}: creating a socket"), e))?;
            let staged = staging.path.join(STAGED);
            sys::unix_addr(&staged)
                .and_then(|a| sys::bind_listen(&fd, &a, opts.backlog))
                .map_err(|e| Error::io(format!("{endpoint}: binding {}", staged.display()), e))?;
            Ok(fd)
        })?;
    Ok((fd, Owned::new(loc, id)))
}

fn check_group(group: Option<u32>, endpoint: &str) -> Result<()> {
    if group == Some(u32::MAX) {
        return Err(Error::io(
            format!("{endpoint}: group id {} is not a valid group", u32::MAX),
            io::ErrorKind::InvalidInput.into(),
        ));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn bind_abstract(name: &str, opts: &BindOptions, endpoint: &str) -> Result<std::os::fd::OwnedFd> {
    if opts.mode.is_some() || opts.group.is_some() {
        return Err(Error::Insecure {
            endpoint: endpoint.to_owned(),
            reason: "an abstract socket has no file, so no mode or group can restrict it; \
                     protect it with the server's auth policy, or use a path socket"
                .into(),
        });
    }
    let fd = sys::stream_socket(true)
        .map_err(|e| Error::io(format!("{endpoint}: creating a socket"), e))?;
    sys::abstract_addr(name)
        .and_then(|a| sys::bind_listen(&fd, &a, opts.backlog))
        .map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => Error::AddressInUse {
                endpoint: endpoint.to_owned(),
            },
            _ => Error::io(format!("{endpoint}: binding"), e),
        })?;
    Ok(fd)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn bind_abstract(_: &str, _: &BindOptions, endpoint: &str) -> Result<std::os::fd::OwnedFd> {
    // `Target::resolve` refuses abstract addresses here; keep a clear error.
    Err(Error::io(
        format!("{endpoint}: abstract sockets exist only on Linux and Android"),
        io::ErrorKind::Unsupported.into(),
    ))
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("addr", &self.addr)
            .field("path", &self.path())
            .field("open", &self.io.is_some())
            .finish()
    }
}

#[async_trait]
impl Listener for UnixListener {
    async fn accept(&mut self) -> Result<BoxTransport> {
        Ok(Box::new(self.accept_unix().await?))
    }

    fn local_addr(&self) -> &Address {
        &self.addr
    }

    fn close(&mut self) -> Result<()> {
        self.close_inner()
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!(error = %e, "closing a Unix listener");
        }
    }
}
