//! Runs the tests of each mechanism against its own server process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::mech::{ConnectCtx, Mechanism, RpcLoad, ServerKind, Session};
use crate::proto::LatencySpec;
use crate::results::{
    Cpu, Dist, LatencyRow, MechResult, PacedRow, RpcRow, Settings, ThroughputRow,
};
use crate::sys;

/// How long a server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Extra time a test may take past its own limit before its server is killed.
const TEST_GRACE: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The settings recorded with the results.
    pub settings: Settings,
    /// JSON-RPC loads.
    pub rpc_loads: Vec<RpcLoad>,
}

impl Plan {
    /// Tests of one mechanism (for the progress bar).
    pub fn steps(&self) -> u64 {
        (2 * self.settings.sizes.len() + self.settings.rates.len() + self.rpc_loads.len()) as u64
    }
}

/// The server process of one mechanism.
struct Server {
    child: Child,
    /// Held open so the server exits when we do (it watches its stdin).
    stdin: Option<std::process::ChildStdin>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs this executable again with `args` (a hidden subcommand), its stdin
/// and stdout piped to us.
fn spawn_self<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
    what: &str,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("find the ipc-bench executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    ipc_testkit::start(&mut cmd).with_context(|| format!("spawn {what}"))
}

fn spawn(m: &Mechanism, endpoint: &Path) -> anyhow::Result<(Server, ConnectCtx)> {
    let mut child = spawn_self(
        [
            "serve".as_ref(),
            "--mechanism".as_ref(),
            m.name.as_ref(),
            "--endpoint".as_ref(),
            endpoint.as_os_str(),
        ],
        "the server process",
    )?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let mut ctx = ConnectCtx {
        endpoint: endpoint.to_path_buf(),
        info: String::new(),
        stdin: None,
        stdout: None,
    };
    if m.server == ServerKind::ChildStdio {
        ctx.stdin = stdin;
        ctx.stdout = stdout;
        return Ok((Server { child, stdin: None }, ctx));
    }
    let (server, info) = wait_ready(
        Server { child, stdin },
        stdout,
        &format!("the {} server", m.name),
    )?;
    ctx.info = info;
    Ok((server, ctx))
}

/// Waits for a child process of ours to print `ready [info]` on `stdout`;
/// returns it with the info, or stops it and says why it did not start.
fn wait_ready(
    mut child: Server,
    stdout: Option<std::process::ChildStdout>,
    what: &str,
) -> anyhow::Result<(Server, String)> {
    let Some(out) = stdout else {
        child.stop();
        anyhow::bail!("{what} did not start: no stdout");
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = BufReader::new(out).read_line(&mut line).map(|_| line);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(line)) if line.starts_with("ready") => {
            let info = line["ready".len()..].trim().to_owned();
            Ok((child, info))
        }
        other => {
            let status = child.child.try_wait().ok().flatten();
            child.stop();
            let why = match other {
                Ok(Ok(l)) if l.is_empty() => "it exited before it was ready".to_owned(),
                Ok(Ok(l)) => format!("it said {l:?} instead of ready"),
                Ok(Err(e)) => format!("reading its stdout failed: {e}"),
                Err(_) => format!("it was not ready within {READY_TIMEOUT:?}"),
            };
            anyhow::bail!(
                "{what} did not start: {why}{}",
                status.map(|s| format!(" ({s})")).unwrap_or_default()
            )
        }
    }
}

/// Busy loops at the lowest scheduling priority on every CPU, in a process
/// of their own (`--keep-cpus-awake`), for as long as this value lives.
pub struct KeepAwake {
    process: Option<Server>,
    /// What runs, as the results record it.
    pub loops: crate::results::KeptAwake,
}

