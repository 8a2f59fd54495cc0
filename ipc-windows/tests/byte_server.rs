//! `connect` against another program's byte-mode pipe server, one that keeps
//! a single instance waiting and creates the next only once a client has
//! connected: each `connect` must open the pipe exactly once (an open that is
//! thrown away uses up the server's instance and leaves the real client
//! racing for the next one) and get a working byte stream.
#![cfg(windows)]

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipc_core::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::windows::named_pipe::{PipeMode, ServerOptions};
use tokio::sync::mpsc;

/// Generous "does not hang" deadline for each test.
const DEADLINE: Duration = Duration::from_secs(60);

fn unique(tag: &str) -> Address {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("pipe:ipc-windows-byte-{tag}-{}-{n}", std::process::id())
        .parse()
        .unwrap()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("the test did not finish within its deadline")
}

/// What the byte-mode server saw.
#[derive(Default)]
struct Seen {
    /// Clients connected to an instance of the pipe.
    connections: AtomicUsize,
}

/// A byte-mode server in the usual shape: one instance waiting at a time,
/// the next created right after a client connects. Each connection reads one
/// request up to `\n`, answers `echo: <request>` and closes; a connection
/// that ends without a request is reported on `empty`.
fn spawn_byte_server(addr: &Address, seen: Arc<Seen>, empty: mpsc::UnboundedSender<usize>) {
    let path = ipc_windows::pipe_path(addr).unwrap();
    let mut options = ServerOptions::new();
    options.pipe_mode(PipeMode::Byte);
    let mut server = options
        .clone()
        .first_pipe_instance(true)
        .create(&path)
        .unwrap();
    tokio::spawn(async move {
        loop {
            if server.connect().await.is_err() {
                // The client came and went before the connect completed.
                server = options.create(&path).unwrap();
                continue;
            }
            let n = seen.connections.fetch_add(1, Ordering::SeqCst);
            let mut conn = std::mem::replace(&mut server, options.create(&path).unwrap());
            let empty = empty.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut b = [0; 1];
                loop {
                    match conn.read(&mut b).await {
                        Ok(1) if b[0] != b'\n' => request.push(b[0]),
                        Ok(1) => break,
                        _ => {
                            let _ = empty.send(n);
                            return;
                        }
                    }
                }
                let mut answer = b"echo: ".to_vec();
                answer.extend_from_slice(&request);
                let _ = conn.write_all(&answer).await;
                let _ = conn.flush().await;
                // Closing right away would discard what the client has not
                // read yet: wait for it to close first.
                let _ = conn.read(&mut b).await;
            });
        }
    });
}

/// One client: connect, send a request, read the whole answer to the end.
async fn exchange(addr: &Address, i: usize) {
    let mut pipe = ipc_windows::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("client {i}: {e}"));
    pipe.write_all(format!("request {i}\n").as_bytes())
        .await
        .unwrap();
    let expected = format!("echo: request {i}");
    let mut answer = vec![0; expected.len()];
    pipe.read_exact(&mut answer)
        .await
        .unwrap_or_else(|e| panic!("client {i}: reading the answer: {e}"));
    assert_eq!(String::from_utf8_lossy(&answer), expected);
}

fn check(seen: &Seen, mut empty: mpsc::UnboundedReceiver<usize>, clients: usize) {
    let mut abandoned = Vec::new();
    while let Ok(n) = empty.try_recv() {
        abandoned.push(n);
    }
    assert!(
        abandoned.is_empty(),
        "connections {abandoned:?} of the byte-mode server were opened and closed without a request"
    );
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        clients,
        "each connect must open the pipe once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_connects_to_a_byte_mode_server_open_the_pipe_once() {
    let addr = unique("seq");
    let seen = Arc::new(Seen::default());
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_byte_server(&addr, seen.clone(), tx);
    const CLIENTS: usize = 20;
    within(async {
        for i in 0..CLIENTS {
            exchange(&addr, i).await;
        }
    })
    .await;
    check(&seen, rx, CLIENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_to_a_byte_mode_server_open_the_pipe_once() {
    let addr = unique("conc");
    let seen = Arc::new(Seen::default());
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_byte_server(&addr, seen.clone(), tx);
    const CLIENTS: usize = 16;
    within(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let addr = addr.clone();
                tokio::spawn(async move { exchange(&addr, i).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    check(&seen, rx, CLIENTS);
}
