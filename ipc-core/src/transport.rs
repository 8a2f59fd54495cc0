//! The two traits every backend implements: [`Transport`] and [`Listener`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::address::Address;
use crate::error::Result;
use crate::peer::PeerInfo;

/// An established connection: an async byte stream plus the peer's
/// verified identity.
///
/// Bytes arrive in order but with no message boundaries: one `read` may
/// return part of a message or several; framing is the codec's job.
/// `poll_shutdown` closes the write half, so the peer reads end-of-stream
/// while it can still send back (half-close).
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + fmt::Debug + 'static {
    /// The identity of the process on the other end, as the OS verified it.
    fn peer(&self) -> &PeerInfo;
}

/// A transport of a backend chosen at run time.
pub type BoxTransport = Box<dyn Transport>;

impl Transport for BoxTransport {
    fn peer(&self) -> &PeerInfo {
        (**self).peer()
    }
}

/// A bound endpoint that accepts connections.
///
/// The listener owns its endpoint: it never takes over a live one, creates it
/// with the permissions asked for from the first moment, and removes it when
/// it is dropped (or [`Listener::close`]d).
#[async_trait]
pub trait Listener: Send + fmt::Debug + 'static {
    /// Waits for the next connection.
    ///
    /// # Errors
    ///
    /// Accept errors from the OS (for example, running out of file
    /// descriptors) are returned; the listener stays usable and the caller
    /// decides whether to back off and retry.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses no connection.
    async fn accept(&mut self) -> Result<BoxTransport>;

    /// The address clients connect to.
    fn local_addr(&self) -> &Address;

    /// Stops listening and removes the endpoint. Idempotent; also done on drop.
    fn close(&mut self) -> Result<()>;
}

/// A listener of a backend chosen at run time.
pub type BoxListener = Box<dyn Listener>;

#[async_trait]
impl Listener for BoxListener {
    async fn accept(&mut self) -> Result<BoxTransport> {
        (**self).accept().await
    }
    fn local_addr(&self) -> &Address {
        (**self).local_addr()
    }
    fn close(&mut self) -> Result<()> {
        (**self).close()
    }
}

/// Wraps any byte stream as a [`Transport`] with a given identity, for
/// backends built on an existing stream type and for tests over in-memory
/// pipes.
pub struct StreamTransport<S> {
    stream: S,
    peer: PeerInfo,
}

impl<S> StreamTransport<S> {
    /// Pairs a stream with the identity of its peer.
    pub fn new(stream: S, peer: PeerInfo) -> Self {
        StreamTransport { stream, peer }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S> fmt::Debug for StreamTransport<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamTransport")
            .field("stream", &std::any::type_name::<S>())
            .field("peer", &self.peer)
            .finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StreamTransport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StreamTransport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl<S> Transport for StreamTransport<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}
