//! Creating, checking and removing filesystem endpoints (socket files and
//! FIFOs) safely: never more open than asked, never replacing what is not
//! ours to replace.

use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_core::{Error, Result};
use rustix::fs::FileType;

use crate::sys::{self, FileId, Meta, Probe, Stamp};

/// The kind of node an endpoint is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Socket,
    Fifo,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Socket => "socket",
            Kind::Fifo => "FIFO",
        }
    }
}

/// A path split into its opened parent directory and its file name.
#[derive(Debug)]
pub(crate) struct Location {
    /// The path as the user gave it, for messages and for `bind`/`connect`.
    pub(crate) path: PathBuf,
    /// The parent directory's path (`.` for a bare file name).
    pub(crate) dir_path: PathBuf,
    /// The parent directory, opened: every later step works relative to it,
    /// so renaming or replacing a directory higher up cannot redirect us.
    pub(crate) dir: OwnedFd,
    /// The last path component.
    pub(crate) name: OsString,
}

impl Location {
    /// Opens the parent of `path` and checks that an endpoint can be created
    /// in it safely.
    pub(crate) fn open(path: &Path, endpoint: &str) -> Result<Location> {
        let name = match path.file_name() {
            Some(n) if !path.as_os_str().as_bytes().ends_with(b"/") => n.to_owned(),
            _ => {
                return Err(Error::io(
                    format!("{endpoint}: the path does not end in a file name"),
                    io::ErrorKind::InvalidInput.into(),
                ))
            }
        };
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let dir = sys::open_dir(&dir_path).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => "; create the directory first",
                io::ErrorKind::PermissionDenied => "; you may not use this directory",
                _ => "",
            };
            Error::io(
                format!(
                    "{endpoint}: cannot open its directory {}{hint}",
                    dir_path.display()
                ),
                e,
            )
        })?;
        let meta = sys::fstat(&dir).map_err(|e| Error::io(format!("{endpoint}: fstat"), e))?;
        let world_writable = meta.perm & 0o002 != 0;
        let sticky = meta.perm & 0o1000 != 0;
        if world_writable && !sticky {
            return Err(Error::Insecure {
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "its directory {} is writable by every user and has no sticky bit, so anyone \
                     could replace the endpoint; use a private directory such as $XDG_RUNTIME_DIR \
                     (or chmod +t the directory)",
                    dir_path.display()
                ),
            });
        }
        Ok(Location {
            path: path.to_owned(),
            dir_path,
            dir,
            name,
        })
    }

    /// The metadata of whatever is at the path, without following a symlink.
    pub(crate) fn lstat(&self) -> io::Result<Option<Meta>> {
        match sys::lstat_at(&self.dir, &self.name) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the node at the path if it is still `id`.
    ///
    /// The check and the unlink are two calls; a process that can write to
    /// the directory could swap the node in between, which a sticky or
    /// private directory (enforced at bind) rules out for other users.
    pub(crate) fn remove_if(&self, stamp: Stamp) -> io::Result<bool> {
        match self.lstat()? {
            Some(m) if m.stamp() == stamp => match sys::unlink_at(&self.dir, &self.name) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
            _ => Ok(false),
        }
    }
}

/// What is at an endpoint path before we create ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    Nothing,
    /// A node of our kind whose owner is gone; safe to replace.
    Stale(FileId),
}

