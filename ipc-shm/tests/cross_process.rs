//! Shared memory between two real processes: this test binary re-runs
//! itself as the child (`child_entry` with `IPC_SHM_ROLE` set).
//!
//! Linux and Windows (under Wine too). The other Unix systems share the
//! Linux code but sleep on the socket; they are type-checked only.
#![cfg(any(target_os = "linux", windows))]

use std::io::{BufRead, BufReader, Read};
#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[cfg(unix)]
use ipc_core::AuthPolicy;
use ipc_core::{Address, Error};
use ipc_shm::layout::{Control, CLIENT, DATA_OFFSET, SERVER};
use ipc_shm::{ShmConnection, ShmListener, ShmOptions, ShmTransport};
use ipc_testkit::ChildGuard;

mod util;
use util::{temp_addr, ADDR, ROLE};

// ---------------------------------------------------------------- helpers

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a thread and fails the test if it does not finish in time.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            t.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: re-raise its panic.
            std::panic::resume_unwind(t.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: did not finish within {limit:?} (hang)")
        }
    }
}

fn spawn_child(role: &str, addr: &Address) -> ChildGuard {
    util::spawn_child(role, addr, Stdio::piped())
}

/// Reads the child's stdout until a line starting with `prefix`.
fn wait_line(child: &mut ChildGuard, prefix: &str) -> String {
    let out = child.0.stdout.as_mut().unwrap();
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("child exited before printing {prefix:?}");
        }
        // The harness may have printed "test child_entry ... " on the same line.
        if let Some(at) = line.find(prefix) {
            return line[at..].trim_end().to_owned();
        }
    }
}

/// A child in `role` connected to a fresh listener: the server's blocking
/// end and the child, with what must outlive them (fields drop in order:
/// the connection first, the directory of the socket last).
struct Served {
    conn: ShmConnection,
    child: ChildGuard,
    _listener: ShmListener,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// Binds a listener with `opts` in a fresh directory, starts a child in
/// `role` against it and accepts the child's blocking connection.
fn serve_child(role: &str, opts: ShmOptions) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let addr = temp_addr(dir.path());
    let rt = rt();
    let mut listener = rt
        .block_on(async { ShmListener::bind_with(&addr, opts) })
        .unwrap();
    let child = spawn_child(role, &addr);
    let conn = rt.block_on(listener.accept_connection()).unwrap();
    Served {
        conn,
        child,
        _listener: listener,
        _rt: rt,
        _dir: dir,
    }
}

