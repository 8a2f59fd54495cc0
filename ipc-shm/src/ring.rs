//! One single-producer/single-consumer byte ring of length-prefixed records.
//!
//! The producer owns `head`, the consumer owns `tail`; each keeps its own
//! copy and never trusts the value in shared memory for its own counter. A
//! record is a 16-byte header followed by `len` bytes padded to 16. The
//! header's first 8 bytes are one atomic word, `kind | len << 32` (as bytes:
//! `kind: u32`, `len: u32`, little endian); the next 8 are `total: u64`. A
//! record never wraps: when it does not fit before the end of the data
//! area, the producer fills the rest with a `PAD` record and starts again
//! at offset 0, so a whole message is one contiguous slice that the reader
//! can borrow without copying. Messages larger than half the ring travel as
//! a `FIRST` record (carrying the total length), `MIDDLE` records and a
//! `LAST` record.
//!
//! The producer also pads early: past the first [`HOT_WINDOW`] bytes of the
//! area, when it finds that the consumer has released everything, it pads
//! to the end and goes on at offset 0 (checked once a window, so a stream
//! that keeps the ring busy runs through all of it). A conversation of
//! small messages then keeps to a few lines and one page that stay in both
//! caches, instead of landing each message on lines, and every 4 KiB on a
//! page, last touched a lap ago. Records larger than the window never wrap
//! early: bulk data moves faster through the whole ring, where the producer
//! writes lines that left the consumer's cache long ago. The consumer sees
//! ordinary padding.
//!
//! # Publishing: the header word
//!
//! The producer writes a record's payload and `total`, then stores its
//! header word with `Release`. The reader loads the word at its tail with
//! `Acquire`: a non-zero word is the record's publication, zero means
//! "nothing here yet". A waiting reader therefore spins on the line that
//! will carry the record itself (all of a small message's header and the
//! start of its payload), and a message costs it one cache-line transfer
//! rather than the head's line followed by the record's.
//!
//! Stale bytes must never pass for a record: the slot at the tail may hold
//! the header or payload of an earlier lap, and payload is any bytes at all
//! (possibly chosen by a third party whose data a user forwards), so a
//! forged header there would inject a message. The producer prevents it:
//! before it stores the word of a record at position `p` that takes `a`
//! bytes (padding included), it stores zero into the word at `p + a`, the
//! next record's slot (offset 0 of the next lap when the record or padding
//! reaches the end of the area). A reader that has acquired the word at `p`
//! happens-after that zero store, so its later load at `p + a` returns the
//! zero or a store after it in the word's modification order (the next
//! record's word), never anything written there before (write-read
//! coherence). The first slot, position 0, is zero in a fresh region (a new
//! memfd, shared-memory object, pagefile section or heap buffer is all
//! zeroes), so by induction every non-zero word the reader takes is the
//! word of the record the producer wrote at that position. The zero store
//! needs the slot to be free: the producer writes a record only when the
//! ring has one header's worth of free space beyond it
//! (`p + a + 16 <= tail + capacity`).
//!
//! The producer still stores `head` (`Release`) after its records. It is
//! what the general path reads when the word at the tail is zero (the async
//! API's readiness, the re-check before sleeping) and what the consumer
//! checks records against; it may lag behind the words (a record is visible
//! as soon as its word is stored), so the consumer's tail may be ahead of
//! the head last stored. The blocking API's fast path and its spinning read
//! the word only; its first look at an empty ring, before it spins, takes
//! the general path and so reads the head too, which measured faster (see
//! `Link::wait_until`).
//!
//! # Memory model
//!
//! The same bytes are a header word (accessed atomically) in one lap and
//! payload or `total` (copied plainly) in another; every such pair of
//! accesses is ordered by happens-before, so none races:
//! - the producer's plain writes and its atomic stores are sequenced in
//!   one thread;
//! - the consumer's loads of a word, and its plain reads of the record's
//!   payload and `total`, happen after the producer's plain writes of those
//!   bytes in earlier laps (the `Acquire` load of the record's word or of
//!   the word before it, which follow those writes in the producer);
//! - the producer writes bytes, plainly or atomically (the zero store),
//!   only below the tail plus the capacity, after an `Acquire` load of that
//!   tail, which the consumer stored (`Release`) after its last access to
//!   them.
//!
//! The producer also zeroes a record's padding, so its plain writes cover
//! whole header words of earlier laps (and no stale bytes travel on).
//!
//! # Checks
//!
//! Everything read from shared memory is checked before use. A header
//! word's kind must be known; its length must keep the record inside the
//! data area without wrapping (`16 + pad16(len) <= capacity - offset`) and
//! a data record within half the ring; padding must reach exactly the end
//! of the area; pieces must come in sequence and add up to the total. The
//! head must move forward, stay within one ring of the tail and on the
//! 16-byte grid; a head past the tail with no word at the tail is corrupt,
//! and while the head last read is past the tail a record must end at or
//! before it. The producer checks the consumer's tail the same way: it must
//! move forward, on the grid, and not beyond the records written. A
//! violation is [`Error::Corrupt`].

use std::ptr::NonNull;
use std::sync::Arc;

use ipc_core::{Error, Result};

use crate::layout::RingCtl;
use crate::region::Region;
use crate::sync::{AtomicU64, Ordering};

/// Size of a record header.
pub(crate) const HDR: usize = 16;

/// [`HDR`] as a position.
const HDR64: u64 = HDR as u64;

/// Bytes of a record the consumer asks the cache for in one go when it
/// finds the record (header and the start of the payload).
const PREFETCH: usize = 256;

/// Bytes at the tail a waiting async reader keeps asking for (a small
/// message's record; see [`Consumer::watch`]).
const WATCH: u64 = 128;

/// Bytes at the start of the data area that a conversation of small
/// messages keeps to: once the producer is past them and the consumer has
/// released everything, it pads to the end and starts again at offset 0
/// (for a record that fits in the window; larger ones run through the ring).
/// Those lines then stay in both caches, instead of each message landing on
/// lines last touched a whole lap ago. Rings smaller than four windows run
/// through their whole area.
#[cfg(not(loom))]
pub(crate) const HOT_WINDOW: u64 = 4096;
/// A quarter of the loom model's 4 KiB rings, so that they wrap early too.
#[cfg(loom)]
pub(crate) const HOT_WINDOW: u64 = 1024;

/// Largest piece of a message sent in pieces (one larger than half the
/// ring). The consumer copies a piece while the producer writes the next,
/// so the pieces are small enough that neither side waits long for the
/// other: a wait longer than the blocking spin ends in a sleep, and a
/// wake-up costs more than a piece. Half-ring pieces (2 MiB in the default
/// ring) took 50 us each to write, and a stream of 4 MiB messages slept on
/// most of them.
const PIECE_MAX: usize = 256 << 10;

/// Record kinds.
pub(crate) mod kind {
    /// Filler up to the end of the data area.
    pub const PAD: u32 = 0x5041_4401;
    /// A whole message (or, in the stream API, a run of bytes).
    pub const WHOLE: u32 = 0x5748_4c01;
    /// The first piece of a message larger than half the ring.
    pub const FIRST: u32 = 0x4649_5201;
    /// A piece in the middle.
    pub const MIDDLE: u32 = 0x4d49_4401;
    /// The last piece.
    pub const LAST: u32 = 0x4c41_5301;
}

/// Rounds up to a multiple of 16.
#[inline]
pub(crate) fn pad16(n: u64) -> u64 {
    (n + 15) & !15
}

