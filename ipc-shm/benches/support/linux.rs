//! The benchmark itself (Linux: memfd, CPU pinning).

use std::hint::spin_loop;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ipc_core::Address;
use ipc_shm::{AsyncShmConnection, ShmConnection, ShmListener, ShmOptions, ShmTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROLE: &str = "IPC_SHM_BENCH_ROLE";
const ARG: &str = "IPC_SHM_BENCH_ARG";
const MSG: usize = 64;
const SPIN: Duration = Duration::from_micros(50);

/// What to run: `--quick` (fewer samples, one round), `--rounds N` (each
/// measurement repeated N times, interleaved; the medians are reported),
/// `--only floor,blocking,async,async-messages,unix,iceoryx2,throughput`, `--ring BYTES`
/// (ring capacity of ipc-shm and of the bare ring in the throughput runs;
/// default: the crate's default, 8 MiB), or
/// `--single blocking|async|async-messages N` (see [`single_process`]).
struct Args {
    quick: bool,
    rounds: usize,
    only: Option<Vec<String>>,
    single: Option<(String, usize)>,
    ring: usize,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            quick: false,
            rounds: 5,
            only: None,
            single: None,
            ring: ShmOptions::new().get_ring_capacity(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => {
                    a.quick = true;
                    a.rounds = 1;
                }
                "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(5).max(1),
                "--only" => a.only = it.next().map(|v| v.split(',').map(str::to_owned).collect()),
                "--ring" => {
                    a.ring = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.ring);
                }
                "--single" => {
                    let api = it.next().unwrap_or_default();
                    let n = it.next().and_then(|v| v.parse().ok()).unwrap_or(10_000);
                    a.single = Some((api, n));
                }
                // `cargo bench` passes `--bench`; ignore what we do not know.
                _ => {}
            }
        }
        a
    }

    fn wants(&self, what: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == what))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Latency quantiles of one measurement in one round, in ns.
#[derive(Clone, Copy)]
struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
}

impl Lat {
    /// The quantiles of `h`, less `clock`: what reading the clock around
    /// each sample added to it.
    fn of(h: &Histogram<u64>, clock: f64) -> Lat {
        let net = |q: f64| (h.value_at_quantile(q) as f64 - clock).max(1.0);
        Lat {
            p50: net(0.5),
            p99: net(0.99),
            p999: net(0.999),
        }
    }
}

/// What timing a sample adds to it: the p50 of intervals with nothing in
/// them, taken and recorded as each round trip is (`Instant::now` before,
/// `elapsed` after). A clock reading costs 15-30 ns on a virtual machine,
/// 5% of a round trip at the floor, so it is taken off every figure
/// before they are compared.
fn clock_cost(n: usize) -> f64 {
    let mut h = hist();
    for _ in 0..n {
        let t = Instant::now();
        record(&mut h, std::hint::black_box(t).elapsed());
    }
    h.value_at_quantile(0.5) as f64
}

type LatencyRun = fn(usize, &std::path::Path) -> Histogram<u64>;

