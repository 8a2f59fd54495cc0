//! Server and Client over in-memory byte pipes: the protocol logic without
//! an OS. Real sockets and processes are exercised by the backends' and the
//! facade's tests.

use std::time::Duration;

use ipc_core::jsonrpc::ErrorObject;
use ipc_core::memory::{self, MemoryConnector, MemoryListener};
use ipc_core::{AuthPolicy, Client, Error, PeerInfo, Router, Server, StreamTransport};
use serde_json::json;

/// The in-memory listener, plus a client builder with a test-sized timeout.
struct Net {
    connector: MemoryConnector,
}

impl Net {
    fn new() -> (Net, MemoryListener) {
        let (listener, connector) = memory::listener("memory");
        (Net { connector }, listener)
    }

    async fn connect(&self, client_identity: PeerInfo) -> Client {
        let transport = self.connector.connect_as(client_identity).await.unwrap();
        Client::builder()
            .request_timeout(Some(Duration::from_secs(10)))
            .build(transport)
    }
}

fn router() -> Router {
    Router::new()
        .method("add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, ErrorObject>(a + b)
        })
        .method("fail", |_ctx, (): ()| async move {
            Err::<(), _>(ErrorObject::new(-32050, "custom failure").with_data("details"))
        })
        .method("peer_uid", |ctx: ipc_core::Context, (): ()| async move {
            Ok::<_, ErrorObject>(ctx.peer().uid)
        })
}

#[tokio::test]
async fn requests_errors_and_identity() {
    let (net, listener) = Net::new();
    let handle = Server::builder().build().serve(listener, router());
    let client = net.connect(PeerInfo::unix(1000, 1000, Some(7), true)).await;
    assert_eq!(client.request::<i64>("add", (2, 3)).await.unwrap(), 5);
    assert_eq!(
        client.request::<Option<u32>>("peer_uid", ()).await.unwrap(),
        Some(1000)
    );
    match client.request::<()>("fail", ()).await {
        Err(Error::Rpc(e)) => {
            assert_eq!(e.code, -32050);
            assert_eq!(e.data, Some(json!("details")));
        }
        other => panic!("{other:?}"),
    }
    match client.request::<i64>("add", ("x",)).await {
        Err(Error::Rpc(e)) => assert_eq!(e.code, ErrorObject::INVALID_PARAMS),
        other => panic!("{other:?}"),
    }
    handle.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn refused_peer_gets_a_clear_error() {
    let (net, listener) = Net::new();
    let handle = Server::builder()
        .auth(AuthPolicy::SameUser)
        .build()
        .serve(listener, router());
    let stranger = net
        .connect(PeerInfo::unix(4242, 4242, Some(9), false))
        .await;
    match stranger.request::<i64>("add", (1, 1)).await {
        Err(Error::Rpc(e)) => {
            assert_eq!(e.code, ErrorObject::UNAUTHORIZED);
            let data = e.data.unwrap().to_string();
            assert!(
                data.contains("uid=4242") && data.contains("SameUser"),
                "{data}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(handle.connections().is_empty());
    handle.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn connection_limit_and_request_timeout() {
    let (net, listener) = Net::new();
    let handle = Server::builder()
        .max_connections(1)
        .build()
        .serve(listener, router());
    let first = net.connect(PeerInfo::unix(0, 0, None, true)).await;
    assert_eq!(first.request::<i64>("add", (1, 1)).await.unwrap(), 2);
    let second = net.connect(PeerInfo::unix(0, 0, None, true)).await;
    let r = second.request::<i64>("add", (1, 1)).await;
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
    assert_eq!(first.request::<i64>("add", (2, 2)).await.unwrap(), 4);
    handle.shutdown(Duration::from_secs(1)).await.unwrap();

    // A server that never answers: the request times out, and leaves nothing behind.
    let (a, _b) = tokio::io::duplex(1024);
    let client = Client::builder()
        .request_timeout(Some(Duration::from_millis(50)))
        .build(StreamTransport::new(a, PeerInfo::default()));
    let r = client.request::<i64>("add", (1, 1)).await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let (net, listener) = Net::new();
    let handle = Server::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .frame_timeout(Duration::from_millis(100))
        .build()
        .serve(listener, router());
    let idle = net.connect(PeerInfo::unix(0, 0, None, true)).await;
    assert_eq!(idle.request::<i64>("add", (1, 1)).await.unwrap(), 2);
    tokio::time::timeout(Duration::from_secs(5), idle.closed())
        .await
        .expect("idle connection closed");

    // A sender that starts a frame and trickles it.
    let mut a = net.connector.connect().await.unwrap();
    let trickle = async {
        a.write_all(&[0, 0, 0, 100]).await?;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            a.write_all(b"x").await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let r = tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("server closed the slow sender");
    assert!(r.is_err(), "writing to the closed connection fails");
    handle.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn reconnecting_client_continues_after_the_connection_drops() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (net, listener) = Net::new();
    let handle = Server::builder()
        .idle_timeout(Some(Duration::from_millis(50)))
        .build()
        .serve(listener, router());
    let connector = net.connector.clone();
    let connects = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connects);
    let client = Client::builder()
        .request_timeout(Some(Duration::from_secs(5)))
        .reconnect(ipc_core::Reconnect::default())
        .connect_with(move || {
            let connector = connector.clone();
            counted.fetch_add(1, Ordering::SeqCst);
            async move { connector.connect().await }
        })
        .await
        .unwrap();
    for round in 0..3 {
        assert_eq!(
            client.request::<i64>("add", (round, 1)).await.unwrap(),
            round + 1
        );
        // The server drops the idle connection; the client reconnects.
        tokio::time::timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap();
    }
    assert_eq!(client.request::<i64>("add", (1, 1)).await.unwrap(), 2);
    assert!(
        connects.load(Ordering::SeqCst) >= 4,
        "a new connection per drop"
    );
    handle.shutdown(Duration::from_secs(1)).await.unwrap();
}