/// Message `i`: a slice of a fixed random block, stamped with its index.
fn message(block: &[u8], i: usize) -> Vec<u8> {
    let n = size_of_message(i);
    let off = (i * 7919) % 65_536;
    let mut m = block[off..off + n].to_vec();
    if n >= 8 {
        m[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    m
}

const RING: usize = 256 * 1024;
const MAX: usize = 4 * 1024 * 1024;

fn size_of_message(i: usize) -> usize {
    match i % 1000 {
        0 => MAX - (i / 1000) % 2,       // 4 MiB: many times the ring
        1..=9 => RING / 2 + 1 + i % 977, // just over the largest single record
        _ => 1 + (i * 31) % 2048,
    }
}

fn random_block() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..MAX + 65_536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn opts() -> ShmOptions {
    ShmOptions::new().ring_capacity(RING).max_message_len(MAX)
}

/// Spins `spin` before sleeping and checks that the peer lives only every
/// hour: every wake-up has to come from the peer's ring.
fn sleepy_opts(spin: Duration) -> ShmOptions {
    opts().spin(spin).liveness_check(Duration::from_secs(3600))
}

/// The child side of every test.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return; // run as a normal test: nothing to do
    };
    let addr: Address = std::env::var(ADDR).unwrap().parse().unwrap();
    match role.as_str() {
        "echo" => {
            let mut c = ShmConnection::connect(&addr, &opts()).unwrap();
            println!("CONNECTED");
            let in_place = c.max_in_place();
            loop {
                let m = match c.recv() {
                    Ok(m) => m.to_vec(),
                    Err(Error::Disconnected) => break,
                    Err(e) => panic!("echo child: {e}"),
                };
                // Messages that fit are written in place, so the parent's
                // checks cover `send_with` in this direction.
                if m.len() <= in_place {
                    c.send_with(m.len(), |buf| buf.copy_from_slice(&m)).unwrap();
                } else {
                    c.send(&m).unwrap();
                }
            }
        }
        "wake-echo" => {
            let opts = sleepy_opts(Duration::from_micros(1));
            let mut c = ShmConnection::connect(&addr, &opts).unwrap();
            println!("CONNECTED");
            loop {
                let m = match c.recv() {
                    Ok(m) => m.to_vec(),
                    Err(Error::Disconnected) => break,
                    Err(e) => panic!("wake-echo child: {e}"),
                };
                c.send(&m).unwrap();
            }
        }
        "flood" => {
            let mut c = ShmConnection::connect(&addr, &opts()).unwrap();
            println!("CONNECTED");
            let big = vec![0x5a; 3 * RING];
            let mut i = 0u64;
            loop {
                let m: &[u8] = if i % 10 == 0 { &big } else { &big[..100] };
                if c.send(m).is_err() {
                    break;
                }
                i += 1;
            }
        }
        "idle" => {
            let c = ShmConnection::connect(&addr, &opts()).unwrap();
            println!("CONNECTED");
            // Stay connected until the parent closes our stdin.
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            drop(c);
        }
        "idle-host" => idle_host(&addr),
        "rpc-client" => {
            let rt = rt();
            rt.block_on(async {
                let t = ShmTransport::connect(&addr, &ShmOptions::new())
                    .await
                    .unwrap();
                let client = ipc_core::Client::new(t);
                for i in 0..200i64 {
                    let sum: i64 = client
                        .request("add", serde_json::json!([i, 1000]))
                        .await
                        .unwrap();
                    assert_eq!(sum, i + 1000);
                }
                let big: String = client
                    .request("echo", serde_json::json!(["x".repeat(3 << 20)]))
                    .await
                    .unwrap();
                assert_eq!(big.len(), 3 << 20);
            });
            println!("RPC-OK");
        }
        #[cfg(windows)]
        "hostile-handles" => hostile_handles(&addr),
        "hostile-head" | "hostile-record" | "hostile-tail" | "hostile-random" => {
            hostile(&role, &addr);
        }
        #[cfg(unix)]
        "other-user" => {
            // SAFETY: plain libc calls in a single-purpose child process.
            unsafe {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                assert_eq!(libc::setgid(65534), 0);
                assert_eq!(libc::setuid(65534), 0);
            }
            let r = ShmConnection::connect(&addr, &opts());
            match r {
                Err(Error::Unauthorized { .. }) => println!("RESULT unauthorized"),
                Err(Error::PermissionDenied { .. }) => println!("RESULT permission-denied"),
                Err(e) => println!("RESULT other {e}"),
                Ok(_) => println!("RESULT connected"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Connects at the socket level, receives the region's descriptor the way
/// any client can and maps it: a hostile peer that does not use this crate.
/// Returns the mapping's base and what keeps the connection open.
#[cfg(unix)]
fn hostile_map(addr: &Address) -> (*mut u8, Box<dyn std::any::Any>) {
    use std::os::fd::OwnedFd;
    let Address::Shm(path) = addr else { panic!() };
    let sock = std::os::unix::net::UnixStream::connect(path).unwrap();
    let mut buf = [0u8; 16];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    rustix::net::recvmsg(&sock, &mut iov, &mut anc, rustix::net::RecvFlags::empty()).unwrap();
    let mut fd: Option<OwnedFd> = None;
    for m in anc.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = m {
            fd = fds.next();
        }
    }
    let fd = fd.expect("a region descriptor");
    let len = rustix::fs::fstat(&fd).unwrap().st_size as usize;
    // SAFETY: a fresh shared mapping of the whole file, used only here.
    let base = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            &fd,
            0,
        )
    }
    .unwrap()
    .cast::<u8>();
    (base, Box::new(sock))
}

/// Speaks the client's side of the handshake by hand over the named pipe:
/// creates a region and two events, names them to the server, and keeps the
/// mapping: a hostile peer that does not use this crate.
#[cfg(windows)]
fn hostile_map(addr: &Address) -> (*mut u8, Box<dyn std::any::Any>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
    use windows_sys::Win32::System::Memory::{
        CreateFileMappingW, MapViewOfFile, FILE_MAP_READ, FILE_MAP_WRITE, PAGE_READWRITE,
    };
    use windows_sys::Win32::System::Threading::CreateEventW;
    let Address::Shm(name) = addr else { panic!() };
    rt().block_on(async {
        let mut pipe = ipc_windows::connect(&Address::Pipe(name.clone()))
            .await
            .unwrap();
        let mut hello = [0u8; 16];
        pipe.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello[..8], b"IPCSHM\x01O", "an offer");
        let cap = u32::from_le_bytes(hello[12..16].try_into().unwrap()) as usize;
        let len = ipc_shm::layout::region_len(cap);
        // SAFETY: an unnamed pagefile-backed section; the handle is kept
        // (never closed) for the life of this child process.
        let section = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                std::ptr::null(),
                PAGE_READWRITE,
                0,
                len as u32,
                std::ptr::null(),
            )
        };
        assert!(!section.is_null());
        // SAFETY: maps the whole fresh section at an address the system picks.
        let base = unsafe { MapViewOfFile(section, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, len) }
            .Value
            .cast::<u8>();
        assert!(!base.is_null());
        // SAFETY: the view starts with the control block (all atomics).
        unsafe { &*(base as *const Control) }.init(cap);
        // SAFETY: two unnamed auto-reset events, kept for the child's life.
        let events = unsafe {
            [
                CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()),
                CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()),
            ]
        };
        let mut msg = b"IPCSHM\x01H".to_vec();
        for h in [section, events[0], events[1]] {
            msg.extend_from_slice(&(h as usize as u64).to_le_bytes());
        }
        pipe.write_all(&msg).await.unwrap();
        pipe.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello[..8], b"IPCSHM\x01K", "the server took the region");
        (base, Box::new(()) as Box<dyn std::any::Any>)
    })
}

