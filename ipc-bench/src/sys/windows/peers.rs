//! tokio's own named pipes (`tokio::net::windows::named_pipe`), driven like
//! ours: byte mode, tokio's default buffers, raw bytes.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient, ServerOptions};
use windows_sys::Win32::Foundation::ERROR_PIPE_BUSY;

use super::local_name;
use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::proto;
use crate::streams::RawAsync;

/// How long a client retries while every instance is busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn mechanisms() -> Vec<Mechanism> {
    vec![Mechanism {
        name: "tokio-pipe",
        group: Group::Peer,
        baseline: "npipe-raw",
        about: "tokio::net::windows::named_pipe (NamedPipeServer/NamedPipeClient, byte mode), \
                raw bytes, current-thread runtime on both sides",
        server: ServerKind::Child,
        serve,
        connect: |ctx| {
            AsyncSession::connect(|| async move {
                let path = local_name(&ctx.endpoint)?;
                Ok(RawAsync::new(open(&path).await?))
            })
        },
    }]
}

/// Opens the client end, retrying while every instance is busy, as tokio's
/// documentation shows.
pub(super) async fn open(path: &str) -> anyhow::Result<NamedPipeClient> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match ClientOptions::new().open(path) {
            Ok(c) => return Ok(c),
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("open {path}")),
        }
    }
}

fn serve(ctx: &ServeCtx) -> anyhow::Result<()> {
    let rt = current_thread()?;
    rt.block_on(async {
        let path = local_name(&ctx.endpoint)?;
        let mut next = ServerOptions::new()
            .first_pipe_instance(true)
            .create(&path)
            .with_context(|| format!("create {path}"))?;
        ctx.ready("")?;
        loop {
            next.connect().await?;
            // The next instance waits before this one is served.
            let conn = std::mem::replace(&mut next, ServerOptions::new().create(&path)?);
            tokio::spawn(async move { proto::serve_async(&mut RawAsync::new(conn)).await });
        }
    })
}
