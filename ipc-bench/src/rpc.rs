//! The JSON-RPC workload: `echo` calls with a string parameter, some number
//! in flight on each of some number of connections, for a fixed time.
//!
//! Every JSON-RPC server gets the same load from a client on a
//! current-thread runtime in the benchmark process, and every server runs on
//! a two-worker multi-thread runtime in its own process, except the pair
//! whose client busy-polls: those run on one worker.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::mech::{current_thread, RpcLoad, RpcOutcome, Session};
use crate::proto::new_histogram;

/// Requests a server accepts in flight per connection (the largest load
/// `--load` takes).
pub const MAX_IN_FLIGHT: usize = 256;

/// Connections a server accepts at once (the largest load `--load` takes).
pub const MAX_CONNECTIONS: usize = 256;

/// Time spent warming each load up before it is measured.
const WARMUP: Duration = Duration::from_millis(100);

/// A connected JSON-RPC client.
#[allow(async_fn_in_trait)]
pub trait RpcClient: 'static {
    /// Calls `echo` with `param`; returns the length of the string echoed back.
    async fn echo(&self, param: &str) -> io::Result<usize>;
}

/// [`RpcClient`] over `ipc_core::Client`.
#[derive(Debug)]
pub struct IpcClient(ipc_core::Client);

/// Wraps an `ipc_core::Client`.
pub fn ipc_client(c: ipc_core::Client) -> IpcClient {
    IpcClient(c)
}

impl RpcClient for IpcClient {
    async fn echo(&self, param: &str) -> io::Result<usize> {
        let s: String = self.0.request("echo", [param]).await?;
        Ok(s.len())
    }
}

impl Drop for IpcClient {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The `echo` method on the workspace's router.
pub fn router() -> ipc_core::Router {
    ipc_core::Router::new().method("echo", |_ctx, (s,): (String,)| async move {
        Ok::<_, ipc_core::jsonrpc::ErrorObject>(s)
    })
}

/// The runtime every JSON-RPC server process runs on, except those whose
/// client busy-polls.
pub fn server_runtime() -> io::Result<tokio::runtime::Runtime> {
    runtime_with_workers(2)
}

/// The runtime of the servers whose client busy-polls
/// (`ipc-jsonrpc-busypoll` and its peer): one worker, which never sleeps in
/// the reactor while it polls. With a second worker asleep in the reactor,
/// every request the polled socket receives would wake that worker too.
#[cfg(unix)]
pub fn polling_server_runtime() -> io::Result<tokio::runtime::Runtime> {
    runtime_with_workers(1)
}

fn runtime_with_workers(n: usize) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n)
        .enable_all()
        .build()
}

/// Busy-poll budget of the mechanisms that poll (`ipc-jsonrpc-busypoll`'s
/// server and the client of it and of its peer).
#[cfg(unix)]
pub const BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(50);

/// A session whose connections busy-poll for [`BUSY_POLL`], speaking
/// `framing` to the server at `endpoint`.
#[cfg(unix)]
pub fn polling_session(
    endpoint: std::path::PathBuf,
    framing: ipc_core::codec::Framing,
) -> anyhow::Result<Box<dyn Session>> {
    RpcSession::boxed(move || {
        let endpoint = endpoint.clone();
        async move {
            let mut t = crate::sys::connect_local(&endpoint).await?;
            t.set_busy_poll(Some(BUSY_POLL));
            Ok(ipc_client(
                ipc_core::Client::builder().framing(framing).build(t),
            ))
        }
    })
}

/// A client session that opens as many connections as each load asks for.
pub struct RpcSession<C, F> {
    rt: tokio::runtime::Runtime,
    connect: F,
    first: Option<C>,
}

impl<C, F, Fut> RpcSession<C, F>
where
    C: RpcClient,
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = anyhow::Result<C>>,
{
    /// Connects once (so a server that cannot be reached fails early) and
    /// returns the session.
    pub fn boxed(connect: F) -> anyhow::Result<Box<dyn Session>> {
        let rt = current_thread()?;
        let first = rt.block_on(connect())?;
        Ok(Box::new(RpcSession {
            rt,
            connect,
            first: Some(first),
        }))
    }
}

impl<C, F, Fut> Session for RpcSession<C, F>
where
    C: RpcClient,
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = anyhow::Result<C>>,
{
    fn rpc(&mut self, load: RpcLoad) -> io::Result<RpcOutcome> {
        let first = self.first.take();
        let connect = &self.connect;
        self.rt.block_on(async move {
            let mut clients = Vec::with_capacity(load.connections);
            clients.extend(first);
            while clients.len() < load.connections {
                clients.push(connect().await.map_err(io::Error::other)?);
            }
            let param = "x".repeat(load.size);
            phase(&clients, load.in_flight, &param, WARMUP).await?;
            phase(&clients, load.in_flight, &param, load.duration).await
        })
    }
}

async fn worker<C: RpcClient>(
    c: &C,
    param: &str,
    deadline: Instant,
) -> io::Result<(u64, Histogram<u64>)> {
    let mut hist = new_histogram();
    let mut calls = 0;
    // At least one call each, even if this worker is first polled after the
    // deadline (a load never reports zero calls without having tried).
    while calls == 0 || Instant::now() < deadline {
        let t0 = Instant::now();
        let n = c.echo(param).await?;
        hist.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
        if n != param.len() {
            return Err(crate::proto::bad(format!(
                "echo returned {n} bytes for a {}-byte string",
                param.len()
            )));
        }
        calls += 1;
    }
    Ok((calls, hist))
}

async fn phase<C: RpcClient>(
    clients: &[C],
    in_flight: usize,
    param: &str,
    duration: Duration,
) -> io::Result<RpcOutcome> {
    let start = Instant::now();
    let deadline = start + duration;
    let workers = clients
        .iter()
        .flat_map(|c| (0..in_flight).map(move |_| worker(c, param, deadline)));
    let results = futures::future::join_all(workers).await;
    let elapsed = start.elapsed();
    let mut hist = new_histogram();
    let mut calls = 0;
    for r in results {
        let (n, h) = r?;
        calls += n;
        hist.add(&h).map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(RpcOutcome {
        calls,
        elapsed,
        hist,
    })
}
