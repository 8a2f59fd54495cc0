//! Closing or dropping a pipe listener makes its name unreachable before it
//! returns, however busy it was, and leaves the connections it accepted
//! working. Repeated: a pipe instance with a pending connect is released by
//! the runtime, and a client must never reach one that is on its way out.
#![cfg(windows)]

use ipc_core::{Address, Error, Listener};
use std::time::Duration;

use ipc_windows::{ConnectOptions, PipeListener, PipeTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUNDS: usize = 25;

fn address(name: &str, n: usize) -> Address {
    Address::Pipe(format!(
        "ipc-windows-close-{}-{name}-{n}",
        std::process::id()
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn assert_not_found(addr: &Address, after: &str, round: usize) {
    match ipc_windows::connect(addr).await {
        Err(Error::NotFound { .. }) => {}
        Ok(t) => panic!("round {round}: connected to {addr} after {after}: {t:?}"),
        Err(e) => panic!(
            "round {round}: connecting to {addr} after {after}: want Error::NotFound, got {e:?} ({e})"
        ),
    }
}

/// Bytes go both ways on an accepted connection.
async fn exchange(client: &mut PipeTransport, server: &mut PipeTransport, what: &str) {
    client.write_all(b"ping").await.expect("client write");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.expect("server read");
    assert_eq!(&buf, b"ping", "{what}");
    server.write_all(b"pong").await.expect("server write");
    client.read_exact(&mut buf).await.expect("client read");
    assert_eq!(&buf, b"pong", "{what}");
}

async fn bind_and_connect(addr: &Address) -> (PipeListener, PipeTransport, PipeTransport) {
    let mut listener = PipeListener::bind(addr).expect("bind");
    let (client, server) = tokio::join!(ipc_windows::connect(addr), listener.accept());
    (listener, client.expect("connect"), server.expect("accept"))
}

/// Binds and serves one client, then stops the listener with `stop`: the
/// name is gone, every time.
async fn round(addr: &Address, round: usize, after: &str, stop: impl FnOnce(PipeListener)) {
    let (listener, mut client, mut server) = bind_and_connect(addr).await;
    exchange(&mut client, &mut server, "before closing").await;
    drop((client, server));
    stop(listener);
    assert_not_found(addr, after, round).await;
}

#[test]
fn close_makes_the_name_unreachable_every_time() {
    runtime().block_on(async {
        for n in 0..ROUNDS {
            round(&address("close", n), n, "close", |mut l| {
                Listener::close(&mut l).expect("close");
                Listener::close(&mut l).expect("second close");
            })
            .await;
        }
    });
}

#[test]
fn drop_makes_the_name_unreachable_every_time() {
    runtime().block_on(async {
        for n in 0..ROUNDS {
            round(&address("drop", n), n, "drop", drop).await;
        }
    });
}

/// A pipe's name lives as long as any of its instances, connected ones
/// included: after the listener closes, a new client is refused as busy (no
/// instance is free) until the accepted connections end, and those keep
/// working meanwhile.
#[test]
fn accepted_connections_outlive_the_listener() {
    runtime().block_on(async {
        let addr = address("outlive", 0);
        let (mut listener, mut client, mut server) = bind_and_connect(&addr).await;
        Listener::close(&mut listener).expect("close");
        let quick = ConnectOptions::new().busy_timeout(Duration::from_millis(100));
        match ipc_windows::connect_with(&addr, &quick).await {
            Ok(t) => panic!("connected to {addr} after close: {t:?}"),
            Err(Error::NotFound { .. }) => {}
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("busy") && text.contains("stopped listening"),
                    "a client refused by a closed listener is told why: {text}"
                );
            }
        }
        exchange(&mut client, &mut server, "after the listener closed").await;
        drop((client, server));
        assert_not_found(&addr, "the last connection ended", 0).await;
    });
}
