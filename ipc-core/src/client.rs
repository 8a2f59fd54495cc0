//! The JSON-RPC client: many requests in flight on one connection, matched
//! to their responses by id; notifications routed to subscribers.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::codec::{FrameCodec, Framing, DEFAULT_MAX_FRAME_LEN};
use crate::error::{Error, Result};
use crate::jsonrpc::{self, to_params, Id, Incoming, Message, Notification, Request, Response};
use crate::peer::PeerInfo;
use crate::transport::{BoxTransport, Transport};

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    request_timeout: Option<Duration>,
    max_frame_len: usize,
    framing: Framing,
    send_queue: usize,
    subscription_buffer: usize,
    reconnect: Option<Reconnect>,
}

/// How a client reconnects after its connection drops; see
/// [`ClientBuilder::reconnect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// Wait before the first attempt; doubled after each failure.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
            max_attempts: None,
        }
    }
}

/// Opens a new transport to the server, for reconnecting.
pub type Connector = Arc<dyn Fn() -> BoxFuture<'static, Result<BoxTransport>> + Send + Sync>;

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            request_timeout: Some(Duration::from_secs(30)),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            framing: Framing::LengthDelimited,
            send_queue: 1024,
            subscription_buffer: 1024,
            reconnect: None,
        }
    }
}

impl ClientBuilder {
    /// How long a request waits for its response (default 30 s; `None`: forever).
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Largest frame accepted from the server (default 16 MiB).
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// The framing to speak (default length-delimited; servers of this crate
    /// detect either).
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Notifications buffered per subscription before it is ended as lagging
    /// (default 1024).
    pub fn subscription_buffer(mut self, n: usize) -> Self {
        self.subscription_buffer = n.max(1);
        self
    }

    /// Reconnects with backoff when the connection drops (only for clients
    /// made with [`ClientBuilder::connect_with`]).
    ///
    /// Requests in flight when the connection drops fail with
    /// [`Error::Disconnected`]; they are never resent, so nothing is executed
    /// twice without the caller knowing. Requests made while reconnecting
    /// wait for the new connection, within their timeout. Subscriptions end
    /// with the connection they were made on.
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Starts the client on `transport` (spawns its reader and writer tasks on
    /// the current tokio runtime).
    pub fn build<T: Transport>(self, transport: T) -> Client {
        let inner = self.start(transport);
        Client::from_parts(self, inner, None)
    }

    /// Connects with `connector` and, if [`ClientBuilder::reconnect`] is set,
    /// uses it again whenever the connection drops.
    ///
    /// # Errors
    ///
    /// Whatever the first connection attempt returns.
    pub async fn connect_with<F, Fut>(self, connector: F) -> Result<Client>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<BoxTransport>> + Send + 'static,
    {
        let connector: Connector = Arc::new(move || Box::pin(connector()));
        let transport = connector().await?;
        let inner = self.start(transport);
        Ok(Client::from_parts(self, inner, Some(connector)))
    }

    fn start<T: Transport>(&self, transport: T) -> Arc<Inner> {
        let peer = transport.peer().clone();
        let (read_half, write_half) = tokio::io::split(transport);
        let (tx, rx) = mpsc::channel(self.send_queue);
        let inner = Arc::new(Inner {
            tx,
            state: Mutex::new(State::default()),
            next_id: AtomicI64::new(1),
            closed: CancellationToken::new(),
            peer,
        });
        tokio::spawn(write_loop(write_half, rx, self.framing, Arc::clone(&inner)));
        let frames = FramedRead::with_capacity(
            read_half,
            FrameCodec::new(self.framing, self.max_frame_len),
            8 * 1024,
        );
        tokio::spawn(read_loop(frames, Arc::clone(&inner)));
        inner
    }
}

/// The client's current connection, replaced on reconnect.
struct Connection {
    current: Mutex<Arc<Inner>>,
    generation: watch::Sender<u64>,
    /// Set when the client is closed or reconnecting gave up.
    finished: CancellationToken,
    settings: ClientBuilder,
}

impl Connection {
    fn current(&self) -> Arc<Inner> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The live connection, waiting for a reconnect (until `deadline`) if the
    /// current one is gone.
    async fn ready(&self, deadline: Option<Instant>) -> Result<Arc<Inner>> {
        let inner = self.current();
        if !inner.closed.is_cancelled() || self.settings.reconnect.is_none() {
            return Ok(inner);
        }
        // Subscribed before the connection is looked at again below, so a
        // replacement made in between is seen.
        let mut changes = self.generation.subscribe();
        loop {
            let inner = self.current();
            if !inner.closed.is_cancelled()
                || self.settings.reconnect.is_none()
                || self.finished.is_cancelled()
            {
                return Ok(inner);
            }
            let wait = async {
                tokio::select! {
                    _ = self.finished.cancelled() => {}
                    _ = changes.changed() => {}
                }
            };
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, wait).await.is_err() {
                        return Ok(inner);
                    }
                }
                None => wait.await,
            }
        }
    }

    async fn supervise(self: Arc<Self>, connector: Connector) {
        let Some(policy) = self.settings.reconnect.clone() else {
            return;
        };
        loop {
            let inner = self.current();
            tokio::select! {
                _ = self.finished.cancelled() => return,
                _ = inner.closed.cancelled() => {}
            }
            let mut backoff = policy.initial_backoff;
            let mut failures = 0u32;
            let transport = loop {
                tokio::select! {
                    _ = self.finished.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                match connector().await {
                    Ok(t) => break t,
                    Err(e) => {
                        failures += 1;
                        tracing::debug!(error = %e, failures, "reconnect attempt failed");
                        if policy.max_attempts.is_some_and(|max| failures >= max) {
                            tracing::warn!(failures, "giving up reconnecting");
                            self.finished.cancel();
                            return;
                        }
                        backoff = (backoff * 2).min(policy.max_backoff);
                    }
                }
            };
            let fresh = self.settings.start(transport);
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
            self.generation.send_modify(|g| *g += 1);
            tracing::info!("reconnected");
        }
    }
}

