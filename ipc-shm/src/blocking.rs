//! The message-level API: whole messages, zero-copy reads, blocking calls
//! that spin and then sleep, usable from any thread without a runtime.

use std::cell::Cell;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use ipc_core::{Error, PeerInfo, Result};

use crate::layout::{CLOSED_GONE, CLOSED_WRITE};
use crate::link::Link;
use crate::ring::{Assembly, Consumer, Producer, Record, Recv};

/// Messages from this size on are announced to the receiver before they are
/// copied in ([`crate::layout::Bell::writing`]), and a receiver asleep that
/// spins for them ([`crate::layout::Bell::early_wake`]) is woken then rather
/// than once the message is in. 256 KiB take 10-25 us to copy, about as long
/// as a wake-up takes: for smaller messages the wake-up would not overlap
/// the copy.
const ANNOUNCE_MIN: usize = 256 << 10;

/// A shared-memory connection carrying whole messages.
///
/// [`send`](Self::send) copies a message into the ring (in pieces when it is
/// larger than half the ring); [`recv`](Self::recv) returns a [`Message`]
/// that borrows the ring when the message is contiguous in it (every message
/// up to half the ring size), so reading costs no copy;
/// [`send_with`](Self::send_with) has the sender write a message in place,
/// and [`recv_timeout`](Self::recv_timeout) bounds the wait for one. A
/// call that has to wait spins for the configured time and then sleeps on
/// the doorbell; sending and receiving return [`Error::Disconnected`] once
/// the peer is gone (after every message it sent has been received).
///
/// Obtain one with [`crate::ShmListener::accept_connection`] or
/// [`ShmConnection::connect`]; split it with [`into_split`](Self::into_split)
/// to send and receive on different threads.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> ipc_core::Result<()> {
/// let addr = "shm:echo".parse()?;
/// let mut conn = ipc_shm::ShmConnection::connect(&addr, &ipc_shm::ShmOptions::default())?;
/// conn.send(b"ping")?;
/// let reply = conn.recv()?;
/// assert_eq!(&*reply, b"ping");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ShmConnection {
    pub(crate) tx: ShmSender,
    pub(crate) rx: ShmReceiver,
}

/// The sending half of a [`ShmConnection`].
#[derive(Debug)]
pub struct ShmSender {
    pub(crate) prod: Producer,
    pub(crate) link: Arc<Link>,
    pub(crate) max_message: usize,
}

/// The receiving half of a [`ShmConnection`].
#[derive(Debug)]
pub struct ShmReceiver {
    pub(crate) cons: Consumer,
    pub(crate) asm: Assembly,
    pub(crate) link: Arc<Link>,
    pub(crate) max_message: usize,
    peer: PeerInfo,
}

impl ShmConnection {
    pub(crate) fn from_parts(
        prod: Producer,
        cons: Consumer,
        link: Arc<Link>,
        max_message: usize,
        peer: PeerInfo,
    ) -> ShmConnection {
        ShmConnection {
            tx: ShmSender {
                prod,
                link: link.clone(),
                max_message,
            },
            rx: ShmReceiver {
                cons,
                asm: Assembly::default(),
                link,
                max_message,
                peer,
            },
        }
    }

    /// Sends one message, blocking while the ring is full.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the peer is gone; [`Error::FrameTooLarge`]
    /// above the configured maximum; [`Error::Corrupt`] when the peer broke
    /// the ring.
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.send(msg)
    }

    /// Sends one message of `len` bytes written in place: blocks until the
    /// ring has room for it, then calls `fill` with the message's bytes in
    /// shared memory and publishes them when `fill` returns. The message
    /// costs no copy, only what `fill` writes. See
    /// [`ShmSender::send_with`].
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); [`Error::FrameTooLarge`] above
    /// [`max_in_place`](Self::max_in_place).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> ipc_core::Result<()> {
    /// # let addr = "shm:echo".parse()?;
    /// # let mut conn = ipc_shm::ShmConnection::connect(&addr, &ipc_shm::ShmOptions::default())?;
    /// let reading: u64 = 42;
    /// conn.send_with(8, |buf| buf.copy_from_slice(&reading.to_le_bytes()))?;
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn send_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        self.tx.send_with(len, fill)
    }

    /// The largest message [`send_with`](Self::send_with) takes: half the
    /// ring less a record header, or the configured maximum message if
    /// smaller.
    pub fn max_in_place(&self) -> usize {
        self.tx.max_in_place()
    }

    /// Receives the next message, blocking until one arrives.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the peer is gone and every message it
    /// sent has been received; [`Error::FrameTooLarge`] when the peer sent a
    /// message above the configured maximum; [`Error::Corrupt`] when the peer
    /// broke the ring. After an error other than `Disconnected`, drop the
    /// connection.
    #[inline]
    pub fn recv(&mut self) -> Result<Message<'_>> {
        self.rx.recv()
    }

    /// Receives the next message, waiting at most `timeout` for it: spins
    /// and sleeps as [`recv`](Self::recv) does, and gives up when the time
    /// has passed. A message that is already there is returned at once,
    /// whatever the timeout; a zero timeout looks without waiting (as
    /// [`try_recv`](Self::try_recv), but reporting an empty ring as an
    /// error).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] with `timeout` when no message arrived in time
    /// (the connection stays usable); otherwise as [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> ipc_core::Result<()> {
    /// # let addr = "shm:echo".parse()?;
    /// # let mut conn = ipc_shm::ShmConnection::connect(&addr, &ipc_shm::ShmOptions::default())?;
    /// use std::time::Duration;
    /// match conn.recv_timeout(Duration::from_millis(100)) {
    ///     Ok(msg) => println!("{} bytes", msg.len()),
    ///     Err(ipc_core::Error::Timeout(_)) => println!("nothing yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_>> {
        self.rx.recv_timeout(timeout)
    }

    /// Receives the next message into `buf`, replacing its contents and
    /// reusing its memory, blocking until one arrives: one copy out of the
    /// ring, straight into `buf`, and no allocation once `buf` is large
    /// enough (for a message sent in pieces, the pieces are gathered in a
    /// buffer of the receiver's that is then swapped with `buf`).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.rx.recv_into(buf)
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
        &self.rx.peer
    }

    /// Splits into a sender and a receiver for use on two threads.
    pub fn into_split(self) -> (ShmSender, ShmReceiver) {
        (self.tx, self.rx)
    }
}

