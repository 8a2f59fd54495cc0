//! This workspace's named pipes at the raw-frame level: `ipc_windows`
//! transports, framed and bare.

use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::proto;
use crate::streams::{Framed4, RawAsync};

pub fn mechanisms() -> Vec<Mechanism> {
    vec![
        Mechanism {
            name: "ipc-pipe",
            group: Group::Ours,
            baseline: "npipe-raw",
            about: "ipc_windows::PipeTransport framed by ipc_core::codec::LengthCodec \
                    (tokio_util Framed), current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: |ctx| serve(ctx, true),
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let t = super::connect_local(&ctx.endpoint).await?;
                    Ok(Framed4::new(t))
                })
            },
        },
        Mechanism {
            name: "ipc-pipe-bytes",
            group: Group::Ours,
            baseline: "npipe-raw",
            about: "ipc_windows::PipeTransport as a plain byte stream (no framing), \
                    current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: |ctx| serve(ctx, false),
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let t = super::connect_local(&ctx.endpoint).await?;
                    Ok(RawAsync::new(t))
                })
            },
        },
    ]
}

fn serve(ctx: &ServeCtx, framed: bool) -> anyhow::Result<()> {
    let rt = current_thread()?;
    rt.block_on(async {
        let mut listener = super::bind_local(&ctx.endpoint)?;
        ctx.ready("")?;
        loop {
            let t = listener.accept().await?;
            if framed {
                tokio::spawn(async move { proto::serve_async(&mut Framed4::new(t)).await });
            } else {
                tokio::spawn(async move { proto::serve_async(&mut RawAsync::new(t)).await });
            }
        }
    })
}
