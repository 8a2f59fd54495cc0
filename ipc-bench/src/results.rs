//! The results of one run, and how they are shown: a text table, a Markdown
//! report and JSON. Every figure comes from the run being rendered; each is
//! shown beside its ratio to the baseline named for its mechanism.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::mech::Group;
use crate::sys::Machine;

/// One whole run.
#[derive(Debug, Serialize)]
pub struct Run {
    /// Always "ipc-bench".
    pub tool: &'static str,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// The same, readable.
    pub started: String,
    /// The command line that produced these results.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// What was asked for.
    pub settings: Settings,
    /// One entry per mechanism, in run order.
    pub mechanisms: Vec<MechResult>,
    /// Mechanisms this build could not include, with why.
    pub not_built: Vec<NotBuilt>,
    /// Message size of the interleaved comparison.
    pub interleaved_size: usize,
    /// Rounds of the interleaved comparison.
    pub interleaved_rounds: u64,
    /// Round trips of the goal's mechanisms taken in alternation.
    pub interleaved: Vec<InterleavedRow>,
    /// Rounds of the interleaved JSON-RPC comparison.
    pub interleaved_rpc_rounds: u64,
    /// JSON-RPC calls/s of the goal's servers taken in alternation.
    pub interleaved_rpc: Vec<InterleavedRpcRow>,
}

/// One server's JSON-RPC calls/s under one load in the interleaved
/// comparison.
#[derive(Debug, Clone, Serialize)]
pub struct InterleavedRpcRow {
    /// Mechanism name.
    pub name: String,
    /// Connections.
    pub connections: usize,
    /// Requests in flight on each connection.
    pub in_flight: usize,
    /// Calls per second in each round, in round order (`None`: it failed).
    pub rounds: Vec<Option<f64>>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl InterleavedRpcRow {
    /// Median calls/s over the rounds that succeeded.
    pub fn median(&self) -> Option<f64> {
        median(self.rounds.iter().flatten().copied().collect())
    }
}

/// The JSON-RPC servers the interleaved comparisons alternate, in groups
/// run one after the other: in each, ours first, then the peers under the
/// same client load, against which the goal judges it. The pair whose
/// client busy-polls runs apart, so that its spinning (every CPU busy for
/// the length of a test) does not weigh on the rounds of the others.
pub const RPC_GOAL_GROUPS: &[&[&str]] = &[
    &["ipc-jsonrpc", "jsonrpc-ipc-server", "jsonrpsee-http"],
    &["ipc-jsonrpc-busypoll", "jsonrpc-ipc-server-polled"],
];

/// The group of the interleaved JSON-RPC comparison that `name` is in.
fn rpc_group(name: &str) -> Option<&'static [&'static str]> {
    RPC_GOAL_GROUPS.iter().copied().find(|g| g.contains(&name))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One mechanism's round trips in the interleaved comparison.
#[derive(Debug, Clone, Serialize)]
pub struct InterleavedRow {
    /// Mechanism name.
    pub name: String,
    /// The mechanism its ratios refer to.
    pub baseline: String,
    /// All rounds together.
    pub dist: Option<Dist>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A mechanism left out of the build.
#[derive(Debug, Clone, Serialize)]
pub struct NotBuilt {
    /// Its name.
    pub name: String,
    /// Why it is missing.
    pub why: String,
}

/// The latency goal on one platform's local stream: our transport's
/// 64 B round trip within 1.2x of the raw OS baseline, and at least as fast
/// as the peers. Each mechanism named here that a run has takes part in the
/// interleaved comparison.
#[derive(Debug, Clone, Copy)]
pub struct LocalGoal {
    /// The raw baseline.
    pub raw: &'static str,
    /// Our variants judged, each with how it is set up.
    pub ours: &'static [(&'static str, &'static str)],
    /// The peers compared with.
    pub peers: &'static [&'static str],
}

impl LocalGoal {
    /// Every mechanism the goal names, baseline first.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.raw)
            .chain(self.ours.iter().map(|o| o.0))
            .chain(self.peers.iter().copied())
    }
}

/// The local-stream goals: Unix sockets, Windows named pipes.
pub const LOCAL_GOALS: [LocalGoal; 2] = [
    LocalGoal {
        raw: "unix-raw",
        ours: &[
            ("ipc-unix", "default settings"),
            ("ipc-unix-busypoll", "busy polling on"),
        ],
        peers: &["tokio-unix", "interprocess"],
    },
    LocalGoal {
        raw: "npipe-raw",
        ours: &[("ipc-pipe", "default settings")],
        peers: &["tokio-pipe", "interprocess"],
    },
];

/// The knobs of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The `--quick` pass.
    pub quick: bool,
    /// With `--keep-cpus-awake`: the busy loops that kept every CPU from
    /// idling during the run.
    pub cpus_kept_awake: Option<KeptAwake>,
    /// Message sizes, bytes.
    pub sizes: Vec<usize>,
    /// Recorded round trips per latency test, by size (same for every mechanism).
    pub round_trips: Vec<u64>,
    /// Seconds per throughput and paced test.
    pub duration_s: f64,
    /// Longest a latency test may run before it stops with fewer samples.
    pub latency_cap_s: f64,
    /// Paced rates, messages per second.
    pub rates: Vec<f64>,
    /// How async clients and servers are driven.
    pub runtime: String,
}

