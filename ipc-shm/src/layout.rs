//! The layout of a connection's shared region.
//!
//! ```text
//! offset 0       Control: header line, one bell line per side, two rings'
//!                head and tail lines (every counter on its own 128-byte line,
//!                so the producer's and consumer's writes never share a line)
//! DATA_OFFSET    data of ring 0 (client -> server), `cap` bytes
//! +cap           data of ring 1 (server -> client), `cap` bytes
//! ```
//!
//! Everything in the control block is an atomic: the peer may write any of
//! it at any time, so every read is an atomic load and every value is
//! checked before it is used.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Bytes per cache line as far as false sharing goes (two 64-byte lines:
/// x86 prefetches lines in adjacent pairs).
pub const LINE: usize = 128;

/// Offset of the first data area; the control block fits below it.
pub const DATA_OFFSET: usize = 4096;

/// Smallest ring capacity, in bytes per direction.
pub const MIN_RING_CAPACITY: usize = 4096;

/// Largest ring capacity, in bytes per direction (256 MiB): a peer cannot
/// make us map more than twice this plus one page.
pub const MAX_RING_CAPACITY: usize = 1 << 28;

/// Default ring capacity, in bytes per direction (8 MiB).
///
/// Large enough that a stream of bulk messages writes lines the reader
/// read several L2 caches ago: between two cores with 1 MiB of L2 each, a
/// 1 MiB ring moved 64 KiB messages at a third of the rate of a 4 MiB one;
/// between two with 2 MiB each, a 4 MiB ring moved them at 21 GB/s and an
/// 8 MiB one at 24-26 GB/s (the benchmark's throughput rounds). It costs
/// only the connections that stream: pages are taken as they are written,
/// and a conversation of small messages keeps to the first page of each
/// ring (`tests/footprint.rs`).
pub const DEFAULT_RING_CAPACITY: usize = 8 << 20;

/// `"IPCSHM\0\x01"`: identifies a region laid out by this crate.
pub const MAGIC: u64 = u64::from_le_bytes(*b"IPCSHM\0\x01");

/// Version of the layout and record format.
pub const VERSION: u32 = 2;

/// Pads a value to its own cache line.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Line<T>(pub T);

/// Written once by the server before the region is handed over; the client
/// copies and checks it.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// Capacity of each ring in bytes (a power of two).
    pub capacity: AtomicU32,
    /// Length of the whole region in bytes.
    pub len: AtomicU64,
}

/// Where one side sleeps and how the other wakes it.
///
/// Side `i` sleeps on `bells[i]`; the other side rings it after publishing
/// data to side `i` or freeing space for it.
#[repr(C)]
#[derive(Debug)]
pub struct Bell {
    /// Bumped on every wake-up; the futex word on Linux.
    pub seq: AtomicU32,
    /// Set by the sleeper before it sleeps: [`WAIT_FUTEX`] and/or
    /// [`WAIT_SOCKET`], saying which doorbell to ring. Cleared by the waker.
    pub waiting: AtomicU32,
    /// [`CLOSED_WRITE`] when this side will send nothing more,
    /// [`CLOSED_GONE`] when it has dropped the connection.
    pub closed: AtomicU32,
    /// [`BARRIER_ON_SLEEP`] once this side makes a process-wide memory
    /// barrier each time it announces a sleep, so that the other side may
    /// look for the announcement without a fence of its own; 0 otherwise.
    /// Set before this side first sleeps and never cleared while the other
    /// side could skip its fence for it (a side that finds it cannot make
    /// the barrier any more clears it, and its next sleep is cut short by
    /// the liveness check).
    pub barrier: AtomicU32,
    /// Where this side's ring will reach once the message it is writing now
    /// is in (a position, as the ring's head): set before a large message is
    /// copied in, left as it was after. A hint for the other side, which
    /// keeps spinning for a while rather than sleep while its tail is below
    /// it; never used as an index. 0 until the first large message.
    pub writing: AtomicU64,
    /// [`EARLY_WAKE`] when this side, woken while the other copies in an
    /// announced message ([`Self::writing`]), spins on until the message is
    /// in: the other side then rings it when it announces the message, not
    /// only once the message is in. 0 (an async side, or a blocking one that
    /// does not spin): a wake-up before the message is in would only be one
    /// too many. Set before this side first sleeps, never changed after.
    pub early_wake: AtomicU32,
    /// The futex, modelled for loom.
    #[cfg(loom)]
    pub park: (loom::sync::Mutex<()>, loom::sync::Condvar),
}

/// The sleeper is parked on the futex at [`Bell::seq`].
pub const WAIT_FUTEX: u32 = 1;
/// The sleeper waits for a byte on the bootstrap socket.
pub const WAIT_SOCKET: u32 = 2;

