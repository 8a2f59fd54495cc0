//! Unix domain sockets and FIFOs for the `ipc` workspace (compiled only on
//! Unix; an empty crate elsewhere).
//!
//! - [`UnixListener`] binds `unix:/path`, `unix:@name` (Linux abstract
//!   namespace) and `local:name` addresses: owner-only (`0600`) by default,
//!   with no moment in which the socket is more open than asked, refusing to
//!   take over a live server's socket, replacing a stale one, and removing
//!   its own file (and only its own) when closed.
//! - [`connect`] returns a [`UnixTransport`] with clear errors (`NotFound`,
//!   `PermissionDenied`).
//! - Every connection carries the peer's uid, gid and pid as the kernel
//!   reports them ([`peer_info`]), for the server's auth policy.
//! - [`fifo`]: named pipes for one-way streams such as logs and events.
//! - Optional busy polling of reads ([`UnixTransport::set_busy_poll`],
//!   [`BindOptions::busy_poll`]), off by default: a latency-critical
//!   request/response connection can spend CPU to skip the reactor's sleep
//!   and wake-up; it is adaptive, so a slow or idle peer is not polled for.
//!
//! # Examples
//!
//! ```ignore-windows
//! use ipc_core::{Address, Listener, Transport};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ipc_core::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let addr = Address::Unix(dir.path().join("node.sock")); // or "unix:/run/...".parse()?
//! let mut listener = ipc_unix::UnixListener::bind(&addr)?;
//! let server = tokio::spawn(async move {
//!     let mut conn = listener.accept().await?;
//!     assert!(conn.peer().same_user); // uid, gid and pid from the kernel
//!     let mut buf = [0; 4];
//!     conn.read_exact(&mut buf).await?;
//!     conn.write_all(&buf).await?;
//!     Ok::<_, ipc_core::Error>(())
//! });
//! let mut client = ipc_unix::connect(&addr).await?;
//! client.write_all(b"ping").await?;
//! let mut reply = [0; 4];
//! client.read_exact(&mut reply).await?;
//! assert_eq!(&reply, b"ping");
//! server.await.unwrap()?;
//! # Ok(()) }
//! ```
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

#[cfg(unix)]
mod busy;
#[cfg(unix)]
mod endpoint;
#[cfg(unix)]
pub mod fifo;
#[cfg(unix)]
mod listener;
#[cfg(unix)]
mod sys;
#[cfg(unix)]
mod transport;

#[cfg(unix)]
pub use listener::{BindOptions, UnixListener, DEFAULT_BACKLOG, DEFAULT_MODE};
#[cfg(unix)]
pub use transport::{connect, peer_info, UnixTransport};
