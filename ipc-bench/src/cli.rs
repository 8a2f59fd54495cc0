//! The command line: parses arguments, runs the plan, writes the outputs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

use crate::mech::{self, RpcLoad};
use crate::results::{self, Run, Settings};
use crate::{charts, proto, rpc, run, sys};

/// Compares local IPC mechanisms across two real processes.
#[derive(Debug, Parser)]
#[command(name = "ipc-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// Mechanisms to run, comma-separated (default: all; see --list).
    #[arg(long, value_delimiter = ',')]
    mechanism: Vec<String>,

    /// Message sizes, comma-separated, e.g. 64,1KiB,64KiB,1MiB.
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    size: Vec<usize>,

    /// Seconds per throughput, paced and JSON-RPC test (default 1, or 0.2 with --quick).
    #[arg(long)]
    duration: Option<f64>,

    /// JSON-RPC loads as CONNECTIONSxIN_FLIGHT, comma-separated
    /// (default 1x1,1x16,1x64,64x1).
    #[arg(long, value_delimiter = ',', value_parser = parse_load)]
    load: Vec<(usize, usize)>,

    /// Paced-mode rates in messages per second, comma-separated (default 1000,100000).
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,

    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,

    /// A short pass: a tenth of the round trips, 0.2 s tests.
    #[arg(long)]
    quick: bool,

    /// Where results.json, report.md and the SVG charts go
    /// (default: <workspace>/target/ipc-bench).
    #[arg(long)]
    out_dir: Option<PathBuf>,

    /// List the mechanisms and exit.
    #[arg(long)]
    list: bool,

    /// Keep every CPU from idling during the run with one busy loop per CPU
    /// at the lowest scheduling priority (SCHED_IDLE on Linux), in a process
    /// of its own: wake-ups then never find a CPU halted, which on virtual
    /// machines can cost tens of microseconds and decide one-at-a-time
    /// figures. The busy loops' CPU time is in no process's column.
    #[arg(long)]
    keep_cpus_awake: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs the server side of one mechanism (started by the benchmark itself).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        mechanism: String,
        #[arg(long)]
        endpoint: PathBuf,
    },
    /// Runs the busy loops of `--keep-cpus-awake` (started by the benchmark itself).
    #[command(hide = true)]
    KeepAwake {
        #[arg(long)]
        threads: usize,
    },
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mul) = [
        ("mib", 1 << 20),
        ("m", 1 << 20),
        ("kib", 1 << 10),
        ("k", 1 << 10),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, mul)| lower.strip_suffix(suf).map(|n| (n.to_owned(), *mul)))
    .unwrap_or((lower.clone(), 1));
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("{t:?} is not a size; write e.g. 64, 1KiB or 1MiB"))?;
    let b = n * mul;
    if b == 0 || b > proto::MAX_MSG {
        return Err(format!(
            "{t:?} is out of range: sizes go from 1 byte to {}",
            results::fmt_size(proto::MAX_MSG)
        ));
    }
    Ok(b)
}

/// The JSON-RPC loads run unless `--load` names others.
const DEFAULT_LOADS: [(usize, usize); 4] = [(1, 1), (1, 16), (1, 64), (64, 1)];

fn parse_load(s: &str) -> Result<(usize, usize), String> {
    let t = s.trim();
    let bad = || {
        format!(
            "{t:?} is not a load; write CONNECTIONSxIN_FLIGHT, e.g. 1x16 or 64x1, \
             with 1 to {} connections and 1 to {} in flight on each",
            rpc::MAX_CONNECTIONS,
            rpc::MAX_IN_FLIGHT
        )
    };
    let (c, f) = t.split_once(['x', 'X']).ok_or_else(bad)?;
    let c: usize = c.trim().parse().map_err(|_| bad())?;
    let f: usize = f.trim().parse().map_err(|_| bad())?;
    if !(1..=rpc::MAX_CONNECTIONS).contains(&c) || !(1..=rpc::MAX_IN_FLIGHT).contains(&f) {
        return Err(bad());
    }
    Ok((c, f))
}

/// Runs the command line.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Some(Cmd::Serve {
            mechanism,
            endpoint,
        }) => serve(mechanism, endpoint.clone()),
        Some(Cmd::KeepAwake { threads }) => keep_awake(*threads),
        None => bench(&cli),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The process of `--keep-cpus-awake`: `threads` busy loops at the lowest
/// priority, until the parent closes our stdin.
fn keep_awake(threads: usize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..threads {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let lowered = sys::idle_priority();
            let ok = lowered.is_ok();
            let _ = tx.send(lowered);
            drop(tx);
            // Never spin at a normal priority: that would compete with the
            // processes under test instead of filling their idle time.
            if ok {
                loop {
                    std::hint::spin_loop();
                }
            }
        });
    }
    drop(tx);
    let mut priority = "";
    for lowered in rx.iter().take(threads) {
        priority = lowered.context("lower the busy loops to the idle priority")?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {priority}")?;
    out.flush()?;
    drop(out);
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    std::process::exit(0);
}

