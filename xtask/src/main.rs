//! Project automation, run as `cargo xtask <task>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Tasks:
//!
//! - `ci [--skip-cross] [--quick] [--fail-fast]`: what CI runs on every OS, in
//!   order: `cargo fmt --check`, `cargo clippy -D warnings`, the tests (with
//!   cargo-nextest when installed, plus the doc tests), the decoder tests
//!   under Miri and a short fuzz pass (with a nightly toolchain), and on
//!   Linux the cross-target step. Prints each step with its duration, then a summary
//!   table; exits non-zero when any step failed.
//! - `cross [cargo scope args]`: runs the cross-target script (Windows under
//!   Wine, macOS type-check), see [`cross`].
//! - `bench`, `fuzz`, `soak`: one module each.
//!
//! Adding a task: write `src/<task>.rs` with
//!
//! ```text
//! pub fn run(args: &[String]) -> anyhow::Result<()>
//! ```
//!
//! where `args` are the command-line arguments after the task name, and add a
//! line to `dispatch` below. A task runs commands from [`project_root`] and
//! uses [`cargo`] for the cargo binary so the caller's toolchain is kept.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod ci;
mod cross;
mod fuzz;
mod soak;

const HELP: &str = "\
usage: cargo xtask <task> [args]

tasks:
  ci [--skip-cross] [--quick] [--fail-fast]
        fmt --check, clippy -D warnings, tests and doc tests, Miri on the
        decoders, a short fuzz pass, cross-target checks
        --skip-cross  leave out the cross-target step
        --quick       leave out the cross-target, doc-test, Miri and fuzz steps
        --fail-fast   stop at the first failing step
  cross [cargo scope args]
        Windows (check + tests under Wine) and macOS (type-check) from Linux,
        via ../shared/tools/xtarget.sh or $IPC_XTARGET; a test executable
        that exits before running any test is run once more
  fuzz [--seconds N] [--target T]... [--jobs J] [--sanitizer S] [--list]
        run the cargo-fuzz targets (nightly; installs cargo-fuzz), default 60 s each
  fuzz miri
        the decoder and parser unit tests under Miri
  soak [--seconds N] [--connections C] [--idle I] [--seed S]
        a server process under mixed load and killed clients; prints the figures
  bench [args]
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> anyhow::Result<ExitCode> {
    let (task, rest) = match args.split_first() {
        Some((t, rest)) => (t.as_str(), rest),
        None => {
            eprint!("{HELP}");
            return Ok(ExitCode::from(2));
        }
    };
    match task {
        "ci" => ci::run(rest),
        "cross" => cross::run(rest),
        "bench" => bench::run(rest).map(|()| ExitCode::SUCCESS),
        "fuzz" => fuzz::run(rest).map(|()| ExitCode::SUCCESS),
        "soak" => soak::run(rest).map(|()| ExitCode::SUCCESS),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprint!("xtask: unknown task {other:?}\n\n{HELP}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo binary that started us (keeps `cargo +toolchain xtask` on that
/// toolchain), or `cargo` from `PATH`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
