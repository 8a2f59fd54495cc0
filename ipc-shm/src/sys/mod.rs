//! Platform code: creating and mapping the shared region, handing it to the
//! peer, the doorbell, and how each side learns that the other died.
//!
//! Each platform module offers the same items:
//!
//! - `door::Door`: sleeping on this side's bell and waking the peer;
//! - `wire::{Wire, AsyncWire, BLOCKING_SLEEP, ASYNC_SLEEP}`: the link to the
//!   peer after the handshake (liveness, and the doorbell where it is not
//!   the `Door`), for blocking and async connections;
//! - `Conn`, `Endpoint`, `connect`, `bind`: the bootstrap over the
//!   platform's local socket.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;
