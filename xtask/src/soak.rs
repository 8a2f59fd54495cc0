//! `cargo xtask soak`: long-running load against a live server.
//!
//! Interface (called from `main.rs`): `run(args)` receives the arguments after
//! `soak` and returns `Ok(())` on success.

/// Runs the `soak` task with the arguments that followed it.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let _ = args;
    eprintln!("xtask soak: not implemented yet");
    std::process::exit(2)
}