type Pending = oneshot::Sender<Result<Value>>;

#[derive(Default)]
struct State {
    closed: bool,
    /// An error the server sent with id null (for example a refusal), used
    /// to explain why pending requests fail when the connection closes.
    close_reason: Option<crate::jsonrpc::ErrorObject>,
    pending: HashMap<i64, Pending>,
    subscribers: HashMap<String, Vec<mpsc::Sender<Notification>>>,
}

struct Inner {
    tx: mpsc::Sender<Bytes>,
    state: Mutex<State>,
    next_id: AtomicI64,
    closed: CancellationToken,
    peer: PeerInfo,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails everything pending and ends every subscription.
    fn close(&self) {
        self.closed.cancel();
        let (pending, subscribers, reason) = {
            let mut st = self.state();
            st.closed = true;
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.subscribers),
                st.close_reason.clone(),
            )
        };
        for (_, p) in pending {
            let _ = p.send(Err(match &reason {
                Some(e) => Error::Rpc(e.clone()),
                None => Error::Disconnected,
            }));
        }
        drop(subscribers);
    }

    async fn send(&self, frame: Bytes) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(self.close_error());
        }
        self.tx.send(frame).await.map_err(|_| self.close_error())
    }

    fn close_error(&self) -> Error {
        match &self.state().close_reason {
            Some(e) => Error::Rpc(e.clone()),
            None => Error::Disconnected,
        }
    }

    fn register(&self) -> Result<(i64, oneshot::Receiver<Result<Value>>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut st = self.state();
        if st.closed {
            return Err(match &st.close_reason {
                Some(e) => Error::Rpc(e.clone()),
                None => Error::Disconnected,
            });
        }
        st.pending.insert(id, tx);
        Ok((id, rx))
    }

    fn complete(&self, response: Response) {
        if let (Id::Null, Err(e)) = (&response.id, &response.result) {
            tracing::warn!(error = %e, "the server reported an error about the connection");
            self.state().close_reason = Some(e.clone());
            return;
        }
        let Id::Number(id) = response.id else {
            tracing::warn!(id = %response.id, "response with an id this client never sent; ignored");
            return;
        };
        let Some(p) = self.state().pending.remove(&id) else {
            tracing::debug!(id, "response to a request no longer waited for; ignored");
            return;
        };
        let _ = p.send(response.result.map_err(Error::Rpc));
    }

    fn route(&self, note: Notification) {
        let mut st = self.state();
        let Some(subs) = st.subscribers.get_mut(&note.method) else {
            tracing::debug!(method = %note.method, "notification without a subscriber; dropped");
            return;
        };
        subs.retain(|s| match s.try_send(note.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(method = %note.method, "subscriber not keeping up; its subscription is ended");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if subs.is_empty() {
            st.subscribers.remove(&note.method);
        }
    }
}

/// Removes a request's pending entry if its future is dropped early.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: i64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.state().pending.remove(&self.id);
    }
}

