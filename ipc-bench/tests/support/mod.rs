//! What the benchmark's end-to-end tests share: running the `ipc-bench`
//! binary and reading the results it wrote.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `ipc-bench` with `args`, writing to `out`; returns its output and
/// the `results.json` it wrote (panicking with its stderr when there is
/// none).
pub fn bench(args: &[&str], out: &Path) -> (Output, serde_json::Value) {
    let output = ipc_testkit::output(
        Command::new(env!("CARGO_BIN_EXE_ipc-bench"))
            .args(args)
            .arg("--out-dir")
            .arg(out),
    );
    let json = std::fs::read_to_string(out.join("results.json")).unwrap_or_else(|e| {
        panic!(
            "no results.json ({e}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (
        output,
        serde_json::from_str(&json).expect("results.json is JSON"),
    )
}