/// Windows: offers the server handle values it must refuse, each on a
/// connection of its own, and prints the reasons it gives.
#[cfg(windows)]
fn hostile_handles(addr: &Address) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
    use windows_sys::Win32::System::Memory::{CreateFileMappingW, PAGE_READWRITE};
    use windows_sys::Win32::System::Threading::CreateEventW;
    let Address::Shm(name) = addr else { panic!() };
    // SAFETY: an unnamed section of one page and two unnamed events, kept
    // for the child's life.
    let (small, event, event2) = unsafe {
        (
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                std::ptr::null(),
                PAGE_READWRITE,
                0,
                4096,
                std::ptr::null(),
            ),
            CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()),
            CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()),
        )
    };
    let [small, event, event2] = [small, event, event2].map(|h| h as usize as u64);
    let cases = [
        ("not handles", [0xdead_bee0, 0xdead_bee4, 0xdead_bee8]),
        ("one event twice", [small, event, event]),
        ("a section too small", [small, event, event2]),
    ];
    let rt = rt();
    for (what, values) in cases {
        let reason = rt.block_on(async {
            let mut pipe = ipc_windows::connect(&Address::Pipe(name.clone()))
                .await
                .unwrap();
            let mut hello = [0u8; 16];
            pipe.read_exact(&mut hello).await.unwrap();
            let mut msg = b"IPCSHM\x01H".to_vec();
            for v in values {
                msg.extend_from_slice(&v.to_le_bytes());
            }
            pipe.write_all(&msg).await.unwrap();
            pipe.read_exact(&mut hello).await.unwrap();
            assert_eq!(&hello[..8], b"IPCSHM\x01F", "{what}: refused");
            let mut reason =
                vec![0u8; u32::from_le_bytes(hello[8..12].try_into().unwrap()) as usize];
            pipe.read_exact(&mut reason).await.unwrap();
            String::from_utf8(reason).unwrap()
        });
        println!("REFUSED {what}: {reason}");
    }
    println!("DONE");
}

