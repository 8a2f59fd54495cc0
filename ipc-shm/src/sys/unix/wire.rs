//! The bootstrap socket after the handshake: liveness (its hang-up) and,
//! where there is no futex, the doorbell (one byte per wake-up).

#[cfg(not(loom))]
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
#[cfg(not(loom))]
use std::task::{Context, Poll, Waker};
use std::time::Duration;

#[cfg(not(loom))]
use tokio::net::UnixStream;

use crate::bell::Bells;
use crate::layout::{WAIT_FUTEX, WAIT_SOCKET};
use crate::sync::Ordering;

/// How a blocking call sleeps: on the futex on Linux (and in the loom
/// model), on the socket elsewhere.
pub(crate) const BLOCKING_SLEEP: u32 = if cfg!(any(target_os = "linux", loom)) {
    WAIT_FUTEX
} else {
    WAIT_SOCKET
};

/// How an async task sleeps: on the socket, registered with the runtime.
#[cfg(not(loom))]
pub(crate) const ASYNC_SLEEP: u32 = WAIT_SOCKET;

/// The socket of a blocking connection; `None` for a region on the heap.
#[derive(Debug)]
pub(crate) struct Wire {
    sock: Option<OwnedFd>,
}

impl Wire {
    pub(crate) fn unconnected() -> Wire {
        Wire { sock: None }
    }

    #[cfg(not(loom))]
    pub(crate) fn new(sock: OwnedFd) -> Wire {
        Wire { sock: Some(sock) }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.sock.is_some()
    }

    /// Sends one wake-up byte.
    #[cold]
    pub(crate) fn send_wake(&self) {
        if let Some(sock) = &self.sock {
            // A full socket buffer means unread wake bytes: the peer wakes anyway.
            let _ = rustix::net::send(sock, &[0], rustix::net::SendFlags::DONTWAIT);
        }
    }

    /// Reads wake bytes off the socket without blocking; notes a hang-up.
    fn drain(&self, hung_up: &AtomicBool) {
        let Some(sock) = &self.sock else { return };
        let mut buf = [0u8; 64];
        loop {
            match rustix::net::recv(sock, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
                Ok((0, _)) => {
                    hung_up.store(true, Ordering::Relaxed);
                    return;
                }
                Ok((n, _)) if n == buf.len() => continue,
                Ok(_) => return,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(_) => {
                    hung_up.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// After a timed-out sleep: checks (without waiting) whether the socket
    /// has hung up.
    pub(crate) fn check_alive(&self, bells: &Bells, hung_up: &AtomicBool) {
        self.wait(Some(Duration::ZERO), bells, hung_up);
    }

    /// Waits on the socket for a wake byte or a hang-up, at most `timeout`.
    pub(crate) fn wait(&self, timeout: Option<Duration>, _bells: &Bells, hung_up: &AtomicBool) {
        let Some(sock) = &self.sock else {
            std::thread::yield_now();
            return;
        };
        let mut fds = [rustix::event::PollFd::new(
            sock,
            rustix::event::PollFlags::IN,
        )];
        let ts = timeout.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos().into(),
        });
        let _ = rustix::event::poll(&mut fds, ts.as_ref());
        if !fds[0].revents().is_empty() {
            self.drain(hung_up);
        }
    }
}

/// The socket of an async connection, registered with the runtime: the
/// doorbell of a waiting task and the sign of the peer's death.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct AsyncWire {
    sock: UnixStream,
}

#[cfg(not(loom))]
impl AsyncWire {
    pub(crate) fn new(sock: UnixStream) -> AsyncWire {
        AsyncWire { sock }
    }

    /// Sends one wake-up byte.
    pub(crate) fn send_wake(&self) {
        let _ = rustix::net::send(&self.sock, &[0], rustix::net::SendFlags::DONTWAIT);
    }

    /// Waits for a wake-up byte or a hang-up on the socket; `joint` is woken
    /// when one comes. Sets `hung_up` when the socket has hung up.
    pub(crate) fn poll_wait(&self, joint: &Waker, hung_up: &AtomicBool) -> Poll<()> {
        let mut cx = Context::from_waker(joint);
        match self.sock.poll_read_ready(&mut cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => {
                hung_up.store(true, Ordering::Relaxed);
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => {
                let mut buf = [0u8; 64];
                loop {
                    match self.sock.try_read(&mut buf) {
                        Ok(0) => {
                            hung_up.store(true, Ordering::Relaxed);
                            break;
                        }
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => {
                            hung_up.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                Poll::Ready(())
            }
        }
    }
}
