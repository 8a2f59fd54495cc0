//! The conformance suite for [`Transport`](crate::Transport) and [`Listener`] backends: the
//! behaviour every backend (Unix sockets, named pipes, shared memory, TCP)
//! must show, written once against the traits.
//!
//! A backend describes how to bind a fresh endpoint and connect to it by
//! implementing [`Backend`], then instantiates the whole suite in its tests
//! with [`conformance_tests!`](crate::conformance_tests), or calls the
//! individual `async fn`s (all public) through [`run`].
//!
//! The suite checks:
//!
//! - [`echo_sizes`]: messages of 0 B to 4 MiB echo back intact while both
//!   sides read and write at once;
//! - [`partial_reads`]: a message written 1 byte at a time arrives whole, and
//!   a read returns what is there without waiting to fill its buffer;
//! - [`half_close`]: after shutting down its write half, a side still reads
//!   the reply; the peer sees end-of-stream right after the data;
//! - [`peer_identity`]: both sides see this process (same pid where the OS
//!   gives one) and `same_user`;
//! - [`cleanup`]: after `close` (idempotent) or drop the endpoint is gone,
//!   connecting fails with [`Error::NotFound`] and `accept` fails instead of
//!   hanging;
//! - [`concurrent_connections`]: many clients at once, each getting its own
//!   bytes back;
//! - [`peer_disconnects_mid_stream`]: a vanished peer gives end-of-stream or
//!   a disconnect error, never a hang, and bytes sent before it vanished
//!   arrive;
//! - [`queued_connections_and_cancelled_accept`]: connections made before
//!   `accept` is called, or while an `accept` future is dropped, are not lost;
//! - [`second_bind_in_use`]: binding a live endpoint again is
//!   [`Error::AddressInUse`] and leaves the first server working;
//! - [`rpc_round_trip`]: the JSON-RPC [`Server`](crate::Server) and
//!   [`Client`](crate::Client) work over the backend unchanged: concurrent
//!   requests, a batch, notifications pushed in order;
//! - [`rpc_bad_frames`]: garbage JSON gets -32700 and the connection lives
//!   on; a frame longer than the maximum closes only that connection, with
//!   nothing allocated for it; other connections are unaffected.
//!
//! Each test runs under a deadline (and a watchdog thread for hangs that
//! block the runtime), so a hung backend fails the test instead of hanging
//! CI.
//!
//! Beside the suite, [`rpc_calls_one_thread_each`] checks a backend whose
//! reads can poll before they wait (busy polling, spinning): JSON-RPC calls
//! must not wait behind such a read on a runtime of one thread.
//!
//! # Examples
//!
//! In a backend crate's `tests/conformance.rs` (with the `conformance`
//! feature of `ipc-core` enabled in its dev-dependencies):
//!
//! ```ignore
//! use ipc_core::conformance::Backend;
//! use ipc_core::{Address, BoxListener, BoxTransport, Result};
//!
//! struct MyBackend { dir: tempfile::TempDir }
//!
//! #[async_trait::async_trait]
//! impl Backend for MyBackend {
//!     fn name(&self) -> String { "my-backend".into() }
//!     async fn bind(&self) -> Result<BoxListener> { /* a fresh, unique endpoint */ }
//!     async fn connect(&self, addr: &Address) -> Result<BoxTransport> { /* ... */ }
//! }
//!
//! ipc_core::conformance_tests!(MyBackend { dir: tempfile::tempdir().unwrap() });
//! ```

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::address::Address;
use crate::error::{is_disconnect_kind, Error, Result};
use crate::transport::{BoxListener, BoxTransport, Listener};