/// Maps the region the way any client can and writes garbage into it.
fn hostile(role: &str, addr: &Address) {
    let (base, keep) = hostile_map(addr);
    // SAFETY: the mapping starts with the control block (all atomics).
    let ctl = unsafe { &*(base as *const Control) };
    let data = |off: usize, bytes: &[u8]| {
        // SAFETY: in bounds of the mapping (ring 0's data area starts at
        // DATA_OFFSET and is at least 4 KiB long).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(DATA_OFFSET + off), bytes.len())
        }
    };
    // We are the client: ring CLIENT is ours to produce, ring SERVER ours to consume.
    match role {
        "hostile-head" => {
            ctl.rings[CLIENT]
                .head
                .0
                .store(u64::MAX - 15, Ordering::Release);
        }
        "hostile-record" => {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&0x5748_4c01u32.to_le_bytes()); // WHOLE
            h[4..8].copy_from_slice(&u32::MAX.to_le_bytes()); // absurd length
            h[8..16].copy_from_slice(&(u32::MAX as u64).to_le_bytes());
            data(0, &h);
            ctl.rings[CLIENT].head.0.store(64, Ordering::Release);
        }
        "hostile-tail" => {
            // Claim to have consumed more than the server ever produced.
            ctl.rings[SERVER].tail.0.store(1 << 50, Ordering::Release);
        }
        "hostile-random" => {
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                for _ in 0..1000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Garbage into counters, bells and record headers.
                    match x % 4 {
                        0 => ctl.rings[(x >> 8) as usize % 2]
                            .head
                            .0
                            .store(x >> 3, Ordering::Relaxed),
                        1 => ctl.rings[(x >> 8) as usize % 2]
                            .tail
                            .0
                            .store(x >> 5, Ordering::Relaxed),
                        2 => ctl.bells[(x >> 8) as usize % 2]
                            .0
                            .waiting
                            .store(x as u32, Ordering::Relaxed),
                        _ => data((x >> 16) as usize % 4000, &x.to_le_bytes()),
                    }
                }
            }
        }
        _ => unreachable!(),
    }
    println!("SCRIBBLED");
    // Stay alive (the socket open) until the parent is done.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(keep);
}

// ------------------------------------------------------------------ tests

/// What must hold 1: 100,000 messages of mixed sizes (1 B to 4 MiB, some
/// larger than the ring) arrive intact and in order in both directions
/// (the echoing child sends what fits in place with `send_with`, the rest
/// with `send`).
#[test]
fn hundred_thousand_mixed_messages_both_directions() {
    within(Duration::from_secs(300), "mixed messages", || {
        let served = serve_child("echo", opts());
        let (mut tx, mut rx) = served.conn.into_split();
        const N: usize = 100_000;
        let block = std::sync::Arc::new(random_block());
        let b2 = block.clone();
        let sender = std::thread::spawn(move || {
            for i in 0..N {
                tx.send(&message(&b2, i)).unwrap();
            }
            tx
        });
        let mut borrowed = 0;
        for i in 0..N {
            let m = rx.recv().unwrap();
            borrowed += usize::from(m.is_borrowed());
            let want = message(&block, i);
            assert!(
                m.len() == want.len() && *m == want[..],
                "message {i} of {} bytes came back as {} different bytes",
                want.len(),
                m.len()
            );
        }
        let tx = sender.join().unwrap();
        assert!(borrowed > N / 2, "small messages are read in place");
        drop(tx);
        drop(rx);
    });
}

