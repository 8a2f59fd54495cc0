//! Creating and mapping the shared region: an unnamed, pagefile-backed file
//! mapping (`CreateFileMappingW(INVALID_HANDLE_VALUE, ..)` with no name), so
//! no other process can open it; it travels only as a handle duplicated by
//! the authenticated server.

use std::ffi::c_void;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr::NonNull;
use std::sync::Arc;

use ipc_core::{Error, Result};
use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, VirtualQuery, FILE_MAP_READ,
    FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, MEM_COMMIT, MEM_MAPPED,
    PAGE_READWRITE,
};
use windows_sys::Win32::System::ProcessStatus::K32GetMappedFileNameW;
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use crate::layout::{check_capacity, region_len, Control};
use crate::region::{Backing, Region};

/// A view of a file mapping, unmapped on drop.
#[derive(Debug)]
struct View {
    ptr: NonNull<u8>,
}

// SAFETY: the view is plain shared memory owned by this value; access is
// governed by Region's protocol.
unsafe impl Send for View {}
// SAFETY: as above.
unsafe impl Sync for View {}

impl Backing for View {}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the base of a view from MapViewOfFile, unmapped
        // once; the Region that used it is being dropped (we are its backing).
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
                Value: self.ptr.as_ptr().cast(),
            })
        };
    }
}

fn map_view(section: &OwnedHandle, len: usize) -> io::Result<View> {
    // SAFETY: maps `len` bytes of the section at an address the system
    // picks, so the view aliases no Rust memory; the call fails if the
    // section is smaller than `len` or the handle lacks read/write access.
    let addr = unsafe {
        MapViewOfFile(
            section.as_raw_handle(),
            FILE_MAP_READ | FILE_MAP_WRITE,
            0,
            0,
            len,
        )
    };
    match NonNull::new(addr.Value.cast::<u8>()) {
        Some(ptr) => Ok(View { ptr }),
        None => Err(io::Error::last_os_error()),
    }
}

