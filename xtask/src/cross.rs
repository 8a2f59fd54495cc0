//! `cargo xtask cross`: Windows and macOS checks from a Linux machine.
//!
//! Runs the shared cross-target script (`xtarget.sh`): it installs MinGW-w64
//! and Wine when missing, type-checks `x86_64-pc-windows-gnu`,
//! `x86_64-apple-darwin` and `aarch64-apple-darwin`, and runs the Windows
//! tests under Wine. The script is found at `$IPC_XTARGET`, or at
//! `../shared/tools/xtarget.sh` beside the workspace root.
//!
//! Under Wine a test executable now and then exits before it runs a single
//! test (the harness never prints its `running N tests` line). Such a
//! start-up failure says nothing about the code under test, so the step runs
//! that one target again, once, and says so. A target that started and then
//! failed is never run again: its failure stands.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;

use crate::project_root;

/// Scope passed to the script when `cross` gets no arguments: every crate,
/// every feature (each platform crate compiles on every target).
pub const DEFAULT_SCOPE: &[&str] = &["--workspace", "--all-features"];

/// Where the cross-target script is, or why the step cannot run here.
pub fn locate() -> Result<PathBuf, String> {
    if std::env::consts::OS != "linux" {
        return Err(format!(
            "the host is {}; the cross-target step needs Linux (MinGW-w64 and Wine), \
             and this OS's own CI job covers it natively",
            std::env::consts::OS
        ));
    }
    if let Some(path) = std::env::var_os("IPC_XTARGET") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "IPC_XTARGET={} is not a file; point it at xtarget.sh or unset it",
                path.display()
            ))
        };
    }
    let default = project_root().join("../shared/tools/xtarget.sh");
    if default.is_file() {
        Ok(default)
    } else {
        Err(format!(
            "{} not found (no shared tools beside the workspace); set IPC_XTARGET to the script to run it",
            default.display()
        ))
    }
}

/// The script run with `XT_STEPS` set to `steps` and the given cargo
/// arguments; with `joined`, its standard error goes to its standard output.
fn script_command(script: &Path, steps: &str, args: &[String], joined: bool) -> Command {
    let mut cmd = Command::new("bash");
    if joined {
        cmd.arg("-c").arg(r#"exec bash "$0" "$@" 2>&1"#);
    }
    cmd.arg(script)
        .args(args)
        .env("XT_STEPS", steps)
        .current_dir(project_root());
    cmd
}

/// The feature selection in a cargo scope, which a target's rerun keeps.
fn feature_args(scope: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut args = scope.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--all-features" | "--no-default-features" => kept.push(arg.clone()),
            "--features" | "-F" => {
                kept.push(arg.clone());
                kept.extend(args.next().cloned());
            }
            a if a.starts_with("--features=") => kept.push(arg.clone()),
            _ => {}
        }
    }
    kept
}

/// One test target that `cargo test` reported as failed.
#[derive(Debug, PartialEq, Eq)]
struct FailedTarget {
    /// What cargo says to pass to rerun it, e.g. `-p ipc --test rpc_unix`.
    rerun: String,
    /// Whether its harness printed `running N tests` before it failed.
    started: bool,
    /// Doc tests run through rustdoc, not one executable: never rerun.
    doc: bool,
}

/// The failed targets in the output of `cargo test --no-fail-fast`, in
/// order. cargo runs the test executables one at a time and reports each
/// failure right after the executable's own output, so a failure belongs to
/// the latest `Running` (or `Doc-tests`) line before it.
fn failed_targets(output: &str) -> Vec<FailedTarget> {
    let mut failed = Vec::new();
    let mut started = false;
    for line in output.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("Running ") || trimmed.starts_with("Doc-tests ") {
            started = false;
        } else if trimmed.starts_with("running ") {
            started = true;
        } else if let Some((kind, rest)) = trimmed
            .strip_prefix("error: ")
            .and_then(|r| r.split_once(" failed, to rerun pass `"))
        {
            if let Some((rerun, _)) = rest.split_once('`') {
                failed.push(FailedTarget {
                    rerun: rerun.to_owned(),
                    started,
                    doc: kind == "doctest",
                });
            }
        }
    }
    failed
}

/// Runs the script with its standard error joined to its standard output,
/// copies every line to this process's standard output as it comes, and
/// returns whether it succeeded and what it printed.
fn run_teed(script: &Path, steps: &str, args: &[String]) -> anyhow::Result<(bool, String)> {
    let mut child = script_command(script, steps, args, true)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting bash {}", script.display()))?;
    let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut output = String::new();
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .context("reading the test output")?
            == 0
        {
            break;
        }
        out.write_all(&line)?;
        out.flush()?;
        output.push_str(&String::from_utf8_lossy(&line));
    }
    let status = child
        .wait()
        .context("waiting for the cross-target script")?;
    Ok((status.success(), output))
}

