//! This workspace's transports: the raw-frame level (a transport framed by
//! `ipc_core::codec::LengthCodec`) and JSON-RPC through
//! `ipc_core::{Server, Client}`. Here the ones every platform has: TCP
//! through the `ipc` facade, and JSON-RPC over the platform's local stream
//! ([`crate::sys::connect_local`]); the platform's own transports come
//! first, from [`crate::sys`].

use std::net::SocketAddr;

use anyhow::Context as _;
use ipc_core::codec::Framing;
use ipc_core::{Address, Client};

use crate::mech::{current_thread, AsyncSession, Group, Mechanism, ServeCtx, ServerKind};
use crate::proto;
use crate::rpc::{self, RpcSession};
use crate::streams::Framed4;
use crate::sys;

/// Our mechanisms, the platform's local transports first.
pub fn mechanisms() -> Vec<Mechanism> {
    let mut v = sys::our_mechanisms();
    v.extend([
        Mechanism {
            name: "ipc-tcp",
            group: Group::Ours,
            baseline: "tcp-raw",
            about: "ipc::tcp (the facade's TCP transport, TCP_NODELAY) on 127.0.0.1 framed by \
                    LengthCodec, current-thread runtime on both sides",
            server: ServerKind::Child,
            serve: serve_tcp,
            connect: |ctx| {
                let a = tcp_addr(&ctx.info)?;
                AsyncSession::connect(|| async move {
                    let t = ipc::tcp::connect(&a).await?;
                    Ok(Framed4::new(t))
                })
            },
        },
        Mechanism {
            name: "ipc-jsonrpc",
            group: Group::Ours,
            baseline: "ipc-jsonrpc",
            about: concat!(
                "JSON-RPC calls: ipc_core::Client to ipc_core::Server over ",
                local_transport!(),
                ", length-delimited framing"
            ),
            server: ServerKind::Child,
            serve: serve_jsonrpc,
            connect: |ctx| jsonrpc_session(ctx.endpoint, Framing::LengthDelimited),
        },
        Mechanism {
            name: "ipc-jsonrpc-json",
            group: Group::Ours,
            baseline: "ipc-jsonrpc",
            about: concat!(
                "JSON-RPC calls: ipc_core::Client to ipc_core::Server over ",
                local_transport!(),
                ", JSON-stream framing (what geth-style clients speak)"
            ),
            server: ServerKind::Child,
            serve: serve_jsonrpc,
            connect: |ctx| jsonrpc_session(ctx.endpoint, Framing::JsonStream),
        },
    ]);
    #[cfg(unix)]
    v.push(Mechanism {
        name: "ipc-jsonrpc-busypoll",
        group: Group::Ours,
        baseline: "ipc-jsonrpc",
        about: "as ipc-jsonrpc, with busy polling on both ends (adaptive, 50 us budget): \
                the server's connections (ipc_unix::BindOptions::busy_poll, server on a \
                one-worker runtime) and the client's (UnixTransport::set_busy_poll)",
        server: ServerKind::Child,
        serve: serve_jsonrpc_busypoll,
        connect: |ctx| rpc::polling_session(ctx.endpoint, Framing::LengthDelimited),
    });
    v
}

fn tcp_addr(port: &str) -> anyhow::Result<Address> {
    let port: u16 = port.trim().parse().context("server sent no port")?;
    Ok(Address::Tcp(SocketAddr::from(([127, 0, 0, 1], port))))
}

fn serve_tcp(ctx: &ServeCtx) -> anyhow::Result<()> {
    use ipc_core::Listener as _;
    let rt = current_thread()?;
    rt.block_on(async {
        let mut listener = ipc::tcp::TcpListener::bind(&tcp_addr("0")?).await?;
        let Address::Tcp(local) = listener.local_addr().clone() else {
            anyhow::bail!("the TCP listener reports a non-TCP address");
        };
        ctx.ready(&local.port().to_string())?;
        loop {
            // The boxed transport of the `Listener` trait: what a server
            // written against the facade gets.
            let t = listener.accept().await?;
            tokio::spawn(async move { proto::serve_async(&mut Framed4::new(t)).await });
        }
    })
}

fn jsonrpc_session(
    endpoint: std::path::PathBuf,
    framing: Framing,
) -> anyhow::Result<Box<dyn crate::mech::Session>> {
    RpcSession::boxed(move || {
        let endpoint = endpoint.clone();
        async move {
            let t = sys::connect_local(&endpoint).await?;
            Ok(rpc::ipc_client(Client::builder().framing(framing).build(t)))
        }
    })
}

fn serve_jsonrpc(ctx: &ServeCtx) -> anyhow::Result<()> {
    let rt = rpc::server_runtime()?;
    rt.block_on(async {
        let listener = sys::bind_local(&ctx.endpoint)?;
        serve_router(ctx, listener).await
    })
}

pub(crate) async fn serve_router<L: ipc_core::Listener>(
    ctx: &ServeCtx,
    listener: L,
) -> anyhow::Result<()> {
    let handle = ipc_core::Server::builder()
        .max_in_flight(rpc::MAX_IN_FLIGHT)
        .build()
        .serve(listener, rpc::router());
    ctx.ready("")?;
    handle.stopped().await;
    Ok(())
}

#[cfg(unix)]
fn serve_jsonrpc_busypoll(ctx: &ServeCtx) -> anyhow::Result<()> {
    let rt = rpc::polling_server_runtime()?;
    rt.block_on(async {
        let opts = ipc_unix::BindOptions::new().busy_poll(rpc::BUSY_POLL);
        let address = Address::Unix(ctx.endpoint.clone());
        let listener = ipc_unix::UnixListener::bind_with(&address, &opts)?;
        serve_router(ctx, listener).await
    })
}
