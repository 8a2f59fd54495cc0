//! The message-level API for async code: whole messages and zero-copy reads,
//! as in [`crate::ShmConnection`], with calls that wait as tasks (see
//! `crate::async_wait`) instead of blocking the thread.

use std::cell::Cell;
use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ipc_core::{Address, Error, PeerInfo, Result};

use crate::async_wait::{AsyncWaits, Task};
use crate::blocking::{step, Got, Message, ShmConnection, ShmReceiver, ShmSender};
use crate::layout::{CLIENT, CLOSED_GONE};
use crate::link::Link;
use crate::options::ShmOptions;
use crate::ring::Producer;
use crate::sys;

/// A shared-memory connection carrying whole messages, for async code.
///
/// The same messages as [`ShmConnection`], on the same rings (either end
/// may use either API): [`recv`](Self::recv) returns a [`Message`] that
/// borrows the ring when the message is contiguous in it (every message up
/// to half the ring), [`send_with`](Self::send_with) writes a message in
/// place, and messages larger than half the ring go in pieces. A call that
/// has to wait spins for [`ShmOptions::async_spin`] (default: not at all)
/// and then waits as a task on the connection's doorbell, so an idle
/// connection takes no thread and no CPU. Sending and receiving return
/// [`Error::Disconnected`] once the peer is gone (after every message it
/// sent has been received).
///
/// Obtain one with [`crate::ShmListener::accept_async_connection`] or
/// [`AsyncShmConnection::connect`]; split it with
/// [`into_split`](Self::into_split) to send and receive from two tasks.
///
/// # Cancel safety
///
/// [`recv`](Self::recv), [`recv_into`](Self::recv_into) and
/// [`send_with`](Self::send_with) are cancel safe: a receive that is
/// dropped has taken nothing (the pieces of a message it had begun to
/// reassemble wait for the next call), and `send_with` calls its closure
/// only once there is room. So is [`send`](Self::send) of a message up to
/// half the ring, which goes into the ring at once. A `send` of a larger
/// message that is dropped after its first piece went out leaves the
/// receiver with part of a message: every later send then fails with
/// [`Error::Protocol`].
///
/// # Examples
///
/// ```no_run
/// use ipc_shm::{AsyncShmConnection, ShmListener, ShmOptions};
///
/// # #[allow(dead_code)]
/// # async fn run() -> ipc_core::Result<()> {
/// let addr = "shm:async-echo".parse()?;
/// let mut listener = ShmListener::bind(&addr)?;
/// tokio::spawn(async move {
///     let mut conn = listener.accept_async_connection().await?;
///     loop {
///         // A message borrows the ring (and the connection) until dropped.
///         let reply = match conn.recv().await {
///             Ok(msg) => msg.to_vec(),
///             Err(_) => return Ok::<_, ipc_core::Error>(()),
///         };
///         conn.send(&reply).await?;
///     }
/// });
/// let mut conn = AsyncShmConnection::connect(&addr, &ShmOptions::new()).await?;
/// conn.send(b"ping").await?;
/// assert_eq!(&*conn.recv().await?, b"ping");
/// # Ok(())
/// # }
/// ```
pub struct AsyncShmConnection {
    tx: AsyncShmSender,
    rx: AsyncShmReceiver,
}

/// The sending half of an [`AsyncShmConnection`].
pub struct AsyncShmSender {
    inner: ShmSender,
    waits: Arc<AsyncWaits>,
    /// When the current wait for room began, while it spins.
    spin: Option<Instant>,
    /// A send in pieces is under way, or was dropped part-way (see
    /// [`AsyncShmConnection`], "Cancel safety").
    in_pieces: bool,
}

/// The receiving half of an [`AsyncShmConnection`].
pub struct AsyncShmReceiver {
    inner: ShmReceiver,
    waits: Arc<AsyncWaits>,
    /// When the current wait for a message began, while it spins.
    spin: Option<Instant>,
}

impl AsyncShmConnection {
    /// Wraps the halves of a connection whose link rings the peer over the
    /// same doorbell that `waits` waits on.
    pub(crate) fn new(conn: ShmConnection, waits: AsyncWaits) -> AsyncShmConnection {
        let waits = Arc::new(waits);
        AsyncShmConnection {
            tx: AsyncShmSender {
                inner: conn.tx,
                waits: waits.clone(),
                spin: None,
                in_pieces: false,
            },
            rx: AsyncShmReceiver {
                inner: conn.rx,
                waits,
                spin: None,
            },
        }
    }

