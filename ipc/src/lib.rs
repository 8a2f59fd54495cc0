//! Fast, secure local inter-process communication.
//!
//! One async API over the local mechanisms: Unix domain sockets, Windows
//! named pipes and shared-memory rings, chosen by an address string:
//!
//! | address              | backend                                   | feature  |
//! |----------------------|-------------------------------------------|----------|
//! | `unix:/run/app.sock` | Unix domain socket at a path              | `unix`   |
//! | `unix:@app`          | Linux abstract socket                     | `unix`   |
//! | `pipe:app`           | Windows named pipe `\\.\pipe\app`          | `windows`|
//! | `shm:app`            | shared-memory rings, set up over `local:` | `shm`    |
//! | `tcp:127.0.0.1:7000` | TCP, for leaving the machine              | `tcp`    |
//! | `local:app`          | the platform default (socket or pipe)     |          |
//!
//! Servers and clients speak JSON-RPC 2.0 ([`Server`], [`Client`]) over any
//! of them; the peer's OS-verified identity is checked against an
//! [`AuthPolicy`] before any of its bytes are read.
//!
//! # Examples
//!
//! ```no_run
//! use ipc::{jsonrpc::ErrorObject, Router, Server};
//!
//! # #[tokio::main] async fn main() -> ipc::Result<()> {
//! let listener = ipc::bind("local:my-daemon").await?;
//! let router = Router::new().method("add", |_ctx, (a, b): (i64, i64)| async move {
//!     Ok::<_, ErrorObject>(a + b)
//! });
//! let server = Server::builder().build().serve(listener, router);
//!
//! let client = ipc::connect("local:my-daemon").await?;
//! let sum: i64 = client.request("add", (1, 2)).await?;
//! assert_eq!(sum, 3);
//! server.shutdown(std::time::Duration::from_secs(1)).await?;
//! # Ok(()) }
//! ```
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

pub use ipc_core::*;

#[cfg(feature = "tcp")]
pub mod tcp;

#[cfg(all(unix, feature = "unix"))]
pub use ipc_unix as unix;

#[cfg(all(windows, feature = "windows"))]
pub use ipc_windows as windows;

#[cfg(all(any(unix, windows), feature = "shm"))]
pub use ipc_shm as shm;

/// How a new endpoint is secured. Backends apply what fits them: a file mode
/// and group for Unix sockets, an equivalent security descriptor for pipes.
#[derive(Debug, Clone, Default)]
pub struct BindOptions {
    mode: Option<u32>,
    group: Option<u32>,
    busy_poll: Option<std::time::Duration>,
}

impl BindOptions {
    /// Owner-only (the default).
    pub fn new() -> Self {
        BindOptions::default()
    }

    /// The endpoint's permission bits, such as `0o660` (default `0o600`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The group that owns the endpoint, for group access with a mode like `0o660`.
    pub fn group(mut self, gid: u32) -> Self {
        self.group = Some(gid);
        self
    }

    /// Unix sockets: before a read waits for the reactor, keep polling the
    /// socket for up to `budget` (adaptive: only while replies have been
    /// coming within it). Trades CPU for latency on request/response
    /// traffic; off by default. See `ipc_unix::UnixTransport::set_busy_poll`.
    pub fn busy_poll(mut self, budget: std::time::Duration) -> Self {
        self.busy_poll = Some(budget);
        self
    }
}

/// How a client's connection is set up. Backends apply what fits them.
///
/// # Examples
///
/// A JSON-RPC client with its own settings on a busy-polling connection:
///
/// ```no_run
/// use std::time::Duration;
///
/// # #[allow(dead_code)]
/// # async fn run() -> ipc::Result<()> {
/// let options = ipc::ConnectOptions::new().busy_poll(Duration::from_micros(50));
/// let transport = ipc::connect_transport_with("unix:/run/app.sock", &options).await?;
/// let client = ipc::Client::builder()
///     .request_timeout(Some(Duration::from_secs(5)))
///     .build(transport);
/// let height: u64 = client.request("block_height", ()).await?;
/// # let _ = height;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    busy_poll: Option<std::time::Duration>,
}

impl ConnectOptions {
    /// The defaults: reads wait on the reactor at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unix sockets: before a read waits for the reactor, keep polling the
    /// socket for up to `budget` (adaptive, as for
    /// [`BindOptions::busy_poll`]). Trades CPU for latency; other backends
    /// ignore it.
    pub fn busy_poll(mut self, budget: std::time::Duration) -> Self {
        self.busy_poll = (!budget.is_zero()).then_some(budget);
        self
    }
}

fn disabled(address: &Address, feature: &'static str, platform: &'static str) -> Error {
    Error::BackendDisabled {
        address: address.to_string(),
        feature,
        platform,
    }
}

/// Binds the endpoint named by `address` with owner-only permissions.
///
/// # Errors
///
/// [`Error::InvalidAddress`] for a malformed address, [`Error::BackendDisabled`]
/// when the backend is not compiled in, [`Error::AddressInUse`] when a live
/// server owns the endpoint, and the backend's own errors.
pub async fn bind(address: &str) -> Result<BoxListener> {
    bind_with(address, &BindOptions::default()).await
}