/// Bytes a record with `n` payload bytes takes.
#[inline]
fn record_len(n: usize) -> u64 {
    HDR64 + pad16(n as u64)
}

/// The header word of a record: `kind | len << 32`, never zero (no kind is
/// zero).
#[inline]
fn header_word(kind: u32, len: u32) -> u64 {
    u64::from(kind) | u64::from(len) << 32
}

#[cold]
#[inline(never)]
fn corrupt(what: impl Into<String>) -> Error {
    Error::Corrupt(what.into())
}

/// Formats a corruption report out of the hot path (the arguments are only
/// built on the error branch, which the call marks as unlikely).
#[cold]
#[inline(never)]
fn corrupt_fmt(what: std::fmt::Arguments<'_>) -> Error {
    Error::Corrupt(what.to_string())
}

/// Which ring of a region, and its geometry.
#[derive(Debug, Clone)]
struct RingRef {
    /// Keeps the memory behind `ctl` and `data` alive.
    _region: Arc<Region>,
    index: usize,
    /// `&region.ctl().rings[index]`, resolved once.
    ctl: NonNull<RingCtl>,
    data: *mut u8,
    /// Bytes in the data area: a power of two (a region invariant).
    cap: u64,
}

// SAFETY: `ctl` and `data` point into `_region`, which is Send + Sync and kept
// alive by the Arc; `ctl` is only read through `&RingCtl` (atomics), `data`
// only under the ring protocol.
unsafe impl Send for RingRef {}
// SAFETY: as above.
unsafe impl Sync for RingRef {}

impl RingRef {
    fn new(region: Arc<Region>, index: usize) -> RingRef {
        let data = region.data(index);
        let cap = region.capacity() as u64;
        debug_assert!(cap.is_power_of_two());
        let ctl = NonNull::from(&region.ctl().rings[index]);
        RingRef {
            _region: region,
            index,
            ctl,
            data,
            cap,
        }
    }

    #[inline]
    fn ctl(&self) -> &RingCtl {
        // SAFETY: `ctl` points into the control block of `_region`, which
        // lives as long as `self` (the Arc), and holds only atomics.
        unsafe { self.ctl.as_ref() }
    }

    /// Offset in the data area of byte position `pos` (`pos % cap`; `cap`
    /// is a power of two, so no division).
    #[inline]
    fn offset(&self, pos: u64) -> u64 {
        pos & (self.cap - 1)
    }

    /// The header word of the record slot at offset `off` (a multiple of 16
    /// inside the data area).
    #[cfg(not(loom))]
    #[inline]
    fn word(&self, off: u64) -> &AtomicU64 {
        debug_assert!(off % HDR64 == 0 && off < self.cap);
        // Plain accesses to the same bytes (payload and `total` of other laps)
        // are ordered against the atomic ones by happens-before (module docs,
        // "Memory model"), and the word is only ever accessed as a whole u64.
        // SAFETY: off + 8 <= cap: in the data area, alive as long as `self`
        // (the Arc), and 8-aligned (page-aligned area, `off` a multiple of 16).
        unsafe { AtomicU64::from_ptr(self.data.add(off as usize).cast::<u64>()) }
    }

    /// The header word of the record slot at offset `off`: kept beside the
    /// data area in the loom model, whose atomics cannot live in raw memory.
    #[cfg(loom)]
    #[inline]
    fn word(&self, off: u64) -> &AtomicU64 {
        debug_assert!(off % HDR64 == 0 && off < self.cap);
        self._region.loom_word(self.index, off as usize)
    }
}

/// A checked record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub kind: u32,
    /// Payload bytes.
    pub len: usize,
    /// Total length of the message (FIRST, WHOLE); 0 or ignored otherwise.
    pub total: u64,
    /// Offset of the payload in the data area.
    pub off: usize,
    /// Bytes the record takes in the ring.
    pub advance: u64,
}

/// A record header as read, unchecked, with where it lies.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// Offset of the header in the data area.
    off: u64,
    /// Bytes from the header to the end of the data area.
    to_end: u64,
    /// Bytes from the header to the head as last read, when that head is
    /// past the tail (the record must end there or before); `None` when no
    /// such head is known (the head may lag behind the header words).
    avail: Option<u64>,
    kind: u32,
    len: u64,
    total: u64,
}

/// The writing end of a ring.
#[derive(Debug)]
pub(crate) struct Producer {
    ring: RingRef,
    /// Our head: every record below it is written and its header word
    /// stored (so it may already be consumed).
    head: u64,
    /// Head as last stored to shared memory.
    published: u64,
    /// The consumer's tail as last read and checked.
    tail: u64,
    /// Where to try next to wrap early (see [`HOT_WINDOW`]).
    wrap_after: u64,
}

impl Producer {
    pub(crate) fn new(region: Arc<Region>, index: usize) -> Producer {
        let ring = RingRef::new(region, index);
        let wrap_after = if ring.cap >= 4 * HOT_WINDOW {
            HOT_WINDOW
        } else {
            u64::MAX
        };
        Producer {
            ring,
            head: 0,
            published: 0,
            tail: 0,
            wrap_after,
        }
    }

    /// Our head: bytes written so far (published or not).
    #[inline]
    pub(crate) fn position(&self) -> u64 {
        self.head
    }

    /// Bytes per ring.
    pub(crate) fn capacity(&self) -> usize {
        self.ring.cap as usize
    }

    /// Largest payload sent as one record: half the ring, so a record, the
    /// padding before it and the header slot after it always fit in an
    /// empty ring.
    #[inline]
    pub(crate) fn max_record_payload(&self) -> usize {
        self.ring.cap as usize / 2 - HDR
    }

    /// Reads the consumer's tail and checks it.
    #[inline]
    fn refresh_tail(&mut self) -> Result<()> {
        // SYNC POINT with Consumer::release (tail store, Release): the consumer
        // has finished reading every byte below this tail, so we may overwrite
        // them (plainly, or with the zero store of `commit`).
        let t = self.ring.ctl().tail.0.load(Ordering::Acquire);
        // A record is consumable once its word is stored, before the head
        // is: the tail may pass `published`, never `head`.
        if t < self.tail || t > self.head || t % HDR64 != 0 {
            return Err(corrupt_fmt(format_args!(
                "ring {} tail moved to {t} (was {}, head {})",
                self.ring.index, self.tail, self.head
            )));
        }
        self.tail = t;
        Ok(())
    }

    /// Whether the consumer has released space since we last looked.
    pub(crate) fn tail_moved(&mut self) -> Result<bool> {
        let old = self.tail;
        self.refresh_tail()?;
        Ok(self.tail != old)
    }

    /// Whether the consumer has released everything (re-reads the tail).
    #[cfg(test)]
    pub(crate) fn is_drained(&mut self) -> Result<bool> {
        self.refresh_tail()?;
        Ok(self.tail == self.published)
    }

    /// Room at `head` for one record with between `min` and `want` payload
    /// bytes (`1 <= min <= want`, `record_len(min) <= cap / 2`) and the
    /// header slot after it, writing a PAD record first when the record
    /// does not fit before the end of the data area. Returns the payload
    /// bytes that fit, or `None` when the ring is too full.
    #[inline]
    fn reserve(&mut self, min: usize, want: usize) -> Result<Option<usize>> {
        debug_assert!(min <= want && record_len(min) <= self.ring.cap / 2);
        if self.head >= self.wrap_after {
            self.wrap_early(record_len(want))?;
        }
        let mut refreshed = false;
        loop {
            let free = self.ring.cap - (self.head - self.tail);
            let off = self.ring.offset(self.head);
            let to_end = self.ring.cap - off;
            let need = record_len(min);
            if to_end >= need {
                if free >= need + HDR64 {
                    let room = (free - HDR64).min(to_end) - HDR64;
                    return Ok(Some(want.min(room as usize)));
                }
            } else if free >= to_end + need + HDR64 {
                self.commit(off, kind::PAD, (to_end - HDR64) as u32, 0, to_end);
                continue;
            }
            if refreshed {
                return Ok(None);
            }
            self.refresh_tail()?;
            refreshed = true;
        }
    }