/// How a backend under test binds and connects.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for messages, such as `"unix"`.
    fn name(&self) -> String;

    /// Binds a listener at a fresh endpoint that no other test uses.
    async fn bind(&self) -> Result<BoxListener>;

    /// Connects to `addr`, the `local_addr` of a listener from
    /// [`bind`](Self::bind).
    async fn connect(&self, addr: &Address) -> Result<BoxTransport>;

    /// Binds again at a given address, for [`second_bind_in_use`]; `None`
    /// (the default) when the backend cannot, which skips that test.
    async fn bind_at(&self, addr: &Address) -> Option<Result<BoxListener>> {
        let _ = addr;
        None
    }

    /// Whether the endpoint of `addr` exists in the OS namespace (a socket
    /// file, a pipe name), for [`cleanup`]; `None` (the default) if the
    /// backend cannot tell, which leaves only the connect check.
    fn endpoint_exists(&self, addr: &Address) -> Option<bool> {
        let _ = addr;
        None
    }
}

/// The soft deadline of one test: past it the test fails as hung.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Past this, a watchdog aborts the process: the test blocked its runtime
/// so hard that the soft deadline could not fire.
pub const HARD_DEADLINE: Duration = Duration::from_secs(180);

/// Runs one conformance test on a fresh multi-threaded runtime under
/// [`DEADLINE`], with a watchdog at [`HARD_DEADLINE`].
///
/// # Panics
///
/// When the test fails (its assertions panic) or does not finish in time.
pub fn run<F: Future<Output = ()>>(name: &str, test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a Tokio runtime for the conformance test");
    let (done, finished) = mpsc::channel::<()>();
    let watched = name.to_owned();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(HARD_DEADLINE) {
            eprintln!(
                "conformance test {watched} blocked for {HARD_DEADLINE:?}; aborting the process"
            );
            std::process::abort();
        }
    });
    let outcome = rt.block_on(async { tokio::time::timeout(DEADLINE, test).await });
    drop(done);
    let _ = watchdog.join();
    rt.shutdown_timeout(Duration::from_secs(5));
    if outcome.is_err() {
        panic!("conformance test {name} did not finish within {DEADLINE:?}: it hangs");
    }
}

/// Instantiates every test of the suite as a `#[test]` fn in the current
/// module. The argument is an expression that makes the [`Backend`]; it is
/// evaluated once per test.
///
/// ```ignore
/// ipc_core::conformance_tests!(UnixBackend::new());
/// ```
///
/// To run only some tests, list them after a semicolon:
///
/// ```ignore
/// ipc_core::conformance_tests!(ShmBackend::new(); echo_sizes, half_close);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(
            $make;
            echo_sizes,
            partial_reads,
            half_close,
            peer_identity,
            cleanup,
            close_after_serving,
            concurrent_connections,
            peer_disconnects_mid_stream,
            queued_connections_and_cancelled_accept,
            second_bind_in_use,
            rpc_round_trip,
            rpc_bad_frames
        );
    };
    ($make:expr; $($test:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                let backend = $make;
                $crate::conformance::run(stringify!($test), async move {
                    $crate::conformance::$test(&backend).await
                });
            }
        )+
    };
}

fn ok<T, E: Display>(b: &dyn Backend, what: &str, r: std::result::Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("[{}] {what}: {e}", b.name()),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a shifted or mixed-up
/// stream never compares equal by accident.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn assert_same(b: &dyn Backend, what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "[{}] {what}: got {} bytes, want {}; first difference at byte {at}",
            b.name(),
            got.len(),
            want.len()
        );
    }
}

/// Echoes everything read back, then shuts down the write half.
async fn echo(t: BoxTransport) -> io::Result<u64> {
    let (mut r, mut w) = tokio::io::split(t);
    let n = tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await?;
    Ok(n)
}

/// Accepts `n` connections and echoes each on its own task; resolves when
/// every echo is done, returning the listener.
fn spawn_echo_server(
    b: &dyn Backend,
    mut listener: BoxListener,
    n: usize,
) -> tokio::task::JoinHandle<BoxListener> {
    let name = b.name();
    tokio::spawn(async move {
        let mut echoes = Vec::with_capacity(n);
        for i in 0..n {
            let t = match listener.accept().await {
                Ok(t) => t,
                Err(e) => panic!("[{name}] accept #{i}: {e}"),
            };
            echoes.push(tokio::spawn(echo(t)));
        }
        for (i, e) in echoes.into_iter().enumerate() {
            match e.await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => panic!("[{name}] echo #{i}: {err}"),
                Err(err) => panic!("[{name}] echo task #{i}: {err}"),
            }
        }
        listener
    })
}

