//! The properties the fuzz targets check, one `check_*` function per
//! target, and the helpers they share: feeding a decoder a byte stream
//! whole, one byte at a time or in pseudo-random chunks, the way
//! `FramedRead` feeds it.
//!
//! This file depends only on `ipc-core` and its dependencies, so
//! `ipc-core/tests/fuzz_regressions.rs` includes it too and replays every
//! committed corpus input through the same checks on the stable toolchain.

use bytes::BytesMut;
use ipc_core::codec::{FrameCodec, Framing, JsonStreamCodec, LengthCodec};
use ipc_core::jsonrpc::{parse, ErrorObject, Id, Incoming, Invalid, Message, Response};
use ipc_core::{Address, Error};
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

/// Frame-size limits the codec targets choose from (first input byte).
pub const MAX_FRAME_LENS: [usize; 8] = [0, 1, 2, 16, 64, 1024, 65_536, 1024 * 1024];

/// What decoding a stream produced: the frames in order, then either a clean
/// end (`None`) or the message of the error that stopped decoding.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The frames decoded before the end or the error.
    pub frames: Vec<Vec<u8>>,
    /// The error that stopped decoding, if any.
    pub error: Option<String>,
}

/// A codec input: a frame-size limit, a seed for chunking, and the stream.
#[derive(Debug, Clone, Copy)]
pub struct CodecInput<'a> {
    /// The codec's maximum frame length.
    pub max: usize,
    /// Seed of the pseudo-random split.
    pub seed: u32,
    /// The bytes a peer sent.
    pub stream: &'a [u8],
}

impl<'a> CodecInput<'a> {
    /// Byte 0 picks the limit, bytes 1-2 seed the split, the rest is the stream.
    pub fn new(data: &'a [u8]) -> Self {
        match data {
            [m, a, b, stream @ ..] => CodecInput {
                max: MAX_FRAME_LENS[usize::from(*m) % MAX_FRAME_LENS.len()],
                seed: u32::from(*a) << 8 | u32::from(*b),
                stream,
            },
            _ => CodecInput {
                max: 1024,
                seed: 0,
                stream: data,
            },
        }
    }
}

/// Feeds `chunks` to `codec` in order: `decode` until it wants more after
/// each read, `decode_eof` until it is done at the end, as `FramedRead` does.
pub fn decode_chunks<'c, D, I>(codec: D, chunks: I) -> Outcome
where
    D: Decoder<Item = BytesMut, Error = std::io::Error>,
    I: IntoIterator<Item = &'c [u8]>,
{
    decode_chunks_measured(codec, chunks).0
}

/// As [`decode_chunks`], also returning the largest capacity the read
/// buffer reached (what a peer's bytes made the decoder allocate).
pub fn decode_chunks_measured<'c, D, I>(mut codec: D, chunks: I) -> (Outcome, usize)
where
    D: Decoder<Item = BytesMut, Error = std::io::Error>,
    I: IntoIterator<Item = &'c [u8]>,
{
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut peak = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let step = codec.decode(&mut buf);
            peak = peak.max(buf.capacity());
            match step {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    let error = Some(e.to_string());
                    return (Outcome { frames, error }, peak);
                }
            }
        }
    }
    loop {
        let step = codec.decode_eof(&mut buf);
        peak = peak.max(buf.capacity());
        match step {
            Ok(Some(frame)) => frames.push(frame.to_vec()),
            Ok(None) => {
                return (
                    Outcome {
                        frames,
                        error: None,
                    },
                    peak,
                )
            }
            Err(e) => {
                let error = Some(e.to_string());
                return (Outcome { frames, error }, peak);
            }
        }
    }
}

/// Splits `data` into chunks of 0 to 40 bytes chosen by a xorshift generator
/// seeded with `seed` (empty chunks model a decoder polled without new bytes).
pub fn random_chunks(data: &[u8], seed: u32) -> Vec<&[u8]> {
    let mut state = seed.wrapping_mul(0x9e37_79b9) | 1;
    let mut chunks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 41) as usize;
        let (a, b) = rest.split_at(n.min(rest.len()));
        chunks.push(a);
        rest = b;
    }
    chunks
}

/// JSON whitespace, as the JSON-stream framing skips it between values.
pub fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The length-delimited decoder over arbitrary bytes (target `length_codec`):
/// never panics, never yields a frame over the limit, yields exactly the
/// frames the stream encodes, allocates nothing for a frame before its
/// length is checked, and any split of the stream into reads gives the same
/// outcome.
pub fn check_length_codec(data: &[u8]) {
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
}

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

/// The JSON-stream scanner over arbitrary bytes (target `json_stream`):
/// never panics or hangs, yields only the stream's values (objects or
/// arrays within the limit) in order with nothing but whitespace between
/// them, agrees with serde_json on where each value ends, and any split of
/// the stream into reads gives the same frames as feeding it whole.
pub fn check_json_stream(data: &[u8]) {
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
}

