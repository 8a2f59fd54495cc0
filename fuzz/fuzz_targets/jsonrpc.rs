//! JSON-RPC parsing and batch handling over arbitrary bytes: never panics;
//! a frame that is not JSON is a parse error and an empty batch an invalid
//! request; every message parsed serialises and parses back to itself; every
//! invalid entry becomes a reply that parses back with its id; the replies to
//! a batch (one per request or invalid entry, none for notifications) form a
//! batch of responses with the same ids in the same order.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipc_fuzz::check_jsonrpc(data));
