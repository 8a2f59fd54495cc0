//! Latency and throughput of the shared-memory transport between two real
//! processes, against the hardware floor and the peers, all in one run.
//!
//! `cargo bench -p ipc-shm --bench shm` (add `-- --quick` for a short run).
//! The binary re-runs itself as the peer process (`IPC_SHM_BENCH_ROLE`).
//! Both processes pin themselves to different CPUs.

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
