//! `cargo xtask ci`: the checks every CI job runs, in order, with a summary.
//!
//! Steps: `setup` (libclang on Linux, for the iceoryx2 benchmark peer),
//! `fmt` (rustfmt check), `clippy` (`-D warnings`), `test` (unit and
//! integration tests; cargo-nextest when installed), `doc` (doc tests),
//! `bench` (`cargo xtask bench --quick`, a smoke test; figures not judged),
//! `miri` (the decoder and parser unit tests under Miri, when the nightly
//! miri component is installed), `miri-shm` (the shared-memory ring's unit
//! tests under Miri), `loom` (the ring's loom model, Linux), `fuzz` (a short
//! pass of every fuzz target,
//! Linux with a nightly toolchain), `cross` (the cross-target script, Linux
//! only). Every step runs even when an earlier one failed (unless
//! `--fail-fast`), so one run reports all problems.

use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::{cargo, cross, fuzz, project_root};

/// Feature selection for clippy and the tests. Every platform crate compiles
/// (to an empty crate where its OS is absent) with every feature on every OS,
/// so all features are checked everywhere.
const FEATURES: &[&str] = &["--all-features"];

#[derive(Debug)]
enum Outcome {
    Pass,
    Fail(String),
    Skipped(String),
}

#[derive(Debug)]
struct Step {
    name: &'static str,
    outcome: Outcome,
    took: Option<Duration>,
}

#[derive(Debug, Default)]
struct Flags {
    skip_cross: bool,
    quick: bool,
    fail_fast: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Flags> {
    let mut flags = Flags::default();
    for arg in args {
        match arg.as_str() {
            "--skip-cross" => flags.skip_cross = true,
            "--quick" => flags.quick = true,
            "--fail-fast" => flags.fail_fast = true,
            other => anyhow::bail!(
                "unknown flag {other:?} for `ci`; expected --skip-cross, --quick or --fail-fast"
            ),
        }
    }
    Ok(flags)
}

fn cargo_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.args(args).current_dir(project_root());
    cmd
}

fn with_features(base: &[&'static str], tail: &[&'static str]) -> Vec<&'static str> {
    let mut v = base.to_vec();
    v.extend_from_slice(FEATURES);
    v.extend_from_slice(tail);
    v
}

fn has_cargo_subcommand(name: &str) -> bool {
    cargo_cmd(&[name, "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs one command as a step, printing its start, end and duration.
fn run_step(name: &'static str, mut cmd: Command) -> Step {
    let gha = std::env::var_os("GITHUB_ACTIONS").is_some();
    if gha {
        println!("::group::{name}");
    }
    println!("==> [{name}] {}", describe(&cmd));
    let started = Instant::now();
    let outcome = match cmd.status() {
        Ok(s) if s.success() => Outcome::Pass,
        Ok(s) => Outcome::Fail(match s.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_owned(),
        }),
        Err(e) => Outcome::Fail(format!("could not start: {e}")),
    };
    let took = started.elapsed();
    if gha {
        println!("::endgroup::");
    }
    let verdict = match &outcome {
        Outcome::Pass => "passed".to_owned(),
        Outcome::Fail(why) => format!("FAILED ({why})"),
        Outcome::Skipped(why) => format!("skipped ({why})"),
    };
    println!("<== [{name}] {verdict} in {}", fmt_duration(took));
    Step {
        name,
        outcome,
        took: Some(took),
    }
}

fn skipped(name: &'static str, why: impl Into<String>) -> Step {
    let why = why.into();
    println!("--- [{name}] skipped: {why}");
    Step {
        name,
        outcome: Outcome::Skipped(why),
        took: None,
    }
}

/// `12.3s` or `4m05s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

fn summary(steps: &[Step], total: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nxtask ci summary");
    let _ = writeln!(out, "  {:<8} {:<8} {:>8}  note", "step", "result", "time");
    for step in steps {
        let (result, note) = match &step.outcome {
            Outcome::Pass => ("pass", ""),
            Outcome::Fail(why) => ("FAIL", why.as_str()),
            Outcome::Skipped(why) => ("skipped", why.as_str()),
        };
        let took = step.took.map(fmt_duration).unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "  {:<8} {:<8} {:>8}  {note}", step.name, result, took);
    }
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Fail(_)))
        .map(|s| s.name)
        .collect();
    let skipped = steps
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Skipped(_)))
        .count();
    if failed.is_empty() {
        let _ = writeln!(
            out,
            "xtask ci: OK in {} ({} steps run, {skipped} skipped)",
            fmt_duration(total),
            steps.len() - skipped
        );
    } else {
        let _ = writeln!(
            out,
            "xtask ci: FAILED in {}: {}",
            fmt_duration(total),
            failed.join(", ")
        );
    }
    out
}

/// The steps, in order.
const STEPS: &[&str] = &[
    "setup", "fmt", "clippy", "test", "doc", "bench", "miri", "miri-shm", "loom", "fuzz", "cross",
];

/// What the build needs from the system on Linux: libclang, for the
/// bindings of iceoryx2 (a benchmark peer). Installed with apt when missing
/// and allowed; otherwise the step says what to install.
fn setup_step() -> Step {
    if std::env::consts::OS != "linux" {
        return skipped("setup", "system packages are needed only on Linux");
    }
    let has_libclang = std::process::Command::new("sh")
        .args(["-c", "ldconfig -p | grep -q 'libclang.*\\.so'"])
        .status()
        .is_ok_and(|s| s.success());
    if has_libclang {
        return skipped("setup", "libclang present");
    }
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let has_apt = std::process::Command::new("sh")
        .args(["-c", "command -v apt-get"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(is_root && has_apt) {
        println!(
            "xtask ci: libclang is missing and cannot be installed here (needs root and apt-get); \
             install libclang-dev (Debian/Ubuntu) or clang, else building iceoryx2 fails"
        );
        return skipped("setup", "libclang missing; see the message above");
    }
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev",
    ]);
    run_step("setup", cmd)
}

