//! The load of a soak run, its victim client processes, and the report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;

use crate::sys::{mib, raise_nofile, rss_bytes};
use crate::RunArgs;

/// A request neither answered nor failed after this long counts as lost
/// (the client's own request timeout, 30 s, fires well before).
const LOST_AFTER: Duration = Duration::from_secs(90);

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Counters of a run, shared by every load task.
#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    mismatched: AtomicU64,
    lost: AtomicU64,
    abandoned: AtomicU64,
    payload_bytes: AtomicU64,
    /// Errors by kind; `expected` ones were asked for (unknown method,
    /// invalid params).
    errors: Mutex<BTreeMap<(bool, String), u64>>,
    connections: AtomicU64,
    churned: AtomicU64,
    garbage: AtomicU64,
    garbage_answered: AtomicU64,
    garbage_wrong: AtomicU64,
    killed: AtomicU64,
}

impl Stats {
    fn error(&self, kind: String, expected: bool) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((expected, kind))
            .or_default() += 1;
    }

    fn unexpected(&self) -> u64 {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((expected, _), _)| !expected)
            .map(|(_, n)| n)
            .sum()
    }
}

fn error_kind(e: &ipc::Error) -> String {
    match e {
        ipc::Error::Disconnected => "disconnected".into(),
        ipc::Error::Timeout(_) => "timeout".into(),
        ipc::Error::Shutdown => "shutdown".into(),
        ipc::Error::Rpc(obj) => format!("rpc {}", obj.code),
        ipc::Error::FrameTooLarge { .. } => "frame too large".into(),
        ipc::Error::Protocol(_) => "protocol".into(),
        ipc::Error::Io { .. } => "io".into(),
        other => format!("other: {other}"),
    }
}

