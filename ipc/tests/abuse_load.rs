//! Load and slow-peer abuse against a server in another process, over real
//! Unix sockets: a thousand concurrent clients, and hundreds of connections
//! that trickle one byte a second or send nothing at all.
#![cfg(target_os = "linux")]

mod abuse_support;

use std::time::{Duration, Instant};

use abuse_support::*;
use futures::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[test]
#[ignore = "child-process entry, run by the other tests"]
fn child_abuse_server() {
    run_child_server();
}

const CLIENTS: usize = 1000;
const REQUESTS: usize = 100;

/// 1,000 clients connected at once, 100 requests each (ten in flight at a
/// time per connection): every answer is the one asked for, and the server
/// answered exactly 100,000 echo calls (none lost, none twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_clients_get_every_answer() {
    init_tracing();
    // Both processes hold a descriptor per connection.
    let limit = raise_nofile(4 * CLIENTS as u64);
    assert!(
        limit >= 2 * CLIENTS as u64 + 64,
        "RLIMIT_NOFILE is {limit}; this test needs ~{}",
        2 * CLIENTS + 64
    );
    let dir = temp_dir();
    let (address, _) = unix_address(dir.path(), "load.sock");
    let spec = ServerSpec {
        nofile: Some(4 * CLIENTS as u64),
        max_connections: Some(2 * CLIENTS),
        ..Default::default()
    };
    let _server = start_server("child_abuse_server", &address, &spec, None).await;
    let observer = ipc::connect(&address).await.unwrap();

    let started = Instant::now();
    let clients: Vec<ipc::Client> = within(120, "connecting 1,000 clients", async {
        let mut v = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            v.push(ipc::connect(&address).await.expect("connect"));
        }
        v
    })
    .await;
    // They are all connected at the same time (the server may still be
    // accepting the last ones from its backlog).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live: usize = observer.request("connections", ()).await.unwrap();
        if live == CLIENTS + 1 {
            break;
        }
        assert!(
            live <= CLIENTS + 1 && Instant::now() < deadline,
            "the server sees {live} connections, not {}",
            CLIENTS + 1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            tokio::spawn(async move {
                let mut answered = 0usize;
                for round in 0..REQUESTS / 10 {
                    let calls = (0..10).map(|k| {
                        let i = round * 10 + k;
                        let payload = json!({"c": c, "i": i, "pad": "p".repeat((c + i) % 97)});
                        let client = &client;
                        async move {
                            let back: Value =
                                client.request("echo", &payload).await.expect("request");
                            assert_eq!(
                                back, payload,
                                "client {c} got an answer to another request"
                            );
                        }
                    });
                    join_all(calls).await;
                    answered += 10;
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for t in within(300, "100,000 requests", join_all(tasks)).await {
        answered += t.expect("client task");
    }
    assert_eq!(answered, CLIENTS * REQUESTS);
    let served: u64 = observer.request("served", ()).await.unwrap();
    assert_eq!(
        served,
        (CLIENTS * REQUESTS) as u64,
        "the server answered each request exactly once"
    );
    println!(
        "{CLIENTS} clients x {REQUESTS} requests answered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

const TRICKLERS: usize = 500;
const SILENT: usize = 20;

/// How a trickling connection ended.
#[derive(Debug, PartialEq)]
enum Trickle {
    /// The server closed it after `sent` bytes of a frame that needs more.
    ClosedEarly { sent: usize },
    /// The whole frame went through (the server never closed it).
    Completed,
}

/// Sends a 4 + 64-byte frame one byte a second; stops when the server closes
/// the connection.
async fn trickle(address: &str) -> Trickle {
    let path = address.strip_prefix("unix:").unwrap();
    let mut s = UnixStream::connect(path).await.expect("connect");
    let bytes = request_frame("echo", json!(["x".repeat(24)]), 1);
    assert!(bytes.len() > 60);
    let mut probe = [0u8; 256];
    for (sent, b) in bytes.iter().enumerate() {
        if s.write_all(&[*b]).await.is_err() {
            return Trickle::ClosedEarly { sent };
        }
        // A second between bytes, unless the server closes the connection.
        tokio::select! {
            r = s.read(&mut probe) => match r {
                Ok(0) | Err(_) => return Trickle::ClosedEarly { sent: sent + 1 },
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    Trickle::Completed
}

/// Connects and sends nothing; returns when the server closes the connection.
async fn silent(address: &str) {
    let path = address.strip_prefix("unix:").unwrap();
    let mut s = UnixStream::connect(path).await.expect("connect");
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// 500 connections that send a frame one byte a second, and 20 that send
/// nothing: a well-behaved client is answered throughout (each call well
/// within a generous deadline), the frame timeout closes every trickler
/// before its frame completes, the idle timeout closes the silent ones, and
/// the server is left with only the good client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed_and_do_not_block_others() {
    init_tracing();
    raise_nofile(4 * (TRICKLERS + SILENT) as u64);
    let dir = temp_dir();
    let (address, _) = unix_address(dir.path(), "slow.sock");
    let spec = ServerSpec {
        frame_timeout_ms: Some(5_000),
        idle_timeout_ms: Some(3_000),
        nofile: Some(4096),
        ..Default::default()
    };
    let _server = start_server("child_abuse_server", &address, &spec, None).await;
    let good = ipc::connect(&address).await.unwrap();

    let trick: Vec<_> = (0..TRICKLERS)
        .map(|_| {
            let a = address.clone();
            tokio::spawn(async move { trickle(&a).await })
        })
        .collect();
    let quiet: Vec<_> = (0..SILENT)
        .map(|_| {
            let a = address.clone();
            tokio::spawn(async move { silent(&a).await })
        })
        .collect();

    // While they hang on, a normal client keeps being answered (its steady
    // requests also keep the idle timeout off it).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let good_task = {
        let (good, stop) = (good.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut answered, mut peak) = (0i64, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sum: i64 = within(
                    10,
                    "a request while slow peers hang on",
                    good.request("add", (answered, 1)),
                )
                .await
                .unwrap();
                assert_eq!(sum, answered + 1);
                let live: usize = within(10, "connections", good.request("connections", ()))
                    .await
                    .unwrap();
                peak = peak.max(live);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (answered, peak)
        })
    };

    for (i, t) in within(60, "tricklers closed", join_all(trick))
        .await
        .into_iter()
        .enumerate()
    {
        match t.unwrap() {
            Trickle::ClosedEarly { sent } => assert!(
                sent < 60,
                "trickler {i} sent {sent} bytes before being closed"
            ),
            Trickle::Completed => panic!("trickler {i} was never closed by the frame timeout"),
        }
    }
    within(60, "silent connections closed", join_all(quiet)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live: usize = good.request("connections", ()).await.unwrap();
        if live == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{live} connections still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, peak) = within(30, "the good client", good_task).await.unwrap();
    assert!(answered > 10, "the good client made {answered} requests");
    assert!(
        peak > TRICKLERS / 2,
        "the slow peers were connected at the same time (peak {peak})"
    );
    assert_eq!(good.request::<i64>("add", (2, 2)).await.unwrap(), 4);
}
