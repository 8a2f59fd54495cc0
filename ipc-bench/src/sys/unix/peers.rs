//! tokio's own Unix socket, driven like ours.

use anyhow::Context as _;

use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::proto;
use crate::streams::RawAsync;

pub fn mechanisms() -> Vec<Mechanism> {
    vec![Mechanism {
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
    }]
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
