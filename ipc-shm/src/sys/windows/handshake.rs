//! The bootstrap over the named pipe. The server checks the client's
//! identity (process id and user, verified by the pipe) against its auth
//! policy; the client then creates the region and both events itself, and
//! the server, which holds `PROCESS_DUP_HANDLE` on the client, duplicates
//! them out of the client's process. So the server takes every handle
//! through `DuplicateHandle`, which gives it fresh handles of its own, and
//! the client never has to trust a handle value sent to it: no value from
//! either peer can alias a handle the other already holds.
//!
//! ```text
//! server: "IPCSHM" version:u8 status:u8 reason_len:u32le capacity:u32le
//!         status 'O' offers rings of `capacity` bytes; 'R' refuses, the
//!         reason follows
//! client: "IPCSHM" version:u8 'H' section:u64le client_event:u64le server_event:u64le
//! server: "IPCSHM" version:u8 status:u8 reason_len:u32le 0:u32
//!         status 'K' accepts; 'F' refuses the handles, the reason follows
//! ```
//!
//! Then the pipe closes. Wake-ups go through the events; each side learns
//! of the other's death through its process handle.

use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::sync::Arc;

use ipc_core::{AuthPolicy, Error, PeerInfo, Result};
use ipc_windows::PipeTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use windows_sys::Win32::System::Threading::{
    SetEvent, PROCESS_DUP_HANDLE, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
};

use super::door::{new_event, signalled, Door};
use super::{map, process};
use crate::layout::check_capacity;
use crate::region::Region;

const HELLO_LEN: usize = 16;
const HANDLES_LEN: usize = 32;
const MAGIC: &[u8; 6] = b"IPCSHM";
const VERSION: u8 = 1;
const MAX_REASON: usize = 4096;

fn hello(status: u8, reason_len: usize, capacity: u32) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..6].copy_from_slice(MAGIC);
    h[6] = VERSION;
    h[7] = status;
    h[8..12].copy_from_slice(&(reason_len as u32).to_le_bytes());
    h[12..16].copy_from_slice(&capacity.to_le_bytes());
    h
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

async fn send_status(pipe: &mut PipeTransport, status: u8, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let mut msg = hello(status, reason.len(), 0).to_vec();
    msg.extend_from_slice(reason);
    let _ = pipe.write_all(&msg).await;
    let _ = pipe.flush().await;
}

/// Server side: refuse the peer, telling it why.
pub(crate) async fn refuse(pipe: &mut PipeTransport, peer: &PeerInfo, policy: &AuthPolicy) {
    send_status(pipe, b'R', &format!("{policy}")).await;
    tracing::warn!(%peer, %policy, "shared-memory client refused by the auth policy");
}

/// The two events of a connection must be distinct auto-reset events: set
/// one, and only it is signalled, once.
fn check_events(a: &OwnedHandle, b: &OwnedHandle) -> Result<()> {
    for (x, y) in [(a, b), (b, a)] {
        // Take any pending signal first.
        signalled(x, 0);
        signalled(y, 0);
        // SAFETY: the handle is valid (owned); setting an event has no
        // memory effects on this process.
        let set = unsafe { SetEvent(x.as_raw_handle()) } != 0;
        let (other, first, second) = (signalled(y, 0), signalled(x, 0), signalled(x, 0));
        if !set || other || !first || second {
            return Err(Error::Protocol(
                "the client's event handles are not two distinct auto-reset events".into(),
            ));
        }
    }
    Ok(())
}

/// Server side: offer rings of `capacity` bytes to an admitted client, take
/// its region and events, and check them. `accepted_at` is when its pipe
/// connected.
pub(crate) async fn serve(
    pipe: &mut PipeTransport,
    peer: &PeerInfo,
    accepted_at: u64,
    capacity: usize,
) -> Result<(Arc<Region>, Door)> {
    let pid = peer.pid.ok_or_else(|| {
        Error::Protocol("the pipe does not report the client's process id".into())
    })?;
    let client = process::open(
        pid,
        PROCESS_DUP_HANDLE | PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION,
        accepted_at,
        "client",
    )?;
    pipe.write_all(&hello(b'O', 0, capacity as u32))
        .await
        .map_err(|e| Error::io("offering the shared region", e))?;
    pipe.flush()
        .await
        .map_err(|e| Error::io("offering the shared region", e))?;
    let mut msg = [0u8; HANDLES_LEN];
    pipe.read_exact(&mut msg)
        .await
        .map_err(|e| Error::io("reading the client's handles", e))?;
    let checked = take_handles(&client, &msg, capacity);
    match checked {
        Ok((region, mine, theirs)) => {
            pipe.write_all(&hello(b'K', 0, 0))
                .await
                .map_err(|e| Error::io("confirming the shared region", e))?;
            pipe.flush()
                .await
                .map_err(|e| Error::io("confirming the shared region", e))?;
            let watch = process::watch_only(&client)?;
            Ok((region, Door::new(mine, theirs, Some(watch))))
        }
        Err(e) => {
            send_status(pipe, b'F', &e.to_string()).await;
            Err(e)
        }
    }
}