impl ShmSender {
    /// Sends one message, blocking while the ring is full. See
    /// [`ShmConnection::send`].
    ///
    /// # Errors
    ///
    /// As [`ShmConnection::send`].
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        let max = self.max_message;
        if msg.len() > max {
            return Err(Error::FrameTooLarge {
                len: msg.len(),
                max,
            });
        }
        if msg.len() >= ANNOUNCE_MIN {
            self.announce(msg.len());
        }
        // The common case: room for the whole message, written at once.
        if !self.link.gone() && self.prod.try_send_fast(msg) {
            self.link.notify();
            return Ok(());
        }
        self.send_slow(msg)
    }

    /// Tells a receiver that waits that a message of `len` bytes is on its
    /// way, so that it spins on while this side copies it in (see
    /// [`Link::wait_until`]).
    #[cold]
    fn announce(&self, len: usize) {
        let bells = &self.link.bells;
        bells.announce_writing(self.prod.position() + len as u64);
        // A receiver asleep that spins for announced messages wakes while
        // we copy, sees the announcement and spins until the message is in.
        // Another (async, or not spinning) would only find nothing and
        // sleep again: it is rung once the message is in.
        if bells.peer_wakes_early() {
            self.link.notify();
        }
    }

    /// Sends a message that does not fit at once: refreshes the view of the
    /// free space, pads, sends in pieces, spins and sleeps as needed.
    #[inline(never)]
    fn send_slow(&mut self, msg: &[u8]) -> Result<()> {
        let mut sent = 0;
        let prod = &mut self.prod;
        let link = &*self.link;
        let moved = Cell::new(false);
        link.wait_until(None, &moved, &Cell::new(false), |gone, _quick| {
            if gone || link.bells.peer_closed() & CLOSED_GONE != 0 {
                return Err(Error::Disconnected);
            }
            let before = sent;
            let done = prod.try_send_message(msg, &mut sent)?;
            if sent != before || done {
                link.notify();
            }
            if sent != before {
                moved.set(true);
            }
            Ok(done.then_some(()))
        })
    }

    /// Sends one message of `len` bytes written in place. See
    /// [`ShmConnection::send_with`].
    ///
    /// Blocks while the ring is full, then calls `fill` once with a slice
    /// of exactly `len` bytes inside the ring. Its contents on entry are
    /// unspecified (bytes of earlier messages, or zeroes): `fill` should
    /// write all of it, since the peer receives whatever is there. The peer
    /// sees nothing of the message until `fill` returns; if `fill` panics,
    /// nothing is sent and the sender stays usable. Messages above
    /// [`max_in_place`](Self::max_in_place) are refused, not sent in pieces:
    /// use [`send`](Self::send) for those.
    ///
    /// As with a borrowed [`Message`], the slice is shared memory: a peer
    /// that breaks the protocol can change it while `fill` runs. Write to
    /// it; do not rely on reading back what was written.
    ///
    /// # Errors
    ///
    /// As [`ShmConnection::send`]; [`Error::FrameTooLarge`] above
    /// [`max_in_place`](Self::max_in_place), before `fill` is called.
    #[inline]
    pub fn send_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        let max = self.max_in_place();
        if len > max {
            return Err(Error::FrameTooLarge { len, max });
        }
        if len >= ANNOUNCE_MIN {
            self.announce(len);
        }
        let slot = match self.prod.try_reserve_in_place(len) {
            Ok(Some(slot)) if !self.link.gone() => slot,
            _ => self.reserve_in_place_slow(len)?,
        };
        // A peer that breaks the protocol can write these bytes while `fill`
        // runs; they are plain bytes that we never read.
        // SAFETY: `slot` starts `len` bytes in the mapping that the consumer
        // does not read before commit_in_place, and that nothing else of ours
        // touches meanwhile (we hold `&mut self`).
        let buf = unsafe { std::slice::from_raw_parts_mut(slot, len) };
        let r = fill(buf);
        self.prod.commit_in_place(len);
        self.link.notify();
        Ok(r)
    }

    /// The room for [`Self::send_with`] when it is not there at once:
    /// spins, sleeps, reports the peer's departure.
    #[inline(never)]
    fn reserve_in_place_slow(&mut self, len: usize) -> Result<*mut u8> {
        let prod = &mut self.prod;
        let link = &*self.link;
        link.wait_until(
            None,
            &Cell::new(false),
            &Cell::new(false),
            |gone, _quick| {
                if gone || link.bells.peer_closed() & CLOSED_GONE != 0 {
                    return Err(Error::Disconnected);
                }
                prod.try_reserve_in_place(len)
            },
        )
    }

    /// The largest message [`send_with`](Self::send_with) takes. See
    /// [`ShmConnection::max_in_place`].
    pub fn max_in_place(&self) -> usize {
        self.max_message.min(self.prod.max_record_payload())
    }

    /// Stops sending: the peer receives what was sent, then
    /// [`Error::Disconnected`]. Also done on drop.
    pub fn close(&mut self) {
        self.link.bells.close(CLOSED_WRITE);
        self.link.notify();
    }
}