/// The busy loops of `--keep-cpus-awake`.
#[derive(Debug, Clone, Serialize)]
pub struct KeptAwake {
    /// One per CPU.
    pub threads: usize,
    /// Their scheduling priority, as the OS calls it (`SCHED_IDLE`, ...).
    pub priority: String,
}

impl KeptAwake {
    /// One line for the report's header.
    pub fn describe(&self) -> String {
        format!(
            "CPUs kept awake (--keep-cpus-awake): {} busy loop(s) at {} in a process of their \
             own, so no wake-up found a CPU idle; their CPU time is in no column, and the load \
             average counts them (so it cannot show other work)",
            self.threads, self.priority
        )
    }
}

/// All figures of one mechanism.
#[derive(Debug, Serialize)]
pub struct MechResult {
    /// Mechanism name.
    pub name: String,
    /// Baseline, ours or peer.
    pub group: Group,
    /// The mechanism its ratios refer to.
    pub baseline: String,
    /// What is measured.
    pub about: String,
    /// Set when the mechanism could not be started at all.
    pub error: Option<String>,
    /// Back-to-back round trips by size.
    pub latency: Vec<LatencyRow>,
    /// One-way streams by size.
    pub throughput: Vec<ThroughputRow>,
    /// Round trips at fixed rates.
    pub paced: Vec<PacedRow>,
    /// JSON-RPC calls under load.
    pub rpc: Vec<RpcRow>,
}

/// CPU used during a test, in cores (1.0 = one core busy the whole time).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cpu {
    /// The benchmark (client) process.
    pub client: Option<f64>,
    /// The server process.
    pub server: Option<f64>,
}

/// A latency distribution.
#[derive(Debug, Clone, Serialize)]
pub struct Dist {
    /// Samples recorded.
    pub samples: u64,
    /// Mean, ns.
    pub mean_ns: f64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 90th percentile, ns.
    pub p90_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
    /// `[percentile, ns]` points for a CDF.
    pub cdf: Vec<[f64; 2]>,
}

impl Dist {
    /// Summarises a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Dist {
        let mut cdf = Vec::new();
        let mut q = 0.0;
        while q < 100.0 {
            cdf.push([q, h.value_at_percentile(q) as f64]);
            q += if q < 90.0 { 2.0 } else { 0.5 };
        }
        for q in [99.5, 99.9, 99.95, 99.99, 100.0] {
            cdf.push([q, h.value_at_percentile(q) as f64]);
        }
        cdf.dedup_by(|a, b| a[0] <= b[0]);
        Dist {
            samples: h.len(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            cdf,
        }
    }
}

/// Back-to-back round trips of one size.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// Message size, bytes.
    pub size: usize,
    /// The distribution, unless the test failed.
    pub dist: Option<Dist>,
    /// CPU use.
    pub cpu: Cpu,
    /// Why the test failed.
    pub error: Option<String>,
}

/// A one-way stream of one size.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// Message size, bytes.
    pub size: usize,
    /// Messages per second.
    pub msgs_per_s: Option<f64>,
    /// Payload gigabytes (10^9 bytes) per second.
    pub gb_per_s: Option<f64>,
    /// CPU use.
    pub cpu: Cpu,
    /// Why the test failed.
    pub error: Option<String>,
}

/// Round trips at a fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct PacedRow {
    /// Message size, bytes.
    pub size: usize,
    /// Rate asked for, messages per second.
    pub rate: f64,
    /// Rate reached (one round trip at a time: lower when a round trip takes longer than the interval).
    pub achieved: Option<f64>,
    /// The distribution.
    pub dist: Option<Dist>,
    /// CPU use.
    pub cpu: Cpu,
    /// Why the test failed.
    pub error: Option<String>,
}

/// JSON-RPC calls under one load.
#[derive(Debug, Clone, Serialize)]
pub struct RpcRow {
    /// Connections.
    pub connections: usize,
    /// In flight per connection.
    pub in_flight: usize,
    /// Parameter size, bytes.
    pub size: usize,
    /// Calls answered per second.
    pub calls_per_s: Option<f64>,
    /// Per-call latency.
    pub dist: Option<Dist>,
    /// CPU use.
    pub cpu: Cpu,
    /// Why the test failed.
    pub error: Option<String>,
}

/// Human units for a duration in ns.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0}ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// Human units for a size in bytes.
pub fn fmt_size(b: usize) -> String {
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{}MiB", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{}KiB", b >> 10)
    } else {
        format!("{b}B")
    }
}

/// Human units for a rate.
pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn fmt_ratio(x: Option<f64>) -> String {
    match x {
        Some(r) if r.is_finite() => format!("{r:.2}x"),
        _ => "-".to_owned(),
    }
}

