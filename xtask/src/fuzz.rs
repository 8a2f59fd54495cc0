//! `cargo xtask fuzz`: fuzz targets over the codecs and parsers.
//!
//! Interface (called from `main.rs`): `run(args)` receives the arguments after
//! `fuzz` and returns `Ok(())` on success.

/// Runs the `fuzz` task with the arguments that followed it.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let _ = args;
    eprintln!("xtask fuzz: not implemented yet");
    std::process::exit(2)
}