/// Duplicates and checks what the client named in `msg`: its region and
/// the events (the server's own, then the client's).
fn take_handles(
    client: &OwnedHandle,
    msg: &[u8; HANDLES_LEN],
    capacity: usize,
) -> Result<(Arc<Region>, OwnedHandle, OwnedHandle)> {
    if &msg[..6] != MAGIC || msg[6] != VERSION || msg[7] != b'H' {
        return Err(Error::Protocol(
            "the client's reply is not a shared-memory handle message".into(),
        ));
    }
    let section = process::duplicate_from(client, u64_at(msg, 8), "region")?;
    let client_event = process::duplicate_from(client, u64_at(msg, 16), "event")?;
    let server_event = process::duplicate_from(client, u64_at(msg, 24), "event")?;
    check_events(&server_event, &client_event)?;
    let region = map::open(&section, capacity)?;
    Ok((region, server_event, client_event))
}

/// Client side: receive the offer, create the region and events, hand them
/// over and wait for the server to accept them. `connected_at` is when the
/// pipe connected.
pub(crate) async fn connect(
    pipe: &mut PipeTransport,
    server: &PeerInfo,
    connected_at: u64,
) -> Result<(Arc<Region>, Door)> {
    let status = read_hello(pipe).await?;
    let capacity = match status {
        (b'O', _, capacity) => capacity as usize,
        (b'R', reason, _) => {
            return Err(Error::Unauthorized {
                peer: format!("[pid={}] (this process)", std::process::id()),
                policy: reason,
            })
        }
        (other, _, _) => {
            return Err(Error::Protocol(format!(
                "unknown shared-memory greeting status {other:#x}"
            )))
        }
    };
    check_capacity(capacity).map_err(|e| Error::Protocol(format!("the server offered {e}")))?;
    let pid = server.pid.ok_or_else(|| {
        Error::Protocol("the pipe does not report the server's process id".into())
    })?;
    let server_process = process::open(
        pid,
        PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION,
        connected_at,
        "server",
    )?;
    let (region, section) = map::create(capacity)?;
    let events = || new_event().map_err(|e| Error::io("creating the doorbell events", e));
    let (mine, theirs) = (events()?, events()?);
    let mut msg = [0u8; HANDLES_LEN];
    msg[..6].copy_from_slice(MAGIC);
    msg[6] = VERSION;
    msg[7] = b'H';
    for (at, h) in [(8, &section), (16, &mine), (24, &theirs)] {
        msg[at..at + 8].copy_from_slice(&(h.as_raw_handle() as usize as u64).to_le_bytes());
    }
    pipe.write_all(&msg)
        .await
        .map_err(|e| Error::io("handing the shared region to the server", e))?;
    pipe.flush()
        .await
        .map_err(|e| Error::io("handing the shared region to the server", e))?;
    match read_hello(pipe).await? {
        (b'K', _, _) => {}
        (b'F', reason, _) => {
            return Err(Error::Protocol(format!(
                "the server refused the shared region: {reason}"
            )))
        }
        (other, _, _) => {
            return Err(Error::Protocol(format!(
                "unknown shared-memory confirmation status {other:#x}"
            )))
        }
    }
    // The server holds its own duplicate of the section now; the view keeps
    // the region alive on this side.
    drop(section);
    Ok((region, Door::new(mine, theirs, Some(server_process))))
}

/// Reads a server message: its status, reason (if any) and capacity field.
async fn read_hello(pipe: &mut PipeTransport) -> Result<(u8, String, u32)> {
    let mut buf = [0u8; HELLO_LEN];
    if let Err(e) = pipe.read_exact(&mut buf).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Disconnected
        } else {
            Error::io("reading the shared-memory greeting", e)
        });
    }
    if &buf[..6] != MAGIC {
        return Err(Error::Protocol(
            "the endpoint is not a shared-memory server (bad greeting); check the address scheme"
                .into(),
        ));
    }
    if buf[6] != VERSION {
        return Err(Error::Protocol(format!(
            "the server speaks shared-memory protocol version {}, this build {VERSION}; upgrade both sides to the same release",
            buf[6]
        )));
    }
    let mut reason = String::new();
    if matches!(buf[7], b'R' | b'F') {
        let len = (u32_at(&buf, 8) as usize).min(MAX_REASON);
        let mut r = vec![0u8; len];
        let _ = pipe.read_exact(&mut r).await;
        reason = String::from_utf8_lossy(&r).into_owned();
    }
    Ok((buf[7], reason, u32_at(&buf, 12)))
}
