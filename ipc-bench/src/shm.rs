//! This workspace's shared-memory transport (`ipc-shm`): the blocking
//! message API (spin, then futex or event), the async message API, the async
//! byte-stream transport, and JSON-RPC's `Server` and `Client` over it, on
//! Unix and Windows.

use std::io;
use std::path::Path;
use std::time::Duration;

use ipc_core::Address;
use ipc_shm::{AsyncShmConnection, ShmConnection, ShmListener, ShmOptions, ShmTransport};

use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::mech::{Session, SyncSession};
use crate::proto::{self, MsgAsync, MsgSync, MAX_MSG};
use crate::rpc::{self, RpcSession};
use crate::streams::Framed4;

/// Spin of the async variant that spins (`ipc-shm-async-spin`).
const ASYNC_SPIN: Duration = Duration::from_micros(20);

fn addr(endpoint: &Path) -> Address {
    Address::Shm(crate::sys::shm_name(endpoint))
}

fn options(async_spin: Option<Duration>) -> ShmOptions {
    // Rings large enough for the 1 MiB messages plus their framing.
    let o = ShmOptions::new()
        .ring_capacity(4 << 20)
        .max_message_len(MAX_MSG + 64);
    match async_spin {
        Some(d) => o.async_spin(d),
        None => o,
    }
}

/// The shared-memory mechanisms.
pub fn mechanisms() -> Vec<Mechanism> {
    vec![
        Mechanism {
            name: "ipc-shm",
            group: Group::Ours,
            baseline: "spin-shm",
            about: "ipc_shm::ShmConnection, the blocking message API (spins 50 us by default, \
                    then sleeps on a futex, or an event on Windows)",
            server: ServerKind::Child,
            serve: serve_blocking,
            connect: |ctx| {
                let c = ShmConnection::connect(&addr(&ctx.endpoint), &options(None))?;
                Ok(Box::new(SyncSession(ShmMsg(c))))
            },
        },
        Mechanism {
            name: "ipc-shm-async-messages",
            group: Group::Ours,
            baseline: "spin-shm",
            about: "ipc_shm::AsyncShmConnection, the async message API (no spin), \
                    current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: serve_async_messages,
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let c =
                        AsyncShmConnection::connect(&addr(&ctx.endpoint), &options(None)).await?;
                    Ok(ShmAsyncMsg(c))
                })
            },
        },
        Mechanism {
            name: "ipc-shm-async",
            group: Group::Ours,
            baseline: "spin-shm",
            about: "ipc_shm::ShmTransport (async byte stream, no spin) framed by LengthCodec, \
                    current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: |ctx| serve_async(ctx, None),
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let t = ShmTransport::connect(&addr(&ctx.endpoint), &options(None)).await?;
                    Ok(Framed4::new(t))
                })
            },
        },
        Mechanism {
            name: "ipc-shm-async-spin",
            group: Group::Ours,
            baseline: "spin-shm",
            about: "as ipc-shm-async, with async_spin(20 us) on both sides",
            server: ServerKind::Child,
            serve: |ctx| serve_async(ctx, Some(ASYNC_SPIN)),
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let o = options(Some(ASYNC_SPIN));
                    let t = ShmTransport::connect(&addr(&ctx.endpoint), &o).await?;
                    Ok(Framed4::new(t))
                })
            },
        },
        Mechanism {
            name: "ipc-jsonrpc-shm",
            group: Group::Ours,
            baseline: "ipc-jsonrpc",
            about:
                "JSON-RPC calls: ipc_core::Client to ipc_core::Server over ipc_shm::ShmTransport \
                    (the default rings, no spin), length-delimited framing",
            server: ServerKind::Child,
            serve: |ctx| serve_jsonrpc(ctx, None),
            connect: |ctx| jsonrpc_session(&ctx.endpoint, None),
        },
        Mechanism {
            name: "ipc-jsonrpc-shm-spin",
            group: Group::Ours,
            baseline: "ipc-jsonrpc",
            about: "as ipc-jsonrpc-shm, with async_spin(20 us) on both sides",
            server: ServerKind::Child,
            serve: |ctx| serve_jsonrpc(ctx, Some(ASYNC_SPIN)),
            connect: |ctx| jsonrpc_session(&ctx.endpoint, Some(ASYNC_SPIN)),
        },
    ]
}

