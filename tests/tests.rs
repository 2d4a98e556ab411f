//! The one integration-test binary (as ripgrep does): each module drives the built `tollgate`
//! binary or the library crates end to end.

// Shared helpers: locating the binary, temp dirs, running commands with a timeout.
mod util;

// `tollgate check` and `tollgate explain`: diagnostics corpus and summaries.
mod check;
// `tollgate catalog` and the catalogue's invariants.
mod catalog;
// The mock EKS server over stdio and HTTP, with real clients (Python SDK, conformance).
mod mock_eks;
// The audit log: hash chain, `tollgate audit verify|tail|query`.
mod audit;
