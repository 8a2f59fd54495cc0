//! What a client meets at a pipe whose listener has closed while connections
//! it accepted stay open. (That closing or dropping a listener makes its
//! name unreachable once its connections are gone is in the conformance
//! suite.)
#![cfg(windows)]

use std::time::Duration;

use ipc_core::{Address, Error, Listener};
use ipc_windows::{ConnectOptions, PipeListener, PipeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A pipe's name lives as long as any of its instances, connected ones
/// included: after the listener closes, a new client is refused as busy (no
/// instance is free), told both possible causes, and never connected, until
/// the accepted connections end; those keep working meanwhile.
#[test]
fn a_closed_listener_with_open_connections_refuses_clients_as_busy() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let addr = Address::Pipe(format!("ipc-windows-close-{}", std::process::id()));
        let mut listener = PipeListener::bind(&addr).expect("bind");
        let (client, server) = tokio::join!(ipc_windows::connect(&addr), listener.accept());
        let (mut client, mut server) = (client.expect("connect"), server.expect("accept"));
        Listener::close(&mut listener).expect("close");

        let quick = ConnectOptions::new().busy_timeout(Duration::from_millis(100));
        match ipc_windows::connect_with(&addr, &quick).await {
            Ok(t) => panic!("connected to {addr} after close: {t:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("busy") && text.contains("stopped listening"),
                    "a client refused by a closed listener is told why: {text}"
                );
            }
        }

        client.write_all(b"ping").await.expect("client write");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.expect("server read");
        assert_eq!(&buf, b"ping");
        drop((client, server));
        match ipc_windows::connect(&addr).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("connecting once the last connection ended: {other:?}"),
        }
    });
}

/// Serves a client at a fresh name, then drops the connection and closes
/// the listener, and binds the name again at once, `ROUNDS` times: the
/// instances on their way out are given time to go (a plain `bind` there,
/// with nothing awaited in between, finds them and fails). A live server
/// still keeps its name.
#[test]
fn rebinding_right_after_close() {
    const ROUNDS: usize = 25;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        for round in 0..ROUNDS {
            let addr = Address::Pipe(format!("ipc-windows-rebind-{}-{round}", std::process::id()));
            let mut listener = PipeListener::bind(&addr).expect("bind");
            let (client, server) = tokio::join!(ipc_windows::connect(&addr), listener.accept());
            let (mut client, mut server) = (client.expect("connect"), server.expect("accept"));
            client.write_all(b"ping").await.expect("client write");
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).await.expect("server read");
            drop((client, server));
            Listener::close(&mut listener).expect("close");
            let again = PipeListener::bind_when_released(&addr, &PipeOptions::new()).await;
            let again = again.unwrap_or_else(|e| {
                panic!("round {round}: binding {addr} right after close: {e:?} ({e})")
            });
            match PipeListener::bind_when_released(&addr, &PipeOptions::new()).await {
                Err(Error::AddressInUse { .. }) => {}
                other => panic!("round {round}: a second bind of the live {addr}: {other:?}"),
            }
            drop(again);
        }
    });
}
