//! Strict parsing of what arrives on the wire. Every way a message can be malformed is a typed
//! [`WireError`], and [`WireError::code`] maps each to its JSON-RPC error in one place:
//!
//! | error | JSON-RPC code |
//! |---|---|
//! | too large, not UTF-8, not JSON, nested too deeply, duplicate key | -32700 parse error |
//! | not an object, wrong or missing `jsonrpc`, bad `id`, bad `method`, empty batch | -32600 invalid request |
//!
//! Duplicate keys are refused anywhere in a message: two parsers that keep different copies of
//! a duplicated key (first or last) would see different arguments, and a gateway that checks one
//! copy while the server acts on the other can be bypassed.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::jsonrpc::{ErrorCode, Incoming};

/// Bounds on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest message in bytes (default 4 MiB).
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("message is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("message nests too deeply (over 128 levels)")]
    TooDeep,
    #[error("duplicate key `{key}` in one object")]
    DuplicateKey { key: String },
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl WireError {
    /// The JSON-RPC error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            _ => ErrorCode::ParseError,
        }
    }
}

/// Parses one wire message (a single JSON-RPC message or a batch) strictly.
pub fn parse_incoming(bytes: &[u8], limits: Limits) -> Result<Incoming, WireError> {
    if bytes.len() > limits.max_bytes {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| WireError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    incoming(parse_strict(text)?)
}

/// A parsed message as [`parse_incoming`] classifies it: an object, or a non-empty batch.
pub fn incoming(value: Value) -> Result<Incoming, WireError> {
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(WireError::InvalidRequest("empty batch".into()));
            }
            Ok(Incoming::Batch(items))
        }
        Value::Object(_) => Ok(Incoming::Single(value)),
        other => Err(WireError::InvalidRequest(format!(
            "a message is a JSON object (or a batch array), not {}",
            kind(&other)
        ))),
    }
}

/// Whether `parse_incoming(value.to_string())` would give back `value` itself, so an
/// in-process caller may hand over the value and skip the text: it has no floating-point number
/// (a float's shortest text can parse back one unit in the last place off), it nests well under
/// the parser's depth limit, and an upper bound of its text's length is under `limits` (a
/// value cannot hold a duplicate key or invalid UTF-8). When this says no, callers take the
/// text path, so the answer is the same either way; it only decides which path is taken.
pub fn reparses_identically(value: &Value, limits: Limits) -> bool {
    text_bound(value, 0).is_some_and(|bound| bound <= limits.max_bytes)
}

/// [`reparses_identically`] for the `tools/call` of `tool` with `arguments` (an id, no
/// `_meta`), without building the message: what an in-process caller that holds a call's parts
/// checks before it skips the message.
pub fn call_reparses_identically(tool: &str, arguments: &Value, limits: Limits) -> bool {
    // The message's text beyond the arguments' is at most the envelope's and the name's.
    let envelope = 256 + tool.len() * 6;
    text_bound(arguments, 2).is_some_and(|b| b.saturating_add(envelope) <= limits.max_bytes)
}

/// The last few calls an in-process caller made with shared arguments, by tool name and
/// arguments: a caller that replays a step shares its arguments (one `Arc`, which nothing can
/// change) between the step's repetitions, so what was found of a call's arguments holds for
/// the next call that brings the same allocation.
#[derive(Debug, Default)]
pub struct RecentCalls(crate::Recent<(Box<str>, std::sync::Arc<Value>)>);

impl RecentCalls {
    /// Whether the call of `tool` with these very arguments is remembered.
    pub fn contains(&self, tool: &str, arguments: &std::sync::Arc<Value>) -> bool {
        self.0
            .find(|(t, a)| std::sync::Arc::ptr_eq(a, arguments) && **t == *tool)
            .is_some()
    }

    /// Remembers the call, forgetting the oldest beyond [`crate::Recent::KEPT`].
    pub fn insert(&mut self, tool: &str, arguments: &std::sync::Arc<Value>) {
        self.0
            .keep((Box::from(tool), std::sync::Arc::clone(arguments)));
    }
}

