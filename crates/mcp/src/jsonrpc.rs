//! JSON-RPC 2.0 messages as MCP uses them. A message is kept as the `serde_json::Value` it
//! arrived as, so unknown fields pass through untouched; [`Message::classify`] tells what it
//! is and checks the envelope (`jsonrpc: "2.0"`, the id's type, the method's type).

use serde_json::{Map, Value};

use crate::strict::{WireError, kind};

/// One wire message: a single JSON-RPC message or a batch (protocol 2025-03-26 only).
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Single(Value),
    Batch(Vec<Value>),
}

/// The standard JSON-RPC error codes, plus the one MCP adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    InternalError,
    /// MCP: a requested resource does not exist.
    ResourceNotFound,
}

impl ErrorCode {
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::InternalError => -32603,
            ErrorCode::ResourceNotFound => -32002,
        }
    }
}

/// What a message is, borrowed from its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'a> {
    Request {
        id: &'a Value,
        method: &'a str,
        params: Option<&'a Value>,
    },
    Notification {
        method: &'a str,
        params: Option<&'a Value>,
    },
    Response {
        id: &'a Value,
        result: &'a Value,
    },
    Error {
        id: &'a Value,
        error: &'a Value,
    },
}

impl<'a> Message<'a> {
    /// Checks the envelope and tells the kind of message.
    pub fn classify(value: &'a Value) -> Result<Message<'a>, WireError> {
        let Some(obj) = value.as_object() else {
            return Err(WireError::InvalidRequest(format!(
                "a JSON-RPC message is an object, not {}",
                kind(value)
            )));
        };
        match obj.get("jsonrpc") {
            Some(Value::String(v)) if v == "2.0" => {}
            Some(other) => {
                return Err(WireError::InvalidRequest(format!(
                    "`jsonrpc` must be \"2.0\", not {other}"
                )));
            }
            None => {
                return Err(WireError::InvalidRequest(
                    "`jsonrpc: \"2.0\"` is missing".into(),
                ));
            }
        }
        let id = obj.get("id");
        if let Some(id) = id
            && !(id.is_string() || id.is_i64() || id.is_u64())
        {
            return Err(WireError::InvalidRequest(format!(
                "`id` must be a string or an integer, not {}",
                kind(id)
            )));
        }
        let params = obj.get("params");
        if let Some(p) = params
            && !(p.is_object() || p.is_array())
        {
            return Err(WireError::InvalidRequest(format!(
                "`params` must be an object, not {}",
                kind(p)
            )));
        }
        match (obj.get("method"), id) {
            (Some(Value::String(method)), Some(id)) => Ok(Message::Request { id, method, params }),
            (Some(Value::String(method)), None) => Ok(Message::Notification { method, params }),
            (Some(other), _) => Err(WireError::InvalidRequest(format!(
                "`method` must be a string, not {}",
                kind(other)
            ))),
            (None, Some(id)) => match (obj.get("result"), obj.get("error")) {
                (Some(result), None) => Ok(Message::Response { id, result }),
                (None, Some(error)) => Ok(Message::Error { id, error }),
                _ => Err(WireError::InvalidRequest(
                    "a response has exactly one of `result` and `error`".into(),
                )),
            },
            (None, None) => Err(WireError::InvalidRequest(
                "a message needs a `method` (request or notification) or an `id` (response)".into(),
            )),
        }
    }
}

/// How a method name stands with respect to `tools/call`, the one method that runs a tool.
///
/// The gateway decides every `tools/call` request; an upstream that compares method names
/// loosely (case, whitespace, separators) could run a message whose name only resembles it, so
/// such names are refused rather than forwarded (docs/security.md, "Message kinds").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// Exactly `tools/call`.
    ToolsCall,
    /// Not `tools/call`, but a loose reader could take it for it: its ASCII letters and digits,
    /// lowercased, contain `toolscall` (`Tools/Call`, `tools/call `, `TOOLS.CALL`,
    /// `tools/call/v2`).
    LookAlike,
    /// Not a method name MCP could define: empty, or holding a character that is not printable
    /// ASCII (spaces, control characters, any non-ASCII letter such as a Cyrillic `о`).
    Malformed,
    /// Any other name (every other MCP method, and unknown ones): passes through.
    Other,
}