impl Drop for ShmSender {
    fn drop(&mut self) {
        self.close();
    }
}

impl ShmReceiver {
    /// Receives the next message. See [`ShmConnection::recv`].
    ///
    /// # Errors
    ///
    /// As [`ShmConnection::recv`].
    #[inline]
    pub fn recv(&mut self) -> Result<Message<'_>> {
        // The common case: a whole message waiting, read in place.
        let got = match self.next_whole() {
            Some(rec) => Got::Borrowed(rec),
            None => self.recv_slow(None)?,
        };
        Ok(self.wrap(got))
    }

    /// Receives the next message, waiting at most `timeout`. See
    /// [`ShmConnection::recv_timeout`].
    ///
    /// # Errors
    ///
    /// As [`ShmConnection::recv_timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_>> {
        let got = match self.next_whole() {
            Some(rec) => Got::Borrowed(rec),
            None => self.recv_slow(Some(timeout))?,
        };
        Ok(self.wrap(got))
    }

    /// The next record if it is a whole message (see
    /// [`Consumer::next_whole`]).
    #[inline]
    pub(crate) fn next_whole(&mut self) -> Option<Record> {
        if self.asm.is_assembling() {
            return None;
        }
        self.cons.next_whole(self.max_message)
    }

    /// Waits for the next message: spins, sleeps, reassembles pieces,
    /// reports errors and the peer's departure.
    #[inline(never)]
    fn recv_slow(&mut self, timeout: Option<Duration>) -> Result<Got> {
        let cons = &mut self.cons;
        let asm = &mut self.asm;
        let link = &*self.link;
        let max = self.max_message;
        let moved = Cell::new(false);
        let busy = Cell::new(false);
        link.wait_until(timeout, &moved, &busy, |gone, quick| {
            step(cons, asm, link, max, gone, quick, &moved, &busy)
        })
    }

    /// Receives the next message into `buf` (replacing its contents),
    /// blocking until one arrives. See [`ShmConnection::recv_into`].
    ///
    /// # Errors
    ///
    /// As [`ShmConnection::recv`].
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let got = match self.next_whole() {
            Some(rec) => Got::Borrowed(rec),
            None => self.recv_slow(None)?,
        };
        self.take_into(got, buf);
        Ok(())
    }

    /// Puts the message `got` into `buf` (replacing its contents): copies a
    /// message in place and releases it, or swaps in a reassembled one.
    pub(crate) fn take_into(&mut self, got: Got, buf: &mut Vec<u8>) {
        match got {
            Got::Borrowed(rec) => {
                buf.clear();
                // SAFETY: `rec` was just peeked by this receiver and is
                // released right after the copy.
                crate::copy::extend_out(buf, unsafe { self.cons.payload(&rec, 0, rec.len) });
                self.cons.release(rec.advance);
                self.link.notify();
            }
            Got::Owned(v) => {
                let old = std::mem::replace(buf, v);
                self.asm.give_back(old);
            }
        }
    }

    /// Receives a message if one is complete, without waiting.
    ///
    /// # Errors
    ///
    /// As [`ShmConnection::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Message<'_>>> {
        let gone = self.link.gone();
        let got = step(
            &mut self.cons,
            &mut self.asm,
            &self.link,
            self.max_message,
            gone,
            false,
            &Cell::new(false),
            &Cell::new(false),
        )?;
        Ok(got.map(|g| self.wrap(g)))
    }

    #[inline]
    pub(crate) fn wrap(&mut self, got: Got) -> Message<'_> {
        match got {
            Got::Borrowed(rec) => Message {
                inner: Inner::Borrowed { rx: self, rec },
            },
            Got::Owned(v) => Message {
                inner: Inner::Owned {
                    rx: self,
                    v: ManuallyDrop::new(v),
                },
            },
        }
    }

    /// The identity of the process on the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl Drop for ShmReceiver {
    fn drop(&mut self) {
        self.link.bells.close(CLOSED_GONE);
        self.link.notify();
    }
}

/// A message found in the ring: in place, or reassembled from pieces.
pub(crate) enum Got {
    Borrowed(Record),
    Owned(Vec<u8>),
}

