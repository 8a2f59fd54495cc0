//! `cargo xtask cross`: Windows and macOS checks from a Linux machine.
//!
//! Runs the shared cross-target script (`xtarget.sh`): it installs MinGW-w64
//! and Wine when missing, type-checks `x86_64-pc-windows-gnu`,
//! `x86_64-apple-darwin` and `aarch64-apple-darwin`, and runs the Windows
//! tests under Wine. The script is found at `$IPC_XTARGET`, or at
//! `../shared/tools/xtarget.sh` beside the workspace root.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

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

/// The command that runs the script with the given cargo scope arguments:
/// the checks first, then the Windows tests with `--no-fail-fast`, so one
/// failing test binary does not hide the results of the others.
pub fn command(script: &std::path::Path, scope: &[String]) -> Command {
    let quoted: Vec<String> = scope.iter().map(|a| shell_quote(a)).collect();
    let script = shell_quote(&script.display().to_string());
    let scope = quoted.join(" ");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "XT_STEPS='mac win-check' bash {script} {scope} && \
             XT_STEPS='win-test' bash {script} {scope} --no-fail-fast"
        ))
        .current_dir(project_root());
    cmd
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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
    let status = command(&script, &scope)
        .status()
        .with_context(|| format!("starting bash {}", script.display()))?;
    eprintln!(
        "xtask cross: {} in {}",
        if status.success() { "passed" } else { "FAILED" },
        crate::ci::fmt_duration(started.elapsed())
    );
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