pub fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role, &std::env::var(ARG).unwrap_or_default());
        return;
    }
    let args = Args::parse();
    if let Some((api, n)) = &args.single {
        single_process(api, *n);
        return;
    }
    let n = if args.quick { 20_000 } else { 200_000 };
    let dir = tempfile::tempdir().unwrap();
    pin(0);

    println!(
        "ipc-shm benchmark: two processes pinned to CPUs 0 and 1; {}; load average {}",
        machine(),
        load()
    );
    let latency: [(&str, &str, LatencyRun); 6] = [
        ("floor", "raw busy-spin on two atomics (floor)", |n, _| {
            floor(n)
        }),
        ("blocking", "ipc-shm blocking message API", blocking_rtt),
        ("async", "ipc-shm async Transport, spin on", async_rtt),
        (
            "async-messages",
            "ipc-shm async message API, spin on",
            async_messages_rtt,
        ),
        ("unix", "Unix socket backend (ipc-unix, async)", |n, d| {
            unix_rtt(n / 10, d)
        }),
        (
            "iceoryx2",
            "iceoryx2 0.10 publish-subscribe, polling",
            |n, _| iceoryx2_rtt(n),
        ),
    ];
    let chosen: Vec<_> = latency.iter().filter(|(k, ..)| args.wants(k)).collect();
    if !chosen.is_empty() {
        println!();
        println!(
            "64 B round trip, {n} samples, {} round(s); p50 of each round, net of reading the \
             clock around each sample (`clock`: what that adds, measured first in each round):",
            args.rounds
        );
        // results[m][round]
        let mut results: Vec<Vec<Lat>> = vec![Vec::new(); chosen.len()];
        let mut clocks = Vec::new();
        for round in 0..args.rounds {
            let clock = clock_cost(n);
            clocks.push(clock);
            let mut line = format!("  round {}: clock {}", round + 1, fmt_ns(clock));
            for (i, (key, _, run)) in chosen.iter().enumerate() {
                let l = Lat::of(&run(n, dir.path()), clock);
                line += &format!(" {key} {}", fmt_ns(l.p50));
                results[i].push(l);
            }
            println!("{line}");
        }
        let floor_idx = chosen.iter().position(|(k, ..)| *k == "floor");
        println!();
        println!(
            "  median of rounds                             p50        p99      p99.9   p50 / floor"
        );
        let med = |i: usize, f: fn(&Lat) -> f64| median(results[i].iter().map(f).collect());
        for (i, (_, name, _)) in chosen.iter().enumerate() {
            // The ratio is taken within each round, then the median of those.
            let ratio = floor_idx.map(|fi| {
                median(
                    results[i]
                        .iter()
                        .zip(&results[fi])
                        .map(|(a, f)| a.p50 / f.p50.max(1.0))
                        .collect(),
                )
            });
            println!(
                "  {name:<42} {:>9} {:>10} {:>10} {:>8}",
                fmt_ns(med(i, |l| l.p50)),
                fmt_ns(med(i, |l| l.p99)),
                fmt_ns(med(i, |l| l.p999)),
                ratio.map_or("-".into(), |r| format!("{r:.2}x"))
            );
        }
        println!(
            "  (reading the clock added {} to each sample, median of rounds; taken off above)",
            fmt_ns(median(clocks))
        );
        // The median of the per-round ratios, and their range.
        let ratio_of = |a: &str, b: &str| {
            let ia = chosen.iter().position(|(k, ..)| *k == a)?;
            let ib = chosen.iter().position(|(k, ..)| *k == b)?;
            let per_round: Vec<f64> = results[ia]
                .iter()
                .zip(&results[ib])
                .map(|(x, y)| x.p50 / y.p50.max(1.0))
                .collect();
            let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = per_round.iter().copied().fold(0.0, f64::max);
            Some((median(per_round), lo, hi))
        };
        println!();
        for (a, b, what, target) in [
            ("blocking", "floor", "blocking API / floor", "<= 2x"),
            ("async", "floor", "async Transport / floor", "<= 10x"),
            (
                "async-messages",
                "floor",
                "async message API / floor",
                "<= 10x",
            ),
            ("iceoryx2", "blocking", "iceoryx2 / blocking API", ">= 4x"),
            ("unix", "blocking", "Unix socket / blocking API", ">= 10x"),
        ] {
            if let Some((r, lo, hi)) = ratio_of(a, b) {
                println!("  {what} = {r:.2}x (rounds {lo:.2}-{hi:.2}x; target {target})");
            }
        }
    }

    if args.wants("throughput") {
        println!();
        println!(
            "throughput, one way (the receiver copies each message into its buffer with \
             recv_into), rings of {} KiB, median of {} round(s)",
            args.ring >> 10,
            args.rounds
        );
        println!("                                       ipc-shm   raw ring   memcpy (1 core)   ipc-shm / memcpy");
        for pinned in [true, false] {
            println!(
                "  {}",
                if pinned {
                    "sender and receiver pinned to different CPUs:"
                } else {
                    "placed by the scheduler (unpinned):"
                }
            );
            if !pinned {
                unpin();
            }
            for (size, count) in [
                (64 << 10, if args.quick { 4_000 } else { 40_000 }),
                (1 << 20, if args.quick { 300 } else { 3_000 }),
                // As large as the ring: sent in pieces.
                (4 << 20, if args.quick { 100 } else { 1_000 }),
            ] {
                let (mut shm, mut raw, mut mem, mut ratio) = (vec![], vec![], vec![], vec![]);
                let mut asy = vec![];
                for _ in 0..args.rounds {
                    let tp = throughput(size, count, args.ring, dir.path(), pinned);
                    let s = tp.rate;
                    let a = async_throughput(size, count, args.ring, dir.path(), pinned);
                    // Messages that ipc-shm sends in pieces (larger than
                    // half its ring) go in pieces through the bare ring too.
                    let piece = if size > args.ring / 2 {
                        size.min(RAW_PIECE)
                    } else {
                        size
                    };
                    let (r, queued) = raw_ring(piece, count * (size / piece), args.ring, pinned);
                    let m = memcpy_bandwidth(size);
                    println!(
                        "      round: ipc-shm {:.2} GB/s (sleeps: sender {}, receiver {}), \
                         async Transport {:.2} GB/s, \
                         raw ring {:.2} GB/s ({:.0} KiB queued on average), memcpy {:.2} GB/s",
                        s / 1e9,
                        tp.sender_sleeps,
                        tp.receiver_sleeps,
                        a / 1e9,
                        r / 1e9,
                        queued / 1024.0,
                        m / 1e9
                    );
                    ratio.push(s / m);
                    shm.push(s);
                    asy.push(a);
                    raw.push(r);
                    mem.push(m);
                }
                println!(
                    "    {:>5} KiB messages, median    {:>7.2} GB/s {:>7.2} GB/s   {:>7.2} GB/s       {:>5.0}%   \
                     (async Transport {:.2} GB/s)",
                    size >> 10,
                    median(shm) / 1e9,
                    median(raw) / 1e9,
                    median(mem) / 1e9,
                    100.0 * median(ratio),
                    median(asy) / 1e9
                );
            }
        }
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} us", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpu}, {} CPUs", online_cpus())
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap()
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_nanos() as u64).max(1));
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize
}

