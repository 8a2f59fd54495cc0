//! Copying payload out of a ring, with a software prefetch ahead of the copy.
//!
//! The bytes a consumer copies were written by the other process a moment
//! ago and sit in the other core's cache. Between two cores of an Intel Xeon
//! (2 MiB of L2 each; 2026-11-27), the C library's `memcpy` of 32-128 KiB
//! messages out of a bare ring moved 12-14 GB/s, and the same copy done
//! 4 KiB at a time, each chunk after a prefetch that keeps the next 8 KiB
//! coming, moved 17-19 GB/s. Messages of 16 KiB and 1 MiB copied as fast
//! either way (19-20 GB/s), and a 4 KiB message lost 10% to the prefetches,
//! so payloads below [`PREFETCH_MIN`] are copied plainly. Elsewhere than on
//! x86-64 (and under Miri and loom) every copy is plain.
//!
//! The prefetch itself is here too; the ring uses it for the lines where a
//! waiting reader's next record will land.

/// Bytes copied between prefetches.
const CHUNK: usize = 4 << 10;

/// How far ahead of the copy the prefetches run.
const AHEAD: usize = 8 << 10;

/// Smallest payload copied with prefetches.
pub(crate) const PREFETCH_MIN: usize = 16 << 10;

/// A cache line, the step of the prefetches.
const LINE: usize = 64;

/// Whether [`prefetch`] does anything: on x86-64, outside Miri and loom.
pub(crate) const PREFETCHES: bool = cfg!(all(target_arch = "x86_64", not(miri), not(loom)));

/// Hints the CPU to load the line at `p` into its caches (a no-op where
/// [`PREFETCHES`] is false).
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
    // SAFETY: a prefetch is a hint: it cannot fault or change memory,
    // whatever the address (the callers pass addresses in live memory).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
    let _ = p;
}

/// Calls `copy` on each chunk of `src` in order, after prefetching up to
/// [`AHEAD`] bytes beyond it; a short `src` is one chunk, not prefetched.
#[inline]
fn by_chunks<'a>(src: &'a [u8], mut copy: impl FnMut(usize, &'a [u8])) {
    if src.len() < PREFETCH_MIN || !PREFETCHES {
        copy(0, src);
        return;
    }
    let mut fetched = 0;
    for (i, chunk) in src.chunks(CHUNK).enumerate() {
        let start = i * CHUNK;
        let want = (start + chunk.len() + AHEAD).min(src.len());
        while fetched < want {
            prefetch(src[fetched..].as_ptr());
            fetched += LINE;
        }
        copy(start, chunk);
    }
}

/// Copies `src` into `dst`, which must be as long.
#[inline]
pub(crate) fn copy_out(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_out between unequal slices");
    by_chunks(src, |at, chunk| {
        dst[at..at + chunk.len()].copy_from_slice(chunk);
    });
}

/// Appends `src` to `dst`.
#[inline]
pub(crate) fn extend_out(dst: &mut Vec<u8>, src: &[u8]) {
    dst.reserve(src.len());
    by_chunks(src, |_, chunk| dst.extend_from_slice(chunk));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Around the threshold and the chunk and line boundaries, and odd
    /// sizes; Miri runs the small ones (its copies are plain anyway).
    fn sizes() -> Vec<usize> {
        let mut v = vec![0, 1, 63, 64, 65, CHUNK - 1, CHUNK, CHUNK + 1];
        if !cfg!(miri) {
            v.extend([
                PREFETCH_MIN - 1,
                PREFETCH_MIN,
                PREFETCH_MIN + 1,
                PREFETCH_MIN + CHUNK + 13,
                64 << 10,
                (1 << 20) + 5,
            ]);
        }
        v
    }

    #[test]
    fn copy_out_copies_every_byte_in_order() {
        for n in sizes() {
            let src = pattern(n);
            let mut dst = vec![0xeeu8; n];
            copy_out(&mut dst, &src);
            assert!(dst == src, "copy of {n} bytes differs");
        }
    }

    #[test]
    fn extend_out_appends_after_what_is_there() {
        for n in sizes() {
            let src = pattern(n);
            let mut dst = b"head".to_vec();
            extend_out(&mut dst, &src);
            assert_eq!(dst.len(), 4 + n);
            assert_eq!(&dst[..4], b"head");
            assert!(dst[4..] == src[..], "append of {n} bytes differs");
        }
    }

    #[test]
    #[should_panic(expected = "unequal")]
    fn copy_out_refuses_slices_of_different_lengths() {
        copy_out(&mut [0u8; 3], &[1u8; 4]);
    }
}
