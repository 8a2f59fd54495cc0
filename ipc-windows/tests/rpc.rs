//! JSON-RPC over a named pipe between two processes: the server runs in a
//! child process (this test binary re-run), the client here.
#![cfg(windows)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_core::jsonrpc::ErrorObject;
use ipc_core::{Address, Client, Context, Error, Router, Server};
use ipc_testkit::{spawn, test_binary, ChildGuard};
use ipc_windows::PipeListener;
use serde_json::{json, Value};

const ADDR_ENV: &str = "IPC_WINDOWS_RPC_TEST_ADDR";
/// Generous "does not hang" deadline.
const DEADLINE: Duration = Duration::from_secs(120);
const REQUESTS: u64 = 1000;

fn router() -> Router {
    Router::new()
        .method("add", |_ctx: Context, (a, b): (i64, i64)| async move {
            Ok::<_, ErrorObject>(a + b)
        })
        .method("echo", |_ctx: Context, (v,): (Value,)| async move {
            Ok::<_, ErrorObject>(v)
        })
        .method("stop", |ctx: Context, _: Value| async move {
            ctx.server().request_shutdown();
            Ok::<_, ErrorObject>(true)
        })
}

/// Child process entry: serves `router()` at $IPC_WINDOWS_RPC_TEST_ADDR until
/// a client calls `stop`. Does nothing when run without it.
#[test]
fn child_rpc_server() {
    let Ok(addr) = std::env::var(ADDR_ENV) else {
        return;
    };
    let addr: Address = addr.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = PipeListener::bind(&addr).expect("child bind");
        let handle = Server::builder().build().serve(listener, router());
        tokio::time::timeout(DEADLINE, handle.stopped())
            .await
            .expect("no client asked the child server to stop");
        handle
            .shutdown(Duration::from_secs(5))
            .await
            .expect("child shutdown");
    });
}

async fn connect_when_up(addr: &Address) -> ipc_windows::PipeTransport {
    let started = Instant::now();
    loop {
        match ipc_windows::connect(addr).await {
            Ok(t) => return t,
            Err(Error::NotFound { .. }) if started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connecting to the child server: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_from_another_process_are_all_answered() {
    let addr: Address = format!("pipe:ipc-windows-rpc-test-{}", std::process::id())
        .parse()
        .unwrap();
    let mut cmd = test_binary("child_rpc_server");
    cmd.env(ADDR_ENV, addr.to_string()).stdout(Stdio::null());
    let mut child = ChildGuard(spawn(&mut cmd));
    let transport = tokio::time::timeout(DEADLINE, connect_when_up(&addr))
        .await
        .expect("the child server did not come up");
    assert_eq!(transport.peer_info().pid, Some(child.0.id()));
    assert!(transport.peer_info().same_user);
    let client = Client::new(transport);

    let answered = tokio::time::timeout(DEADLINE, async {
        // All requests in flight at once over the one connection.
        let calls = (0..REQUESTS).map(|i| {
            let client = &client;
            async move {
                if i % 2 == 0 {
                    let sum: i64 = client.request("add", json!([i, 1000])).await.unwrap();
                    assert_eq!(sum, i as i64 + 1000);
                } else {
                    let v = json!({"i": i, "s": "x".repeat(i as usize % 300)});
                    let back: Value = client.request("echo", json!([v.clone()])).await.unwrap();
                    assert_eq!(back, v);
                }
            }
        });
        futures::future::join_all(calls).await.len()
    })
    .await
    .expect("the requests were not all answered in time");
    assert_eq!(answered as u64, REQUESTS);

    let stopped: bool = client.request("stop", json!([])).await.unwrap();
    assert!(stopped);
    let status = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || child.0.wait()),
    )
    .await
    .expect("the child server did not exit")
    .unwrap()
    .unwrap();
    assert!(status.success(), "child server failed: {status}");
}