fn step(name: &'static str, flags: &Flags, nextest: bool) -> Step {
    match name {
        "setup" => setup_step(),
        "fmt" => run_step(name, cargo_cmd(&["fmt", "--all", "--", "--check"])),
        "clippy" => {
            let args = with_features(
                &["clippy", "--workspace", "--all-targets"],
                &["--", "-D", "warnings"],
            );
            run_step(name, cargo_cmd(&args))
        }
        "test" => {
            let args = if nextest {
                with_features(
                    &["nextest", "run", "--workspace"],
                    &["--no-tests=warn", "--no-fail-fast"],
                )
            } else {
                // Plain `cargo test` also builds the examples, which the
                // example tests run (it repeats the doc tests; nextest does not).
                with_features(&["test", "--workspace"], &["--no-fail-fast"])
            };
            run_step(name, cargo_cmd(&args))
        }
        "doc" if flags.quick => skipped(name, "--quick"),
        "doc" => run_step(
            name,
            cargo_cmd(&with_features(&["test", "--workspace", "--doc"], &[])),
        ),
        "bench" if flags.quick => skipped(name, "--quick"),
        // A smoke test of the benchmark: every mechanism runs and the report
        // is written; figures are not judged here.
        "bench" => {
            let exe = std::env::current_exe().unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(exe);
            cmd.args(["bench", "--quick"]).current_dir(project_root());
            run_step(name, cmd)
        }
        "miri" | "miri-shm" | "loom" | "fuzz" if flags.quick => skipped(name, "--quick"),
        "miri" => match fuzz::miri_command() {
            Ok(cmd) => run_step(name, cmd),
            Err(why) => skipped(name, why),
        },
        "miri-shm" => match fuzz::miri_shm_command() {
            Ok(cmd) => run_step(name, cmd),
            Err(why) => skipped(name, why),
        },
        "loom" if std::env::consts::OS != "linux" => {
            skipped(name, "the ring's loom model runs in the Linux job")
        }
        // The model of the ring's SPSC protocol and its doorbells; its own
        // target directory, since `--cfg loom` rebuilds everything.
        "loom" => {
            let mut cmd = cargo_cmd(&["test", "-p", "ipc-shm", "--lib", "--release", "loom"]);
            cmd.env("RUSTFLAGS", "--cfg loom").env(
                "CARGO_TARGET_DIR",
                project_root().join("target").join("loom"),
            );
            run_step(name, cmd)
        }
        "fuzz" => match fuzz::ci_fuzz_command() {
            Ok(cmd) => run_step(name, cmd),
            Err(why) => skipped(name, why),
        },
        "cross" if flags.quick => skipped(name, "--quick"),
        "cross" if flags.skip_cross => skipped(name, "--skip-cross"),
        // `cargo xtask cross` with its default scope: the checks, then the
        // Windows tests under Wine, with one rerun of a start-up failure.
        "cross" => match cross::locate() {
            Ok(_) => {
                let exe = std::env::current_exe().unwrap_or_else(|_| "cargo".into());
                let mut cmd = Command::new(exe);
                cmd.arg("cross").current_dir(project_root());
                run_step(name, cmd)
            }
            Err(why) => skipped(name, why),
        },
        other => unreachable!("unknown step {other}"),
    }
}

/// `cargo xtask ci [--skip-cross] [--quick] [--fail-fast]`.
pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let flags = parse(args)?;
    let started = Instant::now();
    let nextest = has_cargo_subcommand("nextest");
    println!(
        "xtask ci: tests run with {}",
        if nextest {
            "cargo-nextest"
        } else {
            "cargo test (cargo-nextest not installed)"
        }
    );
    let mut steps: Vec<Step> = Vec::new();
    for &name in STEPS {
        let failed_before = steps.iter().any(|s| matches!(s.outcome, Outcome::Fail(_)));
        if flags.fail_fast && failed_before {
            steps.push(skipped(
                name,
                "an earlier step failed and --fail-fast is set",
            ));
        } else {
            steps.push(step(name, &flags, nextest));
        }
    }
    print!("{}", summary(&steps, started.elapsed()));
    let failed = steps.iter().any(|s| matches!(s.outcome, Outcome::Fail(_)));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn summary_names_failures_and_skip_reasons() {
        let steps = [
            Step {
                name: "fmt",
                outcome: Outcome::Pass,
                took: Some(Duration::from_secs(1)),
            },
            Step {
                name: "clippy",
                outcome: Outcome::Fail("exit status 101".into()),
                took: Some(Duration::from_secs(2)),
            },
            Step {
                name: "cross",
                outcome: Outcome::Skipped("the host is macos".into()),
                took: None,
            },
        ];
        let s = summary(&steps, Duration::from_secs(3));
        assert!(s.contains("clippy   FAIL"), "{s}");
        assert!(s.contains("exit status 101"), "{s}");
        assert!(s.contains("cross    skipped"), "{s}");
        assert!(s.contains("the host is macos"), "{s}");
        assert!(s.contains("FAILED in 3.0s: clippy"), "{s}");
    }

    #[test]
    fn unknown_flags_are_refused() {
        let err = parse(&["--fast".into()]).unwrap_err().to_string();
        assert!(err.contains("--skip-cross"), "{err}");
        assert!(parse(&["--quick".into(), "--fail-fast".into()]).is_ok());
    }
}
