//! JSON-RPC parsing and batch handling over arbitrary bytes: never panics;
//! a frame that is not JSON is a parse error and an empty batch an invalid
//! request; every message parsed serialises and parses back to itself; every
//! invalid entry becomes a reply that parses back with its id; the replies to
//! a batch (one per request or invalid entry, none for notifications) form a
//! batch of responses with the same ids in the same order.
#![no_main]

use ipc_core::jsonrpc::{parse, ErrorObject, Id, Incoming, Invalid, Message, Response};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Serialises `msg` and parses it back: it must come back unchanged.
fn round_trip(msg: &Message) {
    let bytes = serde_json::to_vec(msg).expect("a parsed message serialises");
    match parse(&bytes) {
        Ok(Incoming::Single(Ok(again))) => {
            assert_eq!(&again, msg, "round trip changed the message")
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

fuzz_target!(|data: &[u8]| {
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
});
