//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` over the
//! decoders and parsers, and the Miri pass over their unit tests.
//!
//! ```text
//! cargo xtask fuzz [--seconds N] [--target T]... [--jobs J] [--sanitizer S] [--list]
//! cargo xtask fuzz miri
//! ```
//!
//! Each target starts from its committed seed corpus `fuzz/corpus/<target>/`
//! (read only: new inputs go to `<target dir>/fuzz-corpus/<target>/`, kept
//! between runs) and runs for `--seconds` (default 60). The libFuzzer log of
//! each run is kept in `<target dir>/fuzz-logs/<target>.log`; the summary
//! prints executions, coverage and peak RSS per target. A crash or a failed
//! property leaves its input in `fuzz/artifacts/<target>/` and fails the
//! task; once fixed, copy the input into `fuzz/corpus/<target>/`, which
//! `ipc-core/tests/fuzz_regressions.rs` replays in every test run.
//!
//! Needs the nightly toolchain; installs cargo-fuzz
//! (`cargo install cargo-fuzz --locked`) when it is missing.
//!
//! Interface (called from `main.rs`): `run(args)` receives the arguments after
//! `fuzz` and returns `Ok(())` on success. `ci.rs` uses [`ci_fuzz_command`]
//! and [`miri_command`] for its `fuzz` and `miri` steps.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::project_root;

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &[
    "length_codec",
    "json_stream",
    "jsonrpc",
    "address",
    "shm_ring",
];

/// Seconds per target of the short pass `cargo xtask ci` runs.
pub const CI_SECONDS: u64 = 10;

/// The unit-test filters of ipc-core run under Miri: the sans-IO decoders
/// and parsers (no runtime, no sockets).
pub const MIRI_FILTERS: &[&str] = &["codec::", "jsonrpc::", "address::"];

#[derive(Debug)]
struct Flags {
    seconds: u64,
    targets: Vec<String>,
    jobs: usize,
    sanitizer: String,
    list: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Flags> {
    let mut flags = Flags {
        seconds: 60,
        targets: Vec::new(),
        jobs: 1,
        sanitizer: "address".to_owned(),
        list: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                flags.seconds = v
                    .parse()
                    .with_context(|| format!("--seconds {v:?}: expected a whole number"))?;
            }
            "--target" => {
                let t = value("--target")?;
                if !TARGETS.contains(&t.as_str()) {
                    bail!("unknown fuzz target {t:?}; the targets are {TARGETS:?}");
                }
                flags.targets.push(t);
            }
            "--jobs" => {
                let v = value("--jobs")?;
                flags.jobs = v
                    .parse::<usize>()
                    .with_context(|| format!("--jobs {v:?}: expected a whole number"))?
                    .max(1);
            }
            "--sanitizer" => flags.sanitizer = value("--sanitizer")?,
            "--list" => flags.list = true,
            other => bail!(
                "unknown argument {other:?} for `fuzz`; expected --seconds N, --target T, \
                 --jobs J, --sanitizer S, --list, or the subcommand `miri`"
            ),
        }
    }
    if flags.targets.is_empty() {
        flags.targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(flags)
}

/// `cargo +nightly ...` through the rustup proxy, without the variables the
/// outer (stable) cargo set for us.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .current_dir(project_root());
    cmd
}

fn quiet_success(mut cmd: Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the fuzz targets cannot run here, if they cannot.
pub fn nightly_missing() -> Option<String> {
    let mut cmd = nightly_cargo();
    cmd.arg("--version");
    if quiet_success(cmd) {
        None
    } else {
        Some("the nightly toolchain is not installed (rustup toolchain install nightly)".to_owned())
    }
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let mut probe = nightly_cargo();
    probe.args(["fuzz", "--version"]);
    if quiet_success(probe) {
        return Ok(());
    }
    println!("xtask fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// What the end of a libFuzzer log says.
#[derive(Debug, Default, Clone, PartialEq)]
struct Stats {
    execs: Option<u64>,
    execs_per_sec: Option<u64>,
    cov: Option<u64>,
    features: Option<u64>,
    corpus: Option<String>,
    new_units: Option<u64>,
    peak_rss_mb: Option<u64>,
}

fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next();
        }
    }
    None
}

