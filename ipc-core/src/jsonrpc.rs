//! JSON-RPC 2.0 messages: request, notification, response, batch, and the
//! spec's rules for telling them apart and for answering bad input.

use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The JSON-RPC version string every message carries.
pub const VERSION: &str = "2.0";

/// A request id: a number, a string, or (discouraged, but legal) null.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A numeric id.
    Number(i64),
    /// A string id.
    String(String),
    /// `null`: used in replies to messages whose id could not be read.
    Null,
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
            Id::Null => f.write_str("null"),
        }
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::Number(n)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::String(s.to_owned())
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The error code; -32768 to -32000 are reserved by the spec.
    pub code: i64,
    /// A short description.
    pub message: String,
    /// Anything else the server wants to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal JSON-RPC error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Server error: the server is overloaded or shutting down (implementation-defined range).
    pub const SERVER_BUSY: i64 = -32000;
    /// Server error: the peer was refused by the server's auth policy.
    pub const UNAUTHORIZED: i64 = -32001;

    /// An error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Adds `data`.
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// -32700, with what the parser said.
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        ErrorObject::new(Self::PARSE_ERROR, "Parse error").with_data(detail.to_string())
    }

    /// -32600, with what was wrong.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        ErrorObject::new(Self::INVALID_REQUEST, "Invalid Request").with_data(detail.into())
    }

    /// -32601 for `method`.
    pub fn method_not_found(method: &str) -> Self {
        ErrorObject::new(Self::METHOD_NOT_FOUND, "Method not found").with_data(method.to_owned())
    }

    /// -32602, with what was wrong.
    pub fn invalid_params(detail: impl fmt::Display) -> Self {
        ErrorObject::new(Self::INVALID_PARAMS, "Invalid params").with_data(detail.to_string())
    }

    /// -32603, with what went wrong.
    pub fn internal(detail: impl fmt::Display) -> Self {
        ErrorObject::new(Self::INTERNAL_ERROR, "Internal error").with_data(detail.to_string())
    }
}

impl fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(data) = &self.data {
            write!(f, ": {data}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorObject {}

/// A call that expects a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The method name.
    pub method: String,
    /// Positional (array) or named (object) parameters.
    pub params: Option<Value>,
    /// The id the response will carry.
    pub id: Id,
}

/// A call that expects no response.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The method name.
    pub method: String,
    /// Positional (array) or named (object) parameters.
    pub params: Option<Value>,
}

impl Notification {
    /// Deserialises the parameters into `T`.
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.params.clone().unwrap_or(Value::Null))
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request answered.
    pub id: Id,
    /// The result, or the error object.
    pub result: Result<Value, ErrorObject>,
}

/// Any single JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects a response.
    Request(Request),
    /// A call that expects none.
    Notification(Notification),
    /// An answer.
    Response(Response),
}

/// A message that could not be understood, with the id to reply to.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The id, when it could be read; otherwise null.
    pub id: Id,
    /// The error to reply with.
    pub error: ErrorObject,
}

/// What one frame held: a single message or a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// One message (or why it was invalid).
    Single(Result<Message, Invalid>),
    /// A non-empty batch; each entry is judged on its own.
    Batch(Vec<Result<Message, Invalid>>),
}

/// Parses one frame.
///
/// # Errors
///
/// Returns the error object to answer with (id null) when the frame is not
/// JSON at all (-32700) or is an empty batch (-32600).
///
/// # Examples
///
/// ```
/// use ipc_core::jsonrpc::{parse, Incoming, Message};
///
/// let msg = parse(br#"{"jsonrpc":"2.0","method":"add","params":[1,2],"id":7}"#)?;
/// let Incoming::Single(Ok(Message::Request(req))) = msg else { panic!() };
/// assert_eq!(req.method, "add");
///
/// assert_eq!(parse(b"{oops").unwrap_err().code, -32700);
/// assert_eq!(parse(b"[]").unwrap_err().code, -32600);
/// # Ok::<(), ipc_core::jsonrpc::ErrorObject>(())
/// ```
pub fn parse(frame: &[u8]) -> Result<Incoming, ErrorObject> {
    // Read the members straight from the text: building a `Value` of the
    // whole message first would put every message's members in a map only
    // to take them out again.
    let frame: Frame = serde_json::from_slice(frame).map_err(ErrorObject::parse_error)?;
    match frame {
        Frame::Batch(items) => {
            if items.is_empty() {
                return Err(ErrorObject::invalid_request(
                    "an empty batch is not a request",
                ));
            }
            Ok(Incoming::Batch(
                items.into_iter().map(classify_item).collect(),
            ))
        }
        Frame::Single(item) => Ok(Incoming::Single(classify_item(item))),
    }
}

fn invalid(id: Id, detail: impl Into<String>) -> Invalid {
    Invalid {
        id,
        error: ErrorObject::invalid_request(detail),
    }
}