    /// Connects to the shared-memory server at `addr` (`shm:name`).
    ///
    /// # Errors
    ///
    /// As [`crate::ShmTransport::connect`].
    pub async fn connect(addr: &Address, opts: &ShmOptions) -> Result<AsyncShmConnection> {
        let (region, conn, peer) = sys::connect(addr, opts).await?;
        crate::transport::async_connection(region, CLIENT, conn, peer, opts)
    }

    /// Sends one message, waiting while the ring is full.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the peer is gone; [`Error::FrameTooLarge`]
    /// above the configured maximum; [`Error::Corrupt`] when the peer broke
    /// the ring; [`Error::Protocol`] after a send in pieces was dropped
    /// part-way (see "Cancel safety").
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.send(msg).await
    }

    /// Sends one message of `len` bytes that `fill` writes in place. As
    /// [`ShmConnection::send_with`], waiting as a task for room.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); [`Error::FrameTooLarge`] above
    /// [`max_in_place`](Self::max_in_place), before `fill` is called.
    pub async fn send_with<R>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        self.tx.send_with(len, fill).await
    }

    /// The largest message [`send_with`](Self::send_with) takes: half the
    /// ring less a 16-byte header, or the maximum message if smaller.
    pub fn max_in_place(&self) -> usize {
        self.tx.max_in_place()
    }

    /// Receives the next message, waiting until one arrives. It borrows
    /// the ring when it was contiguous in it; drop it promptly, since the
    /// sender cannot reuse the space until then.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the peer is gone and everything it sent
    /// has been received; [`Error::Corrupt`] when the peer broke the ring.
    pub async fn recv(&mut self) -> Result<Message<'_>> {
        self.rx.recv().await
    }

    /// Receives the next message into `buf` (replacing its contents),
    /// copying it out of the ring (large ones behind a prefetch) or, for a
    /// message reassembled from pieces, handing over its buffer.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.rx.recv_into(buf).await
    }

    /// Receives a message if one is complete, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<Message<'_>>> {
        self.rx.try_recv()
    }

    /// The identity of the process on the other end.
    pub fn peer(&self) -> &PeerInfo {
        self.rx.peer()
    }

    /// Splits into a sender and a receiver, for two tasks.
    pub fn into_split(self) -> (AsyncShmSender, AsyncShmReceiver) {
        (self.tx, self.rx)
    }
}

impl AsyncShmSender {
    /// Sends one message. See [`AsyncShmConnection::send`].
    ///
    /// # Errors
    ///
    /// As [`AsyncShmConnection::send`].
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.check_whole()?;
        let max = self.inner.max_message;
        if msg.len() > max {
            return Err(Error::FrameTooLarge {
                len: msg.len(),
                max,
            });
        }
        // The common case: room for the whole message, written at once.
        if !self.inner.link.gone() && self.inner.prod.try_send_fast(msg) {
            self.inner.link.notify();
            return Ok(());
        }
        let mut sent = 0;
        let r = poll_fn(|cx| self.poll_send(cx, msg, &mut sent)).await;
        // Done, or the connection is broken anyway: only a send dropped
        // part-way leaves the flag set.
        self.in_pieces = false;
        r
    }

    /// Refuses to send after a send in pieces was dropped part-way.
    fn check_whole(&self) -> Result<()> {
        if self.in_pieces {
            return Err(Error::Protocol(
                "a send of a message in pieces was cancelled part-way, so the receiver holds \
                 part of a message and this connection can send no more; open a new connection \
                 (sends of messages up to half the ring are cancel safe)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        msg: &[u8],
        sent: &mut usize,
    ) -> Poll<Result<()>> {
        let in_pieces = &mut self.in_pieces;
        poll_write(
            &mut self.inner,
            &self.waits,
            &mut self.spin,
            cx,
            |prod, link| {
                let before = *sent;
                let done = prod.try_send_message(msg, sent)?;
                if *sent != before || done {
                    link.notify();
                }
                *in_pieces = *sent > 0 && !done;
                Ok(done.then_some(()))
            },
        )
    }

    /// Sends one message written in place. See
    /// [`AsyncShmConnection::send_with`].
    ///
    /// # Errors
    ///
    /// As [`AsyncShmConnection::send_with`].
    pub async fn send_with<R>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        self.check_whole()?;
        let max = self.max_in_place();
        if len > max {
            return Err(Error::FrameTooLarge { len, max });
        }
        let slot = loop {
            if !self.inner.link.gone() {
                if let Some(slot) = self.inner.prod.try_reserve_in_place(len)? {
                    break slot;
                }
            }
            poll_fn(|cx| self.poll_room(cx, len)).await?;
        };
        // A peer that breaks the protocol can write these bytes while `fill`
        // runs; they are plain bytes that we never read. Nothing of ours
        // touches them meanwhile: we hold `&mut self`, and no await comes
        // between the reservation and the commit.
        // SAFETY: `slot` starts `len` bytes in the mapping that the consumer
        // does not read before commit_in_place.
        let buf = unsafe { std::slice::from_raw_parts_mut(slot, len) };
        let r = fill(buf);
        self.inner.prod.commit_in_place(len);
        self.inner.link.notify();
        Ok(r)
    }

    /// Waits until a record of `len` bytes fits (reserving it, padding
    /// first if need be; [`Self::send_with`] then takes the same room).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<Result<()>> {
        poll_write(
            &mut self.inner,
            &self.waits,
            &mut self.spin,
            cx,
            |prod, _| Ok(prod.try_reserve_in_place(len)?.map(|_| ())),
        )
    }

    /// The largest message [`send_with`](Self::send_with) takes. See
    /// [`AsyncShmConnection::max_in_place`].
    pub fn max_in_place(&self) -> usize {
        self.inner.max_in_place()
    }

    /// Stops sending: the peer receives what was sent, then
    /// [`Error::Disconnected`]. Also done on drop.
    pub fn close(&mut self) {
        self.inner.close();
    }
}

