//! Peer JSON-RPC servers under the same `echo` load as ours: jsonrpsee's
//! HTTP server on 127.0.0.1 (with jsonrpsee's HTTP client) and parity's
//! `jsonrpc-ipc-server` on the platform's local stream, a Unix socket or a
//! named pipe (with our `ipc_core::Client` speaking the JSON stream such
//! servers expect). Each is compiled only with
//! its cargo feature; [`not_built`] names the ones left out.

use crate::mech::Mechanism;

/// The peer JSON-RPC mechanisms compiled into this build.
pub fn mechanisms() -> Vec<Mechanism> {
    vec![
        #[cfg(feature = "jsonrpsee")]
        jsonrpsee_http::mechanism(),
        #[cfg(feature = "jsonrpc-ipc-server")]
        parity_ipc::mechanism(),
        #[cfg(all(unix, feature = "jsonrpc-ipc-server"))]
        parity_ipc::polled_mechanism(),
    ]
}

/// Peer JSON-RPC mechanisms this build leaves out, with why.
pub fn not_built() -> Vec<(&'static str, &'static str)> {
    vec![
        #[cfg(not(feature = "jsonrpsee"))]
        (
            "jsonrpsee-http",
            "built without the `jsonrpsee` feature of ipc-bench",
        ),
        #[cfg(not(feature = "jsonrpc-ipc-server"))]
        (
            "jsonrpc-ipc-server",
            "built without the `jsonrpc-ipc-server` feature of ipc-bench",
        ),
    ]
}

#[cfg(feature = "jsonrpsee")]
mod jsonrpsee_http {
    use std::io;

    use anyhow::Context as _;
    use jsonrpsee::core::client::ClientT;
    use jsonrpsee::core::params::ArrayParams;
    use jsonrpsee::types::ErrorObjectOwned;
    use jsonrpsee_http_client::{HttpClient, HttpClientBuilder};

    use crate::mech::{Group, Mechanism, ServeCtx, ServerKind};
    use crate::rpc::{self, RpcClient, RpcSession};

    pub fn mechanism() -> Mechanism {
        Mechanism {
            name: "jsonrpsee-http",
            group: Group::Peer,
            baseline: "ipc-jsonrpc",
            about: "JSON-RPC calls: jsonrpsee HTTP client to jsonrpsee's server on 127.0.0.1 \
                    (HTTP/1.1: requests in flight on one client use its connection pool)",
            server: ServerKind::Child,
            serve,
            connect: |ctx| {
                let port: u16 = ctx.info.trim().parse().context("server sent no port")?;
                let url = format!("http://127.0.0.1:{port}");
                RpcSession::boxed(move || {
                    let url = url.clone();
                    async move {
                        let c = HttpClientBuilder::default()
                            .max_concurrent_requests(rpc::MAX_IN_FLIGHT)
                            .build(&url)?;
                        Ok(Jsonrpsee(c))
                    }
                })
            },
        }
    }

    struct Jsonrpsee(HttpClient);

    impl RpcClient for Jsonrpsee {
        async fn echo(&self, param: &str) -> io::Result<usize> {
            let mut p = ArrayParams::new();
            p.insert(param).map_err(io::Error::other)?;
            let s: String = self.0.request("echo", p).await.map_err(io::Error::other)?;
            Ok(s.len())
        }
    }

    fn serve(ctx: &ServeCtx) -> anyhow::Result<()> {
        let rt = rpc::server_runtime()?;
        rt.block_on(async {
            let config = jsonrpsee::server::ServerConfig::builder()
                .max_connections(rpc::MAX_CONNECTIONS as u32)
                .build();
            let server = jsonrpsee::server::Server::builder()
                .set_config(config)
                .build("127.0.0.1:0")
                .await?;
            let port = server.local_addr()?.port();
            let mut module = jsonrpsee::RpcModule::new(());
            module.register_method("echo", |params, _, _| {
                let (s,): (String,) = params.parse()?;
                Ok::<_, ErrorObjectOwned>(s)
            })?;
            let handle = server.start(module);
            ctx.ready(&port.to_string())?;
            handle.stopped().await;
            Ok(())
        })
    }
}

#[cfg(feature = "jsonrpc-ipc-server")]
mod parity_ipc {
    use anyhow::Context as _;
    use ipc_core::codec::Framing;
    use ipc_core::Client;
    use jsonrpc_core::{IoHandler, Params, Value};

    use crate::mech::{Group, Mechanism, ServeCtx, ServerKind};
    use crate::rpc::{self, RpcSession};
    use crate::sys;

    pub fn mechanism() -> Mechanism {
        Mechanism {
            name: "jsonrpc-ipc-server",
            group: Group::Peer,
            baseline: "ipc-jsonrpc",
            about: concat!(
                "JSON-RPC calls: parity jsonrpc-ipc-server 18 on ",
                local_stream!(),
                ", called by ipc_core::Client speaking the JSON stream"
            ),
            server: ServerKind::Child,
            serve,
            connect: |ctx| {
                let endpoint = ctx.endpoint;
                RpcSession::boxed(move || {
                    let endpoint = endpoint.clone();
                    async move {
                        let t = sys::connect_foreign(&endpoint).await?;
                        Ok(rpc::ipc_client(
                            Client::builder().framing(Framing::JsonStream).build(t),
                        ))
                    }
                })
            },
        }
    }

    /// The same server under the client of `ipc-jsonrpc-busypoll`, whose
    /// connections busy-poll, on the same one-worker runtime.
    #[cfg(unix)]
    pub fn polled_mechanism() -> Mechanism {
        Mechanism {
            name: "jsonrpc-ipc-server-polled",
            group: Group::Peer,
            baseline: "ipc-jsonrpc",
            about: "as jsonrpc-ipc-server, on a one-worker runtime, its client's connections \
                    busy-polling as ipc-jsonrpc-busypoll's (the server cannot poll)",
            server: ServerKind::Child,
            serve: |ctx| serve_on(ctx, rpc::polling_server_runtime()?),
            connect: |ctx| rpc::polling_session(ctx.endpoint, Framing::JsonStream),
        }
    }

    fn serve(ctx: &ServeCtx) -> anyhow::Result<()> {
        serve_on(ctx, rpc::server_runtime()?)
    }

    fn serve_on(ctx: &ServeCtx, rt: tokio::runtime::Runtime) -> anyhow::Result<()> {
        let mut io = IoHandler::new();
        io.add_sync_method("echo", |params: Params| {
            let (s,): (String,) = params.parse()?;
            Ok(Value::String(s))
        });
        let path = sys::local_name(&ctx.endpoint)?;
        let server = jsonrpc_ipc_server::ServerBuilder::new(io)
            .event_loop_executor(rt.handle().clone())
            .start(&path)
            .with_context(|| format!("start jsonrpc-ipc-server on {path}"))?;
        ctx.ready("")?;
        // The server runs on `rt`'s workers; this thread only waits.
        server.wait();
        Ok(())
    }
}