    /// Past the first [`HOT_WINDOW`] bytes of the data area: when the next
    /// record (of at most `need` bytes) fits in a window and the consumer
    /// has released everything, pads to the end so that the record goes at
    /// the start. Looks again a window later either way (at most one read of
    /// the tail per window, so a stream that keeps the ring busy pays next
    /// to nothing).
    #[cold]
    #[inline(never)]
    fn wrap_early(&mut self, need: u64) -> Result<()> {
        let off = self.ring.offset(self.head);
        if off < HOT_WINDOW {
            // Not this lap's window yet (the ring wrapped on its own).
            self.wrap_after = self.head - off + HOT_WINDOW;
            return Ok(());
        }
        if need > HOT_WINDOW {
            // Bulk data: it gains nothing from a window it does not fit in,
            // and a stream of it kept to the start would land each record
            // on lines the consumer has just read, and the consumer on lines
            // still in the producer's cache. Through the whole ring, the
            // producer writes lines a lap old instead.
            self.wrap_after = self.head + HOT_WINDOW;
            return Ok(());
        }
        self.refresh_tail()?;
        // All released: the padding and the record fit in what is free
        // (`off` bytes from the start, and the slot after the padding).
        if self.tail == self.head && need + HDR64 <= off {
            let to_end = self.ring.cap - off;
            self.commit(off, kind::PAD, (to_end - HDR64) as u32, 0, to_end);
        }
        self.wrap_after = self.head + HOT_WINDOW;
        Ok(())
    }

    /// Completes the record at offset `off` (= our head), whose payload is
    /// written, and makes it visible: writes `total`, zeroes the header word
    /// of the next slot, stores the record's own word. The caller has made
    /// sure that `advance` bytes and the next slot are free.
    #[inline]
    fn commit(&mut self, off: u64, kind: u32, len: u32, total: u64, advance: u64) {
        debug_assert!(off + advance <= self.ring.cap);
        debug_assert!(self.head + advance + HDR64 <= self.tail + self.ring.cap);
        let total = total.to_le_bytes();
        // The bytes lie in [head, tail + cap), which the consumer has released
        // (checked tail) and will not read before the word below is stored.
        // SAFETY: off + HDR <= off + advance <= cap: the 8 bytes at off + 8
        // are in the data area and owned by the producer (above).
        unsafe {
            std::ptr::copy_nonoverlapping(total.as_ptr(), self.ring.data.add(off as usize + 8), 8)
        }
        let next = self.ring.offset(self.head + advance);
        // SYNC POINT with the consumer's Acquire load of this record's word
        // (Consumer::word_at_tail): a consumer that takes this record then
        // finds this zero, or the next record's word stored after it, in the
        // next slot, never older bytes. The slot [head + advance, +16) is
        // below tail + cap (the caller reserved it), so the consumer's last
        // accesses to it happened before its tail store we acquired.
        self.ring.word(next).store(0, Ordering::Relaxed);
        // SYNC POINT with Consumer::word_at_tail (word load, Acquire): the
        // payload, `total` and the zero above are written before a consumer
        // can see the word.
        self.ring
            .word(off)
            .store(header_word(kind, len), Ordering::Release);
        self.head += advance;
    }

    /// Appends a record; `reserve` must have granted `bytes.len()` bytes.
    #[inline]
    fn append(&mut self, kind: u32, total: u64, bytes: &[u8]) {
        let len = bytes.len();
        let dst = self.payload_slot(len);
        // SAFETY: payload_slot returned the start of `len` bytes inside the
        // data area that only we write until `commit` publishes them (see
        // there); `bytes` is our caller's, so the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, len) }
        let off = self.ring.offset(self.head);
        self.commit(off, kind, len as u32, total, record_len(len));
    }

    /// Prepares the record at the head for `len` payload bytes (`reserve`
    /// must have granted them) and returns where the payload goes: the
    /// bytes `[ptr, ptr + len)` are inside the data area, in
    /// `[head, tail + cap)`, released by the consumer (checked tail) and not
    /// read by it before [`Self::commit`] stores the record's word.
    #[inline]
    fn payload_slot(&mut self, len: usize) -> *mut u8 {
        let off = self.ring.offset(self.head);
        debug_assert!(off as usize + HDR + len <= self.ring.cap as usize);
        if len % HDR != 0 {
            // Zeroes the record's last 16 bytes, then the payload goes over
            // their start: the padding carries no stale bytes of an earlier
            // lap, and the plain writes cover whole header words of earlier
            // laps (a write over part of a word that was last written
            // atomically makes Miri's weak-memory emulation fail; the Rust
            // memory model allows it).
            let last = off as usize + HDR + (len & !(HDR - 1));
            // The bytes are in [head, tail + cap), released by the consumer
            // (checked tail) and not read by it before `commit` stores the word.
            // SAFETY: last + HDR = off + HDR + pad16(len) <= cap: inside the
            // record reserve granted, owned by the producer (above).
            unsafe {
                self.ring
                    .data
                    .add(last)
                    .cast::<[u8; HDR]>()
                    .write_unaligned([0; HDR])
            }
        }
        // SAFETY: reserve granted record_len(len) bytes at `off`, so
        // off + HDR + len <= cap: the pointer stays inside the data area.
        unsafe { self.ring.data.add(off as usize + HDR) }
    }

    /// Stores the head after the appended records (their words are stored
    /// already): for the consumer's general path and the peer's wake-up
    /// checks.
    #[inline]
    pub(crate) fn publish(&mut self) {
        if self.head != self.published {
            // SYNC POINT with Consumer::refresh_head (head load, Acquire): the
            // word of every record below this head is stored before the
            // consumer can see the new head.
            self.ring.ctl().head.0.store(self.head, Ordering::Release);
            self.published = self.head;
        }
    }

    /// Writes up to `bytes.len()` bytes as one record (a run of a byte
    /// stream); returns how many, or `None` when the ring is full. Publishes.
    #[inline]
    pub(crate) fn try_write_stream(&mut self, bytes: &[u8]) -> Result<Option<usize>> {
        if bytes.is_empty() {
            return Ok(Some(0));
        }
        let want = bytes.len().min(self.max_record_payload());
        let min = want.min(256);
        let Some(n) = self.reserve(min, want)? else {
            return Ok(None);
        };
        self.append(kind::WHOLE, n as u64, &bytes[..n]);
        self.publish();
        Ok(Some(n))
    }

    /// Writes `msg` as one whole record and publishes it if it fits before
    /// the end of the data area in the space known to be free (no shared
    /// memory is read); `false` otherwise, for [`Self::try_send_message`]
    /// to handle. The fast path of the message API.
    #[inline]
    pub(crate) fn try_send_fast(&mut self, msg: &[u8]) -> bool {
        if !self.fits_at_once(msg.len()) {
            return false;
        }
        self.append(kind::WHOLE, msg.len() as u64, msg);
        self.publish();
        true
    }