fn fmt_cpu(c: Option<f64>) -> String {
    c.map_or("-".to_owned(), |c| format!("{:.0}%", c * 100.0))
}

fn ratio(x: f64, base: Option<f64>) -> Option<f64> {
    base.filter(|b| *b > 0.0).map(|b| x / b)
}

fn short_err(e: &str) -> String {
    let e = e.lines().next().unwrap_or(e);
    if e.chars().count() > 70 {
        format!("FAILED: {}...", e.chars().take(67).collect::<String>())
    } else {
        format!("FAILED: {e}")
    }
}

/// A table: header and rows of cells, rendered as aligned text or Markdown.
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }
    fn row(&mut self, r: Vec<String>) {
        self.rows.push(r);
    }
    fn text(&self) -> String {
        let n = self.head.len();
        let mut w = vec![0; n];
        for r in std::iter::once(&self.head).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, r: &[String]| {
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    let c = r.get(i).map_or("", |s| s.as_str());
                    if i == 0 || r.len() < n {
                        format!("{c:<w$}", w = w[i])
                    } else {
                        format!("{c:>w$}", w = w[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        };
        line(&mut out, &self.head);
        let total: usize = w.iter().sum::<usize>() + 2 * (n - 1);
        let _ = writeln!(out, "{}", "-".repeat(total));
        for r in &self.rows {
            line(&mut out, r);
        }
        out
    }
    fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.head.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            self.head
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { " --- |" } else { " ---: |" })
                .collect::<String>()
        );
        for r in &self.rows {
            let mut cells = r.clone();
            cells.resize(self.head.len(), String::new());
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

impl Run {
    /// A warning when other work kept the CPUs busy during the run.
    pub fn load_warning(&self) -> Option<String> {
        // The busy loops of --keep-cpus-awake keep the load up on their
        // own: it cannot show other work then.
        if self.settings.cpus_kept_awake.is_some() {
            return None;
        }
        let cpus = self.machine.cpus as f64;
        let worst = self
            .machine
            .load
            .iter()
            .flatten()
            .fold(0.0f64, |a, &b| a.max(b));
        (worst > cpus * 0.75).then(|| {
            format!(
                "WARNING: the load average reached {worst:.1} on {} CPUs: other work competed \
                 for the CPUs during this run, so tails and the spinning mechanisms \
                 (spin-shm, iceoryx2, *-spin, *-busypoll) are disturbed; rerun on an idle machine for \
                 figures to rely on",
                self.machine.cpus
            )
        })
    }

    fn mech(&self, name: &str) -> Option<&MechResult> {
        self.mechanisms.iter().find(|m| m.name == name)
    }

    fn base_latency(&self, m: &MechResult, size: usize) -> Option<&Dist> {
        self.mech(&m.baseline)?
            .latency
            .iter()
            .find(|r| r.size == size)?
            .dist
            .as_ref()
    }

    fn latency_table(&self) -> Table {
        let mut t = Table::new(&[
            "mechanism",
            "vs",
            "size",
            "p50",
            "x",
            "p90",
            "x",
            "p99",
            "x",
            "p99.9",
            "x",
            "max",
            "x",
            "n",
            "cpu cli",
            "cpu srv",
        ]);
        for m in &self.mechanisms {
            for r in &m.latency {
                let mut cells = vec![m.name.clone(), m.baseline.clone(), fmt_size(r.size)];
                match (&r.dist, &r.error) {
                    (Some(d), _) => {
                        let b = self.base_latency(m, r.size);
                        let pick: [(u64, Option<u64>); 5] = [
                            (d.p50_ns, b.map(|b| b.p50_ns)),
                            (d.p90_ns, b.map(|b| b.p90_ns)),
                            (d.p99_ns, b.map(|b| b.p99_ns)),
                            (d.p999_ns, b.map(|b| b.p999_ns)),
                            (d.max_ns, b.map(|b| b.max_ns)),
                        ];
                        for (v, bv) in pick {
                            cells.push(fmt_ns(v as f64));
                            cells.push(fmt_ratio(ratio(v as f64, bv.map(|x| x as f64))));
                        }
                        cells.push(d.samples.to_string());
                        cells.push(fmt_cpu(r.cpu.client));
                        cells.push(fmt_cpu(r.cpu.server));
                    }
                    (None, e) => cells.push(short_err(e.as_deref().unwrap_or("no result"))),
                }
                t.row(cells);
            }
        }
        t
    }

    fn interleaved_table(&self) -> Table {
        let mut t = Table::new(&[
            "mechanism",
            "vs",
            "p50",
            "x",
            "p90",
            "x",
            "p99",
            "x",
            "p99.9",
            "x",
            "max",
            "x",
            "n",
        ]);
        for r in &self.interleaved {
            let mut cells = vec![r.name.clone(), r.baseline.clone()];
            match &r.dist {
                Some(d) => {
                    let b = self
                        .interleaved
                        .iter()
                        .find(|x| x.name == r.baseline)
                        .and_then(|x| x.dist.as_ref());
                    let pick: [(u64, Option<u64>); 5] = [
                        (d.p50_ns, b.map(|b| b.p50_ns)),
                        (d.p90_ns, b.map(|b| b.p90_ns)),
                        (d.p99_ns, b.map(|b| b.p99_ns)),
                        (d.p999_ns, b.map(|b| b.p999_ns)),
                        (d.max_ns, b.map(|b| b.max_ns)),
                    ];
                    for (v, bv) in pick {
                        cells.push(fmt_ns(v as f64));
                        cells.push(fmt_ratio(ratio(v as f64, bv.map(|x| x as f64))));
                    }
                    cells.push(d.samples.to_string());
                }
                None => cells.push(short_err(r.error.as_deref().unwrap_or("no result"))),
            }
            t.row(cells);
        }
        t
    }

    fn throughput_table(&self) -> Table {
        let mut t = Table::new(&[
            "mechanism",
            "vs",
            "size",
            "msg/s",
            "x",
            "GB/s",
            "x",
            "cpu cli",
            "cpu srv",
        ]);
        for m in &self.mechanisms {
            for r in &m.throughput {
                let mut cells = vec![m.name.clone(), m.baseline.clone(), fmt_size(r.size)];
                match (r.msgs_per_s, r.gb_per_s) {
                    (Some(mps), Some(gbs)) => {
                        let base = self
                            .mech(&m.baseline)
                            .and_then(|b| b.throughput.iter().find(|x| x.size == r.size));
                        cells.push(fmt_rate(mps));
                        cells.push(fmt_ratio(ratio(mps, base.and_then(|b| b.msgs_per_s))));
                        cells.push(format!("{gbs:.3}"));
                        cells.push(fmt_ratio(ratio(gbs, base.and_then(|b| b.gb_per_s))));
                        cells.push(fmt_cpu(r.cpu.client));
                        cells.push(fmt_cpu(r.cpu.server));
                    }
                    _ => cells.push(short_err(r.error.as_deref().unwrap_or("no result"))),
                }
                t.row(cells);
            }
        }
        t
    }

    fn paced_table(&self) -> Table {
        let mut t = Table::new(&[
            "mechanism",
            "vs",
            "rate",
            "achieved",
            "p50",
            "x",
            "p99",
            "x",
            "p99.9",
            "x",
            "max",
            "x",
            "cpu cli",
            "cpu srv",
        ]);
        for m in &self.mechanisms {
            for r in &m.paced {
                let mut cells = vec![m.name.clone(), m.baseline.clone(), fmt_rate(r.rate)];
                match (&r.dist, r.achieved) {
                    (Some(d), Some(a)) => {
                        let b = self
                            .mech(&m.baseline)
                            .and_then(|b| b.paced.iter().find(|x| x.rate == r.rate))
                            .and_then(|b| b.dist.as_ref());
                        cells.push(fmt_rate(a));
                        let pick: [(u64, Option<u64>); 4] = [
                            (d.p50_ns, b.map(|b| b.p50_ns)),
                            (d.p99_ns, b.map(|b| b.p99_ns)),
                            (d.p999_ns, b.map(|b| b.p999_ns)),
                            (d.max_ns, b.map(|b| b.max_ns)),
                        ];
                        for (v, bv) in pick {
                            cells.push(fmt_ns(v as f64));
                            cells.push(fmt_ratio(ratio(v as f64, bv.map(|x| x as f64))));
                        }
                        cells.push(fmt_cpu(r.cpu.client));
                        cells.push(fmt_cpu(r.cpu.server));
                    }
                    _ => cells.push(short_err(r.error.as_deref().unwrap_or("no result"))),
                }
                t.row(cells);
            }
        }
        t
    }

    fn rpc_table(&self) -> Table {
        let mut t = Table::new(&[
            "mechanism",
            "vs",
            "conns",
            "in flight",
            "calls/s",
            "x",
            "p50",
            "x",
            "p99",
            "x",
            "cpu cli",
            "cpu srv",
        ]);
        for m in &self.mechanisms {
            for r in &m.rpc {
                let mut cells = vec![
                    m.name.clone(),
                    m.baseline.clone(),
                    r.connections.to_string(),
                    r.in_flight.to_string(),
                ];
                match (r.calls_per_s, &r.dist) {
                    (Some(c), Some(d)) => {
                        let b = self.mech(&m.baseline).and_then(|b| {
                            b.rpc.iter().find(|x| {
                                x.connections == r.connections && x.in_flight == r.in_flight
                            })
                        });
                        let bd = b.and_then(|b| b.dist.as_ref());
                        cells.push(fmt_rate(c));
                        cells.push(fmt_ratio(ratio(c, b.and_then(|b| b.calls_per_s))));
                        cells.push(fmt_ns(d.p50_ns as f64));
                        cells.push(fmt_ratio(ratio(
                            d.p50_ns as f64,
                            bd.map(|b| b.p50_ns as f64),
                        )));
                        cells.push(fmt_ns(d.p99_ns as f64));
                        cells.push(fmt_ratio(ratio(
                            d.p99_ns as f64,
                            bd.map(|b| b.p99_ns as f64),
                        )));
                        cells.push(fmt_cpu(r.cpu.client));
                        cells.push(fmt_cpu(r.cpu.server));
                    }
                    _ => cells.push(short_err(r.error.as_deref().unwrap_or("no result"))),
                }
                t.row(cells);
            }
        }
        t
    }

    fn p50(&self, name: &str, size: usize) -> Option<u64> {
        if size == self.interleaved_size {
            if let Some(d) = self
                .interleaved
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.dist.as_ref())
            {
                return Some(d.p50_ns);
            }
        }
        self.mech(name)?
            .latency
            .iter()
            .find(|r| r.size == size)?
            .dist
            .as_ref()
            .map(|d| d.p50_ns)
    }

    /// The goals that this run can judge, one line each.
    ///
    /// The local-stream goals ([`LOCAL_GOALS`]) are judged for each of our
    /// variants in the run, each line naming the one it judges: on Unix
    /// `ipc-unix` (default settings) and `ipc-unix-busypoll` (the
    /// transport's busy-poll option on, which trades CPU for latency; its
    /// CPU is in the latency table), on Windows `ipc-pipe`.
    pub fn goals(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut judged = 0;
        for goal in LOCAL_GOALS {
            let raw_name = goal.raw;
            let raw = self.p50(raw_name, 64);
            for &(name, how) in goal.ours {
                let Some(o) = self.p50(name, 64) else {
                    continue;
                };
                judged += 1;
                match raw {
                    Some(r) => {
                        let x = o as f64 / r as f64;
                        out.push(format!(
                            "{}: {name} ({how}) 64B round trip p50 {} is {x:.2}x {raw_name} ({}); \
                             goal <= 1.20x",
                            if x <= 1.2 { "MET" } else { "MISSED" },
                            fmt_ns(o as f64),
                            fmt_ns(r as f64)
                        ));
                    }
                    None => out.push(format!(
                        "NOT JUDGED: {raw_name} has no 64B round-trip figure in this run"
                    )),
                }
                for &peer in goal.peers {
                    match self.p50(peer, 64) {
                        Some(p) => out.push(format!(
                            "{}: {name} ({how}) 64B p50 {} vs {peer} {} ({:.2}x); goal: at least \
                             as fast",
                            if o <= p { "MET" } else { "MISSED" },
                            fmt_ns(o as f64),
                            fmt_ns(p as f64),
                            o as f64 / p as f64
                        )),
                        None => {
                            out.push(format!("NOT JUDGED: {peer} has no 64B figure in this run"))
                        }
                    }
                }
            }
        }
        if judged == 0 {
            let ours: Vec<&str> = LOCAL_GOALS
                .iter()
                .flat_map(|g| g.ours.iter().map(|o| o.0))
                .collect();
            out.push(format!(
                "NOT JUDGED: none of {} has a 64B round-trip figure in this run",
                ours.join(", ")
            ));
        }
        out.extend(self.rpc_goals());
        out
    }

    fn rpc_goals(&self) -> Vec<String> {
        if self
            .interleaved_rpc
            .iter()
            .any(|r| RPC_GOAL_GROUPS.iter().any(|g| g[0] == r.name))
        {
            return self.interleaved_rpc_goals();
        }
        let mut out = Vec::new();
        let Some(ours) = self.mech("ipc-jsonrpc") else {
            return out;
        };
        for r in &ours.rpc {
            let Some(c) = r.calls_per_s else { continue };
            let best = self
                .mechanisms
                .iter()
                .filter(|m| m.group == Group::Peer && !m.rpc.is_empty())
                .filter_map(|m| {
                    m.rpc
                        .iter()
                        .find(|x| x.connections == r.connections && x.in_flight == r.in_flight)
                        .and_then(|x| x.calls_per_s.map(|v| (m.name.as_str(), v)))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((peer, v)) => out.push(format!(
                    "{}: ipc-jsonrpc {}x{} {} calls/s is {:.2}x the best peer ({peer} {}); goal >= 1.5x",
                    if c >= 1.5 * v { "MET" } else { "MISSED" },
                    r.connections,
                    r.in_flight,
                    fmt_rate(c),
                    c / v,
                    fmt_rate(v)
                )),
                None => out.push(format!(
                    "NOT JUDGED: no peer JSON-RPC figure at {}x{}",
                    r.connections, r.in_flight
                )),
            }
        }
        out
    }

    /// The JSON-RPC goal judged on the interleaved rounds: in each round,
    /// ours against the best peer of that round; the median of those ratios.
    fn interleaved_rpc_goals(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (r, peer_names) in self.interleaved_rpc.iter().filter_map(|r| {
            rpc_group(&r.name)
                .filter(|g| g[0] == r.name)
                .map(|g| (r, &g[1..]))
        }) {
            let peers: Vec<&InterleavedRpcRow> = self
                .interleaved_rpc
                .iter()
                .filter(|p| {
                    peer_names.contains(&p.name.as_str())
                        && p.connections == r.connections
                        && p.in_flight == r.in_flight
                })
                .collect();
            let ratios: Vec<f64> = r
                .rounds
                .iter()
                .enumerate()
                .filter_map(|(i, ours)| {
                    let best = peers
                        .iter()
                        .filter_map(|p| p.rounds.get(i).copied().flatten())
                        .max_by(f64::total_cmp)?;
                    Some(ours.as_ref()? / best)
                })
                .collect();
            let (lo, hi) = ratios.iter().fold((f64::INFINITY, 0f64), |(lo, hi), x| {
                (lo.min(*x), hi.max(*x))
            });
            let best_peer = peers
                .iter()
                .filter_map(|p| p.median().map(|m| (p.name.as_str(), m)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match (median(ratios.clone()), r.median(), best_peer) {
                (Some(x), Some(c), Some((peer, v))) => out.push(format!(
                    "{}: {} {}x{} {} calls/s vs best peer {peer} {} (medians of {} \
                     interleaved rounds); ratio per round median {x:.2}x (from {lo:.2}x to \
                     {hi:.2}x); goal >= 1.5x",
                    if x >= 1.5 { "MET" } else { "MISSED" },
                    r.name,
                    r.connections,
                    r.in_flight,
                    fmt_rate(c),
                    fmt_rate(v),
                    ratios.len(),
                )),
                _ => out.push(format!(
                    "NOT JUDGED: no round with both {} and a peer at {}x{}",
                    r.name, r.connections, r.in_flight
                )),
            }
        }
        out
    }

    fn interleaved_rpc_table(&self) -> Table {
        let mut t = Table::new(&[
            "mechanism",
            "conns",
            "in flight",
            "median calls/s",
            "x ours",
            "min",
            "max",
            "rounds",
        ]);
        for r in &self.interleaved_rpc {
            let mut cells = vec![
                r.name.clone(),
                r.connections.to_string(),
                r.in_flight.to_string(),
            ];
            match r.median() {
                Some(m) => {
                    let ours_name = rpc_group(&r.name).map_or(r.name.as_str(), |g| g[0]);
                    let ours = self
                        .interleaved_rpc
                        .iter()
                        .find(|x| {
                            x.name == ours_name
                                && x.connections == r.connections
                                && x.in_flight == r.in_flight
                        })
                        .and_then(InterleavedRpcRow::median);
                    let ok: Vec<f64> = r.rounds.iter().flatten().copied().collect();
                    cells.push(fmt_rate(m));
                    cells.push(fmt_ratio(ratio(m, ours)));
                    cells.push(fmt_rate(ok.iter().copied().fold(f64::INFINITY, f64::min)));
                    cells.push(fmt_rate(ok.iter().copied().fold(0.0, f64::max)));
                    cells.push(ok.len().to_string());
                }
                None => cells.push(short_err(r.error.as_deref().unwrap_or("no result"))),
            }
            t.row(cells);
        }
        t
    }

    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.mechanisms {
            if let Some(e) = &m.error {
                out.push(format!("{}: {e}", m.name));
            }
        }
        out
    }

    /// The plain-text tables printed on stdout.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ipc-bench {}  |  {} ({} CPUs), {}  |  {}",
            if self.settings.quick {
                "--quick"
            } else {
                "full"
            },
            self.machine.cpu,
            self.machine.cpus,
            self.machine.os,
            self.started
        );
        let _ = writeln!(
            out,
            "load average {}; ratios (x) are to the mechanism in column 'vs', measured in this run; \
             latency = round trip\n",
            fmt_load(self.machine.load)
        );
        if let Some(k) = &self.settings.cpus_kept_awake {
            let _ = writeln!(out, "{}\n", k.describe());
        }
        if let Some(w) = self.load_warning() {
            let _ = writeln!(out, "{w}\n");
        }
        for (title, t) in self.tables() {
            if !t.rows.is_empty() {
                let _ = writeln!(out, "== {title}\n{}", t.text());
            }
        }
        let f = self.failures();
        if !f.is_empty() {
            let _ = writeln!(out, "== failed to start");
            for l in f {
                let _ = writeln!(out, "{l}");
            }
            out.push('\n');
        }
        if !self.not_built.is_empty() {
            let _ = writeln!(out, "== not in this build");
            for n in &self.not_built {
                let _ = writeln!(out, "{}: {}", n.name, n.why);
            }
            out.push('\n');
        }
        let _ = writeln!(out, "== goals");
        for g in self.goals() {
            let _ = writeln!(out, "{g}");
        }
        out
    }

    fn tables(&self) -> Vec<(String, Table)> {
        vec![
            (
                format!(
                    "{} round trips, mechanisms interleaved in {} rounds (the goals use these)",
                    fmt_size(self.interleaved_size),
                    self.interleaved_rounds
                ),
                self.interleaved_table(),
            ),
            (
                "round-trip latency, back to back".to_owned(),
                self.latency_table(),
            ),
            (
                "one-way stream throughput".to_owned(),
                self.throughput_table(),
            ),
            (
                "paced round trips (64 B, fixed rate)".to_owned(),
                self.paced_table(),
            ),
            ("JSON-RPC calls".to_owned(), self.rpc_table()),
            (
                format!(
                    "JSON-RPC calls, servers interleaved in {} rounds (the goal uses these)",
                    self.interleaved_rpc_rounds
                ),
                self.interleaved_rpc_table(),
            ),
        ]
    }

    /// The Markdown report.
    pub fn markdown(&self, charts: &[(&str, &str)]) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(out, "# IPC benchmark\n");
        let _ = writeln!(
            out,
            "Generated by `{}` at {}; every figure below comes from this run.\n",
            self.command, self.started
        );
        let _ = writeln!(out, "## Machine\n");
        let m = &self.machine;
        let _ = writeln!(
            out,
            "- CPU: {} ({} logical CPUs available)\n- OS: {} ({})\n- Host: {}\n\
             - Load average (1 min) at start / end: {}\n",
            m.cpu,
            m.cpus,
            m.os,
            m.arch,
            m.host,
            fmt_load(m.load)
        );
        if let Some(k) = &self.settings.cpus_kept_awake {
            let _ = writeln!(out, "**{}.**\n", k.describe());
        }
        if let Some(w) = self.load_warning() {
            let _ = writeln!(out, "**{w}**\n");
        }
        let _ = writeln!(out, "## Method\n");
        let _ = writeln!(
            out,
            "- Two processes: the benchmark spawns itself as the server; the client \
             (this process) and the server run the same protocol code for every mechanism.\n\
             - Round trips: {} recorded per size ({}), after a warm-up of a tenth as many; \
             a test stops early after {:.1}s (the sample count `n` says so).\n\
             - Interleaved comparison: the goal's mechanisms ({}) all stay connected while \
             their 64 B round trips are taken in {} \
             rounds, each round running every one of them for its share in a rotated order, so \
             disturbance from other work falls on all alike; the goals are judged on these, \
             separately for each of our variants (on Unix ipc-unix with default settings and \
             ipc-unix-busypoll with busy polling on: reads poll the socket before parking, \
             spending CPU, shown in the latency table, for latency).\n\
             - Throughput: a one-way stream of messages for {:.1}s, acknowledged in batches; \
             GB/s counts payload bytes (10^9).\n\
             - Paced: 64 B round trips at {} messages/s, one at a time, the sender sleeping \
             between messages; `achieved` is lower than asked when a round trip outlasts the interval.\n\
             - CPU: CPU time of each process during the test divided by its wall time \
             (100% = one core busy).\n\
             - Runtime: {}.\n\
             - Ratios (`x`) compare with the mechanism in the `vs` column at the same size or load, \
             measured in this run; for latency lower is better, for throughput higher is better.\n",
            s.round_trips
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
            s.sizes
                .iter()
                .map(|b| fmt_size(*b))
                .collect::<Vec<_>>()
                .join(" / "),
            s.latency_cap_s,
            if self.interleaved.is_empty() {
                "none in this run".to_owned()
            } else {
                self.interleaved
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            self.interleaved_rounds,
            s.duration_s,
            s.rates
                .iter()
                .map(|r| fmt_rate(*r))
                .collect::<Vec<_>>()
                .join(" and "),
            s.runtime
        );
        if !self.interleaved_rpc.is_empty() {
            let mut names: Vec<&str> = Vec::new();
            for r in &self.interleaved_rpc {
                if !names.contains(&r.name.as_str()) {
                    names.push(&r.name);
                }
            }
            let _ = writeln!(
                out,
                "- Interleaved JSON-RPC: the goal's servers ({}) stay up, group by group, while each load runs \
                 in {} rounds, every server in turn in a rotated order; the goal is judged on the \
                 ratio of ours to the best peer within each round (the median over rounds), \
                 in two groups run one after the other: ipc-jsonrpc (default settings) with the \
                 peers under the same default client, and ipc-jsonrpc-busypoll (busy polling on \
                 both ends) with the peer under the same polling client (apart, so that the \
                 spinning does not weigh on the other group's rounds); in the table beside it, \
                 `x ours` is to our server of the same group.\n",
                names.join(", "),
                self.interleaved_rpc_rounds
            );
        }
        let _ = writeln!(out, "## Mechanisms\n");
        let _ = writeln!(
            out,
            "| mechanism | group | vs | what is measured |\n| --- | --- | --- | --- |"
        );
        for m in &self.mechanisms {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}{} |",
                m.name,
                m.group.label(),
                m.baseline,
                m.about,
                m.error
                    .as_ref()
                    .map(|e| format!(" **FAILED: {e}**"))
                    .unwrap_or_default()
            );
        }
        for n in &self.not_built {
            let _ = writeln!(
                out,
                "| {} | - | - | **not in this build: {}** |",
                n.name, n.why
            );
        }
        out.push('\n');
        let _ = writeln!(out, "## Goals\n");
        for g in self.goals() {
            let _ = writeln!(out, "- {g}");
        }
        out.push('\n');
        for (file, title) in charts {
            let _ = writeln!(out, "![{title}]({file})\n");
        }
        for (title, t) in self.tables() {
            if !t.rows.is_empty() {
                let _ = writeln!(out, "## {}\n\n{}", capitalise(&title), t.markdown());
            }
        }
        out
    }
}

