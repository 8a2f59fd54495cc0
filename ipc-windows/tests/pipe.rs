//! Named pipes end to end: a second process, squatters, busy instances,
//! identities and the security descriptor.
#![cfg(windows)]

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipc_core::{Address, Error, Listener};
use ipc_testkit::{spawn, test_binary};
use ipc_windows::{connect, connect_with, ConnectOptions, PipeAccess, PipeListener, PipeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::windows::named_pipe::ServerOptions;

/// Generous "does not hang" deadline for each test.
const DEADLINE: Duration = Duration::from_secs(60);
const CHILD_ENV: &str = "IPC_WINDOWS_TEST_CHILD_PIPE";
const PARENT_ENV: &str = "IPC_WINDOWS_TEST_PARENT_PID";

fn unique(tag: &str) -> Address {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("pipe:ipc-windows-test-{tag}-{}-{n}", std::process::id())
        .parse()
        .unwrap()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("the test did not finish within its deadline")
}

/// Re-runs this test binary as a child that executes only `test_name`.
fn spawn_child(test_name: &str, pipe: &Address) -> std::process::Child {
    let mut cmd = test_binary(test_name);
    cmd.env(CHILD_ENV, pipe.to_string())
        .env(PARENT_ENV, std::process::id().to_string())
        .stdout(Stdio::null());
    spawn(&mut cmd)
}

/// Message sizes the echo exchange uses: empty-adjacent, odd, larger than
/// the pipe buffer.
const SIZES: &[usize] = &[1, 7, 4096, 65_537, 1 << 20];

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Child side of `echo_across_processes`: does nothing unless started by it.
#[tokio::test]
async fn child_echo_client() {
    let Ok(addr) = std::env::var(CHILD_ENV) else {
        return;
    };
    let addr: Address = addr.parse().unwrap();
    let mut pipe = within(connect(&addr)).await.unwrap();
    let parent: u32 = std::env::var(PARENT_ENV).unwrap().parse().unwrap();
    assert_eq!(
        pipe.peer_info().pid,
        Some(parent),
        "server pid is the parent's"
    );
    assert!(pipe.peer_info().same_user, "{}", pipe.peer_info());
    for (i, &len) in SIZES.iter().enumerate() {
        let sent = payload(len, i as u8);
        pipe.write_all(&(len as u32).to_be_bytes()).await.unwrap();
        pipe.write_all(&sent).await.unwrap();
        let mut back = vec![0; len];
        within(pipe.read_exact(&mut back)).await.unwrap();
        assert!(back == sent, "echo of {len} bytes differs");
    }
    pipe.write_all(&0u32.to_be_bytes()).await.unwrap();
}

#[tokio::test]
async fn echo_across_processes() {
    let addr = unique("echo");
    let mut listener = PipeListener::bind(&addr).unwrap();
    let mut child = spawn_child("child_echo_client", &addr);
    let mut conn = within(listener.accept()).await.unwrap();
    assert_eq!(
        conn.peer_info().pid,
        Some(child.id()),
        "peer pid is the child's"
    );
    assert!(conn.peer_info().same_user, "{}", conn.peer_info());
    let mut echoed = 0;
    loop {
        let mut len = [0; 4];
        within(conn.read_exact(&mut len)).await.unwrap();
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            break;
        }
        let mut buf = vec![0; len];
        within(conn.read_exact(&mut buf)).await.unwrap();
        conn.write_all(&buf).await.unwrap();
        echoed += 1;
    }
    assert_eq!(echoed, SIZES.len());
    let status = within(tokio::task::spawn_blocking(move || child.wait()))
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "child failed: {status}");
}

#[tokio::test]
async fn peer_identity_on_both_sides() {
    let addr = unique("peer");
    let mut listener = PipeListener::bind(&addr).unwrap();
    let (server, client) = within(async { tokio::join!(listener.accept(), connect(&addr)) }).await;
    let (server, client) = (server.unwrap(), client.unwrap());
    let me = std::process::id();
    for peer in [server.peer_info(), client.peer_info()] {
        assert_eq!(peer.pid, Some(me));
        assert!(peer.same_user, "{peer}");
        let sid = peer.sid.as_deref().expect("the peer's SID is known");
        assert!(sid.starts_with("S-1-"), "{sid}");
        assert_eq!(peer.uid, None);
    }
    assert_eq!(server.peer_info().sid, client.peer_info().sid);
}