/// Lets the scheduler place this thread on any CPU.
fn unpin() {
    // SAFETY: as in `pin`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..online_cpus() {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pin(cpu: usize) {
    let cpus = online_cpus();
    // SAFETY: a zeroed cpu_set_t is valid; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % cpus, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(role: &str, arg: &str) -> Peer {
    Peer(
        Command::new(std::env::current_exe().unwrap())
            .env(ROLE, role)
            .env(ARG, arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the peer process"),
    )
}

fn wait_ready(p: &mut Peer) {
    let mut line = String::new();
    BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("READY"), "peer said {line:?}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn shm_addr(dir: &std::path::Path, name: &str) -> Address {
    format!("shm:{}", dir.join(name).display()).parse().unwrap()
}

// ------------------------------------------------------------ the floor

/// Two counters on their own cache lines in a shared memfd mapping: the
/// parent bumps `ping`, the child copies it to `pong`.
fn floor(n: usize) -> Histogram<u64> {
    let fd = rustix::fs::memfd_create("floor", rustix::fs::MemfdFlags::empty()).unwrap();
    rustix::fs::ftruncate(&fd, 4096).unwrap();
    let (ping, pong) = counters(&fd);
    let mut peer = spawn("floor", &fd.as_raw_fd().to_string());
    wait_ready(&mut peer);
    let mut h = hist();
    for i in 1..=(n + n / 10) as u64 {
        let t = Instant::now();
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            spin_loop();
        }
        if i > (n / 10) as u64 {
            record(&mut h, t.elapsed());
        }
    }
    ping.store(u64::MAX, Ordering::Release);
    h
}

fn counters(fd: &OwnedFd) -> (&'static AtomicU64, &'static AtomicU64) {
    // SAFETY: a fresh 4 KiB shared mapping of the memfd, never unmapped
    // (leaked for the life of the process); two aligned u64 atomics in it.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            4096,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
        .unwrap()
        .cast::<u8>();
        (
            &*(p as *const AtomicU64),
            &*(p.add(128) as *const AtomicU64),
        )
    }
}

// --------------------------------------------------------- round trips

fn blocking_rtt(n: usize, dir: &std::path::Path) -> Histogram<u64> {
    let addr = shm_addr(dir, "blocking.sock");
    let rt = runtime();
    let opts = ShmOptions::new().spin(SPIN);
    let mut listener = rt
        .block_on(async { ShmListener::bind_with(&addr, opts) })
        .unwrap();
    let _peer = spawn("blocking-echo", &addr.to_string());
    let mut conn = rt.block_on(listener.accept_connection()).unwrap();
    let msg = [7u8; MSG];
    let mut h = hist();
    for i in 0..n + n / 10 {
        let t = Instant::now();
        conn.send(&msg).unwrap();
        let r = conn.recv().unwrap();
        debug_assert_eq!(r.len(), MSG);
        drop(r);
        if i >= n / 10 {
            record(&mut h, t.elapsed());
        }
    }
    h
}