/// Sends `data`, shuts down, reads the echo to the end, all at once.
async fn round_trip(b: &dyn Backend, t: BoxTransport, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(t);
    let write = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let read = async {
        let mut out = Vec::with_capacity(data.len());
        r.read_to_end(&mut out).await.map(|_| out)
    };
    let (wrote, out) = tokio::join!(write, read);
    ok(b, &format!("writing {} bytes", data.len()), wrote);
    ok(b, &format!("reading the echo of {} bytes", data.len()), out)
}

/// The sizes [`echo_sizes`] sends: empty, tiny, around page and common
/// buffer boundaries, and up to 4 MiB.
pub const ECHO_SIZES: &[usize] = &[
    0,
    1,
    2,
    7,
    64,
    1000,
    4095,
    4096,
    4097,
    65_535,
    65_536,
    65_537,
    200_003,
    1 << 20,
    (4 << 20) - 1,
    4 << 20,
];

/// Every size in [`ECHO_SIZES`] echoes back intact, one connection each,
/// the client writing and reading at the same time (a client that wrote
/// everything before reading would deadlock on any finite buffer).
pub async fn echo_sizes(b: &dyn Backend) {
    let listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let server = spawn_echo_server(b, listener, ECHO_SIZES.len());
    for (i, &size) in ECHO_SIZES.iter().enumerate() {
        let t = ok(b, &format!("connect to {addr}"), b.connect(&addr).await);
        let data = pattern(size, i as u64 + 1);
        let back = round_trip(b, t, &data).await;
        assert_same(b, &format!("echo of {size} bytes"), &back, &data);
    }
    let mut listener = ok(b, "echo server", server.await);
    ok(b, "close", listener.close());
}

