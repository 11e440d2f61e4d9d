//! The JSON bodies of the key-value endpoints, in seed 002's shapes, as pure
//! types: parsing requests into keys and values, and building replies.
//!
//! A key or a value on the wire is a datum, `{"encoding": "string", "data":
//! "text"}` or `{"encoding": "binary", "data": "<base64>"}` (standard alphabet,
//! padded). Replies use `string` for bytes that are valid UTF-8 and `binary`
//! otherwise, so any byte string survives the round trip.
//!
//! - `PUT /set`: `[{"key": datum, "value": datum}, ...]`, answered by
//!   [`set_reply`]: `[{"keys_added": N, "keys_failed": [datum, ...]}]`.
//! - `POST /fetch`: `[datum, ...]` (keys), answered by [`fetch_reply`]:
//!   `[{"key": datum, "value": datum}, ...]` for the keys that exist.
//! - `POST /query`: as `/fetch`, answered by [`query_reply`]:
//!   `[{"key": datum, "value": true|false}, ...]`.
//!
//! A body that is not JSON, has the wrong shape, names an unknown encoding or
//! carries bad base64 is a [`BodyError`], whose [`BodyError::response`] is a
//! 400 naming the problem and the item it is in. Nothing is applied from a body
//! that fails to parse: parsing is all or nothing.

use super::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A key or value as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datum {
    /// `string` or `binary`.
    pub encoding: String,
    /// The text, or the bytes in base64.
    pub data: String,
}

impl Datum {
    /// How `bytes` are sent back: as text when they are UTF-8, else base64.
    pub fn of(bytes: &[u8]) -> Datum {
        match std::str::from_utf8(bytes) {
            Ok(s) => Datum {
                encoding: "string".into(),
                data: s.into(),
            },
            Err(_) => Datum {
                encoding: "binary".into(),
                data: STANDARD.encode(bytes),
            },
        }
    }

    /// The bytes this datum stands for; `what` names it in errors.
    fn decode(&self, what: Where) -> Result<Vec<u8>, BodyError> {
        match self.encoding.as_str() {
            "string" => Ok(self.data.as_bytes().to_vec()),
            "binary" => STANDARD
                .decode(&self.data)
                .map_err(|e| BodyError::BadBase64 {
                    at: what,
                    detail: e.to_string(),
                }),
            other => Err(BodyError::UnknownEncoding {
                at: what,
                encoding: other.to_string(),
            }),
        }
    }
}

/// A key and its value, decoded.
pub type Pair = (Vec<u8>, Vec<u8>);

/// One item of a `PUT /set` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetItem {
    key: Datum,
    value: Datum,
}

/// Where in a body a problem is: the item's index and which part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Where {
    /// Index in the body's array, from 0.
    pub item: usize,
    /// `key` or `value`.
    pub field: &'static str,
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "item {} {}", self.item, self.field)
    }
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all.
    BadJson(String),
    /// JSON, but not the shape the endpoint takes.
    WrongShape(String),
    /// An encoding other than `string` or `binary`.
    UnknownEncoding {
        /// Where.
        at: Where,
        /// What it said.
        encoding: String,
    },
    /// `binary` data that is not base64.
    BadBase64 {
        /// Where.
        at: Where,
        /// The decoder's complaint.
        detail: String,
    },
}

impl BodyError {
    /// A short machine-readable name of the kind of problem.
    pub fn kind(&self) -> &'static str {
        match self {
            BodyError::BadJson(_) => "bad_json",
            BodyError::WrongShape(_) => "wrong_shape",
            BodyError::UnknownEncoding { .. } => "unknown_encoding",
            BodyError::BadBase64 { .. } => "bad_base64",
        }
    }

    /// The 400 reply: `{"error": message, "kind": kind, "status": 400}`.
    pub fn response(&self) -> Response {
        Response::json(
            400,
            &json!({ "error": self.to_string(), "kind": self.kind(), "status": 400 }),
        )
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::BadJson(e) => write!(f, "body is not JSON: {e}"),
            BodyError::WrongShape(e) => write!(f, "body has the wrong shape: {e}"),
            BodyError::UnknownEncoding { at, encoding } => write!(
                f,
                "{at}: unknown encoding {encoding:?} (expected \"string\" or \"binary\")"
            ),
            BodyError::BadBase64 { at, detail } => write!(f, "{at}: bad base64: {detail}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Parses JSON into `T`, telling syntax errors from shape errors.
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8], shape: &str) -> Result<T, BodyError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            BodyError::WrongShape(format!("{e} (expected {shape})"))
        }
        _ => BodyError::BadJson(e.to_string()),
    })
}

/// The key-value pairs of a `PUT /set` body.
pub fn parse_set(body: &[u8]) -> Result<Vec<Pair>, BodyError> {
    let items: Vec<SetItem> = from_json(
        body,
        "an array of {\"key\": {\"encoding\", \"data\"}, \"value\": {...}}",
    )?;
    (items.iter().enumerate())
        .map(|(item, it)| {
            let key = it.key.decode(Where { item, field: "key" })?;
            let value = it.value.decode(Where {
                item,
                field: "value",
            })?;
            Ok((key, value))
        })
        .collect()
}

/// The keys of a `POST /fetch` or `POST /query` body.
pub fn parse_keys(body: &[u8]) -> Result<Vec<Vec<u8>>, BodyError> {
    let items: Vec<Datum> = from_json(body, "an array of {\"encoding\", \"data\"}")?;
    (items.iter().enumerate())
        .map(|(item, d)| d.decode(Where { item, field: "key" }))
        .collect()
}

