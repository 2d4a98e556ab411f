//! Limits that count upstream errors (`"counts": "errors"`, docs/limits.md): an admitted
//! call's answer that is an upstream error is charged to the errors limits of the decision
//! that admitted it, at the instant the answer arrives, and the outcome's audit record says
//! what was counted.
//!
//! An upstream error is: a JSON-RPC error answer; a tool result with `isError: true`; no
//! answer within the call's timeout; the upstream gone while the call was in flight. The
//! gateway's own refusals are never forwarded, so they are never counted.

use super::*;

/// What charging one answer did, for its outcome record.
#[derive(Debug)]
pub(super) enum Charged {
    /// Nothing to charge: not an error, or the deciding rule counts no errors.
    Nothing,
    /// The counters after counting the error.
    Counted(Vec<CounterState>),
    /// The counter store could not record it (the error is not counted).
    Failed(StoreFailure),
}

impl Charged {
    /// Adds what was charged to an outcome record: `errors_counted` (the counters after
    /// counting) or `errors_store_unavailable` (the store, why; the error went uncounted).
    pub(super) fn annotate(self, record: &mut Value) {
        match self {
            Charged::Nothing => {}
            Charged::Counted(states) => record["errors_counted"] = json!(states),
            Charged::Failed(f) => record["errors_store_unavailable"] = json!(f),
        }
    }
}

impl SessionCore {
    /// The answer to pending call `p` arrived at `now` and was an upstream error (`error`):
    /// counts it on the errors limits of the decision that admitted the call (as they were
    /// then: a reload in between does not change which counters it is charged to).
    pub(super) fn charge_error(&self, p: &Pending, error: bool, now: Duration) -> Charged {
        if !error || p.on_error.is_empty() {
            return Charged::Nothing;
        }
        match self.gateway.engine().record_error(&p.on_error, now) {
            Ok(states) => Charged::Counted(states),
            Err(f) => Charged::Failed(f),
        }
    }
}
