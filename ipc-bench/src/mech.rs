//! The mechanism registry and the client-side session every mechanism provides.
//!
//! Adding a mechanism is one [`Mechanism`] value in the list of its module
//! (`raw`, `peers`, `ours` for every platform; `sys::unix::*` or
//! `sys::windows::*` for one platform only): a `serve` function run in the server process and
//! a `connect` function that returns a [`Session`]. For a message channel,
//! `serve` is usually [`crate::proto::serve_sync`] or `serve_async` on each
//! accepted connection, and `connect` wraps the channel in [`SyncSession`] or
//! [`AsyncSession`]; the workloads are shared.

use std::io;
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::proto::{self, LatencySpec, MsgAsync, MsgSync, Stream};

/// Where a mechanism stands in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Written directly on the OS: the floor the others are compared with.
    Baseline,
    /// This workspace's transports.
    Ours,
    /// Other crates a user might pick instead.
    Peer,
}

impl Group {
    /// Short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Group::Baseline => "baseline",
            Group::Ours => "ours",
            Group::Peer => "peer",
        }
    }
}

/// Where the server side of a mechanism runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// No server: a single-process figure such as memcpy bandwidth.
    None,
    /// A child process that prints `ready [info]` on stdout once it listens.
    Child,
    /// A child process whose stdin and stdout are the data channel (a pipe pair).
    ChildStdio,
}

/// One thing the benchmark can measure.
#[derive(Debug, Clone, Copy)]
pub struct Mechanism {
    /// Name used on the command line and in the results.
    pub name: &'static str,
    /// Baseline, ours or peer.
    pub group: Group,
    /// The baseline whose figures this one's ratios refer to.
    pub baseline: &'static str,
    /// One line on what exactly is measured.
    pub about: &'static str,
    /// How the server side runs.
    pub server: ServerKind,
    /// Runs the server in the child process (never returns while serving).
    pub serve: fn(&ServeCtx) -> anyhow::Result<()>,
    /// Connects to the server and returns the client's session.
    pub connect: fn(ConnectCtx) -> anyhow::Result<Box<dyn Session>>,
}

/// What the server process is given.
#[derive(Debug)]
pub struct ServeCtx {
    /// A fresh path in a private temp directory, for a socket, FIFO or
    /// mapping; on Windows, named pipes take their name from it.
    pub endpoint: PathBuf,
}

impl ServeCtx {
    /// Tells the parent the server is listening; `info` is passed to `connect`.
    pub fn ready(&self, info: &str) -> io::Result<()> {
        use std::io::Write;
        let mut out = io::stdout().lock();
        writeln!(out, "ready {info}")?;
        out.flush()
    }
}

/// What the client side is given.
#[derive(Debug)]
pub struct ConnectCtx {
    /// The same path the server was given.
    pub endpoint: PathBuf,
    /// What the server passed to [`ServeCtx::ready`].
    pub info: String,
    /// For [`ServerKind::ChildStdio`]: the child's stdin (client writes).
    pub stdin: Option<ChildStdin>,
    /// For [`ServerKind::ChildStdio`]: the child's stdout (client reads).
    pub stdout: Option<ChildStdout>,
}

/// Load for a JSON-RPC run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RpcLoad {
    /// Connections.
    pub connections: usize,
    /// Requests in flight on each connection.
    pub in_flight: usize,
    /// Bytes of the string parameter echoed by each call.
    pub size: usize,
    /// How long to run.
    pub duration: Duration,
}

/// Outcome of a JSON-RPC run.
#[derive(Debug)]
pub struct RpcOutcome {
    /// Calls answered.
    pub calls: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Per-call latency (request sent to response received), in ns.
    pub hist: Histogram<u64>,
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("{what} does not apply"))
}

/// The client side of a connected mechanism.
pub trait Session {
    /// Round trips (back to back, or paced when `spec.rate` is set).
    fn latency(&mut self, spec: LatencySpec) -> io::Result<Histogram<u64>> {
        let _ = spec;
        Err(unsupported("round-trip latency"))
    }
    /// A one-way stream of `size`-byte messages for about `duration`.
    fn throughput(&mut self, size: usize, duration: Duration) -> io::Result<Stream> {
        let _ = (size, duration);
        Err(unsupported("stream throughput"))
    }
    /// JSON-RPC calls under a load.
    fn rpc(&mut self, load: RpcLoad) -> io::Result<RpcOutcome> {
        let _ = load;
        Err(unsupported("JSON-RPC"))
    }
    /// Ends the session cleanly.
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A session over a blocking message channel.
#[derive(Debug)]
pub struct SyncSession<S>(pub S);

impl<S: MsgSync> Session for SyncSession<S> {
    fn latency(&mut self, spec: LatencySpec) -> io::Result<Histogram<u64>> {
        proto::latency_sync(&mut self.0, spec)
    }
    fn throughput(&mut self, size: usize, duration: Duration) -> io::Result<Stream> {
        proto::throughput_sync(&mut self.0, size, duration)
    }
    fn close(&mut self) -> io::Result<()> {
        proto::end_sync(&mut self.0)
    }
}

/// A session over an async message channel, driven by a current-thread
/// tokio runtime on the benchmark thread: what a latency-sensitive user of
/// an async transport picks (no cross-thread wake-up inside a round trip).
#[derive(Debug)]
pub struct AsyncSession<S> {
    rt: tokio::runtime::Runtime,
    s: S,
}

/// A current-thread runtime with I/O and timers.
pub fn current_thread() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

impl<S: MsgAsync + 'static> AsyncSession<S> {
    /// Builds the runtime, then the channel inside it with `connect`.
    pub fn connect<F, Fut>(connect: F) -> anyhow::Result<Box<dyn Session>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<S>>,
    {
        let rt = current_thread()?;
        let s = rt.block_on(connect())?;
        Ok(Box::new(AsyncSession { rt, s }))
    }
}

impl<S: MsgAsync> Session for AsyncSession<S> {
    fn latency(&mut self, spec: LatencySpec) -> io::Result<Histogram<u64>> {
        self.rt.block_on(proto::latency_async(&mut self.s, spec))
    }
    fn throughput(&mut self, size: usize, duration: Duration) -> io::Result<Stream> {
        self.rt
            .block_on(proto::throughput_async(&mut self.s, size, duration))
    }
    fn close(&mut self) -> io::Result<()> {
        self.rt.block_on(proto::end_async(&mut self.s))
    }
}

/// Every mechanism this build knows, baselines first.
pub fn all() -> Vec<Mechanism> {
    let mut v = Vec::new();
    v.extend(crate::memcpy::mechanisms());
    v.extend(crate::raw::mechanisms());
    v.extend(crate::ours::mechanisms());
    v.extend(crate::shm::mechanisms());
    v.extend(crate::peers::mechanisms());
    v.extend(crate::peers_rpc::mechanisms());
    #[cfg(all(unix, feature = "iceoryx2"))]
    v.push(crate::iox::mechanism());
    v
}

/// Mechanisms the issue asks for that this build does not have, with why.
pub fn not_built() -> Vec<(&'static str, &'static str)> {
    let mut v = crate::sys::not_built();
    v.extend(crate::peers_rpc::not_built());
    #[cfg(all(unix, not(feature = "iceoryx2")))]
    v.push((
        "iceoryx2",
        "built without the `iceoryx2` feature of ipc-bench",
    ));
    v
}

/// The mechanism called `name`.
pub fn find(name: &str) -> Option<Mechanism> {
    all().into_iter().find(|m| m.name == name)
}
