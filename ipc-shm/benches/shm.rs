//! Latency and throughput of the shared-memory transport between two real
//! processes, against the hardware floor and the peers, all in one run.
//!
//! `cargo bench -p ipc-shm --bench shm` (add `-- --quick` for a short run,
//! `-- --rounds N` to repeat every measurement N times, interleaved, and
//! report medians (default 5), `-- --only floor,blocking,async,async-messages,unix,iceoryx2,throughput`
//! to run a part, `-- --ring BYTES` for the ring capacity of the throughput
//! runs and the bare ring, the crate's default of 8 MiB unless given). The binary re-runs
//! itself as the peer process (`IPC_SHM_BENCH_ROLE`). Both processes pin
//! themselves to different CPUs.
//!
//! Ratios are taken within a round (against the floor or memcpy measured
//! right then), then the median over rounds is reported: on a shared or
//! virtual machine the floor itself moves by a factor of four between
//! minutes. Throughput is also compared with a bare ring (no headers, no
//! checks, no sleeping, plain `memcpy` on both sides) moving the same
//! messages between the same CPUs: the raw mechanism; and measured
//! through the async `Transport` as well.

#[cfg(target_os = "linux")]
#[path = "support/linux.rs"]
mod linux;

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the ipc-shm benchmark runs on Linux only");
}
