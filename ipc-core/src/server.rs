//! The JSON-RPC server: serves any [`Listener`] with a [`Handler`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::address::Address;
use crate::codec::{FrameCodec, Framing, DEFAULT_MAX_FRAME_LEN};
use crate::error::{Error, Result};
use crate::handler::{Context, Handler, NotificationSink};
use crate::jsonrpc::{self, to_params, ErrorObject, Id, Incoming, Message, Notification, Response};
use crate::outbox::{Outbox, Outgoing};
use crate::peer::AuthPolicy;
use crate::transport::{BoxTransport, Listener};

/// Limits and policy of a [`Server`]. Build one with [`Server::builder`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    max_frame_len: usize,
    max_connections: usize,
    max_in_flight: usize,
    send_queue: usize,
    send_buffer: usize,
    idle_timeout: Option<Duration>,
    frame_timeout: Duration,
    write_timeout: Duration,
    auth: AuthPolicy,
    fallback_framing: Framing,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_connections: 1024,
            max_in_flight: 64,
            send_queue: 1024,
            send_buffer: 4 * 1024 * 1024,
            idle_timeout: None,
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            auth: AuthPolicy::SameUser,
            fallback_framing: Framing::LengthDelimited,
        }
    }
}

/// Configures a [`Server`].
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder {
    config: ServerConfig,
}

impl ServerBuilder {
    /// Largest frame accepted from a client (default 16 MiB); a longer one
    /// closes that connection.
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.config.max_frame_len = bytes;
        self
    }

    /// Most connections served at once (default 1024); more are closed on accept.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n.max(1);
        self
    }

    /// Most requests of one connection handled at once (default 64); the
    /// connection is not read further until one finishes.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n.max(1);
        self
    }

    /// Frames queued for a client before it counts as not reading (default 1024).
    pub fn send_queue(mut self, frames: usize) -> Self {
        self.config.send_queue = frames.max(1);
        self
    }

    /// Bytes queued for a client before it counts as not reading (default
    /// 4 MiB; a single larger reply still goes out, alone).
    pub fn send_buffer(mut self, bytes: usize) -> Self {
        self.config.send_buffer = bytes.max(1);
        self
    }

    /// Closes a connection that sends nothing and has nothing in flight for
    /// this long (default: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Closes a connection whose frame, once started, is not complete within
    /// this long (default 30 s): slow senders cannot hold a connection.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.config.frame_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Closes a connection whose send queue stays full this long because the
    /// client does not read (default 30 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// Who may connect (default [`AuthPolicy::SameUser`]).
    pub fn auth(mut self, policy: AuthPolicy) -> Self {
        self.config.auth = policy;
        self
    }

    /// Framing for messages sent before a client's first byte shows its own
    /// (default length-delimited).
    pub fn fallback_framing(mut self, framing: Framing) -> Self {
        self.config.fallback_framing = framing;
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        Server {
            config: Arc::new(self.config),
        }
    }
}

/// A JSON-RPC 2.0 server over any [`Listener`].
///
/// Per connection: the peer is checked against the [`AuthPolicy`] before any
/// byte is read; the framing (length-delimited or JSON stream) is detected
/// from the first byte; requests run concurrently up to a bound; responses
/// and notifications share one ordered send queue.
///
/// # Examples
///
/// ```
/// use ipc_core::{jsonrpc::ErrorObject, memory, Router, Server};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> ipc_core::Result<()> {
/// let (listener, _connector) = memory::listener("doc"); // or any backend's listener
/// let router = Router::new().method("add", |_ctx, (a, b): (i64, i64)| async move {
///     Ok::<_, ErrorObject>(a + b)
/// });
/// let handle = Server::builder().max_in_flight(16).build().serve(listener, router);
/// // ... later
/// handle.shutdown(std::time::Duration::from_secs(5)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Server {
    config: Arc<ServerConfig>,
}

/// A connection as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// Unique within the server.
    pub id: u64,
    /// The peer, as printed by [`PeerInfo`](crate::PeerInfo)'s `Display`.
    pub peer: String,
    /// Peer pid, uid and gid where known.
    pub pid: Option<u32>,
    /// Peer uid.
    pub uid: Option<u32>,
    /// When it connected.
    #[serde(serialize_with = "unix_seconds")]
    pub since: SystemTime,
}

fn unix_seconds<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    s.serialize_f64(secs)
}

struct Entry {
    info: ConnectionInfo,
    sink: NotificationSink,
}