/// Judges one JSON value as a message.
pub fn classify(value: Value) -> Result<Message, Invalid> {
    let Value::Object(mut obj) = value else {
        return Err(invalid(Id::Null, "a message must be a JSON object"));
    };
    classify_members(Members {
        jsonrpc: obj.remove("jsonrpc"),
        id: obj.remove("id"),
        method: obj.remove("method"),
        params: obj.remove("params"),
        result: obj.remove("result"),
        error: obj.remove("error"),
    })
}

fn classify_item(item: Item) -> Result<Message, Invalid> {
    match item {
        Item::Object(members) => classify_members(members),
        Item::Other => Err(invalid(Id::Null, "a message must be a JSON object")),
    }
}

fn classify_members(m: Members) -> Result<Message, Invalid> {
    let id = match m.id {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<Id>(v)
                .map_err(|_| invalid(Id::Null, "the id must be an integer, a string or null"))?,
        ),
    };
    let reply_id = id.clone().unwrap_or(Id::Null);
    match &m.jsonrpc {
        Some(Value::String(v)) if v == VERSION => {}
        _ => return Err(invalid(reply_id, "the jsonrpc member must be \"2.0\"")),
    }
    if let Some(method) = m.method {
        let Value::String(method) = method else {
            return Err(invalid(reply_id, "the method must be a string"));
        };
        let params = m.params;
        if let Some(p) = &params {
            if !p.is_array() && !p.is_object() {
                return Err(invalid(reply_id, "params must be an array or an object"));
            }
        }
        return Ok(match id {
            Some(id) => Message::Request(Request { method, params, id }),
            None => Message::Notification(Notification { method, params }),
        });
    }
    let Some(id) = id else {
        return Err(invalid(
            Id::Null,
            "a message needs a method, or an id with a result or an error",
        ));
    };
    let result = match (m.result, m.error) {
        (Some(result), None) => Ok(result),
        (None, Some(error)) => Err(serde_json::from_value::<ErrorObject>(error)
            .map_err(|e| invalid(id.clone(), format!("malformed error object: {e}")))?),
        _ => {
            return Err(invalid(
                id,
                "a response must have exactly one of result and error",
            ))
        }
    };
    Ok(Message::Response(Response { id, result }))
}

/// A frame as read: one item, or a batch of them.
enum Frame {
    Single(Item),
    Batch(Vec<Item>),
}

/// One message as read: an object's members, or anything else (which is
/// not a message).
enum Item {
    Object(Members),
    Other,
}

/// The members of a message object that the protocol defines; others are
/// skipped. A member given twice counts with its last value, as in a map.
#[derive(Default)]
struct Members {
    jsonrpc: Option<Value>,
    id: Option<Value>,
    method: Option<Value>,
    params: Option<Value>,
    result: Option<Value>,
    error: Option<Value>,
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Reader { top: true })
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(Reader { top: false })? {
            Frame::Single(item) => Ok(item),
            Frame::Batch(_) => Ok(Item::Other),
        }
    }
}

/// Reads a frame (`top`) or one entry of a batch: an array is a batch only
/// at the top; any value but an object is not a message.
struct Reader {
    top: bool,
}