fn serve(name: &str, endpoint: PathBuf) -> anyhow::Result<()> {
    let m = mech::find(name).with_context(|| format!("unknown mechanism {name:?}"))?;
    if m.server == mech::ServerKind::Child {
        // The parent holds our stdin open; when it goes away, so do we.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
    }
    (m.serve)(&mech::ServeCtx { endpoint })
}

fn default_out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("target").join("ipc-bench"))
        .unwrap_or_else(|| PathBuf::from("target/ipc-bench"))
}

fn round_trips(size: usize, quick: bool) -> u64 {
    let base: u64 = if quick { 2_000 } else { 20_000 };
    if size <= 4096 {
        base
    } else if size <= 256 * 1024 {
        base / 4
    } else {
        base / 40
    }
}

fn bench(cli: &Cli) -> anyhow::Result<()> {
    let all = mech::all();
    if cli.list {
        for m in &all {
            println!("{:<19} {:<9} {}", m.name, m.group.label(), m.about);
        }
        return Ok(());
    }
    let chosen: Vec<mech::Mechanism> = if cli.mechanism.is_empty() {
        all.clone()
    } else {
        let mut v = Vec::new();
        for name in &cli.mechanism {
            match all.iter().find(|m| m.name == name.trim()) {
                Some(m) => v.push(*m),
                None => bail!(
                    "unknown mechanism {name:?}; this build has: {}",
                    all.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        v
    };
    let sizes = if cli.size.is_empty() {
        vec![64, 1024, 64 * 1024, 1024 * 1024]
    } else {
        cli.size.clone()
    };
    let duration = cli.duration.unwrap_or(if cli.quick { 0.2 } else { 1.0 });
    if !(duration > 0.0 && duration <= 3600.0) {
        bail!("--duration {duration} is out of range: give seconds between 0 and 3600");
    }
    let rates = if cli.rate.is_empty() {
        vec![1_000.0, 100_000.0]
    } else {
        cli.rate.clone()
    };
    if let Some(r) = rates.iter().find(|r| !(**r >= 1.0 && **r <= 10_000_000.0)) {
        bail!("--rate {r} is out of range: give messages per second between 1 and 10000000");
    }
    // Started before anything is measured and stopped when the run ends.
    let awake = if cli.keep_cpus_awake {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Some(run::KeepAwake::start(cpus)?)
    } else {
        None
    };
    let settings = Settings {
        quick: cli.quick,
        cpus_kept_awake: awake.as_ref().map(|a| a.loops.clone()),
        round_trips: sizes.iter().map(|s| round_trips(*s, cli.quick)).collect(),
        sizes,
        duration_s: duration,
        latency_cap_s: if cli.quick { 1.0 } else { 5.0 },
        rates,
        runtime: "raw level: async mechanisms run a current-thread tokio runtime in each \
                  process (the client drives it from the benchmark thread; the server task is \
                  spawned on it), the choice for lowest latency on one connection; blocking \
                  mechanisms use plain threads. JSON-RPC level: every server runs on a \
                  two-worker multi-thread runtime (one worker for the two whose client \
                  busy-polls, ipc-jsonrpc-busypoll and jsonrpc-ipc-server-polled), every client \
                  on one current-thread runtime; jsonrpsee's HTTP/1.1 client serves requests \
                  in flight on one client from its connection pool"
            .to_owned(),
    };
    let plan = run::Plan {
        rpc_loads: if cli.load.is_empty() {
            &DEFAULT_LOADS[..]
        } else {
            &cli.load[..]
        }
        .iter()
        .map(|&(connections, in_flight)| RpcLoad {
            connections,
            in_flight,
            size: 64,
            duration: Duration::from_secs_f64(duration),
        })
        .collect(),
        settings,
    };

    let out_dir = cli.out_dir.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("create the output directory {}", out_dir.display()))?;
    // IPC_BENCH_ENDPOINT_DIR: an existing directory for the endpoints
    // (sockets, FIFOs, mappings) instead of a fresh private one.
    let fixed_dir = std::env::var_os("IPC_BENCH_ENDPOINT_DIR").map(PathBuf::from);
    let tmp = tempfile::Builder::new()
        .prefix("ipc-bench-")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        })
        .or_else(|_| tempfile::Builder::new().prefix("ipc-bench-").tempdir())
        .context("create a private temp directory for endpoints")?;

    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let command = std::env::var("IPC_BENCH_COMMAND").unwrap_or_else(|_| {
        std::iter::once("ipc-bench".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let load_before = sys::load_average();
    let tty = std::io::stderr().is_terminal();
    // The goal's comparison, taken again with the mechanisms interleaved.
    // In the registry's order: the baseline, ours, then the peers.
    let paired: Vec<mech::Mechanism> = all
        .iter()
        .filter(|m| chosen.iter().any(|c| c.name == m.name))
        .filter(|m| {
            results::LOCAL_GOALS
                .iter()
                .any(|g| g.names().any(|n| n == m.name))
        })
        .copied()
        .collect();
    let paired = if paired.len() >= 2 {
        paired
    } else {
        Vec::new()
    };
    let rounds: u64 = if cli.quick { 5 } else { 10 };
    let paired_steps = if paired.is_empty() { 0 } else { rounds };
    // The JSON-RPC goal's servers, also taken again in alternation, group
    // by group.
    let rpc_groups: Vec<Vec<mech::Mechanism>> = results::RPC_GOAL_GROUPS
        .iter()
        .map(|group| {
            group
                .iter()
                .filter_map(|name| chosen.iter().find(|m| m.name == *name).copied())
                .collect::<Vec<_>>()
        })
        .filter(|g| g.len() >= 2 && g.iter().any(|m| m.group == mech::Group::Ours))
        .collect();
    let rpc_rounds: u64 = if cli.quick { 3 } else { 5 };
    let rpc_paired_steps = rpc_rounds * plan.rpc_loads.len() as u64 * rpc_groups.len() as u64;
    let bar = run::progress(plan.steps() * chosen.len() as u64 + paired_steps + rpc_paired_steps);
    let mut mechanisms = Vec::new();
    for (i, m) in chosen.iter().enumerate() {
        if !tty {
            eprintln!("ipc-bench: [{}/{}] {}", i + 1, chosen.len(), m.name);
        }
        mechanisms.push(run::mechanism(
            m,
            &plan,
            fixed_dir.as_deref().unwrap_or(tmp.path()),
            &bar,
        ));
    }
    let interleaved = if paired.is_empty() {
        Vec::new()
    } else {
        if !tty {
            eprintln!(
                "ipc-bench: interleaved 64B round trips: {}",
                paired.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
            );
        }
        run::interleaved(
            &paired,
            64,
            round_trips(64, cli.quick),
            rounds,
            fixed_dir.as_deref().unwrap_or(tmp.path()),
            &bar,
        )
    };
    let mut interleaved_rpc = Vec::new();
    for group in &rpc_groups {
        if !tty {
            eprintln!(
                "ipc-bench: interleaved JSON-RPC: {}",
                group.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
            );
        }
        interleaved_rpc.extend(run::interleaved_rpc(
            group,
            &plan.rpc_loads,
            rpc_rounds,
            fixed_dir.as_deref().unwrap_or(tmp.path()),
            &bar,
        ));
    }
    bar.finish_and_clear();
    drop(awake);

    let run = Run {
        tool: "ipc-bench",
        started_unix: started,
        started: sys::utc(started),
        command,
        machine: sys::Machine {
            load: [load_before, sys::load_average()],
            ..sys::Machine::detect()
        },
        settings: plan.settings.clone(),
        mechanisms,
        interleaved_size: 64,
        interleaved_rounds: rounds,
        interleaved,
        interleaved_rpc_rounds: rpc_rounds,
        interleaved_rpc,
        not_built: mech::not_built()
            .into_iter()
            .map(|(name, why)| results::NotBuilt {
                name: name.to_owned(),
                why: why.to_owned(),
            })
            .collect(),
    };
    let json = serde_json::to_string_pretty(&run)?;
    let json_path = out_dir.join("results.json");
    std::fs::write(&json_path, &json).with_context(|| format!("write {}", json_path.display()))?;
    let charts = charts::write(&run, &out_dir).context("draw the charts")?;
    let md_path = out_dir.join("report.md");
    std::fs::write(&md_path, run.markdown(&charts))
        .with_context(|| format!("write {}", md_path.display()))?;
    if cli.json {
        println!("{json}");
    } else {
        print!("{}", run.text());
    }
    eprintln!(
        "ipc-bench: wrote {}, {} and {} chart(s) in {}",
        json_path.file_name().unwrap_or_default().to_string_lossy(),
        md_path.file_name().unwrap_or_default().to_string_lossy(),
        charts.len(),
        out_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_bad_ones_say_why() {
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_size("2MiB").unwrap_err().contains("out of range"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn loads_parse_as_connections_by_in_flight_and_bad_ones_say_why() {
        assert_eq!(parse_load("1x16").unwrap(), (1, 16));
        assert_eq!(parse_load(" 64X1 ").unwrap(), (64, 1));
        for bad in ["0x1", "1x0", "1x257", "257x1", "16", "ax1", "1x", ""] {
            let e = parse_load(bad).unwrap_err();
            assert!(e.contains("CONNECTIONSxIN_FLIGHT"), "{bad:?}: {e}");
        }
        let cli = Cli::try_parse_from(["ipc-bench", "--load", "1x1,64x1"]).unwrap();
        assert_eq!(cli.load, vec![(1, 1), (64, 1)]);
    }
}