fn async_rtt(n: usize, dir: &std::path::Path) -> Histogram<u64> {
    let addr = shm_addr(dir, "async.sock");
    let rt = runtime();
    rt.block_on(async {
        let opts = ShmOptions::new().async_spin(SPIN);
        let mut listener = ShmListener::bind_with(&addr, opts).unwrap();
        let _peer = spawn("async-echo", &addr.to_string());
        let mut t = listener.accept_shm().await.unwrap();
        let mut buf = [7u8; MSG];
        let mut h = hist();
        for i in 0..n + n / 10 {
            let t0 = Instant::now();
            t.write_all(&buf).await.unwrap();
            t.read_exact(&mut buf).await.unwrap();
            if i >= n / 10 {
                record(&mut h, t0.elapsed());
            }
        }
        h
    })
}

fn async_messages_rtt(n: usize, dir: &std::path::Path) -> Histogram<u64> {
    let addr = shm_addr(dir, "async-messages.sock");
    let rt = runtime();
    rt.block_on(async {
        let opts = ShmOptions::new().async_spin(SPIN);
        let mut listener = ShmListener::bind_with(&addr, opts).unwrap();
        let _peer = spawn("async-messages-echo", &addr.to_string());
        let mut conn = listener.accept_async_connection().await.unwrap();
        let msg = [7u8; MSG];
        let mut h = hist();
        for i in 0..n + n / 10 {
            let t0 = Instant::now();
            conn.send(&msg).await.unwrap();
            let r = conn.recv().await.unwrap();
            debug_assert_eq!(r.len(), MSG);
            drop(r);
            if i >= n / 10 {
                record(&mut h, t0.elapsed());
            }
        }
        h
    })
}

fn unix_rtt(n: usize, dir: &std::path::Path) -> Histogram<u64> {
    let addr: Address = format!("unix:{}", dir.join("unix.sock").display())
        .parse()
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut listener = ipc_unix::UnixListener::bind(&addr).unwrap();
        let _peer = spawn("unix-echo", &addr.to_string());
        let mut t = listener.accept_unix().await.unwrap();
        let mut buf = [7u8; MSG];
        let mut h = hist();
        for i in 0..n + n / 10 {
            let t0 = Instant::now();
            t.write_all(&buf).await.unwrap();
            t.read_exact(&mut buf).await.unwrap();
            if i >= n / 10 {
                record(&mut h, t0.elapsed());
            }
        }
        h
    })
}

/// iceoryx2 as its own latency benchmark runs it: a `ping` and a `pong`
/// publish-subscribe service of byte slices, both sides busy-polling.
fn iceoryx2_rtt(n: usize) -> Histogram<u64> {
    let base = format!("ipc-shm-bench-{}", std::process::id());
    let (tx, rx) = iox::open(&base, false);
    let mut peer = spawn("iceoryx2-echo", &base);
    wait_ready(&mut peer);
    let msg = [7u8; MSG];
    let mut buf = [0u8; MSG];
    let mut h = hist();
    for i in 0..n + n / 10 {
        let t = Instant::now();
        iox::send(&tx, &msg);
        iox::recv(&rx, &mut buf);
        if i >= n / 10 {
            record(&mut h, t.elapsed());
        }
    }
    h
}

mod iox {
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;

    pub type Tx = Publisher<ipc::Service, [u8], ()>;
    pub type Rx = Subscriber<ipc::Service, [u8], ()>;

    /// Opens this side's publisher and subscriber (the node is leaked: it
    /// lives as long as the process).
    pub fn open(base: &str, echo: bool) -> (Tx, Rx) {
        set_log_level(LogLevel::Error);
        let node = Box::leak(Box::new(
            NodeBuilder::new()
                .create::<ipc::Service>()
                .expect("iceoryx2 node"),
        ));
        let service = |suffix: &str| {
            let name: ServiceName = format!("{base}/{suffix}").as_str().try_into().unwrap();
            node.service_builder(&name)
                .publish_subscribe::<[u8]>()
                .enable_safe_overflow(false)
                .subscriber_max_buffer_size(8)
                .history_size(0)
                .open_or_create()
                .expect("iceoryx2 service")
        };
        let (out, inc) = if echo {
            ("pong", "ping")
        } else {
            ("ping", "pong")
        };
        let out = service(out);
        let inc = service(inc);
        let rx = inc.subscriber_builder().create().unwrap();
        let tx = out
            .publisher_builder()
            .initial_max_slice_len(super::MSG)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .unwrap();
        (tx, rx)
    }

