//! Address parsing over arbitrary strings: never panics; a refusal is an
//! `InvalidAddress` error that says what was expected; an accepted address
//! prints as a string that parses back to the same address (and prints the
//! same again).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipc_fuzz::check_address(data));