/// Looks at the endpoint path and decides whether it may be (re)placed.
///
/// - nothing there: fine;
/// - a symlink: refused (`Insecure`), never followed or deleted;
/// - a socket (FIFO): probed; no listener (reader) means stale, a live one is
///   `AddressInUse`;
/// - anything else: `NotASocket`, never deleted.
pub(crate) fn inspect(loc: &Location, kind: Kind, endpoint: &str) -> Result<Existing> {
    let meta = loc
        .lstat()
        .map_err(|e| Error::io(format!("{endpoint}: cannot inspect the path"), e))?;
    let Some(meta) = meta else {
        return Ok(Existing::Nothing);
    };
    match meta.file_type {
        FileType::Symlink => Err(Error::Insecure {
            endpoint: endpoint.to_owned(),
            reason: format!(
                "{} is a symbolic link; an endpoint is never created through or over a link \
                 (remove it yourself or choose another path)",
                loc.path.display()
            ),
        }),
        FileType::Socket if kind == Kind::Socket => match sys::probe(&loc.path) {
            Ok(Probe::Live) => Err(Error::AddressInUse {
                endpoint: endpoint.to_owned(),
            }),
            Ok(Probe::Refused) => Ok(Existing::Stale(meta.id)),
            Ok(Probe::Gone) => Ok(Existing::Nothing),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(Error::PermissionDenied {
                endpoint: endpoint.to_owned(),
            }),
            Err(e) => Err(Error::io(
                format!("{endpoint}: probing the existing socket"),
                e,
            )),
        },
        FileType::Fifo if kind == Kind::Fifo => {
            if meta.uid != sys::euid() {
                return Err(Error::Insecure {
                    endpoint: endpoint.to_owned(),
                    reason: format!(
                        "the existing FIFO belongs to uid {}, not to us; remove it or choose \
                         another path",
                        meta.uid
                    ),
                });
            }
            // A FIFO is live while a reader has it open: opening it for
            // writing without blocking succeeds exactly then.
            match sys::open_fifo(&loc.dir, Path::new(&loc.name), true) {
                Ok(_) => Err(Error::AddressInUse {
                    endpoint: endpoint.to_owned(),
                }),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(Existing::Stale(meta.id)),
                Err(e) => Err(Error::io(
                    format!("{endpoint}: probing the existing FIFO"),
                    e,
                )),
            }
        }
        _ if kind == Kind::Socket => Err(Error::NotASocket {
            path: loc.path.display().to_string(),
        }),
        _ => Err(Error::io(
            format!(
                "{} exists and is not a {}; refusing to replace it (remove it yourself or \
                 choose another path)",
                loc.path.display(),
                kind.noun()
            ),
            io::ErrorKind::AlreadyExists.into(),
        )),
    }
}

/// A private directory (mode 0700) next to the endpoint, where the endpoint
/// is created and given its final mode before it is moved into place.
///
/// Being in the endpoint's own directory, it is on the same filesystem, so
/// the final move is an atomic rename. Dropping it removes only what this
/// process put there.
#[derive(Debug)]
pub(crate) struct Staging {
    /// Name of the staging directory inside the endpoint's directory.
    name: String,
    /// The staging directory, opened.
    pub(crate) dir: OwnedFd,
    /// `<endpoint dir>/<name>`, for `bind`.
    pub(crate) path: PathBuf,
    parent: OwnedFd,
}

/// Name of the endpoint inside the staging directory.
pub(crate) const STAGED: &str = "s";
/// Name a stale endpoint is moved to before it is deleted.
const RETIRED: &str = "t";