/// [`call_reparses_identically`] under fixed limits, remembering the [`RecentCalls`] found to
/// pass: their arguments are not walked again.
#[derive(Debug)]
pub struct CheckedCalls {
    limits: Limits,
    passed: RecentCalls,
}

impl CheckedCalls {
    pub fn new(limits: Limits) -> CheckedCalls {
        CheckedCalls {
            limits,
            passed: RecentCalls::default(),
        }
    }

    /// [`call_reparses_identically`] of the call under these limits.
    pub fn check(&mut self, tool: &str, arguments: &std::sync::Arc<Value>) -> bool {
        if self.passed.contains(tool, arguments) {
            return true;
        }
        let passes = call_reparses_identically(tool, arguments, self.limits);
        if passes {
            self.passed.insert(tool, arguments);
        }
        passes
    }
}

/// An upper bound of the length of `value`'s JSON text, when it parses back to the same value
/// (see [`reparses_identically`]) as a part nested `depth` levels deep in a message: `None`
/// when it holds a floating-point number or nests too deep.
pub fn text_bound(value: &Value, depth: usize) -> Option<usize> {
    text_bounds(value, depth).map(|b| b.compact)
}

/// Upper bounds of the length of a value's JSON text (see [`text_bounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextBounds {
    /// Written compactly, as serde_json writes it ([`text_bound`]).
    pub compact: usize,
    /// Written with a space after every `,` and `:`, as Python's `json.dumps` writes it
    /// (characters beyond ASCII as `\uXXXX`, at most six bytes per byte of the UTF-8 too).
    pub spaced: usize,
}

/// [`text_bound`], together with the bound of the same value written with spaced separators:
/// one walk for both. `None` in the same cases.
pub fn text_bounds(value: &Value, depth: usize) -> Option<TextBounds> {
    // The compact bound, and how many `,` and `:` that text can hold (each gets a space when
    // spaced). Sixty-four levels: far under serde_json's 128, whatever it counts as one level.
    fn walk(v: &Value, depth: usize) -> Option<(usize, usize)> {
        // Each node's text is at most its content plus punctuation; a string's at most six
        // bytes per byte (`\u00XX`) plus its quotes.
        match v {
            Value::Null | Value::Bool(_) => Some((5, 0)),
            Value::Number(n) if n.is_f64() => None,
            Value::Number(_) => Some((21, 0)),
            Value::String(s) => Some((s.len() * 6 + 3, 0)),
            Value::Array(items) => {
                if depth >= 64 {
                    return None;
                }
                let (mut total, mut separators) = (items.len() + 2, items.len());
                for i in items {
                    let (t, s) = walk(i, depth + 1)?;
                    total = total.saturating_add(t);
                    separators = separators.saturating_add(s);
                }
                Some((total, separators))
            }
            Value::Object(map) => {
                if depth >= 64 {
                    return None;
                }
                let (mut total, mut separators) = (2usize, map.len() * 2);
                for (k, i) in map {
                    let (t, s) = walk(i, depth + 1)?;
                    total = total.saturating_add(k.len() * 6 + 4 + t);
                    separators = separators.saturating_add(s);
                }
                Some((total, separators))
            }
        }
    }
    walk(value, depth).map(|(compact, separators)| TextBounds {
        compact,
        spaced: compact.saturating_add(separators),
    })
}

/// Parses JSON text, refusing duplicate keys and nesting deeper than serde_json's limit.
pub fn parse_strict(text: &str) -> Result<Value, WireError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = <StrictValue as serde::Deserialize>::deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value.0)
}

