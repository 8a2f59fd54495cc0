//! The `iceoryx2` crate as a peer: two publish-subscribe services (ping and
//! pong) of byte slices, each side busy-polling its subscriber, as
//! iceoryx2's own latency benchmark does. Compiled with the `iceoryx2`
//! feature.

use std::io;
use std::time::{Duration, Instant};

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::mech::{Group, Mechanism, ServeCtx, ServerKind, SyncSession};
use crate::proto::{self, MsgSync, MAX_MSG};

/// Messages a subscriber queues before the publisher waits.
const QUEUE: usize = 8;
/// A poller gives up after this long without a message.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// The iceoryx2 mechanism.
pub fn mechanism() -> Mechanism {
    Mechanism {
        name: "iceoryx2",
        group: Group::Peer,
        baseline: "spin-shm",
        about: "iceoryx2 0.10 publish-subscribe of [u8] slices (ping and pong services), \
                both sides busy-polling, payload copied in and out",
        server: ServerKind::Child,
        serve,
        connect: |ctx| {
            let ch = Channel::open(&service_base(&ctx.endpoint), false)?;
            Ok(Box::new(SyncSession(ch)))
        },
    }
}

fn err(what: &str, e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("iceoryx2: {what}: {e:?}"))
}

/// Service names unique to this run (the endpoint directory is).
fn service_base(endpoint: &std::path::Path) -> String {
    let dir = endpoint
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("ipc-bench/{dir}")
}

struct Channel {
    _node: Node<ipc::Service>,
    tx: Publisher<ipc::Service, [u8], ()>,
    rx: Subscriber<ipc::Service, [u8], ()>,
}

impl Channel {
    fn open(base: &str, server: bool) -> io::Result<Channel> {
        // Without a config file iceoryx2 warns that it uses its defaults, as intended here.
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .map_err(|e| err("create node", e))?;
        let service = |suffix: &str| {
            let name: ServiceName = format!("{base}/{suffix}")
                .as_str()
                .try_into()
                .map_err(|e| err("service name", e))?;
            node.service_builder(&name)
                .publish_subscribe::<[u8]>()
                .enable_safe_overflow(false)
                .subscriber_max_buffer_size(QUEUE)
                .history_size(0)
                .open_or_create()
                .map_err(|e| err("open service", e))
        };
        let (out_name, in_name) = if server {
            ("pong", "ping")
        } else {
            ("ping", "pong")
        };
        let out = service(out_name)?;
        let inc = service(in_name)?;
        let rx = inc
            .subscriber_builder()
            .create()
            .map_err(|e| err("create subscriber", e))?;
        let tx = out
            .publisher_builder()
            .initial_max_slice_len(MAX_MSG)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|e| err("create publisher", e))?;
        Ok(Channel {
            _node: node,
            tx,
            rx,
        })
    }
}

impl MsgSync for Channel {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let sample = self
            .tx
            .loan_slice_uninit(msg.len())
            .map_err(|e| err("loan", e))?;
        sample
            .write_from_slice(msg)
            .send()
            .map_err(|e| err("send", e))?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut since: Option<Instant> = None;
        let mut n = 0u32;
        loop {
            if let Some(s) = self.rx.receive().map_err(|e| err("receive", e))? {
                let p = s.payload();
                if p.len() != buf.len() {
                    return Err(proto::bad(format!(
                        "expected a {}-byte sample, got {} bytes",
                        buf.len(),
                        p.len()
                    )));
                }
                buf.copy_from_slice(p);
                return Ok(());
            }
            std::hint::spin_loop();
            n = n.wrapping_add(1);
            if n.is_multiple_of(4096)
                && since.get_or_insert_with(Instant::now).elapsed() > POLL_TIMEOUT
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "iceoryx2: the peer stopped publishing",
                ));
            }
        }
    }
}

fn serve(ctx: &ServeCtx) -> anyhow::Result<()> {
    let mut ch = Channel::open(&service_base(&ctx.endpoint), true)?;
    ctx.ready("")?;
    // One client per server process; it ends with an End command or by
    // going away (then the poll times out and the process exits).
    proto::serve_sync(&mut ch)?;
    Ok(())
}