fn parse_stats(log: &str) -> Stats {
    let mut s = Stats::default();
    for line in log.lines() {
        let line = line.trim();
        if line.starts_with('#') && line.contains("cov:") {
            // "#123456 DONE   cov: 812 ft: 2990 corp: 410/23Kb ..." (the last one wins)
            s.cov = word_after(line, "cov:").and_then(|v| v.parse().ok());
            s.features = word_after(line, "ft:").and_then(|v| v.parse().ok());
            s.corpus = word_after(line, "corp:").map(str::to_owned);
        }
        if let Some((key, value)) = line
            .strip_prefix("stat::")
            .and_then(|kv| kv.split_once(':'))
        {
            let value = value.trim().parse().ok();
            match key {
                "number_of_executed_units" => s.execs = value,
                "average_exec_per_sec" => s.execs_per_sec = value,
                "new_units_added" => s.new_units = value,
                "peak_rss_mb" => s.peak_rss_mb = value,
                _ => {}
            }
        }
    }
    s
}

fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), T::to_string)
}

#[derive(Debug)]
struct Run {
    target: String,
    ok: bool,
    seconds: f64,
    stats: Stats,
    log: PathBuf,
}

fn fuzz_command(target: &str, flags: &Flags, scratch: &Path) -> Command {
    let seeds = project_root().join("fuzz/corpus").join(target);
    let mut cmd = nightly_cargo();
    cmd.args(["fuzz", "run", "--sanitizer", &flags.sanitizer, target])
        .arg(scratch)
        .arg(seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", flags.seconds))
        .args([
            "-print_final_stats=1",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-max_len=8192",
        ]);
    cmd
}

fn start(target: &str, flags: &Flags) -> anyhow::Result<(std::process::Child, PathBuf, Instant)> {
    let scratch = target_dir().join("fuzz-corpus").join(target);
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let logs = target_dir().join("fuzz-logs");
    fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    let mut cmd = fuzz_command(target, flags, &scratch);
    cmd.stdout(log.try_clone()?).stderr(log);
    println!(
        "==> fuzz {target} for {} s (log: {})",
        flags.seconds,
        log_path.display()
    );
    let child = cmd.spawn().context("starting cargo fuzz run")?;
    Ok((child, log_path, Instant::now()))
}

fn finish(target: &str, mut child: std::process::Child, log: PathBuf, started: Instant) -> Run {
    let ok = child.wait().is_ok_and(|s| s.success());
    let text = fs::read_to_string(&log).unwrap_or_default();
    let stats = parse_stats(&text);
    let seconds = started.elapsed().as_secs_f64();
    if ok {
        println!(
            "<== fuzz {target}: clean, {} execs, cov {}, in {seconds:.0} s",
            show(&stats.execs),
            show(&stats.cov)
        );
    } else {
        println!("<== fuzz {target}: FAILED after {seconds:.0} s; the end of its log:");
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(40)..] {
            println!("    {line}");
        }
        println!(
            "    (inputs that fail are kept in fuzz/artifacts/{target}/; reproduce with \
             `cargo +nightly fuzz run {target} <file>`)"
        );
    }
    Run {
        target: target.to_owned(),
        ok,
        seconds,
        stats,
        log,
    }
}

fn summary(runs: &[Run]) -> String {
    let mut out = String::from("\nxtask fuzz summary\n");
    out.push_str(&format!(
        "  {:<13} {:<6} {:>11} {:>9} {:>6} {:>7} {:>12} {:>8} {:>6}\n",
        "target", "result", "execs", "execs/s", "cov", "ft", "corpus", "rss MB", "time"
    ));
    for r in runs {
        out.push_str(&format!(
            "  {:<13} {:<6} {:>11} {:>9} {:>6} {:>7} {:>12} {:>8} {:>5.0}s\n",
            r.target,
            if r.ok { "clean" } else { "FAIL" },
            show(&r.stats.execs),
            show(&r.stats.execs_per_sec),
            show(&r.stats.cov),
            show(&r.stats.features),
            show(&r.stats.corpus),
            show(&r.stats.peak_rss_mb),
            r.seconds
        ));
    }
    out
}

/// Runs the `fuzz` task with the arguments that followed it.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("miri") {
        return run_miri(&args[1..]);
    }
    let flags = parse(args)?;
    if flags.list {
        for t in TARGETS {
            println!("{t}");
        }
        return Ok(());
    }
    if let Some(why) = nightly_missing() {
        bail!("cannot fuzz: {why}");
    }
    ensure_cargo_fuzz()?;

    // Build every target once up front so the timed runs only fuzz.
    let built = Instant::now();
    let mut build = nightly_cargo();
    build.args(["fuzz", "build", "--sanitizer", &flags.sanitizer]);
    println!("==> cargo +nightly fuzz build");
    if !build
        .status()
        .context("running cargo fuzz build")?
        .success()
    {
        bail!("the fuzz targets do not build");
    }
    println!("<== built in {:.0} s", built.elapsed().as_secs_f64());

    let mut runs = Vec::new();
    for batch in flags.targets.chunks(flags.jobs) {
        let mut running = Vec::new();
        for target in batch {
            running.push((target, start(target, &flags)?));
        }
        for (target, (child, log, started)) in running {
            runs.push(finish(target, child, log, started));
        }
    }
    print!("{}", summary(&runs));
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.target.as_str())
        .collect();
    if !failed.is_empty() {
        for r in runs.iter().filter(|r| !r.ok) {
            eprintln!("xtask fuzz: {} failed; log {}", r.target, r.log.display());
        }
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    println!("xtask fuzz: all {} targets clean", runs.len());
    Ok(())
}

