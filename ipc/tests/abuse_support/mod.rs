//! Shared pieces of the abuse tests (`abuse_*.rs`): a server process made by
//! re-running the test binary with a configuration in the environment, raw
//! framed I/O for hostile clients, descriptor limits and process memory.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc::jsonrpc::ErrorObject;
use ipc::{Context, Router, Server};
use ipc_testkit::{spawn, test_binary};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Environment variable with the address a child server binds.
pub const ADDR_VAR: &str = "IPC_ABUSE_ADDR";
/// Environment variable with the child server's configuration
/// (`key=value,key=value`; see [`ServerSpec`]).
pub const SPEC_VAR: &str = "IPC_ABUSE_SPEC";
/// Environment variable with the file `mark` appends executed tags to.
pub const LEDGER_VAR: &str = "IPC_ABUSE_LEDGER";

/// How a child server is configured.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    /// `RLIMIT_NOFILE` set before the runtime starts.
    pub nofile: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub send_queue: Option<usize>,
    pub idle_timeout_ms: Option<u64>,
    pub frame_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub max_frame_len: Option<usize>,
    /// Runtime worker threads (default 2).
    pub workers: Option<usize>,
}

impl ServerSpec {
    pub fn encode(&self) -> String {
        let mut parts = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        };
        put("nofile", self.nofile.map(|v| v.to_string()));
        put(
            "max_connections",
            self.max_connections.map(|v| v.to_string()),
        );
        put("max_in_flight", self.max_in_flight.map(|v| v.to_string()));
        put("send_queue", self.send_queue.map(|v| v.to_string()));
        put(
            "idle_timeout_ms",
            self.idle_timeout_ms.map(|v| v.to_string()),
        );
        put(
            "frame_timeout_ms",
            self.frame_timeout_ms.map(|v| v.to_string()),
        );
        put(
            "write_timeout_ms",
            self.write_timeout_ms.map(|v| v.to_string()),
        );
        put("max_frame_len", self.max_frame_len.map(|v| v.to_string()));
        put("workers", self.workers.map(|v| v.to_string()));
        parts.join(",")
    }

    pub fn decode(s: &str) -> ServerSpec {
        let map: HashMap<&str, &str> = s
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').expect("key=value"))
            .collect();
        let get = |k: &str| map.get(k).map(|v| v.parse::<u64>().expect("a number"));
        ServerSpec {
            nofile: get("nofile"),
            max_connections: get("max_connections").map(|v| v as usize),
            max_in_flight: get("max_in_flight").map(|v| v as usize),
            send_queue: get("send_queue").map(|v| v as usize),
            idle_timeout_ms: get("idle_timeout_ms"),
            frame_timeout_ms: get("frame_timeout_ms"),
            write_timeout_ms: get("write_timeout_ms"),
            max_frame_len: get("max_frame_len").map(|v| v as usize),
            workers: get("workers").map(|v| v as usize),
        }
    }
}

/// The methods of the abuse test servers.
///
/// - `echo(params)` returns its params; `add(a, b)`.
/// - `blob(n)`: a string of `n` bytes.
/// - `sleep_ms(ms)`.
/// - `served()`: how many `echo` calls this server answered.
/// - `connections()`: how many connections the server has now.
/// - `pid()`: the server's process id.
/// - `mark(tag, ms)`: appends `tag` to the ledger file `$IPC_ABUSE_LEDGER`,
///   sleeps `ms`, returns `{"tag", "pid"}`.
pub fn abuse_router() -> Router {
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    Router::new()
        .method("echo", move |_ctx: Context, params: Value| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok::<_, ErrorObject>(params)
            }
        })
        .method("add", |_ctx: Context, (a, b): (i64, i64)| async move {
            Ok::<_, ErrorObject>(a + b)
        })
        .method("blob", |_ctx: Context, (n,): (usize,)| async move {
            Ok::<_, ErrorObject>("x".repeat(n))
        })
        .method("sleep_ms", |_ctx: Context, (ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, ErrorObject>(ms)
        })
        .method("served", move |_ctx: Context, (): ()| {
            let served = Arc::clone(&served);
            async move { Ok::<_, ErrorObject>(served.load(Ordering::Relaxed)) }
        })
        .method("connections", |ctx: Context, (): ()| async move {
            Ok::<_, ErrorObject>(ctx.server().connections().len())
        })
        .method("pid", |_ctx: Context, (): ()| async move {
            Ok::<_, ErrorObject>(std::process::id())
        })
        .method(
            "mark",
            |_ctx: Context, (tag, ms): (String, u64)| async move {
                // Records the call in the ledger first: it was executed even if
                // the answer never arrives.
                let ledger = std::env::var(LEDGER_VAR)
                    .map_err(|_| ErrorObject::internal("no ledger configured"))?;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(ledger)
                    .map_err(ErrorObject::internal)?;
                std::io::Write::write_all(&mut f, format!("{tag}\n").as_bytes())
                    .map_err(ErrorObject::internal)?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, ErrorObject>(json!({"tag": tag, "pid": std::process::id()}))
            },
        )
}