struct Shared {
    config: Arc<ServerConfig>,
    address: Address,
    /// Stop accepting and reading new requests.
    stopping: CancellationToken,
    /// Abandon everything still running.
    abort: CancellationToken,
    connections: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    tracker: TaskTracker,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // A poisoned registry still holds valid entries.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Controls a running server from inside or outside: list connections,
/// broadcast, ask it to shut down. Cheap to clone; handlers get one through
/// [`Context::server`].
#[derive(Clone)]
pub struct ServerControl {
    shared: Arc<Shared>,
}

impl ServerControl {
    /// The live connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self
            .shared
            .registry()
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Sends a notification to every connection; returns how many took it.
    pub fn broadcast(&self, method: &str, params: impl Serialize) -> Result<usize> {
        let note = Notification {
            method: method.to_owned(),
            params: to_params(serde_json::to_value(params)?),
        };
        let frame = Bytes::from(serde_json::to_vec(&note)?);
        let sinks: Vec<NotificationSink> = self
            .shared
            .registry()
            .values()
            .map(|e| e.sink.clone())
            .collect();
        Ok(sinks
            .iter()
            .filter(|s| s.send_raw(frame.clone()).is_ok())
            .count())
    }

    /// A sink to one connection by id, if it is still connected.
    pub fn sink(&self, connection: u64) -> Option<NotificationSink> {
        self.shared
            .registry()
            .get(&connection)
            .map(|e| e.sink.clone())
    }

    /// Asks the server to stop accepting and to finish; [`ServerHandle::stopped`]
    /// and [`ServerHandle::shutdown`] observe it.
    pub fn request_shutdown(&self) {
        self.shared.stopping.cancel();
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.is_cancelled()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> &Address {
        &self.shared.address
    }
}

impl fmt::Debug for ServerControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerControl")
            .field("address", &self.shared.address)
            .field("stopping", &self.is_stopping())
            .finish()
    }
}

/// A running server. Dropping the handle does not stop it; call
/// [`ServerHandle::shutdown`].
#[derive(Debug)]
pub struct ServerHandle {
    control: ServerControl,
    accept_task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The address clients connect to.
    pub fn local_addr(&self) -> &Address {
        self.control.local_addr()
    }

    /// Lists connections, broadcasts, requests shutdown.
    pub fn control(&self) -> &ServerControl {
        &self.control
    }

    /// The live connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.control.connections()
    }

    /// Sends a notification to every connection; returns how many took it.
    pub fn broadcast(&self, method: &str, params: impl Serialize) -> Result<usize> {
        self.control.broadcast(method, params)
    }

    /// Waits until something asks the server to stop (for example a handler
    /// through [`ServerControl::request_shutdown`]).
    pub async fn stopped(&self) {
        self.control.shared.stopping.cancelled().await;
    }

    /// Graceful shutdown: stops accepting and removes the endpoint, stops
    /// reading new requests, lets in-flight requests finish and their
    /// responses be written within `grace`, then closes every connection.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when requests were still running after `grace`
    /// (they were abandoned and their connections closed).
    pub async fn shutdown(self, grace: Duration) -> Result<()> {
        let shared = Arc::clone(&self.control.shared);
        shared.stopping.cancel();
        // The accept loop closes the listener (removing the endpoint) as it ends.
        let _ = self.accept_task.await;
        shared.tracker.close();
        let drained = tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(address = %shared.address, ?grace, "shutdown grace elapsed; abandoning requests still running");
            shared.abort.cancel();
            shared.tracker.wait().await;
            return Err(Error::Timeout(grace));
        }
        tracing::info!(address = %shared.address, "server stopped");
        Ok(())
    }
}

impl Server {
    /// Configures a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts serving `listener` with `handler` on the current tokio runtime.
    pub fn serve<L, H>(&self, listener: L, handler: H) -> ServerHandle
    where
        L: Listener,
        H: Handler,
    {
        let shared = Arc::new(Shared {
            config: Arc::clone(&self.config),
            address: listener.local_addr().clone(),
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            tracker: TaskTracker::new(),
        });
        let control = ServerControl {
            shared: Arc::clone(&shared),
        };
        let accept_task = tokio::spawn(accept_loop(listener, Arc::new(handler), control.clone()));
        tracing::info!(address = %shared.address, "server listening");
        ServerHandle {
            control,
            accept_task,
        }
    }
}

