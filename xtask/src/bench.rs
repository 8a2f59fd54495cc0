//! `cargo xtask bench [--quick] [ipc-bench args]`: builds the `ipc-bench`
//! binary in release mode and runs it, writing `results.json`, `report.md`
//! and SVG charts under `target/ipc-bench/` in the workspace root.
//!
//! Without arguments it runs the full comparison; `--quick` is the short
//! pass CI runs as a smoke test (figures are printed, not asserted). Every
//! other argument goes to the binary unchanged (`--mechanism`, `--size`,
//! `--duration`, `--rate`, `--json`, `--out-dir`, `--list`; see
//! `cargo xtask bench --help`). It runs the same way on Unix and on
//! Windows, where the local mechanisms are named pipes.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::{cargo, project_root};

/// Runs the `bench` task with the arguments that followed it.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let root = project_root();
    let exe = build()?;
    let mut cmd = Command::new(&exe);
    cmd.args(args).current_dir(&root);
    if !args
        .iter()
        .any(|a| a == "--out-dir" || a.starts_with("--out-dir="))
    {
        cmd.arg("--out-dir")
            .arg(root.join("target").join("ipc-bench"));
    }
    let shown = std::iter::once("cargo xtask bench")
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    cmd.env("IPC_BENCH_COMMAND", &shown);
    let status = cmd
        .status()
        .with_context(|| format!("run {}", exe.display()))?;
    if !status.success() {
        bail!("ipc-bench failed ({status})");
    }
    Ok(())
}

/// Builds `ipc-bench` in release mode and returns the path of the binary,
/// as cargo reports it (so `CARGO_TARGET_DIR` and config are honoured).
fn build() -> anyhow::Result<PathBuf> {
    eprintln!("xtask bench: building ipc-bench (release)");
    let out = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--package",
            "ipc-bench",
            "--bin",
            "ipc-bench",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(project_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run cargo build")?;
    if !out.status.success() {
        bail!("building ipc-bench failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .find_map(executable)
        .context("cargo did not report the ipc-bench executable")
}

/// The `"executable"` path of one cargo JSON message, if it has one.
fn executable(line: &str) -> Option<PathBuf> {
    let key = "\"executable\":\"";
    let start = line.find(key)? + key.len();
    let mut path = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(PathBuf::from(path)),
            '\\' => path.push(chars.next()?),
            c => path.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executable_in_a_cargo_message() {
        let line = r#"{"reason":"compiler-artifact","executable":"/w/target/release/ipc-bench","fresh":true}"#;
        assert_eq!(
            executable(line),
            Some(PathBuf::from("/w/target/release/ipc-bench"))
        );
        let win = r#"{"executable":"C:\\t\\ipc-bench.exe"}"#;
        assert_eq!(executable(win), Some(PathBuf::from(r"C:\t\ipc-bench.exe")));
        assert_eq!(executable(r#"{"executable":null}"#), None);
    }
}
