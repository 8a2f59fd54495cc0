//! Sans-IO framing on [`tokio_util::codec`]: no sockets here, only bytes in
//! and frames out, so every rule is testable and fuzzable without I/O.
//!
//! - [`Framing::LengthDelimited`]: a u32 big-endian length, then the payload.
//!   The length is checked against the maximum before anything is allocated.
//! - [`Framing::JsonStream`]: concatenated JSON objects or arrays, with optional
//!   whitespace between them, as geth, reth and web3 clients speak over IPC.
//!   An incremental scanner finds each value's end in one pass (it never
//!   re-scans bytes it has seen) and enforces the same maximum while scanning.
//!
//! [`FrameCodec`] picks the framing from the first byte of a connection: a
//! JSON stream starts with `{`, `[` or whitespace, while a length prefix
//! starts with 0 for any frame under 16 MiB (and below `0x09` for any frame
//! a sane maximum allows).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;

/// The default largest frame: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// How messages are delimited on a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// u32 big-endian length prefix, then the payload.
    LengthDelimited,
    /// Concatenated JSON values (objects or arrays), whitespace between them allowed.
    JsonStream,
}

impl Framing {
    /// The framing a stream that starts with `byte` uses.
    pub fn detect(byte: u8) -> Framing {
        match byte {
            b'{' | b'[' | b' ' | b'\t' | b'\r' | b'\n' => Framing::JsonStream,
            _ => Framing::LengthDelimited,
        }
    }
}

fn codec_error(e: Error) -> std::io::Error {
    e.into()
}

/// Length-delimited framing: u32 big-endian length + payload.
///
/// The same wire format as `tokio_util`'s `LengthDelimitedCodec` configured
/// for a u32 big-endian header; written out here so an oversize frame is
/// reported with its declared length, and so nothing is reserved for a
/// frame until its length has passed the check.
///
/// # Examples
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use ipc_core::codec::LengthCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = LengthCodec::new(1024);
/// let mut buf = BytesMut::new();
/// codec.encode(Bytes::from_static(b"hello"), &mut buf)?;
/// assert_eq!(&buf[..], b"\0\0\0\x05hello");
/// assert_eq!(&codec.decode(&mut buf)?.unwrap()[..], b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LengthCodec {
    max: usize,
    /// The length of the frame whose header has been consumed.
    pending: Option<usize>,
}

impl LengthCodec {
    /// A codec that refuses frames longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        LengthCodec {
            max: max_frame_len.min(u32::MAX as usize),
            pending: None,
        }
    }

    /// The largest frame accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max
    }
}

impl Decoder for LengthCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                if src.len() < 4 {
                    return Ok(None);
                }
                let len = src.get_u32() as usize;
                if len > self.max {
                    return Err(codec_error(Error::FrameTooLarge { len, max: self.max }));
                }
                self.pending = Some(len);
                len
            }
        };
        if src.len() < len {
            // Only now, with the length checked, make room for the rest.
            src.reserve(len - src.len());
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && self.pending.is_none() => Ok(None),
            None => Err(codec_error(Error::Protocol(format!(
                "the stream ended in the middle of a frame ({} bytes of it received)",
                buf.len()
            )))),
        }
    }
}

impl Encoder<Bytes> for LengthCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Self::Error> {
        self.encode(&item[..], dst)
    }
}

impl Encoder<&[u8]> for LengthCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), Self::Error> {
        if item.len() > self.max {
            return Err(codec_error(Error::FrameTooLarge {
                len: item.len(),
                max: self.max,
            }));
        }
        dst.reserve(4 + item.len());
        dst.extend_from_slice(&(item.len() as u32).to_be_bytes());
        dst.extend_from_slice(item);
        Ok(())
    }
}

/// Concatenated-JSON framing, as geth-style IPC clients speak it.
///
/// The scanner tracks nesting depth and string/escape state across calls, so
/// bytes are looked at once however the stream is split into reads. It
/// frames values; it does not validate them: a frame with bad JSON inside
/// balanced brackets is handed on (and answered with a parse error), while a
/// byte outside any value that cannot start one is a [`Error::Protocol`]
/// error, after which the stream cannot be resynchronised.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use ipc_core::codec::JsonStreamCodec;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = JsonStreamCodec::new(1024);
/// let mut buf = BytesMut::from(&b"{\"a\":\"}\"}\n[1,2]{"[..]);
/// assert_eq!(&codec.decode(&mut buf)?.unwrap()[..], b"{\"a\":\"}\"}");
/// assert_eq!(&codec.decode(&mut buf)?.unwrap()[..], b"[1,2]");
/// assert!(codec.decode(&mut buf)?.is_none()); // "{" is incomplete
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct JsonStreamCodec {
    max: usize,
    /// Bytes of the current value already scanned.
    scanned: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl JsonStreamCodec {
    /// A codec that refuses values longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        JsonStreamCodec {
            max: max_frame_len,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// The largest value accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max
    }
}

