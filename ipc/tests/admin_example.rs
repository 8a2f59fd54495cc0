//! The admin example, run as the user runs it: a demo process that starts a
//! server process and calls it, on every address form this platform offers.

use std::path::PathBuf;
use std::process::Command;

/// The example binary `cargo test` builds beside the test binaries.
fn admin_example() -> PathBuf {
    let deps = std::env::current_exe().expect("current exe");
    let profile_dir = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let exe = profile_dir
        .join("examples")
        .join(format!("admin{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.is_file(),
        "{} is missing: `cargo test` builds the examples; run the tests with cargo test or nextest",
        exe.display()
    );
    exe
}

fn run_demo(address: &str) {
    let out = Command::new(admin_example())
        .args(["demo", address])
        .output()
        .expect("run the admin example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo on {address} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for needle in [
        "node_info  -> {",
        "echo       -> {\"hello\":\"world\"}",
        "peers      -> [",
        "subscribed -> \"hb-",
        "no_such_method -> error -32601",
        "shutdown   -> shutting down",
    ] {
        assert!(
            stdout.contains(needle),
            "demo on {address}: no {needle:?} in\n{stdout}\n{stderr}"
        );
    }
    assert_eq!(
        stdout.matches("heartbeat  <- {\"seq\"").count(),
        3,
        "three heartbeats on {address}:\n{stdout}"
    );
    assert!(
        stdout.contains("stopped; endpoint removed"),
        "server stopped cleanly:\n{stdout}"
    );
}

#[test]
fn demo_over_local_address() {
    run_demo(&format!("local:ipc-admin-local-{}", std::process::id()));
}

#[cfg(unix)]
#[test]
fn demo_over_unix_path() {
    let dir = tempfile::tempdir().unwrap();
    run_demo(&format!("unix:{}", dir.path().join("admin.sock").display()));
}

#[cfg(target_os = "linux")]
#[test]
fn demo_over_abstract_socket() {
    run_demo(&format!("unix:@ipc-admin-abstract-{}", std::process::id()));
}

#[cfg(windows)]
#[test]
fn demo_over_named_pipe() {
    run_demo(&format!("pipe:ipc-admin-pipe-{}", std::process::id()));
}
