//! This workspace's transports: the raw-frame level (`ipc_unix` streams
//! through `ipc_core::codec::LengthCodec`) and JSON-RPC through
//! `ipc_core::{Server, Client}`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use ipc_core::codec::Framing;
use ipc_core::{Address, Client};

use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::proto;
use crate::rpc::{self, RpcSession};
use crate::streams::{Framed4, RawAsync};

fn addr(path: &Path) -> Address {
    Address::Unix(path.to_path_buf())
}

/// Our mechanisms.
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
        Mechanism {
            name: "ipc-jsonrpc",
            group: Group::Ours,
            baseline: "ipc-jsonrpc",
            about: "JSON-RPC calls: ipc_core::Client to ipc_core::Server over ipc_unix, \
                    length-delimited framing",
            server: ServerKind::Child,
            serve: serve_jsonrpc,
            connect: |ctx| {
                let a = addr(&ctx.endpoint);
                RpcSession::boxed(move || {
                    let a = a.clone();
                    async move {
                        let t = ipc_unix::connect(&a).await?;
                        Ok(rpc::ipc_client(
                            Client::builder().framing(Framing::LengthDelimited).build(t),
                        ))
                    }
                })
            },
        },
        Mechanism {
            name: "ipc-jsonrpc-json",
            group: Group::Ours,
            baseline: "ipc-jsonrpc",
            about: "JSON-RPC calls: ipc_core::Client to ipc_core::Server over ipc_unix, \
                    JSON-stream framing (what geth-style clients speak)",
            server: ServerKind::Child,
            serve: serve_jsonrpc,
            connect: |ctx| {
                let a = addr(&ctx.endpoint);
                RpcSession::boxed(move || {
                    let a = a.clone();
                    async move {
                        let t = ipc_unix::connect(&a).await?;
                        Ok(rpc::ipc_client(
                            Client::builder().framing(Framing::JsonStream).build(t),
                        ))
                    }
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

fn serve_jsonrpc(ctx: &ServeCtx) -> anyhow::Result<()> {
    let rt = rpc::server_runtime()?;
    rt.block_on(async {
        let listener = ipc_unix::UnixListener::bind(&addr(&ctx.endpoint))?;
        let handle = ipc_core::Server::builder()
            .max_in_flight(rpc::MAX_IN_FLIGHT)
            .build()
            .serve(listener, rpc::router());
        ctx.ready("")?;
        handle.stopped().await;
        Ok(())
    })
}
