//! Helpers both Streamable HTTP servers (the mock and the gateway's front) need, transport
//! details that carry no policy.

use serde_json::Value;

use crate::protocol::{META_PROTOCOL_VERSION, ProtocolVersion};

/// Whether an `Origin` header (if any) names this machine. A local server must refuse pages of
/// other sites (DNS rebinding); requests without `Origin` (not from a browser) are allowed.
pub fn origin_is_local(origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let host = origin.split("://").nth(1).unwrap_or(origin);
    let host = host.split(['/', ':']).next().unwrap_or(host);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// What a POST body is, as far as sessions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyKind {
    /// It contains an `initialize`: it opens a session.
    pub opens_session: bool,
    /// Every message carries the stateless protocol's `_meta` version (2026-07-28): it needs no
    /// session.
    pub stateless: bool,
}

/// Looks at a POST body without judging it (a body that is not JSON is neither).
pub fn body_kind(body: &[u8]) -> BodyKind {
    // Most bodies are calls: neither word can be in them unless written literally or escaped,
    // so they need no parse here.
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if !body.contains(&b'\\') && !has(b"initialize") && !has(b"2026-07-28") {
        return BodyKind::default();
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return BodyKind::default();
    };
    let items: Vec<&Value> = match &value {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    let opens_session = items
        .iter()
        .any(|m| m.get("method").and_then(Value::as_str) == Some("initialize"));
    let stateless = !items.is_empty()
        && items.iter().all(|m| {
            m.get("params")
                .and_then(|p| p.get("_meta"))
                .and_then(|meta| meta.get(META_PROTOCOL_VERSION))
                .and_then(Value::as_str)
                == Some(ProtocolVersion::V2026_07_28.as_str())
        });
    BodyKind {
        opens_session,
        stateless,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_bodies() {
        assert!(origin_is_local(None));
        assert!(origin_is_local(Some("http://localhost:3000")));
        assert!(origin_is_local(Some("http://127.0.0.1")));
        assert!(!origin_is_local(Some("https://evil.example")));
        assert!(!origin_is_local(Some("http://localhost.evil.example")));
        let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        assert_eq!(
            body_kind(init),
            BodyKind {
                opens_session: true,
                stateless: false
            }
        );
        let stateless = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        assert_eq!(
            body_kind(stateless),
            BodyKind {
                opens_session: false,
                stateless: true
            }
        );
        // The byte check before the parse must not miss an escaped `initialize`.
        let escaped = br#"{"jsonrpc":"2.0","id":1,"method":"\u0069nitialize","params":{}}"#;
        assert!(body_kind(escaped).opens_session);
        let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#;
        assert_eq!(body_kind(call), BodyKind::default());
        assert_eq!(body_kind(b"[]"), BodyKind::default());
        assert_eq!(body_kind(b"nope"), BodyKind::default());
    }
}
