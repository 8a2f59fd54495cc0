//! JSON-RPC over Unix sockets through the facade, across real processes.
#![cfg(unix)]

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipc::{AuthPolicy, BindOptions, Error, Server};
use serde_json::{json, Value};
use support::*;

/// Child process entry: serves the test router at $IPC_TEST_ADDR until asked
/// to shut down (or killed).
#[test]
#[ignore = "child-process entry, run by the other tests"]
fn child_server() {
    serve_test_router_from_env();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_share_one_client_across_processes() {
    init_tracing();
    let dir = temp_dir();
    let (address, path) = unix_address(dir.path(), "rpc.sock");
    let child = ChildGuard(spawn_child("child_server", &[("IPC_TEST_ADDR", &address)]));
    wait_for_server(&address).await;
    // Room for every notification the test asks for: a subscriber that falls
    // more than its buffer behind is ended as lagging (by design), and on a
    // loaded machine the reading task can run well ahead of this one.
    let client = ipc::Client::builder()
        .subscription_buffer(2000)
        .build(ipc::connect_transport(&address).await.unwrap());
    assert_eq!(
        client.peer().pid,
        Some(child.0.id()),
        "the peer is the server process"
    );

    // Notifications arrive in order while requests are in flight.
    let mut counter = client.notifications("counter");
    let total: u64 = client.request("count", (2000,)).await.unwrap();
    let notes = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            let n = counter
                .next()
                .await
                .expect("notification stream ended early");
            seen.push(n.params.unwrap()["i"].as_u64().unwrap());
        }
        seen
    });

    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625u64 {
                let payload = json!({"task": task, "i": i, "pad": "x".repeat((i % 50) as usize)});
                let back: Value = client.request("echo", &payload).await.unwrap();
                assert_eq!(back, payload, "response matched to the wrong request");
            }
            625u64
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += within(120, "request tasks", t).await.unwrap();
    }
    assert_eq!(answered, 10_000);
    let seen = within(60, "notifications", notes).await.unwrap();
    assert_eq!(
        seen,
        (0..2000).collect::<Vec<u64>>(),
        "notifications out of order or lost"
    );

    let sum: i64 = client.request("add", (40, 2)).await.unwrap();
    assert_eq!(sum, 42);
    assert!(client.request::<bool>("shutdown", ()).await.unwrap());
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "server exited with {status}");
    assert!(!path.exists(), "graceful shutdown removes the socket file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_fail_fast_when_the_server_dies() {
    init_tracing();
    let dir = temp_dir();
    let (address, _) = unix_address(dir.path(), "die.sock");
    let mut child = ChildGuard(spawn_child("child_server", &[("IPC_TEST_ADDR", &address)]));
    wait_for_server(&address).await;
    let client = ipc::connect(&address).await.unwrap();
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.request::<u64>("sleep_ms", (60_000,)).await })
        })
        .collect();
    // Make sure the calls reached the server before it dies.
    let _: i64 = client.request("add", (1, 1)).await.unwrap();
    child.0.kill().unwrap();
    let killed_at = Instant::now();
    for s in slow {
        let r = within(1, "a pending request after the server died", s)
            .await
            .unwrap();
        assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
    }
    let _ = killed_at.elapsed();
    let after = client.request::<i64>("add", (1, 1)).await;
    assert!(matches!(after, Err(Error::Disconnected)), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_and_live_server_is_never_stolen() {
    init_tracing();
    let dir = temp_dir();
    let (address, path) = unix_address(dir.path(), "restart.sock");
    let mut first = ChildGuard(spawn_child("child_server", &[("IPC_TEST_ADDR", &address)]));
    wait_for_server(&address).await;

    // A second server on the live path fails with "in use".
    let err = ipc::bind(&address).await.unwrap_err();
    assert!(matches!(err, Error::AddressInUse { .. }), "{err:?}");
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(path.exists(), "the live socket was left alone");

    // SIGKILL leaves a stale file; a new server replaces it.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(path.exists(), "SIGKILL leaves the socket file behind");
    let listener = ipc::bind(&address).await.expect("restart on a stale path");
    let handle = Server::builder().build().serve(listener, test_router());
    let client = ipc::connect(&address).await.unwrap();
    assert_eq!(client.request::<i64>("add", (2, 3)).await.unwrap(), 5);
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(!path.exists());

    // A regular file at the path survives a bind attempt.
    std::fs::write(&path, b"precious").unwrap();
    let err = ipc::bind(&address).await.unwrap_err();
    assert!(matches!(err, Error::NotASocket { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn read_frame(s: &mut StdUnixStream) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("frame header");
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).expect("frame body");
    serde_json::from_slice(&buf).expect("server sent JSON")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_spec_answers_and_never_hurts_other_connections() {
    init_tracing();
    let dir = temp_dir();
    let (address, path) = unix_address(dir.path(), "bad.sock");
    let listener = ipc::bind(&address).await.unwrap();
    let handle = Server::builder()
        .max_frame_len(64 * 1024)
        .build()
        .serve(listener, test_router());
    let bystander = ipc::connect(&address).await.unwrap();

    let p = path.clone();
    blocking(move || {
        let mut s = StdUnixStream::connect(&p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Garbage JSON: -32700 with id null, and the connection lives on.
        s.write_all(&frame(b"{not json")).unwrap();
        let r = read_frame(&mut s);
        assert_eq!(r["error"]["code"], -32700, "{r}");
        assert_eq!(r["id"], Value::Null);
        // Unknown method: -32601.
        s.write_all(&frame(br#"{"jsonrpc":"2.0","method":"nope","id":1}"#)).unwrap();
        let r = read_frame(&mut s);
        assert_eq!((r["error"]["code"].clone(), r["id"].clone()), (json!(-32601), json!(1)), "{r}");
        // Wrong params: -32602.
        s.write_all(&frame(br#"{"jsonrpc":"2.0","method":"add","params":["a"],"id":2}"#)).unwrap();
        assert_eq!(read_frame(&mut s)["error"]["code"], -32602);
        // Invalid request: -32600, id kept.
        s.write_all(&frame(br#"{"jsonrpc":"1.0","method":"add","id":3}"#)).unwrap();
        let r = read_frame(&mut s);
        assert_eq!((r["error"]["code"].clone(), r["id"].clone()), (json!(-32600), json!(3)), "{r}");
        // Empty batch: a single -32600.
        s.write_all(&frame(b"[]")).unwrap();
        let r = read_frame(&mut s);
        assert!(r.is_object() && r["error"]["code"] == -32600, "{r}");
        // Batch of only notifications: no reply (the next frame answers the next request).
        s.write_all(&frame(br#"[{"jsonrpc":"2.0","method":"add","params":[1,2]},{"jsonrpc":"2.0","method":"echo"}]"#)).unwrap();
        s.write_all(&frame(br#"{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"after"}"#)).unwrap();
        let r = read_frame(&mut s);
        assert_eq!((r["result"].clone(), r["id"].clone()), (json!(3), json!("after")), "{r}");
        // Mixed batch: answers for requests and invalid entries only.
        s.write_all(&frame(br#"[{"jsonrpc":"2.0","method":"add","params":[1,2],"id":1},{"jsonrpc":"2.0","method":"echo"},1,{"jsonrpc":"2.0","method":"nope","id":2}]"#)).unwrap();
        let r = read_frame(&mut s);
        let arr = r.as_array().expect("batch reply is an array");
        assert_eq!(arr.len(), 3, "{r}");
        let mut codes: Vec<String> = arr
            .iter()
            .map(|e| if e.get("result").is_some() { "ok".to_string() } else { e["error"]["code"].to_string() })
            .collect();
        codes.sort();
        assert_eq!(codes, vec!["-32600", "-32601", "ok"]);

        // A frame longer than the maximum closes this connection.
        s.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed without a reply");
    })
    .await;

    // Geth-style JSON stream framing on another connection, auto-detected.
    let p = path.clone();
    blocking(move || {
        let mut s = StdUnixStream::connect(&p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[2,2],\"id\":1}\n{\"jsonrpc\":\"2.0\",\"method\"")
            .unwrap();
        s.write_all(b":\"echo\",\"params\":{\"k\":\"}{\"},\"id\":2}").unwrap();
        let mut de = serde_json::Deserializer::from_reader(s.try_clone().unwrap()).into_iter::<Value>();
        // Requests run concurrently: match the answers by id.
        let mut answers = [de.next().unwrap().unwrap(), de.next().unwrap().unwrap()];
        answers.sort_by_key(|a| a["id"].as_i64());
        assert_eq!(answers[0]["result"], 4);
        assert_eq!(answers[1]["result"], json!({"k": "}{"}));
        // Bytes outside any JSON value: a parse error, then the stream is closed.
        s.write_all(b" hello").unwrap();
        let c = de.next().unwrap().unwrap();
        assert_eq!((c["error"]["code"].clone(), c["id"].clone()), (json!(-32700), Value::Null));
        assert!(de.next().is_none(), "closed after the unrecoverable error");
    })
    .await;

    // The bystander noticed nothing.
    assert_eq!(bystander.request::<i64>("add", (20, 22)).await.unwrap(), 42);
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests_and_removes_the_socket() {
    init_tracing();
    let dir = temp_dir();
    let (address, path) = unix_address(dir.path(), "grace.sock");
    let listener = ipc::bind(&address).await.unwrap();
    let handle = Server::builder().build().serve(listener, test_router());
    let client = ipc::connect(&address).await.unwrap();
    // join! polls in order: the ten calls are queued on the connection before
    // the `add` whose answer starts the shutdown, so all ten are in flight.
    let calls = futures::future::join_all(
        (0..10u64).map(|i| client.request::<u64>("sleep_ms", (200 + i,))),
    );
    let stop = async {
        let _: i64 = client.request("add", (0, 0)).await.unwrap();
        within(10, "shutdown", handle.shutdown(Duration::from_secs(5)))
            .await
            .unwrap();
    };
    let (results, ()) = tokio::join!(calls, stop);
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), 200 + i as u64, "in-flight request finished");
    }
    assert!(!path.exists(), "the socket file is removed");
    let err = ipc::connect(&address).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    // A grace period too short for a request reports the abandonment.
    let listener = ipc::bind(&address).await.unwrap();
    let handle = Server::builder().build().serve(listener, test_router());
    let client = ipc::connect(&address).await.unwrap();
    let slow = tokio::spawn(async move { client.request::<u64>("sleep_ms", (30_000,)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = within(
        10,
        "short shutdown",
        handle.shutdown(Duration::from_millis(100)),
    )
    .await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert!(within(5, "abandoned request", slow).await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_with_the_connection_and_connections_are_listed() {
    init_tracing();
    let dir = temp_dir();
    let (address, _) = unix_address(dir.path(), "subs.sock");
    let listener = ipc::bind(&address).await.unwrap();
    let handle = Server::builder().build().serve(listener, test_router());
    let a = ipc::connect(&address).await.unwrap();
    let b = ipc::connect(&address).await.unwrap();
    let _: i64 = a.request("add", (1, 1)).await.unwrap();
    let _: i64 = b.request("add", (1, 1)).await.unwrap();
    let conns = handle.connections();
    assert_eq!(conns.len(), 2);
    assert!(conns.iter().all(|c| c.pid == Some(std::process::id())));
    let mut news_a = a.notifications("news");
    let mut news_b = b.notifications("news");
    assert_eq!(handle.broadcast("news", json!({"v": 1})).unwrap(), 2);
    for s in [&mut news_a, &mut news_b] {
        let n = within(5, "broadcast", s.next()).await.unwrap();
        assert_eq!(n.params.unwrap()["v"], 1);
    }
    // Batch from the client API.
    let results = a
        .batch()
        .request("add", (1, 2))
        .unwrap()
        .notify("echo", ())
        .unwrap()
        .request("nope", ())
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap(), &json!(3));
    assert!(matches!(&results[1], Err(Error::Rpc(e)) if e.code == -32601));
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(within(5, "subscription end", news_a.next()).await.is_none());
    let r = a.request::<i64>("add", (1, 1)).await;
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
}

/// Child entry: as `nobody`, calls $IPC_TEST_ADDR and prints what happened
/// on stderr; exit code 10 = refused by the OS, 11 = refused by the server
/// with a clear error, 0 = served.
#[test]
#[ignore = "child-process entry, run by the other tests"]
fn child_other_user_client() {
    let Ok(address) = std::env::var("IPC_TEST_ADDR") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        match ipc::connect(&address).await {
            Err(Error::PermissionDenied { .. }) => 10,
            Err(e) => {
                eprintln!("unexpected connect error: {e}");
                1
            }
            Ok(client) => match client.request::<i64>("add", (1, 1)).await {
                Ok(_) => 0,
                Err(Error::Rpc(e)) if e.code == -32001 => {
                    eprintln!("refused: {e}");
                    11
                }
                Err(e) => {
                    eprintln!("unexpected request error: {e}");
                    2
                }
            },
        }
    });
    std::process::exit(code);
}

fn run_as_nobody(exe: &std::path::Path, address: &str) -> Option<i32> {
    use std::os::unix::process::CommandExt;
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "child_other_user_client",
            "--ignored",
            "--nocapture",
        ])
        .env("IPC_TEST_ADDR", address)
        .stdout(std::process::Stdio::null())
        .uid(65534)
        .gid(65534)
        .status()
        .expect("spawn as nobody");
    status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused_by_mode_and_by_policy() {
    init_tracing();
    if current_uid() != 0 {
        println!(
            "skipped: dropping to another user needs root (tests run as uid {})",
            current_uid()
        );
        return;
    }
    // A directory others may traverse, so only the socket's own mode decides.
    let dir = tempfile::Builder::new()
        .prefix("ipc-test-shared-")
        .tempdir()
        .unwrap();
    set_mode(dir.path(), 0o755);
    let exe = exe_for_nobody(dir.path());

    let (address, _) = unix_address(dir.path(), "owner-only.sock");
    let listener = ipc::bind(&address).await.unwrap();
    let handle = Server::builder().build().serve(listener, test_router());
    let a = address.clone();
    assert_eq!(
        {
            let e = exe.clone();
            blocking(move || run_as_nobody(&e, &a))
        }
        .await,
        Some(10),
        "the 0600 socket refuses another user"
    );
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    let (address, _) = unix_address(dir.path(), "open.sock");
    let listener = ipc::bind_with(&address, &BindOptions::new().mode(0o666))
        .await
        .unwrap();
    let handle = Server::builder().build().serve(listener, test_router());
    let a = address.clone();
    assert_eq!(
        {
            let e = exe.clone();
            blocking(move || run_as_nobody(&e, &a))
        }
        .await,
        Some(11),
        "the same-user policy refuses another user"
    );
    assert!(handle.connections().is_empty());
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    let (address, _) = unix_address(dir.path(), "allowed.sock");
    let listener = ipc::bind_with(&address, &BindOptions::new().mode(0o666))
        .await
        .unwrap();
    let handle = Server::builder()
        .auth(AuthPolicy::uids([65534]))
        .build()
        .serve(listener, test_router());
    let a = address.clone();
    assert_eq!(
        {
            let e = exe.clone();
            blocking(move || run_as_nobody(&e, &a))
        }
        .await,
        Some(0),
        "an allow-listed uid is served"
    );
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A copy of this test binary that `nobody` may run, in `dir`.
fn exe_for_nobody(dir: &std::path::Path) -> std::path::PathBuf {
    let copy = dir.join("test-client");
    if !copy.exists() {
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        set_mode(&copy, 0o755);
    }
    copy
}
