//! Peer crates a user might pick instead of this workspace, driven the same
//! way as ours: a current-thread tokio runtime on each side, raw bytes.
//! Here the `interprocess` crate's local sockets (a Unix socket on Unix, a
//! named pipe on Windows); tokio's own socket or pipe comes first, from
//! [`crate::sys`].

use anyhow::Context as _;

use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::proto;
use crate::streams::RawAsync;
use crate::sys;

/// The peer mechanisms.
pub fn mechanisms() -> Vec<Mechanism> {
    let mut v = sys::peer_mechanisms();
    v.push(Mechanism {
        name: "interprocess",
        group: Group::Peer,
        baseline: sys::LOCAL_RAW,
        about: concat!(
            "interprocess::local_socket::tokio::Stream (",
            local_stream!(),
            " here), raw bytes, current-thread runtime on both sides"
        ),
        server: ServerKind::Child,
        serve: serve_interprocess,
        connect: |ctx| {
            use interprocess::local_socket::tokio::{prelude::*, Stream};
            AsyncSession::connect(|| async move {
                let shown = sys::local_name(&ctx.endpoint)?;
                let name = sys::interprocess_name(&ctx.endpoint)?;
                let s = Stream::connect(name)
                    .await
                    .with_context(|| format!("connect to {shown}"))?;
                Ok(RawAsync::new(s))
            })
        },
    });
    v
}

fn serve_interprocess(ctx: &ServeCtx) -> anyhow::Result<()> {
    use interprocess::local_socket::tokio::prelude::*;
    use interprocess::local_socket::ListenerOptions;
    let rt = current_thread()?;
    rt.block_on(async {
        let shown = sys::local_name(&ctx.endpoint)?;
        let name = sys::interprocess_name(&ctx.endpoint)?;
        let listener = ListenerOptions::new()
            .name(name)
            .create_tokio()
            .with_context(|| format!("bind {shown}"))?;
        ctx.ready("")?;
        loop {
            let s = listener.accept().await?;
            tokio::spawn(async move { proto::serve_async(&mut RawAsync::new(s)).await });
        }
    })
}
