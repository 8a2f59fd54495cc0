//! This workspace's Unix transports at the raw-frame level: `ipc_unix`
//! sockets (framed, bare, busy-polling) and FIFOs.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::addr;
use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::proto;
use crate::streams::{Framed4, RawAsync};

pub fn mechanisms() -> Vec<Mechanism> {
    vec![
        Mechanism {
            name: "ipc-unix",
            group: Group::Ours,
            baseline: "unix-raw",
            about: "ipc_unix::UnixTransport framed by ipc_core::codec::LengthCodec \
                    (tokio_util Framed), current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: |ctx| serve_unix(ctx, true, None),
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let t = ipc_unix::connect(&addr(&ctx.endpoint)).await?;
                    Ok(Framed4::new(t))
                })
            },
        },
        Mechanism {
            name: "ipc-unix-bytes",
            group: Group::Ours,
            baseline: "unix-raw",
            about: "ipc_unix::UnixTransport as a plain byte stream (no framing), \
                    current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: |ctx| serve_unix(ctx, false, None),
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let t = ipc_unix::connect(&addr(&ctx.endpoint)).await?;
                    Ok(RawAsync::new(t))
                })
            },
        },
        Mechanism {
            name: "ipc-unix-busypoll",
            group: Group::Ours,
            baseline: "unix-raw",
            about: "as ipc-unix, with busy polling on both ends: UnixTransport::set_busy_poll \
                    and BindOptions::busy_poll (adaptive; 50 us budget), a read that finds \
                    no data polls the socket before parking on the reactor",
            server: ServerKind::Child,
            serve: |ctx| serve_unix(ctx, true, Some(BUSY_POLL)),
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let mut t = ipc_unix::connect(&addr(&ctx.endpoint)).await?;
                    t.set_busy_poll(Some(BUSY_POLL));
                    Ok(Framed4::new(t))
                })
            },
        },
        Mechanism {
            name: "ipc-fifo",
            group: Group::Ours,
            baseline: "pipe-raw",
            about: "two ipc_unix::fifo FIFOs (one each way) framed by LengthCodec, \
                    current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: serve_fifo,
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let (c2s, s2c) = fifo_paths(&ctx.endpoint);
                    let r = ipc_unix::fifo::FifoReader::open(&s2c)?;
                    let w = ipc_unix::fifo::FifoWriter::open(&c2s)?;
                    Ok(Framed4::new(tokio::io::join(r, w)))
                })
            },
        },
    ]
}

/// Busy-poll budget of `ipc-unix-busypoll`.
const BUSY_POLL: Duration = Duration::from_micros(50);

fn serve_unix(ctx: &ServeCtx, framed: bool, busy_poll: Option<Duration>) -> anyhow::Result<()> {
    let rt = current_thread()?;
    rt.block_on(async {
        let mut opts = ipc_unix::BindOptions::new();
        if let Some(b) = busy_poll {
            opts = opts.busy_poll(b);
        }
        let mut listener = ipc_unix::UnixListener::bind_with(&addr(&ctx.endpoint), &opts)?;
        ctx.ready("")?;
        loop {
            let t = listener.accept_unix().await?;
            if framed {
                tokio::spawn(async move { proto::serve_async(&mut Framed4::new(t)).await });
            } else {
                tokio::spawn(async move { proto::serve_async(&mut RawAsync::new(t)).await });
            }
        }
    })
}

fn fifo_paths(endpoint: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        endpoint.with_extension("c2s"),
        endpoint.with_extension("s2c"),
    )
}

fn serve_fifo(ctx: &ServeCtx) -> anyhow::Result<()> {
    let rt = current_thread()?;
    rt.block_on(async {
        let (c2s, s2c) = fifo_paths(&ctx.endpoint);
        let f_in = ipc_unix::fifo::create(&c2s, 0o600)?;
        let f_out = ipc_unix::fifo::create(&s2c, 0o600)?;
        let r = f_in.open_reader()?;
        ctx.ready("")?;
        // A FIFO opens for writing only once a reader has it open: wait for the client.
        let mut waited = Duration::ZERO;
        let w = loop {
            match f_out.open_writer() {
                Ok(w) => break w,
                Err(ipc_core::Error::NotFound { .. }) if waited < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    waited += Duration::from_millis(1);
                }
                Err(e) => return Err(e).context("open the reply FIFO"),
            }
        };
        proto::serve_async(&mut Framed4::new(tokio::io::join(r, w))).await?;
        Ok(())
    })
}