/// A JSON-RPC 2.0 client over any [`Transport`].
///
/// Cheap to clone and safe to use from many tasks at once: each request gets
/// a fresh id and its response is routed back by it. When the connection
/// drops, every pending request fails at once with [`Error::Disconnected`].
///
/// # Examples
///
/// ```
/// use ipc_core::{jsonrpc::ErrorObject, memory, Client, Router, Server};
/// use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> ipc_core::Result<()> {
/// # let (listener, connector) = memory::listener("doc");
/// # let router = Router::new()
/// #     .method("add", |_c, (a, b): (i64, i64)| async move { Ok::<_, ErrorObject>(a + b) })
/// #     .method("log", |_c, _: serde_json::Value| async move { Ok::<_, ErrorObject>(()) });
/// # let _server = Server::builder().build().serve(listener, router);
/// let client = Client::new(connector.connect().await?);
/// let sum: i64 = client.request("add", json!([1, 2])).await?;
/// assert_eq!(sum, 3);
/// client.notify("log", json!({"line": "hello"})).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    conn: Arc<Connection>,
    owner: Arc<Owner>,
}

/// Closes the connection when the last [`Client`] clone is dropped (the
/// background tasks hold only `Connection` and `Inner`).
struct Owner(Arc<Connection>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.finished.cancel();
        self.0.current().close();
    }
}

impl Client {
    /// A client with default settings on `transport`.
    pub fn new<T: Transport>(transport: T) -> Self {
        ClientBuilder::default().build(transport)
    }

