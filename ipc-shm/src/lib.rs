//! Shared-memory transport of the `ipc` workspace: a pair of
//! single-producer/single-consumer rings in one mapping, set up over an
//! authenticated local socket.
//!
//! - [`ShmListener`] binds `shm:name` (a local socket at `name`: a Unix
//!   socket, or the named pipe `\\.\pipe\name` on Windows), checks each
//!   client's credentials against its [`AuthPolicy`](ipc_core::AuthPolicy),
//!   and shares a fresh region with it: a sealed memfd on Linux (an
//!   unlinked `shm_open` object on other Unix systems) sent over
//!   `SCM_RIGHTS`; on Windows an unnamed pagefile-backed file mapping that
//!   the client creates and the server duplicates out of the client's
//!   process. No name of the region is ever visible to other processes.
//! - [`ShmTransport`] is the async byte-stream [`Transport`](ipc_core::Transport),
//!   so the JSON-RPC `Server` and `Client` work over `shm:` unchanged.
//! - [`ShmConnection`] is the message API: whole messages, zero-copy reads
//!   ([`Message`] borrows the ring until dropped), blocking calls that spin
//!   for [`ShmOptions::spin`] and then sleep (a futex on Linux, an event on
//!   Windows), for the lowest latency without a runtime.
//! - [`AsyncShmConnection`] is the same message API for async code: its
//!   calls wait as tasks, on the socket (on Windows, the event) registered
//!   with the runtime, so an idle connection takes no thread. Either end of
//!   a connection may use either form.
//!
//! The peer is untrusted: every index and length read from shared memory is
//! checked before use, and a broken ring is [`Error::Corrupt`](ipc_core::Error::Corrupt).
//! A peer that dies is seen through the socket's hang-up (on Windows, its
//! process handle) and reported as disconnected.
//!
//! # Examples
//!
//! ```no_run
//! use ipc_shm::{ShmConnection, ShmListener, ShmOptions};
//!
//! # #[allow(dead_code)]
//! # async fn run() -> ipc_core::Result<()> {
//! let addr = "shm:demo".parse()?;
//! let mut listener = ShmListener::bind(&addr)?;
//! std::thread::spawn(move || {
//!     let mut conn = ShmConnection::connect(&addr, &ShmOptions::new())?;
//!     conn.send(b"hello")?;
//!     Ok::<_, ipc_core::Error>(())
//! });
//! let mut conn = listener.accept_connection().await?;
//! assert_eq!(&*conn.recv()?, b"hello");
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]
// The loom build models only the ring and the bells.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod copy;
pub mod layout;
mod region;
mod ring;
mod sync;
mod sys;

#[cfg(not(loom))]
mod async_messages;
#[cfg(not(loom))]
mod async_wait;
mod bell;
mod blocking;
mod link;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod transport;

#[cfg(not(loom))]
pub use async_messages::{AsyncShmConnection, AsyncShmReceiver, AsyncShmSender};
pub use blocking::{Message, ShmConnection, ShmReceiver, ShmSender};
#[cfg(not(loom))]
pub use options::{ShmOptions, DEFAULT_LIVENESS_CHECK, DEFAULT_SPIN};
pub use region::Region;
#[cfg(not(loom))]
pub use transport::{ShmListener, ShmTransport};

#[cfg(all(test, loom))]
mod loom_model;
