//! A shared region: the control block and the two data areas, over memory
//! that lives as long as the region (a mapping, or a heap buffer in tests).

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;

use crate::layout::{region_len, Control, DATA_OFFSET};

/// Keeps the memory of a region alive; dropped (unmapped, freed) last.
pub(crate) trait Backing: Send + Sync + fmt::Debug + 'static {}

/// The memory shared with the peer.
///
/// Invariants: `ctl` points to a `Control` valid for the life of `self`;
/// `data` points to `2 * capacity` bytes valid for reads and writes for the
/// life of `self`; `capacity` is a checked power of two.
pub struct Region {
    ctl: NonNull<Control>,
    data: NonNull<u8>,
    capacity: usize,
    _backing: Box<dyn Backing>,
    /// The record header words of both rings, one per 16-byte slot (loom's
    /// atomics cannot live in the data area, so the model keeps them here;
    /// see [`Region::loom_word`]).
    #[cfg(loom)]
    words: Vec<crate::sync::AtomicU64>,
}

// Every access through the region's pointers follows the ring protocol:
// atomics for shared counters, byte copies into areas it hands to one side.
// SAFETY: plain memory plus atomics; the pointers stay valid for the life
// of the region whichever thread holds it.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only gives out `&Control` (atomics) and raw
// data pointers whose use is governed by the ring protocol.
unsafe impl Sync for Region {}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("capacity", &self.capacity)
            .field("backing", &self._backing)
            .finish()
    }
}

impl Region {
    /// Wraps memory laid out as in [`crate::layout`].
    ///
    /// # Safety
    ///
    /// `base` must point to `region_len(capacity)` bytes, aligned to
    /// [`DATA_OFFSET`], readable and writable (through shared-memory
    /// semantics) for as long as `backing` lives, and `capacity` must have
    /// passed [`crate::layout::check_capacity`].
    pub(crate) unsafe fn from_raw(
        base: NonNull<u8>,
        capacity: usize,
        backing: Box<dyn Backing>,
    ) -> Region {
        debug_assert_eq!(base.as_ptr() as usize % DATA_OFFSET, 0);
        Region {
            ctl: base.cast(),
            // SAFETY: DATA_OFFSET < region_len(capacity), so the result stays
            // inside the allocation (caller's contract).
            data: unsafe { base.add(DATA_OFFSET) },
            capacity,
            _backing: backing,
            #[cfg(loom)]
            words: Vec::new(),
        }
    }

    /// A region on the heap, zeroed, with its header written: for tests of
    /// the ring logic without a mapping (and under Miri).
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is not a valid ring capacity (a test bug).
    #[cfg(not(loom))]
    pub fn heap(capacity: usize) -> Region {
        crate::layout::check_capacity(capacity).expect("valid test capacity");
        let buf = HeapBuf::zeroed(region_len(capacity));
        let base = buf.ptr;
        // SAFETY: the buffer is region_len(capacity) zeroed bytes aligned to
        // DATA_OFFSET, owned by the backing; all-zero bytes are a valid
        // Control (atomics of value 0).
        let region = unsafe { Region::from_raw(base, capacity, Box::new(buf)) };
        region.ctl().init(capacity);
        region
    }

    /// A region whose control block is a heap value (loom's atomics cannot
    /// be conjured from zeroed memory).
    #[cfg(loom)]
    pub(crate) fn loom(capacity: usize) -> Region {
        let ctl = Control::new_boxed();
        let data = HeapBuf::zeroed(2 * capacity);
        let region = Region {
            ctl: NonNull::from(&*ctl),
            data: data.ptr,
            capacity,
            _backing: Box::new(LoomBacking(ctl, data)),
            words: (0..2 * capacity / crate::ring::HDR)
                .map(|_| crate::sync::AtomicU64::new(0))
                .collect(),
        };
        region.ctl().init(capacity);
        region
    }

    /// The control block.
    pub(crate) fn ctl(&self) -> &Control {
        // SAFETY: `ctl` is valid for the life of `self` (type invariant).
        unsafe { self.ctl.as_ref() }
    }

    /// The data area of ring `i` (0 or 1): `capacity` bytes.
    pub(crate) fn data(&self, i: usize) -> *mut u8 {
        debug_assert!(i < 2);
        // SAFETY: i < 2, so the offset is within the 2 * capacity data bytes.
        unsafe { self.data.as_ptr().add(i * self.capacity) }
    }

    /// The header word of the record slot at offset `off` (a multiple of
    /// 16) of ring `i`'s data area, as the loom model keeps it.
    #[cfg(loom)]
    pub(crate) fn loom_word(&self, i: usize, off: usize) -> &crate::sync::AtomicU64 {
        &self.words[(i * self.capacity + off) / crate::ring::HDR]
    }

    /// Bytes per ring.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Zeroed heap memory aligned to a page.
#[derive(Debug)]
struct HeapBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: HeapBuf owns its allocation exclusively; it is only freed on drop.
unsafe impl Send for HeapBuf {}
// SAFETY: HeapBuf exposes no access of its own; users go through Region.
unsafe impl Sync for HeapBuf {}

impl HeapBuf {
    fn zeroed(len: usize) -> HeapBuf {
        let layout = Layout::from_size_align(len, DATA_OFFSET).expect("valid layout");
        // SAFETY: the layout has a non-zero size (len >= MIN_RING_CAPACITY).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        HeapBuf { ptr, layout }
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl Backing for HeapBuf {}

#[cfg(loom)]
#[derive(Debug)]
struct LoomBacking(Box<Control>, HeapBuf);

#[cfg(loom)]
impl Backing for LoomBacking {}
