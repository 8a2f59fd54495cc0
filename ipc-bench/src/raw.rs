//! Baselines written directly on the OS with blocking std I/O. Here the
//! ones every platform has: a pipe pair, TCP loopback with `TCP_NODELAY`,
//! and a busy-spin channel in a shared mapping (the cache-line floor); the
//! platform's own local stream (a Unix socket, a Win32 named pipe) comes
//! first, from [`crate::sys`].

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use memmap2::MmapMut;

use crate::mech::{Group, Mechanism, ServeCtx, ServerKind, SyncSession};
use crate::proto::{self, MsgSync, MAX_MSG};
use crate::streams::RawSync;
use crate::sys;

/// The raw OS baselines, the platform's local stream first.
pub fn mechanisms() -> Vec<Mechanism> {
    let mut v = sys::raw_mechanisms();
    v.extend([
        Mechanism {
            name: "pipe-raw",
            group: Group::Baseline,
            baseline: sys::LOCAL_RAW,
            about: "two anonymous pipes (the server's stdin and stdout), blocking",
            server: ServerKind::ChildStdio,
            serve: |_| {
                let (r, w) = sys::stdio_files()?;
                proto::serve_sync(&mut RawSync::new(r, w))?;
                Ok(())
            },
            connect: |mut ctx| {
                let w = ctx.stdin.take().context("no pipe to the server's stdin")?;
                let r = ctx
                    .stdout
                    .take()
                    .context("no pipe from the server's stdout")?;
                Ok(Box::new(SyncSession(RawSync::new(r, w))))
            },
        },
        Mechanism {
            name: "tcp-raw",
            group: Group::Baseline,
            baseline: sys::LOCAL_RAW,
            about: "std::net::TcpStream on 127.0.0.1 with TCP_NODELAY, blocking",
            server: ServerKind::Child,
            serve: serve_tcp,
            connect: |ctx| {
                let port: u16 = ctx.info.trim().parse().context("server sent no port")?;
                let s = TcpStream::connect(("127.0.0.1", port))?;
                s.set_nodelay(true)?;
                Ok(Box::new(SyncSession(RawSync::new(s.try_clone()?, s))))
            },
        },
        Mechanism {
            name: "spin-shm",
            group: Group::Baseline,
            baseline: sys::LOCAL_RAW,
            about: "busy-spin on atomics in a shared mapping, one message slot each way, \
                    payload copied in and out (the cache-line floor; both sides spin)",
            server: ServerKind::Child,
            serve: |ctx| {
                let map = SpinMap::create(&ctx.endpoint)?;
                ctx.ready("")?;
                proto::serve_sync(&mut SpinChannel::new(map, Side::Server))?;
                Ok(())
            },
            connect: |ctx| {
                let map = SpinMap::open(&ctx.endpoint)?;
                Ok(Box::new(SyncSession(SpinChannel::new(map, Side::Client))))
            },
        },
    ]);
    v
}

fn serve_tcp(ctx: &ServeCtx) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    ctx.ready(&listener.local_addr()?.port().to_string())?;
    for conn in listener.incoming() {
        let s = conn?;
        s.set_nodelay(true)?;
        std::thread::spawn(move || {
            let r = s.try_clone()?;
            proto::serve_sync(&mut RawSync::new(r, s))
        });
    }
    Ok(())
}

/// Layout of the spin mapping: two one-message slots (client to server,
/// server to client). Each slot has a sequence counter and a length on one
/// cache line, the consumer's acknowledgement on another, then the payload.
const LINE: usize = 128;
const SLOT_HEADER: usize = 2 * LINE;
const SLOT_LEN: usize = SLOT_HEADER + MAX_MSG;
const MAP_LEN: usize = 2 * SLOT_LEN;
/// A spinning side gives up after this long without an answer.
const SPIN_TIMEOUT: Duration = Duration::from_secs(10);

struct SpinMap {
    /// Owns the mapping that `base` points into.
    _map: MmapMut,
    base: *mut u8,
}