impl Decoder for JsonStreamCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        if self.scanned == 0 {
            // Between values: skip whitespace, then expect the start of one.
            let ws = src
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .count();
            src.advance(ws);
            let Some(&first) = src.first() else {
                return Ok(None);
            };
            if first != b'{' && first != b'[' {
                return Err(codec_error(Error::Protocol(format!(
                    "expected a JSON object or array, found byte {:?} (0x{first:02x}); \
                     send JSON-RPC messages as JSON objects or arrays",
                    char::from(first)
                ))));
            }
        }
        let limit = src.len().min(self.max.saturating_add(1));
        let mut i = self.scanned;
        while i < limit {
            let b = src[i];
            i += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.scanned = 0;
                        if i > self.max {
                            break;
                        }
                        return Ok(Some(src.split_to(i)));
                    }
                }
                _ => {}
            }
        }
        self.scanned = i;
        if i > self.max {
            return Err(codec_error(Error::FrameTooLarge {
                len: i,
                max: self.max,
            }));
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.iter().all(u8::is_ascii_whitespace) => {
                buf.clear();
                Ok(None)
            }
            None => Err(codec_error(Error::Protocol(format!(
                "the stream ended inside a JSON value ({} bytes of it received)",
                buf.len()
            )))),
        }
    }
}

impl Encoder<Bytes> for JsonStreamCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Self::Error> {
        self.encode(&item[..], dst)
    }
}

impl Encoder<&[u8]> for JsonStreamCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), Self::Error> {
        if item.len() > self.max {
            return Err(codec_error(Error::FrameTooLarge {
                len: item.len(),
                max: self.max,
            }));
        }
        dst.reserve(item.len() + 1);
        dst.extend_from_slice(item);
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

/// Either framing, fixed up front or detected from a connection's first byte.
#[derive(Debug)]
pub struct FrameCodec {
    framing: Option<Framing>,
    fallback: Framing,
    length: LengthCodec,
    json: JsonStreamCodec,
}

impl FrameCodec {
    /// A codec with a fixed framing.
    pub fn new(framing: Framing, max_frame_len: usize) -> Self {
        FrameCodec {
            framing: Some(framing),
            fallback: framing,
            length: LengthCodec::new(max_frame_len),
            json: JsonStreamCodec::new(max_frame_len),
        }
    }

    /// A codec that detects the framing from the first byte it decodes;
    /// `fallback` is used to encode anything sent before that.
    pub fn detect(fallback: Framing, max_frame_len: usize) -> Self {
        FrameCodec {
            framing: None,
            ..FrameCodec::new(fallback, max_frame_len)
        }
    }

    /// The framing in use, once known.
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        let framing = match self.framing {
            Some(f) => f,
            None => match src.first() {
                None => return Ok(None),
                Some(&b) => *self.framing.insert(Framing::detect(b)),
            },
        };
        match framing {
            Framing::LengthDelimited => self.length.decode(src),
            Framing::JsonStream => self.json.decode(src),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        match self.framing.unwrap_or(self.fallback) {
            Framing::LengthDelimited => self.length.decode_eof(src),
            Framing::JsonStream => self.json.decode_eof(src),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Self::Error> {
        self.encode(&item[..], dst)
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), Self::Error> {
        match self.framing.unwrap_or(self.fallback) {
            Framing::LengthDelimited => self.length.encode(item, dst),
            Framing::JsonStream => self.json.encode(item, dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all<D: Decoder<Item = BytesMut, Error = std::io::Error>>(
        codec: &mut D,
        chunks: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf)? {
                out.push(frame.to_vec());
            }
        }
        while let Some(frame) = codec.decode_eof(&mut buf)? {
            out.push(frame.to_vec());
        }
        Ok(out)
    }

    fn split_at_points<'a>(data: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut pts: Vec<usize> = points.iter().map(|p| p % (data.len() + 1)).collect();
        pts.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in pts {
            chunks.push(&data[last..p]);
            last = p;
        }
        chunks.push(&data[last..]);
        chunks
    }

    #[test]
    fn oversize_length_is_refused_before_allocation() {
        let mut codec = LengthCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xf0][..]);
        let err: Error = codec.decode(&mut buf).unwrap_err().into();
        assert!(matches!(
            err,
            Error::FrameTooLarge {
                len: 0xffff_fff0,
                max: 1024
            }
        ));
        assert!(buf.capacity() < 1024, "nothing was reserved for the frame");
    }

