//! The bootstrap over the local socket: the server checks the client's
//! credentials against its auth policy and hands over the region's file
//! descriptor with `SCM_RIGHTS`; the client checks the region before use.
//!
//! Server to client, one message of 16 bytes (plus a reason on refusal):
//!
//! ```text
//! "IPCSHM" version:u8 status:u8 ('K' ok, 'R' refused) reason_len:u32le 0:u32
//! [reason bytes]                       with 'K': the region's fd attached
//! ```
//!
//! The socket then stays open for the life of the connection: its hang-up
//! tells each side that the other has died, and it carries wake-up bytes.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use ipc_core::{Address, AuthPolicy, Error, PeerInfo, Result};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use crate::region::Region;

const HELLO_LEN: usize = 16;

/// No SIGPIPE from a vanished client (Linux; elsewhere Rust programs ignore
/// SIGPIPE by default).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: SendFlags = SendFlags::empty();

/// Received descriptors are close-on-exec from the start where the OS can
/// (elsewhere they are marked right after `recvmsg`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const RECV_FLAGS: RecvFlags = RecvFlags::CMSG_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RECV_FLAGS: RecvFlags = RecvFlags::empty();
const HELLO_MAGIC: &[u8; 6] = b"IPCSHM";
const HELLO_VERSION: u8 = 1;
const MAX_REASON: usize = 4096;

/// The local-socket address a `shm:` address bootstraps over: `shm:name` is
/// `local:name`, `shm:/path` is `unix:/path`.
pub(crate) fn socket_address(addr: &Address) -> Result<Address> {
    match addr {
        Address::Shm(name) if name.starts_with('/') => Ok(Address::Unix(PathBuf::from(name))),
        Address::Shm(name) => Ok(Address::Local(name.clone())),
        other => Err(Error::InvalidAddress {
            input: other.to_string(),
            reason: "the shared-memory backend serves only shm: addresses".into(),
            expected: "shm:name or shm:/path/to.sock",
        }),
    }
}

fn hello(status: u8, reason_len: usize) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..6].copy_from_slice(HELLO_MAGIC);
    h[6] = HELLO_VERSION;
    h[7] = status;
    h[8..12].copy_from_slice(&(reason_len as u32).to_le_bytes());
    h
}

/// Server side: refuse the peer, telling it why.
pub(crate) async fn refuse(stream: &mut UnixStream, peer: &PeerInfo, policy: &AuthPolicy) {
    let reason = format!("{policy}");
    let mut msg = hello(b'R', reason.len()).to_vec();
    msg.extend_from_slice(reason.as_bytes());
    let _ = stream.write_all(&msg).await;
    tracing::warn!(%peer, %policy, "shared-memory client refused by the auth policy");
}

/// Server side: hand the region's descriptor to an admitted peer.
pub(crate) async fn send_region(stream: &UnixStream, fd: &OwnedFd) -> Result<()> {
    let msg = hello(b'K', 0);
    let fds = [std::os::fd::AsFd::as_fd(fd)];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut anc = SendAncillaryBuffer::new(&mut space);
            anc.push(SendAncillaryMessage::ScmRights(&fds));
            rustix::net::sendmsg(stream, &[std::io::IoSlice::new(&msg)], &mut anc, SEND_FLAGS)
                .map_err(std::io::Error::from)
        })
        .await
        .map_err(|e| Error::io("sending the shared region to the client", e))?;
    if sent != HELLO_LEN {
        return Err(Error::Protocol(format!(
            "sent {sent} of {HELLO_LEN} bytes of the shared-memory greeting"
        )));
    }
    Ok(())
}

/// Client side: receive the greeting and the region, and map it.
pub(crate) async fn receive_region(stream: &mut UnixStream) -> Result<Arc<Region>> {
    let mut buf = [0u8; HELLO_LEN];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let shared: &UnixStream = stream;
    let n = shared
        .async_io(Interest::READABLE, || {
            let mut anc = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = rustix::net::recvmsg(shared, &mut iov, &mut anc, RECV_FLAGS)
                .map_err(std::io::Error::from)?;
            for msg in anc.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = msg {
                    fds.extend(received);
                }
            }
            Ok(r.bytes)
        })
        .await
        .map_err(|e| Error::io("receiving the shared region from the server", e))?;
    if n == 0 {
        return Err(Error::Disconnected);
    }
    if n < HELLO_LEN {
        stream
            .read_exact(&mut buf[n..])
            .await
            .map_err(|e| Error::io("reading the shared-memory greeting", e))?;
    }
    if &buf[..6] != HELLO_MAGIC {
        return Err(Error::Protocol(
            "the endpoint is not a shared-memory server (bad greeting); check the address scheme"
                .into(),
        ));
    }
    if buf[6] != HELLO_VERSION {
        return Err(Error::Protocol(format!(
            "the server speaks shared-memory protocol version {}, this build {HELLO_VERSION}; upgrade both sides to the same release",
            buf[6]
        )));
    }
    match buf[7] {
        b'K' => {}
        b'R' => {
            let len =
                (u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize).min(MAX_REASON);
            let mut reason = vec![0u8; len];
            let _ = stream.read_exact(&mut reason).await;
            let me = rustix::process::geteuid().as_raw();
            return Err(Error::Unauthorized {
                peer: format!("[uid={me}] (this process)"),
                policy: String::from_utf8_lossy(&reason).into_owned(),
            });
        }
        other => {
            return Err(Error::Protocol(format!(
                "unknown shared-memory greeting status {other:#x}"
            )))
        }
    }
    if fds.len() != 1 {
        return Err(Error::Protocol(format!(
            "the server sent {} descriptors with its greeting, expected exactly 1",
            fds.len()
        )));
    }
    let fd = fds.pop().expect("one fd");
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| Error::io("marking the shared region close-on-exec", e.into()))?;
    super::map::open(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_addresses_map_to_local_sockets() {
        let a: Address = "shm:fast".parse().unwrap();
        assert_eq!(socket_address(&a).unwrap(), Address::Local("fast".into()));
        let a: Address = "shm:/tmp/x.sock".parse().unwrap();
        assert_eq!(
            socket_address(&a).unwrap(),
            Address::Unix(PathBuf::from("/tmp/x.sock"))
        );
        let a: Address = "unix:/tmp/x.sock".parse().unwrap();
        assert!(socket_address(&a).is_err());
    }
}
