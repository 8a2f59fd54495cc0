//! Busy-polled reads: every byte arrives across processes, a cancelled read
//! loses nothing, and the polling stops when there is nothing to poll for
//! (an idle connection, a slow peer), measured as the CPU time of a child
//! process.
#![cfg(unix)]

mod util;

use std::path::Path;
use std::time::Duration;

use ipc_core::{Address, Transport};
use ipc_unix::{BindOptions, UnixListener, UnixTransport};
use rustix::time::{clock_gettime, ClockId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use util::*;

fn addr(path: &Path) -> Address {
    Address::Unix(path.to_owned())
}

/// CPU time this process has used so far (all threads).
fn cpu_time() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Deterministic bytes, different for every round trip.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Echoes everything it reads until end of stream, optionally sleeping
/// before each answer (a slow peer).
async fn echo(mut t: UnixTransport, delay: Option<Duration>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = within("server read", t.read(&mut buf)).await.unwrap();
        if n == 0 {
            return;
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        t.write_all(&buf[..n]).await.unwrap();
    }
}

/// One request of `len` bytes and its echo, checked byte for byte.
async fn round_trip(t: &mut UnixTransport, len: usize, seed: u64) {
    let msg = pattern(len, seed);
    t.write_all(&msg).await.unwrap();
    let mut back = vec![0u8; len];
    within("echo", t.read_exact(&mut back)).await.unwrap();
    assert!(
        back == msg,
        "echo {seed} of {len} bytes came back different"
    );
}

fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Budget of the idle test: long enough that a transport that kept polling
/// while idle would show plainly.
const IDLE_BUDGET: Duration = Duration::from_millis(1);
/// How long the idle test keeps the connection quiet.
const QUIET: Duration = Duration::from_secs(2);
/// CPU time over the quiet period above which the child was spinning: a
/// correct transport spends at most one budget (1 ms) plus a wake-up; one
/// that polled throughout would burn most of the two seconds, and still
/// well over this on a loaded machine.
const SPINNING: Duration = Duration::from_millis(250);

#[test]
fn idle_busy_polled_connection_does_not_spin() {
    const TEST: &str = "idle_busy_polled_connection_does_not_spin";
    if let Some((_, path)) = child_role() {
        child_runtime().block_on(async {
            let mut t = ipc_unix::connect(&addr(Path::new(&path))).await.unwrap();
            t.set_busy_poll(Some(IDLE_BUDGET));
            assert_eq!(t.busy_poll(), Some(IDLE_BUDGET));
            // Quick answers: the policy learns to poll.
            for i in 0..2000u64 {
                round_trip(&mut t, 1 + (i as usize * 97) % 8192, i).await;
            }
            let before = cpu_time();
            report("quiet");
            let mut b = [0u8; 1];
            within("the wake-up byte", t.read_exact(&mut b))
                .await
                .unwrap();
            assert_eq!(&b, b"!");
            report(format!("cpu-us {}", (cpu_time() - before).as_micros()));
        });
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idle.sock");
        let opts = BindOptions::new().busy_poll(IDLE_BUDGET);
        let mut listener = UnixListener::bind_with(&addr(&path), &opts).unwrap();
        let mut child = spawn_self(TEST, "client", path.to_str().unwrap(), None);
        let mut t = within("accept", listener.accept_unix()).await.unwrap();
        assert_eq!(t.busy_poll(), Some(IDLE_BUDGET));
        assert_eq!(t.peer().pid, Some(child.child.id()));
        let mut buf = vec![0u8; 64 * 1024];
        let mut echoed = 0usize;
        let want: usize = (0..2000usize).map(|i| 1 + (i * 97) % 8192).sum();
        while echoed < want {
            let n = within("server read", t.read(&mut buf)).await.unwrap();
            assert!(n > 0, "the child closed early");
            t.write_all(&buf[..n]).await.unwrap();
            echoed += n;
        }
        let line = tokio::task::block_in_place(|| child.next_report());
        assert_eq!(line, "quiet");
        tokio::time::sleep(QUIET).await;
        t.write_all(b"!").await.unwrap();
        let line = tokio::task::block_in_place(|| child.next_report());
        let cpu: u64 = line
            .strip_prefix("cpu-us ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected report {line:?}"));
        let cpu = Duration::from_micros(cpu);
        eprintln!("idle child: {cpu:?} of CPU over {QUIET:?}");
        assert!(
            cpu < SPINNING,
            "a busy-polled connection used {cpu:?} of CPU while idle for {QUIET:?}: it kept polling"
        );
        tokio::task::block_in_place(|| child.wait_ok());
    });
}

/// Budget of the slow-peer test, below the peer's answer time.
const SLOW_BUDGET: Duration = Duration::from_millis(4);
/// The slow peer's delay before each answer.
const SLOW_DELAY: Duration = Duration::from_millis(5);
const SLOW_TRIPS: u64 = 200;

#[test]
fn busy_polling_stops_when_the_peer_answers_slower_than_the_budget() {
    const TEST: &str = "busy_polling_stops_when_the_peer_answers_slower_than_the_budget";
    if let Some((_, path)) = child_role() {
        child_runtime().block_on(async {
            let mut t = ipc_unix::connect(&addr(Path::new(&path))).await.unwrap();
            t.set_busy_poll(Some(SLOW_BUDGET));
            let before = cpu_time();
            for i in 0..SLOW_TRIPS {
                round_trip(&mut t, 64, i).await;
            }
            report(format!("cpu-us {}", (cpu_time() - before).as_micros()));
        });
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.sock");
        let mut listener = UnixListener::bind(&addr(&path)).unwrap();
        let mut child = spawn_self(TEST, "client", path.to_str().unwrap(), None);
        let t = within("accept", listener.accept_unix()).await.unwrap();
        let server = tokio::spawn(echo(t, Some(SLOW_DELAY)));
        let line = tokio::task::block_in_place(|| child.next_report());
        let cpu: u64 = line
            .strip_prefix("cpu-us ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected report {line:?}"));
        let cpu = Duration::from_micros(cpu);
        eprintln!("slow-peer child: {cpu:?} of CPU over {SLOW_TRIPS} round trips");
        // Polling every wait would spend 200 x 4 ms = 800 ms; the policy
        // stops after a handful of waits.
        assert!(
            cpu < Duration::from_millis(150),
            "a busy-polled client of a peer slower than its budget used {cpu:?} of CPU over \
             {SLOW_TRIPS} round trips: it kept polling"
        );
        tokio::task::block_in_place(|| child.wait_ok());
        within("server end", server).await.unwrap();
    });
}

