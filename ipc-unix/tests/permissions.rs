//! Who may reach a socket: its mode from the first moment, its group, the
//! umask not mattering, unsafe places refused, and other users kept out by
//! the file mode (or, when let in, seen as other users).
#![cfg(unix)]

mod util;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use ipc_core::{Address, AuthPolicy, Error, Listener, Transport};
use ipc_unix::{BindOptions, UnixListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use util::*;

fn addr(path: &Path) -> Address {
    Address::Unix(path.to_owned())
}

#[tokio::test]
async fn socket_is_0600_right_after_bind_and_nothing_else_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.sock");
    let listener = UnixListener::bind(&addr(&path)).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        rustix::process::geteuid().as_raw()
    );
    assert_eq!(listener.path(), Some(path.as_path()));
    // The private staging directory is gone; only the socket remains.
    assert_eq!(dir_entries(dir.path()), ["a.sock"]);
    // The listening socket answers at its final path.
    ipc_unix::connect(&addr(&path)).await.unwrap();
}

#[tokio::test]
async fn mode_0660_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.sock");
    // Root may give the socket to any group; others to their own.
    let gid = if is_root() {
        nobody().1
    } else {
        rustix::process::getegid().as_raw()
    };
    let opts = BindOptions::new().mode(0o660).group(gid);
    let _listener = UnixListener::bind_with(&addr(&path), &opts).unwrap();
    assert_eq!(mode_of(&path), 0o660);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
}

#[tokio::test]
async fn invalid_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o4700, 0o1600, 0o400, 0o060] {
        let path = dir.path().join("m.sock");
        let e = UnixListener::bind_with(&addr(&path), &BindOptions::new().mode(mode)).unwrap_err();
        assert!(e.to_string().contains("mode"), "{mode:o}: {e}");
        assert!(!path.exists());
    }
    assert!(dir_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn group_the_process_may_not_use_is_an_error() {
    if is_root() {
        eprintln!("skipped: root may give a socket to any group");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.sock");
    let mine = rustix::process::getgroups().unwrap();
    let other = (1..60000)
        .find(|g| {
            !mine.iter().any(|m| m.as_raw() == *g) && rustix::process::getegid().as_raw() != *g
        })
        .unwrap();
    let e = UnixListener::bind_with(&addr(&path), &BindOptions::new().mode(0o660).group(other))
        .unwrap_err();
    assert!(e.to_string().contains("group"), "{e}");
    assert!(dir_entries(dir.path()).is_empty());
}

/// The umask applies to `bind`; the listener must give the exact mode
/// anyway, without changing the process umask (which is shared by all
/// threads). A child process sets a permissive, then a restrictive umask.
#[test]
fn mode_does_not_depend_on_the_umask() {
    if let Some((role, arg)) = child_role() {
        let umask = u32::from_str_radix(&role["umask-".len()..], 8).unwrap();
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask as _));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _guard = rt.enter();
        let dir = Path::new(&arg);
        for (name, opts) in [
            ("d.sock", BindOptions::new()),
            ("g.sock", BindOptions::new().mode(0o660)),
        ] {
            let path = dir.join(name);
            let l = UnixListener::bind_with(&addr(&path), &opts).unwrap();
            report(format!("{name} {:o}", mode_of(&path)));
            drop(l);
        }
        let fifo = ipc_unix::fifo::create(dir.join("f.fifo"), 0o600).unwrap();
        report(format!("f.fifo {:o}", mode_of(fifo.path())));
        drop(fifo);
        let umask_now = rustix::process::umask(rustix::fs::Mode::empty());
        report(format!("umask {:03o}", umask_now.as_raw_mode()));
        return;
    }
    for umask in ["000", "777", "022"] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_self(
            "mode_does_not_depend_on_the_umask",
            &format!("umask-{umask}"),
            dir.path().to_str().unwrap(),
            None,
        );
        assert_eq!(child.next_report(), "d.sock 600", "umask {umask}");
        assert_eq!(child.next_report(), "g.sock 660", "umask {umask}");
        assert_eq!(child.next_report(), "f.fifo 600", "umask {umask}");
        assert_eq!(
            child.next_report(),
            format!("umask {umask}"),
            "the umask was changed"
        );
        child.wait_ok();
        assert!(
            dir_entries(dir.path()).is_empty(),
            "left behind: {:?}",
            dir_entries(dir.path())
        );
    }
}

