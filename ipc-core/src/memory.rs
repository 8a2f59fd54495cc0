//! An in-process listener over in-memory byte pipes, for testing handlers
//! and clients without an OS endpoint. Both ends see this process as the
//! peer (same pid, same user).
//!
//! # Examples
//!
//! ```
//! use ipc_core::{jsonrpc::ErrorObject, memory, Client, Router, Server};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ipc_core::Result<()> {
//! let (listener, connector) = memory::listener("test");
//! let router = Router::new().method("add", |_ctx, (a, b): (i64, i64)| async move {
//!     Ok::<_, ErrorObject>(a + b)
//! });
//! let server = Server::builder().build().serve(listener, router);
//! let client = Client::new(connector.connect().await?);
//! assert_eq!(client.request::<i64>("add", (1, 2)).await?, 3);
//! server.shutdown(std::time::Duration::from_secs(1)).await?;
//! # Ok(()) }
//! ```

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::address::Address;
use crate::error::{Error, Result};
use crate::peer::PeerInfo;
use crate::transport::{BoxTransport, Listener, StreamTransport};

/// Bytes buffered in each direction of an in-memory connection.
const PIPE_CAPACITY: usize = 256 * 1024;

/// Accepts connections made through its [`MemoryConnector`].
#[derive(Debug)]
pub struct MemoryListener {
    rx: mpsc::Receiver<BoxTransport>,
    address: Address,
}

/// Makes connections to its [`MemoryListener`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    tx: mpsc::Sender<BoxTransport>,
    address: Address,
}

/// A listener and its connector; `name` only labels the address (`local:name`).
pub fn listener(name: &str) -> (MemoryListener, MemoryConnector) {
    let (tx, rx) = mpsc::channel(64);
    let address = Address::Local(name.to_owned());
    (
        MemoryListener {
            rx,
            address: address.clone(),
        },
        MemoryConnector { tx, address },
    )
}

fn this_process() -> PeerInfo {
    PeerInfo {
        pid: Some(std::process::id()),
        same_user: true,
        ..PeerInfo::default()
    }
}

impl MemoryConnector {
    /// Connects, as this process.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] once the listener is closed or dropped.
    pub async fn connect(&self) -> Result<BoxTransport> {
        self.connect_as(this_process()).await
    }

    /// Connects, presenting `identity` to the server (to test auth policies).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] once the listener is closed or dropped.
    pub async fn connect_as(&self, identity: PeerInfo) -> Result<BoxTransport> {
        let (client, server) = tokio::io::duplex(PIPE_CAPACITY);
        self.tx
            .send(Box::new(StreamTransport::new(server, identity)))
            .await
            .map_err(|_| Error::NotFound {
                endpoint: self.address.to_string(),
            })?;
        Ok(Box::new(StreamTransport::new(client, this_process())))
    }
}

#[async_trait]
impl Listener for MemoryListener {
    async fn accept(&mut self) -> Result<BoxTransport> {
        self.rx.recv().await.ok_or(Error::Shutdown)
    }

    fn local_addr(&self) -> &Address {
        &self.address
    }

    fn close(&mut self) -> Result<()> {
        self.rx.close();
        Ok(())
    }
}
