//! MCP protocol versions and the stateless 2026-07-28 `_meta` envelope.

use std::fmt;

use serde_json::Value;

/// The protocol versions Tollgate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// Session-ful, with JSON-RPC batches.
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    /// Stateless: no `initialize`; `server/discover`; every request carries `_meta` with the
    /// protocol version, client info and capabilities.
    V2026_07_28,
}

/// `_meta` keys of the stateless protocol.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// The header carrying the negotiated version over Streamable HTTP.
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// The header carrying the session id over Streamable HTTP.
pub const HEADER_SESSION_ID: &str = "mcp-session-id";

impl ProtocolVersion {
    pub const ALL: [ProtocolVersion; 4] = [
        ProtocolVersion::V2025_03_26,
        ProtocolVersion::V2025_06_18,
        ProtocolVersion::V2025_11_25,
        ProtocolVersion::V2026_07_28,
    ];

    /// The newest session-ful version: what `initialize` answers with when the client asks
    /// for a version this server does not know.
    pub const LATEST_SESSIONFUL: ProtocolVersion = ProtocolVersion::V2025_11_25;

    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V2025_03_26 => "2025-03-26",
            ProtocolVersion::V2025_06_18 => "2025-06-18",
            ProtocolVersion::V2025_11_25 => "2025-11-25",
            ProtocolVersion::V2026_07_28 => "2026-07-28",
        }
    }

    pub fn parse(text: &str) -> Option<ProtocolVersion> {
        ProtocolVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == text)
    }

    /// Whether the version is the stateless one (no sessions, `_meta` on every request).
    pub fn is_stateless(self) -> bool {
        self == ProtocolVersion::V2026_07_28
    }

    /// Whether JSON-RPC batches are allowed (only 2025-03-26; later versions removed them).
    pub fn allows_batches(self) -> bool {
        self == ProtocolVersion::V2025_03_26
    }

    /// The version `initialize` settles on for a requested one: the same if supported, else
    /// the latest session-ful version (the client then decides whether it can go on).
    pub fn negotiate(requested: &str) -> ProtocolVersion {
        ProtocolVersion::parse(requested)
            .filter(|v| !v.is_stateless())
            .unwrap_or(ProtocolVersion::LATEST_SESSIONFUL)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol version a request's `_meta` envelope names, if any (stateless protocol).
pub fn meta_version(params: Option<&Value>) -> Option<&str> {
    params?.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_keeps_known_session_versions() {
        assert_eq!(
            ProtocolVersion::negotiate("2025-03-26"),
            ProtocolVersion::V2025_03_26
        );
        assert_eq!(
            ProtocolVersion::negotiate("2024-11-05"),
            ProtocolVersion::V2025_11_25
        );
        assert_eq!(
            ProtocolVersion::negotiate("2026-07-28"),
            ProtocolVersion::V2025_11_25
        );
        let params = serde_json::json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}});
        assert_eq!(meta_version(Some(&params)), Some("2026-07-28"));
    }
}