    pub fn send(tx: &Tx, msg: &[u8]) {
        let s = tx.loan_slice_uninit(msg.len()).unwrap();
        s.write_from_slice(msg).send().unwrap();
    }

    pub fn recv(rx: &Rx, buf: &mut [u8]) {
        loop {
            if let Some(s) = rx.receive().unwrap() {
                buf.copy_from_slice(s.payload());
                return;
            }
            std::hint::spin_loop();
        }
    }
}

// ----------------------------------------------------------- throughput

/// A throughput measurement of ipc-shm: bytes per second, and how many
/// times the sender and the receiver slept while it ran (voluntary context
/// switches of the two threads: a blocking call that outlasted its spin).
struct Throughput {
    rate: f64,
    sender_sleeps: u64,
    receiver_sleeps: u64,
}

/// Voluntary context switches of the calling thread so far.
fn sleeps_of_this_thread() -> u64 {
    // SAFETY: a zeroed rusage is valid; getrusage only writes it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru.ru_nvcsw as u64
    }
}

/// One throughput run's server: a listener bound with `opts` in `dir`,
/// and the sink `role` started in a second process, which connects to it
/// and takes `count` messages of `size` bytes after a tenth as many to
/// warm up (see [`SinkArgs`]).
fn start_sink(
    role: &str,
    opts: ShmOptions,
    size: usize,
    count: usize,
    dir: &std::path::Path,
    pinned: bool,
) -> (tokio::runtime::Runtime, ShmListener, Peer) {
    let addr = shm_addr(dir, &format!("{role}{size}.sock"));
    let rt = runtime();
    let listener = rt
        .block_on(async { ShmListener::bind_with(&addr, opts) })
        .unwrap();
    let peer = spawn(role, &format!("{addr} {size} {count} {pinned}"));
    (rt, listener, peer)
}

/// What a sink of [`start_sink`] is told; unpins it when asked to.
struct SinkArgs {
    addr: Address,
    size: usize,
    count: usize,
}

impl SinkArgs {
    fn parse(arg: &str) -> SinkArgs {
        let mut it = arg.split(' ');
        let addr = it.next().unwrap().parse().unwrap();
        let size = it.next().unwrap().parse().unwrap();
        let count = it.next().unwrap().parse().unwrap();
        if it.next() == Some("false") {
            unpin();
        }
        SinkArgs { addr, size, count }
    }
}

fn throughput(
    size: usize,
    count: usize,
    ring: usize,
    dir: &std::path::Path,
    pinned: bool,
) -> Throughput {
    let opts = ShmOptions::new()
        .ring_capacity(ring)
        .max_message_len(size)
        .spin(SPIN);
    let (rt, mut listener, _peer) = start_sink("sink", opts, size, count, dir, pinned);
    let mut conn = rt.block_on(listener.accept_connection()).unwrap();
    let msg = vec![0xa5u8; size];
    // Warm up, then time `count` messages until the sink acknowledges.
    for _ in 0..count / 10 {
        conn.send(&msg).unwrap();
    }
    assert_eq!(&*conn.recv().unwrap(), b"warm");
    let slept = sleeps_of_this_thread();
    let t = Instant::now();
    for _ in 0..count {
        conn.send(&msg).unwrap();
    }
    let done = conn.recv().unwrap();
    let rate = (size * count) as f64 / t.elapsed().as_secs_f64();
    let sender_sleeps = sleeps_of_this_thread() - slept;
    // "done <the sink's sleeps while it received>"
    let receiver_sleeps = std::str::from_utf8(&done)
        .ok()
        .and_then(|d| d.strip_prefix("done "))
        .and_then(|n| n.parse().ok())
        .expect("the sink ends with \"done <sleeps>\"");
    Throughput {
        rate,
        sender_sleeps,
        receiver_sleeps,
    }
}