/// One look at the ring for [`ShmReceiver`]: a whole message at the tail,
/// else the general path (padding, pieces, errors, the peer's departure).
/// With `quick` (while spinning), a tail whose header word shows no record
/// is taken as empty without reading the head or anything else the general
/// path reads, as long as the peer has not closed. Sets `busy` when it finds
/// nothing and the peer has announced a message it is still copying in, and
/// `moved` when it released anything (a piece, padding).
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn step(
    cons: &mut Consumer,
    asm: &mut Assembly,
    link: &Link,
    max: usize,
    gone: bool,
    quick: bool,
    moved: &Cell<bool>,
    busy: &Cell<bool>,
) -> Result<Option<Got>> {
    if !asm.is_assembling() {
        if let Some(rec) = cons.next_whole(max) {
            return Ok(Some(Got::Borrowed(rec)));
        }
    }
    // Nothing there yet: is the peer copying in a message it announced?
    let note_busy = |cons: &Consumer| {
        if link.bells.peer_writing_past(cons.position()) {
            busy.set(true);
        }
    };
    // The spin looks at the header word alone. Asking the cache for the
    // next record's lines on every look as well, as the async reader does
    // (`Consumer::watch`), pulls them back from a writer that is still
    // writing them, and a third of the round trips then took one to three
    // more line transfers. 64 B round trips between two Xeon cores, each
    // way alternated in one build: mean 479 -> 390 ns, p50 370 -> 334 ns,
    // p90 766 -> 516 ns, p99 1105 -> 721 ns (the shm benchmark, pinned or
    // not); in ipc-bench the p50 went up instead, 331-409 -> 386-429 ns,
    // with the mean unchanged (~440 ns) and p99 816-1158 -> 700-799 ns.
    if quick && !gone && !cons.sees_record() && link.bells.peer_closed() == 0 {
        note_busy(cons);
        return Ok(None);
    }
    let before = cons.position();
    let mut got = cons.try_recv(asm, max)?;
    if matches!(got, Recv::Empty) {
        // Look at the peer's closed flag only when the ring is empty, and
        // then look at the ring once more: records the peer published before
        // closing are visible once its closed flag is.
        if gone || link.bells.peer_closed() != 0 {
            got = cons.try_recv(asm, max)?;
            if matches!(got, Recv::Empty) {
                return Err(Error::Disconnected);
            }
        }
    }
    // Pieces of a large message and padding free space as they are
    // consumed: tell the sender, who may be waiting for it.
    if cons.position() != before {
        link.notify();
        moved.set(true);
    }
    Ok(match got {
        Recv::Empty => {
            note_busy(cons);
            None
        }
        Recv::Borrowed(rec) => Some(Got::Borrowed(rec)),
        Recv::Owned(v) => Some(Got::Owned(v)),
    })
}

/// A received message. When the message was contiguous in the ring, it
/// borrows the ring: the space is released to the sender when this is
/// dropped, so drop it promptly.
pub struct Message<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Borrowed {
        rx: &'a mut ShmReceiver,
        rec: Record,
    },
    /// Reassembled from pieces; the buffer goes back to `rx` for reuse in
    /// our `Drop` (so the enum itself has nothing to drop and the drop of a
    /// borrowed message stays short).
    Owned {
        rx: &'a mut ShmReceiver,
        v: ManuallyDrop<Vec<u8>>,
    },
}

impl Message<'_> {
    /// Whether the bytes are read in place from shared memory.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.inner, Inner::Borrowed { .. })
    }

    /// Copies the start of the message into `out`, as much as fits (all of
    /// it when `out` is as long or longer), and returns how many bytes.
    ///
    /// For a message of 16 KiB or more this is faster than
    /// `out.copy_from_slice(&msg)`: it copies in chunks behind a prefetch
    /// of the next bytes, which keeps the lines coming from the sender's
    /// core ([`ShmConnection::recv_into`] copies the same way).
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(conn: &mut ipc_shm::ShmConnection) -> ipc_core::Result<()> {
    /// let mut frame = vec![0u8; 64 << 10];
    /// let msg = conn.recv()?;
    /// let n = msg.copy_to(&mut frame);
    /// assert_eq!(&frame[..n], &msg[..n]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let n = self.len().min(out.len());
        crate::copy::copy_out(&mut out[..n], &self[..n]);
        n
    }
}

impl Deref for Message<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: `rec` is the last record peeked by this receiver and is
            // released only in our Drop; the receiver is mutably borrowed for
            // our lifetime, so nothing else can release or peek meanwhile.
            Inner::Borrowed { rx, rec } => unsafe { rx.cons.payload(rec, 0, rec.len) },
            Inner::Owned { v, .. } => v,
        }
    }
}

impl AsRef<[u8]> for Message<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Message<'_> {
    #[inline]
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Borrowed { rx, rec } => {
                rx.cons.release(rec.advance);
                rx.link.notify();
            }
            Inner::Owned { rx, v } => give_back(rx, v),
        }
    }
}