fn fmt_load(l: [Option<f64>; 2]) -> String {
    let f = |x: Option<f64>| x.map_or("?".to_owned(), |v| format!("{v:.2}"));
    format!("{} -> {}", f(l[0]), f(l[1]))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_ns(950.0), "950ns");
        assert_eq!(fmt_ns(12_340.0), "12.3us");
        assert_eq!(fmt_size(64), "64B");
        assert_eq!(fmt_size(65536), "64KiB");
        assert_eq!(fmt_size(1 << 20), "1MiB");
        assert_eq!(fmt_rate(100_000.0), "100.0k");
    }

    #[test]
    fn the_rpc_goal_takes_the_median_of_per_round_ratios() {
        let row = |name: &str, rounds: &[Option<f64>]| InterleavedRpcRow {
            name: name.to_owned(),
            connections: 1,
            in_flight: 16,
            rounds: rounds.to_vec(),
            error: None,
        };
        let run = |rows: Vec<InterleavedRpcRow>| Run {
            tool: "ipc-bench",
            started_unix: 0,
            started: String::new(),
            command: String::new(),
            machine: crate::sys::Machine {
                cpu: String::new(),
                cpus: 2,
                os: String::new(),
                arch: String::new(),
                host: String::new(),
                load: [None, None],
            },
            settings: Settings {
                quick: true,
                cpus_kept_awake: None,
                sizes: Vec::new(),
                round_trips: Vec::new(),
                duration_s: 0.2,
                latency_cap_s: 1.0,
                rates: Vec::new(),
                runtime: String::new(),
            },
            mechanisms: Vec::new(),
            not_built: Vec::new(),
            interleaved_size: 64,
            interleaved_rounds: 0,
            interleaved: Vec::new(),
            interleaved_rpc_rounds: 3,
            interleaved_rpc: rows,
        };
        // Round by round ours / best peer: 300/150 = 2.0, 100/120 = 0.83,
        // 320/200 = 1.6 (the second peer failed its last round): median 1.6.
        let met = run(vec![
            row("ipc-jsonrpc", &[Some(300.0), Some(100.0), Some(320.0)]),
            row(
                "jsonrpc-ipc-server",
                &[Some(150.0), Some(120.0), Some(200.0)],
            ),
            row("jsonrpsee-http", &[Some(50.0), Some(60.0), None]),
        ]);
        let lines = met.rpc_goals();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("MET: ipc-jsonrpc 1x16"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("median 1.60x"), "{}", lines[0]);
        assert!(lines[0].contains("from 0.83x to 2.00x"), "{}", lines[0]);

        let missed = run(vec![
            row("ipc-jsonrpc", &[Some(100.0), Some(100.0), Some(100.0)]),
            row("jsonrpc-ipc-server", &[Some(90.0), Some(50.0), Some(80.0)]),
        ]);
        let lines = missed.rpc_goals();
        assert!(lines[0].starts_with("MISSED:"), "{}", lines[0]);
        assert!(lines[0].contains("median 1.25x"), "{}", lines[0]);

        // Each of ours against the peers of its group, under its own client
        // load: the busy-polling server against the polled peer, the default
        // one against the peers under the default client only.
        let pairs = run(vec![
            row("ipc-jsonrpc", &[Some(100.0), Some(100.0), Some(100.0)]),
            row(
                "ipc-jsonrpc-busypoll",
                &[Some(300.0), Some(300.0), Some(300.0)],
            ),
            row("jsonrpc-ipc-server", &[Some(80.0), Some(80.0), Some(80.0)]),
            row(
                "jsonrpc-ipc-server-polled",
                &[Some(150.0), Some(150.0), Some(250.0)],
            ),
        ]);
        let lines = pairs.rpc_goals();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("MISSED: ipc-jsonrpc 1x16")
                && lines[0].contains("best peer jsonrpc-ipc-server 80 ")
                && lines[0].contains("median 1.25x"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("MET: ipc-jsonrpc-busypoll 1x16")
                && lines[1].contains("jsonrpc-ipc-server-polled")
                && lines[1].contains("median 2.00x (from 1.20x to 2.00x)"),
            "{}",
            lines[1]
        );

        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn dist_percentiles_follow_the_histogram() {
        let mut h = crate::proto::new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let d = Dist::of(&h);
        assert_eq!(d.samples, 1000);
        assert!((d.p50_ns as i64 - 500_000).abs() < 1000, "{}", d.p50_ns);
        assert!((d.p99_ns as i64 - 990_000).abs() < 1000, "{}", d.p99_ns);
        assert!(d
            .cdf
            .windows(2)
            .all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1]));
    }
}