/// One item of `PUT /set`'s reply.
#[derive(Serialize)]
struct SetResult {
    keys_added: u64,
    keys_failed: Vec<Datum>,
}

/// One item of `POST /fetch`'s reply.
#[derive(Serialize)]
struct Found {
    key: Datum,
    value: Datum,
}

/// One item of `POST /query`'s reply.
#[derive(Serialize)]
struct Exists {
    key: Datum,
    value: bool,
}

/// Serializes a reply (fields in their declared order).
fn to_text<T: Serialize>(reply: &T) -> String {
    // Plain structs of strings, numbers and booleans always serialize.
    serde_json::to_string(reply).unwrap_or_default()
}

/// `PUT /set`'s reply: how many keys were written and which were not.
pub fn set_reply<'a>(added: u64, failed: impl IntoIterator<Item = &'a [u8]>) -> String {
    let keys_failed = failed.into_iter().map(Datum::of).collect();
    to_text(&[SetResult {
        keys_added: added,
        keys_failed,
    }])
}

/// `POST /fetch`'s reply: the pairs found.
pub fn fetch_reply<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> String {
    let items: Vec<Found> = (pairs.into_iter())
        .map(|(k, v)| Found {
            key: Datum::of(k),
            value: Datum::of(v),
        })
        .collect();
    to_text(&items)
}

/// `POST /query`'s reply: whether each key exists.
pub fn query_reply<'a>(keys: impl IntoIterator<Item = (&'a [u8], bool)>) -> String {
    let items: Vec<Exists> = (keys.into_iter())
        .map(|(k, found)| Exists {
            key: Datum::of(k),
            value: found,
        })
        .collect();
    to_text(&items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    #[test]
    fn a_set_body_with_both_encodings() {
        let body = br#"[{"key": {"encoding": "string", "data": "k1"},
                         "value": {"encoding": "binary", "data": "AP8="}},
                        {"key": {"encoding": "binary", "data": "aGk="},
                         "value": {"encoding": "string", "data": "v"}}]"#;
        let pairs = parse_set(body).unwrap();
        assert_eq!(
            pairs,
            vec![
                (b"k1".to_vec(), vec![0x00, 0xff]),
                (b"hi".to_vec(), b"v".to_vec())
            ]
        );
        assert_eq!(parse_set(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn keys_bodies() {
        let keys =
            parse_keys(br#"[{"encoding":"string","data":"a"},{"encoding":"binary","data":""}]"#);
        assert_eq!(keys.unwrap(), vec![b"a".to_vec(), vec![]]);
    }

    #[test]
    fn replies_have_seed_002s_exact_shapes() {
        let failed: Vec<&[u8]> = vec![b"x", &[0xff]];
        assert_eq!(
            set_reply(3, failed),
            r#"[{"keys_added":3,"keys_failed":[{"encoding":"string","data":"x"},{"encoding":"binary","data":"/w=="}]}]"#
        );
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"k", b"v"), (b"b", &[0xc3, 0x28])];
        assert_eq!(
            fetch_reply(pairs),
            r#"[{"key":{"encoding":"string","data":"k"},"value":{"encoding":"string","data":"v"}},{"key":{"encoding":"string","data":"b"},"value":{"encoding":"binary","data":"wyg="}}]"#
        );
        let found: Vec<(&[u8], bool)> = vec![(b"k", true), (b"z", false)];
        assert_eq!(
            query_reply(found),
            r#"[{"key":{"encoding":"string","data":"k"},"value":true},{"key":{"encoding":"string","data":"z"},"value":false}]"#
        );
    }

    #[test]
    fn each_problem_is_named() {
        let err = |b: &[u8]| parse_set(b).unwrap_err();
        assert_eq!(err(b"[{").kind(), "bad_json");
        assert_eq!(err(b"{\"key\": 1}").kind(), "wrong_shape");
        assert_eq!(
            err(br#"[{"key": {"encoding": "string", "data": "k"}}]"#).kind(),
            "wrong_shape"
        );
        assert_eq!(
            err(br#"[{"key": {"encoding":"string","data":"k"}, "value": {"encoding":"string","data":"v"}, "x": 1}]"#)
                .kind(),
            "wrong_shape"
        );
        let e = err(br#"[{"key": {"encoding":"string","data":"k"}, "value": {"encoding":"string","data":"v"}},
                        {"key": {"encoding":"hex","data":"00"}, "value": {"encoding":"string","data":"v"}}]"#);
        assert_eq!(e.kind(), "unknown_encoding");
        assert!(e.to_string().contains("item 1 key"), "{e}");
        assert!(e.to_string().contains("\"hex\""), "{e}");
        let e = err(br#"[{"key": {"encoding":"string","data":"k"}, "value": {"encoding":"binary","data":"!!"}}]"#);
        assert_eq!(e.kind(), "bad_base64");
        assert!(e.to_string().contains("item 0 value"), "{e}");
        let r = e.response();
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["kind"], "bad_base64");
        assert_eq!(parse_keys(b"[1]").unwrap_err().kind(), "wrong_shape");
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip_through_a_datum(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = Datum::of(&bytes);
            prop_assert_eq!(d.encoding == "string", std::str::from_utf8(&bytes).is_ok());
            let text = serde_json::to_vec(&vec![d]).unwrap();
            prop_assert_eq!(parse_keys(&text).unwrap(), vec![bytes]);
        }

        #[test]
        fn any_body_is_parsed_or_refused_without_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_set(&body);
            let _ = parse_keys(&body);
        }
    }
}
