//! Single-core memcpy bandwidth: the ceiling for any transport that copies
//! each message once.

use std::io;
use std::time::{Duration, Instant};

use crate::mech::{ConnectCtx, Group, Mechanism, ServeCtx, ServerKind, Session};
use crate::proto::Stream;

/// The memcpy mechanism.
pub fn mechanisms() -> Vec<Mechanism> {
    vec![Mechanism {
        name: "memcpy",
        group: Group::Baseline,
        baseline: "memcpy",
        about: "one core copying each message between two buffers (no second process)",
        server: ServerKind::None,
        serve: |_: &ServeCtx| Ok(()),
        connect: |_: ConnectCtx| Ok(Box::new(Memcpy)),
    }]
}

#[derive(Debug)]
struct Memcpy;

impl Session for Memcpy {
    fn throughput(&mut self, size: usize, duration: Duration) -> io::Result<Stream> {
        // Two buffers larger than the message so small copies do not run
        // out of one cache line, and big ones go through the caches as a
        // stream would.
        let span = (size * 16).clamp(1 << 16, 64 << 20);
        let src: Vec<u8> = (0..span).map(|i| i as u8).collect();
        let mut dst = vec![0u8; span];
        let slots = (span / size.max(1)).max(1);
        let per_check = ((4 << 20) / size.max(1)).max(1);
        let mut messages = 0u64;
        let start = Instant::now();
        while start.elapsed() < duration {
            for i in 0..per_check {
                let off = (i % slots) * size;
                dst[off..off + size].copy_from_slice(&src[off..off + size]);
                std::hint::black_box(&mut dst);
            }
            messages += per_check as u64;
        }
        Ok(Stream {
            messages,
            elapsed: start.elapsed(),
        })
    }
}
