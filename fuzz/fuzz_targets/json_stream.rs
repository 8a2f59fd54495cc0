//! The JSON-stream scanner over arbitrary bytes: never panics or hangs,
//! yields only the stream's values (objects or arrays within the limit) in
//! order with nothing but whitespace between them, agrees with serde_json on
//! where each value ends, and any split of the stream into reads gives the
//! same frames as feeding it whole.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipc_fuzz::check_json_stream(data));