/// Binds the endpoint named by `address` with the given options.
///
/// # Errors
///
/// As for [`bind`].
pub async fn bind_with(address: &str, options: &BindOptions) -> Result<BoxListener> {
    let address: Address = address.parse()?;
    bind_address(&address, options).await
}

/// Binds an already parsed address.
///
/// # Errors
///
/// As for [`bind`].
pub async fn bind_address(address: &Address, options: &BindOptions) -> Result<BoxListener> {
    let _ = options;
    match address {
        Address::Unix(_) | Address::UnixAbstract(_) => bind_unix(address, options),
        Address::Local(_) => {
            cfg_if::cfg_if! {
                if #[cfg(unix)] {
                    bind_unix(address, options)
                } else if #[cfg(windows)] {
                    bind_pipe(address, options).await
                } else {
                    Err(disabled(address, "unix", " (no local backend on this platform)"))
                }
            }
        }
        Address::Pipe(_) => bind_pipe(address, options).await,
        Address::Shm(_) => bind_shm(address, options).await,
        Address::Tcp(_) => bind_tcp(address).await,
        _ => Err(disabled(address, "unix", "")),
    }
}

/// Connects a JSON-RPC [`Client`] to `address`.
///
/// # Errors
///
/// As for [`connect_transport`].
pub async fn connect(address: &str) -> Result<Client> {
    Ok(Client::new(connect_transport(address).await?))
}

/// Connects a raw byte [`Transport`] to `address`, for your own framing.
///
/// # Errors
///
/// [`Error::InvalidAddress`], [`Error::BackendDisabled`], [`Error::NotFound`]
/// when nothing listens there, [`Error::PermissionDenied`], and the backend's
/// own errors.
pub async fn connect_transport(address: &str) -> Result<BoxTransport> {
    connect_transport_with(address, &ConnectOptions::default()).await
}

/// Connects a raw byte [`Transport`] to `address` with the given options
/// (wrap it in [`Client::builder`] for a JSON-RPC client with its own
/// settings).
///
/// # Errors
///
/// As for [`connect_transport`].
pub async fn connect_transport_with(
    address: &str,
    options: &ConnectOptions,
) -> Result<BoxTransport> {
    let address: Address = address.parse()?;
    connect_address_with(&address, options).await
}

/// Connects to an already parsed address.
///
/// # Errors
///
/// As for [`connect_transport`].
pub async fn connect_address(address: &Address) -> Result<BoxTransport> {
    connect_address_with(address, &ConnectOptions::default()).await
}

/// Connects to an already parsed address with the given options.
///
/// # Errors
///
/// As for [`connect_transport`].
pub async fn connect_address_with(
    address: &Address,
    options: &ConnectOptions,
) -> Result<BoxTransport> {
    match address {
        Address::Unix(_) | Address::UnixAbstract(_) => connect_unix(address, options).await,
        Address::Local(_) => {
            cfg_if::cfg_if! {
                if #[cfg(unix)] {
                    connect_unix(address, options).await
                } else if #[cfg(windows)] {
                    connect_pipe(address).await
                } else {
                    Err(disabled(address, "unix", " (no local backend on this platform)"))
                }
            }
        }
        Address::Pipe(_) => connect_pipe(address).await,
        Address::Shm(_) => connect_shm(address).await,
        Address::Tcp(_) => connect_tcp(address).await,
        _ => Err(disabled(address, "unix", "")),
    }
}

cfg_if::cfg_if! {
    if #[cfg(all(unix, feature = "unix"))] {
        fn bind_unix(address: &Address, options: &BindOptions) -> Result<BoxListener> {
            let mut opts = ipc_unix::BindOptions::default();
            if let Some(mode) = options.mode {
                opts = opts.mode(mode);
            }
            if let Some(gid) = options.group {
                opts = opts.group(gid);
            }
            if let Some(budget) = options.busy_poll {
                opts = opts.busy_poll(budget);
            }
            Ok(Box::new(ipc_unix::UnixListener::bind_with(address, &opts)?))
        }
        async fn connect_unix(address: &Address, options: &ConnectOptions) -> Result<BoxTransport> {
            Ok(Box::new(unix_transport(address, options).await?))
        }
        async fn unix_transport(
            address: &Address,
            options: &ConnectOptions,
        ) -> Result<ipc_unix::UnixTransport> {
            let mut transport = ipc_unix::connect(address).await?;
            transport.set_busy_poll(options.busy_poll);
            Ok(transport)
        }
    } else {
        fn bind_unix(address: &Address, _: &BindOptions) -> Result<BoxListener> {
            Err(disabled(address, "unix", " (Unix sockets need a Unix platform)"))
        }
        async fn connect_unix(address: &Address, _: &ConnectOptions) -> Result<BoxTransport> {
            Err(disabled(address, "unix", " (Unix sockets need a Unix platform)"))
        }
    }
}

