//! Who owns a socket path: a live server keeps it, a dead server's stale
//! socket is replaced, what is not a socket is never deleted, and a listener
//! removes only its own file.
#![cfg(unix)]

mod util;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use ipc_core::{Address, Error, Listener, Transport};
use ipc_unix::UnixListener;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use util::*;

fn addr(path: &Path) -> Address {
    Address::Unix(path.to_owned())
}

fn ino(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

/// Talks to the server at `a` to prove it is the one that accepts.
async fn ping(listener: &mut UnixListener, a: &Address) {
    let (client, server) = within("connect+accept", async {
        tokio::join!(ipc_unix::connect(a), listener.accept_unix())
    })
    .await;
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    client.write_all(b"p").await.unwrap();
    let mut b = [0u8; 1];
    within("read", server.read_exact(&mut b)).await.unwrap();
    assert_eq!(&b, b"p");
}

#[test]
fn stale_socket_is_replaced_after_its_server_is_killed() {
    const TEST: &str = "stale_socket_is_replaced_after_its_server_is_killed";
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Some((_, path)) = child_role() {
        let _guard = rt.enter();
        let _l = UnixListener::bind(&addr(Path::new(&path))).unwrap();
        report("listening");
        wait_for_parent();
        return;
    }
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.sock");
        let a = addr(&path);
        let mut child = spawn_self(TEST, "server", path.to_str().unwrap(), None);
        assert_eq!(child.next_report(), "listening");

        // While the child lives, its socket is in use.
        let e = UnixListener::bind(&a).unwrap_err();
        assert!(matches!(e, Error::AddressInUse { .. }), "{e:?}");
        assert!(e.to_string().contains("in use"), "{e}");

        // SIGKILL: no chance to clean up; the file stays, stale.
        child.child.kill().unwrap();
        child.child.wait().unwrap();
        let old = ino(&path);
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        let e = ipc_unix::connect(&a).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("no server is listening"), "{e}");

        // A new server replaces the stale socket and serves.
        let mut listener = UnixListener::bind(&a).unwrap();
        assert_ne!(ino(&path), old, "the stale socket was not replaced");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(dir_entries(dir.path()), ["node.sock"]);
        ping(&mut listener, &a).await;
    });
}

#[tokio::test]
async fn second_bind_on_a_live_path_is_address_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sock");
    let a = addr(&path);
    let mut first = UnixListener::bind(&a).unwrap();
    let before = ino(&path);
    let e = UnixListener::bind(&a).unwrap_err();
    assert!(matches!(e, Error::AddressInUse { .. }), "{e:?}");
    assert!(e.to_string().contains("in use by a live server"), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    // The live server's socket is untouched and still serves.
    assert_eq!(ino(&path), before);
    assert_eq!(dir_entries(dir.path()), ["live.sock"]);
    // The second bind's probe shows up as a connection that closes at once.
    let mut probe = within("accept the probe", first.accept_unix())
        .await
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(probe.read_to_end(&mut rest).await.unwrap(), 0);
    ping(&mut first, &a).await;
}

#[tokio::test]
async fn paths_that_are_not_sockets_are_never_deleted() {
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("data.sock");
    std::fs::write(&file, b"keep me").unwrap();
    let e = UnixListener::bind(&addr(&file)).unwrap_err();
    assert!(matches!(e, Error::NotASocket { .. }), "{e:?}");
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    let subdir = dir.path().join("dir.sock");
    std::fs::create_dir(&subdir).unwrap();
    std::fs::write(subdir.join("inside"), b"x").unwrap();
    let e = UnixListener::bind(&addr(&subdir)).unwrap_err();
    assert!(matches!(e, Error::NotASocket { .. }), "{e:?}");
    assert!(subdir.join("inside").exists());

    let fifo = dir.path().join("fifo.sock");
    let f = ipc_unix::fifo::create(&fifo, 0o600).unwrap();
    let e = UnixListener::bind(&addr(&fifo)).unwrap_err();
    assert!(matches!(e, Error::NotASocket { .. }), "{e:?}");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // Connecting to a regular file says what it is.
    let e = ipc_unix::connect(&addr(&file)).await.unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");

    // Nothing else was created or removed.
    assert_eq!(
        dir_entries(dir.path()),
        ["data.sock", "dir.sock", "fifo.sock"]
    );
    drop(f);
}