/// Waits as the writing task of a connection (spinning since `*spin`) until
/// `attempt` returns a value; [`Error::Disconnected`] once the peer is gone.
fn poll_write<T>(
    inner: &mut ShmSender,
    waits: &AsyncWaits,
    spin: &mut Option<Instant>,
    cx: &mut Context<'_>,
    mut attempt: impl FnMut(&mut Producer, &Link) -> Result<Option<T>>,
) -> Poll<Result<T>> {
    let ShmSender { prod, link, .. } = inner;
    let link = &**link;
    waits.poll_until(
        cx,
        Task::Write,
        &link.bells,
        &link.hung_up,
        spin,
        prod,
        |prod| {
            if link.gone() || link.bells.peer_closed() & CLOSED_GONE != 0 {
                return Err(Error::Disconnected);
            }
            attempt(prod, link)
        },
        |prod| prod.tail_moved().unwrap_or(true) || link.bells.peer_closed() & CLOSED_GONE != 0,
    )
}

impl AsyncShmReceiver {
    /// Receives the next message. See [`AsyncShmConnection::recv`].
    ///
    /// # Errors
    ///
    /// As [`AsyncShmConnection::recv`].
    pub async fn recv(&mut self) -> Result<Message<'_>> {
        let got = match self.inner.next_whole() {
            Some(rec) => Got::Borrowed(rec),
            None => poll_fn(|cx| self.poll_recv(cx)).await?,
        };
        Ok(self.inner.wrap(got))
    }

    /// Receives the next message into `buf`. See
    /// [`AsyncShmConnection::recv_into`].
    ///
    /// # Errors
    ///
    /// As [`AsyncShmConnection::recv`].
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let got = match self.inner.next_whole() {
            Some(rec) => Got::Borrowed(rec),
            None => poll_fn(|cx| self.poll_recv(cx)).await?,
        };
        self.inner.take_into(got, buf);
        Ok(())
    }

    /// Receives a message if one is complete, without waiting.
    ///
    /// # Errors
    ///
    /// As [`AsyncShmConnection::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Message<'_>>> {
        self.inner.try_recv()
    }

    /// The identity of the process on the other end.
    pub fn peer(&self) -> &PeerInfo {
        self.inner.peer()
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Got>> {
        let ShmReceiver {
            cons,
            asm,
            link,
            max_message,
            ..
        } = &mut self.inner;
        let (link, max) = (&**link, *max_message);
        self.waits.poll_until(
            cx,
            Task::Read,
            &link.bells,
            &link.hung_up,
            &mut self.spin,
            &mut (cons, asm),
            |(cons, asm)| {
                let unused = Cell::new(false);
                step(cons, asm, link, max, link.gone(), false, &unused, &unused)
            },
            // The header word alone, as the blocking receiver spins: asking
            // the cache for the next record's lines on every look too, as
            // the async Transport does (`Consumer::watch`), gave the same
            // p50 here and a p99 of 880-1250 ns against 730-790 (the shm
            // benchmark, four sets of three rounds each way, alternated).
            |(cons, _)| cons.sees_record() || link.bells.peer_closed() != 0,
        )
    }
}

impl fmt::Debug for AsyncShmConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncShmConnection")
            .field("peer", self.peer())
            .field("max_in_place", &self.max_in_place())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AsyncShmSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncShmSender")
            .field("max_in_place", &self.max_in_place())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AsyncShmReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncShmReceiver")
            .field("peer", self.peer())
            .finish_non_exhaustive()
    }
}