/// Runs `call` as one request: counts it, and classifies its outcome with
/// `check` (true: the answer is the one asked for). `expect_code` is the
/// JSON-RPC error code the request was built to get, if any.
async fn request<F>(
    stats: &Stats,
    expect_code: Option<i64>,
    call: F,
    check: impl FnOnce(&Value) -> bool,
) where
    F: std::future::Future<Output = ipc::Result<Value>>,
{
    stats.requests.fetch_add(1, Ordering::Relaxed);
    match tokio::time::timeout(LOST_AFTER, call).await {
        Err(_) => {
            stats.lost.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok(v)) => {
            if expect_code.is_none() && check(&v) {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.mismatched.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Err(ipc::Error::Rpc(obj))) if Some(obj.code) == expect_code => {
            stats.error(format!("rpc {} (asked for)", obj.code), true);
        }
        Ok(Err(e)) => stats.error(error_kind(&e), false),
    }
}

fn filler(tag: u64, len: usize) -> String {
    let c = char::from(b'a' + (tag % 26) as u8);
    std::iter::repeat_n(c, len).collect()
}

/// One operation of the mixed load on `client`.
async fn one_op(client: &ipc::Client, rng: &mut Rng, stats: &Stats) {
    let tag = rng.next();
    let roll = rng.range(0, 1000);
    let echo_len = match roll {
        0..600 => Some(rng.range(10, 200)),
        600..800 => Some(rng.range(1 << 10, 16 << 10)),
        800..880 => Some(rng.range(64 << 10, 512 << 10)),
        880..890 => Some(rng.range(1 << 20, 4 << 20)),
        _ => None,
    };
    if let Some(len) = echo_len {
        let payload = json!({"tag": tag, "data": filler(tag, len as usize)});
        stats.payload_bytes.fetch_add(len, Ordering::Relaxed);
        request(stats, None, client.request_value("echo", &payload), |v| {
            v == &payload
        })
        .await;
        return;
    }
    match roll {
        890..940 => {
            let n = rng.range(1, 256 << 10) as usize;
            stats.payload_bytes.fetch_add(n as u64, Ordering::Relaxed);
            request(stats, None, client.request_value("blob", (n,)), |v| {
                v.as_str()
                    .is_some_and(|s| s.len() == n && s.bytes().all(|b| b == b'x'))
            })
            .await;
        }
        940..960 => {
            let ms = rng.range(0, 20);
            request(stats, None, client.request_value("sleep_ms", (ms,)), |v| {
                v == &json!(ms)
            })
            .await;
        }
        960..980 => {
            // A batch of echoes around a notification: each answer matched.
            let n = rng.range(2, 8);
            let payloads: Vec<Value> = (0..n)
                .map(|i| json!({"tag": tag, "i": i, "data": filler(tag + i, 64)}))
                .collect();
            let mut batch = client.batch();
            for (i, p) in payloads.iter().enumerate() {
                batch = batch.request("echo", p).expect("serialise");
                if i == 0 {
                    batch = batch.notify("echo", p).expect("serialise");
                }
            }
            stats.requests.fetch_add(n, Ordering::Relaxed);
            match tokio::time::timeout(LOST_AFTER, batch.send()).await {
                Err(_) => {
                    stats.lost.fetch_add(n, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    for _ in 0..n {
                        stats.error(error_kind(&e), false);
                    }
                }
                Ok(Ok(results)) => {
                    if results.len() != payloads.len() {
                        stats.mismatched.fetch_add(n, Ordering::Relaxed);
                        return;
                    }
                    for (r, p) in results.iter().zip(&payloads) {
                        match r {
                            Ok(v) if v == p => stats.ok.fetch_add(1, Ordering::Relaxed),
                            Ok(_) => stats.mismatched.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                stats.error(error_kind(e), false);
                                0
                            }
                        };
                    }
                }
            }
        }
        980..990 => {
            request(
                stats,
                Some(-32601),
                client.request_value("no_such_method", (tag,)),
                |_| false,
            )
            .await;
        }
        _ => {
            request(
                stats,
                Some(-32602),
                client.request_value("add", ("one", "two")),
                |_| false,
            )
            .await;
        }
    }
}

/// Four request loops sharing one long-lived connection.
async fn steady(
    address: String,
    seed: u64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = ipc::connect(&address)
        .await
        .context("connecting a steady client")?;
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let loops = (0..4).map(|k| {
        let (client, stats, stop) = (client.clone(), Arc::clone(&stats), Arc::clone(&stop));
        async move {
            let mut rng = Rng::new(seed ^ (k + 1));
            while !stop.load(Ordering::Relaxed) {
                one_op(&client, &mut rng, &stats).await;
            }
        }
    });
    futures::future::join_all(loops).await;
    Ok(())
}

/// Short-lived connections: a few requests each, and now and then a large
/// request abandoned in flight as the connection is dropped.
async fn churn(address: String, seed: u64, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let client = match ipc::connect(&address).await {
            Ok(c) => c,
            Err(e) => {
                stats.error(format!("connect: {}", error_kind(&e)), false);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        for _ in 0..rng.range(1, 6) {
            one_op(&client, &mut rng, &stats).await;
        }
        if rng.range(0, 10) < 3 {
            let c = client.clone();
            let payload = json!({"data": filler(1, 256 << 10)});
            let inflight = tokio::spawn(async move { c.request_value("echo", &payload).await });
            tokio::time::sleep(Duration::from_micros(rng.range(0, 3000))).await;
            inflight.abort();
            stats.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        drop(client);
        stats.churned.fetch_add(1, Ordering::Relaxed);
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

async fn read_frame(s: &mut UnixStream) -> Option<Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.ok()?;
    serde_json::from_slice(&buf).ok()
}

/// One hostile connection: random bytes, a half frame, an oversized length,
/// bad JSON (answered with -32700) or a JSON-stream request (answered).
/// Returns whether an answer was expected and was right.
async fn garbage_once(path: &str, rng: &mut Rng) -> Option<bool> {
    let mut s = UnixStream::connect(path).await.ok()?;
    let within = |secs| Duration::from_secs(secs);
    match rng.range(0, 5) {
        0 => {
            let bytes: Vec<u8> = (0..rng.range(1, 64)).map(|_| rng.next() as u8).collect();
            let _ = s.write_all(&bytes).await;
            None
        }
        1 => {
            let mut half = frame(&[b'{'; 100]);
            half.truncate(54);
            let _ = s.write_all(&half).await;
            None
        }
        2 => {
            let _ = s.write_all(&0x7fff_ffffu32.to_be_bytes()).await;
            // The connection is closed without an allocation of that size.
            let mut buf = [0u8; 256];
            let closed = tokio::time::timeout(within(10), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await
            .is_ok();
            Some(closed)
        }
        3 => {
            s.write_all(&frame(b"{nope")).await.ok()?;
            let reply = tokio::time::timeout(within(10), read_frame(&mut s))
                .await
                .ok()??;
            Some(reply["error"]["code"] == -32700 && reply["id"].is_null())
        }
        _ => {
            s.write_all(
                b"{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[40,2],\"id\":\"js\"}\n",
            )
            .await
            .ok()?;
            let mut line = String::new();
            let mut r = BufReader::new(&mut s);
            tokio::time::timeout(within(10), r.read_line(&mut line))
                .await
                .ok()?
                .ok()?;
            let reply: Value = serde_json::from_str(&line).ok()?;
            Some(reply["result"] == 42 && reply["id"] == "js")
        }
    }
}

async fn garbage(path: String, seed: u64, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        stats.garbage.fetch_add(1, Ordering::Relaxed);
        match garbage_once(&path, &mut rng).await {
            Some(true) => {
                stats.garbage_answered.fetch_add(1, Ordering::Relaxed);
            }
            Some(false) => {
                stats.garbage_wrong.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts client processes and kills them with SIGKILL after a random time.
async fn killer(
    address: String,
    seed: u64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let mut child = Command::new(&exe)
            .args([
                "victim",
                "--address",
                &address,
                "--seed",
                &rng.next().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a victim client process")?;
        tokio::time::sleep(Duration::from_millis(rng.range(50, 600))).await;
        child.kill().await?;
        stats.killed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A victim process: two connections, eight request loops of mixed sizes,
/// until it is killed (or after a minute).
pub fn victim(address: &str, seed: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stats = Arc::new(Stats::default());
        let mut loops = Vec::new();
        for c in 0..2 {
            let client = ipc::connect(address).await?;
            for k in 0..4u64 {
                let (client, stats) = (client.clone(), Arc::clone(&stats));
                loops.push(async move {
                    let mut rng = Rng::new(seed ^ (c * 4 + k + 1));
                    loop {
                        one_op(&client, &mut rng, &stats).await;
                    }
                });
            }
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(loops)).await;
        Ok(())
    })
}

async fn live_connections(observer: &ipc::Client) -> Option<usize> {
    observer.request("connections", ()).await.ok()
}

async fn wait_connections(observer: &ipc::Client, want: usize, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if live_connections(observer).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What the idle-connection measurement found.
#[derive(Debug)]
struct Idle {
    count: usize,
    before: u64,
    with: u64,
    after: Option<u64>,
}

async fn measure_idle(
    path: &str,
    observer: &ipc::Client,
    pid: u32,
    count: usize,
) -> anyhow::Result<Idle> {
    if !wait_connections(observer, 1, 60).await {
        bail!("the server has connections other than the observer's");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(pid).context("server RSS")?;
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(
            UnixStream::connect(path)
                .await
                .context("opening an idle connection")?,
        );
    }
    if !wait_connections(observer, count + 1, 60).await {
        bail!("the server did not take all {count} idle connections");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = rss_bytes(pid).context("server RSS")?;
    drop(idle);
    let after = if wait_connections(observer, 1, 30).await {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_bytes(pid)
    } else {
        None
    };
    Ok(Idle {
        count,
        before,
        with,
        after,
    })
}

/// The `run` subcommand.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let nofile = raise_nofile(65_536);
    if nofile < args.idle as u64 + 512 {
        bail!(
            "RLIMIT_NOFILE is {nofile}; {} idle connections need more (raise `ulimit -n`)",
            args.idle
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(drive(args, seed))
}

async fn drive(args: RunArgs, seed: u64) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new().prefix("ipc-soak-").tempdir()?;
    let path = dir.path().join("soak.sock");
    let address = format!("unix:{}", path.display());
    let path = path.to_string_lossy().into_owned();
    let log_path = dir.path().join("server.log");

    let mut server = Command::new(std::env::current_exe()?)
        .args(["server", "--address", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting the server process")?;
    let pid = server.id().context("server pid")?;
    let mut ready = BufReader::new(server.stdout.take().context("server stdout")?);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), ready.read_line(&mut line))
        .await
        .context("the server did not start within 30 s")??;
    if line.trim() != "ready" {
        bail!(
            "the server did not start: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    let observer = ipc::connect(&address).await?;
    // Memory per idle connection, on the fresh server (after the load the
    // allocator keeps freed memory around and would hide it).
    let idle = if args.idle > 0 {
        Some(measure_idle(&path, &observer, pid, args.idle).await)
    } else {
        None
    };
    let start_rss = rss_bytes(pid).context("server RSS")?;
    println!(
        "ipc soak: {} s against {address} (server pid {pid}), {} long-lived connections x 4 loops, \
         churn, garbage, killed client processes; seed {seed}",
        args.seconds, args.connections
    );

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.connections as u64 {
        tasks.spawn(steady(
            address.clone(),
            seed ^ (c << 8),
            Arc::clone(&stats),
            Arc::clone(&stop),
        ));
    }
    for c in 0..2u64 {
        let (a, s, st) = (address.clone(), Arc::clone(&stats), Arc::clone(&stop));
        tasks.spawn(async move {
            churn(a, seed ^ (0xc0 + c), s, st).await;
            Ok(())
        });
    }
    {
        let (p, s, st) = (path.clone(), Arc::clone(&stats), Arc::clone(&stop));
        tasks.spawn(async move {
            garbage(p, seed ^ 0x9a, s, st).await;
            Ok(())
        });
    }
    tasks.spawn(killer(
        address.clone(),
        seed ^ 0x41,
        Arc::clone(&stats),
        Arc::clone(&stop),
    ));

    // Sample the server's memory while the load runs.
    let mut peak = start_rss;
    let mut timeline = Vec::new();
    let mut next_mark = started + Duration::from_secs(10);
    let mut server_alive = true;
    let deadline = started + Duration::from_secs(args.seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match rss_bytes(pid) {
            Some(r) => peak = peak.max(r),
            None => {
                server_alive = false;
                break;
            }
        }
        if Instant::now() >= next_mark {
            timeline.push(rss_bytes(pid).unwrap_or(0));
            next_mark += Duration::from_secs(10);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut task_errors = Vec::new();
    let drained = tokio::time::timeout(LOST_AFTER + Duration::from_secs(30), async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => task_errors.push(format!("{e:#}")),
                Err(e) => task_errors.push(format!("load task failed: {e}")),
            }
        }
    })
    .await
    .is_ok();
    let load_secs = started.elapsed().as_secs_f64();
    if let Some(r) = rss_bytes(pid) {
        peak = peak.max(r);
    } else {
        server_alive = false;
    }

    let final_ok = server_alive && observer.request::<i64>("add", (2, 2)).await.ok() == Some(4);
    server_alive &= server.try_wait()?.is_none();
    let _ = server.kill().await;

    // The report.
    let s = &*stats;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let requests = get(&s.requests);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nipc soak report ({load_secs:.0} s of load, seed {seed})"
    );
    let _ = writeln!(
        out,
        "  requests              {requests} ({:.0}/s), {} of payload",
        requests as f64 / load_secs,
        mib(get(&s.payload_bytes))
    );
    let _ = writeln!(out, "  answered correctly    {}", get(&s.ok));
    let errors = s.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if errors.is_empty() {
        let _ = writeln!(out, "  errors                none");
    }
    for ((expected, kind), n) in &errors {
        let _ = writeln!(
            out,
            "  error {:<15} {n}{}",
            kind,
            if *expected { "" } else { "  (unexpected)" }
        );
    }
    let _ = writeln!(out, "  mismatched answers    {}", get(&s.mismatched));
    let _ = writeln!(out, "  responses lost        {}", get(&s.lost));
    let _ = writeln!(
        out,
        "  abandoned by clients  {} (requests dropped in flight with their connection)",
        get(&s.abandoned)
    );
    let _ = writeln!(
        out,
        "  connections           {} long-lived/churned ({} churned), {} garbage ({} answered correctly, {} wrongly), {} client processes killed",
        get(&s.connections),
        get(&s.churned),
        get(&s.garbage),
        get(&s.garbage_answered),
        get(&s.garbage_wrong),
        get(&s.killed)
    );
    let timeline_text: Vec<String> = timeline
        .iter()
        .map(|r| format!("{:.1}", *r as f64 / 1048576.0))
        .collect();
    let _ = writeln!(
        out,
        "  server RSS            before the load {}, peak {}; every 10 s: [{}] MiB",
        mib(start_rss),
        mib(peak),
        timeline_text.join(", ")
    );
    if timeline.len() >= 4 {
        // Growth between the first and second half of the run: a leak shows
        // as steady growth, allocator churn as noise around a plateau.
        let half = timeline.len() / 2;
        let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
        let (early, late) = (mean(&timeline[..half]), mean(&timeline[half..]));
        let _ = writeln!(
            out,
            "  server RSS trend      {:+.0}% from the first half of the run to the second",
            (late / early - 1.0) * 100.0
        );
    }
    let mut idle_failed = false;
    match &idle {
        Some(Ok(i)) => {
            let per = i.with.saturating_sub(i.before) / i.count as u64;
            let _ = writeln!(
                out,
                "  idle connections      {} idle on the fresh server: {} -> {} = {:.1} KiB per connection ({} after they closed)",
                i.count,
                mib(i.before),
                mib(i.with),
                per as f64 / 1024.0,
                i.after.map(mib).unwrap_or_else(|| "-".into())
            );
        }
        Some(Err(e)) => {
            idle_failed = true;
            let _ = writeln!(out, "  idle connections      FAILED: {e:#}");
        }
        None => {}
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    let errs = log.lines().filter(|l| l.contains(" ERROR ")).count();
    let _ = writeln!(
        out,
        "  server log            {warns} warnings, {errs} errors (hostile peers closed)"
    );
    for e in &task_errors {
        let _ = writeln!(out, "  load task error       {e}");
    }

    let unexpected = s.unexpected();
    let mut problems = Vec::new();
    if get(&s.lost) > 0 {
        problems.push(format!("{} responses lost", get(&s.lost)));
    }
    if get(&s.mismatched) > 0 {
        problems.push(format!("{} mismatched answers", get(&s.mismatched)));
    }
    if unexpected > 0 {
        problems.push(format!("{unexpected} unexpected errors"));
    }
    if get(&s.garbage_wrong) > 0 {
        problems.push(format!(
            "{} garbage connections answered wrongly",
            get(&s.garbage_wrong)
        ));
    }
    if !server_alive || !final_ok {
        problems.push("the server died or stopped answering".into());
    }
    if !drained {
        problems.push("load tasks did not finish".into());
    }
    if !task_errors.is_empty() || idle_failed {
        problems.push("a load task or the idle measurement failed".into());
    }
    if requests == 0 {
        problems.push("no requests were made".into());
    }
    if problems.is_empty() {
        let _ = writeln!(
            out,
            "result: PASS (0 lost, 0 mismatched, 0 unexpected errors, server alive)"
        );
    } else {
        let _ = writeln!(out, "result: FAIL: {}", problems.join("; "));
    }
    print!("{out}");
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
