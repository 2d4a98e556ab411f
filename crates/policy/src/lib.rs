//! The Tollgate policy engine: the policy model, loading and validation with diagnostics,
//! `decide(call, now)` and the strict sliding-window limiter. No IO but reading a policy file
//! on request, no clock, no tokio: time is always passed in.
pub mod coverage;
pub mod diag;
pub mod diff;
pub mod engine;
pub mod lax;
pub mod limiter;
pub mod lint;
pub mod model;
pub mod policy;
pub mod selector;
pub mod source;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use engine::{
    Call, Decision, DecisionKind, Engine, Explanation, RuleRef, StoreFailure, TypeMismatch,
    Violation,
};
pub use limiter::{Acquire, CounterState, CounterStore, Counts, FailMode, MemoryStore, Scope};
pub use lint::KnownTool;
pub use model::{Action, ApprovalVia, PolicyDoc, TimeoutOutcome};
pub use policy::Policy;
pub use selector::{Annotation, RiskClass, ToolMeta};