impl Staging {
    /// Creates the staging directory next to `loc`.
    pub(crate) fn create(loc: &Location, endpoint: &str) -> Result<Staging> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let parent = loc
            .dir
            .try_clone()
            .map_err(|e| Error::io(format!("{endpoint}: dup"), e))?;
        let mut last_err = None;
        for _ in 0..16 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            let name = format!(".{}", base36(h.finish(), 6));
            match sys::mkdir_exact(&loc.dir, &name, 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last_err = Some(e);
                    continue;
                }
                Err(e) => {
                    let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                        " (the directory must be writable by this user)"
                    } else {
                        ""
                    };
                    return Err(Error::io(
                        format!(
                            "{endpoint}: cannot create a private directory in {}{hint}",
                            loc.dir_path.display()
                        ),
                        e,
                    ));
                }
            }
            let dir = match sys::open_dir_at(&loc.dir, &name) {
                Ok(d) => d,
                Err(e) => {
                    let _ = sys::rmdir_at(&loc.dir, &name);
                    return Err(Error::io(format!("{endpoint}: opening {name}"), e));
                }
            };
            return Ok(Staging {
                path: loc.dir_path.join(&name),
                name,
                dir,
                parent,
            });
        }
        Err(Error::io(
            format!(
                "{endpoint}: cannot find a free name for a private directory in {}",
                loc.dir_path.display()
            ),
            last_err.unwrap_or_else(|| io::ErrorKind::AlreadyExists.into()),
        ))
    }

    /// The length in bytes of the staged socket path, `<dir>/.xxxxxx/s`.
    pub(crate) fn staged_path_len(loc: &Location) -> usize {
        loc.dir_path.as_os_str().len() + 1 + 7 + 1 + STAGED.len()
    }

    /// Moves the staged node to the endpoint path, replacing a stale one,
    /// never anything else. Returns the identity of the node now at the path.
    pub(crate) fn publish(
        &self,
        loc: &Location,
        kind: Kind,
        mut existing: Existing,
        endpoint: &str,
    ) -> Result<()> {
        for _ in 0..8 {
            if let Existing::Stale(id) = existing {
                self.retire(loc, id, endpoint)?;
            }
            match sys::rename_noreplace(&self.dir, STAGED, &loc.dir, &loc.name) {
                Ok(()) => return Ok(()),
                // Something appeared at the path since we looked: look again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    existing = inspect(loc, kind, endpoint)?;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("{endpoint}: moving the new {} into place", kind.noun()),
                        e,
                    ))
                }
            }
        }
        Err(Error::AddressInUse {
            endpoint: endpoint.to_owned(),
        })
    }

    /// Takes a stale endpoint off the path and deletes it, if it is still the
    /// node that was probed (`id`). The move is atomic, so a server that put
    /// a live endpoint there in the meantime gets it back untouched.
    fn retire(&self, loc: &Location, id: FileId, endpoint: &str) -> Result<()> {
        match sys::rename_at(&loc.dir, &loc.name, &self.dir, RETIRED) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Another user's stale socket in a sticky directory such as /tmp.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Error::PermissionDenied {
                    endpoint: format!("{endpoint} (a stale endpoint left by another user)"),
                })
            }
            Err(e) => {
                return Err(Error::io(
                    format!("{endpoint}: removing the stale endpoint"),
                    e,
                ))
            }
        }
        let moved = sys::lstat_at(&self.dir, RETIRED).ok();
        if moved.is_some_and(|m| m.id == id) {
            tracing::info!(%endpoint, "replacing a stale endpoint left by a server that exited");
            sys::unlink_at(&self.dir, RETIRED)
                .map_err(|e| Error::io(format!("{endpoint}: deleting the stale endpoint"), e))?;
            return Ok(());
        }
        // Not the node we probed: someone replaced it in between. Put it back.
        if let Err(e) = sys::rename_noreplace(&self.dir, RETIRED, &loc.dir, &loc.name) {
            tracing::warn!(%endpoint, error = %e, staging = %self.path.display(),
                "could not restore an endpoint that appeared while replacing a stale one; \
                 it was left in the staging directory");
        }
        Err(Error::AddressInUse {
            endpoint: endpoint.to_owned(),
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Only our own node, and the directory if it is then empty: a node
        // restored by `retire` that could not be put back is never deleted.
        let _ = sys::unlink_at(&self.dir, STAGED);
        if let Err(e) = sys::rmdir_at(&self.parent, &self.name) {
            tracing::warn!(dir = %self.path.display(), error = %e,
                "could not remove a private staging directory");
        }
    }
}

fn base36(mut v: u64, len: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| {
            let d = DIGITS[(v % 36) as usize] as char;
            v /= 36;
            d
        })
        .collect()
}

/// Checks the length of a socket path up front, including the room needed
/// for the staged path.
pub(crate) fn check_socket_path_len(path: &Path, staged_len: Option<usize>) -> Result<()> {
    let len = path.as_os_str().len();
    let max = sys::MAX_PATH_LEN;
    if len > max {
        return Err(Error::PathTooLong {
            path: path.display().to_string(),
            len,
            max,
        });
    }
    if let Some(staged) = staged_len.filter(|&s| s > max) {
        // A short file name deep in the tree: the staging path
        // `<dir>/.xxxxxx/s` is longer than the final one.
        return Err(Error::PathTooLong {
            path: path.display().to_string(),
            len,
            max: max - (staged - len),
        });
    }
    Ok(())
}

