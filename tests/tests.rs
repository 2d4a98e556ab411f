#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

//! The one integration-test binary (as ripgrep does): each module drives the built `tollgate`
//! binary or the library crates end to end. Modules join this list as their issues land
//! (check, catalog, mock_eks, gateway, audit, scenarios).

// Shared helpers: locating the binary and the workspace root.
mod util;
// `tollgate check` and `tollgate explain`: the broken-policy corpus, exit codes.
mod check;
// The binary's contract with its caller: version, help and exit codes.
mod cli;
// `tollgate catalog`: filters, JSON export, bad input.
mod catalog;
// `tollgate mock-eks` over stdio and HTTP: the Python SDK, raw bad input, conformance.
mod mock_eks;
// `tollgate gateway` end to end in front of the mock.
mod gateway;
// `tollgate audit` and the log's lock: no record shown past a break, escaped tables, one writer.
mod audit;
// Human approvals: the admin API, `tollgate approvals`, the console in headless Chromium.
mod approvals;
// Limits across gateway replicas sharing one redis-server: load, restart, stall.
mod redis_store;
// Scenarios in virtual time: every transcript snapshot, `tollgate test`.
mod scenarios;
// What CI runs: docs/ci.md's workflow, `tollgate test --format json` and `--coverage`,
// `tollgate diff`, snapshots found from a scenario's project.
mod ci;
// The wire fuzzer: generated traffic through both fronts in front of a naive upstream.
mod wire_fuzz;
// Pinned tool definitions: `tollgate pin`, `--check`, the gateway's `--lock` against a rug pull.
mod pin;
// The client matrix: real MCP clients read every refusal; the gateway's own answers against the
// MCP schema of each protocol version.
mod clients;
// Several upstreams behind one gateway (`--config`): routing, journals, a killed upstream.
mod multi;
// Several replicas sharing one redis-server: approvals listed and decided from any replica, a
// stateless client alternating between them.
mod replicas;
// The audit log cannot be written (a full file system mid-run, a failed rotation): fail closed.
mod audit_full;
// The router of several upstreams against a hostile client and hostile upstreams: ids, names,
// server-to-client requests, progress and cancellation, each upstream's journal the proof.
mod multi_hostile;
// Real parts behind one gateway: two mocks (stdio, https), server-everything, the real EKS
// server; the Python and TypeScript SDKs; a killed upstream.
mod multi_real;
