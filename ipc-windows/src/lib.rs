//! Windows named-pipe backend of the `ipc` workspace.
//!
//! Compiled only on Windows; elsewhere the crate is empty (build its
//! documentation with `--target x86_64-pc-windows-msvc` to see the API).
#![cfg_attr(
    windows,
    doc = r#"
- [`PipeListener`]: serves `pipe:name` (`\\.\pipe\name`; `local:name` maps
  here on Windows). Secure by default: an owner-only security descriptor
  (the current user and `SYSTEM`), remote clients rejected, and the first
  instance created with `FILE_FLAG_FIRST_PIPE_INSTANCE` so a process
  already serving the name is reported as [`ipc_core::Error::AddressInUse`]
  rather than shared. [`PipeOptions`] and [`PipeAccess`] open it to
  groups or everyone.
- [`PipeTransport`]: a connection, with the peer's verified identity:
  process id (`GetNamedPipeClientProcessId`) and user SID (from the
  client's token), `same_user` compared with ours.
- [`connect`]: the client side; retries with a bounded wait while every
  instance is busy.

# Examples

```no_run
# #[tokio::main] async fn main() -> ipc_core::Result<()> {
use tokio::io::{AsyncReadExt, AsyncWriteExt};

let addr = "pipe:node-admin".parse()?;
let mut listener = ipc_windows::PipeListener::bind(&addr)?;
tokio::spawn(async move {
    let mut client = ipc_windows::connect(&addr).await?;
    client.write_all(b"ping").await?;
    Ok::<_, ipc_core::Error>(())
});
let mut conn = listener.accept().await?;
assert!(conn.peer_info().same_user);
let mut buf = [0; 4];
conn.read_exact(&mut buf).await?;
# Ok(()) }
```
"#
)]
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

#[cfg(windows)]
mod listener;
#[cfg(windows)]
mod security;
#[cfg(windows)]
mod sys;
#[cfg(windows)]
mod transport;

#[cfg(windows)]
pub use listener::{PipeListener, PipeOptions, DEFAULT_BACKLOG, DEFAULT_BUFFER_SIZE, RELEASE_WAIT};
#[cfg(windows)]
pub use security::PipeAccess;
#[cfg(windows)]
pub use transport::{
    connect, connect_with, pipe_path, ConnectOptions, PipeTransport, DEFAULT_BUSY_TIMEOUT,
};
