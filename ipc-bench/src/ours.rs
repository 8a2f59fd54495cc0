//! This workspace's transports: the raw-frame level (`ipc_unix` streams
//! through `ipc_core::codec::LengthCodec`) and JSON-RPC through
//! `ipc_core::{Server, Client}`.

use crate::mech::Mechanism;

/// Our mechanisms.
pub fn mechanisms() -> Vec<Mechanism> {
    Vec::new()
}