/// Runs the checks, then the Windows tests; a target that failed at
/// start-up is run once more on its own. Returns whether everything passed.
fn check_and_test(script: &Path, scope: &[String]) -> anyhow::Result<bool> {
    let checks = script_command(script, "mac win-check", scope, false)
        .status()
        .with_context(|| format!("starting bash {}", script.display()))?;
    if !checks.success() {
        eprintln!("xtask cross: the cross-target checks failed; the Windows tests were not run");
        return Ok(false);
    }
    let mut args = scope.to_vec();
    args.push("--no-fail-fast".to_owned());
    let (passed, output) = run_teed(script, "win-test", &args)?;
    if passed {
        return Ok(true);
    }
    let failed = failed_targets(&output);
    if failed.is_empty() {
        eprintln!("xtask cross: the Windows tests failed before any test target ran");
        return Ok(false);
    }
    if let Some(real) = failed.iter().find(|f| f.started || f.doc) {
        eprintln!(
            "xtask cross: `{}` failed under Wine after it started; not run again",
            real.rerun
        );
        return Ok(false);
    }
    let features = feature_args(scope);
    for target in &failed {
        eprintln!(
            "xtask cross: `{}` exited before running any test (a Wine start-up failure); \
             running it once more",
            target.rerun
        );
        let mut args: Vec<String> = target.rerun.split_whitespace().map(str::to_owned).collect();
        args.extend(features.iter().cloned());
        let again = script_command(script, "win-test", &args, false)
            .status()
            .with_context(|| format!("starting bash {}", script.display()))?;
        if !again.success() {
            eprintln!("xtask cross: `{}` failed again", target.rerun);
            return Ok(false);
        }
    }
    Ok(true)
}

/// `cargo xtask cross [cargo scope args]`.
pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let script =
        locate().map_err(|reason| anyhow::anyhow!("cannot run the cross step: {reason}"))?;
    let scope: Vec<String> = if args.is_empty() {
        DEFAULT_SCOPE.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.to_vec()
    };
    eprintln!("xtask cross: bash {} {}", script.display(), scope.join(" "));
    let started = std::time::Instant::now();
    let passed = check_and_test(&script, &scope)?;
    eprintln!(
        "xtask cross: {} in {}",
        if passed { "passed" } else { "FAILED" },
        crate::ci::fmt_duration(started.elapsed())
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
     Running unittests src/lib.rs (target/x86_64-pc-windows-gnu/debug/deps/ipc-0f.exe)

running 3 tests
test a ... ok

test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/rpc_unix.rs (target/x86_64-pc-windows-gnu/debug/deps/rpc_unix-1e.exe)
error: test failed, to rerun pass `-p ipc --test rpc_unix`

Caused by:
  process didn't exit successfully: `/usr/lib/wine/wine64 /w/rpc_unix-1e.exe` (exit status: 1)
     Running tests/shm.rs (target/x86_64-pc-windows-gnu/debug/deps/shm-2d.exe)

running 2 tests
test b ... FAILED

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

error: test failed, to rerun pass `-p ipc --test shm`
   Doc-tests ipc

running 1 test
test src/lib.rs - x (line 3) ... FAILED

error: doctest failed, to rerun pass `-p ipc --doc`
error: 3 targets failed:
    `-p ipc --test rpc_unix`
    `-p ipc --test shm`
    `-p ipc --doc`
";

    #[test]
    fn failures_are_told_apart_by_whether_the_harness_started() {
        let failed = failed_targets(OUTPUT);
        let expect = |rerun: &str, started, doc| FailedTarget {
            rerun: rerun.to_owned(),
            started,
            doc,
        };
        assert_eq!(
            failed,
            vec![
                expect("-p ipc --test rpc_unix", false, false),
                expect("-p ipc --test shm", true, false),
                expect("-p ipc --doc", true, true),
            ]
        );
    }

    #[test]
    fn a_passing_run_has_no_failed_targets() {
        let passing: String = OUTPUT.lines().take(7).map(|l| format!("{l}\n")).collect();
        assert!(failed_targets(&passing).is_empty());
        assert!(failed_targets("error: could not compile `ipc`").is_empty());
    }

    #[test]
    fn a_rerun_keeps_the_feature_selection_only() {
        let scope: Vec<String> = [
            "--workspace",
            "--all-features",
            "-p",
            "x",
            "-F",
            "shm",
            "--lib",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(feature_args(&scope), ["--all-features", "-F", "shm"]);
    }
}
