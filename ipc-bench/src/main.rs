//! `ipc-bench`: compares local IPC mechanisms across two real processes.
//!
//! For each mechanism the benchmark spawns itself as the server (the hidden
//! `serve` subcommand), connects as the client, and measures round-trip
//! latency distributions, one-way stream throughput, paced round trips and
//! the CPU time of both processes. Every figure is printed beside its ratio
//! to a raw OS baseline measured in the same run, and the run is written to
//! `results.json`, `report.md` and SVG charts under the output directory.
//!
//! ```text
//! ipc-bench                      # everything, full length
//! ipc-bench --quick              # a short pass (CI smoke test)
//! ipc-bench --mechanism unix-raw,ipc-unix --size 64 --duration 2
//! ipc-bench --list               # the mechanisms this build knows
//! ```
//!
//! Endpoints (sockets, FIFOs, the spin mapping) live in a fresh private
//! directory, under `/dev/shm` when it exists; `IPC_BENCH_ENDPOINT_DIR`
//! names an existing directory to use instead.

#[cfg(unix)]
mod charts;
#[cfg(unix)]
mod cli;
#[cfg(all(unix, feature = "iceoryx2"))]
mod iox;
#[cfg(unix)]
mod mech;
#[cfg(unix)]
mod memcpy;
#[cfg(unix)]
mod ours;
#[cfg(unix)]
mod peers;
#[cfg(unix)]
mod peers_rpc;
#[cfg(unix)]
mod proto;
#[cfg(unix)]
mod raw;
#[cfg(unix)]
mod results;
#[cfg(unix)]
mod rpc;
#[cfg(unix)]
mod run;
#[cfg(unix)]
mod shm;
#[cfg(unix)]
mod streams;
#[cfg(unix)]
mod sys;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "ipc-bench: only Unix is benchmarked so far (Windows named pipes are not yet a mechanism)"
    );
    std::process::ExitCode::FAILURE
}
