//! The JSON-stream scanner over arbitrary bytes: never panics or hangs,
//! yields only the stream's values (objects or arrays within the limit) in
//! order with nothing but whitespace between them, agrees with serde_json on
//! where each value ends, and any split of the stream into reads gives the
//! same frames as feeding it whole.
#![no_main]

use ipc_core::codec::{FrameCodec, Framing, JsonStreamCodec};
use ipc_fuzz::{decode_chunks, decode_chunks_measured, is_json_ws, random_chunks, CodecInput};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

/// Where serde_json says the values of `stream` lie, when it is nothing but
/// objects and arrays separated by whitespace; `None` otherwise.
fn serde_json_spans(stream: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut spans = Vec::new();
    let mut values = serde_json::Deserializer::from_slice(stream).into_iter::<IgnoredAny>();
    let mut end = 0;
    while let Some(value) = values.next() {
        value.ok()?;
        let start = end + stream[end..].iter().take_while(|&&b| is_json_ws(b)).count();
        if !matches!(stream[start], b'{' | b'[') {
            return None;
        }
        end = values.byte_offset();
        spans.push((start, end));
    }
    Some(spans)
}

fuzz_target!(|data: &[u8]| {
    let CodecInput { max, seed, stream } = CodecInput::new(data);
    let (whole, peak) = decode_chunks_measured(JsonStreamCodec::new(max), [stream]);
    // The scanner allocates nothing beyond the bytes it was given.
    assert!(
        peak <= 2 * stream.len() + 64,
        "the read buffer grew to {peak} bytes"
    );

    // The frames are the stream's values in order, whitespace between them.
    let mut rest = stream;
    for frame in &whole.frames {
        assert!(
            frame.len() <= max,
            "a {}-byte value passed a {max}-byte limit",
            frame.len()
        );
        assert!(
            matches!(frame.first(), Some(b'{' | b'[')),
            "frame starts badly: {frame:?}"
        );
        assert!(
            matches!(frame.last(), Some(b'}' | b']')),
            "frame ends badly: {frame:?}"
        );
        let skip = rest.iter().take_while(|&&b| is_json_ws(b)).count();
        rest = &rest[skip..];
        assert!(
            rest.starts_with(frame),
            "frame is not the next value of the stream"
        );
        rest = &rest[frame.len()..];
    }
    match &whole.error {
        None => assert!(
            rest.iter().all(|&b| is_json_ws(b)),
            "bytes were dropped without an error"
        ),
        Some(e) => assert!(
            e.contains("exceeds the maximum")
                || e.contains("expected a JSON object or array")
                || e.contains("ended inside a JSON value"),
            "unexpected error: {e}"
        ),
    }

    // serde_json agrees on where well-formed values end.
    if stream.len() <= max {
        if let Some(spans) = serde_json_spans(stream) {
            let expected: Vec<Vec<u8>> =
                spans.iter().map(|&(a, b)| stream[a..b].to_vec()).collect();
            assert_eq!(whole.error, None, "well-formed values were refused");
            assert_eq!(
                whole.frames, expected,
                "the scanner split values differently from serde_json"
            );
        }
    }

    // Any split of the stream gives the same frames and the same error.
    let bytewise = decode_chunks(JsonStreamCodec::new(max), stream.chunks(1));
    assert_eq!(
        bytewise, whole,
        "one byte per read differs from the whole stream"
    );
    let random = decode_chunks(JsonStreamCodec::new(max), random_chunks(stream, seed));
    assert_eq!(
        random, whole,
        "a random split differs from the whole stream"
    );

    // FrameCodec with this framing fixed, or detected from a first byte that
    // selects it, behaves the same.
    let fixed = decode_chunks(
        FrameCodec::new(Framing::JsonStream, max),
        random_chunks(stream, seed ^ 1),
    );
    assert_eq!(fixed, whole);
    if stream.first().map(|&b| Framing::detect(b)) == Some(Framing::JsonStream) {
        let detected = decode_chunks(
            FrameCodec::detect(Framing::LengthDelimited, max),
            random_chunks(stream, seed ^ 2),
        );
        assert_eq!(detected, whole);
    }
});