/// A message written 1 byte at a time (flushing each) arrives whole in both
/// directions, and a read returns the bytes that are there instead of
/// waiting to fill its buffer.
pub async fn partial_reads(b: &dyn Backend) {
    let mut listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
    let mut client = ok(b, "connect", client);
    let mut server = ok(b, "accept", server);

    // A few bytes, then a read with a large buffer: must return them now.
    ok(b, "write 5 bytes", client.write_all(b"hello").await);
    ok(b, "flush", client.flush().await);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    while got.len() < 5 {
        let n = ok(b, "read", server.read(&mut buf).await);
        assert!(
            n > 0,
            "[{}] end-of-stream after {} of 5 bytes",
            b.name(),
            got.len()
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert_same(b, "5 bytes read with a 64 KiB buffer", &got, b"hello");

    // One byte at a time, each way.
    one_byte_writes(b, "client to server", &mut client, &mut server).await;
    one_byte_writes(b, "server to client", &mut server, &mut client).await;
    ok(b, "close", listener.close());
}

async fn one_byte_writes(b: &dyn Backend, dir: &str, w: &mut BoxTransport, r: &mut BoxTransport) {
    const LEN: usize = 257;
    let msg = pattern(LEN, 7);
    let write = async {
        for byte in &msg {
            w.write_all(std::slice::from_ref(byte)).await?;
            w.flush().await?;
            tokio::task::yield_now().await;
        }
        Ok::<_, io::Error>(())
    };
    let mut got = vec![0u8; LEN];
    let (wrote, read) = tokio::join!(write, r.read_exact(&mut got));
    ok(b, &format!("{dir}: 1-byte writes"), wrote);
    ok(b, &format!("{dir}: read_exact of {LEN} bytes"), read);
    assert_same(
        b,
        &format!("{dir}: message written 1 byte at a time"),
        &got,
        &msg,
    );
}

/// Shutting down the write half: the peer reads the data then
/// end-of-stream, and can still reply; the side that shut down reads the
/// reply and then end-of-stream.
pub async fn half_close(b: &dyn Backend) {
    let mut listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
    let mut client = ok(b, "connect", client);
    let mut server = ok(b, "accept", server);

    ok(b, "client write", client.write_all(b"ping").await);
    ok(b, "client shutdown", client.shutdown().await);

    let mut got = Vec::new();
    ok(b, "server read to end", server.read_to_end(&mut got).await);
    assert_same(b, "data before the client's shutdown", &got, b"ping");
    let mut buf = [0u8; 16];
    let n = ok(b, "server read after end", server.read(&mut buf).await);
    assert_eq!(
        n,
        0,
        "[{}] a read after end-of-stream returned data",
        b.name()
    );

    let reply = pattern(100_000, 3);
    ok(
        b,
        "server reply after the client's shutdown",
        server.write_all(&reply).await,
    );
    ok(b, "server shutdown", server.shutdown().await);
    let mut got = Vec::new();
    ok(b, "client read to end", client.read_to_end(&mut got).await);
    assert_same(b, "reply read after shutting down", &got, &reply);
    ok(b, "close", listener.close());
}

/// Both sides see this process: the same pid where the OS reports one, the
/// same user, and the same identity from either side.
pub async fn peer_identity(b: &dyn Backend) {
    let mut listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
    let client = ok(b, "connect", client);
    let server = ok(b, "accept", server);
    let me = std::process::id();
    for (side, peer) in [
        ("server's view of the client", server.peer()),
        ("client's view of the server", client.peer()),
    ] {
        assert!(
            peer.same_user,
            "[{}] {side}: same_user is false for {peer}",
            b.name()
        );
        if let Some(pid) = peer.pid {
            assert_eq!(
                pid,
                me,
                "[{}] {side}: pid {pid} is not this process ({me})",
                b.name()
            );
        }
        assert!(
            peer.uid.is_some() || peer.sid.is_some(),
            "[{}] {side}: no user identity at all ({peer})",
            b.name()
        );
    }
    assert_eq!(
        (server.peer().uid, &server.peer().sid),
        (client.peer().uid, &client.peer().sid),
        "[{}] the two sides disagree on this process's user",
        b.name()
    );
    ok(b, "close", listener.close());
}

async fn assert_gone(b: &dyn Backend, addr: &Address, after: &str) {
    if let Some(exists) = b.endpoint_exists(addr) {
        assert!(
            !exists,
            "[{}] the endpoint {addr} still exists after {after}",
            b.name()
        );
    }
    match b.connect(addr).await {
        Ok(t) => panic!("[{}] connected to {addr} after {after}: {t:?}", b.name()),
        Err(Error::NotFound { .. }) => {}
        Err(e) => panic!(
            "[{}] connecting to {addr} after {after}: want Error::NotFound, got {e:?} ({e})",
            b.name()
        ),
    }
}

/// After `close` (twice: it is idempotent) the endpoint is gone, connecting
/// fails with [`Error::NotFound`], and `accept` fails instead of waiting;
/// after drop the endpoint is gone too.
pub async fn cleanup(b: &dyn Backend) {
    let mut listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    if let Some(exists) = b.endpoint_exists(&addr) {
        assert!(
            exists,
            "[{}] the endpoint {addr} does not exist after bind",
            b.name()
        );
    }
    let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
    drop((ok(b, "connect", client), ok(b, "accept", server)));

    ok(b, "close", listener.close());
    ok(b, "second close", listener.close());
    assert_gone(b, &addr, "close").await;
    assert!(
        listener.accept().await.is_err(),
        "[{}] accept after close returned a connection",
        b.name()
    );
    drop(listener);

    let mut listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
    drop((ok(b, "connect", client), ok(b, "accept", server)));
    drop(listener);
    assert_gone(b, &addr, "drop").await;
}

/// Rounds of [`close_after_serving`].
pub const CLOSE_ROUNDS: usize = 20;

/// A listener that has just served a client, closed (even rounds) or dropped
/// (odd rounds), half of the time with an accept started and given up on
/// just before: a client connecting right after fails with
/// [`Error::NotFound`], every round. Repeated because a backend whose accept
/// machinery can be torn down in more than one order fails some rounds, not
/// all. Then: a connection accepted before the listener closed keeps
/// carrying bytes both ways after it.
pub async fn close_after_serving(b: &dyn Backend) {
    for round in 0..CLOSE_ROUNDS {
        let mut listener = ok(b, "bind", b.bind().await);
        let addr = listener.local_addr().clone();
        let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
        let (client, server) = (ok(b, "connect", client), ok(b, "accept", server));
        ping_pong(b, client, server, "before the listener closed").await;
        if round % 4 >= 2 {
            let waited = tokio::time::timeout(Duration::from_millis(1), listener.accept()).await;
            assert!(
                waited.is_err(),
                "[{}] accept returned with no client connecting",
                b.name()
            );
        }
        let after = if round % 2 == 0 {
            ok(b, "close", listener.close());
            format!("close (round {round})")
        } else {
            drop(listener);
            format!("drop (round {round})")
        };
        assert_gone(b, &addr, &after).await;
    }

    let mut listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
    let (client, server) = (ok(b, "connect", client), ok(b, "accept", server));
    ok(b, "close", listener.close());
    drop(listener);
    ping_pong(b, client, server, "after the listener closed").await;
    assert_gone(b, &addr, "the last connection ended").await;
}

/// Four bytes each way over a connection, which is then dropped.
async fn ping_pong(
    b: &dyn Backend,
    mut client: BoxTransport,
    mut server: BoxTransport,
    when: &str,
) {
    let mut buf = [0u8; 4];
    ok(b, "client write", client.write_all(b"ping").await);
    ok(b, "server read", server.read_exact(&mut buf).await);
    assert_same(b, &format!("ping {when}"), &buf, b"ping");
    ok(b, "server write", server.write_all(b"pong").await);
    ok(b, "client read", client.read_exact(&mut buf).await);
    assert_same(b, &format!("pong {when}"), &buf, b"pong");
}

/// Number of clients in [`concurrent_connections`].
pub const CONCURRENT_CLIENTS: usize = 64;

/// Many clients connect, send and read at once; each gets its own bytes
/// back, none are lost or crossed.
pub async fn concurrent_connections(b: &dyn Backend) {
    let listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let server = spawn_echo_server(b, listener, CONCURRENT_CLIENTS);
    let clients = (0..CONCURRENT_CLIENTS).map(|i| {
        let addr = &addr;
        async move {
            let t = ok(b, &format!("connect #{i}"), b.connect(addr).await);
            let data = pattern(1 + i * 997, 1000 + i as u64);
            let back = round_trip(b, t, &data).await;
            assert_same(b, &format!("echo for client #{i}"), &back, &data);
        }
    });
    futures::future::join_all(clients).await;
    let mut listener = ok(b, "echo server", server.await);
    ok(b, "close", listener.close());
}

/// A peer that goes away mid-stream: bytes it sent before arrive, then the
/// reader sees end-of-stream (or a disconnect error); a reader waiting for
/// more gets `UnexpectedEof`; a writer gets a disconnect error. None hangs.
pub async fn peer_disconnects_mid_stream(b: &dyn Backend) {
    let mut listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();

    // The client sends part of a message and vanishes without shutdown.
    let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
    let mut client = ok(b, "connect", client);
    let mut server = ok(b, "accept", server);
    let sent = pattern(1000, 11);
    ok(b, "client write", client.write_all(&sent).await);
    ok(b, "client flush", client.flush().await);
    drop(client);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match server.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if is_disconnect_kind(e.kind()) => break,
            Err(e) => panic!("[{}] reading from a vanished client: {e:?}", b.name()),
        }
    }
    assert_same(b, "bytes sent before the client vanished", &got, &sent);

    // The server vanishes while the client waits for more than it sent.
    let (client, server) = tokio::join!(b.connect(&addr), listener.accept());
    let mut client = ok(b, "connect", client);
    let mut server = ok(b, "accept", server);
    ok(b, "server write", server.write_all(b"0123456789").await);
    ok(b, "server flush", server.flush().await);
    drop(server);
    let mut want = [0u8; 100];
    match client.read_exact(&mut want).await {
        Err(e) if is_disconnect_kind(e.kind()) => {}
        Err(e) => panic!("[{}] read_exact from a vanished server: {e:?}", b.name()),
        Ok(_) => panic!("[{}] read 100 bytes from a server that sent 10", b.name()),
    }

    // Writing to a vanished server fails rather than blocking for ever.
    let chunk = vec![0u8; 64 * 1024];
    let mut failed = None;
    for _ in 0..1024 {
        if let Err(e) = async {
            client.write_all(&chunk).await?;
            client.flush().await
        }
        .await
        {
            failed = Some(e);
            break;
        }
    }
    match failed {
        Some(e) if is_disconnect_kind(e.kind()) => {}
        Some(e) => panic!(
            "[{}] writing to a vanished server: want a disconnect error, got {e:?}",
            b.name()
        ),
        None => panic!(
            "[{}] 64 MiB of writes to a vanished server all succeeded",
            b.name()
        ),
    }
    ok(b, "close", listener.close());
}