/// Classifies a method name (see [`MethodKind`]).
pub fn method_kind(method: &str) -> MethodKind {
    if method == "tools/call" {
        return MethodKind::ToolsCall;
    }
    let folded: String = method
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if folded.contains("toolscall") {
        return MethodKind::LookAlike;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_graphic()) {
        return MethodKind::Malformed;
    }
    MethodKind::Other
}

/// A JSON-RPC error response. `id` is `null` when the request's id could not be read.
pub fn error_response(
    id: Option<&Value>,
    code: ErrorCode,
    message: &str,
    data: Option<Value>,
) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), code.code().into());
    error.insert("message".into(), message.into());
    if let Some(data) = data {
        error.insert("data".into(), data);
    }
    envelope(
        id.cloned().unwrap_or(Value::Null),
        "error",
        Value::Object(error),
    )
}

/// A JSON-RPC result response.
pub fn result_response(id: &Value, result: Value) -> Value {
    envelope(id.clone(), "result", result)
}

/// `{"jsonrpc": "2.0", "id": id, key: body}`, moving `body` in (`json!` would copy it through
/// a serializer).
fn envelope(id: Value, key: &str, body: Value) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), "2.0".into());
    m.insert("id".into(), id);
    m.insert(key.into(), body);
    Value::Object(m)
}

/// The id of a message that failed classification, when it has a readable one (so the error
/// answer can still be matched to its request).
pub fn salvage_id(value: &Value) -> Option<&Value> {
    value
        .get("id")
        .filter(|id| id.is_string() || id.is_i64() || id.is_u64())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_are_checked() {
        let ok = json!({"jsonrpc": "2.0", "id": "a-1", "method": "tools/list"});
        assert!(matches!(
            Message::classify(&ok).unwrap(),
            Message::Request {
                method: "tools/list",
                ..
            }
        ));
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(matches!(
            Message::classify(&note).unwrap(),
            Message::Notification { .. }
        ));
        for bad in [
            json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": 7}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": 3}),
            json!({"jsonrpc": "2.0"}),
        ] {
            assert!(Message::classify(&bad).is_err(), "{bad}");
        }
    }

    /// Every spelling a loose reader could take for `tools/call` is told apart from it, and
    /// every other MCP method passes as `Other`.
    #[test]
    fn look_alikes_of_tools_call_are_caught() {
        assert_eq!(method_kind("tools/call"), MethodKind::ToolsCall);
        for m in [
            "Tools/Call",
            "TOOLS/CALL",
            "tools/call ",
            " tools/call",
            "tools/call\n",
            "tools.call",
            "tools_call",
            "toolscall",
            "tools//call",
            "tools/call/v2",
            "x/tools/call",
            "tools/\u{200b}call",
        ] {
            assert_eq!(method_kind(m), MethodKind::LookAlike, "{m:?}");
        }
        for m in ["", "tоols/call", "ping\u{0}", "tools/list ", "résumé"] {
            assert_eq!(method_kind(m), MethodKind::Malformed, "{m:?}");
        }
        for m in [
            "initialize",
            "tools/list",
            "notifications/cancelled",
            "resources/read",
            "server/discover",
            "x-vendor/op",
        ] {
            assert_eq!(method_kind(m), MethodKind::Other, "{m:?}");
        }
    }

    #[test]
    fn ids_are_kept_exactly() {
        let big = json!({"jsonrpc": "2.0", "id": 18446744073709551615u64, "method": "ping"});
        let Message::Request { id, .. } = Message::classify(&big).unwrap() else {
            panic!()
        };
        assert_eq!(
            result_response(id, json!({}))["id"],
            json!(18446744073709551615u64)
        );
        assert_eq!(
            error_response(None, ErrorCode::ParseError, "x", None),
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "x"}})
        );
    }
}