fn classify(e: serde_json::Error) -> WireError {
    let text = e.to_string();
    if let Some(key) = text
        .strip_prefix("duplicate key `")
        .and_then(|rest| rest.split('`').next())
    {
        return WireError::DuplicateKey {
            key: key.to_owned(),
        };
    }
    if text.contains("recursion limit exceeded") {
        return WireError::TooDeep;
    }
    WireError::NotJson(text)
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A `serde_json::Value` whose objects refuse duplicate keys.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Result<Incoming, WireError> {
        parse_incoming(text, Limits::default())
    }

    /// `CheckedCalls` answers as `call_reparses_identically` does, and remembers only the very
    /// arguments (the same `Arc`) of the last few calls that passed, each with its tool.
    #[test]
    fn checked_calls_answer_as_the_check_and_remember_only_the_same_arguments() {
        use std::sync::Arc;
        let limits = Limits { max_bytes: 400 };
        let mut checked = CheckedCalls::new(limits);
        let float = Arc::new(serde_json::json!({"x": 1.5}));
        assert!(!checked.check("t", &float));
        assert!(!checked.passed.contains("t", &float));
        let big = Arc::new(serde_json::json!({"x": "a".repeat(100)}));
        assert!(!checked.check("t", &big), "over the limit");
        let plain = Arc::new(serde_json::json!({"x": 1}));
        assert!(checked.check("t", &plain));
        assert!(checked.passed.contains("t", &plain));
        assert!(!checked.passed.contains("u", &plain), "another tool");
        let alike = Arc::new(serde_json::json!({"x": 1}));
        assert!(
            !checked.passed.contains("t", &alike),
            "equal arguments, another allocation"
        );
        // Eight more calls push the first out.
        let others: Vec<_> = (0..8)
            .map(|i| Arc::new(serde_json::json!({"i": i})))
            .collect();
        for a in &others {
            assert!(checked.check("t", a));
        }
        assert!(!checked.passed.contains("t", &plain));
        assert!(others.iter().all(|a| checked.passed.contains("t", a)));
    }

    #[test]
    fn each_malformation_is_its_own_error() {
        assert!(
            matches!(parse(b"{\"a\":1,\"a\":2}"), Err(WireError::DuplicateKey { key }) if key == "a")
        );
        assert!(matches!(
            parse(br#"{"params":{"arguments":{"x":1,"x":2}}}"#),
            Err(WireError::DuplicateKey { .. })
        ));
        assert!(matches!(
            parse(b"{\"a\":\"\xff\"}"),
            Err(WireError::NotUtf8 { offset: 6 })
        ));
        assert!(matches!(
            parse(&b"[".repeat(10_000)),
            Err(WireError::TooDeep)
        ));
        assert!(matches!(parse(b"{"), Err(WireError::NotJson(_))));
        assert!(matches!(parse(b"[]"), Err(WireError::InvalidRequest(_))));
        assert!(matches!(parse(b"42"), Err(WireError::InvalidRequest(_))));
        let big = vec![b' '; 5 * 1024 * 1024];
        assert!(matches!(parse(&big), Err(WireError::TooLarge { .. })));
        assert_eq!(WireError::TooDeep.code(), ErrorCode::ParseError);
        assert_eq!(
            WireError::InvalidRequest("x".into()).code(),
            ErrorCode::InvalidRequest
        );
    }

    /// The value path's guard: it says yes only when the text path would give back the same
    /// value, and no for floats, deep nesting and texts that could be over the size limit.
    #[test]
    fn reparses_identically_only_when_the_text_round_trip_is_exact() {
        let small = Limits { max_bytes: 200 };
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "GetAHOBatch", "arguments": {"batchId": "rb-0001", "n": -3, "ok": true, "x": null, "l": ["é\n\u{1}"]}}});
        assert!(reparses_identically(&call, Limits::default()));
        let Incoming::Single(back) = parse(call.to_string().as_bytes()).unwrap() else {
            panic!("a single message")
        };
        assert_eq!(back, call);
        assert!(!reparses_identically(
            &serde_json::json!({"a": 0.1}),
            Limits::default()
        ));
        let mut deep = serde_json::json!(1);
        for _ in 0..70 {
            deep = serde_json::json!([deep]);
        }
        assert!(!reparses_identically(&deep, Limits::default()));
        assert!(!reparses_identically(
            &serde_json::json!({"a": "x".repeat(100)}),
            small
        ));
        assert!(reparses_identically(
            &serde_json::json!({"a": "x".repeat(10)}),
            small
        ));
    }

    #[test]
    fn batches_and_singles_are_told_apart() {
        assert!(
            matches!(parse(b"[{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":1}]").unwrap(), Incoming::Batch(v) if v.len() == 1)
        );
        assert!(matches!(
            parse(b"{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":1}").unwrap(),
            Incoming::Single(_)
        ));
    }
}
