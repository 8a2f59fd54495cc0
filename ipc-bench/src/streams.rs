//! Message channels over byte streams: raw (`write_all`/`read_exact`, the OS
//! floor) and length-framed through `ipc_core::codec::LengthCodec`.

use std::io::{self, Read, Write};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

use crate::proto::{bad, MsgAsync, MsgSync};

/// Bytes read at a time when draining a stream.
const DRAIN_CHUNK: usize = 256 * 1024;

/// A blocking byte stream as a message channel: one `write_all` per message,
/// `read_exact` per message, large reads when draining.
#[derive(Debug)]
pub struct RawSync<R, W> {
    r: R,
    w: W,
}

impl<R: Read, W: Write> RawSync<R, W> {
    /// A channel reading from `r` and writing to `w` (two handles of one socket, or a pipe pair).
    pub fn new(r: R, w: W) -> Self {
        RawSync { r, w }
    }
}

fn drain_read(r: &mut impl Read, mut left: u64, scratch: &mut [u8]) -> io::Result<()> {
    while left > 0 {
        let want = (left as usize).min(scratch.len()).min(DRAIN_CHUNK);
        let n = r.read(&mut scratch[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    Ok(())
}

impl<R: Read, W: Write> MsgSync for RawSync<R, W> {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.w.write_all(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.r.read_exact(buf)
    }
    fn drain(&mut self, count: u64, size: usize, scratch: &mut [u8]) -> io::Result<()> {
        drain_read(&mut self.r, count * size as u64, scratch)
    }
}

/// An async byte stream as a message channel, like [`RawSync`].
#[derive(Debug)]
pub struct RawAsync<S> {
    s: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawAsync<S> {
    /// Wraps a stream.
    pub fn new(s: S) -> Self {
        RawAsync { s }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MsgAsync for RawAsync<S> {
    async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.s.write_all(msg).await
    }
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.s.read_exact(buf).await.map(drop)
    }
    async fn drain(&mut self, count: u64, size: usize, scratch: &mut [u8]) -> io::Result<()> {
        let mut left = count * size as u64;
        while left > 0 {
            let want = (left as usize).min(scratch.len()).min(DRAIN_CHUNK);
            let n = self.s.read(&mut scratch[..want]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= n as u64;
        }
        Ok(())
    }
}

/// An async byte stream framed by the workspace's length-delimited codec:
/// what a user of the raw-frame level writes.
#[derive(Debug)]
pub struct Framed4<S> {
    f: Framed<S, ipc_core::codec::LengthCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed4<S> {
    /// Frames `s`; frames up to the largest benchmark message are accepted.
    pub fn new(s: S) -> Self {
        let codec = ipc_core::codec::LengthCodec::new(crate::proto::MAX_MSG);
        Framed4 {
            f: Framed::new(s, codec),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MsgAsync for Framed4<S> {
    async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.f.send(msg).await
    }
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let frame = self
            .f
            .next()
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))??;
        if frame.len() != buf.len() {
            return Err(bad(format!(
                "expected a {}-byte frame, got {} bytes",
                buf.len(),
                frame.len()
            )));
        }
        // Small frames (commands, acks, echo payloads under 4 KiB) are read by
        // the caller; a large payload's content is only checked at its ends.
        if buf.len() <= 4096 {
            buf.copy_from_slice(&frame);
        } else {
            let n = buf.len();
            buf[0] = frame[0];
            buf[n - 1] = frame[n - 1];
        }
        Ok(())
    }
}