/// Connections made before `accept` is called wait in the queue, and an
/// `accept` future dropped before it completes loses none of them.
pub async fn queued_connections_and_cancelled_accept(b: &dyn Backend) {
    let mut listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();

    // An accept future that was polled (nothing pending) and is dropped
    // after clients connected, without being polled again.
    let mut pending = listener.accept();
    assert!(
        futures::poll!(&mut pending).is_pending(),
        "[{}] accept completed with no client",
        b.name()
    );
    let mut clients = Vec::new();
    for i in 0..3u8 {
        let mut c = ok(
            b,
            &format!("connect #{i} before accept"),
            b.connect(&addr).await,
        );
        ok(b, "write", c.write_all(&[i]).await);
        ok(b, "flush", c.flush().await);
        clients.push(c);
    }
    drop(pending);

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let mut s = ok(b, "accept a queued connection", listener.accept().await);
        let mut id = [0u8; 1];
        ok(b, "read the client's id", s.read_exact(&mut id).await);
        ok(b, "reply", s.write_all(&[id[0] + 100]).await);
        ok(b, "flush", s.flush().await);
        seen.push(id[0]);
        seen.sort_unstable();
        seen.dedup();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut r = [0u8; 1];
        ok(
            b,
            &format!("client #{i} reads its reply"),
            c.read_exact(&mut r).await,
        );
        assert_eq!(
            r[0],
            i as u8 + 100,
            "[{}] client #{i} got another's reply",
            b.name()
        );
    }
    ok(b, "close", listener.close());
}

