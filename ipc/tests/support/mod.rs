//! Shared pieces of the facade's integration tests: a test server's methods,
//! child processes made by re-running this test binary, and a watchdog.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ipc::jsonrpc::ErrorObject;
use ipc::{Context, Router};
use serde_json::{json, Value};

pub use ipc_testkit::ChildGuard;
use ipc_testkit::{spawn, test_binary};

/// The methods every test server offers.
pub fn test_router() -> Router {
    Router::new()
        .method("echo", |_ctx: Context, params: Value| async move { Ok::<_, ErrorObject>(params) })
        .method("add", |_ctx: Context, (a, b): (i64, i64)| async move { Ok::<_, ErrorObject>(a + b) })
        .method("sleep_ms", |_ctx: Context, (ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, ErrorObject>(ms)
        })
        .method("whoami", |ctx: Context, (): ()| async move {
            Ok::<_, ErrorObject>(json!({"uid": ctx.peer().uid, "pid": ctx.peer().pid, "same_user": ctx.peer().same_user}))
        })
        .method("count", |ctx: Context, (n,): (u64,)| async move {
            // Pushes n notifications in order, after the reply is queued.
            let sink = ctx.sink();
            tokio::spawn(async move {
                for i in 0..n {
                    if sink.send("counter", json!({"i": i})).await.is_err() {
                        return;
                    }
                }
            });
            Ok::<_, ErrorObject>(n)
        })
        .method("shutdown", |ctx: Context, (): ()| async move {
            ctx.server().request_shutdown();
            Ok::<_, ErrorObject>(true)
        })
}

/// The body of a child-process server entry: serves [`test_router`] at
/// `$IPC_TEST_ADDR` until a client calls `shutdown` (or it is killed). Does
/// nothing when the variable is unset (the entry run as an ordinary test).
pub fn serve_test_router_from_env() {
    let Ok(address) = std::env::var("IPC_TEST_ADDR") else {
        return;
    };
    init_tracing();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = ipc::bind(&address).await.expect("child bind");
        let handle = ipc::Server::builder()
            .build()
            .serve(listener, test_router());
        handle.stopped().await;
        handle
            .shutdown(Duration::from_secs(5))
            .await
            .expect("child shutdown");
    });
}

/// A fresh private directory for sockets.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ipc-test-")
        .tempdir()
        .expect("temp dir")
}

/// Re-runs this test binary as a child process executing the ignored test
/// `entry`, with `env` set. Its stdout goes to null so its harness output
/// does not mix with ours.
pub fn spawn_child(entry: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = test_binary(entry);
    cmd.arg("--ignored")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn(&mut cmd)
}

/// Waits until something accepts connections at `address`.
pub async fn wait_for_server(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ipc::connect_transport(address).await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("server at {address} never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// `unix:<dir>/<name>`.
pub fn unix_address(dir: &Path, name: &str) -> (String, PathBuf) {
    let path = dir.join(name);
    (format!("unix:{}", path.display()), path)
}

/// Fails the test instead of hanging CI.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
