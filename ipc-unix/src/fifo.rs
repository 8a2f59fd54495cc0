//! FIFOs (named pipes): one-way byte streams between processes, for logs and
//! event feeds where a socket's two-way connection is more than needed.
//!
//! [`create`] makes the FIFO with an exact mode (default practice: `0o600`)
//! under the same rules as socket files: it is made in a private directory,
//! given its mode, checked and renamed into place; a symlink or non-FIFO at
//! the path is never replaced; an existing FIFO that some process reads is
//! in use, one nobody reads is stale and replaced. The returned [`Fifo`]
//! removes the file on drop if it is still the one it created.
//!
//! A [`FifoReader`] reads until every writer has closed (end of stream), or,
//! opened with [`FifoReader::open_persistent`], waits for the next writer
//! instead; a [`FifoWriter`] can only open while a reader has the FIFO open, and gets
//! a broken-pipe error once the last reader is gone. Writes of up to
//! `PIPE_BUF` bytes (at least 512; 4096 on Linux) are atomic, so lines from
//! several writers do not interleave.
//!
//! Unlike a socket, a FIFO carries no peer credentials: its mode is all that
//! keeps other users out.
//!
//! # Examples
//!
//! ```no_run
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ipc_core::Result<()> {
//! // The consumer creates the FIFO and reads it.
//! let fifo = ipc_unix::fifo::create("/run/node/events.fifo", 0o600)?;
//! let reader = fifo.open_reader()?;
//!
//! // A producer (usually another process) writes lines to it.
//! let mut writer = ipc_unix::fifo::FifoWriter::open("/run/node/events.fifo")?;
//! writer.write_all(b"started\n").await?;
//! drop(writer);
//!
//! let mut lines = BufReader::new(reader).lines();
//! while let Some(line) = lines.next_line().await? {
//!     println!("event: {line}");
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use ipc_core::{Error, Result};
use rustix::fs::FileType;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

use crate::endpoint::{self, Kind, Location, Owned, STAGED};
use crate::listener::require_runtime;
use crate::sys::{self, Stamp};

/// Creates a FIFO at `path` with exactly `mode` (for example `0o600`).
///
/// # Errors
///
/// - [`Error::AddressInUse`]: a FIFO is there and a process has it open for
///   reading.
/// - [`Error::Insecure`]: the path is a symlink, the existing FIFO belongs
///   to another user, or the directory is world-writable without the
///   sticky bit.
/// - [`Error::Io`]: something else is at the path (never replaced), an
///   invalid mode, or an OS error, saying what was being done.
///
/// # Examples
///
/// ```
/// # fn main() -> ipc_core::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("log.fifo");
/// let fifo = ipc_unix::fifo::create(&path, 0o600)?;
/// assert_eq!(fifo.path(), path);
/// drop(fifo); // removes the file
/// assert!(!path.exists());
/// # Ok(()) }
/// ```
pub fn create(path: impl AsRef<Path>, mode: u32) -> Result<Fifo> {
    let path = path.as_ref();
    let endpoint = format!("FIFO {}", path.display());
    endpoint::check_mode(mode, &endpoint)?;
    let loc = Location::open(path, &endpoint)?;
    let ((), id) = endpoint::create_node(&loc, Kind::Fifo, mode, None, &endpoint, |staging| {
        sys::mkfifo_at(&staging.dir, Path::new(STAGED), mode)
            .map_err(|e| Error::io(format!("{endpoint}: mkfifo"), e))
    })?;
    tracing::debug!(%endpoint, mode = format_args!("{mode:o}"), "created");
    Ok(Fifo {
        owned: Some(Owned::new(loc, id)),
        endpoint,
    })
}

/// A FIFO this process created; the file is removed on drop if it is still
/// the one created.
pub struct Fifo {
    owned: Option<Owned>,
    endpoint: String,
}

impl Fifo {
    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        match &self.owned {
            Some(o) => &o.loc.path,
            None => Path::new(""),
        }
    }

    fn stamp(&self) -> Option<Stamp> {
        self.owned.as_ref().map(|o| o.stamp)
    }

    /// Opens the FIFO for reading, checking that the file at the path is
    /// still the one created.
    ///
    /// # Errors
    ///
    /// [`Error::Insecure`] if the file was replaced; OS errors as
    /// [`Error::Io`]. Must be called within a Tokio runtime.
    pub fn open_reader(&self) -> Result<FifoReader> {
        let fd = self.open_checked(false)?;
        FifoReader::from_fd(fd, None, &self.endpoint)
    }

    /// Opens the FIFO for reading as a stream that outlives its writers:
    /// see [`FifoReader::open_persistent`].
    ///
    /// # Errors
    ///
    /// As [`Fifo::open_reader`].
    pub fn open_persistent_reader(&self) -> Result<FifoReader> {
        let fd = self.open_checked(false)?;
        // Cannot fail for want of a reader: `fd` is one.
        let keep_open = self.open_checked(true)?;
        FifoReader::from_fd(fd, Some(keep_open), &self.endpoint)
    }

    /// Opens the FIFO for writing, checking that the file at the path is
    /// still the one created.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when no process has the FIFO open for reading,
    /// [`Error::Insecure`] if the file was replaced.
    pub fn open_writer(&self) -> Result<FifoWriter> {
        let fd = self.open_checked(true)?;
        FifoWriter::from_fd(fd, &self.endpoint)
    }

    fn open_checked(&self, write: bool) -> Result<OwnedFd> {
        let owned = self.owned.as_ref().ok_or(Error::Shutdown)?;
        let fd = sys::open_fifo(&owned.loc.dir, Path::new(&owned.loc.name), write)
            .map_err(|e| open_error(e, &self.endpoint, write))?;
        let meta =
            sys::fstat(&fd).map_err(|e| Error::io(format!("{}: fstat", self.endpoint), e))?;
        if Some(meta.stamp()) != self.stamp() {
            return Err(Error::Insecure {
                endpoint: self.endpoint.clone(),
                reason: "the file at the path is no longer the FIFO this process created".into(),
            });
        }
        Ok(fd)
    }

    /// Removes the FIFO now (if it is still the one created), reporting
    /// errors that drop would only log.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file could not be removed.
    pub fn remove(mut self) -> Result<()> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<()> {
        match self.owned.take() {
            Some(owned) => owned
                .remove()
                .map(drop)
                .map_err(|e| Error::io(format!("{}: removing", self.endpoint), e)),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Fifo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fifo").field("path", &self.path()).finish()
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        if let Err(e) = self.remove_inner() {
            tracing::warn!(error = %e, "removing a FIFO");
        }
    }
}

fn open_error(e: io::Error, endpoint: &str, write: bool) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound {
            endpoint: endpoint.to_owned(),
        },
        // Opening for writing without a reader.
        Some(libc::ENXIO) if write => Error::NotFound {
            endpoint: format!("{endpoint} (no process has it open for reading)"),
        },
        Some(libc::EACCES | libc::EPERM) => Error::PermissionDenied {
            endpoint: endpoint.to_owned(),
        },
        Some(libc::ELOOP) => Error::Insecure {
            endpoint: endpoint.to_owned(),
            reason: "the path is a symbolic link; FIFOs are opened without following links".into(),
        },
        _ => Error::io(
            format!(
                "{endpoint}: opening for {}",
                if write { "writing" } else { "reading" }
            ),
            e,
        ),
    }
}

