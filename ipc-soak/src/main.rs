//! `ipc-soak`: a soak run of the JSON-RPC server over Unix sockets.
//!
//! `ipc-soak run --seconds N` starts a server process (this binary's
//! `server` subcommand), drives a mixed load against it (long-lived
//! connections with requests of mixed sizes and batches, connection churn
//! with requests abandoned in flight, garbage and half frames, client
//! processes killed with SIGKILL at random moments), then measures the
//! server's memory per idle connection, and prints:
//!
//! - requests made, answered correctly, and errors by kind (those asked for,
//!   such as unknown methods, apart from those that were not);
//! - responses lost (a request neither answered nor failed with an error
//!   within a generous deadline) and answers that did not match their
//!   request: both must be 0;
//! - the server's resident memory at the start, over time and at its peak,
//!   and the memory of one idle connection.
//!
//! It exits non-zero when anything was lost or mismatched, an unexpected
//! error occurred, or the server died. `cargo xtask soak` builds it in
//! release mode and runs it.

#[cfg(target_os = "linux")]
mod drive;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
mod sys;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ipc-soak", about = "Soak run of the ipc JSON-RPC server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a server process, load it for a while, print the figures.
    Run(RunArgs),
    /// The server process (started by `run`).
    Server {
        /// Address to bind, such as unix:/tmp/soak.sock.
        #[arg(long)]
        address: String,
    },
    /// A client process that makes requests until it is killed (started by `run`).
    Victim {
        /// Address of the server.
        #[arg(long)]
        address: String,
        /// Seed of its random choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Options of a soak run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// How long to drive the load.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Long-lived connections, each with four request loops.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Idle connections opened at the end to measure memory per connection.
    #[arg(long, default_value_t = 1000)]
    pub idle: usize,
    /// Seed of the random choices (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ipc-soak: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "linux")]
fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Run(args) => drive::run(args),
        Command::Server { address } => {
            server::run(&address).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Victim { address, seed } => {
            drive::victim(&address, seed).map(|()| std::process::ExitCode::SUCCESS)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    let what = match command {
        Command::Run(a) => format!(
            "run {} s of load ({} connections, {} idle, seed {:?})",
            a.seconds, a.connections, a.idle, a.seed
        ),
        Command::Server { address } => format!("serve {address}"),
        Command::Victim { address, seed } => format!("call {address} (seed {seed})"),
    };
    anyhow::bail!(
        "cannot {what}: the soak run measures memory through /proc and runs on Linux only"
    )
}