/// The same stream through the async `Transport` (no spin, the default):
/// `write_all` of each message against the peer's `read_exact`, a
/// current-thread runtime in each process.
fn async_throughput(
    size: usize,
    count: usize,
    ring: usize,
    dir: &std::path::Path,
    pinned: bool,
) -> f64 {
    let opts = ShmOptions::new().ring_capacity(ring);
    let (rt, mut listener, _peer) = start_sink("async-sink", opts, size, count, dir, pinned);
    rt.block_on(async {
        let mut t = listener.accept_shm().await.unwrap();
        let msg = vec![0xa5u8; size];
        let mut ack = [0u8; 1];
        // Warm up, then time `count` messages until the sink acknowledges.
        for _ in 0..count / 10 {
            t.write_all(&msg).await.unwrap();
        }
        t.read_exact(&mut ack).await.unwrap();
        let start = Instant::now();
        for _ in 0..count {
            t.write_all(&msg).await.unwrap();
        }
        t.read_exact(&mut ack).await.unwrap();
        (size * count) as f64 / start.elapsed().as_secs_f64()
    })
}

/// Largest message of the bare ring: larger ones go in pieces of this size
/// (ipc-shm's pieces are at most 256 KiB as well).
const RAW_PIECE: usize = 256 << 10;

/// The raw mechanism for the same job: a bare ring of `ring` bytes
/// in a shared memfd, the sender copying each message in and publishing one
/// counter, the receiver busy-waiting, copying it out and publishing its own
/// counter. No record headers, no checks, no sleeping, and plain copies
/// (ipc-shm copies large payloads out behind a prefetch). Returns the rate and
/// the mean of the bytes queued in the ring (sampled every 64 messages).
fn raw_ring(size: usize, count: usize, ring: usize, pinned: bool) -> (f64, f64) {
    let fd = rustix::fs::memfd_create("raw-ring", rustix::fs::MemfdFlags::empty()).unwrap();
    rustix::fs::ftruncate(&fd, (4096 + ring) as u64).unwrap();
    let (head, tail, data) = raw_ring_map(&fd, ring);
    let mut peer = spawn(
        "raw-sink",
        &format!("{} {size} {count} {ring} {pinned}", fd.as_raw_fd()),
    );
    wait_ready(&mut peer);
    let msg = vec![0xa5u8; size];
    let warm = (count / 10) as u64;
    let total = warm + count as u64;
    let mut t = Instant::now();
    let mut tail_seen = 0u64;
    let (mut queued, mut samples) = (0u64, 0u64);
    for i in 0..total {
        if i >= warm && i % 64 == 0 {
            queued += i - tail.load(Ordering::Acquire);
            samples += 1;
        }
        if i == warm {
            while tail.load(Ordering::Acquire) != warm {
                spin_loop();
            }
            t = Instant::now();
        }
        let pos = i * size as u64;
        while pos + size as u64 - tail_seen * size as u64 > ring as u64 {
            spin_loop();
            tail_seen = tail.load(Ordering::Acquire);
        }
        // SAFETY: size divides ring, so the message lies inside the data
        // area; the receiver released these bytes (tail_seen).
        unsafe {
            std::ptr::copy_nonoverlapping(
                msg.as_ptr(),
                data.add((pos % ring as u64) as usize),
                size,
            )
        }
        head.store(i + 1, Ordering::Release);
    }
    while tail.load(Ordering::Acquire) != total {
        spin_loop();
    }
    let rate = (size * count) as f64 / t.elapsed().as_secs_f64();
    (rate, (queued * size as u64) as f64 / samples.max(1) as f64)
}

/// The head and tail counters (in messages) and the data area of a raw ring.
fn raw_ring_map(fd: &OwnedFd, ring: usize) -> (&'static AtomicU64, &'static AtomicU64, *mut u8) {
    // SAFETY: a fresh shared mapping of the whole memfd, never unmapped
    // (leaked for the life of the process); two aligned u64 atomics on
    // their own lines in the first page, the data area after it.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            4096 + ring,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
        .unwrap()
        .cast::<u8>();
        (
            &*(p as *const AtomicU64),
            &*(p.add(128) as *const AtomicU64),
            p.add(4096),
        )
    }
}