cfg_if::cfg_if! {
    if #[cfg(all(windows, feature = "windows"))] {
        async fn bind_pipe(address: &Address, options: &BindOptions) -> Result<BoxListener> {
            // A mode that opens the endpoint to others maps to a DACL for every
            // local user; group bits have no pipe equivalent without a SID.
            let mut opts = ipc_windows::PipeOptions::new();
            if options.mode.is_some_and(|m| m & 0o006 != 0) {
                opts = opts.access(ipc_windows::PipeAccess::Everyone);
            }
            Ok(Box::new(
                ipc_windows::PipeListener::bind_when_released(address, &opts).await?,
            ))
        }
        async fn connect_pipe(address: &Address) -> Result<BoxTransport> {
            Ok(Box::new(ipc_windows::connect(address).await?))
        }
    } else {
        async fn bind_pipe(address: &Address, _: &BindOptions) -> Result<BoxListener> {
            Err(disabled(address, "windows", " (named pipes exist only on Windows)"))
        }
        async fn connect_pipe(address: &Address) -> Result<BoxTransport> {
            Err(disabled(address, "windows", " (named pipes exist only on Windows)"))
        }
    }
}

cfg_if::cfg_if! {
    if #[cfg(all(any(unix, windows), feature = "shm"))] {
        async fn bind_shm(address: &Address, options: &BindOptions) -> Result<BoxListener> {
            let mut opts = ipc_shm::ShmOptions::default();
            if let Some(mode) = options.mode {
                opts = opts.socket_mode(mode);
            }
            Ok(Box::new(ipc_shm::ShmListener::bind_with(address, opts)?))
        }
        async fn connect_shm(address: &Address) -> Result<BoxTransport> {
            Ok(Box::new(ipc_shm::ShmTransport::connect(address, &ipc_shm::ShmOptions::default()).await?))
        }
    } else if #[cfg(feature = "shm")] {
        async fn bind_shm(address: &Address, _: &BindOptions) -> Result<BoxListener> {
            Err(disabled(address, "shm", " (shared memory is not yet supported on this platform)"))
        }
        async fn connect_shm(address: &Address) -> Result<BoxTransport> {
            Err(disabled(address, "shm", " (shared memory is not yet supported on this platform)"))
        }
    } else {
        async fn bind_shm(address: &Address, _: &BindOptions) -> Result<BoxListener> {
            Err(disabled(address, "shm", ""))
        }
        async fn connect_shm(address: &Address) -> Result<BoxTransport> {
            Err(disabled(address, "shm", ""))
        }
    }
}

cfg_if::cfg_if! {
    if #[cfg(feature = "tcp")] {
        async fn bind_tcp(address: &Address) -> Result<BoxListener> {
            Ok(Box::new(tcp::TcpListener::bind(address).await?))
        }
        async fn connect_tcp(address: &Address) -> Result<BoxTransport> {
            Ok(Box::new(tcp::connect(address).await?))
        }
    } else {
        async fn bind_tcp(address: &Address) -> Result<BoxListener> {
            Err(disabled(address, "tcp", ""))
        }
        async fn connect_tcp(address: &Address) -> Result<BoxTransport> {
            Err(disabled(address, "tcp", ""))
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn disabled_backends_name_their_feature() {
        #[cfg(not(feature = "shm"))]
        {
            let e = super::connect_transport("shm:x")
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("enable the `shm` feature"), "{e}");
        }
        #[cfg(not(windows))]
        {
            let e = super::bind("pipe:x").await.unwrap_err().to_string();
            assert!(
                e.contains("`windows` feature") && e.contains("only on Windows"),
                "{e}"
            );
        }
        let e = super::connect("bogus:x").await.unwrap_err().to_string();
        assert!(e.contains("expected one of"), "{e}");
    }

    #[cfg(all(unix, feature = "unix"))]
    #[tokio::test]
    async fn connect_options_reach_the_unix_transport() {
        use super::*;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let address: Address = format!("unix:{}", dir.path().join("s.sock").display())
            .parse()
            .unwrap();
        let mut listener = bind_address(&address, &BindOptions::default())
            .await
            .unwrap();
        let accepting = tokio::spawn(async move {
            let first = listener.accept().await?;
            let second = listener.accept().await?;
            Ok::<_, Error>((first, second))
        });

        let plain = unix_transport(&address, &ConnectOptions::new())
            .await
            .unwrap();
        assert_eq!(plain.busy_poll(), None);
        let budget = Duration::from_micros(40);
        let polling = unix_transport(&address, &ConnectOptions::new().busy_poll(budget))
            .await
            .unwrap();
        assert_eq!(polling.busy_poll(), Some(budget));
        let zero = ConnectOptions::new().busy_poll(Duration::ZERO);
        assert_eq!(zero.busy_poll, None, "a zero budget means no busy polling");
        accepting.await.unwrap().unwrap();
    }
}
