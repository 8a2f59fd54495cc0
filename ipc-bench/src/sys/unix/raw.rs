//! The Unix socket baseline: `std`'s blocking `UnixStream`.

use std::os::unix::net::{UnixListener, UnixStream};

use anyhow::Context as _;

use crate::mech::{Group, Mechanism, ServeCtx, ServerKind, SyncSession};
use crate::proto;
use crate::streams::RawSync;

pub fn mechanisms() -> Vec<Mechanism> {
    vec![Mechanism {
        name: "unix-raw",
        group: Group::Baseline,
        baseline: "unix-raw",
        about: "std::os::unix::net::UnixStream, blocking read_exact/write_all",
        server: ServerKind::Child,
        serve: serve_unix,
        connect: |ctx| {
            let s = UnixStream::connect(&ctx.endpoint)
                .with_context(|| format!("connect to {}", ctx.endpoint.display()))?;
            Ok(Box::new(SyncSession(RawSync::new(s.try_clone()?, s))))
        },
    }]
}

fn serve_unix(ctx: &ServeCtx) -> anyhow::Result<()> {
    let listener = UnixListener::bind(&ctx.endpoint)
        .with_context(|| format!("bind {}", ctx.endpoint.display()))?;
    ctx.ready("")?;
    for conn in listener.incoming() {
        let s = conn?;
        std::thread::spawn(move || {
            let r = s.try_clone()?;
            proto::serve_sync(&mut RawSync::new(r, s))
        });
    }
    Ok(())
}