/// This side makes a process-wide memory barrier when it announces a sleep
/// (see [`Bell::barrier`]).
pub const BARRIER_ON_SLEEP: u32 = 1;

/// This side spins on for an announced message (see [`Bell::early_wake`]).
pub const EARLY_WAKE: u32 = 1;

/// This side has shut down its sending half.
pub const CLOSED_WRITE: u32 = 1;
/// This side has dropped the connection.
pub const CLOSED_GONE: u32 = 2;

/// The counters of one ring. Positions count bytes since the start and never
/// wrap in practice (2^64 bytes); the offset in the data area is
/// `position % capacity`.
#[repr(C)]
#[derive(Debug)]
pub struct RingCtl {
    /// End of the published records; written only by the producer.
    pub head: Line<AtomicU64>,
    /// End of the released records; written only by the consumer.
    pub tail: Line<AtomicU64>,
}

/// The control block at the start of the region.
#[repr(C)]
#[derive(Debug)]
pub struct Control {
    /// What the server wrote when it created the region.
    pub header: Line<Header>,
    /// `bells[CLIENT]`, `bells[SERVER]`.
    pub bells: [Line<Bell>; 2],
    /// `rings[CLIENT]` carries client -> server, `rings[SERVER]` server -> client.
    pub rings: [RingCtl; 2],
}

const _: () = assert!(std::mem::size_of::<Control>() <= DATA_OFFSET);
const _: () = assert!(std::mem::align_of::<Control>() == LINE);

/// Index of the client side (its bell, and the ring it produces).
pub const CLIENT: usize = 0;
/// Index of the server side.
pub const SERVER: usize = 1;

/// Length of a region whose rings hold `capacity` bytes each.
pub fn region_len(capacity: usize) -> usize {
    DATA_OFFSET + 2 * capacity
}

/// Checks a requested ring capacity: a power of two within the bounds.
pub fn check_capacity(capacity: usize) -> Result<(), String> {
    if !(MIN_RING_CAPACITY..=MAX_RING_CAPACITY).contains(&capacity) || !capacity.is_power_of_two() {
        return Err(format!(
            "ring capacity {capacity} must be a power of two between {MIN_RING_CAPACITY} and {MAX_RING_CAPACITY} bytes"
        ));
    }
    Ok(())
}

impl Control {
    /// Writes the header of a fresh region.
    pub fn init(&self, capacity: usize) {
        let h = &self.header.0;
        h.version.store(VERSION, Ordering::Relaxed);
        h.capacity.store(capacity as u32, Ordering::Relaxed);
        h.len.store(region_len(capacity) as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
    }

    /// Reads and checks the header of a region received from a peer whose
    /// mapping is `mapped_len` bytes; returns the ring capacity.
    pub fn validate(&self, mapped_len: usize) -> Result<usize, String> {
        let h = &self.header.0;
        let magic = h.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(format!(
                "bad magic {magic:#x}: not a region of this protocol"
            ));
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(format!(
                "layout version {version}, this build speaks {VERSION}; upgrade both sides to the same release"
            ));
        }
        let capacity = h.capacity.load(Ordering::Relaxed) as usize;
        check_capacity(capacity)?;
        let len = h.len.load(Ordering::Relaxed);
        if len != region_len(capacity) as u64 {
            return Err(format!(
                "header says the region is {len} bytes, rings of {capacity} bytes need {}",
                region_len(capacity)
            ));
        }
        if mapped_len < region_len(capacity) {
            return Err(format!(
                "region is {mapped_len} bytes, rings of {capacity} bytes need {}",
                region_len(capacity)
            ));
        }
        Ok(capacity)
    }
}

#[cfg(loom)]
impl Control {
    /// A control block on the heap, for the loom model (loom's atomics cannot
    /// live in raw memory).
    pub fn new_boxed() -> Box<Control> {
        fn bell() -> Line<Bell> {
            Line(Bell {
                seq: AtomicU32::new(0),
                waiting: AtomicU32::new(0),
                closed: AtomicU32::new(0),
                barrier: AtomicU32::new(0),
                writing: AtomicU64::new(0),
                early_wake: AtomicU32::new(0),
                park: (loom::sync::Mutex::new(()), loom::sync::Condvar::new()),
            })
        }
        fn ring() -> RingCtl {
            RingCtl {
                head: Line(AtomicU64::new(0)),
                tail: Line(AtomicU64::new(0)),
            }
        }
        Box::new(Control {
            header: Line(Header {
                magic: AtomicU64::new(0),
                version: AtomicU32::new(0),
                capacity: AtomicU32::new(0),
                len: AtomicU64::new(0),
            }),
            bells: [bell(), bell()],
            rings: [ring(), ring()],
        })
    }
}