/// Binding an endpoint a live server holds is [`Error::AddressInUse`] (its
/// message says "in use"), and the first server keeps working; once it is
/// closed the address can be bound again. Skipped when
/// [`Backend::bind_at`] returns `None`.
pub async fn second_bind_in_use(b: &dyn Backend) {
    let mut first = ok(b, "bind", b.bind().await);
    let addr = first.local_addr().clone();
    match b.bind_at(&addr).await {
        None => {
            eprintln!(
                "[{}] second_bind_in_use skipped: the backend cannot bind at a given address",
                b.name()
            );
            return;
        }
        Some(Ok(l)) => panic!(
            "[{}] bound {addr} while a live server holds it: {l:?}",
            b.name()
        ),
        Some(Err(e @ Error::AddressInUse { .. })) => {
            assert!(
                e.to_string().contains("in use"),
                "[{}] message: {e}",
                b.name()
            );
        }
        Some(Err(e)) => panic!(
            "[{}] second bind of {addr}: want AddressInUse, got {e:?} ({e})",
            b.name()
        ),
    }
    // The first server still serves. The second bind may have probed the
    // endpoint with a connection of its own, which closes without data:
    // skip such connections.
    let client = async {
        let mut c = b.connect(&addr).await?;
        c.write_all(b"x").await?;
        c.flush().await?;
        Ok::<_, Error>(c)
    };
    let server = async {
        for _ in 0..4 {
            let mut s = first.accept().await?;
            let mut one = [0u8; 1];
            match s.read_exact(&mut one).await {
                Ok(_) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Protocol(
            "no connection carried the client's byte".into(),
        ))
    };
    let (client, server) = tokio::join!(client, server);
    let client = ok(b, "connect to the first server and write", client);
    let server = ok(b, "accept on the first server and read", server);
    drop((client, server));
    ok(b, "close", first.close());
    let Some(again) = b.bind_at(&addr).await else {
        panic!("[{}] bind_at answered once, then returned None", b.name());
    };
    let mut again = ok(b, "bind after close", again);
    let (client, server) = tokio::join!(b.connect(&addr), again.accept());
    drop((
        ok(b, "connect to the new server", client),
        ok(b, "accept", server),
    ));
    ok(b, "close", again.close());
}

fn rpc_router() -> crate::Router {
    use crate::jsonrpc::ErrorObject;
    crate::Router::new()
        .method("echo", |_ctx, v: serde_json::Value| async move {
            Ok::<_, ErrorObject>(v)
        })
        .method("count", |ctx: crate::Context, (n,): (u64,)| async move {
            let sink = ctx.sink();
            tokio::spawn(async move {
                for i in 0..n {
                    if sink.send("tick", (i,)).await.is_err() {
                        return;
                    }
                }
            });
            Ok::<_, ErrorObject>(n)
        })
}

/// JSON-RPC over the backend: 16 tasks × 50 requests on one client, a batch,
/// and 500 notifications that arrive in order.
pub async fn rpc_round_trip(b: &dyn Backend) {
    use futures::StreamExt;
    let listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let server = crate::Server::builder()
        .build()
        .serve(listener, rpc_router());
    let client = crate::Client::new(ok(b, "connect", b.connect(&addr).await));
    let mut ticks = client.notifications("tick");
    let n: u64 = ok(b, "count", client.request("count", (500,)).await);
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let v = serde_json::json!({"t": t, "i": i, "pad": "x".repeat(i as usize * 7)});
                let back: serde_json::Value = c.request("echo", &v).await.expect("echo");
                assert_eq!(back, v, "response matched to the wrong request");
            }
        }));
    }
    for t in tasks {
        t.await.expect("request task");
    }
    let results = ok(
        b,
        "batch",
        async {
            client
                .batch()
                .request("echo", (1,))?
                .notify("echo", (2,))?
                .request("missing", ())?
                .send()
                .await
        }
        .await,
    );
    assert_eq!(results.len(), 2, "[{}] one result per request", b.name());
    assert_eq!(
        results[0].as_ref().expect("echo in batch"),
        &serde_json::json!([1])
    );
    assert!(
        matches!(&results[1], Err(Error::Rpc(e)) if e.code == crate::jsonrpc::ErrorObject::METHOD_NOT_FOUND),
        "[{}] {:?}",
        b.name(),
        results[1]
    );
    for i in 0..n {
        let note = ticks.next().await.expect("notification stream ended early");
        assert_eq!(
            note.params,
            Some(serde_json::json!([i])),
            "[{}] notifications out of order",
            b.name()
        );
    }
    ok(
        b,
        "shutdown",
        server.shutdown(Duration::from_secs(10)).await,
    );
}

