//! The server process of a soak run.

use std::io::Write as _;
use std::time::Duration;

use ipc::jsonrpc::ErrorObject;
use ipc::{Context, Router, Server};
use serde_json::Value;

/// The methods the load uses: `echo`, `add`, `blob(n)`, `sleep_ms(ms)`,
/// `connections()`.
pub fn router() -> Router {
    Router::new()
        .method("echo", |_ctx: Context, params: Value| async move {
            Ok::<_, ErrorObject>(params)
        })
        .method("add", |_ctx: Context, (a, b): (i64, i64)| async move {
            Ok::<_, ErrorObject>(a.wrapping_add(b))
        })
        .method("blob", |_ctx: Context, (n,): (usize,)| async move {
            if n > 8 << 20 {
                return Err(ErrorObject::invalid_params("blob is at most 8 MiB"));
            }
            Ok("x".repeat(n))
        })
        .method("sleep_ms", |_ctx: Context, (ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
            Ok::<_, ErrorObject>(ms)
        })
        .method("connections", |ctx: Context, (): ()| async move {
            Ok::<_, ErrorObject>(ctx.server().connections().len())
        })
}

/// Serves [`router`] at `address` until killed; prints `ready` on stdout
/// once it accepts connections. Logs warnings and errors to stderr.
pub fn run(address: &str) -> anyhow::Result<()> {
    crate::sys::raise_nofile(65_536);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = ipc::bind(address).await?;
        let handle = Server::builder()
            .max_connections(16_384)
            .frame_timeout(Duration::from_secs(10))
            .build()
            .serve(listener, router());
        println!("ready");
        std::io::stdout().flush()?;
        handle.stopped().await;
        handle.shutdown(Duration::from_secs(5)).await?;
        Ok(())
    })
}
