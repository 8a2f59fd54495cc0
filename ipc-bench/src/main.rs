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
//! names an existing directory to use instead. On Windows, named pipes take
//! their names from that directory's and the mechanism's
//! (`\\.\pipe\ipc-bench-XXXXXX-<mechanism>.ep`).
//!
//! It runs on Unix and Windows: the mechanisms of one platform only (Unix
//! sockets and FIFOs; Win32 named pipes) live in `sys::unix` and
//! `sys::windows`, and the report names the other platform's as not built.

/// The workspace's local transport on this platform, for descriptions.
#[cfg(unix)]
macro_rules! local_transport {
    () => {
        "ipc_unix (a Unix socket)"
    };
}
#[cfg(windows)]
macro_rules! local_transport {
    () => {
        "ipc_windows (a named pipe)"
    };
}

/// The platform's local stream, for descriptions.
#[cfg(unix)]
macro_rules! local_stream {
    () => {
        "a Unix socket"
    };
}
#[cfg(windows)]
macro_rules! local_stream {
    () => {
        "a named pipe"
    };
}

mod charts;
mod cli;
#[cfg(all(unix, feature = "iceoryx2"))]
mod iox;
mod mech;
mod memcpy;
mod ours;
mod peers;
mod peers_rpc;
mod proto;
mod raw;
mod results;
mod rpc;
mod run;
mod shm;
mod streams;
mod sys;

#[cfg(not(any(unix, windows)))]
compile_error!("ipc-bench runs on Unix and Windows");

fn main() -> std::process::ExitCode {
    cli::main()
}
