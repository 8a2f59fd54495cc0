//! The length-delimited decoder over arbitrary bytes: never panics, never
//! yields a frame over the limit, yields exactly the frames the stream
//! encodes, allocates nothing for a frame before its length is checked,
//! and any split of the stream into reads gives the same outcome.
#![no_main]

use bytes::BytesMut;
use ipc_core::codec::{FrameCodec, Framing, LengthCodec};
use ipc_fuzz::{decode_chunks, decode_chunks_measured, random_chunks, CodecInput};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Encoder;

fuzz_target!(|data: &[u8]| {
    let CodecInput { max, seed, stream } = CodecInput::new(data);
    let (whole, peak) = decode_chunks_measured(LengthCodec::new(max), [stream]);

    // Nothing is reserved for a frame before its length passed the limit:
    // the buffer never grows far past what was received or what the limit
    // allows (a declared 4 GiB length must not allocate 4 GiB).
    let bound = 2 * (stream.len() + max.min(u32::MAX as usize) + 8) + 64;
    assert!(
        peak <= bound,
        "the read buffer grew to {peak} bytes (bound {bound})"
    );

    // Every frame fits the limit, and re-encoding the frames gives back the
    // stream (all of it when decoding ended cleanly).
    let mut encoded = BytesMut::new();
    for frame in &whole.frames {
        assert!(
            frame.len() <= max,
            "a {}-byte frame passed a {max}-byte limit",
            frame.len()
        );
        LengthCodec::new(max)
            .encode(&frame[..], &mut encoded)
            .expect("re-encode a decoded frame");
    }
    assert!(
        stream.starts_with(&encoded),
        "the frames are not the stream's frames"
    );
    match &whole.error {
        None => assert_eq!(&encoded[..], stream, "bytes were dropped without an error"),
        Some(e) => assert!(
            e.contains("exceeds the maximum") || e.contains("middle of a frame"),
            "unexpected error: {e}"
        ),
    }

    // Any split of the stream gives the same frames and the same error.
    let bytewise = decode_chunks(LengthCodec::new(max), stream.chunks(1));
    assert_eq!(
        bytewise, whole,
        "one byte per read differs from the whole stream"
    );
    let random = decode_chunks(LengthCodec::new(max), random_chunks(stream, seed));
    assert_eq!(
        random, whole,
        "a random split differs from the whole stream"
    );

    // FrameCodec with this framing fixed, or detected from a first byte that
    // selects it, behaves the same.
    let fixed = decode_chunks(
        FrameCodec::new(Framing::LengthDelimited, max),
        random_chunks(stream, seed ^ 1),
    );
    assert_eq!(fixed, whole);
    if stream.first().map(|&b| Framing::detect(b)) == Some(Framing::LengthDelimited) {
        let detected = decode_chunks(
            FrameCodec::detect(Framing::JsonStream, max),
            random_chunks(stream, seed ^ 2),
        );
        assert_eq!(detected, whole);
    }
});
