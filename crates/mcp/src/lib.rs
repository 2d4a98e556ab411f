//! The MCP wire: JSON-RPC 2.0 messages that keep unknown fields, request ids, error codes,
//! protocol versions, strict parsing (size, depth, UTF-8, duplicate keys, the `jsonrpc`
//! version), stdio line framing and streams, Server-Sent-Events framing, and the escaping of
//! client-chosen text shown to humans (`display`). No policy lives here: the mock server and the
//! gateway both build on it.

pub mod display;
pub mod http;
pub mod jsonrpc;
pub mod protocol;
pub mod recent;
pub mod sse;
pub mod stdio;
pub mod strict;
pub mod tls;

pub use jsonrpc::{
    ErrorCode, Incoming, Message, MethodKind, error_response, method_kind, result_response,
};
pub use protocol::ProtocolVersion;
pub use recent::Recent;
pub use strict::{
    CheckedCalls, Limits, RecentCalls, TextBounds, WireError, call_reparses_identically, incoming,
    parse_incoming, reparses_identically, text_bound, text_bounds,
};
