//! Spinning async reads and writes (`ShmOptions::async_spin`) under the
//! JSON-RPC `Server` and `Client`, whose reading and writing are separate
//! tasks: a spinning read must let the other tasks of its thread run, or a
//! reply (or the caller's next request) waits behind it for the whole spin.

use std::time::Duration;

use ipc_core::Address;
use ipc_shm::{ShmListener, ShmOptions, ShmTransport};

mod util;
use util::temp_addr;

/// The spin of these tests: far longer than a call takes, so that a message
/// held back while a read spins shows plainly (each call would take the
/// whole spin).
const SPIN: Duration = Duration::from_secs(2);
const CALLS: u32 = 50;

/// `CALLS` JSON-RPC calls, server and client each on a one-thread runtime,
/// bound and connected with `server` and `client`.
fn echo_calls(addr: &Address, server: ShmOptions, client: ShmOptions, what: &str) {
    let server_addr = addr.clone();
    ipc_core::conformance::rpc_calls_one_thread_each(
        move || Ok(Box::new(ShmListener::bind_with(&server_addr, server)?)),
        || async move {
            let t = ShmTransport::connect(addr, &client).await?;
            Ok(Box::new(t) as ipc_core::BoxTransport)
        },
        CALLS,
        SPIN,
        what,
    );
}

/// A `Server` whose connections spin sends each answer before its
/// connection spins for the next request.
#[test]
fn spinning_server_answers_before_it_spins_for_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    echo_calls(
        &temp_addr(dir.path()),
        ShmOptions::new().async_spin(SPIN),
        ShmOptions::new(),
        "the answers waited while the server's connection spun for the next request",
    );
}

/// A `Client` whose connection spins lets the caller it has just answered
/// send its next request before it spins for the next answer.
#[test]
fn spinning_client_lets_callers_send_before_it_spins_for_the_next_answer() {
    let dir = tempfile::tempdir().unwrap();
    echo_calls(
        &temp_addr(dir.path()),
        ShmOptions::new(),
        ShmOptions::new().async_spin(SPIN),
        "the requests waited while the client's connection spun for the next answer",
    );
}