async fn accept_loop<L: Listener, H: Handler>(
    mut listener: L,
    handler: Arc<H>,
    control: ServerControl,
) {
    let shared = Arc::clone(&control.shared);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shared.stopping.cancelled() => break,
            r = listener.accept() => r,
        };
        let transport = match accepted {
            Ok(t) => {
                backoff = Duration::from_millis(5);
                t
            }
            Err(e) => {
                // Typically EMFILE/ENFILE: keep serving the clients we have and retry later.
                tracing::error!(address = %shared.address, error = %e, retry_in = ?backoff, "accept failed");
                tokio::select! {
                    _ = shared.stopping.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let peer = transport.peer().clone();
        if !shared.config.auth.allows(&peer) {
            tracing::warn!(address = %shared.address, %peer, policy = %shared.config.auth, "peer refused by the auth policy; connection closed");
            // Say why, without reading anything from the peer, then close.
            let refusal = Error::Unauthorized {
                peer: peer.to_string(),
                policy: shared.config.auth.to_string(),
            };
            tokio::spawn(refuse(transport, refusal, shared.config.fallback_framing));
            continue;
        }
        if shared.registry().len() >= shared.config.max_connections {
            tracing::warn!(address = %shared.address, %peer, limit = shared.config.max_connections, "connection limit reached; connection closed");
            drop(transport);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        shared.tracker.spawn(serve_connection(
            transport,
            id,
            Arc::clone(&handler),
            control.clone(),
        ));
    }
    if let Err(e) = listener.close() {
        tracing::warn!(address = %shared.address, error = %e, "could not remove the endpoint");
    }
}

async fn refuse(mut transport: BoxTransport, refusal: Error, framing: Framing) {
    let reply = Response {
        id: Id::Null,
        result: Err(ErrorObject::new(ErrorObject::UNAUTHORIZED, "Unauthorized")
            .with_data(refusal.to_string())),
    };
    let mut buf = BytesMut::new();
    let Ok(bytes) = serde_json::to_vec(&reply) else {
        return;
    };
    if FrameCodec::new(framing, u32::MAX as usize)
        .encode(Bytes::from(bytes), &mut buf)
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            transport.write_all(&buf).await?;
            transport.shutdown().await
        })
        .await;
    }
}

/// Removes the connection from the registry however its task ends.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.registry().remove(&self.id);
    }
}

