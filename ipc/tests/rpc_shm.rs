//! JSON-RPC over shared-memory rings through the facade (`shm:`), across
//! real processes: the same Server and Client code as over sockets.
#![cfg(all(any(unix, windows), feature = "shm"))]

mod support;

use futures::StreamExt;
use ipc::Error;
use serde_json::{json, Value};
use support::*;

/// Child process entry: serves the test router at $IPC_TEST_ADDR.
#[test]
#[ignore = "child-process entry, run by the other tests"]
fn child_shm_server() {
    serve_test_router_from_env();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_over_shared_memory_across_processes() {
    init_tracing();
    let dir = temp_dir();
    let address = if cfg!(windows) {
        format!("shm:ipc-rpc-shm-{}", std::process::id())
    } else {
        format!("shm:{}", dir.path().join("rpc.sock").display())
    };
    let child = ChildGuard(spawn_child(
        "child_shm_server",
        &[("IPC_TEST_ADDR", &address)],
    ));
    wait_for_server(&address).await;
    let client = ipc::connect(&address).await.unwrap();
    assert_eq!(
        client.peer().pid,
        Some(child.0.id()),
        "the peer is the server process"
    );

    let mut counter = client.notifications("counter");
    let total: u64 = client.request("count", (1000,)).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200u64 {
                // Some answers are larger than a ring, streamed through it in pieces.
                let pad = if i % 100 == 7 {
                    (1 << 20) + 4096
                } else {
                    (i % 40) as usize * 100
                };
                let payload = json!({"task": task, "i": i, "pad": "x".repeat(pad)});
                let back: Value = client.request("echo", &payload).await.unwrap();
                assert_eq!(back, payload, "response matched to the wrong request");
            }
        }));
    }
    for t in tasks {
        within(180, "request tasks", t).await.unwrap();
    }
    for i in 0..total {
        let n = within(30, "notifications", counter.next())
            .await
            .expect("stream ended");
        assert_eq!(n.params.unwrap()["i"], i, "notifications out of order");
    }

    // The server dies: pending calls fail at once, never hang.
    let pending: Vec<_> = (0..4)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.request::<u64>("sleep_ms", (60_000,)).await })
        })
        .collect();
    let _: i64 = client.request("add", (1, 1)).await.unwrap();
    let mut child = child;
    child.0.kill().unwrap();
    for p in pending {
        let r = within(2, "a pending request after the server died", p)
            .await
            .unwrap();
        assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
    }
}
