//! What a server runs for each call: the [`Handler`] trait, the [`Router`]
//! that maps method names to closures, and the per-call [`Context`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::Result;
use crate::jsonrpc::{to_params, ErrorObject, Notification};
use crate::outbox::Outbox;
use crate::peer::PeerInfo;
use crate::server::ServerControl;

/// Answers JSON-RPC calls. Implement it for full control, or use [`Router`].
///
/// Notifications from the client reach the same method; their result is
/// dropped, as the spec requires.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one call.
    async fn call(
        &self,
        ctx: Context,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, ErrorObject>;
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn call(
        &self,
        ctx: Context,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, ErrorObject> {
        (**self).call(ctx, method, params).await
    }
}

/// Pushes notifications to one connected client, from anywhere, for as long
/// as it stays connected (the basis of subscriptions).
///
/// A client that does not read fast enough to keep its send queue from
/// filling is disconnected rather than buffered without bound.
#[derive(Clone)]
pub struct NotificationSink {
    pub(crate) outbox: Outbox,
}

impl NotificationSink {
    /// Queues `method` with `params` for the client without waiting: for
    /// events that must not hold up the sender (heartbeats, broadcasts).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`](crate::Error::Disconnected) when the client is gone, or when its send
    /// buffer was full (the connection is then closed: the client is not
    /// keeping up).
    pub fn notify(&self, method: &str, params: impl Serialize) -> Result<()> {
        self.outbox.try_send(encode_notification(method, params)?)
    }

    /// Sends `method` with `params`, waiting while the client's send buffer
    /// is full: for streams where every item matters. A client that stays
    /// behind for the server's write timeout is disconnected.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`](crate::Error::Disconnected) when the client is gone or was disconnected
    /// for not reading.
    pub async fn send(&self, method: &str, params: impl Serialize) -> Result<()> {
        self.outbox.send(encode_notification(method, params)?).await
    }

    pub(crate) fn send_raw(&self, frame: Bytes) -> Result<()> {
        self.outbox.try_send(frame)
    }

    /// True once the client is gone.
    pub fn is_closed(&self) -> bool {
        self.outbox.is_closed()
    }

    /// Waits until the client is gone.
    pub async fn closed(&self) {
        self.outbox.closed().await
    }

    /// The id of the connection this sink writes to.
    pub fn connection_id(&self) -> u64 {
        self.outbox.connection
    }
}

fn encode_notification(method: &str, params: impl Serialize) -> Result<Bytes> {
    let note = Notification {
        method: method.to_owned(),
        params: to_params(serde_json::to_value(params)?),
    };
    Ok(Bytes::from(serde_json::to_vec(&note)?))
}

impl fmt::Debug for NotificationSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationSink")
            .field("connection", &self.outbox.connection)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// What a handler knows about the call it is answering.
#[derive(Clone, Debug)]
pub struct Context {
    pub(crate) peer: Arc<PeerInfo>,
    pub(crate) sink: NotificationSink,
    pub(crate) server: ServerControl,
}

impl Context {
    /// The verified identity of the calling process.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The id of the connection the call came on.
    pub fn connection_id(&self) -> u64 {
        self.sink.outbox.connection
    }

    /// Pushes a notification to the caller.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`](crate::Error::Disconnected) when the caller is gone or not reading.
    pub fn notify(&self, method: &str, params: impl Serialize) -> Result<()> {
        self.sink.notify(method, params)
    }

    /// A handle for pushing notifications to the caller later, from another
    /// task (subscriptions).
    pub fn sink(&self) -> NotificationSink {
        self.sink.clone()
    }

    /// The server: its connections, broadcast, shutdown.
    pub fn server(&self) -> &ServerControl {
        &self.server
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Value, ErrorObject>> + Send>>;
type Method = Arc<dyn Fn(Context, Option<Value>) -> BoxFuture + Send + Sync>;

/// A [`Handler`] that dispatches by method name to async closures whose
/// parameters and results are (de)serialised with serde.
///
/// Positional params (`[1, 2]`) deserialise into tuples or `Vec`s, named ones
/// (`{"a": 1}`) into structs; missing params into `()` or `Option`. Params
/// that do not fit get -32602, unknown methods -32601.
///
/// # Examples
///
/// ```
/// use ipc_core::{jsonrpc::ErrorObject, Router};
///
/// let router = Router::new()
///     .method("add", |_ctx, (a, b): (i64, i64)| async move { Ok::<_, ErrorObject>(a + b) })
///     .method("ping", |_ctx, (): ()| async { Ok::<_, ErrorObject>("pong") });
/// assert!(router.has_method("add"));
/// ```
#[derive(Clone, Default)]
pub struct Router {
    methods: HashMap<String, Method>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Registers `name`; a later registration of the same name replaces it.
    pub fn method<P, R, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ErrorObject>> + Send + 'static,
    {
        let f = Arc::new(f);
        let method: Method = Arc::new(move |ctx, params| {
            let f = Arc::clone(&f);
            Box::pin(async move {
                let params: P = parse_params(params)?;
                let result = f(ctx, params).await?;
                serde_json::to_value(result).map_err(ErrorObject::internal)
            })
        });
        self.methods.insert(name.to_owned(), method);
        self
    }

    /// Whether `name` is registered.
    pub fn has_method(&self, name: &str) -> bool {
        self.methods.contains_key(name)
    }

    /// The registered method names, sorted.
    pub fn method_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.methods.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

fn parse_params<P: DeserializeOwned>(params: Option<Value>) -> Result<P, ErrorObject> {
    let empty = match &params {
        None => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    };
    if empty {
        if let Ok(p) = serde_json::from_value(Value::Null) {
            return Ok(p);
        }
    }
    serde_json::from_value(params.unwrap_or(Value::Null)).map_err(ErrorObject::invalid_params)
}

#[async_trait]
impl Handler for Router {
    async fn call(
        &self,
        ctx: Context,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, ErrorObject> {
        match self.methods.get(method) {
            Some(m) => m(ctx, params).await,
            None => Err(ErrorObject::method_not_found(method)),
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("methods", &self.method_names())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_fit_tuples_structs_and_unit() {
        assert_eq!(
            parse_params::<(i64, i64)>(Some(json!([1, 2]))).unwrap(),
            (1, 2)
        );
        parse_params::<()>(None).unwrap();
        parse_params::<()>(Some(json!([]))).unwrap();
        assert_eq!(parse_params::<Option<i64>>(None).unwrap(), None);
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct Named {
            a: i64,
        }
        assert_eq!(
            parse_params::<Named>(Some(json!({"a": 3}))).unwrap(),
            Named { a: 3 }
        );
        let e = parse_params::<(i64, i64)>(Some(json!(["x"]))).unwrap_err();
        assert_eq!(e.code, ErrorObject::INVALID_PARAMS);
    }
}