impl SpinMap {
    fn create(path: &std::path::Path) -> anyhow::Result<SpinMap> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        f.set_len(MAP_LEN as u64)?;
        SpinMap::map(&f)
    }

    fn open(path: &std::path::Path) -> anyhow::Result<SpinMap> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        anyhow::ensure!(
            f.metadata()?.len() == MAP_LEN as u64,
            "{} is not a spin mapping of {MAP_LEN} bytes",
            path.display()
        );
        SpinMap::map(&f)
    }

    fn map(f: &File) -> anyhow::Result<SpinMap> {
        // The file is private to this benchmark (create_new in a directory only
        // this user can enter); shared bytes are reached through atomics or in
        // an order they set (see SpinChannel).
        // SAFETY: the file is never truncated while mapped (see above).
        let mut map = unsafe { MmapMut::map_mut(f)? };
        let base = map.as_mut_ptr();
        Ok(SpinMap { _map: map, base })
    }

    fn atomic(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= MAP_LEN);
        // SAFETY: `off` is in bounds and 8-aligned (the mapping is
        // page-aligned); AtomicU64 has the size and alignment of u64, and
        // the reference cannot outlive `self._map`, which owns the mapping.
        unsafe { &*(self.base.wrapping_add(off) as *const AtomicU64) }
    }

    fn payload(&self, slot: usize) -> *mut u8 {
        debug_assert!(slot < 2);
        self.base.wrapping_add(slot * SLOT_LEN + SLOT_HEADER)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// A blocking message channel that spins on shared atomics.
///
/// Producer: waits until `ack == seq` (the slot is free), copies the
/// payload, stores `len`, then `seq + 1` with Release. Consumer: spins until
/// `seq` moves (Acquire), copies the payload out, stores `ack = seq` with
/// Release so the producer may reuse the slot.
struct SpinChannel {
    map: SpinMap,
    tx: usize,
    rx: usize,
    sent: u64,
    received: u64,
}

impl SpinChannel {
    fn new(map: SpinMap, side: Side) -> Self {
        let (tx, rx) = match side {
            Side::Client => (0, 1),
            Side::Server => (1, 0),
        };
        SpinChannel {
            map,
            tx,
            rx,
            sent: 0,
            received: 0,
        }
    }

    fn seq(&self, slot: usize) -> &AtomicU64 {
        self.map.atomic(slot * SLOT_LEN)
    }
    fn len(&self, slot: usize) -> &AtomicU64 {
        self.map.atomic(slot * SLOT_LEN + 8)
    }
    fn ack(&self, slot: usize) -> &AtomicU64 {
        self.map.atomic(slot * SLOT_LEN + LINE)
    }
}

fn spin_until(mut done: impl FnMut() -> bool) -> io::Result<()> {
    let mut n = 0u32;
    let mut since: Option<Instant> = None;
    while !done() {
        std::hint::spin_loop();
        n = n.wrapping_add(1);
        if n.is_multiple_of(4096) {
            let t = *since.get_or_insert_with(Instant::now);
            if t.elapsed() > SPIN_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer on the spin mapping stopped answering",
                ));
            }
        }
    }
    Ok(())
}

impl MsgSync for SpinChannel {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let sent = self.sent;
        // SYNC POINT with the consumer's Release store of `ack` in `recv`.
        spin_until(|| self.ack(self.tx).load(Ordering::Acquire) == sent)?;
        // SAFETY: msg.len() <= MAX_MSG (the protocol never sends more) and
        // the slot's payload holds MAX_MSG bytes; the consumer does not read
        // the payload until it sees the Release store of `seq` below.
        unsafe {
            assert!(msg.len() <= MAX_MSG);
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.map.payload(self.tx), msg.len());
        }
        self.len(self.tx).store(msg.len() as u64, Ordering::Relaxed);
        self.sent += 1;
        // SYNC POINT with the consumer's Acquire load of `seq` in `recv`.
        self.seq(self.tx).store(self.sent, Ordering::Release);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let want = self.received + 1;
        // SYNC POINT with the producer's Release store of `seq` in `send`.
        spin_until(|| self.seq(self.rx).load(Ordering::Acquire) == want)?;
        let len = self.len(self.rx).load(Ordering::Relaxed) as usize;
        if len != buf.len() {
            return Err(proto::bad(format!(
                "expected a {}-byte message on the spin mapping, got {len}",
                buf.len()
            )));
        }
        // SAFETY: len <= buf.len() <= MAX_MSG fits the payload area, and the
        // producer does not touch it again until it sees our `ack` below.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.payload(self.rx), buf.as_mut_ptr(), len);
        }
        self.received = want;
        // SYNC POINT with the producer's Acquire load of `ack` in `send`.
        self.ack(self.rx).store(want, Ordering::Release);
        Ok(())
    }
}
