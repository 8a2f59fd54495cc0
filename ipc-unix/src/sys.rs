//! Thin wrappers over the system calls this crate uses, all through `rustix`
//! (safe) except `mkfifo` on Apple platforms, where rustix has no binding.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// Identity of a filesystem object: device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

/// Identity of one particular file: its [`FileId`] plus its status-change
/// time. Inode numbers are reused once a file is deleted, so `FileId`
/// alone could mistake a newer file for ours; the ctime tells them apart
/// (it changes on chmod, chown, link and rename, which only makes us more
/// careful: we then leave the file alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    id: FileId,
    ctime: (i64, i64),
}

/// The fields of `stat` this crate looks at, with portable types.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) id: FileId,
    pub(crate) file_type: FileType,
    /// Permission bits, `st_mode & 0o7777`.
    pub(crate) perm: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    ctime: (i64, i64),
}

impl Meta {
    // The integer types of `stat` fields differ between platforms; on some the
    // casts below are to the same type.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &rustix::fs::Stat) -> Meta {
        Meta {
            id: FileId {
                dev: st.st_dev as u64,
                ino: st.st_ino as u64,
            },
            file_type: FileType::from_raw_mode(st.st_mode as _),
            perm: (st.st_mode as u32) & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    pub(crate) fn stamp(&self) -> Stamp {
        Stamp {
            id: self.id,
            ctime: self.ctime,
        }
    }
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn lstat_at(dir: impl AsFd, name: impl AsRef<Path>) -> io::Result<Meta> {
    let st = rustix::fs::statat(dir, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(Meta::from_stat(&st))
}

/// `fstat(fd)`.
pub(crate) fn fstat(fd: impl AsFd) -> io::Result<Meta> {
    Ok(Meta::from_stat(&rustix::fs::fstat(fd)?))
}

/// Opens a directory for use as the base of `*at` calls.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::OFlags;
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` inside `dir`, not following a symlink.
pub(crate) fn open_dir_at(dir: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    use rustix::fs::OFlags;
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates a directory with exactly `mode`, whatever the umask: `mkdir`
/// applies the umask, which can only remove bits, so the directory is never
/// more open than `mode`; `chmod` then restores the bits the umask removed.
pub(crate) fn mkdir_exact(dir: impl AsFd, name: &str, mode: u32) -> io::Result<()> {
    let dir = dir.as_fd();
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode as _))?;
    rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode as _), AtFlags::empty())?;
    Ok(())
}

pub(crate) fn chmod_at(dir: impl AsFd, name: &str, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::chmodat(
        dir,
        name,
        Mode::from_raw_mode(mode as _),
        AtFlags::empty(),
    )?)
}

pub(crate) fn chgrp_at(dir: impl AsFd, name: &str, gid: u32) -> io::Result<()> {
    let gid = rustix::fs::Gid::from_raw(gid as _);
    Ok(rustix::fs::chownat(
        dir,
        name,
        None,
        Some(gid),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

pub(crate) fn unlink_at(dir: impl AsFd, name: impl AsRef<Path>) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name.as_ref(), AtFlags::empty())?)
}

pub(crate) fn rmdir_at(dir: impl AsFd, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

pub(crate) fn rename_at(
    from_dir: impl AsFd,
    from: impl AsRef<Path>,
    to_dir: impl AsFd,
    to: impl AsRef<Path>,
) -> io::Result<()> {
    Ok(rustix::fs::renameat(
        from_dir,
        from.as_ref(),
        to_dir,
        to.as_ref(),
    )?)
}

/// Moves `from` to `to` atomically, failing with `AlreadyExists` instead of
/// replacing anything at `to`.
///
/// Uses `renameat2(RENAME_NOREPLACE)` (Linux) or `renameatx_np(RENAME_EXCL)`
/// (Apple) where available, and `link` + `unlink` elsewhere or when the
/// filesystem does not support the flag; `link` never replaces either.
pub(crate) fn rename_noreplace(
    from_dir: impl AsFd,
    from: &str,
    to_dir: impl AsFd,
    to: impl AsRef<Path>,
) -> io::Result<()> {
    let (from_dir, to_dir) = (from_dir.as_fd(), to_dir.as_fd());
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        use rustix::fs::RenameFlags;
        match rustix::fs::renameat_with(from_dir, from, to_dir, to.as_ref(), RenameFlags::NOREPLACE)
        {
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            other => return Ok(other?),
        }
    }
    rustix::fs::linkat(from_dir, from, to_dir, to.as_ref(), AtFlags::empty())?;
    unlink_at(from_dir, from)
}

/// Creates a FIFO with `mode` (minus the umask).
pub(crate) fn mkfifo_at(dir: impl AsFd, name: &Path, mode: u32) -> io::Result<()> {
    #[cfg(not(target_vendor = "apple"))]
    {
        Ok(rustix::fs::mkfifoat(
            dir,
            name,
            Mode::from_raw_mode(mode as _),
        )?)
    }
    #[cfg(target_vendor = "apple")]
    {
        use std::ffi::CString;
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let name = CString::new(name.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        let (fd, mode) = (dir.as_fd().as_raw_fd(), mode as libc::mode_t);
        // SAFETY: `fd` is open for the call (borrowed through `AsFd`) and
        // `name` is NUL-terminated and outlives it; nothing else is read.
        let rc = unsafe { libc::mkfifoat(fd, name.as_ptr(), mode) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Opens a FIFO without blocking and without following a symlink.
pub(crate) fn open_fifo(dir: impl AsFd, name: &Path, write: bool) -> io::Result<OwnedFd> {
    use rustix::fs::OFlags;
    let access = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY
    };
    Ok(rustix::fs::openat(
        dir,
        name,
        access | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Tries to take an exclusive `flock` on `fd` without blocking: `Ok(true)`
/// when taken, `Ok(false)` when another holder has it.
pub(crate) fn try_lock(fd: impl AsFd) -> io::Result<bool> {
    use rustix::fs::FlockOperation;
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn unlock(fd: impl AsFd) {
    let _ = rustix::fs::flock(fd, rustix::fs::FlockOperation::Unlock);
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The longest socket path, in bytes, that fits `sockaddr_un.sun_path` with
/// its terminating NUL (107 on Linux, 103 on macOS and the BSDs).
pub(crate) const MAX_PATH_LEN: usize = std::mem::size_of::<libc::sockaddr_un>()
    - std::mem::offset_of!(libc::sockaddr_un, sun_path)
    - 1;

/// A new close-on-exec stream socket, blocking or not.
pub(crate) fn stream_socket(nonblocking: bool) -> io::Result<OwnedFd> {
    #[cfg(not(target_vendor = "apple"))]
    {
        let mut flags = SocketFlags::CLOEXEC;
        if nonblocking {
            flags |= SocketFlags::NONBLOCK;
        }
        Ok(rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            flags,
            None,
        )?)
    }
    #[cfg(target_vendor = "apple")]
    {
        // Apple has no SOCK_CLOEXEC/SOCK_NONBLOCK; set them right after.
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::empty(),
            None,
        )?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        if nonblocking {
            rustix::io::ioctl_fionbio(&fd, true)?;
        }
        Ok(fd)
    }
}

/// A socket address for `path`; the caller has checked its length.
pub(crate) fn unix_addr(path: &Path) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new(path)?)
}

/// A Linux abstract-namespace socket address.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn abstract_addr(name: &str) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(name.as_bytes())?)
}

/// Binds `fd` to `addr` and starts listening.
pub(crate) fn bind_listen(fd: &OwnedFd, addr: &SocketAddrUnix, backlog: u32) -> io::Result<()> {
    rustix::net::bind(fd, addr)?;
    rustix::net::listen(fd, i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(())
}

/// What a connection attempt found at a socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A server accepted (or queued) the connection.
    Live,
    /// The socket exists but nothing listens on it: its server is gone.
    Refused,
    /// Nothing is at the path any more.
    Gone,
}

/// Probes a socket path with a non-blocking connect, which never waits:
/// a full accept queue (`EAGAIN`) also means a live server.
pub(crate) fn probe(path: &Path) -> io::Result<Probe> {
    use rustix::io::Errno;
    let fd = stream_socket(true)?;
    match rustix::net::connect(&fd, &unix_addr(path)?) {
        Ok(()) | Err(Errno::INPROGRESS | Errno::AGAIN) => Ok(Probe::Live),
        Err(Errno::CONNREFUSED) => Ok(Probe::Refused),
        Err(Errno::NOENT) => Ok(Probe::Gone),
        Err(e) => Err(e.into()),
    }
}