#[tokio::test]
async fn a_squatter_is_detected() {
    let addr = unique("squat");
    let path = ipc_windows::pipe_path(&addr).unwrap();
    // Another process got there first, with a pipe of its own.
    let squatter = ServerOptions::new().create(&path).unwrap();
    match PipeListener::bind(&addr) {
        Err(Error::AddressInUse { endpoint }) => assert_eq!(endpoint, path),
        other => panic!("expected AddressInUse, got {other:?}"),
    }
    drop(squatter);
    // Once the name is free it binds, and a second listener is refused.
    let mut first = PipeListener::bind(&addr).unwrap();
    assert!(matches!(
        PipeListener::bind(&addr),
        Err(Error::AddressInUse { .. })
    ));
    Listener::close(&mut first).unwrap();
    Listener::close(&mut first).unwrap();
    assert!(matches!(first.accept().await, Err(Error::Shutdown)));
    drop(first);
    PipeListener::bind(&addr).expect("the name is free after close");
}

#[tokio::test]
async fn missing_server_and_wrong_scheme_are_clear_errors() {
    let addr = unique("missing");
    match within(connect(&addr)).await {
        Err(Error::NotFound { endpoint }) => assert!(endpoint.starts_with(r"\\.\pipe\")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let unix: Address = "unix:/tmp/x.sock".parse().unwrap();
    let e = PipeListener::bind(&unix).unwrap_err().to_string();
    assert!(e.contains("pipe:name or local:name"), "{e}");
}

#[tokio::test]
async fn local_addresses_are_pipes() {
    let name = format!("ipc-windows-test-local-{}", std::process::id());
    let local: Address = format!("local:{name}").parse().unwrap();
    let pipe: Address = format!("pipe:{name}").parse().unwrap();
    let mut listener = PipeListener::bind(&local).unwrap();
    assert_eq!(listener.path(), format!(r"\\.\pipe\{name}"));
    let (server, client) = within(async { tokio::join!(listener.accept(), connect(&pipe)) }).await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0; 4];
    within(server.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn busy_pipe_retries_then_fails_clearly() {
    let addr = unique("busy");
    let mut listener = PipeListener::bind_with(&addr, &PipeOptions::new().backlog(1)).unwrap();
    // The only waiting instance is taken and not yet accepted.
    let _first = within(connect(&addr)).await.unwrap();
    let quick = ConnectOptions::new().busy_timeout(Duration::from_millis(200));
    let err = within(connect_with(&addr, &quick))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("busy"), "{err}");
    // A patient client gets in once the server accepts (which creates the
    // next instance before returning).
    let patient = ConnectOptions::new().busy_timeout(DEADLINE);
    let waiting = tokio::spawn({
        let addr = addr.clone();
        async move { connect_with(&addr, &patient).await }
    });
    let _a = within(listener.accept()).await.unwrap();
    let _b = within(listener.accept()).await.unwrap();
    within(waiting).await.unwrap().unwrap();
}

#[tokio::test]
async fn sequential_clients_never_find_the_pipe_busy() {
    let addr = unique("seq");
    let mut listener = PipeListener::bind(&addr).unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..50 {
            let mut conn = listener.accept().await.unwrap();
            let mut b = [0; 1];
            conn.read_exact(&mut b).await.unwrap();
            conn.write_all(&b).await.unwrap();
        }
    });
    let no_wait = ConnectOptions::new().busy_timeout(Duration::ZERO);
    within(async {
        for i in 0..50u8 {
            let mut c = connect_with(&addr, &no_wait).await.unwrap();
            c.write_all(&[i]).await.unwrap();
            let mut b = [0; 1];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i);
        }
    })
    .await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn descriptor_is_owner_only_unless_opened() {
    let addr = unique("dacl");
    let mut listener = PipeListener::bind(&addr).unwrap();
    // Our SID, as the server sees it in a connection from ourselves.
    let (server, _client) = within(async { tokio::join!(listener.accept(), connect(&addr)) }).await;
    let me = server.unwrap().peer_info().sid.clone().unwrap();
    // The instance now waiting was created after the first: it carries the
    // descriptor too.
    let dacl = listener.dacl().unwrap();
    assert!(
        dacl.contains(&format!(";;;{me})")),
        "owner ACE missing: {dacl}"
    );
    assert!(dacl.contains(";;;SY)"), "SYSTEM ACE missing: {dacl}");
    assert!(!dacl.contains(";;;WD)"), "Everyone must not appear: {dacl}");
    assert!(!dacl.contains(";;;BU)"), "Users must not appear: {dacl}");

    let open = PipeListener::bind_with(
        &unique("dacl-open"),
        &PipeOptions::new().access(PipeAccess::Everyone),
    )
    .unwrap();
    let dacl = open.dacl().unwrap();
    assert!(dacl.contains(";;;WD)"), "Everyone ACE missing: {dacl}");

    let err = PipeListener::bind_with(
        &unique("dacl-bad"),
        &PipeOptions::new().access(PipeAccess::Sids(vec!["S-1-5-)(A;;GA;;;WD".into()])),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("invalid SID"), "{err}");
}
