//! Spinning async reads and writes (`ShmOptions::async_spin`) under the
//! JSON-RPC `Server` and `Client`, whose reading and writing are separate
//! tasks: a spinning read must let the other tasks of its thread run, or a
//! reply (or the caller's next request) waits behind it for the whole spin.

use std::path::Path;
use std::time::{Duration, Instant};

use ipc_core::Address;
use ipc_shm::{ShmListener, ShmOptions, ShmTransport};

/// The spin of these tests: far longer than a call takes, so that a message
/// held back while a read spins shows plainly.
const SPIN: Duration = Duration::from_secs(2);
const CALLS: u32 = 50;

#[cfg(unix)]
fn temp_addr(dir: &Path) -> Address {
    format!("shm:{}", dir.join("s.sock").display())
        .parse()
        .unwrap()
}

#[cfg(windows)]
fn temp_addr(dir: &Path) -> Address {
    let name = dir.file_name().unwrap().to_string_lossy();
    format!("shm:ipc-shm-spin-{}-{name}", std::process::id())
        .parse()
        .unwrap()
}

fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A JSON-RPC `echo` server on its own one-thread runtime (where nothing
/// else can run while a read spins in place), bound with `opts`. Returns
/// what stops it and its thread.
fn echo_server(
    addr: &Address,
    opts: ShmOptions,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = addr.clone();
    let thread = std::thread::spawn(move || {
        one_thread().block_on(async move {
            let listener = ShmListener::bind_with(&addr, opts).unwrap();
            bound_tx.send(()).unwrap();
            let router = ipc_core::Router::new()
                .method("echo", |_ctx, (s,): (String,)| async move {
                    Ok::<_, ipc_core::jsonrpc::ErrorObject>(s)
                });
            let handle = ipc_core::Server::builder().build().serve(listener, router);
            let _ = stop_rx.await;
            handle.shutdown(Duration::from_secs(5)).await.unwrap();
        })
    });
    bound_rx.recv().unwrap();
    (stop_tx, thread)
}

/// Makes `CALLS` calls on a one-thread runtime, and fails as soon as they
/// have taken longer than one `SPIN` together (each would take the whole
/// spin if a message waited behind a spinning read).
fn echo_calls(addr: &Address, opts: ShmOptions, what: &str) {
    one_thread().block_on(async {
        let t = ShmTransport::connect(addr, &opts).await.unwrap();
        let client = ipc_core::Client::builder()
            .request_timeout(Some(4 * SPIN))
            .build(t);
        let start = Instant::now();
        for i in 0..CALLS {
            let param = format!("call {i}");
            let back: String = client.request("echo", [&param]).await.unwrap();
            assert_eq!(back, param);
            let spent = start.elapsed();
            assert!(
                spent < SPIN,
                "{} calls took {spent:?}, more than the async spin: {what}",
                i + 1
            );
        }
        client.close();
    });
}

/// A `Server` whose connections spin sends each answer before its
/// connection spins for the next request.
#[test]
fn spinning_server_answers_before_it_spins_for_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let addr = temp_addr(dir.path());
    let (stop, server) = echo_server(&addr, ShmOptions::new().async_spin(SPIN));
    echo_calls(
        &addr,
        ShmOptions::new(),
        "the answers waited while the server's connection spun for the next request",
    );
    stop.send(()).unwrap();
    server.join().unwrap();
}

/// A `Client` whose connection spins lets the caller it has just answered
/// send its next request before it spins for the next answer.
#[test]
fn spinning_client_lets_callers_send_before_it_spins_for_the_next_answer() {
    let dir = tempfile::tempdir().unwrap();
    let addr = temp_addr(dir.path());
    let (stop, server) = echo_server(&addr, ShmOptions::new());
    echo_calls(
        &addr,
        ShmOptions::new().async_spin(SPIN),
        "the requests waited while the client's connection spun for the next answer",
    );
    stop.send(()).unwrap();
    server.join().unwrap();
}
