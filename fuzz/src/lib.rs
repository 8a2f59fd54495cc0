//! Helpers shared by the fuzz targets: feeding a decoder a byte stream whole,
//! one byte at a time or in pseudo-random chunks, the way `FramedRead` feeds
//! it, so the targets can check that every split gives the same frames.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

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
