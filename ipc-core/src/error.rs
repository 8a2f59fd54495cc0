//! The one error type of the workspace's core; backends convert theirs into it.

use std::io;
use std::time::Duration;

use crate::jsonrpc::ErrorObject;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in local IPC, with messages that say what
/// happened and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address string did not have the expected form.
    #[error("invalid address {input:?}: {reason}; expected {expected}")]
    InvalidAddress {
        /// What the user typed.
        input: String,
        /// What was wrong with it.
        reason: String,
        /// The form that was expected.
        expected: &'static str,
    },

    /// The address names a backend that this build does not include.
    #[error("address {address:?} needs the `{feature}` backend: enable the `{feature}` feature of the `ipc` crate{platform}")]
    BackendDisabled {
        /// The address.
        address: String,
        /// The cargo feature that enables the backend.
        feature: &'static str,
        /// Extra platform note, empty or starting with a separator.
        platform: &'static str,
    },

    /// Another live server owns the endpoint.
    #[error("{endpoint} is in use by a live server; stop it or choose another address")]
    AddressInUse {
        /// The endpoint (path or name).
        endpoint: String,
    },

    /// The endpoint path exists and is not something we may replace.
    #[error("{path} exists and is not a socket; refusing to delete it (remove it yourself or choose another path)")]
    NotASocket {
        /// The path.
        path: String,
    },

    /// The endpoint cannot be created safely where it was asked for.
    #[error("refusing to bind {endpoint}: {reason}")]
    Insecure {
        /// The endpoint.
        endpoint: String,
        /// Why it is unsafe.
        reason: String,
    },

    /// A path does not fit the platform's socket address.
    #[error("socket path {path} is {len} bytes, longer than the platform limit of {max}; use a shorter path (for example under $XDG_RUNTIME_DIR) or an abstract name")]
    PathTooLong {
        /// The path.
        path: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// Nothing is listening at the address.
    #[error("no server is listening at {endpoint}; start the server first or check the address")]
    NotFound {
        /// The endpoint.
        endpoint: String,
    },

    /// The OS refused access to the endpoint.
    #[error("permission denied for {endpoint}: the endpoint belongs to another user or its mode forbids you; run as its owner or ask for group access")]
    PermissionDenied {
        /// The endpoint.
        endpoint: String,
    },

    /// The server's auth policy refused this peer.
    #[error("peer {peer} refused by the auth policy {policy}")]
    Unauthorized {
        /// The peer's identity, as printed by [`crate::PeerInfo`].
        peer: String,
        /// The policy that refused it.
        policy: String,
    },

    /// A frame's declared or scanned length is larger than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes; raise the limit on both sides (a codec's max_frame_len, ipc-shm's max_message_len; for ipc-shm's send_with, ring_capacity, or use send) or send smaller messages")]
    FrameTooLarge {
        /// The declared or observed length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// The peer sent bytes that are not the expected protocol.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A shared structure written by the peer is inconsistent.
    #[error("corrupt shared state: {0}; the peer is faulty or hostile, the connection is closed")]
    Corrupt(String),

    /// The server answered with a JSON-RPC error object.
    #[error("server returned error {}: {}", .0.code, .0.message)]
    Rpc(ErrorObject),

    /// (De)serialising a message or value failed.
    #[error("serialisation failed: {0}")]
    Json(#[from] serde_json::Error),

    /// The peer went away; pending work on the connection failed.
    #[error("disconnected: the peer closed the connection")]
    Disconnected,

    /// An operation did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// The server is shutting down or the handle was closed.
    #[error("shut down: the server or client is closing")]
    Shutdown,

    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the error means the connection is gone.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::Disconnected => true,
            Error::Io { source, .. } => is_disconnect_kind(source.kind()),
            _ => false,
        }
    }
}

/// True for the I/O error kinds that mean "the peer is gone".
pub fn is_disconnect_kind(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if is_disconnect_kind(e.kind()) {
            return Error::Disconnected;
        }
        // Codec errors carry an `Error` inside an io::Error; unwrap it.
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(Ok(inner)) = e.into_inner().map(|inner| inner.downcast::<Error>()) {
                return *inner;
            }
            return Error::Protocol("codec error without details".into());
        }
        Error::io("I/O error", e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Disconnected => io::ErrorKind::BrokenPipe,
            Error::Timeout(_) => io::ErrorKind::TimedOut,
            Error::FrameTooLarge { .. } | Error::Protocol(_) | Error::Corrupt(_) => {
                io::ErrorKind::InvalidData
            }
            Error::PermissionDenied { .. } | Error::Unauthorized { .. } => {
                io::ErrorKind::PermissionDenied
            }
            Error::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