    /// Whether a whole record of `len` payload bytes fits at the head in
    /// the space known to be free, with no padding or early wrap first (no
    /// shared memory is read).
    #[inline]
    fn fits_at_once(&self, len: usize) -> bool {
        if len > self.max_record_payload() {
            return false;
        }
        let need = record_len(len.max(1));
        let free = self.ring.cap - (self.head - self.tail);
        let to_end = self.ring.cap - self.ring.offset(self.head);
        need + HDR64 <= free && need <= to_end && self.head < self.wrap_after
    }

    /// Makes room at the head for a whole record of `len` payload bytes (at
    /// most [`Self::max_record_payload`]), padding first if it does not fit
    /// before the end; returns where its payload goes, or `None` when the
    /// ring is too full. The caller writes the payload there and then calls
    /// [`Self::commit_in_place`] with the same `len`, with no other call on
    /// this producer in between; until then the consumer sees nothing of it.
    /// The bytes hold whatever was there before (earlier records, zeroes).
    #[inline]
    pub(crate) fn try_reserve_in_place(&mut self, len: usize) -> Result<Option<*mut u8>> {
        debug_assert!(len <= self.max_record_payload());
        if !self.fits_at_once(len) && self.reserve(len.max(1), len.max(1))?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.payload_slot(len)))
    }

    /// Publishes the whole record of `len` bytes whose payload the caller
    /// wrote at the place [`Self::try_reserve_in_place`] returned.
    #[inline]
    pub(crate) fn commit_in_place(&mut self, len: usize) {
        let off = self.ring.offset(self.head);
        self.commit(off, kind::WHOLE, len as u32, len as u64, record_len(len));
        self.publish();
    }

    /// Pushes as much of message `msg` as fits, continuing from `*sent` bytes
    /// already sent; returns `true` once all of it is in the ring. Messages up
    /// to [`Self::max_record_payload`] go as one record, larger ones in pieces.
    /// Publishes what it wrote.
    #[inline]
    pub(crate) fn try_send_message(&mut self, msg: &[u8], sent: &mut usize) -> Result<bool> {
        let total = msg.len();
        let max = self.max_record_payload();
        if total <= max {
            if *sent > 0 {
                return Ok(true);
            }
            // One contiguous record, so the reader can borrow it.
            let Some(_) = self.reserve(total.max(1), total.max(1))? else {
                return Ok(false);
            };
            self.append(kind::WHOLE, total as u64, msg);
            self.publish();
            *sent = total;
            return Ok(true);
        }
        let piece_max = max.min(PIECE_MAX);
        while *sent < total {
            let rest = total - *sent;
            let want = rest.min(piece_max);
            // Avoid slivers: use a short gap before the end only for a short
            // remainder; otherwise pad and continue at the start.
            let min = want.min(self.ring.cap as usize / 8);
            let Some(n) = self.reserve(min, want)? else {
                self.publish();
                return Ok(false);
            };
            let kind = if *sent == 0 {
                kind::FIRST
            } else if n == rest {
                kind::LAST
            } else {
                kind::MIDDLE
            };
            self.append(kind, total as u64, &msg[*sent..*sent + n]);
            *sent += n;
            // Publish each piece so the consumer can start copying while we
            // write the next one.
            self.publish();
        }
        Ok(true)
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    ring: RingRef,
    /// Our tail: everything below it is released (or about to be).
    tail: u64,
    /// The producer's head as last read and checked (it may be below the
    /// tail: the words run ahead of the head).
    head: u64,
}

impl Consumer {
    pub(crate) fn new(region: Arc<Region>, index: usize) -> Consumer {
        Consumer {
            ring: RingRef::new(region, index),
            tail: 0,
            head: 0,
        }
    }

    /// Loads the header word of the slot at our tail: 0 when no record is
    /// there yet.
    #[inline]
    fn word_at_tail(&self) -> u64 {
        // SYNC POINT with Producer::commit (word store, Release): once the word
        // is seen, the record's payload and `total` are visible, and so is the
        // zero the producer stored in the next slot before it.
        self.ring
            .word(self.ring.offset(self.tail))
            .load(Ordering::Acquire)
    }

    /// Reads the producer's head and checks it.
    #[inline]
    fn refresh_head(&mut self) -> Result<()> {
        // SYNC POINT with Producer::publish (head store, Release): the word of
        // every record below this head is stored and visible to us.
        let h = self.ring.ctl().head.0.load(Ordering::Acquire);
        if h < self.head || h > self.tail + self.ring.cap || h % HDR64 != 0 {
            return Err(corrupt_fmt(format_args!(
                "ring {} head moved to {h} (was {}, tail {}, capacity {})",
                self.ring.index, self.head, self.tail, self.ring.cap
            )));
        }
        self.head = h;
        Ok(())
    }

    /// Starts loading the first lines of `[off, off + len)` of the data area
    /// into the cache at once, so the record header and the payload after it
    /// arrive from the producer's cache together rather than one after the
    /// other.
    #[inline]
    fn prefetch(&self, off: usize, len: usize) {
        if !crate::copy::PREFETCHES {
            return;
        }
        let end = off + len.min(PREFETCH);
        let mut at = off;
        while at < end {
            // off + len <= cap (the caller passes bytes inside the data
            // area), so the address lies in the mapping.
            crate::copy::prefetch(self.ring.data.wrapping_add(at));
            at += 64;
        }
    }

    /// Our tail: bytes released so far.
    #[inline]
    pub(crate) fn position(&self) -> u64 {
        self.tail
    }