#[tokio::test(flavor = "current_thread")]
async fn cancelled_busy_polled_reads_lose_nothing() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let mut a = UnixTransport::from_stream(a).unwrap();
    let mut b = UnixTransport::from_stream(b).unwrap();
    a.set_busy_poll(Some(Duration::from_micros(200)));
    let msgs: Vec<Vec<u8>> = (0..50u64)
        .map(|i| pattern(1 + (i as usize * 37) % 300, i))
        .collect();
    let want: Vec<u8> = msgs.concat();
    // The writer trickles the messages in small pieces.
    let writer = tokio::spawn(async move {
        for m in msgs {
            for piece in m.chunks(7) {
                b.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        }
        b
    });
    let mut got = Vec::new();
    let mut cancelled = 0u32;
    while got.len() < want.len() {
        let mut small = [0u8; 16];
        // A read that has to wait is abandoned after its first poll (which
        // polls the socket for the budget, then registers with the reactor).
        let polled = poll_once(a.read(&mut small)).await;
        match polled {
            Some(n) => {
                let n = n.unwrap();
                assert!(
                    n > 0,
                    "end of stream after {} of {} bytes",
                    got.len(),
                    want.len()
                );
                got.extend_from_slice(&small[..n]);
            }
            None => {
                cancelled += 1;
                assert!(
                    cancelled < 1_000_000,
                    "the reader never got the bytes: it hangs"
                );
                tokio::task::yield_now().await;
            }
        }
    }
    assert!(got == want, "the bytes read differ from those written");
    assert!(
        cancelled > 0,
        "no read was ever cancelled; the test proved nothing"
    );
    let b = within("writer", writer).await.unwrap();
    assert!(
        poll_once(a.read(&mut [0u8; 1])).await.is_none(),
        "bytes left over"
    );

    // Zero-length reads return at once; end of stream reads as 0.
    assert_eq!(a.read(&mut []).await.unwrap(), 0);
    drop(b);
    let mut buf = [0u8; 8];
    assert_eq!(within("eof", a.read(&mut buf)).await.unwrap(), 0);
}

/// Budget of the JSON-RPC tests: far longer than a call takes, so that an
/// answer or a request held back while a connection polls for the next
/// message shows plainly (each call would take the whole budget).
const RPC_BUDGET: Duration = Duration::from_secs(2);

/// 50 JSON-RPC calls, server and client each on a one-thread runtime, the
/// server's connections with `server` and the client's with `client`
/// busy polling.
fn echo_calls(path: &Path, server: BindOptions, client: Option<Duration>, what: &str) {
    let server_addr = addr(path);
    let client_addr = addr(path);
    ipc_core::conformance::rpc_calls_one_thread_each(
        move || Ok(Box::new(UnixListener::bind_with(&server_addr, &server)?)),
        || async move {
            let mut t = ipc_unix::connect(&client_addr).await?;
            t.set_busy_poll(client);
            Ok(Box::new(t) as ipc_core::BoxTransport)
        },
        50,
        RPC_BUDGET,
        what,
    );
}

/// A `Server` whose connections busy-poll sends each answer before its
/// connection polls for the next request.
#[test]
fn busy_polling_server_answers_before_it_polls_for_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    echo_calls(
        &dir.path().join("server.sock"),
        BindOptions::new().busy_poll(RPC_BUDGET),
        None,
        "the answers waited while the server's connection polled for the next request",
    );
}

/// A `Client` whose connection busy-polls lets the caller it has just
/// answered send its next request before it polls for the next answer.
#[test]
fn busy_polling_client_lets_callers_send_before_it_polls_for_the_next_answer() {
    let dir = tempfile::tempdir().unwrap();
    echo_calls(
        &dir.path().join("client.sock"),
        BindOptions::new(),
        Some(RPC_BUDGET),
        "the requests waited while the client's connection polled for the next answer",
    );
}

#[tokio::test(flavor = "current_thread")]
async fn busy_poll_settings() {
    let (a, _b) = tokio::net::UnixStream::pair().unwrap();
    let mut a = UnixTransport::from_stream(a).unwrap();
    assert_eq!(a.busy_poll(), None, "busy polling is off by default");
    a.set_busy_poll(Some(Duration::from_micros(30)));
    assert_eq!(a.busy_poll(), Some(Duration::from_micros(30)));
    a.set_busy_poll(Some(Duration::ZERO));
    assert_eq!(a.busy_poll(), None, "a zero budget turns it off");
    assert_eq!(BindOptions::new().get_busy_poll(), None);
    assert_eq!(
        BindOptions::new()
            .busy_poll(Duration::from_micros(30))
            .get_busy_poll(),
        Some(Duration::from_micros(30))
    );
    assert_eq!(
        BindOptions::new().busy_poll(Duration::ZERO).get_busy_poll(),
        None
    );
}

/// Polls `fut` once and drops it: its output if ready, `None` if it would
/// wait.
async fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