#[tokio::test]
async fn symlink_at_the_path_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"precious").unwrap();
    let link = dir.path().join("l.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = UnixListener::bind(&addr(&link)).unwrap_err();
    assert!(matches!(e, Error::Insecure { .. }), "{e:?}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert_eq!(dir_entries(dir.path()), ["l.sock", "target"]);

    // A dangling link is refused too (bind would otherwise create its target).
    let dangling = dir.path().join("d.sock");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let e = UnixListener::bind(&addr(&dangling)).unwrap_err();
    assert!(matches!(e, Error::Insecure { .. }), "{e:?}");
    assert!(!dir.path().join("nowhere").exists());
}

#[tokio::test]
async fn world_writable_directory_without_sticky_bit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("w.sock");
    let e = UnixListener::bind(&addr(&path)).unwrap_err();
    assert!(matches!(e, Error::Insecure { .. }), "{e:?}");
    assert!(e.to_string().contains("sticky"), "{e}");
    assert!(dir_entries(dir.path()).is_empty());

    // With the sticky bit (as /tmp has) it is fine.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let _l = UnixListener::bind(&addr(&path)).unwrap();
    assert_eq!(mode_of(&path), 0o600);
}

#[tokio::test]
async fn path_too_long_is_reported_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("x".repeat(200));
    let e = UnixListener::bind(&addr(&long)).unwrap_err();
    match &e {
        Error::PathTooLong { len, max, .. } => {
            assert_eq!(*len, long.as_os_str().len());
            assert!(*max < *len && *max >= 90, "max {max}");
        }
        other => panic!("want PathTooLong, got {other:?}"),
    }
    assert!(e.to_string().contains("longer than"), "{e}");
    let e = ipc_unix::connect(&addr(&long)).await.unwrap_err();
    assert!(matches!(e, Error::PathTooLong { .. }), "{e:?}");
    assert!(dir_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/a.sock");
    let e = UnixListener::bind(&addr(&path)).unwrap_err();
    assert!(e.to_string().contains("create the directory first"), "{e}");
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test]
async fn abstract_sockets_refuse_a_mode_or_group() {
    let a = Address::UnixAbstract(unique("ipc-unix-mode"));
    for opts in [BindOptions::new().mode(0o600), BindOptions::new().group(0)] {
        let e = UnixListener::bind_with(&a, &opts).unwrap_err();
        assert!(matches!(e, Error::Insecure { .. }), "{e:?}");
        assert!(e.to_string().contains("auth policy"), "{e}");
    }
    // Without one it binds; the auth policy is what protects it.
    let l = UnixListener::bind(&a).unwrap();
    assert_eq!(l.path(), None);
}

// ---- Another user ---------------------------------------------------------

/// What a child running as `nobody` reports after trying to connect.
fn connect_as_child(test: &str, address: &Address, user: (u32, u32)) -> (ChildProc, String) {
    let mut child = spawn_self(test, "connect", &address.to_string(), Some(user));
    let line = child.next_report();
    (child, line)
}

/// The child side: connect, report the outcome and the server's identity,
/// then exchange a byte so the server sees a real peer.
async fn child_connect(address: &str) {
    let a: Address = address.parse().unwrap();
    match ipc_unix::connect(&a).await {
        Ok(mut t) => {
            let p = t.peer().clone();
            report(format!(
                "connected server-uid={} same_user={}",
                p.uid.unwrap(),
                p.same_user
            ));
            t.write_all(b"?").await.unwrap();
            let mut b = [0u8; 1];
            t.read_exact(&mut b).await.unwrap();
        }
        Err(e @ Error::PermissionDenied { .. }) => report(format!("denied {e}")),
        Err(e) => report(format!("error {e:?}")),
    }
}