    /// Settings for a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    fn from_parts(
        settings: ClientBuilder,
        inner: Arc<Inner>,
        connector: Option<Connector>,
    ) -> Client {
        let conn = Arc::new(Connection {
            current: Mutex::new(inner),
            generation: watch::channel(0).0,
            finished: CancellationToken::new(),
            settings,
        });
        if let Some(connector) = connector {
            if conn.settings.reconnect.is_some() {
                tokio::spawn(Arc::clone(&conn).supervise(connector));
            }
        }
        Client {
            owner: Arc::new(Owner(Arc::clone(&conn))),
            conn,
        }
    }

    /// The server's verified identity (of the current connection).
    pub fn peer(&self) -> PeerInfo {
        self.conn.current().peer.clone()
    }

    /// True once the current connection is gone (a reconnecting client may
    /// get a new one).
    pub fn is_closed(&self) -> bool {
        self.conn.current().closed.is_cancelled()
    }

    /// Waits until the current connection is gone.
    pub async fn closed(&self) {
        self.conn.current().closed.cancelled().await
    }

    /// Closes the connection for good; pending requests fail with
    /// [`Error::Disconnected`] and no reconnect is attempted.
    pub fn close(&self) {
        self.conn.finished.cancel();
        self.conn.current().close();
    }

    /// Calls `method` and deserialises its result into `R`.
    ///
    /// `params` may be a tuple or array (positional), a struct or map (named),
    /// `()` for none; a lone scalar is sent as a one-element array.
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] with the server's error object; [`Error::Disconnected`];
    /// [`Error::Timeout`]; [`Error::Json`] when the result does not fit `R`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the request; its response, if it comes, is
    /// discarded.
    pub async fn request<R: DeserializeOwned>(
        &self,
        method: &str,
        params: impl Serialize,
    ) -> Result<R> {
        let value = self.request_value(method, params).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Like [`Client::request`], returning the raw JSON result.
    pub async fn request_value(&self, method: &str, params: impl Serialize) -> Result<Value> {
        let params = to_params(serde_json::to_value(params)?);
        let deadline = self.deadline();
        let inner = self.conn.ready(deadline).await?;
        let (id, rx) = inner.register()?;
        let _guard = PendingGuard { inner: &inner, id };
        let frame = serde_json::to_vec(&Request {
            method: method.to_owned(),
            params,
            id: Id::Number(id),
        })?;
        inner.send(Bytes::from(frame)).await?;
        wait(rx, deadline, self.conn.settings.request_timeout).await
    }

    fn deadline(&self) -> Option<Instant> {
        self.conn
            .settings
            .request_timeout
            .map(|t| Instant::now() + t)
    }

    /// Sends a notification (no response).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the connection is gone.
    pub async fn notify(&self, method: &str, params: impl Serialize) -> Result<()> {
        let note = Notification {
            method: method.to_owned(),
            params: to_params(serde_json::to_value(params)?),
        };
        let inner = self.conn.ready(self.deadline()).await?;
        inner.send(Bytes::from(serde_json::to_vec(&note)?)).await
    }

    /// Starts a batch: several calls in one frame, answered together.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            client: self,
            entries: Vec::new(),
        }
    }

    /// A stream of the notifications named `method` that the server pushes.
    ///
    /// Only notifications that arrive after this call are seen.
    pub fn notifications(&self, method: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(self.conn.settings.subscription_buffer);
        let inner = self.conn.current();
        let mut st = inner.state();
        if !st.closed {
            st.subscribers
                .entry(method.to_owned())
                .or_default()
                .push(tx);
        }
        Subscription {
            rx,
            result: Value::Null,
        }
    }

    /// Calls `method` to start a subscription and returns the stream of the
    /// `notification` messages that follow. Listening starts before the call
    /// is sent, so nothing pushed in between is missed.
    ///
    /// # Errors
    ///
    /// As for [`Client::request`].
    pub async fn subscribe(
        &self,
        method: &str,
        params: impl Serialize,
        notification: &str,
    ) -> Result<Subscription> {
        let mut sub = self.notifications(notification);
        sub.result = self.request_value(method, params).await?;
        Ok(sub)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer())
            .field("closed", &self.is_closed())
            .field("handles", &Arc::strong_count(&self.owner))
            .finish()
    }
}

/// Notifications pushed by the server; ends when the connection does, or
/// when this subscriber fell too far behind.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Notification>,
    result: Value,
}

impl Subscription {
    /// What the subscribing call returned (for example a subscription id);
    /// null for [`Client::notifications`].
    pub fn result(&self) -> &Value {
        &self.result
    }

    /// The next notification, or `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<Notification> {
        self.rx.recv().await
    }
}

impl Stream for Subscription {
    type Item = Notification;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Notification>> {
        self.rx.poll_recv(cx)
    }
}

/// Calls sent together in one frame; see [`Client::batch`].
#[derive(Debug)]
pub struct Batch<'a> {
    client: &'a Client,
    entries: Vec<(String, Option<Value>, bool)>,
}

impl Batch<'_> {
    /// Adds a call whose result is wanted.
    pub fn request(mut self, method: &str, params: impl Serialize) -> Result<Self> {
        self.entries.push((
            method.to_owned(),
            to_params(serde_json::to_value(params)?),
            true,
        ));
        Ok(self)
    }

    /// Adds a notification.
    pub fn notify(mut self, method: &str, params: impl Serialize) -> Result<Self> {
        self.entries.push((
            method.to_owned(),
            to_params(serde_json::to_value(params)?),
            false,
        ));
        Ok(self)
    }

    /// Sends the batch; returns one result per [`Batch::request`], in order.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] or [`Error::Timeout`] for the batch as a
    /// whole; each call's own error is in its entry.
    pub async fn send(self) -> Result<Vec<Result<Value>>> {
        if self.entries.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = self.client.deadline();
        let inner = self.client.conn.ready(deadline).await?;
        let inner = &inner;
        let mut waits = Vec::new();
        let mut guards = Vec::new();
        let mut messages = Vec::with_capacity(self.entries.len());
        for (method, params, wants_reply) in self.entries {
            if wants_reply {
                let (id, rx) = inner.register()?;
                guards.push(PendingGuard { inner, id });
                waits.push(rx);
                messages.push(Message::Request(Request {
                    method,
                    params,
                    id: Id::Number(id),
                }));
            } else {
                messages.push(Message::Notification(Notification { method, params }));
            }
        }
        inner
            .send(Bytes::from(serde_json::to_vec(&messages)?))
            .await?;
        let timeout = self.client.conn.settings.request_timeout;
        let mut results = Vec::with_capacity(waits.len());
        for rx in waits {
            results.push(match wait(rx, deadline, timeout).await {
                Err(e @ (Error::Disconnected | Error::Timeout(_))) => return Err(e),
                other => other,
            });
        }
        drop(guards);
        Ok(results)
    }
}

