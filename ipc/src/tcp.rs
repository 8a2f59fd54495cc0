//! TCP, for when a channel must leave the machine. Peers over TCP have no
//! OS-verified identity, so the default [`AuthPolicy::SameUser`] refuses them:
//! serve TCP with an explicit policy such as [`AuthPolicy::Any`], and bind to
//! loopback unless you mean otherwise.
//!
//! [`AuthPolicy::SameUser`]: ipc_core::AuthPolicy::SameUser
//! [`AuthPolicy::Any`]: ipc_core::AuthPolicy::Any

use async_trait::async_trait;
use ipc_core::{Address, BoxTransport, Error, Listener, PeerInfo, Result, StreamTransport};

/// A TCP listener as an [`ipc_core::Listener`].
#[derive(Debug)]
pub struct TcpListener {
    inner: Option<tokio::net::TcpListener>,
    address: Address,
}

/// A TCP connection as an [`ipc_core::Transport`].
pub type TcpTransport = StreamTransport<tokio::net::TcpStream>;

impl TcpListener {
    /// Binds `tcp:IP:PORT` (port 0 picks a free one; [`Listener::local_addr`] tells which).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`] for a non-TCP address, [`Error::AddressInUse`], I/O errors.
    pub async fn bind(address: &Address) -> Result<Self> {
        let Address::Tcp(sa) = address else {
            return Err(Error::InvalidAddress {
                input: address.to_string(),
                reason: "not a TCP address".into(),
                expected: "tcp:IP:PORT",
            });
        };
        let inner = tokio::net::TcpListener::bind(sa).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                Error::AddressInUse {
                    endpoint: address.to_string(),
                }
            } else {
                Error::io(format!("binding {address}"), e)
            }
        })?;
        let local = inner
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        Ok(TcpListener {
            inner: Some(inner),
            address: Address::Tcp(local),
        })
    }
}

#[async_trait]
impl Listener for TcpListener {
    async fn accept(&mut self) -> Result<BoxTransport> {
        let Some(inner) = &self.inner else {
            return Err(Error::Shutdown);
        };
        let (stream, _) = inner
            .accept()
            .await
            .map_err(|e| Error::io("accepting a TCP connection", e))?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(StreamTransport::new(stream, PeerInfo::default())))
    }

    fn local_addr(&self) -> &Address {
        &self.address
    }

    fn close(&mut self) -> Result<()> {
        self.inner = None;
        Ok(())
    }
}

/// Connects to `tcp:IP:PORT` with `TCP_NODELAY`.
///
/// # Errors
///
/// [`Error::NotFound`] when nothing listens there; other I/O errors.
pub async fn connect(address: &Address) -> Result<TcpTransport> {
    let Address::Tcp(sa) = address else {
        return Err(Error::InvalidAddress {
            input: address.to_string(),
            reason: "not a TCP address".into(),
            expected: "tcp:IP:PORT",
        });
    };
    let stream = tokio::net::TcpStream::connect(sa).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            Error::NotFound {
                endpoint: address.to_string(),
            }
        } else {
            Error::io(format!("connecting to {address}"), e)
        }
    })?;
    let _ = stream.set_nodelay(true);
    Ok(StreamTransport::new(stream, PeerInfo::default()))
}
