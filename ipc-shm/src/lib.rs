//! Shared-memory transport: a pair of single-producer/single-consumer rings
//! in one mapping, handed over an authenticated local socket.
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

pub mod layout;
mod region;
mod ring;
mod sync;

#[cfg(unix)]
mod bell;
#[cfg(unix)]
mod blocking;
#[cfg(unix)]
mod link;

#[cfg(unix)]
pub use blocking::{Message, ShmConnection, ShmReceiver, ShmSender};
pub use region::Region;

#[cfg(all(test, loom))]
mod loom_model;
