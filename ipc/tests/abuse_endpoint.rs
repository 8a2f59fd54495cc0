//! Hostile file-system setups around an endpoint, through the facade.
//!
//! The Unix backend's own tests cover the socket mode from the first moment
//! and under any umask, other users refused by the mode, symlinks to files
//! and dangling symlinks, regular files, directories and FIFOs at the path,
//! and world-writable directories without the sticky bit
//! (`ipc-unix/tests/{permissions,endpoint}.rs`); the facade's tests cover
//! another user refused by the mode and by the same-user policy
//! (`ipc/tests/rpc_unix.rs`). These add what an attacker sharing the
//! directory would try next: a link to a live or dead server's socket, and
//! an unsafe runtime directory behind a `local:` name.
#![cfg(unix)]

mod abuse_support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use abuse_support::*;
use ipc::{Error, Server};

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .unwrap()
        .file_type()
        .is_symlink()
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .unwrap()
        .file_type()
        .is_socket()
}

#[test]
#[ignore = "child-process entry, run by the other tests"]
fn child_abuse_server() {
    run_child_server();
}

/// A link planted at the path, pointing at a live server's socket: binding
/// through it is refused with an error naming the link, the link and the
/// socket stay, and the live server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_live_servers_socket_is_refused_and_harms_nothing() {
    init_tracing();
    let dir = temp_dir();
    let (real, real_path) = unix_address(dir.path(), "real.sock");
    let listener = ipc::bind(&real).await.unwrap();
    let handle = Server::builder().build().serve(listener, abuse_router());
    let (link, link_path) = unix_address(dir.path(), "link.sock");
    std::os::unix::fs::symlink(&real_path, &link_path).unwrap();

    let err = ipc::bind(&link).await.unwrap_err();
    assert!(matches!(err, Error::Insecure { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("symbolic link") && msg.contains("link.sock"),
        "{msg}"
    );
    assert!(is_symlink(&link_path) && is_socket(&real_path));
    assert_eq!(entries(dir.path()), ["link.sock", "real.sock"]);
    let client = ipc::connect(&real).await.unwrap();
    assert_eq!(client.request::<i64>("add", (1, 2)).await.unwrap(), 3);
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A link to a dead server's socket (a stale file that a bind on the real
/// path would replace) is still never followed: the bind through the link
/// is refused and neither the link nor the stale socket is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_stale_socket_is_refused_and_nothing_is_removed() {
    init_tracing();
    let dir = temp_dir();
    let (real, real_path) = unix_address(dir.path(), "dead.sock");
    let mut server = start_server("child_abuse_server", &real, &ServerSpec::default(), None).await;
    server.kill();
    assert!(is_socket(&real_path), "SIGKILL leaves the socket file");
    let (link, link_path) = unix_address(dir.path(), "link.sock");
    std::os::unix::fs::symlink(&real_path, &link_path).unwrap();

    let err = ipc::bind(&link).await.unwrap_err();
    assert!(matches!(err, Error::Insecure { .. }), "{err:?}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(is_symlink(&link_path) && is_socket(&real_path));
    assert_eq!(entries(dir.path()), ["dead.sock", "link.sock"]);
}

/// Child entry: binds `local:$IPC_ABUSE_ADDR` (with `XDG_RUNTIME_DIR` set by
/// the parent) and exits 0 if refused as insecure with a clear message,
/// 1 otherwise.
#[test]
#[ignore = "child-process entry, run by the other tests"]
fn child_bind_local() {
    let Ok(name) = std::env::var(ADDR_VAR) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async move {
        match ipc::bind(&format!("local:{name}")).await {
            Err(e @ Error::Insecure { .. }) if e.to_string().contains("sticky") => {
                eprintln!("refused: {e}");
                0
            }
            Err(e) => {
                eprintln!("unexpected error: {e:?}");
                1
            }
            Ok(_) => {
                eprintln!("bound in an unsafe directory");
                1
            }
        }
    });
    std::process::exit(code);
}

/// `local:name` maps to a socket in `$XDG_RUNTIME_DIR`; when that directory
/// is writable by everyone and has no sticky bit (anyone could swap the
/// socket), the bind is refused with a clear error and nothing is created.
#[test]
fn a_local_name_in_an_unsafe_runtime_dir_is_refused() {
    let dir = temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut child = spawn_entry(
        "child_bind_local",
        &[
            (ADDR_VAR, "abuse-local"),
            ("XDG_RUNTIME_DIR", dir.path().to_str().unwrap()),
        ],
        None,
    );
    let status = child.child.wait().unwrap();
    assert!(
        status.success(),
        "the bind was not refused as insecure ({status})"
    );
    assert!(
        entries(dir.path()).is_empty(),
        "left behind: {:?}",
        entries(dir.path())
    );
}
