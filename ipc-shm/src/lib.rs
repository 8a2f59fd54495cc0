//! Shared-memory transport: a pair of single-producer/single-consumer rings
//! in one mapping, handed over an authenticated local socket.
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

pub mod layout;
mod region;
mod ring;
mod sync;

pub use region::Region;
