//! The enforcing gateway: a transparent MCP proxy that decides every tool call with the policy
//! engine before forwarding it, audits every decision in a hash-chained log, and answers
//! refusals as tool errors an agent can act on.
//!
//! - [`admin`]: the admin HTTP API (approvals) and the console at `/ui`;
//! - [`approvals`]: the calls held for a human's approval, shared by all sessions;
//! - [`audit`]: the hash-chained audit log and its verifier;
//! - [`classify`]: where a tool's risk class comes from (the catalogue, then its annotations);
//! - [`clock`]: the real (optionally scaled) clock the transports read;
//! - [`config`]: the config file (`--config tollgate.toml`);
//! - [`coerce`]: a call's arguments brought to the values the tool reads, by its input schema;
//! - [`tokens`]: bearer tokens mapped to grants;
//! - [`oauth`]: the OAuth 2.1 resource server (JWT access tokens, JWKS, protected-resource
//!   metadata);
//! - [`core`]: one session's enforcement, in process, with time passed in;
//! - [`pin`]: pinned tool definitions: the lock file, drift, the gateway's `--lock` check;
//! - [`multi`]: several upstreams behind one session (names, routing, restarts);
//! - [`refusal`]: what a refused call looks like to the agent;
//! - [`telemetry`]: OpenTelemetry traces, a span per MCP request, exported over OTLP/HTTP.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod classify;
pub mod clock;
pub mod coerce;
pub mod config;
pub mod core;
pub mod metrics;
pub mod multi;
pub mod oauth;
pub mod pin;
pub mod refusal;
pub mod telemetry;
pub mod tokens;
pub mod transport;
pub mod upstream;
