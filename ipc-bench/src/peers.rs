//! Peer crates a user might pick instead of this workspace, driven the same
//! way as ours: a current-thread tokio runtime on each side, raw bytes.

use anyhow::Context as _;

use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::proto;
use crate::streams::RawAsync;

/// The peer mechanisms.
pub fn mechanisms() -> Vec<Mechanism> {
    vec![
        Mechanism {
            name: "tokio-unix",
            group: Group::Peer,
            baseline: "unix-raw",
            about: "tokio::net::UnixStream, raw bytes, current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: serve_tokio,
            connect: |ctx| {
                AsyncSession::connect(|| async move {
                    let s = tokio::net::UnixStream::connect(&ctx.endpoint)
                        .await
                        .with_context(|| format!("connect to {}", ctx.endpoint.display()))?;
                    Ok(RawAsync::new(s))
                })
            },
        },
        Mechanism {
            name: "interprocess",
            group: Group::Peer,
            baseline: "unix-raw",
            about: "interprocess::local_socket::tokio::Stream (a Unix socket here), raw bytes, \
                    current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: serve_interprocess,
            connect: |ctx| {
                use interprocess::local_socket::tokio::{prelude::*, Stream};
                use interprocess::local_socket::GenericFilePath;
                AsyncSession::connect(|| async move {
                    let name = ctx.endpoint.as_path().to_fs_name::<GenericFilePath>()?;
                    let s = Stream::connect(name)
                        .await
                        .with_context(|| format!("connect to {}", ctx.endpoint.display()))?;
                    Ok(RawAsync::new(s))
                })
            },
        },
    ]
}

fn serve_tokio(ctx: &ServeCtx) -> anyhow::Result<()> {
    let rt = current_thread()?;
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&ctx.endpoint)
            .with_context(|| format!("bind {}", ctx.endpoint.display()))?;
        ctx.ready("")?;
        loop {
            let (s, _) = listener.accept().await?;
            tokio::spawn(async move { proto::serve_async(&mut RawAsync::new(s)).await });
        }
    })
}

fn serve_interprocess(ctx: &ServeCtx) -> anyhow::Result<()> {
    use interprocess::local_socket::tokio::prelude::*;
    use interprocess::local_socket::{GenericFilePath, ListenerOptions};
    let rt = current_thread()?;
    rt.block_on(async {
        let name = ctx.endpoint.as_path().to_fs_name::<GenericFilePath>()?;
        let listener = ListenerOptions::new()
            .name(name)
            .create_tokio()
            .with_context(|| format!("bind {}", ctx.endpoint.display()))?;
        ctx.ready("")?;
        loop {
            let s = listener.accept().await?;
            tokio::spawn(async move { proto::serve_async(&mut RawAsync::new(s)).await });
        }
    })
}