#[tokio::test]
async fn drop_removes_only_its_own_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sock");
    let a = addr(&path);
    let first = UnixListener::bind(&a).unwrap();

    // Someone removes the first server's file and a second server binds the
    // path (as an operator might while the first is shutting down).
    std::fs::remove_file(&path).unwrap();
    let mut second = UnixListener::bind(&a).unwrap();
    let seconds = ino(&path);

    drop(first);
    assert_eq!(
        ino(&path),
        seconds,
        "the first listener deleted the second's socket"
    );
    ping(&mut second, &a).await;

    drop(second);
    assert!(!path.exists());
    assert!(dir_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn close_removes_the_file_is_idempotent_and_stops_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let a = addr(&path);
    let mut l = UnixListener::bind(&a).unwrap();
    l.close().unwrap();
    assert!(!path.exists());
    l.close().unwrap();
    assert!(matches!(
        l.accept_unix().await.unwrap_err(),
        Error::Shutdown
    ));
    let e = ipc_unix::connect(&a).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

/// Several servers start at once on a path holding a stale socket: exactly
/// one wins, the others report the address in use, and the winner's socket
/// is the one at the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_binders_on_a_stale_path_leave_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.sock");
    let a = addr(&path);
    for round in 0..10 {
        // A stale socket: bound, then closed without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let binders: Vec<_> = (0..6)
            .map(|_| {
                let a = a.clone();
                tokio::task::spawn_blocking(move || UnixListener::bind(&a))
            })
            .collect();
        let mut winners = Vec::new();
        for b in binders {
            match b.await.unwrap() {
                Ok(l) => winners.push(l),
                Err(Error::AddressInUse { .. }) => {}
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let mut winner = winners.pop().unwrap();
        // The losers' probes may be queued first; drain them.
        let client = async {
            let mut c = ipc_unix::connect(&a).await.unwrap();
            c.write_all(b"w").await.unwrap();
            c
        };
        let server = async {
            loop {
                let mut s = winner.accept_unix().await.unwrap();
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    return b;
                }
            }
        };
        let (_c, b) = within("reach the winner", async { tokio::join!(client, server) }).await;
        assert_eq!(&b, b"w");
        assert_eq!(dir_entries(dir.path()), ["race.sock"], "round {round}");
        drop(winner);
        assert!(!path.exists());
    }
}

#[tokio::test]
async fn connect_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = addr(&dir.path().join("missing.sock"));
    let e = ipc_unix::connect(&missing).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.sock"), "{e}");

    let e = ipc_unix::connect(&"pipe:x".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidAddress { .. }), "{e:?}");
    assert!(e.to_string().contains("unix:"), "{e}");
}

#[tokio::test]
async fn local_names_map_to_the_local_socket_path() {
    let name = unique("ipc-unix-local");
    let a: Address = format!("local:{name}").parse().unwrap();
    let mut l = UnixListener::bind(&a).unwrap();
    let path = Address::local_socket_path(&name);
    assert_eq!(l.path(), Some(path.as_path()));
    assert_eq!(l.local_addr(), &a);
    assert_eq!(mode_of(&path), 0o600);
    ping(&mut l, &a).await;
    let e = UnixListener::bind(&a).unwrap_err();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    drop(l);
    assert!(!path.exists());
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test]
async fn abstract_names_are_exclusive_and_carry_credentials() {
    let a = Address::UnixAbstract(unique("ipc-unix-abstract"));
    let mut l = UnixListener::bind(&a).unwrap();
    let e = UnixListener::bind(&a).unwrap_err();
    assert!(matches!(e, Error::AddressInUse { .. }), "{e:?}");
    let (client, server) = within("connect+accept", async {
        tokio::join!(ipc_unix::connect(&a), l.accept_unix())
    })
    .await;
    let (client, server) = (client.unwrap(), server.unwrap());
    assert_eq!(server.peer().pid, Some(std::process::id()));
    assert_eq!(client.peer().uid, Some(rustix::process::geteuid().as_raw()));
    drop(l);
    let e = ipc_unix::connect(&a).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn transports_from_existing_streams_read_credentials() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let info = ipc_unix::peer_info(&a).unwrap();
    assert_eq!(info.pid, Some(std::process::id()));
    assert_eq!(info.uid, Some(rustix::process::geteuid().as_raw()));
    assert_eq!(info.gid, Some(rustix::process::getegid().as_raw()));
    assert!(info.same_user);
    let mut a = ipc_unix::UnixTransport::from_stream(a).unwrap();
    let mut b = ipc_unix::UnixTransport::from_stream(b).unwrap();
    assert_eq!(a.peer(), &info);
    // Vectored writes go through.
    let bufs = [std::io::IoSlice::new(b"ab"), std::io::IoSlice::new(b"cd")];
    let n = a.write_vectored(&bufs).await.unwrap();
    assert!(a.is_write_vectored());
    let mut got = vec![0u8; n];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, &b"abcd"[..n]);
    let s = b.into_stream();
    assert!(s.peer_cred().is_ok());
}

#[tokio::test]
async fn a_full_accept_queue_is_reported_and_a_waiting_client_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let a = addr(&dir.path().join("busy.sock"));
    let mut l = UnixListener::bind_with(&a, &ipc_unix::BindOptions::new().backlog(1)).unwrap();
    // Fill the queue without accepting.
    let mut held = Vec::new();
    let e = loop {
        match within("connect", ipc_unix::connect(&a)).await {
            Ok(c) => {
                held.push(c);
                assert!(held.len() < 64, "a backlog of 1 took 64 clients");
            }
            Err(e) => break e,
        }
    };
    assert!(e.to_string().contains("accept queue"), "{e}");
    // A client that arrives while the queue is full waits for room.
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { ipc_unix::connect(&a).await }
    });
    tokio::task::yield_now().await;
    let _first = within("accept", l.accept_unix()).await.unwrap();
    within("waiting client", waiting).await.unwrap().unwrap();
}