/// Creates a region with rings of `capacity` bytes: the mapping and the
/// section handle for the peer to duplicate.
pub(crate) fn create(capacity: usize) -> Result<(Arc<Region>, OwnedHandle)> {
    check_capacity(capacity).map_err(Error::Protocol)?;
    let len = region_len(capacity);
    // SAFETY: INVALID_HANDLE_VALUE asks for a pagefile-backed section; no
    // security attributes (not inheritable) and no name (no other process
    // can open it); the size is split into its high and low halves.
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            ((len as u64) >> 32) as u32,
            len as u32,
            std::ptr::null(),
        )
    };
    if h.is_null() {
        return Err(Error::io(
            "creating the shared region (CreateFileMappingW)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `h` is a fresh, valid handle owned by nobody else.
    let section = unsafe { OwnedHandle::from_raw_handle(h) };
    let view = map_view(&section, len).map_err(|e| Error::io("mapping the shared region", e))?;
    let base = view.ptr;
    // The view is zero-filled by the system; capacity was checked.
    // SAFETY: the view is region_len(capacity) read/write bytes, aligned to
    // the allocation granularity (so to DATA_OFFSET), owned by the backing.
    let region = unsafe { Region::from_raw(base, capacity, Box::new(view)) };
    region.ctl().init(capacity);
    Ok((Arc::new(region), section))
}

/// Maps a region whose section comes from the peer, with rings of
/// `capacity` bytes, checking everything first: the peer is untrusted. The
/// section must be at least the region's size, committed memory (no page of
/// it can fault), not backed by a file (whose I/O errors would fault),
/// read/write, cached, and hold a valid header for `capacity`.
pub(crate) fn open(section: &OwnedHandle, capacity: usize) -> Result<Arc<Region>> {
    check_capacity(capacity).map_err(Error::Protocol)?;
    let len = region_len(capacity);
    let refuse = |why: String| Err(Error::Protocol(format!("the peer's shared region {why}")));
    let view = match map_view(section, len) {
        Ok(v) => v,
        Err(e) => {
            return refuse(format!(
                "cannot be mapped as {len} read/write bytes ({e}); it is too small or not a writable section"
            ))
        }
    };
    let base = view.ptr;
    // SAFETY: MEMORY_BASIC_INFORMATION is plain data; zeroed is a valid value.
    let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: queries our own address space at the view's base into `info`,
    // a valid out buffer of the given size.
    let n = unsafe {
        VirtualQuery(
            base.as_ptr() as *const c_void,
            &mut info,
            std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    if n == 0 {
        return refuse(format!(
            "cannot be inspected ({})",
            io::Error::last_os_error()
        ));
    }
    // Pages with the same state, protection and type form one region: the
    // first must span the whole view.
    if info.State != MEM_COMMIT || info.RegionSize < len {
        return refuse(
            "is not committed memory throughout (a reserved section could fault); refusing it"
                .into(),
        );
    }
    if info.Type != MEM_MAPPED || info.Protect != PAGE_READWRITE {
        return refuse(format!(
            "has type {:#x} and protection {:#x}, not a cached read/write mapping; refusing it",
            info.Type, info.Protect
        ));
    }
    let mut name = [0u16; 64];
    // SAFETY: asks for the file behind our own view into a buffer of the
    // given length; the pseudo handle of the current process needs no
    // closing.
    let file = unsafe {
        K32GetMappedFileNameW(
            GetCurrentProcess(),
            base.as_ptr() as *const c_void,
            name.as_mut_ptr(),
            name.len() as u32,
        )
    };
    if file != 0 {
        return refuse(
            "is backed by a file, not the paging file (its I/O errors would fault); refusing it"
                .into(),
        );
    }
    // SAFETY: the first DATA_OFFSET bytes are mapped and committed (checked
    // above, len > DATA_OFFSET) and aligned; Control is all atomics, valid
    // for any bytes; the view lives until `view` is dropped, after this use.
    let ctl = unsafe { base.cast::<Control>().as_ref() };
    let got = ctl
        .validate(len)
        .map_err(|e| Error::Corrupt(format!("shared region header: {e}")))?;
    if got != capacity {
        return Err(Error::Protocol(format!(
            "the peer's shared region has rings of {got} bytes, the server offered {capacity}"
        )));
    }
    // SAFETY: capacity is a valid ring capacity and the view holds
    // region_len(capacity) committed bytes; a section never shrinks, and
    // the view stays mapped until the Region's backing is dropped.
    let region = unsafe { Region::from_raw(base, capacity, Box::new(view)) };
    Ok(Arc::new(region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MIN_RING_CAPACITY;

    #[test]
    fn created_region_reopens_through_its_section() {
        let (r, section) = create(MIN_RING_CAPACITY).unwrap();
        let r2 = open(&section, MIN_RING_CAPACITY).unwrap();
        assert_eq!(r2.capacity(), r.capacity());
        r.ctl().bells[0]
            .0
            .seq
            .store(42, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            r2.ctl().bells[0]
                .0
                .seq
                .load(std::sync::atomic::Ordering::SeqCst),
            42
        );
    }

    #[test]
    fn bad_sections_are_refused() {
        // Too small for the rings offered.
        let (_r, section) = create(MIN_RING_CAPACITY).unwrap();
        let e = open(&section, MIN_RING_CAPACITY * 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be mapped"), "{e}");
        // A header that claims other rings than offered.
        let (r, section) = create(MIN_RING_CAPACITY * 2).unwrap();
        let e = open(&section, MIN_RING_CAPACITY).unwrap_err().to_string();
        assert!(e.contains("need") || e.contains("offered"), "{e}");
        drop(r);
        // Garbage in the header.
        let (r, section) = create(MIN_RING_CAPACITY).unwrap();
        r.ctl()
            .header
            .0
            .magic
            .store(7, std::sync::atomic::Ordering::SeqCst);
        let e = open(&section, MIN_RING_CAPACITY).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
    }
}
