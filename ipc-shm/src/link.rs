//! What both ends of a blocking connection share: the bells, the bootstrap
//! socket (liveness and, off Linux, the doorbell) and the wait policy.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ipc_core::{Error, Result};

use crate::bell::Bells;
use crate::layout::{WAIT_FUTEX, WAIT_SOCKET};
use crate::sync::{spin_hint, Ordering};

/// How long to spin before sleeping, and how often a sleeper checks that the
/// peer is alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPolicy {
    pub spin: Duration,
    pub liveness: Duration,
}

#[derive(Debug)]
pub(crate) struct Link {
    pub bells: Bells,
    /// The bootstrap socket; `None` for a region on the heap (tests).
    pub sock: Option<OwnedFd>,
    pub policy: WaitPolicy,
    /// The socket has hung up: the peer process is gone.
    pub hung_up: AtomicBool,
}

impl Link {
    /// After publishing data or freeing space: wakes the peer if it sleeps.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.bells.ring_peer() & WAIT_SOCKET != 0 {
            self.send_wake_byte();
        }
    }

    #[cold]
    fn send_wake_byte(&self) {
        if let Some(sock) = &self.sock {
            // A full socket buffer means unread wake bytes: the peer wakes anyway.
            let _ = rustix::net::send(sock, &[0], rustix::net::SendFlags::DONTWAIT);
        }
    }

    /// Whether the peer has gone (socket hang-up or its closed flag).
    #[inline]
    pub(crate) fn gone(&self) -> bool {
        self.hung_up.load(Ordering::Relaxed) || self.bells.peer_gone()
    }

    /// Reads wake bytes off the socket without blocking; notes a hang-up.
    fn drain_socket(&self) {
        let Some(sock) = &self.sock else { return };
        let mut buf = [0u8; 64];
        loop {
            match rustix::net::recv(sock, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
                Ok((0, _)) => {
                    self.hung_up.store(true, Ordering::Relaxed);
                    return;
                }
                Ok((n, _)) if n == buf.len() => continue,
                Ok(_) => return,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(_) => {
                    self.hung_up.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Waits on the socket for a wake byte or a hang-up, at most `timeout`.
    fn poll_socket(&self, timeout: Option<Duration>) {
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
            self.drain_socket();
        }
    }

    /// Calls `ready(gone)` until it returns a value: first at once, then
    /// spinning for the policy's spin time, then sleeping on the doorbell
    /// between calls. `gone` tells `ready` that the peer has died, so it
    /// can return what is left and then an error.
    pub(crate) fn wait_until<T>(
        &self,
        mut ready: impl FnMut(bool) -> Result<Option<T>>,
    ) -> Result<T> {
        if let Some(v) = ready(self.gone())? {
            return Ok(v);
        }
        if cfg!(loom) {
            spin_hint();
        } else if !self.policy.spin.is_zero() {
            let start = Instant::now();
            let mut n = 0u32;
            loop {
                if let Some(v) = ready(false)? {
                    return Ok(v);
                }
                spin_hint();
                n = n.wrapping_add(1);
                if n % 32 == 0 && start.elapsed() >= self.policy.spin {
                    break;
                }
            }
        }
        let how = if cfg!(any(target_os = "linux", loom)) {
            WAIT_FUTEX
        } else {
            WAIT_SOCKET
        };
        loop {
            let seq = self.bells.prepare_sleep(how);
            let gone = self.gone();
            if let Some(v) = ready(gone)? {
                return Ok(v);
            }
            if gone {
                // `ready` saw the peer gone and had nothing left to return.
                return Err(Error::Disconnected);
            }
            if how == WAIT_FUTEX {
                let liveness = if cfg!(loom) || self.sock.is_none() {
                    None
                } else {
                    Some(self.policy.liveness)
                };
                if self.bells.sleep(seq, liveness) {
                    self.poll_socket(Some(Duration::ZERO));
                }
            } else {
                self.poll_socket(Some(self.policy.liveness));
            }
        }
    }

    /// The socket, for callers that hand it elsewhere.
    #[allow(dead_code)]
    pub(crate) fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.sock.as_ref().map(|s| s.as_fd())
    }
}