/// What must hold 1: the JSON-RPC Server and Client work over `shm:`
/// unchanged, client in another process.
#[test]
fn json_rpc_server_and_client_over_shm() {
    within(Duration::from_secs(120), "json-rpc", || {
        let dir = tempfile::tempdir().unwrap();
        let addr = temp_addr(dir.path());
        let rt = rt();
        let handle = rt.block_on(async {
            let listener = ShmListener::bind_with(&addr, ShmOptions::new()).unwrap();
            let router = ipc_core::Router::new()
                .method(
                    "add",
                    |_ctx: ipc_core::Context, (a, b): (i64, i64)| async move {
                        Ok::<_, ipc_core::jsonrpc::ErrorObject>(a + b)
                    },
                )
                .method(
                    "echo",
                    |_ctx: ipc_core::Context, (s,): (String,)| async move {
                        Ok::<_, ipc_core::jsonrpc::ErrorObject>(s)
                    },
                );
            ipc_core::Server::builder().build().serve(listener, router)
        });
        let mut child = spawn_child("rpc-client", &addr);
        assert_eq!(wait_line(&mut child, "RPC-OK"), "RPC-OK");
        assert!(child.0.wait().unwrap().success());
        rt.block_on(handle.shutdown(Duration::from_secs(5)))
            .unwrap();
    });
}

fn hostile_case(role: &'static str, server_sends: bool) -> Error {
    within(Duration::from_secs(60), role, move || {
        let mut served = serve_child(role, ShmOptions::new().ring_capacity(4096));
        wait_line(&mut served.child, "SCRIBBLED");
        let err = loop {
            if server_sends {
                if let Err(e) = served.conn.send(&[1u8; 1000]) {
                    break e;
                }
            } else {
                match served.conn.recv() {
                    Ok(_) => continue,
                    Err(e) => break e,
                }
            }
        };
        drop(served);
        err
    })
}

/// What must hold 2: garbage in the counters and lengths of a live mapping
/// is an error, never a panic, hang or out-of-bounds access.
#[test]
fn hostile_head_is_corrupt() {
    let e = hostile_case("hostile-head", false);
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    assert!(e.to_string().contains("head"), "{e}");
}

#[test]
fn hostile_record_length_is_corrupt() {
    let e = hostile_case("hostile-record", false);
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
}

#[test]
fn hostile_tail_is_corrupt() {
    let e = hostile_case("hostile-tail", true);
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
}

#[test]
fn random_garbage_is_an_error_not_a_crash() {
    for server_sends in [false, true] {
        let e = hostile_case("hostile-random", server_sends);
        assert!(
            matches!(
                e,
                Error::Corrupt(_) | Error::FrameTooLarge { .. } | Error::Disconnected
            ),
            "{e}"
        );
    }
}

/// As [`hostile_case`], the server on the async message API.
fn hostile_case_async(role: &'static str, server_sends: bool) -> Error {
    within(Duration::from_secs(60), role, move || {
        let dir = tempfile::tempdir().unwrap();
        let addr = temp_addr(dir.path());
        let rt = rt();
        rt.block_on(async {
            let opts = ShmOptions::new().ring_capacity(4096);
            let mut listener = ShmListener::bind_with(&addr, opts).unwrap();
            let mut child = spawn_child(role, &addr);
            let mut conn = listener.accept_async_connection().await.unwrap();
            wait_line(&mut child, "SCRIBBLED");
            loop {
                if server_sends {
                    if let Err(e) = conn.send(&[1u8; 1000]).await {
                        return e;
                    }
                } else if let Err(e) = conn.recv().await.map(|m| m.len()) {
                    return e;
                }
            }
        })
    })
}

/// What must hold 2, for the async message API: the same garbage is an
/// error for a task that waits, never a panic or a hang.
#[test]
fn the_async_message_api_reports_a_hostile_peer() {
    for (role, server_sends) in [
        ("hostile-head", false),
        ("hostile-record", false),
        ("hostile-tail", true),
    ] {
        let e = hostile_case_async(role, server_sends);
        assert!(matches!(e, Error::Corrupt(_)), "{role}: {e}");
    }
    for server_sends in [false, true] {
        let e = hostile_case_async("hostile-random", server_sends);
        assert!(
            matches!(
                e,
                Error::Corrupt(_) | Error::FrameTooLarge { .. } | Error::Disconnected
            ),
            "{e}"
        );
    }
}