fn memcpy_bandwidth(size: usize) -> f64 {
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    let reps = (1usize << 31) / size;
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..reps {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    (size * reps) as f64 / t.elapsed().as_secs_f64()
}

// ------------------------------------------------------------- the peer

fn child(role: &str, arg: &str) {
    pin(1);
    let ready = || {
        println!("READY");
        std::io::stdout().flush().unwrap();
    };
    match role {
        "floor" => {
            let raw: i32 = arg.parse().unwrap();
            // SAFETY: the parent left this descriptor open for us.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let (ping, pong) = counters(&fd);
            ready();
            let mut last = 0;
            loop {
                let v = ping.load(Ordering::Acquire);
                if v == last {
                    spin_loop();
                    continue;
                }
                if v == u64::MAX {
                    return;
                }
                pong.store(v, Ordering::Release);
                last = v;
            }
        }
        "blocking-echo" => {
            let addr: Address = arg.parse().unwrap();
            let mut c = ShmConnection::connect(&addr, &ShmOptions::new().spin(SPIN)).unwrap();
            let mut buf = [0u8; MSG];
            loop {
                let n = match c.recv() {
                    Ok(m) => {
                        buf[..m.len()].copy_from_slice(&m);
                        m.len()
                    }
                    Err(_) => return,
                };
                if c.send(&buf[..n]).is_err() {
                    return;
                }
            }
        }
        "async-sink" => {
            let SinkArgs { addr, size, count } = SinkArgs::parse(arg);
            runtime().block_on(async {
                let mut t = ShmTransport::connect(&addr, &ShmOptions::new())
                    .await
                    .unwrap();
                let mut buf = vec![0u8; size];
                for n in [count / 10, count] {
                    for _ in 0..n {
                        t.read_exact(&mut buf).await.unwrap();
                    }
                    t.write_all(b"k").await.unwrap();
                }
                // Wait for the parent to hang up.
                let _ = t.read(&mut buf).await;
            });
        }
        "async-echo" => {
            let addr: Address = arg.parse().unwrap();
            runtime().block_on(async {
                let opts = ShmOptions::new().async_spin(SPIN);
                let mut t = ShmTransport::connect(&addr, &opts).await.unwrap();
                let mut buf = [0u8; MSG];
                while t.read_exact(&mut buf).await.is_ok() {
                    if t.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
        "async-messages-echo" => {
            let addr: Address = arg.parse().unwrap();
            runtime().block_on(async {
                let opts = ShmOptions::new().async_spin(SPIN);
                let mut c = AsyncShmConnection::connect(&addr, &opts).await.unwrap();
                let mut buf = [0u8; MSG];
                loop {
                    let n = match c.recv().await {
                        Ok(m) => m.copy_to(&mut buf),
                        Err(_) => return,
                    };
                    if c.send(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
        "iceoryx2-echo" => {
            let (tx, rx) = iox::open(arg, true);
            ready();
            let mut buf = [0u8; MSG];
            // Ends when the parent kills this process.
            loop {
                iox::recv(&rx, &mut buf);
                iox::send(&tx, &buf);
            }
        }
        "unix-echo" => {
            let addr: Address = arg.parse().unwrap();
            runtime().block_on(async {
                let mut t = ipc_unix::connect(&addr).await.unwrap();
                let mut buf = [0u8; MSG];
                while t.read_exact(&mut buf).await.is_ok() {
                    if t.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
        "sink" => {
            let SinkArgs { addr, size, count } = SinkArgs::parse(arg);
            let opts = ShmOptions::new().max_message_len(size).spin(SPIN);
            let mut c = ShmConnection::connect(&addr, &opts).unwrap();
            let mut out = Vec::with_capacity(size);
            let mut take = |c: &mut ShmConnection| {
                c.recv_into(&mut out).unwrap();
                std::hint::black_box(&mut out);
            };
            for _ in 0..count / 10 {
                take(&mut c);
            }
            c.send(b"warm").unwrap();
            let slept = sleeps_of_this_thread();
            for _ in 0..count {
                take(&mut c);
            }
            let done = format!("done {}", sleeps_of_this_thread() - slept);
            c.send(done.as_bytes()).unwrap();
            // Wait for the parent to hang up.
            let _ = c.recv();
        }
        "raw-sink" => {
            let mut it = arg.split(' ');
            let raw: i32 = it.next().unwrap().parse().unwrap();
            let size: usize = it.next().unwrap().parse().unwrap();
            let count: u64 = it.next().unwrap().parse().unwrap();
            let ring: usize = it.next().unwrap().parse().unwrap();
            if it.next() == Some("false") {
                unpin();
            }
            // SAFETY: the parent left this descriptor open for us.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let (head, tail, data) = raw_ring_map(&fd, ring);
            let mut out = vec![0u8; size];
            ready();
            let total = count + count / 10;
            let mut head_seen = 0;
            for i in 0..total {
                while head_seen <= i {
                    spin_loop();
                    head_seen = head.load(Ordering::Acquire);
                }
                let pos = i * size as u64;
                // SAFETY: as in raw_ring: inside the data area, published.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        data.add((pos % ring as u64) as usize),
                        out.as_mut_ptr(),
                        size,
                    )
                }
                std::hint::black_box(&mut out);
                tail.store(i + 1, Ordering::Release);
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// `n` round trips of 64 B between the two ends of one connection in this
/// one process, never waiting: the code path of a message without the
/// cache-line transfers, for counting instructions
/// (`valgrind --tool=callgrind ... -- --single blocking 20000`, minus a run
/// with fewer round trips).
fn single_process(api: &str, n: usize) {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    let dir = tempfile::tempdir().unwrap();
    let addr = shm_addr(dir.path(), "single.sock");
    let rt = runtime();
    let msg = [7u8; MSG];
    let mut buf = [0u8; MSG];
    match api {
        "blocking" => {
            let mut listener = rt.block_on(async { ShmListener::bind(&addr) }).unwrap();
            let a = addr.clone();
            let t = std::thread::spawn(move || ShmConnection::connect(&a, &ShmOptions::new()));
            let mut server = rt.block_on(listener.accept_connection()).unwrap();
            let mut client = t.join().unwrap().unwrap();
            for _ in 0..n {
                client.send(&msg).unwrap();
                let m = server.recv().unwrap();
                buf.copy_from_slice(&m);
                drop(m);
                server.send(&buf).unwrap();
                std::hint::black_box(client.recv().unwrap().len());
            }
        }
        "async" => {
            let (mut server, mut client) = rt.block_on(async {
                let mut listener = ShmListener::bind(&addr).unwrap();
                let client = ShmTransport::connect(&addr, &ShmOptions::new())
                    .await
                    .unwrap();
                (listener.accept_shm().await.unwrap(), client)
            });
            let mut cx = Context::from_waker(Waker::noop());
            let mut out = [0u8; MSG];
            for _ in 0..n {
                let w = Pin::new(&mut client).poll_write(&mut cx, &msg);
                assert!(matches!(w, Poll::Ready(Ok(MSG))));
                let mut rb = ReadBuf::new(&mut buf);
                assert!(Pin::new(&mut server).poll_read(&mut cx, &mut rb).is_ready());
                assert_eq!(rb.filled().len(), MSG);
                let w = Pin::new(&mut server).poll_write(&mut cx, &buf);
                assert!(matches!(w, Poll::Ready(Ok(MSG))));
                let mut rb = ReadBuf::new(&mut out);
                assert!(Pin::new(&mut client).poll_read(&mut cx, &mut rb).is_ready());
                assert_eq!(rb.filled().len(), MSG);
            }
        }
        "async-messages" => {
            let (mut server, mut client) = rt.block_on(async {
                let mut listener = ShmListener::bind(&addr).unwrap();
                let client = AsyncShmConnection::connect(&addr, &ShmOptions::new())
                    .await
                    .unwrap();
                (listener.accept_async_connection().await.unwrap(), client)
            });
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..n {
                let sent = std::pin::pin!(client.send(&msg)).poll(&mut cx);
                assert!(matches!(sent, Poll::Ready(Ok(()))));
                let Poll::Ready(Ok(m)) = std::pin::pin!(server.recv()).poll(&mut cx) else {
                    panic!("no message at once");
                };
                buf.copy_from_slice(&m);
                drop(m);
                let sent = std::pin::pin!(server.send(&buf)).poll(&mut cx);
                assert!(matches!(sent, Poll::Ready(Ok(()))));
                let Poll::Ready(Ok(m)) = std::pin::pin!(client.recv()).poll(&mut cx) else {
                    panic!("no reply at once");
                };
                std::hint::black_box(m.len());
            }
        }
        other => panic!("--single blocking|async|async-messages N, not {other}"),
    }
}
