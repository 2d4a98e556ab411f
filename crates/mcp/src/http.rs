//! Helpers both Streamable HTTP servers (the mock and the gateway's front) need, transport
//! details that carry no policy.

use serde_json::Value;

use crate::protocol::{META_PROTOCOL_VERSION, ProtocolVersion};

/// Whether an `Origin` header (if any) names this machine. A local server must refuse pages of
/// other sites (DNS rebinding); requests without `Origin` (not from a browser) are allowed.
///
/// The host is the origin's authority after any userinfo (`http://127.0.0.1@evil.example` is
/// `evil.example`) and without its port; an IPv6 host keeps its brackets (`http://[::1]:8080`).
/// Local: `localhost`, a loopback IPv4 address (127.0.0.0/8) and the IPv6 loopback `::1` (also
/// written as the IPv4-mapped `::ffff:127.0.0.1`). Anything that does not parse is not local.
pub fn origin_is_local(origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Userinfo ends at the last `@`: what follows is the host a browser would connect to.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return false;
        };
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok
            && inside.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            });
    }
    let host = match host_port.split_once(':') {
        Some((host, port)) if is_port(port) => host,
        Some(_) => return false,
        None => host_port,
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A port as an origin writes it: one to five digits.
fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
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

    /// Local origins are exactly this machine's loopback names and addresses, with or without
    /// a port, IPv6 included; userinfo, look-alike hosts, other schemes and junk are not.
    #[test]
    fn origins_are_local_only_for_loopback_hosts() {
        for local in [
            "http://localhost",
            "http://LOCALHOST:3000",
            "https://localhost:8443/",
            "http://127.0.0.1",
            "http://127.0.0.1:8787",
            "http://127.1.2.3:80",
            "http://[::1]",
            "http://[::1]:8787",
            "https://[0:0:0:0:0:0:0:1]:443",
            "http://[::ffff:127.0.0.1]:80",
            "http://user@localhost:3000",
        ] {
            assert!(origin_is_local(Some(local)), "{local} is local");
        }
        for foreign in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1@evil.example",
            "http://127.0.0.1:80@evil.example",
            "http://[::1]@evil.example",
            "http://localhost:3000@evil.example:80",
            "http://evil.example#@127.0.0.1",
            "http://evil.example/127.0.0.1",
            "http://[::2]:80",
            "http://[::1",
            "http://[::1]x",
            "http://[::1]:port",
            "http://127.0.0.1:99999999",
            "http://127.0.0.1.evil.example",
            "http://0.0.0.0",
            "http://10.0.0.1",
            "ftp://localhost",
            "null",
            "localhost",
            "",
        ] {
            assert!(!origin_is_local(Some(foreign)), "{foreign} is not local");
        }
    }

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