impl<'de> Visitor<'de> for Reader {
    type Value = Frame;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Frame, A::Error> {
        if !self.top {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Frame::Single(Item::Other));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        Ok(Frame::Batch(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame, A::Error> {
        let mut m = Members::default();
        while let Some(key) = map.next_key::<Member>()? {
            let slot = match key {
                Member::Jsonrpc => &mut m.jsonrpc,
                Member::Id => &mut m.id,
                Member::Method => &mut m.method,
                Member::Params => &mut m.params,
                Member::Result => &mut m.result,
                Member::Error => &mut m.error,
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Value>()?);
        }
        Ok(Frame::Single(Item::Object(m)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Frame, E> {
        Ok(Frame::Single(Item::Other))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Frame, E> {
        Ok(Frame::Single(Item::Other))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Frame, E> {
        Ok(Frame::Single(Item::Other))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Frame, E> {
        Ok(Frame::Single(Item::Other))
    }
    fn visit_str<E>(self, _: &str) -> Result<Frame, E> {
        Ok(Frame::Single(Item::Other))
    }
    fn visit_unit<E>(self) -> Result<Frame, E> {
        Ok(Frame::Single(Item::Other))
    }
}

/// A member name of a message object.
enum Member {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MemberVisitor;
        impl Visitor<'_> for MemberVisitor {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, name: &str) -> Result<Member, E> {
                Ok(match name {
                    "jsonrpc" => Member::Jsonrpc,
                    "id" => Member::Id,
                    "method" => Member::Method,
                    "params" => Member::Params,
                    "result" => Member::Result,
                    "error" => Member::Error,
                    _ => Member::Other,
                })
            }
        }
        d.deserialize_identifier(MemberVisitor)
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Request", 4)?;
        st.serialize_field("jsonrpc", VERSION)?;
        st.serialize_field("method", &self.method)?;
        if let Some(p) = &self.params {
            st.serialize_field("params", p)?;
        }
        st.serialize_field("id", &self.id)?;
        st.end()
    }
}

impl Serialize for Notification {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Notification", 3)?;
        st.serialize_field("jsonrpc", VERSION)?;
        st.serialize_field("method", &self.method)?;
        if let Some(p) = &self.params {
            st.serialize_field("params", p)?;
        }
        st.end()
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Response", 3)?;
        st.serialize_field("jsonrpc", VERSION)?;
        match &self.result {
            Ok(v) => st.serialize_field("result", v)?,
            Err(e) => st.serialize_field("error", e)?,
        }
        st.serialize_field("id", &self.id)?;
        st.end()
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Message::Request(r) => r.serialize(s),
            Message::Notification(n) => n.serialize(s),
            Message::Response(r) => r.serialize(s),
        }
    }
}

impl From<Invalid> for Response {
    fn from(i: Invalid) -> Self {
        Response {
            id: i.id,
            result: Err(i.error),
        }
    }
}

/// Turns parameters into the JSON-RPC `params` member: arrays and objects
/// pass through, null means none, a scalar is wrapped in a one-element array.
pub fn to_params(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        v @ (Value::Array(_) | Value::Object(_)) => Some(v),
        scalar => Some(Value::Array(vec![scalar])),
    }
}

/// An empty object, for methods without parameters that want named ones.
pub fn empty_params() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn single(s: &str) -> Result<Message, Invalid> {
        match parse(s.as_bytes()).unwrap() {
            Incoming::Single(m) => m,
            Incoming::Batch(_) => panic!("batch"),
        }
    }

    #[test]
    fn spec_examples() {
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}"#).unwrap(),
            Message::Request(Request {
                method: "subtract".into(),
                params: Some(json!([42, 23])),
                id: Id::Number(1)
            })
        );
        assert!(matches!(
            single(r#"{"jsonrpc":"2.0","method":"update","params":[1,2,3]}"#).unwrap(),
            Message::Notification(_)
        ));
        let e = single(r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorObject::INVALID_REQUEST);
        assert_eq!(e.id, Id::Null);
        let e = single(r#"{"jsonrpc":"1.0","method":"x","id":"abc"}"#).unwrap_err();
        assert_eq!(e.id, Id::String("abc".into()));
        let e = single(r#"{"jsonrpc":"2.0","method":"x","params":5,"id":3}"#).unwrap_err();
        assert_eq!((e.id, e.error.code), (Id::Number(3), -32600));
        match parse(b"[1,2,3]").unwrap() {
            Incoming::Batch(items) => {
                assert_eq!(items.len(), 3);
                assert!(items
                    .iter()
                    .all(|i| i.as_ref().unwrap_err().error.code == -32600));
            }
            Incoming::Single(_) => panic!(),
        }
        assert_eq!(
            parse(br#"[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"},{"jsonrpc":"2.0","method""#)
                .unwrap_err()
                .code,
            -32700
        );
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            Response {
                id: Id::Number(1),
                result: Ok(json!({"a": 1})),
            },
            Response {
                id: Id::String("x".into()),
                result: Err(ErrorObject::method_not_found("nope")),
            },
        ] {
            let bytes = serde_json::to_vec(&r).unwrap();
            assert_eq!(
                single(std::str::from_utf8(&bytes).unwrap()).unwrap(),
                Message::Response(r)
            );
        }
        let e = single(r#"{"jsonrpc":"2.0","result":1,"error":{"code":1,"message":"m"},"id":1}"#)
            .unwrap_err();
        assert_eq!(e.error.code, -32600);
    }

    #[test]
    fn parse_reads_as_classify_judges_the_value_tree() {
        for frame in [
            r#"{"jsonrpc":"2.0","method":"m","params":{"a":[1,{"b":null}]},"id":"x"}"#,
            r#"{"id":1,"jsonrpc":"2.0","method":"m","id":2}"#,
            r#"{"jsonrpc":"2.0","met\u0068od":"m","extra":{"id":9},"id":null}"#,
            r#"{"jsonrpc":"2.0","result":[1],"id":1.5}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-1,"message":"m","data":[]},"id":7}"#,
            r#"{"jsonrpc":"2.0","error":{"code":"x"},"id":7}"#,
            r#"{"jsonrpc":2,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","method":"m","params":null}"#,
            r#"{"jsonrpc":"2.0","result":null,"error":null,"id":1}"#,
            r#"{}"#,
            r#"[{"jsonrpc":"2.0","method":"m"},[1,[2]],"s",3,-4,5.5,true,null,{}]"#,
            r#""text""#,
            r#"-12"#,
            r#"[]"#,
        ] {
            let reference = match serde_json::from_str::<Value>(frame).unwrap() {
                Value::Array(items) if items.is_empty() => None,
                Value::Array(items) => {
                    Some(Incoming::Batch(items.into_iter().map(classify).collect()))
                }
                other => Some(Incoming::Single(classify(other))),
            };
            assert_eq!(parse(frame.as_bytes()).ok(), reference, "{frame}");
        }
    }

    #[test]
    fn to_params_wraps_scalars() {
        assert_eq!(to_params(json!(null)), None);
        assert_eq!(to_params(json!(5)), Some(json!([5])));
        assert_eq!(to_params(json!({"a":1})), Some(json!({"a":1})));
    }
}
