//! The Tollgate policy engine: the policy model, loading and validation with diagnostics,
//! `decide(call, now)` and the strict sliding-window limiter. No IO, no clock, no tokio:
//! time is always passed in.
pub mod limiter;
pub mod model;