/// JSON equality, with floats equal when within a few units in the last
/// place (serde_json parses floats exactly only with its `float_roundtrip`
/// feature, which the fuzz build enables but ipc-core's tests do not).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Serialises `msg` and parses it back: it must come back unchanged.
fn round_trip(msg: &Message) {
    let bytes = serde_json::to_vec(msg).expect("a parsed message serialises");
    match parse(&bytes) {
        Ok(Incoming::Single(Ok(again))) => {
            let (a, b) = (
                serde_json::to_value(&again).unwrap(),
                serde_json::to_value(msg).unwrap(),
            );
            assert!(
                same_json(&a, &b),
                "round trip changed the message: {msg:?} -> {again:?}"
            );
            assert_eq!(std::mem::discriminant(&again), std::mem::discriminant(msg));
        }
        other => panic!(
            "{msg:?} serialised as {:?} and parsed back as {other:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

/// The reply to one batch entry or single message, as the server builds it.
fn reply_for(entry: &Result<Message, Invalid>) -> Option<Response> {
    match entry {
        Ok(Message::Request(req)) => Some(Response {
            id: req.id.clone(),
            result: Ok(Value::Null),
        }),
        Ok(Message::Notification(_) | Message::Response(_)) => None,
        Err(invalid) => {
            assert_eq!(
                invalid.error.code,
                ErrorObject::INVALID_REQUEST,
                "{invalid:?}"
            );
            Some(invalid.clone().into())
        }
    }
}

fn check_entry(entry: &Result<Message, Invalid>) {
    if let Ok(msg) = entry {
        round_trip(msg);
    }
    if let Some(reply) = reply_for(entry) {
        round_trip(&Message::Response(reply));
    }
}

/// JSON-RPC parsing and batch handling over arbitrary bytes (target
/// `jsonrpc`): never panics; a frame that is not JSON is a parse error and
/// an empty batch an invalid request; every message parsed serialises and
/// parses back to itself; every invalid entry becomes a reply that parses
/// back with its id; the replies to a batch (one per request or invalid
/// entry, none for notifications) form a batch of responses with the same
/// ids in the same order.
pub fn check_jsonrpc(data: &[u8]) {
    // Reading the members straight from the text agrees with judging the
    // whole `Value` tree (the reference reading).
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let reference = match value {
            Value::Array(items) if items.is_empty() => None,
            Value::Array(items) => Some(Incoming::Batch(
                items.into_iter().map(ipc_core::jsonrpc::classify).collect(),
            )),
            other => Some(Incoming::Single(ipc_core::jsonrpc::classify(other))),
        };
        assert_eq!(parse(data).ok(), reference, "parse and classify disagree");
    }
    match parse(data) {
        Err(error) => {
            assert!(
                error.code == ErrorObject::PARSE_ERROR
                    || error.code == ErrorObject::INVALID_REQUEST,
                "{error:?}"
            );
            if error.code == ErrorObject::INVALID_REQUEST {
                let v: Value =
                    serde_json::from_slice(data).expect("only JSON can be an invalid request");
                assert_eq!(
                    v,
                    Value::Array(Vec::new()),
                    "only an empty batch fails as a whole"
                );
            } else {
                assert!(
                    serde_json::from_slice::<Value>(data).is_err(),
                    "valid JSON got a parse error"
                );
            }
            round_trip(&Message::Response(Response {
                id: Id::Null,
                result: Err(error),
            }));
        }
        Ok(Incoming::Single(entry)) => check_entry(&entry),
        Ok(Incoming::Batch(entries)) => {
            assert!(!entries.is_empty(), "an empty batch was accepted");
            for entry in &entries {
                check_entry(entry);
            }
            let replies: Vec<Response> = entries.iter().filter_map(reply_for).collect();
            if replies.is_empty() {
                return; // a batch of notifications gets no reply at all
            }
            let bytes = serde_json::to_vec(&replies).expect("replies serialise");
            let Ok(Incoming::Batch(back)) = parse(&bytes) else {
                panic!("the batch reply did not parse back as a batch");
            };
            let ids: Vec<Id> = back
                .into_iter()
                .map(|m| match m {
                    Ok(Message::Response(r)) => r.id,
                    other => panic!("a batch reply entry parsed as {other:?}"),
                })
                .collect();
            let sent: Vec<Id> = replies.into_iter().map(|r| r.id).collect();
            assert_eq!(ids, sent, "batch reply ids changed");
        }
    }
}

/// Address parsing over arbitrary strings (target `address`): never panics;
/// a refusal is an `InvalidAddress` error that says what was expected; an
/// accepted address prints as a string that parses back to the same
/// address (and prints the same again).
pub fn check_address(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match input.parse::<Address>() {
        Ok(address) => {
            let shown = address.to_string();
            let again: Address = shown.parse().unwrap_or_else(|e| {
                panic!("{input:?} parsed, but its display {shown:?} did not: {e}")
            });
            assert_eq!(again, address, "{input:?} -> {shown:?} changed the address");
            assert_eq!(again.to_string(), shown);
            assert!(shown.starts_with(address.scheme()));
        }
        Err(e) => {
            assert!(
                matches!(e, Error::InvalidAddress { .. }),
                "{input:?}: {e:?}"
            );
            let message = e.to_string();
            assert!(message.contains("expected"), "{input:?}: {message}");
        }
    }
}