/// Sets the soft `RLIMIT_NOFILE` to `n` (at most the hard limit); returns the
/// limit now in force.
pub fn set_nofile(n: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let max = cur.maximum.unwrap_or(u64::MAX);
    let want = n.min(max);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: cur.maximum,
        },
    )
    .expect("setrlimit(RLIMIT_NOFILE)");
    want
}

/// Raises the soft `RLIMIT_NOFILE` to at least `n` when the hard limit
/// allows; returns the limit now in force.
pub fn raise_nofile(n: u64) -> u64 {
    use rustix::process::{getrlimit, Resource};
    let cur = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if cur >= n {
        return cur;
    }
    set_nofile(n)
}

/// Body of the child-server entry tests: binds `$IPC_ABUSE_ADDR` with the
/// configuration in `$IPC_ABUSE_SPEC` and serves [`abuse_router`] until
/// killed. Logs (errors only, unless `RUST_LOG` says otherwise) go to
/// stderr, which the parent may capture.
pub fn run_child_server() {
    let Ok(address) = std::env::var(ADDR_VAR) else {
        return;
    };
    let spec = ServerSpec::decode(&std::env::var(SPEC_VAR).unwrap_or_default());
    if let Some(n) = spec.nofile {
        // Before the runtime exists, so every descriptor it opens counts.
        set_nofile(n);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.workers.unwrap_or(2))
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = ipc::bind(&address).await.expect("child bind");
        let mut b = Server::builder();
        if let Some(v) = spec.max_connections {
            b = b.max_connections(v);
        }
        if let Some(v) = spec.max_in_flight {
            b = b.max_in_flight(v);
        }
        if let Some(v) = spec.send_queue {
            b = b.send_queue(v);
        }
        if let Some(v) = spec.idle_timeout_ms {
            b = b.idle_timeout(Some(Duration::from_millis(v)));
        }
        if let Some(v) = spec.frame_timeout_ms {
            b = b.frame_timeout(Duration::from_millis(v));
        }
        if let Some(v) = spec.write_timeout_ms {
            b = b.write_timeout(Duration::from_millis(v));
        }
        if let Some(v) = spec.max_frame_len {
            b = b.max_frame_len(v);
        }
        let handle = b.build().serve(listener, abuse_router());
        handle.stopped().await;
        let _ = handle.shutdown(Duration::from_secs(5)).await;
    });
}

/// A child process, killed and reaped however the test ends.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    /// Where its stderr goes, when captured.
    pub log: Option<PathBuf>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The captured stderr so far.
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Re-runs this test binary as a child executing the ignored test `entry`,
/// with `env` set; its stderr goes to `log` when given, else is inherited.
pub fn spawn_entry(entry: &str, env: &[(&str, &str)], log: Option<&Path>) -> Proc {
    let mut cmd = test_binary(entry);
    cmd.arg("--ignored")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(path) = log {
        cmd.stderr(std::fs::File::create(path).expect("log file"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc {
        child: spawn(&mut cmd),
        log: log.map(Path::to_path_buf),
    }
}

/// Starts a child server (entry `entry`, which calls [`run_child_server`])
/// at `address` with `spec`, and waits until it accepts connections.
pub async fn start_server(
    entry: &str,
    address: &str,
    spec: &ServerSpec,
    log: Option<&Path>,
) -> Proc {
    let encoded = spec.encode();
    let proc = spawn_entry(entry, &[(ADDR_VAR, address), (SPEC_VAR, &encoded)], log);
    wait_for_server(address).await;
    proc
}

/// Waits until something accepts connections at `address`.
pub async fn wait_for_server(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ipc::connect_transport(address).await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("server at {address} never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A fresh private directory for sockets.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ipc-abuse-")
        .tempdir()
        .expect("temp dir")
}

/// `unix:<dir>/<name>` and the path.
pub fn unix_address(dir: &Path, name: &str) -> (String, PathBuf) {
    let path = dir.join(name);
    (format!("unix:{}", path.display()), path)
}

/// Fails the test instead of hanging CI.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A length-delimited frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A framed JSON-RPC request.
pub fn request_frame(method: &str, params: Value, id: u64) -> Vec<u8> {
    frame(
        &serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}),
        )
        .unwrap(),
    )
}

/// Reads one length-delimited frame as JSON; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Value>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut buf).await?;
    Ok(Some(
        serde_json::from_slice(&buf).expect("the server sent JSON"),
    ))
}

/// Writes all of `bytes`.
pub async fn write_all<W: AsyncWriteExt + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await
}

/// Resident memory of process `pid` in bytes (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Open descriptors of process `pid`.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A small deterministic generator (xorshift64*), seeded per run and printed
/// so a failing run can be repeated with `IPC_ABUSE_SEED`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_time(what: &str) -> Rng {
        let seed = std::env::var("IPC_ABUSE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{what}: IPC_ABUSE_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}
