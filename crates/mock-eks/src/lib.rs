//! The mock Amazon EKS MCP server: a deterministic simulated world, the real tool set plus the
//! extended catalogue, a journal of every request and injectable faults.
//!
//! - [`world`]: the simulated world and every tool's behaviour;
//! - [`server`]: the protocol, in process and in virtual time ([`MockEks::handle`]);
//! - [`faults`]: fault rules;
//! - [`transport`]: stdio and Streamable HTTP servers around the in-process handle.

pub mod faults;
pub mod server;
pub mod transport;
pub mod world;

pub use server::{DirectHandled, Handled, JournalEntry, MockConfig, MockEks};