/// Hands the buffer of a reassembled message back to its receiver.
#[cold]
#[inline(never)]
fn give_back(rx: &mut ShmReceiver, v: &mut ManuallyDrop<Vec<u8>>) {
    // SAFETY: called once, from the message's Drop; `v` is not used again.
    let v = unsafe { ManuallyDrop::take(v) };
    rx.asm.give_back(v);
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len())
            .field("borrowed", &self.is_borrowed())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::{BARRIER_ON_SLEEP, CLIENT, MIN_RING_CAPACITY, SERVER};
    use crate::link::WaitPolicy;
    use crate::region::Region;
    use crate::sync::Ordering;
    use std::time::Duration;

    /// Two connected ends over a heap region, no socket.
    pub(crate) fn heap_pair(cap: usize) -> (ShmConnection, ShmConnection) {
        let spin = Duration::from_micros(5);
        heap_pair_with(cap, [spin, spin], Duration::from_millis(20))
    }

    /// As [`heap_pair`], the client spinning `spins[0]` before it sleeps
    /// and the server `spins[1]`, both checking that the peer lives every
    /// `liveness` while asleep.
    fn heap_pair_with(
        cap: usize,
        spins: [Duration; 2],
        liveness: Duration,
    ) -> (ShmConnection, ShmConnection) {
        heap_pair_busy(cap, spins, liveness, crate::link::BUSY_SPIN)
    }

    /// As [`heap_pair_with`], both ends spinning on for up to `busy_spin`
    /// while the peer announces a message.
    fn heap_pair_busy(
        cap: usize,
        spins: [Duration; 2],
        liveness: Duration,
        busy_spin: Duration,
    ) -> (ShmConnection, ShmConnection) {
        let region = Arc::new(Region::heap(cap));
        let (client, server) = crate::sys::door::Door::pair_in_process().unwrap();
        let end = |me: usize, door| {
            let policy = WaitPolicy {
                spin: spins[me - CLIENT],
                liveness,
                busy_spin,
            };
            let link = Arc::new(Link::in_process(region.clone(), me, door, policy));
            ShmConnection::from_parts(
                Producer::new(region.clone(), me),
                Consumer::new(region.clone(), 1 - me),
                link,
                usize::MAX,
                PeerInfo::default(),
            )
        };
        (end(CLIENT, client), end(SERVER, server))
    }

    #[test]
    fn ping_pong_across_threads_with_sleeping() {
        let (mut a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let n = if cfg!(miri) { 20 } else { 2000 };
        let t = std::thread::spawn(move || {
            for _ in 0..n {
                let m = b.recv().unwrap().to_vec();
                b.send(&m).unwrap();
            }
        });
        for i in 0..n {
            let msg = vec![i as u8; i % 3000];
            a.send(&msg).unwrap();
            let r = a.recv().unwrap();
            assert_eq!(&*r, &msg[..]);
        }
        t.join().unwrap();
    }

    /// Every message wakes a receiver that went to sleep for it, whether
    /// it makes the process-wide barrier (on Linux, a side that spins before
    /// it sleeps does; see `crate::bell`) or not (no spin). The peer's
    /// liveness is checked only every hour, so a lost wake-up leaves the
    /// receiver asleep past its timeout. The sender spins 1 ms, so it has
    /// each reply at once, and waits 0-4 us before its next message, so
    /// that messages arrive while the receiver is announcing its sleep.
    #[test]
    fn no_wake_up_is_lost() {
        let us = Duration::from_micros;
        // Off Linux and Windows a sleep is a 1 ms nap (the sockets carry the
        // wake-ups between processes), so fewer rounds.
        let n: u64 = if cfg!(miri) {
            10
        } else if cfg!(any(target_os = "linux", windows)) {
            20_000
        } else {
            1_000
        };
        for spin in [us(1), us(0)] {
            let (mut a, mut b) = heap_pair_with(
                MIN_RING_CAPACITY,
                [us(1000), spin],
                Duration::from_secs(3600),
            );
            if cfg!(all(target_os = "linux", not(miri))) {
                let flag = b.tx.link.bells.mine().barrier.load(Ordering::Relaxed);
                assert_eq!(flag == BARRIER_ON_SLEEP, !spin.is_zero());
            }
            let timeout = Duration::from_secs(10);
            let echo = std::thread::spawn(move || {
                for i in 0..n {
                    let m = b.recv_timeout(timeout).map(|m| m.to_vec());
                    let m = m.unwrap_or_else(|e| panic!("spin {spin:?}, echo of {i}: {e}"));
                    b.send(&m).unwrap();
                }
            });
            for i in 0..n {
                let pause = Duration::from_nanos((i * 7919) % 4000);
                let t = std::time::Instant::now();
                while t.elapsed() < pause {
                    std::hint::spin_loop();
                }
                let m = [i as u8; 200];
                a.send(&m).unwrap();
                let r = a.recv_timeout(timeout);
                let r = r.unwrap_or_else(|e| panic!("spin {spin:?}, round trip {i}: {e}"));
                assert_eq!(&*r, &m);
            }
            echo.join().unwrap();
        }
    }

    #[test]
    fn closed_peer_is_disconnected_after_draining() {
        let (mut a, b) = heap_pair(MIN_RING_CAPACITY);
        let (mut tx, rx) = b.into_split();
        tx.send(b"last words").unwrap();
        drop(tx);
        drop(rx);
        assert_eq!(&*a.recv().unwrap(), b"last words");
        assert!(matches!(a.recv(), Err(Error::Disconnected)));
        assert!(matches!(a.send(b"x"), Err(Error::Disconnected)));
    }

    #[test]
    fn recv_into_fills_and_reuses_the_buffer() {
        let (a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let (mut tx, _rx) = a.into_split();
        // Whole records and messages in pieces, alternating.
        let sizes = [10usize, 9000, 0, 20_000, 100, 9000];
        let t = std::thread::spawn(move || {
            for (i, &n) in sizes.iter().enumerate() {
                tx.send(&vec![i as u8 + 1; n]).unwrap();
            }
        });
        let mut buf = vec![0xee; 5];
        for (i, &n) in sizes.iter().enumerate() {
            b.recv_into(&mut buf).unwrap();
            assert_eq!(buf.len(), n, "message {i}");
            assert!(buf.iter().all(|&x| x == i as u8 + 1), "message {i}");
        }
        t.join().unwrap();
        // A message in pieces read through `recv` after buffers were handed
        // back still arrives whole.
        let (mut a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let mut buf = Vec::with_capacity(50_000);
        for round in 0..3u8 {
            let msg = vec![round; 12_000];
            let t = std::thread::spawn(move || {
                a.send(&msg).unwrap();
                a
            });
            if round == 1 {
                let m = b.recv().unwrap();
                assert!(!m.is_borrowed());
                assert!(m.len() == 12_000 && m.iter().all(|&x| x == round));
            } else {
                b.recv_into(&mut buf).unwrap();
                assert!(buf.len() == 12_000 && buf.iter().all(|&x| x == round));
            }
            a = t.join().unwrap();
        }
    }

    #[test]
    fn copy_to_copies_what_fits() {
        // Borrowed (in one record) and reassembled (in pieces); natively both
        // above the size that is copied behind a prefetch. Miri copies
        // plainly, and a tenth of the sizes takes it 10 s instead of 130.
        let (cap, lens) = if cfg!(miri) {
            (1 << 14, [4_000usize, 60_000])
        } else {
            (1 << 20, [40_000, 600_000])
        };
        let (mut a, mut b) = heap_pair(cap);
        for (i, len) in lens.into_iter().enumerate() {
            let msg: Vec<u8> = pattern(i, len).collect();
            let sent = msg.clone();
            let t = std::thread::spawn(move || {
                a.send(&sent).unwrap();
                a
            });
            let m = b.recv().unwrap();
            assert_eq!(m.is_borrowed(), i == 0);
            let mut short = vec![0u8; len / 2 + 7];
            assert_eq!(m.copy_to(&mut short), short.len());
            assert!(
                short[..] == msg[..short.len()],
                "message {i}: the part that fits"
            );
            let mut long = vec![0xeeu8; len + 100];
            assert_eq!(m.copy_to(&mut long), len);
            assert!(long[..len] == msg[..], "message {i}: all of it");
            assert!(
                long[len..].iter().all(|&x| x == 0xee),
                "message {i}: past its end"
            );
            drop(m);
            a = t.join().unwrap();
        }
    }

    /// The bytes of message `i` of the in-place tests.
    fn pattern(i: usize, len: usize) -> impl Iterator<Item = u8> {
        (0..len).map(move |k| (i * 31 + k * 7) as u8)
    }

    #[test]
    fn send_with_writes_in_place_across_a_full_ring() {
        let (a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let (mut tx, _rx) = a.into_split();
        let max = tx.max_in_place();
        assert_eq!(max, MIN_RING_CAPACITY / 2 - crate::ring::HDR);
        // Sizes from 0 to the largest, so the ring fills, pads at its end
        // and wraps; the receiver lags so the sender waits for room.
        let n = if cfg!(miri) { 12 } else { 3000 };
        let size = move |i: usize| if i % 5 == 4 { max } else { i * 37 % (max + 1) };
        let t = std::thread::spawn(move || {
            for i in 0..n {
                let len = size(i);
                let got = tx
                    .send_with(len, |buf| {
                        assert_eq!(buf.len(), len);
                        for (d, s) in buf.iter_mut().zip(pattern(i, len)) {
                            *d = s;
                        }
                        i
                    })
                    .unwrap();
                assert_eq!(got, i, "send_with returns what fill returned");
            }
        });
        for i in 0..n {
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let m = b.recv().unwrap();
            assert!(m.is_borrowed());
            assert!(
                m.len() == size(i) && m.iter().copied().eq(pattern(i, size(i))),
                "message {i}"
            );
        }
        t.join().unwrap();
    }

    #[test]
    fn send_with_refuses_a_message_larger_than_in_place_and_sends_nothing() {
        let (mut a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let max = a.max_in_place();
        let mut called = false;
        let err = a.send_with(max + 1, |_| called = true).unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { len, max: m } if len == max + 1 && m == max),
            "{err}"
        );
        assert!(!called, "fill is not called for a refused message");
        a.send_with(3, |buf| buf.copy_from_slice(b"abc")).unwrap();
        assert_eq!(&*b.recv().unwrap(), b"abc");
    }

    #[test]
    fn a_panic_in_send_with_sends_nothing() {
        let (mut a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.send_with(100, |buf| {
                buf.fill(0xee);
                panic!("fill gave up");
            })
        }));
        assert!(r.is_err());
        assert!(b.try_recv().unwrap().is_none(), "nothing was published");
        a.send_with(5, |buf| buf.copy_from_slice(b"after")).unwrap();
        assert_eq!(&*b.recv().unwrap(), b"after");
    }

    #[test]
    fn send_with_to_a_closed_peer_is_disconnected() {
        let (mut a, b) = heap_pair(MIN_RING_CAPACITY);
        drop(b);
        let mut called = false;
        assert!(matches!(
            a.send_with(10, |_| called = true),
            Err(Error::Disconnected)
        ));
        assert!(!called);
    }

    #[test]
    fn recv_timeout_gives_up_in_time_and_the_connection_stays_usable() {
        let (mut a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let wait = Duration::from_millis(30);
        let t0 = std::time::Instant::now();
        let err = b.recv_timeout(wait).map(|m| m.len()).unwrap_err();
        let took = t0.elapsed();
        assert!(matches!(err, Error::Timeout(d) if d == wait), "{err}");
        assert!(took >= wait, "gave up after {took:?}, before {wait:?}");
        // A zero timeout looks without waiting.
        assert!(matches!(
            b.recv_timeout(Duration::ZERO).map(|m| m.len()),
            Err(Error::Timeout(_))
        ));
        // What arrives afterwards is received, also with a zero timeout.
        a.send(b"first").unwrap();
        a.send(b"second").unwrap();
        assert_eq!(&*b.recv_timeout(Duration::ZERO).unwrap(), b"first");
        assert_eq!(
            &*b.recv_timeout(Duration::from_secs(60)).unwrap(),
            b"second"
        );
    }

    #[test]
    fn recv_timeout_wakes_for_a_message_sent_while_it_sleeps() {
        let (a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let (mut tx, _rx) = a.into_split();
        let t = std::thread::spawn(move || {
            // Past the 5 us spin: the receiver is asleep on its doorbell.
            std::thread::sleep(Duration::from_millis(if cfg!(miri) { 5 } else { 50 }));
            tx.send(b"late").unwrap();
            tx
        });
        let long = Duration::from_secs(600);
        let m = b.recv_timeout(long).unwrap();
        assert_eq!(&*m, b"late");
        drop(m);
        let tx = t.join().unwrap();
        // The peer closing ends a timed wait too, as Disconnected.
        drop(tx);
        assert!(matches!(
            b.recv_timeout(long).map(|m| m.len()),
            Err(Error::Disconnected)
        ));
    }

    /// A receiver with a spin of `spin` on side `CLIENT` of a 4 KiB heap
    /// ring, and the bare parts of side `SERVER` for a test to drive piece
    /// by piece: its producer, consumer and link.
    fn receiver_and_bare_peer(spin: Duration) -> (ShmConnection, Producer, Consumer, Link) {
        receiver_and_bare_peer_with(spin, crate::link::BUSY_SPIN)
    }

    /// As [`receiver_and_bare_peer`], the receiver spinning on for up to
    /// `busy_spin` while the peer announces a message.
    fn receiver_and_bare_peer_with(
        spin: Duration,
        busy_spin: Duration,
    ) -> (ShmConnection, Producer, Consumer, Link) {
        let region = Arc::new(Region::heap(MIN_RING_CAPACITY));
        let policy = WaitPolicy {
            spin,
            liveness: Duration::from_millis(20),
            busy_spin,
        };
        let (client, server) = crate::sys::door::Door::pair_in_process().unwrap();
        let link = Arc::new(Link::in_process(region.clone(), CLIENT, client, policy));
        let conn = ShmConnection::from_parts(
            Producer::new(region.clone(), CLIENT),
            Consumer::new(region.clone(), SERVER),
            link,
            usize::MAX,
            PeerInfo::default(),
        );
        let peer = Link::in_process(region.clone(), SERVER, server, policy);
        (
            conn,
            Producer::new(region.clone(), SERVER),
            Consumer::new(region, CLIENT),
            peer,
        )
    }

    /// Whether side `CLIENT` of the link's region ever announced a sleep: a
    /// sleeper sets its `waiting` bits, and the peer's next notification
    /// clears them and bumps `seq`.
    fn client_slept(peer: &Link) -> bool {
        let bell = peer.bells.peer();
        bell.seq.load(Ordering::Acquire) != 0 || bell.waiting.load(Ordering::Acquire) != 0
    }

    /// One message of `PIECES` pieces (of up to half the 4 KiB ring) moved
    /// in steps `GAP` apart: each gap is far shorter than the spin, the
    /// whole message longer.
    const PIECES: usize = 40;
    const GAP: Duration = Duration::from_millis(40);
    const LONG_SPIN: Duration = Duration::from_millis(400);

    /// Checks that the test's message took longer than one spin.
    fn check_steps(steps: u32) {
        assert!(
            GAP * steps > LONG_SPIN,
            "the message moved in {steps} steps of {GAP:?}, within one spin"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "sleeps for whole seconds of real time")]
    fn a_receiver_keeps_spinning_while_pieces_keep_coming() {
        let (mut conn, mut prod, _cons, peer) = receiver_and_bare_peer(LONG_SPIN);
        // Pieces of up to half the 4 KiB ring: one fits at a time.
        let msg: Vec<u8> = (0..PIECES * 2000).map(|i| i as u8).collect();
        let t = std::thread::spawn(move || {
            let mut sent = 0;
            let mut steps = 0;
            loop {
                let done = prod.try_send_message(&msg, &mut sent).unwrap();
                peer.notify();
                if done {
                    return (steps, peer);
                }
                steps += 1;
                std::thread::sleep(GAP);
            }
        });
        let got = conn.recv().unwrap().to_vec();
        let (steps, peer) = t.join().unwrap();
        assert_eq!(got, (0..PIECES * 2000).map(|i| i as u8).collect::<Vec<_>>());
        check_steps(steps);
        assert!(
            !client_slept(&peer),
            "the receiver slept while pieces came every {GAP:?}, within its spin of {LONG_SPIN:?}"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "sleeps for whole seconds of real time")]
    fn a_sender_keeps_spinning_while_the_receiver_takes_pieces() {
        let (mut conn, _prod, mut cons, peer) = receiver_and_bare_peer(LONG_SPIN);
        let msg: Vec<u8> = (0..PIECES * 2000).map(|i| (i * 7) as u8).collect();
        let expect = msg.clone();
        let t = std::thread::spawn(move || {
            let mut asm = Assembly::default();
            let mut steps = 0;
            loop {
                std::thread::sleep(GAP);
                let got = cons.try_recv(&mut asm, usize::MAX).unwrap();
                peer.notify();
                if let Recv::Owned(v) = got {
                    return (v, steps, peer);
                }
                steps += 1;
            }
        });
        conn.send(&msg).unwrap();
        let (got, steps, peer) = t.join().unwrap();
        assert_eq!(got, expect);
        check_steps(steps);
        assert!(
            !client_slept(&peer),
            "the sender slept while room came every {GAP:?}, within its spin of {LONG_SPIN:?}"
        );
    }

    /// How long the bare peer of the announcement tests takes to copy its
    /// message in: many times the receiver's spin.
    const COPY: Duration = Duration::from_millis(200);

    /// The bare peer announces a message (if `announce`), takes [`COPY`] to
    /// write it and sends it, to a receiver that spins 5 ms and up to
    /// `busy_spin` more while the peer is busy; returns whether the
    /// receiver slept.
    fn receive_a_slow_message(announce: bool, busy_spin: Duration) -> bool {
        let (mut conn, mut prod, _cons, peer) =
            receiver_and_bare_peer_with(Duration::from_millis(5), busy_spin);
        let msg = vec![7u8; 1000];
        if announce {
            peer.bells
                .announce_writing(prod.position() + msg.len() as u64);
        }
        let t = std::thread::spawn(move || {
            std::thread::sleep(COPY);
            assert!(prod.try_send_fast(&msg));
            peer.notify();
            peer
        });
        assert_eq!(conn.recv().unwrap().len(), 1000);
        client_slept(&t.join().unwrap())
    }

    #[test]
    #[cfg_attr(miri, ignore = "sleeps for a fraction of a second of real time")]
    fn a_receiver_spins_on_while_the_peer_copies_in_an_announced_message() {
        assert!(
            !receive_a_slow_message(true, Duration::from_secs(30)),
            "the receiver slept while the peer copied in a message it had announced"
        );
        // Not announced, the same message finds the receiver asleep.
        assert!(receive_a_slow_message(false, Duration::from_secs(30)));
        // Announced but not there within the busy spin (a peer killed while
        // it copies, say): the receiver sleeps after it.
        assert!(receive_a_slow_message(true, Duration::from_millis(20)));
    }

    /// The CPU time this process has used.
    #[cfg(target_os = "linux")]
    fn cpu_time() -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// A pair over a 1 MiB ring whose server end (spinning `spins[1]`)
    /// waits in `recv` on a thread of its own and is asleep when this
    /// returns. No liveness checks: its sleep ends only when it is rung. The
    /// thread returns the length of what it received.
    fn receiver_asleep(
        spins: [Duration; 2],
    ) -> (
        ShmConnection,
        std::thread::JoinHandle<(usize, ShmConnection)>,
    ) {
        let hour = Duration::from_secs(3600);
        let (a, mut b) = heap_pair_busy(1 << 20, spins, hour, hour);
        let t = std::thread::spawn(move || {
            let n = b.recv().unwrap().len();
            (n, b)
        });
        let asleep_by = std::time::Instant::now() + Duration::from_secs(30);
        while a.tx.link.bells.peer().waiting.load(Ordering::Acquire) == 0 {
            assert!(
                std::time::Instant::now() < asleep_by,
                "the receiver never slept"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        (a, t)
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "sleeps for a fraction of a second of real time")]
    fn an_announcement_wakes_a_receiver_that_then_spins_for_the_message() {
        let spin = Duration::from_millis(1);
        let (mut a, t) = receiver_asleep([spin, spin]);
        let link = a.tx.link.clone();
        let receiver = || link.bells.peer();
        let (woken, spent) = a
            .send_with(ANNOUNCE_MIN, |buf| {
                // Rung by the announcement, before the message is in.
                let woken = receiver().seq.load(Ordering::Acquire);
                let before = cpu_time();
                std::thread::sleep(COPY);
                buf.fill(9);
                (woken, cpu_time() - before)
            })
            .unwrap();
        let (n, _b) = t.join().unwrap();
        assert_eq!(n, ANNOUNCE_MIN);
        assert_eq!(woken, 1, "the announcement did not wake the receiver");
        assert!(
            spent > COPY / 10,
            "the receiver used {spent:?} of CPU while the message was copied in for {COPY:?}: it slept"
        );
    }

    /// A receiver that does not spin would wake to the announcement, find
    /// nothing and sleep again: it is rung once the message is in, not
    /// before.
    #[test]
    #[cfg_attr(miri, ignore = "sleeps for a fraction of a second of real time")]
    fn a_receiver_that_does_not_spin_is_not_rung_early() {
        let (mut a, t) = receiver_asleep([Duration::from_millis(1), Duration::ZERO]);
        let link = a.tx.link.clone();
        let receiver = || link.bells.peer();
        let rung = a
            .send_with(ANNOUNCE_MIN, |buf| {
                std::thread::sleep(Duration::from_millis(50));
                buf.fill(9);
                receiver().seq.load(Ordering::Acquire)
            })
            .unwrap();
        let (n, _b) = t.join().unwrap();
        assert_eq!(n, ANNOUNCE_MIN);
        assert_eq!(rung, 0, "the receiver was rung before the message was in");
        assert_eq!(
            receiver().seq.load(Ordering::Acquire),
            1,
            "rung once, when the message was in"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "three messages of 256 KiB: minutes under Miri")]
    fn large_messages_are_announced_before_they_are_copied_in() {
        let (mut a, mut b) = heap_pair(1 << 20);
        let announced = |a: &ShmConnection| a.tx.link.bells.mine().writing.load(Ordering::Relaxed);
        a.send(&[1; 100]).unwrap();
        assert_eq!(announced(&a), 0, "a small message is not announced");
        let at = a.tx.prod.position();
        a.send(&vec![2; ANNOUNCE_MIN]).unwrap();
        assert_eq!(announced(&a), at + ANNOUNCE_MIN as u64);
        let at = a.tx.prod.position();
        a.send_with(ANNOUNCE_MIN + 1, |buf| buf.fill(3)).unwrap();
        assert_eq!(announced(&a), at + ANNOUNCE_MIN as u64 + 1);
        for (fill, len) in [(1u8, 100), (2, ANNOUNCE_MIN), (3, ANNOUNCE_MIN + 1)] {
            let m = b.recv().unwrap();
            assert_eq!(m.len(), len);
            assert!(m.iter().all(|&x| x == fill));
        }
    }

    #[test]
    fn large_messages_stream_through_a_small_ring() {
        let (a, mut b) = heap_pair(MIN_RING_CAPACITY);
        let (mut tx, _rx) = a.into_split();
        let sizes = [100_000usize, 3, 50_000, 0, 4096];
        let t = std::thread::spawn(move || {
            for (i, &n) in sizes.iter().enumerate() {
                tx.send(&vec![i as u8; n]).unwrap();
            }
        });
        for (i, &n) in sizes.iter().enumerate() {
            let m = b.recv().unwrap();
            assert_eq!(m.len(), n);
            assert!(m.iter().all(|&x| x == i as u8));
        }
        t.join().unwrap();
    }
}