async fn wait(
    rx: oneshot::Receiver<Result<Value>>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
) -> Result<Value> {
    let outcome = match (deadline, timeout) {
        (Some(d), Some(t)) => tokio::time::timeout_at(d, rx)
            .await
            .map_err(|_| Error::Timeout(t))?,
        _ => rx.await,
    };
    outcome.unwrap_or(Err(Error::Disconnected))
}

async fn read_loop<R: AsyncRead + Unpin>(mut frames: FramedRead<R, FrameCodec>, inner: Arc<Inner>) {
    // One wait for the whole loop: a fresh one per frame would register
    // with the token on every response.
    let closed = inner.closed.cancelled();
    tokio::pin!(closed);
    loop {
        let next = tokio::select! {
            _ = &mut closed => break,
            next = frames.next() => next,
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                let err = Error::from(e);
                if !err.is_disconnect() {
                    tracing::error!(error = %err, "bad frame from the server; closing the connection");
                }
                break;
            }
        };
        match jsonrpc::parse(&frame) {
            Err(e) => tracing::warn!(error = %e, "unparseable message from the server; ignored"),
            Ok(Incoming::Single(m)) => dispatch(&inner, m),
            Ok(Incoming::Batch(ms)) => ms.into_iter().for_each(|m| dispatch(&inner, m)),
        }
    }
    inner.close();
}

fn dispatch(inner: &Inner, message: Result<Message, jsonrpc::Invalid>) {
    match message {
        Ok(Message::Response(r)) => inner.complete(r),
        Ok(Message::Notification(n)) => inner.route(n),
        Ok(Message::Request(r)) => {
            tracing::debug!(method = %r.method, "the server sent a request; clients do not serve calls, ignored")
        }
        Err(invalid) => {
            // A server's error reply with id null (for example to a parse
            // error) cannot be matched to a request.
            tracing::warn!(error = %invalid.error, "invalid message from the server; ignored")
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut out: W,
    mut rx: mpsc::Receiver<Bytes>,
    framing: Framing,
    inner: Arc<Inner>,
) {
    let mut codec = FrameCodec::new(framing, u32::MAX as usize);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let closed = inner.closed.cancelled();
    tokio::pin!(closed);
    loop {
        let first = tokio::select! {
            _ = &mut closed => break,
            f = rx.recv() => f,
        };
        let Some(first) = first else { break };
        buf.clear();
        let mut frame = Some(first);
        while let Some(f) = frame.take() {
            if let Err(e) = codec.encode(f, &mut buf) {
                tracing::error!(error = %e, "could not frame a request; dropped");
            }
            if buf.len() < 256 * 1024 {
                frame = rx.try_recv().ok();
            }
        }
        let write = async {
            out.write_all(&buf).await?;
            out.flush().await
        };
        let result = tokio::select! {
            _ = &mut closed => break,
            r = write => r,
        };
        if let Err(e) = result {
            if !crate::error::is_disconnect_kind(e.kind()) {
                tracing::warn!(error = %e, "write failed; closing the connection");
            }
            // The server may have said why it closed (a refusal, say) in
            // bytes the reader has yet to process: give it a moment to see
            // them and the end of the stream, so pending requests fail with
            // the reason rather than a bare disconnect.
            let _ =
                tokio::time::timeout(Duration::from_millis(200), inner.closed.cancelled()).await;
            break;
        }
    }
    inner.close();
    let _ = out.shutdown().await;
}