/// JSON-RPC `echo` calls made one at a time, the [`Server`](crate::Server)
/// on a one-thread runtime of its own and the [`Client`](crate::Client) on
/// another: there a read that waits in place (spinning or polling without
/// handing the thread back) holds up every other task of its thread, such
/// as the server's writer with a reply or the caller with its next request.
/// For backends whose reads can poll before they wait.
///
/// `bind` runs on the server's thread and `connect` on the client's; `what`
/// says, for the failure message, what a slow call means.
///
/// # Panics
///
/// When binding, connecting or a call fails, or as soon as the calls
/// together have taken longer than `limit`.
pub fn rpc_calls_one_thread_each<B, C, F>(
    bind: B,
    connect: C,
    calls: u32,
    limit: Duration,
    what: &str,
) where
    B: FnOnce() -> Result<BoxListener> + Send + 'static,
    C: FnOnce() -> F,
    F: Future<Output = Result<BoxTransport>>,
{
    let one_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a one-thread Tokio runtime")
    };
    let (bound_tx, bound_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        one_thread().block_on(async move {
            let listener = bind().expect("binding the server's endpoint");
            let _ = bound_tx.send(());
            let router = crate::Router::new().method("echo", |_ctx, (s,): (String,)| async move {
                Ok::<_, crate::jsonrpc::ErrorObject>(s)
            });
            let handle = crate::Server::builder().build().serve(listener, router);
            let _ = stop_rx.await;
            handle
                .shutdown(Duration::from_secs(5))
                .await
                .expect("shutting the server down");
        })
    });
    bound_rx
        .recv()
        .expect("the server's thread ended before it bound its endpoint");
    one_thread().block_on(async {
        let transport = connect().await.expect("connecting to the server");
        let client = crate::Client::builder()
            .request_timeout(Some(4 * limit))
            .build(transport);
        let start = std::time::Instant::now();
        for i in 0..calls {
            let param = format!("call {i}");
            let back: String = client
                .request("echo", [&param])
                .await
                .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
            assert_eq!(back, param);
            let spent = start.elapsed();
            assert!(
                spent < limit,
                "{} calls took {spent:?}, more than {limit:?}: {what}",
                i + 1
            );
        }
        client.close();
    });
    let _ = stop_tx.send(());
    server.join().expect("the server's thread panicked");
}