impl KeepAwake {
    /// Starts one busy loop per CPU.
    pub fn start(threads: usize) -> anyhow::Result<KeepAwake> {
        let what = "the process that keeps the CPUs awake";
        let mut child = spawn_self(["keep-awake", "--threads", &threads.to_string()], what)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (process, priority) = wait_ready(Server { child, stdin }, stdout, what)?;
        Ok(KeepAwake {
            process: Some(process),
            loops: crate::results::KeptAwake { threads, priority },
        })
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop();
        }
    }
}

/// Kills the server if a test runs far past its limit, so the client's
/// blocked read returns instead of hanging the run.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    fn arm(pid: Option<u32>, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        if let Some(pid) = pid {
            std::thread::spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    eprintln!("ipc-bench: a test ran past {limit:?}; killing server {pid}");
                    // Our own child, not reaped while the test still runs.
                    sys::kill(pid);
                }
            });
        }
        Watchdog { done: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// Measures CPU time of both processes across a test.
struct CpuMeter {
    server: Option<u32>,
    t0: Instant,
    c0: Option<u64>,
    s0: Option<u64>,
}

impl CpuMeter {
    fn start(server: Option<u32>) -> CpuMeter {
        CpuMeter {
            server,
            t0: Instant::now(),
            c0: sys::cpu_ns(std::process::id()),
            s0: server.and_then(sys::cpu_ns),
        }
    }
    fn stop(self) -> Cpu {
        let wall = self.t0.elapsed().as_nanos() as f64;
        let c1 = sys::cpu_ns(std::process::id());
        let s1 = self.server.and_then(sys::cpu_ns);
        let frac = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if wall > 0.0 => Some(b.saturating_sub(a) as f64 / wall),
            _ => None,
        };
        Cpu {
            client: frac(self.c0, c1),
            server: frac(self.s0, s1),
        }
    }
}

fn unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported
}

/// Runs every test of `m`, returning its results (failures included, never a panic).
pub fn mechanism(m: &Mechanism, plan: &Plan, dir: &Path, bar: &ProgressBar) -> MechResult {
    let mut res = MechResult {
        name: m.name.to_owned(),
        group: m.group,
        baseline: m.baseline.to_owned(),
        about: m.about.to_owned(),
        error: None,
        latency: Vec::new(),
        throughput: Vec::new(),
        paced: Vec::new(),
        rpc: Vec::new(),
    };
    let endpoint: PathBuf = dir.join(format!("{}.ep", m.name));
    let (server, ctx) = if m.server == ServerKind::None {
        let ctx = ConnectCtx {
            endpoint,
            info: String::new(),
            stdin: None,
            stdout: None,
        };
        (None, ctx)
    } else {
        match spawn(m, &endpoint) {
            Ok((s, c)) => (Some(s), c),
            Err(e) => {
                res.error = Some(format!("{e:#}"));
                bar.inc(plan.steps());
                return res;
            }
        }
    };
    let pid = server.as_ref().map(Server::pid);
    let session = (m.connect)(ctx).with_context(|| format!("connect to the {} server", m.name));
    let mut session: Box<dyn Session> = match session {
        Ok(s) => s,
        Err(e) => {
            res.error = Some(format!("{e:#}"));
            bar.inc(plan.steps());
            if let Some(s) = server {
                s.stop();
            }
            return res;
        }
    };
    run_tests(&mut *session, m, plan, pid, bar, &mut res);
    let _ = session.close();
    drop(session);
    if let Some(s) = server {
        s.stop();
    }
    res
}