/// Whether `meta` is what we asked for.
pub(crate) fn verify(
    meta: &Meta,
    kind: Kind,
    mode: u32,
    group: Option<u32>,
    endpoint: &str,
) -> Result<()> {
    let type_ok = match kind {
        Kind::Socket => meta.file_type == FileType::Socket,
        Kind::Fifo => meta.file_type == FileType::Fifo,
    };
    let problem = if !type_ok {
        Some(format!("the new node is not a {}", kind.noun()))
    } else if meta.perm != mode {
        Some(format!(
            "its mode is {:04o} after setting {:04o} (does the filesystem support modes?)",
            meta.perm, mode
        ))
    } else if meta.uid != sys::euid() {
        Some(format!("it is owned by uid {}, not by us", meta.uid))
    } else if group.is_some_and(|g| g != meta.gid) {
        Some(format!(
            "its group is {}, not {}",
            meta.gid,
            group.unwrap_or(0)
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(reason) => Err(Error::Insecure {
            endpoint: endpoint.to_owned(),
            reason,
        }),
    }
}

/// Checks a permission mode given by the user.
pub(crate) fn check_mode(mode: u32, endpoint: &str) -> Result<()> {
    if mode & !0o777 != 0 {
        return Err(Error::io(
            format!(
                "{endpoint}: mode {mode:o} has bits other than read/write/execute (0o777); \
                 use a mode such as 0o600 or 0o660"
            ),
            io::ErrorKind::InvalidInput.into(),
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(Error::io(
            format!("{endpoint}: mode {mode:o} would lock out the owner; it must include 0o600"),
            io::ErrorKind::InvalidInput.into(),
        ));
    }
    Ok(())
}

/// A filesystem endpoint this process created and must clean up: removed on
/// drop if (and only if) the node at the path is still the one we created,
/// and only by the process that created it (not by a forked child).
#[derive(Debug)]
pub(crate) struct Owned {
    pub(crate) loc: Location,
    pub(crate) stamp: Stamp,
    pid: u32,
}

impl Owned {
    pub(crate) fn new(loc: Location, stamp: Stamp) -> Owned {
        Owned {
            loc,
            stamp,
            pid: std::process::id(),
        }
    }

    /// Removes the endpoint if it is still ours; `Ok(false)` if it was gone
    /// or replaced by someone else's.
    pub(crate) fn remove(&self) -> io::Result<bool> {
        if self.pid != std::process::id() {
            return Ok(false);
        }
        self.loc.remove_if(self.stamp)
    }
}

/// An advisory exclusive lock on the endpoint's directory (`flock` on the
/// directory itself), held while deciding about and replacing the node at
/// the path.
struct DirLock<'a> {
    loc: &'a Location,
}

impl<'a> DirLock<'a> {
    /// How long to wait for other binders before going ahead unlocked; the
    /// lock is held for microseconds, so waiting this long means a process
    /// holds it on purpose, and the rename-and-check in `retire` still keeps
    /// other servers' sockets safe without it.
    const PATIENCE: Duration = Duration::from_secs(2);

    fn acquire(loc: &'a Location, endpoint: &str) -> Option<DirLock<'a>> {
        let start = Instant::now();
        let mut nap = Duration::from_micros(100);
        loop {
            match sys::try_lock(&loc.dir) {
                Ok(true) => return Some(DirLock { loc }),
                Ok(false) if start.elapsed() < Self::PATIENCE => {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(20));
                }
                Ok(false) => {
                    tracing::warn!(%endpoint, dir = %loc.dir_path.display(),
                        "another process holds the directory lock; going ahead without it");
                    return None;
                }
                // Filesystems without flock support: go ahead without it.
                Err(e) => {
                    tracing::debug!(%endpoint, error = %e, "cannot lock the directory");
                    return None;
                }
            }
        }
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        sys::unlock(&self.loc.dir);
    }
}

/// Creates the staging dir, binds or makes the node there with `make`, sets
/// group and mode, verifies them and publishes the node at `loc`.
pub(crate) fn create_node<T>(
    loc: &Location,
    kind: Kind,
    mode: u32,
    group: Option<u32>,
    endpoint: &str,
    make: impl FnOnce(&Staging) -> Result<T>,
) -> Result<(T, Stamp)> {
    let existing = inspect(loc, kind, endpoint)?;
    let staging = Staging::create(loc, endpoint)?;
    let made = make(&staging)?;
    if let Some(gid) = group {
        sys::chgrp_at(&staging.dir, STAGED, gid).map_err(|e| {
            Error::io(
                format!(
                    "{endpoint}: cannot give the {} to group {gid} (you must be a member of it, \
                     or root)",
                    kind.noun()
                ),
                e,
            )
        })?;
    }
    sys::chmod_at(&staging.dir, STAGED, mode)
        .map_err(|e| Error::io(format!("{endpoint}: setting mode {mode:o}"), e))?;
    let meta = sys::lstat_at(&staging.dir, STAGED)
        .map_err(|e| Error::io(format!("{endpoint}: checking the new {}", kind.noun()), e))?;
    verify(&meta, kind, mode, group, endpoint)?;
    // Binders using this crate take turns from the last look at the path to
    // the rename, so one never retires a socket another has just published.
    let lock = DirLock::acquire(loc, endpoint);
    let existing = if lock.is_some() {
        inspect(loc, kind, endpoint)?
    } else {
        existing
    };
    staging.publish(loc, kind, existing, endpoint)?;
    // The rename kept the inode; make sure the path now names it, and
    // record its identity as it is now (the rename changed its ctime).
    let published = loc.lstat();
    drop(lock);
    match published {
        Ok(Some(m)) if m.id == meta.id => Ok((made, m.stamp())),
        _ => Err(Error::Insecure {
            endpoint: endpoint.to_owned(),
            reason: "the endpoint was replaced right after it was created".into(),
        }),
    }
}