/// Garbage JSON, then an oversize frame, on raw connections beside a
/// well-behaved client.
pub async fn rpc_bad_frames(b: &dyn Backend) {
    let listener = ok(b, "bind", b.bind().await);
    let addr = listener.local_addr().clone();
    let server = crate::Server::builder()
        .max_frame_len(64 * 1024)
        .build()
        .serve(listener, rpc_router());
    let bystander = crate::Client::new(ok(b, "connect", b.connect(&addr).await));
    let _: u64 = ok(b, "warm-up", bystander.request("count", (0,)).await);

    let mut raw = ok(b, "connect", b.connect(&addr).await);
    let garbage = b"{not json";
    let mut frame = (garbage.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(garbage);
    ok(b, "write garbage", raw.write_all(&frame).await);
    let reply = read_len_frame(b, &mut raw).await;
    assert_eq!(reply["error"]["code"], -32700, "[{}] {reply}", b.name());
    assert_eq!(
        reply["id"],
        serde_json::Value::Null,
        "[{}] {reply}",
        b.name()
    );
    let req = br#"{"jsonrpc":"2.0","method":"echo","params":["still here"],"id":7}"#;
    let mut frame = (req.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(req);
    ok(b, "write request", raw.write_all(&frame).await);
    let reply = read_len_frame(b, &mut raw).await;
    assert_eq!(
        reply["result"],
        serde_json::json!(["still here"]),
        "[{}] {reply}",
        b.name()
    );

    // Declares 1 GiB: refused from the header alone, connection closed.
    ok(
        b,
        "write oversize header",
        raw.write_all(&(1u32 << 30).to_be_bytes()).await,
    );
    let mut rest = Vec::new();
    match raw.read_to_end(&mut rest).await {
        Ok(_) => assert!(
            rest.is_empty(),
            "[{}] no reply to an oversize frame",
            b.name()
        ),
        Err(e) => assert!(is_disconnect_kind(e.kind()), "[{}] {e}", b.name()),
    }

    let back: serde_json::Value = ok(b, "bystander", bystander.request("echo", ("fine",)).await);
    assert_eq!(back, serde_json::json!(["fine"]));
    ok(
        b,
        "shutdown",
        server.shutdown(Duration::from_secs(10)).await,
    );
}

async fn read_len_frame(b: &dyn Backend, t: &mut BoxTransport) -> serde_json::Value {
    let mut len = [0u8; 4];
    ok(b, "read frame header", t.read_exact(&mut len).await);
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    ok(b, "read frame body", t.read_exact(&mut body).await);
    ok(b, "parse reply", serde_json::from_slice(&body))
}