/// How soon a killed peer must be noticed: 100 ms (the goal) on Linux. On
/// Windows the peer's process handle wakes the waiter at once; the bound is
/// a generous "does not hang" deadline, because under Wine a process's end
/// is signalled only after the emulator has torn it down.
#[cfg(unix)]
const KILL_NOTICED: Duration = Duration::from_millis(100);
#[cfg(windows)]
const KILL_NOTICED: Duration = Duration::from_secs(5);

/// What must hold 3: a peer killed mid-stream (SIGKILL, TerminateProcess)
/// is reported as disconnected within 100 ms, by the blocking API and by
/// the Transport.
#[test]
fn sigkill_mid_stream_is_disconnected_within_100ms() {
    let elapsed = within(Duration::from_secs(60), "sigkill", || {
        let mut served = serve_child("flood", opts());
        // Receive a while, then kill the sender mid-stream.
        for _ in 0..200 {
            served.conn.recv().unwrap();
        }
        let mut conn = served.conn;
        let (done_tx, done_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || loop {
            match conn.recv() {
                Ok(_) => continue,
                Err(e) => {
                    let _ = done_tx.send((Instant::now(), e));
                    return;
                }
            }
        });
        let killed = Instant::now();
        served.child.0.kill().unwrap();
        let (at, err) = done_rx.recv().unwrap();
        reader.join().unwrap();
        assert!(matches!(err, Error::Disconnected), "{err}");
        at.saturating_duration_since(killed)
    });
    eprintln!("blocking API saw SIGKILL after {elapsed:?}");
    assert!(elapsed < KILL_NOTICED, "took {elapsed:?}");

    // The async Transport: the socket's hang-up wakes the reader.
    let elapsed = within(Duration::from_secs(60), "sigkill async", || {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let addr = temp_addr(dir.path());
        let rt = rt();
        rt.block_on(async {
            let mut listener = ShmListener::bind_with(&addr, opts()).unwrap();
            let mut child = spawn_child("flood", &addr);
            let mut t = listener.accept_shm().await.unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            while total < 10 << 20 {
                total += t.read(&mut buf).await.unwrap();
            }
            let killed = Instant::now();
            child.0.kill().unwrap();
            loop {
                match t.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            killed.elapsed()
        })
    });
    eprintln!("async Transport saw SIGKILL after {elapsed:?}");
    assert!(elapsed < KILL_NOTICED, "took {elapsed:?}");
}

#[cfg(unix)]
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we pass; RUSAGE_SELF covers
    // every thread of this process.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
        u
    };
    let t = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    t(u.ru_utime) + t(u.ru_stime)
}

#[cfg(windows)]
fn cpu_time() -> Duration {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessTimes};
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut a, mut b, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the pseudo handle of this process and four valid out pointers.
    let ok =
        unsafe { GetProcessTimes(GetCurrentProcess(), &mut a, &mut b, &mut kernel, &mut user) };
    assert_ne!(ok, 0);
    let t = |f: FILETIME| {
        Duration::from_nanos(
            ((u64::from(f.dwHighDateTime) << 32) | u64::from(f.dwLowDateTime)) * 100,
        )
    };
    t(kernel) + t(user)
}

