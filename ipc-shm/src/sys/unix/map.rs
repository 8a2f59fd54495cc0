//! Creating and mapping the shared region: an anonymous memfd sealed
//! against resizing on Linux, an immediately unlinked `shm_open` object
//! elsewhere. No name of the region stays visible to other processes; it
//! travels only as a file descriptor over the authenticated socket.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::Arc;

use ipc_core::{Error, Result};
use rustix::mm::{MapFlags, ProtFlags};

use crate::layout::{region_len, Control, DATA_OFFSET, MAX_RING_CAPACITY, MIN_RING_CAPACITY};
use crate::region::{Backing, Region};

/// A shared mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; access is
// governed by Region's protocol.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Backing for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped once;
        // the Region that used them is being dropped (we are its backing).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn io(context: &str) -> impl FnOnce(rustix::io::Errno) -> Error + '_ {
    move |e| Error::io(context.to_owned(), e.into())
}

fn map(fd: &OwnedFd, len: usize) -> Result<Mapping> {
    // SAFETY: a fresh shared mapping chosen by the kernel (null hint), so it
    // aliases no Rust memory; `len` is the size of the file (checked by the
    // callers), so every mapped page is backed.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(io("mapping the shared region"))?;
    let ptr = NonNull::new(ptr.cast::<u8>())
        .ok_or_else(|| Error::Protocol("mmap returned a null mapping".into()))?;
    Ok(Mapping { ptr, len })
}

/// Creates a region with rings of `capacity` bytes: the mapping and the file
/// descriptor to hand to the peer.
pub(crate) fn create(capacity: usize) -> Result<(Arc<Region>, OwnedFd)> {
    crate::layout::check_capacity(capacity).map_err(Error::Protocol)?;
    let len = region_len(capacity);
    let fd = anonymous_file(len)?;
    let mapping = map(&fd, len)?;
    let base = mapping.ptr;
    // SAFETY: the mapping is len = region_len(capacity) bytes, page aligned
    // (hence DATA_OFFSET aligned), zero-filled by the kernel, readable and
    // writable, and owned by the Region's backing; capacity was checked.
    let region = unsafe { Region::from_raw(base, capacity, Box::new(mapping)) };
    region.ctl().init(capacity);
    Ok((Arc::new(region), fd))
}

/// Maps a region received from the peer, checking everything first: the
/// peer is untrusted.
pub(crate) fn open(fd: OwnedFd) -> Result<Arc<Region>> {
    let st = rustix::fs::fstat(&fd).map_err(io("inspecting the shared region"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(Error::Protocol(
            "the server sent a descriptor that is not a shared-memory file".into(),
        ));
    }
    check_sealed(&fd)?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let (min, max) = (
        region_len(MIN_RING_CAPACITY) as u64,
        region_len(MAX_RING_CAPACITY) as u64,
    );
    if size < min || size > max {
        return Err(Error::Protocol(format!(
            "the shared region is {size} bytes, outside {min}..={max}"
        )));
    }
    let mapping = map(&fd, size as usize)?;
    let base = mapping.ptr;
    // SAFETY: the first DATA_OFFSET bytes are mapped (size >= min > DATA_OFFSET)
    // and page aligned; Control is all atomics, valid for any bytes; the
    // mapping lives until `mapping` is dropped, after this use.
    let ctl = unsafe { base.cast::<Control>().as_ref() };
    let capacity = ctl
        .validate(size as usize)
        .map_err(|e| Error::Corrupt(format!("shared region header: {e}")))?;
    debug_assert!(DATA_OFFSET + 2 * capacity <= size as usize);
    // SAFETY: validate checked capacity is a valid ring capacity and the
    // mapping holds region_len(capacity) bytes; the file cannot shrink
    // (sealed on Linux; fixed size once set on other systems).
    let region = unsafe { Region::from_raw(base, capacity, Box::new(mapping)) };
    Ok(Arc::new(region))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn anonymous_file(len: usize) -> Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create("ipc-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(io("creating the shared region (memfd_create)"))?;
    rustix::fs::ftruncate(&fd, len as u64).map_err(io("sizing the shared region"))?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(io("sealing the shared region"))?;
    Ok(fd)
}

/// Linux: the region must be sealed against shrinking, or the peer could
/// truncate it under our mapping and make our reads fault.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn check_sealed(fd: &OwnedFd) -> Result<()> {
    use rustix::fs::SealFlags;
    let seals = rustix::fs::fcntl_get_seals(fd)
        .map_err(|_| Error::Protocol("the shared region is not a sealable memfd".into()))?;
    if !seals.contains(SealFlags::SHRINK) {
        return Err(Error::Protocol(
            "the shared region is not sealed against shrinking; refusing to map it".into(),
        ));
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn anonymous_file(len: usize) -> Result<OwnedFd> {
    use rustix::fs::Mode;
    use rustix::shm;
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..16 {
        // std's per-process random hash keys give an unguessable name; it is
        // unlinked before anyone could learn it.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let name = format!("/ipcshm.{:016x}", h.finish());
        match shm::open(
            name.as_str(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        ) {
            Ok(fd) => {
                let _ = shm::unlink(name.as_str());
                rustix::fs::ftruncate(&fd, len as u64).map_err(io("sizing the shared region"))?;
                return Ok(fd);
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(Error::io("creating the shared region (shm_open)", e.into())),
        }
    }
    Err(Error::Protocol(
        "could not pick an unused shared-memory name".into(),
    ))
}

/// Other systems: a POSIX shared-memory object's size is fixed once set.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn check_sealed(_fd: &OwnedFd) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no memfd or mmap of files")]
    fn created_region_reopens_and_is_sealed() {
        let (r, fd) = create(MIN_RING_CAPACITY).unwrap();
        let r2 = open(fd.try_clone().unwrap()).unwrap();
        assert_eq!(r2.capacity(), r.capacity());
        // Writes through one mapping are seen through the other.
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
        #[cfg(target_os = "linux")]
        assert!(
            rustix::fs::ftruncate(&fd, 0).is_err(),
            "shrinking must be refused"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[cfg_attr(miri, ignore = "Miri has no memfd or mmap of files")]
    fn unsealed_or_bad_regions_are_refused() {
        use rustix::fs::MemfdFlags;
        // Not sealed.
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, region_len(MIN_RING_CAPACITY) as u64).unwrap();
        let e = open(fd).unwrap_err().to_string();
        assert!(e.contains("seal"), "{e}");
        // Sealed but with a garbage header.
        let fd = anonymous_file(region_len(MIN_RING_CAPACITY)).unwrap();
        let e = open(fd).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
        // A header that claims more than the file holds.
        let (r, fd) = create(MIN_RING_CAPACITY).unwrap();
        r.ctl()
            .header
            .0
            .capacity
            .store(1 << 20, std::sync::atomic::Ordering::SeqCst);
        let e = open(fd).unwrap_err().to_string();
        assert!(e.contains("need"), "{e}");
    }
}
