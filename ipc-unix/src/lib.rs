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
//!
//! # Examples
//!
//! ```no_run
//! use ipc_core::{Listener, Transport};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn doc() -> ipc_core::Result<()> {
//! let addr = "unix:/run/user/1000/node.sock".parse()?;
//! let mut listener = ipc_unix::UnixListener::bind(&addr)?;
//! tokio::spawn(async move {
//!     while let Ok(mut conn) = listener.accept().await {
//!         let mut buf = [0; 4];
//!         if conn.read_exact(&mut buf).await.is_ok() {
//!             let _ = conn.write_all(&buf).await;
//!         }
//!     }
//! });
//! let mut client = ipc_unix::connect(&addr).await?;
//! assert!(client.peer().same_user);
//! client.write_all(b"ping").await?;
//! # Ok(()) }
//! ```
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

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