#[tokio::test]
async fn another_user_is_refused_by_the_file_mode() {
    const TEST: &str = "another_user_is_refused_by_the_file_mode";
    if let Some((_, a)) = child_role() {
        return child_connect(&a).await;
    }
    if !is_root() {
        eprintln!("skipped: needs root to run a second process as another user");
        return;
    }
    let dir = public_tempdir();
    let path = dir.path().join("owner-only.sock");
    let a = addr(&path);
    let _listener = UnixListener::bind(&a).unwrap();
    let (mut child, line) = connect_as_child(TEST, &a, nobody());
    assert!(line.starts_with("denied"), "{line}");
    assert!(line.contains("permission denied"), "{line}");
    assert!(line.contains(&path.display().to_string()), "{line}");
    child.wait_ok();
}

#[tokio::test]
async fn another_user_let_in_by_mode_0666_is_seen_as_another_user() {
    const TEST: &str = "another_user_let_in_by_mode_0666_is_seen_as_another_user";
    if let Some((_, a)) = child_role() {
        return child_connect(&a).await;
    }
    if !is_root() {
        eprintln!("skipped: needs root to run a second process as another user");
        return;
    }
    let dir = public_tempdir();
    let path = dir.path().join("open.sock");
    let a = addr(&path);
    let mut listener = UnixListener::bind_with(&a, &BindOptions::new().mode(0o666)).unwrap();
    let (uid, gid) = nobody();
    let mut child = spawn_self(TEST, "connect", &a.to_string(), Some((uid, gid)));
    let mut conn = within("accept", listener.accept_unix()).await.unwrap();
    let line = child.next_report();
    assert_eq!(line, "connected server-uid=0 same_user=false");

    let peer = conn.peer().clone();
    assert_eq!(peer.uid, Some(uid));
    assert_eq!(peer.gid, Some(gid));
    assert_eq!(peer.pid, Some(child.child.id()));
    assert!(!peer.same_user);
    assert!(!AuthPolicy::SameUser.allows(&peer));
    assert!(AuthPolicy::uids([uid]).allows(&peer));

    let mut b = [0u8; 1];
    within("read", conn.read_exact(&mut b)).await.unwrap();
    conn.write_all(b"!").await.unwrap();
    child.wait_ok();
    listener.close().unwrap();
}

#[tokio::test]
async fn group_mode_admits_members_and_refuses_others() {
    const TEST: &str = "group_mode_admits_members_and_refuses_others";
    if let Some((_, a)) = child_role() {
        return child_connect(&a).await;
    }
    if !is_root() {
        eprintln!("skipped: needs root to run a second process as another user");
        return;
    }
    let dir = public_tempdir();
    let path = dir.path().join("group.sock");
    let a = addr(&path);
    let (uid, gid) = nobody();
    let mut listener =
        UnixListener::bind_with(&a, &BindOptions::new().mode(0o660).group(gid)).unwrap();

    // In the group: let in.
    let mut member = spawn_self(TEST, "connect", &a.to_string(), Some((uid, gid)));
    let mut conn = within("accept", listener.accept_unix()).await.unwrap();
    assert_eq!(
        member.next_report(),
        "connected server-uid=0 same_user=false"
    );
    assert_eq!(conn.peer().gid, Some(gid));
    let mut b = [0u8; 1];
    within("read", conn.read_exact(&mut b)).await.unwrap();
    conn.write_all(b"!").await.unwrap();
    member.wait_ok();

    // Same user, another group: refused by the mode.
    let other_gid = gid.wrapping_sub(1).max(1);
    let (mut outsider, line) = connect_as_child(TEST, &a, (uid, other_gid));
    assert!(line.starts_with("denied"), "{line}");
    outsider.wait_ok();
}