fn open_path(path: &Path, write: bool) -> Result<(OwnedFd, String)> {
    let endpoint = format!("FIFO {}", path.display());
    let cwd = rustix::fs::CWD;
    let fd = sys::open_fifo(cwd, path, write).map_err(|e| open_error(e, &endpoint, write))?;
    Ok((fd, endpoint))
}

fn check_fifo(fd: &OwnedFd, endpoint: &str) -> Result<()> {
    let meta = sys::fstat(fd).map_err(|e| Error::io(format!("{endpoint}: fstat"), e))?;
    if meta.file_type != FileType::Fifo {
        return Err(Error::io(
            format!("{endpoint} is not a FIFO"),
            io::ErrorKind::InvalidInput.into(),
        ));
    }
    Ok(())
}

/// The reading end of a FIFO: an [`AsyncRead`] that ends (reads 0 bytes)
/// once every writer has closed, or, opened with
/// [`FifoReader::open_persistent`], never ends while writers come and go.
#[derive(Debug)]
pub struct FifoReader {
    rx: pipe::Receiver,
    /// A writing end held (never written) by a persistent reader, so the
    /// FIFO always has a writer and reads wait for the next one instead of
    /// ending.
    keep_open: Option<OwnedFd>,
}

impl FifoReader {
    /// Opens the FIFO at `path` for reading, without blocking and without
    /// following a symlink.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no file, [`Error::Insecure`] for a
    /// symlink, [`Error::Io`] if it is not a FIFO. Must be called within a
    /// Tokio runtime.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let (fd, endpoint) = open_path(path.as_ref(), false)?;
        Self::from_fd(fd, None, &endpoint)
    }

    /// Opens the FIFO at `path` for reading as a stream that outlives its
    /// writers: the reader holds a writing end of its own (never written),
    /// so when the last writer closes, reads wait for the next writer
    /// instead of ending. For a daemon that collects events from producers
    /// that start and stop. Writers never get a broken pipe while it is
    /// open; drop it to end the stream.
    ///
    /// # Errors
    ///
    /// As [`FifoReader::open`]; [`Error::Insecure`] if the file at the path
    /// was replaced between opening its two ends.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use tokio::io::{AsyncBufReadExt, BufReader};
    ///
    /// # #[allow(dead_code)]
    /// # async fn run() -> ipc_core::Result<()> {
    /// let fifo = ipc_unix::fifo::create("/run/node/events.fifo", 0o600)?;
    /// let mut lines = BufReader::new(fifo.open_persistent_reader()?).lines();
    /// // Producers open the FIFO, write lines and leave, one after another.
    /// while let Some(line) = lines.next_line().await? {
    ///     println!("event: {line}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn open_persistent(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (fd, endpoint) = open_path(path, false)?;
        let (keep_open, _) = open_path(path, true)?;
        let same = |a: &OwnedFd, b: &OwnedFd| -> Result<bool> {
            let stat = |fd| sys::fstat(fd).map_err(|e| Error::io(format!("{endpoint}: fstat"), e));
            Ok(stat(a)?.stamp() == stat(b)?.stamp())
        };
        if !same(&fd, &keep_open)? {
            return Err(Error::Insecure {
                endpoint,
                reason: "the file at the path was replaced while it was being opened".into(),
            });
        }
        Self::from_fd(fd, Some(keep_open), &endpoint)
    }

    fn from_fd(fd: OwnedFd, keep_open: Option<OwnedFd>, endpoint: &str) -> Result<Self> {
        require_runtime("FifoReader::open")?;
        check_fifo(&fd, endpoint)?;
        let rx = pipe::Receiver::from_owned_fd(fd)
            .map_err(|e| Error::io(format!("{endpoint}: registering with the runtime"), e))?;
        Ok(FifoReader { rx, keep_open })
    }

    /// True for a reader opened with [`FifoReader::open_persistent`].
    pub fn is_persistent(&self) -> bool {
        self.keep_open.is_some()
    }
}

