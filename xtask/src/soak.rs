//! `cargo xtask soak`: a soak run against a live server process.
//!
//! ```text
//! cargo xtask soak [--seconds N] [--connections C] [--idle I] [--seed S]
//! ```
//!
//! Builds `ipc-soak` in release mode and runs `ipc-soak run` with the
//! arguments given (default `--seconds 60`): a server process under mixed
//! load (long-lived connections with requests from 10 B to 4 MiB and
//! batches, connection churn with requests abandoned in flight, garbage and
//! half frames, client processes killed with SIGKILL), after measuring the
//! server's memory per idle connection. It prints requests, errors by kind,
//! responses lost (must be 0), mismatched answers (must be 0) and the
//! server's RSS, and fails when anything was lost, mismatched or failed
//! unexpectedly, or the server died.
//!
//! Interface (called from `main.rs`): `run(args)` receives the arguments after
//! `soak` and returns `Ok(())` on success.

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::{cargo, project_root};

/// The arguments passed on to `ipc-soak run`: `--seconds 60` unless given.
fn soak_args(args: &[String]) -> anyhow::Result<Vec<String>> {
    const KNOWN: &[&str] = &["--seconds", "--connections", "--idle", "--seed"];
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !KNOWN.contains(&flag.as_str()) {
            bail!("unknown argument {flag:?} for `soak`; expected one of {KNOWN:?} with a number");
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        value
            .parse::<u64>()
            .with_context(|| format!("{flag} {value:?}: expected a whole number"))?;
        out.push(flag.clone());
        out.push(value.clone());
    }
    if !out.iter().any(|a| a == "--seconds") {
        out.extend(["--seconds".to_owned(), "60".to_owned()]);
    }
    Ok(out)
}

/// Runs the `soak` task with the arguments that followed it.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let pass = soak_args(args)?;
    if !cfg!(target_os = "linux") {
        bail!("the soak run measures memory through /proc and runs on Linux only");
    }
    let status = Command::new(cargo())
        .args(["run", "--quiet", "--release", "-p", "ipc-soak", "--", "run"])
        .args(&pass)
        .current_dir(project_root())
        .status()
        .context("running ipc-soak")?;
    if !status.success() {
        bail!("the soak run failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_to_sixty_seconds_and_checks_arguments() {
        assert_eq!(soak_args(&[]).unwrap(), strings(&["--seconds", "60"]));
        assert_eq!(
            soak_args(&strings(&["--idle", "10", "--seconds", "5"])).unwrap(),
            strings(&["--idle", "10", "--seconds", "5"])
        );
        assert!(soak_args(&strings(&["--seconds"])).is_err());
        assert!(soak_args(&strings(&["--seconds", "x"])).is_err());
        assert!(soak_args(&strings(&["--fast"])).is_err());
    }
}