    /// The header of the record at the tail, whose word `w` (non-zero) was
    /// just loaded; also asks the cache for the start of the record.
    #[inline]
    fn header(&self, w: u64) -> Header {
        debug_assert!(w != 0);
        let off = self.ring.offset(self.tail);
        let to_end = self.ring.cap - off;
        let len = w >> 32;
        self.prefetch(off as usize, (HDR64 + pad16(len)).min(to_end) as usize);
        let mut t = [0u8; 8];
        // The producer wrote these bytes before the word we acquired and
        // leaves them alone until we release the record.
        // SAFETY: off + HDR <= cap (offsets are multiples of 16): the 8 bytes
        // at off + 8 are in the data area, published (above).
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring.data.add(off as usize + 8), t.as_mut_ptr(), 8)
        }
        Header {
            off,
            to_end,
            avail: (self.head > self.tail).then(|| self.head - self.tail),
            kind: w as u32,
            len,
            total: u64::from_le_bytes(t),
        }
    }

    /// The next record if it is a whole message of at most `max` bytes that
    /// passes every check of [`Self::peek`] and [`Self::try_recv`]; `None`
    /// for anything else (nothing there yet, padding, a piece, an error),
    /// which the caller then hands to the general path. The fast path of
    /// the message API: it reads the header word at the tail and the
    /// record, never the head.
    #[inline]
    pub(crate) fn next_whole(&mut self, max: usize) -> Option<Record> {
        let w = self.word_at_tail();
        if w == 0 {
            return None;
        }
        let h = self.header(w);
        let advance = HDR64 + pad16(h.len);
        if h.kind != kind::WHOLE
            || advance > h.to_end
            || advance > self.ring.cap / 2
            || h.avail.is_some_and(|a| advance > a)
            || h.total != h.len
            || h.len > max as u64
        {
            return None;
        }
        Some(Record {
            kind: kind::WHOLE,
            len: h.len as usize,
            total: h.total,
            off: (h.off + HDR64) as usize,
            advance,
        })
    }

    /// Whether the header word at the tail shows a record. Reads no counter.
    #[inline]
    pub(crate) fn sees_record(&self) -> bool {
        self.word_at_tail() != 0
    }

    /// [`Self::sees_record`] for the async reader: when there is no record
    /// yet, also asks the cache for the lines where the next record will be
    /// written, so that once the writer has written them they are on their
    /// way here while its word is still travelling. (The lines are only
    /// read after the word says they are published.) Reads no counter.
    ///
    /// Measured on a 2-vCPU Xeon guest with 64 B round trips, alternated
    /// with the same code without the prefetch: the async Transport's p50
    /// was 1.24-1.28x of the busy-spin floor with it and 1.48-1.53x
    /// without. The blocking reader does without it (see
    /// `crate::blocking`): measured there, it cost more than it saved.
    #[inline]
    pub(crate) fn watch(&self) -> bool {
        if self.word_at_tail() != 0 {
            return true;
        }
        let off = self.ring.offset(self.tail);
        self.prefetch(off as usize, (self.ring.cap - off).min(WATCH) as usize);
        false
    }

    /// The next data record, skipping padding, without consuming it. Reads
    /// the head when the word at the tail shows no record.
    #[inline]
    pub(crate) fn peek(&mut self) -> Result<Option<Record>> {
        loop {
            let mut w = self.word_at_tail();
            if w == 0 {
                self.refresh_head()?;
                if self.head <= self.tail {
                    return Ok(None);
                }
                // The head's Acquire made the word of every record below it
                // visible: the one at the tail must be there now.
                w = self.word_at_tail();
                if w == 0 {
                    return Err(corrupt_fmt(format_args!(
                        "ring {} head {} is past the tail {} but no record header is there",
                        self.ring.index, self.head, self.tail
                    )));
                }
            }
            let cap = self.ring.cap;
            let Header {
                off,
                to_end,
                avail,
                kind: k,
                len,
                total,
            } = self.header(w);
            match k {
                kind::PAD => {
                    if len != to_end - HDR64 || avail.is_some_and(|a| a < to_end) {
                        return Err(corrupt_fmt(format_args!(
                            "ring {} padding of {len} bytes at offset {off} does not reach the end of the {cap}-byte area (or the head {})",
                            self.ring.index, self.head
                        )));
                    }
                    self.release(to_end);
                }
                kind::WHOLE | kind::FIRST | kind::MIDDLE | kind::LAST => {
                    let advance = HDR64 + pad16(len);
                    if advance > to_end || advance > cap / 2 || avail.is_some_and(|a| advance > a) {
                        return Err(corrupt_fmt(format_args!(
                            "ring {} record of {len} bytes at offset {off} overruns the {cap}-byte area, half of it or the head {}",
                            self.ring.index, self.head
                        )));
                    }
                    return Ok(Some(Record {
                        kind: k,
                        len: len as usize,
                        total,
                        off: (off + HDR64) as usize,
                        advance,
                    }));
                }
                other => {
                    return Err(corrupt_fmt(format_args!(
                        "ring {} record kind {other:#x} at offset {off} is unknown",
                        self.ring.index
                    )))
                }
            }
        }
    }

    /// The payload bytes `[from, from + n)` of a peeked record.
    ///
    /// # Safety
    ///
    /// `rec` must come from the last `peek` and not be released yet, and
    /// `from + n <= rec.len`; the slice must be dropped before the record is
    /// released.
    #[inline]
    pub(crate) unsafe fn payload(&self, rec: &Record, from: usize, n: usize) -> &[u8] {
        debug_assert!(from + n <= rec.len);
        // A producer that breaks the protocol can change these bytes under us;
        // they are opaque payload, never lengths or indices.
        // SAFETY: peek checked rec.off + rec.len is inside the data area, in a
        // record whose word we acquired and which the producer leaves alone
        // until release.
        unsafe { std::slice::from_raw_parts(self.ring.data.add(rec.off + from), n) }
    }

    /// Releases `advance` bytes to the producer.
    #[inline]
    pub(crate) fn release(&mut self, advance: u64) {
        self.tail += advance;
        // SYNC POINT with Producer::refresh_tail (tail load, Acquire): we have
        // finished reading the released bytes (payload and header words)
        // before the producer may reuse them.
        self.ring.ctl().tail.0.store(self.tail, Ordering::Release);
    }

    /// Copies stream bytes into `out`, across records (of any data kind);
    /// returns how many, or
    /// `None` when the ring is empty. `partial` is how much of the first
    /// record an earlier call already returned.
    pub(crate) fn try_read_stream(
        &mut self,
        out: &mut [u8],
        partial: &mut usize,
    ) -> Result<Option<usize>> {
        let mut n = 0;
        while n < out.len() {
            let Some(rec) = self.peek()? else { break };
            // Every data record is a run of bytes here: a stream reader also
            // reads what the message API sent, as concatenated bytes.
            if *partial > rec.len {
                return Err(corrupt("record shrank while being read"));
            }
            let take = (rec.len - *partial).min(out.len() - n);
            // SAFETY: rec is the last peeked record, unreleased, and
            // partial + take <= rec.len; the slice is dropped before release.
            let src = unsafe { self.payload(&rec, *partial, take) };
            crate::copy::copy_out(&mut out[n..n + take], src);
            n += take;
            *partial += take;
            if *partial == rec.len {
                *partial = 0;
                self.release(rec.advance);
            }
        }
        Ok(if n == 0 && !out.is_empty() {
            None
        } else {
            Some(n)
        })
    }
}

/// Reassembly of a message sent in pieces.
#[derive(Debug, Default)]
pub(crate) struct Assembly {
    buf: Option<(Vec<u8>, usize)>,
    /// A buffer handed back by the reader, reused for the next message sent
    /// in pieces (no allocation per large message).
    spare: Vec<u8>,
}

/// Largest spare buffer kept for reuse between messages.
const SPARE_MAX: usize = 8 << 20;

impl Assembly {
    /// Whether pieces of a message have been taken and more must follow.
    #[inline]
    pub(crate) fn is_assembling(&self) -> bool {
        self.buf.is_some()
    }

    /// Takes back a buffer that held a reassembled message (or any buffer
    /// the reader no longer needs), to reuse its memory for the next one;
    /// very large ones are freed.
    pub(crate) fn give_back(&mut self, mut v: Vec<u8>) {
        if v.capacity() > self.spare.capacity() && v.capacity() <= SPARE_MAX {
            v.clear();
            self.spare = v;
        }
    }
}

/// What [`Consumer::try_recv`] found.
#[derive(Debug)]
pub(crate) enum Recv {
    /// Nothing complete yet.
    Empty,
    /// A whole message in the ring: borrow it, then release `rec.advance`.
    Borrowed(Record),
    /// A message reassembled from pieces.
    Owned(Vec<u8>),
}