async fn serve_connection<H: Handler>(
    transport: BoxTransport,
    id: u64,
    handler: Arc<H>,
    control: ServerControl,
) {
    let shared = Arc::clone(&control.shared);
    let config = Arc::clone(&shared.config);
    let peer = Arc::new(transport.peer().clone());
    let closed = shared.abort.child_token();
    let (outbox, rx) = Outbox::new(
        config.send_queue,
        config.send_buffer,
        closed.clone(),
        id,
        config.write_timeout,
    );
    let sink = NotificationSink {
        outbox: outbox.clone(),
    };
    shared.registry().insert(
        id,
        Entry {
            info: ConnectionInfo {
                id,
                peer: peer.to_string(),
                pid: peer.pid,
                uid: peer.uid,
                since: SystemTime::now(),
            },
            sink: sink.clone(),
        },
    );
    let _registration = Registration {
        shared: Arc::clone(&shared),
        id,
    };
    tracing::debug!(connection = id, %peer, "connection accepted");

    let (read_half, write_half) = tokio::io::split(transport);
    let mut frames = FramedRead::with_capacity(
        read_half,
        FrameCodec::detect(config.fallback_framing, config.max_frame_len),
        8 * 1024,
    );
    let framing = Arc::new(std::sync::OnceLock::new());
    let finishing = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        write_half,
        rx,
        Arc::clone(&framing),
        config.fallback_framing,
        closed.clone(),
        finishing.clone(),
        id,
    ));
    let ctx = Context {
        peer: Arc::clone(&peer),
        sink,
        server: control.clone(),
    };
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let mut calls: JoinSet<()> = JoinSet::new();
    let mut burst = Burst::default();
    let mut last_activity = Instant::now();
    let mut frame_started: Option<Instant> = None;
    // One timer for the connection, moved only when its deadline must come
    // sooner or has fallen far behind (moving it costs on every frame).
    let slack = config.frame_timeout / 8;
    let timer = tokio::time::sleep_until(Instant::now() + config.frame_timeout);
    tokio::pin!(timer);
    // Waits made once and kept registered: a fresh one per frame would
    // register with (and leave) the token's waiters on every request.
    let abort_wait = closed.cancelled();
    tokio::pin!(abort_wait);
    let stop_wait = shared.stopping.cancelled();
    tokio::pin!(stop_wait);

    loop {
        while calls.try_join_next().is_some() {}
        if frames.read_buffer().iter().all(u8::is_ascii_whitespace) {
            // Nothing left but what separates JSON messages: the next frame
            // needs a read, and the writer gets its turn while it waits.
            burst = Burst::default();
        }
        let now = Instant::now();
        let in_flight = config.max_in_flight - permits.available_permits();
        let deadline = if !frames.read_buffer().is_empty() {
            *frame_started.get_or_insert(now) + config.frame_timeout
        } else {
            frame_started = None;
            let check = now + config.frame_timeout;
            match config.idle_timeout {
                Some(idle) if in_flight == 0 => (last_activity + idle).min(check),
                // Busy with requests: not idle; look again later.
                Some(idle) => {
                    last_activity = now;
                    (now + idle).min(check)
                }
                None => check,
            }
        };
        if timer.is_elapsed() || deadline < timer.deadline() || deadline > timer.deadline() + slack
        {
            timer.as_mut().reset(deadline);
        }
        let next = tokio::select! {
            biased;
            _ = &mut abort_wait => break,
            _ = &mut stop_wait => break,
            next = frames.next() => next,
            _ = &mut timer => {
                let now = Instant::now();
                if frame_started.is_some_and(|t| now >= t + config.frame_timeout) {
                    tracing::warn!(connection = id, %peer, timeout = ?config.frame_timeout, "frame not completed in time; closing the connection");
                    break;
                }
                if let Some(idle) = config.idle_timeout {
                    let in_flight = config.max_in_flight - permits.available_permits();
                    if in_flight == 0 && frames.read_buffer().is_empty() && now >= last_activity + idle {
                        tracing::info!(connection = id, %peer, ?idle, "idle connection closed");
                        break;
                    }
                }
                continue;
            }
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                let err = Error::from(e);
                match &err {
                    Error::Disconnected => {}
                    Error::Protocol(_) => {
                        // The stream cannot be resynchronised: answer once, then close.
                        tracing::warn!(connection = id, %peer, error = %err, "closing the connection");
                        let reply = Response {
                            id: Id::Null,
                            result: Err(ErrorObject::parse_error(&err)),
                        };
                        if let Ok(bytes) = serde_json::to_vec(&reply) {
                            let _ = outbox.try_send(Bytes::from(bytes));
                        }
                    }
                    _ => {
                        tracing::error!(connection = id, %peer, error = %err, "closing the connection")
                    }
                }
                break;
            }
        };
        last_activity = Instant::now();
        frame_started = None;
        if framing.get().is_none() {
            if let Some(f) = frames.decoder().framing() {
                let _ = framing.set(f);
            }
        }
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => tokio::select! {
                biased;
                _ = &mut abort_wait => break,
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            },
        };
        // Run the call in this task as far as it goes without waiting: most
        // calls finish at once, and then cost no task of their own. A call
        // that waits continues in a task, so others on the connection are
        // not held up.
        let mut call = Box::pin(answer_owned(Arc::clone(&handler), ctx.clone(), frame));
        if let Poll::Ready(reply) = futures::poll!(call.as_mut()) {
            if let Some(bytes) = reply {
                // A client that does not read within the write timeout is
                // disconnected by the outbox; until then it is not read either.
                let _ = outbox.send(bytes).await;
            }
            drop(permit);
            if burst.replied() {
                tokio::task::yield_now().await;
            }
            continue;
        }
        let outbox = outbox.clone();
        let closed = closed.clone();
        calls.spawn(async move {
            let reply = tokio::select! {
                _ = closed.cancelled() => None,
                reply = call => reply,
            };
            if let Some(bytes) = reply {
                let _ = outbox.send(bytes).await;
            }
            // The request counts as in flight until its reply is queued, so a
            // client that does not read stops the server reading from it.
            drop(permit);
        });
    }
    // No new requests; let those in flight finish (unless aborted).
    tokio::select! {
        _ = closed.cancelled() => calls.abort_all(),
        _ = async { while calls.join_next().await.is_some() {} } => {}
    }
    drop(ctx);
    drop(outbox);
    // Let the writer send what is queued, then close; sinks kept by
    // subscriptions see the queue closed from now on.
    finishing.cancel();
    let _ = writer.await;
    tracing::debug!(connection = id, %peer, "connection closed");
}

/// Paces the replies to a burst of requests that arrived together.
///
/// Answering a whole burst before the writer runs makes the two processes
/// take turns: the client waits for the last answer of the burst while the
/// server works, then the server waits while the client reads the answers and
/// sends the next burst. Letting the writer in after 4, 8, 16, then every 32
/// replies gets the first answers to the client while the server computes the
/// rest, so both work at once, and costs a number of writes that grows only
/// with the logarithm of the burst.
#[derive(Debug)]
struct Burst {
    unsent: u32,
    next_flush: u32,
}

impl Burst {
    const FIRST_FLUSH: u32 = 4;
    const MAX_FLUSH: u32 = 32;

