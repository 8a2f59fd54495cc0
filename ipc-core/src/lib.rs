//! Transport-agnostic core of the `ipc` workspace.
//!
//! - [`Transport`] and [`Listener`]: what every backend (Unix sockets, named
//!   pipes, shared memory) implements, usable as trait objects.
//! - [`Address`]: the address strings users type (`unix:/run/a.sock`, ...).
//! - [`PeerInfo`] and [`AuthPolicy`]: the verified identity of a peer and who
//!   may connect.
//! - [`codec`]: sans-IO framing (length-delimited and JSON stream).
//! - [`jsonrpc`]: JSON-RPC 2.0 messages.
//! - [`Server`] and [`Client`]: JSON-RPC over any transport.
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

pub mod address;
mod client;
pub mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
mod handler;
pub mod jsonrpc;
pub mod memory;
mod outbox;
pub mod peer;
pub mod server;
pub mod transport;

pub use address::Address;
pub use client::{Batch, Client, ClientBuilder, Connector, Reconnect, Subscription};
pub use error::{Error, Result};
pub use handler::{Context, Handler, NotificationSink, Router};
pub use peer::{AuthPolicy, PeerInfo};
pub use server::{
    ConnectionInfo, Server, ServerBuilder, ServerConfig, ServerControl, ServerHandle,
};
pub use transport::{BoxListener, BoxTransport, Listener, StreamTransport, Transport};