impl Consumer {
    /// Takes the next message, or as many of its pieces as are available.
    /// `max` bounds the message length (checked before any allocation).
    #[inline]
    pub(crate) fn try_recv(&mut self, asm: &mut Assembly, max: usize) -> Result<Recv> {
        loop {
            let Some(rec) = self.peek()? else {
                return Ok(Recv::Empty);
            };
            match (&mut asm.buf, rec.kind) {
                (None, kind::WHOLE) => {
                    if rec.total != rec.len as u64 {
                        return Err(corrupt_fmt(format_args!(
                            "whole message of {} bytes claims a total of {}",
                            rec.len, rec.total
                        )));
                    }
                    if rec.len > max {
                        return Err(Error::FrameTooLarge { len: rec.len, max });
                    }
                    return Ok(Recv::Borrowed(rec));
                }
                (None, kind::FIRST) => {
                    if rec.total > max as u64 {
                        return Err(Error::FrameTooLarge {
                            len: usize::try_from(rec.total).unwrap_or(usize::MAX),
                            max,
                        });
                    }
                    let total = rec.total as usize;
                    if rec.len >= total {
                        return Err(corrupt_fmt(format_args!(
                            "first piece of {} bytes of a {total}-byte message",
                            rec.len
                        )));
                    }
                    let mut v = std::mem::take(&mut asm.spare);
                    v.clear();
                    v.reserve_exact(total);
                    // SAFETY: rec is the last peeked record, unreleased; the
                    // slice is copied and dropped before release.
                    crate::copy::extend_out(&mut v, unsafe { self.payload(&rec, 0, rec.len) });
                    self.release(rec.advance);
                    asm.buf = Some((v, total));
                }
                (Some((v, total)), kind::MIDDLE | kind::LAST) => {
                    let end = v.len() + rec.len;
                    let last = rec.kind == kind::LAST;
                    if (last && end != *total) || (!last && end >= *total) {
                        return Err(corrupt_fmt(format_args!(
                            "pieces add up to {end} bytes of a {total}-byte message"
                        )));
                    }
                    // SAFETY: as above.
                    crate::copy::extend_out(v, unsafe { self.payload(&rec, 0, rec.len) });
                    self.release(rec.advance);
                    if last {
                        let (v, _) = asm.buf.take().expect("assembling");
                        return Ok(Recv::Owned(v));
                    }
                }
                (_, k) => {
                    return Err(corrupt_fmt(format_args!(
                        "record kind {k:#x} out of sequence ({} a message)",
                        if asm.buf.is_some() {
                            "in the middle of"
                        } else {
                            "before"
                        }
                    )))
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::{CLIENT, MIN_RING_CAPACITY};

    fn pair(cap: usize) -> (Producer, Consumer, Arc<Region>) {
        let r = Arc::new(Region::heap(cap));
        (
            Producer::new(r.clone(), CLIENT),
            Consumer::new(r.clone(), CLIENT),
            r,
        )
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Drives sending and receiving of `msgs` on one thread, interleaved.
    fn round_trip(cap: usize, msgs: &[Vec<u8>]) {
        let (mut p, mut c, _r) = pair(cap);
        let mut asm = Assembly::default();
        let mut got = Vec::new();
        let mut i = 0;
        let mut sent = 0;
        while got.len() < msgs.len() {
            if i < msgs.len() && p.try_send_message(&msgs[i], &mut sent).unwrap() {
                i += 1;
                sent = 0;
            }
            match c.try_recv(&mut asm, usize::MAX).unwrap() {
                Recv::Empty => {}
                Recv::Borrowed(rec) => {
                    // SAFETY: rec was just peeked and is released right after.
                    got.push(unsafe { c.payload(&rec, 0, rec.len) }.to_vec());
                    c.release(rec.advance);
                }
                Recv::Owned(v) => got.push(v),
            }
        }
        assert_eq!(got.len(), msgs.len());
        for (a, b) in got.iter().zip(msgs) {
            assert!(a == b, "message of {} bytes differs", b.len());
        }
        assert!(p.is_drained().unwrap());
    }

    #[test]
    fn small_messages_wrap_with_padding() {
        let msgs: Vec<_> = (0..200).map(|i| pattern(i * 7 % 300, i as u8)).collect();
        round_trip(MIN_RING_CAPACITY, &msgs);
    }

    #[test]
    fn messages_larger_than_the_ring_stream_in_pieces() {
        let msgs = vec![
            pattern(10_000, 1),
            pattern(1, 2),
            pattern(MIN_RING_CAPACITY / 2 - HDR, 3),
            pattern(MIN_RING_CAPACITY / 2 - HDR + 1, 4),
            pattern(MIN_RING_CAPACITY * 3 + 5, 5),
            Vec::new(),
        ];
        round_trip(MIN_RING_CAPACITY, &msgs);
    }

    #[test]
    #[cfg_attr(miri, ignore = "megabytes through a ring: minutes under Miri")]
    fn pieces_are_at_most_piece_max_in_a_large_ring() {
        let cap = 4 << 20;
        let (mut p, mut c, _r) = pair(cap);
        let msg = pattern(3 << 20, 6);
        let mut sent = 0;
        // 3 MiB fits in the empty 4 MiB ring whole, in pieces.
        assert!(p.try_send_message(&msg, &mut sent).unwrap());
        let mut kinds = Vec::new();
        let mut got = Vec::new();
        while let Some(rec) = c.peek().unwrap() {
            assert!(
                rec.len <= PIECE_MAX,
                "a piece of {} bytes, above {PIECE_MAX}",
                rec.len
            );
            kinds.push(rec.kind);
            // SAFETY: rec was just peeked and is released right after.
            got.extend_from_slice(unsafe { c.payload(&rec, 0, rec.len) });
            c.release(rec.advance);
        }
        assert_eq!(kinds.len(), (3 << 20) / PIECE_MAX);
        assert_eq!(kinds[0], kind::FIRST);
        assert_eq!(kinds[kinds.len() - 1], kind::LAST);
        assert!(kinds[1..kinds.len() - 1].iter().all(|&k| k == kind::MIDDLE));
        assert!(got == msg, "the pieces differ from the message");
    }

    #[test]
    fn byte_stream_round_trip() {
        let (mut p, mut c, _r) = pair(MIN_RING_CAPACITY);
        let data = pattern(50_000, 9);
        let mut out = vec![0u8; data.len()];
        let (mut w, mut r, mut partial) = (0, 0, 0);
        let mut buf = [0u8; 777];
        while r < data.len() {
            if w < data.len() {
                if let Some(n) = p
                    .try_write_stream(&data[w..(w + 3000).min(data.len())])
                    .unwrap()
                {
                    w += n;
                }
            }
            if let Some(n) = c.try_read_stream(&mut buf, &mut partial).unwrap() {
                out[r..r + n].copy_from_slice(&buf[..n]);
                r += n;
            }
        }
        assert_eq!(out, data);
    }

    /// Sends `msg` as the message API does: the fast path, else the general one.
    fn send(p: &mut Producer, msg: &[u8]) {
        if !p.try_send_fast(msg) {
            let mut sent = 0;
            assert!(p.try_send_message(msg, &mut sent).unwrap(), "no room");
        }
    }

    /// Receives a whole message with the general path; returns its offset.
    fn recv(c: &mut Consumer, asm: &mut Assembly, want: &[u8]) -> usize {
        let Recv::Borrowed(rec) = c.try_recv(asm, usize::MAX).unwrap() else {
            panic!("no whole message");
        };
        // SAFETY: just peeked; released right after the comparison.
        assert!(unsafe { c.payload(&rec, 0, rec.len) } == want);
        c.release(rec.advance);
        rec.off
    }

    #[test]
    fn a_conversation_keeps_to_the_start_of_the_ring() {
        // The smallest ring that wraps early (kept small for Miri).
        let cap = 4 * HOT_WINDOW as usize;
        let (mut p, mut c, _r) = pair(cap);
        let mut asm = Assembly::default();
        for i in 0..400 {
            let msg = pattern(64 + i % 50, i as u8);
            send(&mut p, &msg);
            let off = recv(&mut c, &mut asm, &msg);
            assert!(
                off < HOT_WINDOW as usize + HDR,
                "message {i} landed at offset {off}, past the first {HOT_WINDOW} bytes"
            );
        }
        // Many laps of the window, not one of the ring.
        assert!(c.position() > 2 * cap as u64, "{}", c.position());
    }

    #[test]
    fn a_ring_with_records_in_it_is_not_wrapped_early() {
        let cap = 4 * HOT_WINDOW as usize;
        let (mut p, mut c, _r) = pair(cap);
        let mut asm = Assembly::default();
        // Ahead of the consumer through three windows: the records stay in
        // sequence through the ring.
        let msgs: Vec<_> = (0..200).map(|i| pattern(64, i as u8)).collect();
        for m in &msgs {
            send(&mut p, m);
        }
        let mut last = 0;
        for (i, m) in msgs.iter().enumerate() {
            let off = recv(&mut c, &mut asm, m);
            assert!(i == 0 || off > last, "message {i} at {off} after {last}");
            last = off;
        }
        assert!(last > 3 * HOT_WINDOW as usize, "{last}");
        // Drained: from the next look on, back to the start.
        for i in 0..100 {
            let msg = pattern(64, i as u8);
            send(&mut p, &msg);
            last = recv(&mut c, &mut asm, &msg);
        }
        assert!(last < HOT_WINDOW as usize + HDR, "{last}");
    }

    #[test]
    fn records_larger_than_the_window_run_through_the_ring() {
        let cap = 8 * HOT_WINDOW as usize;
        let (mut p, mut c, _r) = pair(cap);
        let mut asm = Assembly::default();
        // Each message read as soon as it is sent, yet they follow one
        // another through the whole ring.
        let mut offsets = Vec::new();
        for i in 0..10 {
            let msg = pattern(HOT_WINDOW as usize + 1 + i, i as u8);
            send(&mut p, &msg);
            offsets.push(recv(&mut c, &mut asm, &msg));
        }
        let furthest = offsets.iter().max().copied().unwrap_or(0);
        assert!(furthest > cap / 2, "offsets {offsets:?}");
        // A small message after them goes back to the start.
        let mut last = 0;
        for i in 0..3 {
            let msg = pattern(64, i);
            send(&mut p, &msg);
            last = recv(&mut c, &mut asm, &msg);
        }
        assert!(last < HOT_WINDOW as usize + HDR, "{last}");
    }

    #[test]
    fn fast_paths_take_whole_messages_only() {
        let (mut p, mut c, _r) = pair(MIN_RING_CAPACITY);
        assert_eq!(c.next_whole(usize::MAX), None);
        assert!(p.try_send_fast(b"hello"));
        // Above the reader's maximum: left to the general path's error.
        assert_eq!(c.next_whole(4), None);
        let rec = c.next_whole(5).expect("a whole message");
        // SAFETY: just peeked; released right after the copy.
        assert_eq!(unsafe { c.payload(&rec, 0, rec.len) }, b"hello");
        c.release(rec.advance);
        // Larger than one record: pieces, for the general path.
        assert!(!p.try_send_fast(&[0; MIN_RING_CAPACITY]));
        let mut sent = 0;
        assert!(!p
            .try_send_message(&[3; MIN_RING_CAPACITY], &mut sent)
            .unwrap());
        assert_eq!(c.next_whole(usize::MAX), None);
        // Not enough room before the end of the area: padding is the
        // general path's job too.
        let (mut p, mut c, _r) = pair(MIN_RING_CAPACITY);
        let big = [1u8; 1500]; // 1520-byte records: two fit, a third does not
        assert!(p.try_send_fast(&big));
        assert!(p.try_send_fast(&big));
        assert!(!p.try_send_fast(&big));
        let rec = c.next_whole(usize::MAX).unwrap();
        c.release(rec.advance);
        let rec = c.next_whole(usize::MAX).unwrap();
        c.release(rec.advance);
        // 1056 bytes left before the end: a 1120-byte record needs padding.
        assert!(!p.try_send_fast(&[2; 1100]));
        let mut sent = 0;
        assert!(p.try_send_message(&[2; 1100], &mut sent).unwrap());
        assert_eq!(c.next_whole(usize::MAX), None, "padding first");
        match c.try_recv(&mut Assembly::default(), usize::MAX).unwrap() {
            Recv::Borrowed(rec) => assert_eq!(rec.len, 1100),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_ring_reports_no_room() {
        let (mut p, _c, _r) = pair(MIN_RING_CAPACITY);
        let msg = [7u8; 1000];
        let mut n = 0;
        loop {
            let mut sent = 0;
            if !p.try_send_message(&msg, &mut sent).unwrap() {
                break;
            }
            n += 1;
        }
        // One header slot stays free beyond the last record.
        assert_eq!(n, (MIN_RING_CAPACITY - HDR) / record_len(1000) as usize);
    }

    #[test]
    fn oversize_message_is_refused_before_allocation() {
        let (mut p, mut c, _r) = pair(MIN_RING_CAPACITY);
        let mut sent = 0;
        p.try_send_message(&pattern(5000, 0), &mut sent).unwrap();
        let err = c.try_recv(&mut Assembly::default(), 4096).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    len: 5000,
                    max: 4096
                }
            ),
            "{err}"
        );
    }

    /// Writes `val` over the shared head of ring 0.
    fn poke_head(r: &Region, val: u64) {
        r.ctl().rings[CLIENT].head.0.store(val, Ordering::Release);
    }

    fn poke_bytes(r: &Region, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= r.capacity());
        // SAFETY: in bounds of ring 0's data area; single-threaded test.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), r.data(CLIENT).add(off), bytes.len())
        }
    }

    fn expect_corrupt(c: &mut Consumer) -> String {
        // The fast path declines what the general path rejects.
        assert_eq!(c.next_whole(usize::MAX), None);
        match c.try_recv(&mut Assembly::default(), usize::MAX) {
            Err(Error::Corrupt(m)) => m,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn hostile_head_is_corrupt() {
        for bad in [u64::MAX, MIN_RING_CAPACITY as u64 + 16, 17, 8] {
            let (_p, mut c, r) = pair(MIN_RING_CAPACITY);
            poke_head(&r, bad);
            let m = expect_corrupt(&mut c);
            assert!(m.contains("head"), "{m}");
        }
        // A head that moves backwards.
        let (mut p, mut c, r) = pair(MIN_RING_CAPACITY);
        let mut sent = 0;
        p.try_send_message(b"hello", &mut sent).unwrap();
        c.refresh_head().unwrap();
        assert_eq!(c.head, 32);
        poke_head(&r, 16);
        let m = c.refresh_head().unwrap_err().to_string();
        assert!(m.contains("head moved to 16"), "{m}");
        // A head past the tail with no record header there.
        let (_p, mut c, r) = pair(MIN_RING_CAPACITY);
        poke_head(&r, 32);
        let m = expect_corrupt(&mut c);
        assert!(m.contains("no record header"), "{m}");
    }

    #[test]
    fn hostile_records_are_corrupt() {
        let cases: Vec<(&str, [u8; 16])> = vec![
            ("is unknown", hdr(0xdead, 4, 4)),
            ("is unknown", hdr(0, 4, 4)),
            ("overruns", hdr(kind::WHOLE, u32::MAX, u32::MAX as u64)),
            // More than half the ring, though inside the area.
            ("overruns", hdr(kind::WHOLE, 2048, 2048)),
            ("padding", hdr(kind::PAD, 16, 0)),
            ("claims a total", hdr(kind::WHOLE, 4, 99)),
            ("out of sequence", hdr(kind::MIDDLE, 4, 4)),
            ("first piece", hdr(kind::FIRST, 16, 16)),
        ];
        for (what, h) in cases {
            let (_p, mut c, r) = pair(MIN_RING_CAPACITY);
            // The header word alone publishes a record: no head needed.
            poke_bytes(&r, 0, &h);
            let m = expect_corrupt(&mut c);
            assert!(m.contains(what), "{what}: {m}");
        }
    }

    #[test]
    fn hostile_record_past_the_known_head_is_corrupt() {
        let (_p, mut c, r) = pair(MIN_RING_CAPACITY);
        poke_head(&r, 32);
        // The consumer has read a head of 32 ...
        c.refresh_head().unwrap();
        // ... and then finds a record of 128 bytes at the tail.
        poke_bytes(&r, 0, &hdr(kind::WHOLE, 100, 100));
        let m = expect_corrupt(&mut c);
        assert!(m.contains("the head 32"), "{m}");
    }

    #[test]
    fn hostile_record_across_the_end_is_corrupt() {
        let (mut p, mut c, r) = pair(MIN_RING_CAPACITY);
        let mut asm = Assembly::default();
        // Records of 2048 and 2032 bytes leave the tail 16 bytes before the
        // end.
        for n in [2032, 2016] {
            assert!(p.try_send_fast(&vec![5; n]));
            match c.try_recv(&mut asm, usize::MAX).unwrap() {
                Recv::Borrowed(rec) => c.release(rec.advance),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(c.position(), MIN_RING_CAPACITY as u64 - 16);
        // A one-byte record there would wrap.
        poke_bytes(&r, MIN_RING_CAPACITY - 16, &hdr(kind::WHOLE, 1, 1));
        let m = expect_corrupt(&mut c);
        assert!(m.contains("overruns"), "{m}");
    }

    /// Stale bytes in the next record's slot (here, a forged header inside
    /// an earlier message's payload) are never taken for a record: the
    /// producer zeroes the slot before it publishes the record before it.
    #[test]
    fn forged_header_in_stale_payload_is_not_a_record() {
        let (mut p, mut c, r) = pair(MIN_RING_CAPACITY);
        let mut asm = Assembly::default();
        // Two messages whose payload is a forged 4-byte message at every
        // 16-byte slot (records at 16, 32, ... of the data area), up to 64
        // bytes before the end.
        let mut forged = Vec::new();
        while forged.len() < 2000 {
            forged.extend_from_slice(&hdr(kind::WHOLE, 4, 4));
        }
        for _ in 0..2 {
            let mut sent = 0;
            assert!(p.try_send_message(&forged, &mut sent).unwrap());
            let Recv::Borrowed(rec) = c.try_recv(&mut asm, usize::MAX).unwrap() else {
                panic!("not a whole message");
            };
            // SAFETY: just peeked; released right after the comparison.
            assert!(unsafe { c.payload(&rec, 0, rec.len) } == &forged[..]);
            c.release(rec.advance);
        }
        assert_eq!(c.position(), MIN_RING_CAPACITY as u64 - 64);
        // Padding to the end, then a 100-byte record at offset 0 that ends
        // at 128, in the middle of the stale payload.
        let mut sent = 0;
        assert!(p.try_send_message(&[9; 100], &mut sent).unwrap());
        let Recv::Borrowed(rec) = c.try_recv(&mut asm, usize::MAX).unwrap() else {
            panic!("not a whole message");
        };
        assert_eq!((rec.off, rec.len), (16, 100));
        c.release(rec.advance);
        assert_eq!(c.position(), MIN_RING_CAPACITY as u64 + 128);
        // Its padding was zeroed, not left with the stale payload.
        let mut padding = [0xffu8; 12];
        // SAFETY: in bounds of ring 0's data area; single-threaded test.
        unsafe { std::ptr::copy_nonoverlapping(r.data(CLIENT).add(116), padding.as_mut_ptr(), 12) };
        assert_eq!(padding, [0; 12]);
        // The forged message is still there in the bytes after the word.
        let mut stale = [0u8; 8];
        // SAFETY: in bounds of ring 0's data area; single-threaded test.
        unsafe { std::ptr::copy_nonoverlapping(r.data(CLIENT).add(136), stale.as_mut_ptr(), 8) };
        assert_eq!(stale, hdr(kind::WHOLE, 4, 4)[8..]);
        // Nothing to read: not by the fast path, not by the general one.
        assert_eq!(c.next_whole(usize::MAX), None);
        assert!(!c.watch());
        assert!(!c.sees_record());
        assert!(matches!(c.try_recv(&mut asm, usize::MAX), Ok(Recv::Empty)));
        // The next real message arrives as sent.
        assert!(p.try_send_fast(b"real"));
        let rec = c.next_whole(usize::MAX).expect("the real message");
        // SAFETY: just peeked.
        assert_eq!(unsafe { c.payload(&rec, 0, rec.len) }, b"real");
    }

    #[test]
    fn hostile_pieces_are_corrupt() {
        let (_p, mut c, r) = pair(MIN_RING_CAPACITY);
        poke_bytes(&r, 0, &hdr(kind::FIRST, 16, 40));
        poke_bytes(&r, 32, &hdr(kind::LAST, 16, 40));
        poke_head(&r, 64);
        let m = expect_corrupt(&mut c);
        assert!(m.contains("add up"), "{m}");
    }

    #[test]
    fn hostile_tail_is_corrupt() {
        let (mut p, _c, r) = pair(MIN_RING_CAPACITY);
        r.ctl().rings[CLIENT]
            .tail
            .0
            .store(1 << 40, Ordering::Release);
        let mut sent = 0;
        // Fill the ring so the producer must look at the tail.
        let res = (0..10).try_for_each(|_| {
            sent = 0;
            p.try_send_message(&[0; 1000], &mut sent).map(|_| ())
        });
        assert!(matches!(res, Err(Error::Corrupt(_))), "{res:?}");
    }

    fn hdr(k: u32, len: u32, total: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&k.to_le_bytes());
        h[4..8].copy_from_slice(&len.to_le_bytes());
        h[8..16].copy_from_slice(&total.to_le_bytes());
        h
    }

    /// Two threads, the real concurrency the ring sees (and what Miri checks
    /// for data races).
    #[test]
    fn two_threads_mixed_sizes() {
        let count = if cfg!(miri) { 40 } else { 2000 };
        let (mut p, mut c, _r) = pair(MIN_RING_CAPACITY);
        let sizes: Vec<usize> = (0..count).map(|i| (i * 997) % 9000).collect();
        let s2 = sizes.clone();
        let t = std::thread::spawn(move || {
            for (i, &n) in s2.iter().enumerate() {
                let m = pattern(n, i as u8);
                let mut sent = 0;
                while !p.try_send_message(&m, &mut sent).unwrap() {
                    crate::sync::spin_hint();
                }
            }
        });
        let mut asm = Assembly::default();
        for (i, &n) in sizes.iter().enumerate() {
            let got = loop {
                match c.try_recv(&mut asm, usize::MAX).unwrap() {
                    Recv::Empty => crate::sync::spin_hint(),
                    Recv::Borrowed(rec) => {
                        // SAFETY: just peeked; released right after the copy.
                        let v = unsafe { c.payload(&rec, 0, rec.len) }.to_vec();
                        c.release(rec.advance);
                        break v;
                    }
                    Recv::Owned(v) => break v,
                }
            };
            assert!(got == pattern(n, i as u8), "message {i} differs");
        }
        t.join().unwrap();
    }
}