/// Every message wakes a receiver in the other process that went to sleep
/// for it. The child spins 1 us before it sleeps, the parent 1 ms: on Linux
/// both make the process-wide barrier that lets the other ring without a
/// fence (see the crate's `bell` module), and with liveness checks an hour
/// apart a lost wake-up leaves the child asleep past the parent's timeout.
/// The parent, spinning, has each reply at once and waits 0-4 us before its
/// next message, so that messages arrive while the child is announcing its
/// sleep.
#[test]
fn no_wake_up_is_lost_between_processes() {
    within(Duration::from_secs(120), "wake-ups", || {
        let mut served = serve_child("wake-echo", sleepy_opts(Duration::from_millis(1)));
        wait_line(&mut served.child, "CONNECTED");
        let block = random_block();
        for i in 0..20_000usize {
            let pause = Duration::from_nanos((i as u64 * 7919) % 4000);
            let t = Instant::now();
            while t.elapsed() < pause {
                std::hint::spin_loop();
            }
            let m = &block[i % 4096..][..8 + i % 1000];
            served.conn.send(m).unwrap();
            let r = served.conn.recv_timeout(Duration::from_secs(10));
            let r = r.unwrap_or_else(|e| panic!("round trip {i}: {e} (a lost wake-up?)"));
            assert_eq!(&*r, m, "round trip {i}");
        }
    });
}

/// What must hold 4: idle connections (a blocking receiver, an async
/// reader and an async message receiver, all waiting) use no CPU after the
/// spin period. Measured in a child process of its own, so other tests
/// running in this one do not count.
#[test]
fn idle_connection_uses_no_cpu() {
    let used = within(Duration::from_secs(60), "idle", || {
        let dir = tempfile::tempdir().unwrap();
        let mut host = spawn_child("idle-host", &temp_addr(dir.path()));
        let line = wait_line(&mut host, "CPU ");
        assert!(host.0.wait().unwrap().success(), "the idle host failed");
        Duration::from_micros(line[4..].parse().unwrap())
    });
    eprintln!("CPU used by a process with two idle connections over one second: {used:?}");
    // A spinning waiter would use the whole second.
    assert!(
        used < Duration::from_millis(100),
        "idle connections used {used:?} of CPU in 1 s"
    );
}

/// A timed receive from a live peer in another process that sends nothing
/// gives up with `Timeout` (its sleeps wake for the liveness checks and the
/// deadline); once the peer is gone, a timed receive reports
/// `Disconnected`.
#[test]
fn recv_timeout_from_an_idle_peer_times_out_and_sees_it_leave() {
    within(Duration::from_secs(60), "recv_timeout", || {
        let mut served = serve_child("idle", opts());
        wait_line(&mut served.child, "CONNECTED");
        // Longer than the spin (50 us) and than a liveness check (20 ms).
        let wait = Duration::from_millis(300);
        let t0 = Instant::now();
        let err = served.conn.recv_timeout(wait).map(|m| m.len()).unwrap_err();
        let took = t0.elapsed();
        assert!(matches!(err, Error::Timeout(d) if d == wait), "{err}");
        assert!(took >= wait, "gave up after {took:?}, before {wait:?}");
        // Closing the child's stdin ends it.
        drop(served.child.0.stdin.take());
        let err = served
            .conn
            .recv_timeout(Duration::from_secs(30))
            .map(|m| m.len())
            .unwrap_err();
        assert!(matches!(err, Error::Disconnected), "{err}");
    });
}

/// The measuring side of [`idle_connection_uses_no_cpu`].
fn idle_host(base: &Address) {
    let [addr, addr2, addr3] = three_addresses(base);
    let rt = rt();
    let mut listeners = [&addr, &addr2, &addr3].map(|a| {
        rt.block_on(async { ShmListener::bind_with(a, opts()) })
            .unwrap()
    });
    let mut children = [&addr, &addr2, &addr3].map(|a| spawn_child("idle", a));
    let mut conn = rt.block_on(listeners[0].accept_connection()).unwrap();
    let mut t = rt.block_on(listeners[1].accept_shm()).unwrap();
    let mut messages = rt.block_on(listeners[2].accept_async_connection()).unwrap();
    for child in &mut children {
        wait_line(child, "CONNECTED");
    }
    let blocked = std::thread::spawn(move || conn.recv().map(|m| m.len()));
    let pending = rt.spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 16];
        t.read(&mut b).await
    });
    let pending_message = rt.spawn(async move { messages.recv().await.map(|m| m.len()) });
    std::thread::sleep(Duration::from_millis(200)); // past every spin period
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time() - before;
    println!("CPU {}", used.as_micros());
    // Closing the children's stdin ends them; the waiters see it.
    for child in &mut children {
        drop(child.0.stdin.take());
    }
    assert!(matches!(blocked.join().unwrap(), Err(Error::Disconnected)));
    assert_eq!(rt.block_on(pending).unwrap().unwrap(), 0);
    let r = rt.block_on(pending_message).unwrap();
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
}

