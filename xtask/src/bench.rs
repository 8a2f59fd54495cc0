//! `cargo xtask bench`: benchmarks (figures, not assertions).
//!
//! Interface (called from `main.rs`): `run(args)` receives the arguments after
//! `bench` and returns `Ok(())` on success.

/// Runs the `bench` task with the arguments that followed it.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let _ = args;
    eprintln!("xtask bench: not implemented yet");
    std::process::exit(2)
}
