//! Closing or dropping a listener makes its address unreachable before it
//! returns, however busy the endpoint was, and leaves the connections it
//! accepted working. Repeated, because the endpoint's accept machinery can
//! see its parts torn down in either order.
#![cfg(any(unix, windows))]

use std::path::Path;

use ipc_core::{Address, Error, Listener};
use ipc_shm::{ShmListener, ShmOptions, ShmTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUNDS: usize = 25;

fn address(dir: &Path, name: &str, n: usize) -> Address {
    let s = if cfg!(windows) {
        format!("shm:ipc-shm-close-{}-{name}-{n}", std::process::id())
    } else {
        format!("shm:{}", dir.join(format!("{name}-{n}.sock")).display())
    };
    s.parse().expect("a valid shm address")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn assert_unreachable(addr: &Address, after: &str, round: usize) {
    match ShmTransport::connect(addr, &ShmOptions::new()).await {
        Err(Error::NotFound { .. }) => {}
        Ok(t) => panic!("round {round}: connected to {addr} after {after}: {t:?}"),
        Err(e) => panic!(
            "round {round}: connecting to {addr} after {after}: want Error::NotFound, got {e:?} ({e})"
        ),
    }
}

/// Binds, accepts one client, then stops the listener with `stop`; checks
/// that nobody can connect any more and that the accepted connection still
/// carries bytes both ways.
async fn round(addr: &Address, round: usize, after: &str, stop: impl FnOnce(ShmListener)) {
    let mut listener = ShmListener::bind(addr).expect("bind");
    let mut client = ShmTransport::connect(addr, &ShmOptions::new())
        .await
        .expect("connect while bound");
    let mut server = listener.accept_shm().await.expect("accept");
    stop(listener);
    assert_unreachable(addr, after, round).await;

    client.write_all(b"ping").await.expect("client write");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.expect("server read");
    assert_eq!(
        &buf, b"ping",
        "round {round}: the accepted connection after {after}"
    );
    server.write_all(b"pong").await.expect("server write");
    client.read_exact(&mut buf).await.expect("client read");
    assert_eq!(
        &buf, b"pong",
        "round {round}: the accepted connection after {after}"
    );
}

#[test]
fn close_makes_the_address_unreachable_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        for n in 0..ROUNDS {
            let addr = address(dir.path(), "close", n);
            round(&addr, n, "close", |mut l| {
                l.close().expect("close");
                // Closing twice is harmless.
                l.close().expect("second close");
            })
            .await;
        }
    });
}

#[test]
fn drop_makes_the_address_unreachable_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        for n in 0..ROUNDS {
            let addr = address(dir.path(), "drop", n);
            round(&addr, n, "drop", drop).await;
        }
    });
}