/// The command of the short fuzz pass in `cargo xtask ci`, or why it is skipped.
pub fn ci_fuzz_command() -> Result<Command, String> {
    if !cfg!(target_os = "linux") {
        return Err("fuzzing runs on Linux only".to_owned());
    }
    if let Some(why) = nightly_missing() {
        return Err(why);
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the xtask binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["fuzz", "--seconds", &CI_SECONDS.to_string()])
        .current_dir(project_root());
    Ok(cmd)
}

/// `cargo +nightly miri test -p ipc-core --lib <decoder and parser tests>`,
/// or why it is skipped (no nightly toolchain, or no miri component).
pub fn miri_command() -> Result<Command, String> {
    miri_available()?;
    let mut cmd = nightly_cargo();
    cmd.args(["miri", "test", "-p", "ipc-core", "--lib", "--"])
        .args(MIRI_FILTERS);
    Ok(cmd)
}

/// `cargo +nightly miri test -p ipc-shm --lib`: the shared-memory ring's
/// unsafe code on a heap buffer, including a peer writing garbage, or why
/// it is skipped.
pub fn miri_shm_command() -> Result<Command, String> {
    miri_available()?;
    let mut cmd = nightly_cargo();
    cmd.args(["miri", "test", "-p", "ipc-shm", "--lib"]);
    Ok(cmd)
}

fn miri_available() -> Result<(), String> {
    if let Some(why) = nightly_missing() {
        return Err(why);
    }
    let mut probe = nightly_cargo();
    probe.args(["miri", "--version"]);
    if !quiet_success(probe) {
        return Err(
            "the miri component is not installed (rustup +nightly component add miri)".to_owned(),
        );
    }
    Ok(())
}

fn run_miri(args: &[String]) -> anyhow::Result<()> {
    if let Some(extra) = args.first() {
        bail!("unknown argument {extra:?} for `fuzz miri`");
    }
    let mut cmd = miri_command().map_err(|why| anyhow::anyhow!("cannot run Miri: {why}"))?;
    let started = Instant::now();
    let status = cmd.status().context("running cargo miri")?;
    println!(
        "xtask fuzz miri: {} in {:.0} s",
        if status.success() { "clean" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("Miri found a problem in the decoder tests ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "\
#2	INITED cov: 120 ft: 130 corp: 6/300b exec/s: 0 rss: 40Mb
#65536	pulse  cov: 300 ft: 900 corp: 80/4Kb lim: 100 exec/s: 32768 rss: 60Mb
#912345	DONE   cov: 412 ft: 1500 corp: 140/9876b lim: 4096 exec/s: 30411 rss: 71Mb
Done 912345 runs in 31 second(s)
stat::number_of_executed_units: 912345
stat::average_exec_per_sec:     30411
stat::new_units_added:          200
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              71
";
        let s = parse_stats(log);
        assert_eq!(s.execs, Some(912_345));
        assert_eq!(s.execs_per_sec, Some(30_411));
        assert_eq!(s.cov, Some(412));
        assert_eq!(s.features, Some(1500));
        assert_eq!(s.corpus.as_deref(), Some("140/9876b"));
        assert_eq!(s.new_units, Some(200));
        assert_eq!(s.peak_rss_mb, Some(71));
        assert_eq!(parse_stats("nothing here"), Stats::default());
    }

    #[test]
    fn flags_are_checked() {
        let f = parse(&[
            "--seconds".into(),
            "5".into(),
            "--target".into(),
            "jsonrpc".into(),
        ])
        .unwrap();
        assert_eq!((f.seconds, f.targets), (5, vec!["jsonrpc".to_owned()]));
        assert_eq!(parse(&[]).unwrap().targets.len(), TARGETS.len());
        assert!(parse(&["--target".into(), "nope".into()])
            .unwrap_err()
            .to_string()
            .contains("unknown fuzz target"));
        assert!(parse(&["--seconds".into(), "x".into()]).is_err());
        assert!(parse(&["--seconds".into()]).is_err());
        assert!(parse(&["--fast".into()]).is_err());
    }
}