impl AsFd for FifoReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

impl AsyncRead for FifoReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().rx).poll_read(cx, buf)
    }
}

/// The writing end of a FIFO: an [`AsyncWrite`] that fails with a broken
/// pipe once no reader is left.
#[derive(Debug)]
pub struct FifoWriter {
    tx: pipe::Sender,
}

impl FifoWriter {
    /// Opens the FIFO at `path` for writing, without blocking and without
    /// following a symlink.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no file or no process has it open for
    /// reading yet (retry later), [`Error::Insecure`] for a symlink,
    /// [`Error::Io`] if it is not a FIFO. Must be called within a Tokio
    /// runtime.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let (fd, endpoint) = open_path(path.as_ref(), true)?;
        Self::from_fd(fd, &endpoint)
    }

    fn from_fd(fd: OwnedFd, endpoint: &str) -> Result<Self> {
        require_runtime("FifoWriter::open")?;
        check_fifo(&fd, endpoint)?;
        let tx = pipe::Sender::from_owned_fd(fd)
            .map_err(|e| Error::io(format!("{endpoint}: registering with the runtime"), e))?;
        Ok(FifoWriter { tx })
    }
}

impl AsFd for FifoWriter {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tx.as_fd()
    }
}

impl AsyncWrite for FifoWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tx).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tx).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tx.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tx).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tx).poll_shutdown(cx)
    }
}