/// Three more addresses next to `base`.
#[cfg(unix)]
fn three_addresses(base: &Address) -> [Address; 3] {
    let Address::Shm(p) = base else { panic!() };
    let dir = Path::new(p).parent().unwrap();
    ["a", "b", "c"].map(|x| {
        std::fs::create_dir_all(dir.join(x)).unwrap();
        temp_addr(&dir.join(x))
    })
}

#[cfg(windows)]
fn three_addresses(base: &Address) -> [Address; 3] {
    let Address::Shm(p) = base else { panic!() };
    ["a", "b", "c"].map(|x| format!("shm:{p}-{x}").parse().unwrap())
}

/// What must hold 5: another user cannot obtain the mapping. With the
/// default owner-only socket they cannot even connect; with the socket
/// opened to everyone, the auth policy refuses them before any descriptor is
/// sent. Needs root (the child drops to `nobody`). Unix only: Wine does not
/// enforce the named pipe's security descriptor, so under Wine there is no
/// other user to keep out (the Windows CI job runs ipc-windows' ACL tests).
#[cfg(unix)]
#[test]
fn another_user_cannot_obtain_the_mapping() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run the peer as another user");
        return;
    }
    within(Duration::from_secs(60), "other user", || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let rt = rt();
        for (mode, expected) in [
            (0o600, "RESULT permission-denied"),
            (0o666, "RESULT unauthorized"),
        ] {
            let addr = temp_addr(&PathBuf::from(dir.path()));
            let opts = ShmOptions::new()
                .socket_mode(mode)
                .auth(AuthPolicy::SameUser);
            let listener = rt
                .block_on(async { ShmListener::bind_with(&addr, opts) })
                .unwrap();
            let mut child = spawn_child("other-user", &addr);
            assert_eq!(
                wait_line(&mut child, "RESULT"),
                expected,
                "socket mode {mode:o}"
            );
            drop(listener);
        }
    });
}

/// Windows: handle values a client names that are not its own handles, not
/// two distinct events, or a section smaller than the rings, are refused
/// with a reason, and the server keeps serving well-behaved clients.
#[cfg(windows)]
#[test]
fn bad_handle_values_are_refused() {
    within(Duration::from_secs(60), "bad handles", || {
        let dir = tempfile::tempdir().unwrap();
        let addr = temp_addr(dir.path());
        let rt = rt();
        let mut listener = rt
            .block_on(async {
                ShmListener::bind_with(&addr, ShmOptions::new().ring_capacity(8192))
            })
            .unwrap();
        let mut child = spawn_child("hostile-handles", &addr);
        let mut out = String::new();
        child
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(out.contains("DONE"), "{out}");
        let reasons: Vec<&str> = out
            .lines()
            .filter_map(|l| l.find("REFUSED").map(|at| &l[at..]))
            .collect();
        assert_eq!(reasons.len(), 3, "{out}");
        assert!(
            reasons[0].contains("cannot be duplicated"),
            "{}",
            reasons[0]
        );
        assert!(
            reasons[1].contains("two distinct auto-reset events"),
            "{}",
            reasons[1]
        );
        assert!(reasons[2].contains("cannot be mapped"), "{}", reasons[2]);
        // None of them reached the accept queue; a good client still does.
        let a2 = addr.clone();
        let client = std::thread::spawn(move || {
            let mut c = ShmConnection::connect(&a2, &ShmOptions::new()).unwrap();
            c.send(b"fine").unwrap();
            c
        });
        let mut conn = rt.block_on(listener.accept_connection()).unwrap();
        assert_eq!(&*conn.recv().unwrap(), b"fine");
        drop(client.join().unwrap());
    });
}
