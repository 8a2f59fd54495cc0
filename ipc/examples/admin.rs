//! An admin channel for a long-running daemon, across two processes.
//!
//! ```text
//! cargo run --example admin                    # demo: starts a server process, calls it, shuts it down
//! cargo run --example admin -- serve ADDRESS   # run only the server
//! cargo run --example admin -- call ADDRESS    # run only the client against a running server
//! cargo run --example admin -- demo ADDRESS    # the demo on another address, e.g. pipe:name on Windows
//! ```
//!
//! The server offers `node_info`, `peers`, `echo`, `heartbeat_subscribe`
//! (then `heartbeat` notifications every 200 ms) and `shutdown`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use ipc::jsonrpc::ErrorObject;
use ipc::{Context, Router, Server};
use serde_json::{json, Value};

fn router(started: Instant, address: String) -> Router {
    let address = Arc::new(address);
    Router::new()
        .method("node_info", move |_ctx: Context, (): ()| {
            let address = Arc::clone(&address);
            async move {
                Ok::<_, ErrorObject>(json!({
                    "name": "example-node",
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": std::process::id(),
                    "uptime_ms": started.elapsed().as_millis() as u64,
                    "address": *address,
                }))
            }
        })
        .method("peers", |ctx: Context, (): ()| async move {
            Ok::<_, ErrorObject>(ctx.server().connections())
        })
        .method("echo", |_ctx: Context, params: Value| async move { Ok::<_, ErrorObject>(params) })
        .method("heartbeat_subscribe", move |ctx: Context, (): ()| async move {
            let sink = ctx.sink();
            let id = format!("hb-{}", ctx.connection_id());
            let sub = id.clone();
            tokio::spawn(async move {
                let mut seq = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        _ = sink.closed() => break,
                        _ = tick.tick() => {}
                    }
                    seq += 1;
                    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    let beat = json!({"subscription": sub, "seq": seq, "unix_ms": now.as_millis() as u64});
                    if sink.notify("heartbeat", beat).is_err() {
                        break;
                    }
                }
            });
            Ok::<_, ErrorObject>(id)
        })
        .method("shutdown", |ctx: Context, (): ()| async move {
            tracing::info!(peer = %ctx.peer(), "shutdown requested");
            ctx.server().request_shutdown();
            Ok::<_, ErrorObject>("shutting down")
        })
}

async fn serve(address: &str) -> ipc::Result<()> {
    let listener = ipc::bind(address).await?;
    let handle = Server::builder()
        .build()
        .serve(listener, router(Instant::now(), address.to_owned()));
    println!(
        "[server pid {}] listening on {}",
        std::process::id(),
        handle.local_addr()
    );
    tokio::select! {
        _ = handle.stopped() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    handle.shutdown(Duration::from_secs(5)).await?;
    println!(
        "[server pid {}] stopped; endpoint removed",
        std::process::id()
    );
    Ok(())
}

async fn call(address: &str) -> ipc::Result<()> {
    let client = ipc::connect(address).await?;
    println!(
        "[client pid {}] connected to {address}; server identity {}",
        std::process::id(),
        client.peer()
    );

    let info: Value = client.request("node_info", ()).await?;
    println!("node_info  -> {info}");
    let echoed: Value = client.request("echo", json!({"hello": "world"})).await?;
    println!("echo       -> {echoed}");

    let other = ipc::connect(address).await?;
    let peers: Value = client.request("peers", ()).await?;
    println!("peers      -> {peers}");
    drop(other);

    let mut beats = client
        .subscribe("heartbeat_subscribe", (), "heartbeat")
        .await?;
    println!("subscribed -> {}", beats.result());
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(2), beats.next()).await {
            Ok(Some(n)) => println!("heartbeat  <- {}", n.params.unwrap_or(Value::Null)),
            _ => println!("heartbeat  <- (none)"),
        }
    }

    match client.request::<Value>("no_such_method", ()).await {
        Err(ipc::Error::Rpc(e)) => println!("no_such_method -> error {} {}", e.code, e.message),
        other => println!("no_such_method -> unexpected {other:?}"),
    }

    let bye: String = client.request("shutdown", ()).await?;
    println!("shutdown   -> {bye}");
    Ok(())
}

fn demo(address: Option<&str>) -> ipc::Result<()> {
    // A private directory for the socket on Unix; a named pipe on Windows.
    let dir = std::env::temp_dir().join(format!("ipc-admin-demo-{}", std::process::id()));
    let address = match address {
        Some(a) => a.to_owned(),
        None if cfg!(unix) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| ipc::Error::io("creating the demo directory", e))?;
            format!("unix:{}", dir.join("admin.sock").display())
        }
        None => format!("local:ipc-admin-demo-{}", std::process::id()),
    };
    let exe = std::env::current_exe().map_err(|e| ipc::Error::io("finding this executable", e))?;
    let mut server = Command::new(exe)
        .args(["serve", &address])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| ipc::Error::io("starting the server process", e))?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| ipc::Error::io("starting tokio", e))?;
    let result = runtime.block_on(async {
        // Wait for the server process to bind.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ipc::connect_transport(&address).await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        call(&address).await
    });
    let status = server
        .wait()
        .map_err(|e| ipc::Error::io("waiting for the server", e))?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("[demo] server process exited with {status}");
    result?;
    if status.success() {
        Ok(())
    } else {
        Err(ipc::Error::Protocol(format!(
            "the server process failed ({status})"
        )))
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [] => demo(None),
        [cmd, address] if cmd == "demo" => demo(Some(address)),
        [cmd, address] if cmd == "serve" => tokio_main(serve(address)),
        [cmd, address] if cmd == "call" => tokio_main(call(address)),
        _ => {
            eprintln!("usage: admin [serve ADDRESS | call ADDRESS | demo ADDRESS]   (no arguments: run the two-process demo)");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn tokio_main<F: std::future::Future<Output = ipc::Result<()>>>(f: F) -> ipc::Result<()> {
    tokio::runtime::Runtime::new()
        .map_err(|e| ipc::Error::io("starting tokio", e))?
        .block_on(f)
}
