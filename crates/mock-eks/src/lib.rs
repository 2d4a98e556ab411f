//! The mock Amazon EKS MCP server: a deterministic simulated world, the real tool set plus the
//! extended catalogue, a journal of every request and injectable faults.

pub mod world;