    #[test]
    fn truncated_length_frame_at_eof_is_an_error() {
        let mut codec = LengthCodec::new(1024);
        let err = decode_all(&mut codec, &[b"\0\0\0\x09abc"]).unwrap_err();
        assert!(err.to_string().contains("middle of a frame"), "{err}");
    }

    #[test]
    fn json_stream_handles_strings_escapes_and_nesting() {
        let input = br#" {"a":"x}\"]{"} [{"b":[1,{"c":"\\"}]}]
{"e":"\u0041"}"#;
        let frames = decode_all(&mut JsonStreamCodec::new(1024), &[input]).unwrap();
        assert_eq!(
            frames,
            vec![
                br#"{"a":"x}\"]{"}"#.to_vec(),
                br#"[{"b":[1,{"c":"\\"}]}]"#.to_vec(),
                br#"{"e":"\u0041"}"#.to_vec(),
            ]
        );
    }

    #[test]
    fn json_stream_rejects_bytes_outside_values() {
        let err = decode_all(&mut JsonStreamCodec::new(1024), &[b"{} hello"]).unwrap_err();
        assert!(
            err.to_string().contains("expected a JSON object or array"),
            "{err}"
        );
    }

    #[test]
    fn json_stream_enforces_max_while_scanning() {
        let mut codec = JsonStreamCodec::new(16);
        let mut buf = BytesMut::from(&b"{\"aaaaaaaa\":"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"\"bbbbbbbbbbbb");
        let err: Error = codec.decode(&mut buf).unwrap_err().into();
        assert!(matches!(err, Error::FrameTooLarge { max: 16, .. }), "{err}");
        // A value of exactly the maximum passes.
        let mut codec = JsonStreamCodec::new(16);
        let mut buf = BytesMut::from(&b"{\"a\":\"bbbbbbbb\"}"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 16);
    }

    #[test]
    fn json_stream_incomplete_at_eof_is_an_error_but_trailing_whitespace_is_not() {
        assert!(decode_all(&mut JsonStreamCodec::new(64), &[b"{\"a\":1"]).is_err());
        assert_eq!(
            decode_all(&mut JsonStreamCodec::new(64), &[b"{} \n"]).unwrap(),
            vec![b"{}".to_vec()]
        );
    }

    #[test]
    fn frame_codec_detects_framing() {
        let mut c = FrameCodec::detect(Framing::LengthDelimited, 64);
        assert_eq!(
            decode_all(&mut c, &[b"\n{}"]).unwrap(),
            vec![b"{}".to_vec()]
        );
        assert_eq!(c.framing(), Some(Framing::JsonStream));
        let mut c = FrameCodec::detect(Framing::JsonStream, 64);
        assert_eq!(
            decode_all(&mut c, &[b"\0\0\0\x02{}"]).unwrap(),
            vec![b"{}".to_vec()]
        );
        assert_eq!(c.framing(), Some(Framing::LengthDelimited));
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[\\PC\"\\\\{}\\[\\]]{0,12}".prop_map(serde_json::Value::from),
        ];
        let inner = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z\"{}]{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    }

    /// Under Miri every case is interpreted (thousands of times slower), so
    /// a few cases run there, and nothing is persisted (Miri isolates the
    /// file system).
    fn config() -> ProptestConfig {
        if cfg!(miri) {
            ProptestConfig {
                cases: 4,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        } else {
            ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_split_decodes_the_same_length_frames(
            msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
            points in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut codec = LengthCodec::new(1024);
            let mut wire = BytesMut::new();
            for m in &msgs {
                codec.encode(&m[..], &mut wire).unwrap();
            }
            let chunks = split_at_points(&wire, &points);
            let out = decode_all(&mut LengthCodec::new(1024), &chunks).unwrap();
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn any_split_decodes_the_same_json_values(
            values in prop::collection::vec(json_value(), 0..8),
            seps in prop::collection::vec("[ \t\r\n]{0,3}", 8),
            points in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut wire = Vec::new();
            for (v, sep) in values.iter().zip(&seps) {
                wire.extend_from_slice(sep.as_bytes());
                serde_json::to_writer(&mut wire, v).unwrap();
            }
            let chunks = split_at_points(&wire, &points);
            let out = decode_all(&mut JsonStreamCodec::new(1 << 20), &chunks).unwrap();
            let parsed: Vec<serde_json::Value> =
                out.iter().map(|f| serde_json::from_slice(f).unwrap()).collect();
            prop_assert_eq!(parsed, values);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&mut FrameCodec::detect(Framing::LengthDelimited, 256), &[&data]);
        }
    }
}
