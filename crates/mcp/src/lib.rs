//! The MCP wire: JSON-RPC 2.0 messages that keep unknown fields, request ids, error codes,
//! protocol versions, stdio line framing and Streamable HTTP/SSE framing. No policy lives here.
