//! The length-delimited decoder over arbitrary bytes: never panics, never
//! yields a frame over the limit, yields exactly the frames the stream
//! encodes, allocates nothing for a frame before its length is checked,
//! and any split of the stream into reads gives the same outcome.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipc_fuzz::check_length_codec(data));