fn run_tests(
    session: &mut dyn Session,
    m: &Mechanism,
    plan: &Plan,
    pid: Option<u32>,
    bar: &ProgressBar,
    res: &mut MechResult,
) {
    let s = &plan.settings;
    let cap = Duration::from_secs_f64(s.latency_cap_s);
    let duration = Duration::from_secs_f64(s.duration_s);
    // After a broken connection the remaining tests are skipped, not hung on.
    let mut broken: Option<String> = None;
    let skip = |b: &Option<String>| {
        b.as_ref()
            .map(|e| format!("skipped after an earlier failure: {e}"))
    };

    for (i, &size) in s.sizes.iter().enumerate() {
        bar.set_message(format!(
            "{} latency {}",
            m.name,
            crate::results::fmt_size(size)
        ));
        let spec = LatencySpec {
            size,
            count: s.round_trips[i],
            warmup: (s.round_trips[i] / 10).max(10),
            cap,
            rate: None,
        };
        let row = if let Some(e) = skip(&broken) {
            Some(LatencyRow {
                size,
                dist: None,
                cpu: Cpu::default(),
                error: Some(e),
            })
        } else {
            let _wd = Watchdog::arm(pid, cap + TEST_GRACE);
            let meter = CpuMeter::start(pid);
            let r = session.latency(spec);
            let cpu = meter.stop();
            match r {
                Ok(h) => Some(LatencyRow {
                    size,
                    dist: Some(Dist::of(&h)),
                    cpu,
                    error: None,
                }),
                Err(e) if unsupported(&e) => None,
                Err(e) => {
                    broken = Some(e.to_string());
                    Some(LatencyRow {
                        size,
                        dist: None,
                        cpu,
                        error: Some(e.to_string()),
                    })
                }
            }
        };
        res.latency.extend(row);
        bar.inc(1);
    }

    for &size in &s.sizes {
        bar.set_message(format!(
            "{} stream {}",
            m.name,
            crate::results::fmt_size(size)
        ));
        let row = if let Some(e) = skip(&broken) {
            Some(ThroughputRow {
                size,
                msgs_per_s: None,
                gb_per_s: None,
                cpu: Cpu::default(),
                error: Some(e),
            })
        } else {
            let _wd = Watchdog::arm(pid, duration + TEST_GRACE);
            let meter = CpuMeter::start(pid);
            let r = session.throughput(size, duration);
            let cpu = meter.stop();
            match r {
                Ok(st) => {
                    let secs = st.elapsed.as_secs_f64();
                    Some(ThroughputRow {
                        size,
                        msgs_per_s: Some(st.messages as f64 / secs),
                        gb_per_s: Some(st.messages as f64 * size as f64 / secs / 1e9),
                        cpu,
                        error: None,
                    })
                }
                Err(e) if unsupported(&e) => None,
                Err(e) => {
                    broken = Some(e.to_string());
                    Some(ThroughputRow {
                        size,
                        msgs_per_s: None,
                        gb_per_s: None,
                        cpu,
                        error: Some(e.to_string()),
                    })
                }
            }
        };
        res.throughput.extend(row);
        bar.inc(1);
    }

    let paced_size = 64;
    for &rate in &s.rates {
        bar.set_message(format!(
            "{} paced {}/s",
            m.name,
            crate::results::fmt_rate(rate)
        ));
        let count = (rate * s.duration_s).ceil().max(10.0) as u64;
        let spec = LatencySpec {
            size: paced_size,
            count,
            warmup: (count / 20).max(5),
            cap: duration * 2,
            rate: Some(rate),
        };
        let row = if let Some(e) = skip(&broken) {
            Some(PacedRow {
                size: paced_size,
                rate,
                achieved: None,
                dist: None,
                cpu: Cpu::default(),
                error: Some(e),
            })
        } else {
            let _wd = Watchdog::arm(pid, duration * 2 + TEST_GRACE);
            let meter = CpuMeter::start(pid);
            let t = Instant::now();
            let r = session.latency(spec);
            let elapsed = t.elapsed().as_secs_f64();
            let cpu = meter.stop();
            match r {
                Ok(h) => Some(PacedRow {
                    size: paced_size,
                    rate,
                    // The warm-up ran at the same pace, inside the same span.
                    achieved: Some((h.len() + spec.warmup) as f64 / elapsed),
                    dist: Some(Dist::of(&h)),
                    cpu,
                    error: None,
                }),
                Err(e) if unsupported(&e) => None,
                Err(e) => {
                    broken = Some(e.to_string());
                    Some(PacedRow {
                        size: paced_size,
                        rate,
                        achieved: None,
                        dist: None,
                        cpu,
                        error: Some(e.to_string()),
                    })
                }
            }
        };
        res.paced.extend(row);
        bar.inc(1);
    }

    for &load in &plan.rpc_loads {
        bar.set_message(format!(
            "{} rpc {}x{}",
            m.name, load.connections, load.in_flight
        ));
        let row = if let Some(e) = skip(&broken) {
            Some(RpcRow {
                connections: load.connections,
                in_flight: load.in_flight,
                size: load.size,
                calls_per_s: None,
                dist: None,
                cpu: Cpu::default(),
                error: Some(e),
            })
        } else {
            let _wd = Watchdog::arm(pid, load.duration + TEST_GRACE);
            let meter = CpuMeter::start(pid);
            let r = session.rpc(load);
            let cpu = meter.stop();
            match r {
                Ok(o) => Some(RpcRow {
                    connections: load.connections,
                    in_flight: load.in_flight,
                    size: load.size,
                    calls_per_s: Some(o.calls as f64 / o.elapsed.as_secs_f64()),
                    dist: Some(Dist::of(&o.hist)),
                    cpu,
                    error: None,
                }),
                Err(e) if unsupported(&e) => None,
                Err(e) => {
                    broken = Some(e.to_string());
                    Some(RpcRow {
                        connections: load.connections,
                        in_flight: load.in_flight,
                        size: load.size,
                        calls_per_s: None,
                        dist: None,
                        cpu,
                        error: Some(e.to_string()),
                    })
                }
            }
        };
        res.rpc.extend(row);
        bar.inc(1);
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:32}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Round trips of several mechanisms taken in alternation: `rounds` rounds,
/// each running every mechanism for its share of the round trips (in a
/// rotated order), so a disturbance from elsewhere on the machine falls on
/// all of them alike. The figures the goals are judged on come from here.
pub fn interleaved(
    mechs: &[Mechanism],
    size: usize,
    total: u64,
    rounds: u64,
    dir: &Path,
    bar: &ProgressBar,
) -> Vec<crate::results::InterleavedRow> {
    let mut live: Vec<(Mechanism, Option<Server>, Box<dyn Session>)> = Vec::new();
    let mut rows = Vec::new();
    for m in mechs {
        let endpoint = dir.join(format!("{}.paired.ep", m.name));
        let started = spawn(m, &endpoint).and_then(|(server, ctx)| match (m.connect)(ctx) {
            Ok(s) => Ok((server, s)),
            Err(e) => {
                server.stop();
                Err(e)
            }
        });
        match started {
            Ok((server, session)) => live.push((*m, Some(server), session)),
            Err(e) => rows.push(crate::results::InterleavedRow {
                name: m.name.to_owned(),
                baseline: m.baseline.to_owned(),
                dist: None,
                error: Some(format!("{e:#}")),
            }),
        }
    }
    let mut hists: Vec<Option<hdrhistogram::Histogram<u64>>> = live
        .iter()
        .map(|_| Some(crate::proto::new_histogram()))
        .collect();
    let mut errors: Vec<Option<String>> = live.iter().map(|_| None).collect();
    let per = (total / rounds).max(1);
    for round in 0..rounds {
        bar.set_message(format!(
            "interleaved {} round {}",
            crate::results::fmt_size(size),
            round + 1
        ));
        for k in 0..live.len() {
            let i = (k + round as usize) % live.len();
            if errors[i].is_some() {
                continue;
            }
            let (_, server, session) = &mut live[i];
            let spec = LatencySpec {
                size,
                count: per,
                warmup: (per / 10).max(10),
                cap: Duration::from_secs(30),
                rate: None,
            };
            let _wd = Watchdog::arm(server.as_ref().map(Server::pid), spec.cap + TEST_GRACE);
            match session.latency(spec) {
                Ok(h) => {
                    if let Some(acc) = hists[i].as_mut() {
                        let _ = acc.add(&h);
                    }
                }
                Err(e) => errors[i] = Some(e.to_string()),
            }
        }
        bar.inc(1);
    }
    for (i, (m, server, mut session)) in live.into_iter().enumerate() {
        let _ = session.close();
        drop(session);
        if let Some(s) = server {
            s.stop();
        }
        let err = errors[i].take();
        rows.push(crate::results::InterleavedRow {
            name: m.name.to_owned(),
            baseline: m.baseline.to_owned(),
            dist: if err.is_none() {
                hists[i].take().map(|h| Dist::of(&h))
            } else {
                None
            },
            error: err,
        });
    }
    // Keep the order the mechanisms were given in.
    rows.sort_by_key(|r| mechs.iter().position(|m| m.name == r.name));
    rows
}

/// JSON-RPC calls/s of `mechs` under each load, taken in `rounds` rounds,
/// each round running every server for the load's duration in a rotated
/// order, so disturbance from other work falls on all of them alike. Every
/// server stays up (and its session connected) for the whole comparison.
pub fn interleaved_rpc(
    mechs: &[Mechanism],
    loads: &[RpcLoad],
    rounds: u64,
    dir: &Path,
    bar: &ProgressBar,
) -> Vec<crate::results::InterleavedRpcRow> {
    use crate::results::InterleavedRpcRow;
    let mut live: Vec<(Mechanism, Option<Server>, Box<dyn Session>)> = Vec::new();
    let mut failed: Vec<(Mechanism, String)> = Vec::new();
    for m in mechs {
        let endpoint = dir.join(format!("{}.rpc-paired.ep", m.name));
        let started = spawn(m, &endpoint).and_then(|(server, ctx)| match (m.connect)(ctx) {
            Ok(s) => Ok((server, s)),
            Err(e) => {
                server.stop();
                Err(e)
            }
        });
        match started {
            Ok((server, session)) => live.push((*m, Some(server), session)),
            Err(e) => failed.push((*m, format!("{e:#}"))),
        }
    }
    let mut rows: Vec<InterleavedRpcRow> = Vec::new();
    for load in loads {
        for (m, e) in &failed {
            rows.push(InterleavedRpcRow {
                name: m.name.to_owned(),
                connections: load.connections,
                in_flight: load.in_flight,
                rounds: Vec::new(),
                error: Some(e.clone()),
            });
        }
        let first = rows.len();
        for (m, _, _) in &live {
            rows.push(InterleavedRpcRow {
                name: m.name.to_owned(),
                connections: load.connections,
                in_flight: load.in_flight,
                rounds: Vec::new(),
                error: None,
            });
        }
        for round in 0..rounds {
            bar.set_message(format!(
                "interleaved rpc {}x{} round {}",
                load.connections,
                load.in_flight,
                round + 1
            ));
            for k in 0..live.len() {
                let i = (k + round as usize) % live.len();
                let row = &mut rows[first + i];
                if row.error.is_some() {
                    row.rounds.push(None);
                    continue;
                }
                let (_, server, session) = &mut live[i];
                let _wd =
                    Watchdog::arm(server.as_ref().map(Server::pid), load.duration + TEST_GRACE);
                match session.rpc(*load) {
                    Ok(o) => row
                        .rounds
                        .push(Some(o.calls as f64 / o.elapsed.as_secs_f64())),
                    Err(e) => {
                        row.rounds.push(None);
                        row.error = Some(e.to_string());
                    }
                }
            }
            bar.inc(1);
        }
    }
    for (_, server, mut session) in live {
        let _ = session.close();
        drop(session);
        if let Some(s) = server {
            s.stop();
        }
    }
    // Ours first, then the peers, load by load.
    rows.sort_by_key(|r| {
        (
            loads
                .iter()
                .position(|l| l.connections == r.connections && l.in_flight == r.in_flight),
            mechs.iter().position(|m| m.name == r.name),
        )
    });
    rows
}