    /// Counts a queued reply; true when the writer should run now.
    fn replied(&mut self) -> bool {
        self.unsent += 1;
        if self.unsent < self.next_flush {
            return false;
        }
        self.unsent = 0;
        self.next_flush = (self.next_flush * 2).min(Self::MAX_FLUSH);
        true
    }
}

impl Default for Burst {
    fn default() -> Self {
        Burst {
            unsent: 0,
            next_flush: Self::FIRST_FLUSH,
        }
    }
}

async fn answer_owned<H: Handler>(handler: Arc<H>, ctx: Context, frame: BytesMut) -> Option<Bytes> {
    answer(&*handler, ctx, frame).await
}

async fn answer<H: Handler + ?Sized>(handler: &H, ctx: Context, frame: BytesMut) -> Option<Bytes> {
    let reply: Option<Vec<u8>> = match jsonrpc::parse(&frame) {
        Err(error) => serde_json::to_vec(&Response {
            id: Id::Null,
            result: Err(error),
        })
        .ok(),
        Ok(Incoming::Single(message)) => match answer_one(handler, ctx, message).await {
            Some(r) => serde_json::to_vec(&r).ok(),
            None => None,
        },
        Ok(Incoming::Batch(messages)) => {
            let replies: Vec<Response> = join_all(
                messages
                    .into_iter()
                    .map(|m| answer_one(handler, ctx.clone(), m)),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            if replies.is_empty() {
                None
            } else {
                serde_json::to_vec(&replies).ok()
            }
        }
    };
    reply.map(Bytes::from)
}

async fn answer_one<H: Handler + ?Sized>(
    handler: &H,
    ctx: Context,
    message: Result<Message, jsonrpc::Invalid>,
) -> Option<Response> {
    match message {
        Err(invalid) => Some(invalid.into()),
        Ok(Message::Request(req)) => {
            let result = handler.call(ctx, &req.method, req.params).await;
            Some(Response { id: req.id, result })
        }
        Ok(Message::Notification(note)) => {
            if let Err(e) = handler.call(ctx, &note.method, note.params).await {
                tracing::debug!(method = %note.method, error = %e, "notification handler failed");
            }
            None
        }
        Ok(Message::Response(resp)) => {
            tracing::debug!(id = %resp.id, "ignoring a response sent to the server");
            None
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut out: W,
    mut rx: mpsc::Receiver<Outgoing>,
    framing: Arc<std::sync::OnceLock<Framing>>,
    fallback: Framing,
    closed: CancellationToken,
    finishing: CancellationToken,
    id: u64,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    // Frames written in this batch keep their share of the send budget
    // until the bytes are out.
    let mut batch: Vec<Outgoing> = Vec::new();
    let mut draining = false;
    let abort_wait = closed.cancelled();
    tokio::pin!(abort_wait);
    let finish_wait = finishing.cancelled();
    tokio::pin!(finish_wait);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut abort_wait => return,
            frame = rx.recv() => frame,
            _ = &mut finish_wait, if !draining => {
                // Send what is already queued, then stop.
                rx.close();
                draining = true;
                continue;
            }
        };
        let Some(first) = first else { break };
        // Our own replies are bounded only by what the framing can express.
        let mut codec = FrameCodec::new(*framing.get().unwrap_or(&fallback), u32::MAX as usize);
        buf.clear();
        batch.clear();
        let mut next = Some(first);
        while let Some(out) = next.take() {
            let encoded = codec.encode(&out.frame[..], &mut buf);
            batch.push(out);
            if let Err(e) = encoded {
                tracing::error!(connection = id, error = %e, "could not frame a reply; dropped");
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        let write = async {
            out.write_all(&buf).await?;
            out.flush().await
        };
        let result = tokio::select! {
            _ = &mut abort_wait => return,
            r = write => r,
        };
        batch.clear();
        if buf.capacity() > 1024 * 1024 {
            // Do not keep a large frame's buffer for the connection's lifetime.
            buf = BytesMut::with_capacity(8 * 1024);
        }
        if let Err(e) = result {
            if !crate::error::is_disconnect_kind(e.kind()) {
                tracing::warn!(connection = id, error = %e, "write failed; closing the connection");
            }
            closed.cancel();
            return;
        }
    }
    let _ = out.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::Burst;

    #[test]
    fn a_burst_is_flushed_after_4_8_16_then_every_32_replies() {
        let mut at = Vec::new();
        let mut burst = Burst::default();
        for n in 1..=124u32 {
            if burst.replied() {
                at.push(n);
            }
        }
        assert_eq!(at, [4, 12, 28, 60, 92, 124]);
    }
}