/// Options of the JSON-RPC mechanisms: the default rings (calls are small).
fn rpc_options(async_spin: Option<Duration>) -> ShmOptions {
    ShmOptions::new().async_spin(async_spin.unwrap_or(Duration::ZERO))
}

fn serve_jsonrpc(ctx: &ServeCtx, spin: Option<Duration>) -> anyhow::Result<()> {
    let rt = rpc::server_runtime()?;
    rt.block_on(async {
        let listener = ShmListener::bind_with(&addr(&ctx.endpoint), rpc_options(spin))?;
        crate::ours::serve_router(ctx, listener).await
    })
}

fn jsonrpc_session(endpoint: &Path, spin: Option<Duration>) -> anyhow::Result<Box<dyn Session>> {
    let address = addr(endpoint);
    RpcSession::boxed(move || {
        let address = address.clone();
        async move {
            let t = ShmTransport::connect(&address, &rpc_options(spin)).await?;
            Ok(rpc::ipc_client(ipc_core::Client::builder().build(t)))
        }
    })
}

/// The blocking message API as a benchmark channel.
struct ShmMsg(ShmConnection);

impl MsgSync for ShmMsg {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        Ok(self.0.send(msg)?)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        copy_message(&self.0.recv()?, buf)
    }
}

/// Copies a received message into `buf`, which must be as long: copied
/// out, as every other mechanism delivers into the caller's buffer (the way
/// the crate copies out: behind a prefetch).
fn copy_message(m: &ipc_shm::Message<'_>, buf: &mut [u8]) -> io::Result<()> {
    if m.len() != buf.len() {
        return Err(proto::bad(format!(
            "expected a {}-byte message, got {} bytes",
            buf.len(),
            m.len()
        )));
    }
    m.copy_to(buf);
    Ok(())
}

/// The async message API as a benchmark channel.
struct ShmAsyncMsg(AsyncShmConnection);

impl MsgAsync for ShmAsyncMsg {
    async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        Ok(self.0.send(msg).await?)
    }
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        copy_message(&self.0.recv().await?, buf)
    }
}

fn serve_async_messages(ctx: &ServeCtx) -> anyhow::Result<()> {
    let rt = current_thread()?;
    rt.block_on(async {
        let mut listener = ShmListener::bind_with(&addr(&ctx.endpoint), options(None))?;
        ctx.ready("")?;
        loop {
            let c = listener.accept_async_connection().await?;
            tokio::spawn(async move { proto::serve_async(&mut ShmAsyncMsg(c)).await });
        }
    })
}

fn serve_blocking(ctx: &ServeCtx) -> anyhow::Result<()> {
    let rt = current_thread()?;
    rt.block_on(async {
        let mut listener = ShmListener::bind_with(&addr(&ctx.endpoint), options(None))?;
        ctx.ready("")?;
        loop {
            let c = listener.accept_connection().await?;
            std::thread::spawn(move || proto::serve_sync(&mut ShmMsg(c)));
        }
    })
}

fn serve_async(ctx: &ServeCtx, spin: Option<Duration>) -> anyhow::Result<()> {
    let rt = current_thread()?;
    rt.block_on(async {
        let mut listener = ShmListener::bind_with(&addr(&ctx.endpoint), options(spin))?;
        ctx.ready("")?;
        loop {
            let t = listener.accept_shm().await?;
            tokio::spawn(async move { proto::serve_async(&mut Framed4::new(t)).await });
        }
    })
}
