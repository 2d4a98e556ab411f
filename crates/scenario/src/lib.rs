//! The scenario runner: replays agent sessions, written as a scenario file, through the
//! gateway's session core and the in-process mock EKS server, in virtual time (nothing sleeps:
//! a day-long scenario runs in milliseconds), checks its expectations, and writes a
//! deterministic transcript for snapshot tests.
//!
//! # Layout
//! - [`format`]: the file format (YAML), its checks and its JSON Schema;
//! - `load.rs`: loading a scenario and compiling its policies;
//! - `schedule.rs`: the steps' actions at their virtual instants;
//! - `run.rs`: the discrete-event run: calls, upstream answers (delayed by the mock's latency
//!   faults), the gateway's timeouts, reloads and fault switches, each at its virtual instant;
//! - `transcript.rs`: the transcript's lines, and how an answer is described;
//! - `wire.rs`: a scenario as messages on a wire (`--live`, the differential tests).
//!
//! # Order of events
//! Everything happens at a virtual instant. At one instant, upstream answers due then are
//! delivered first (in the order they were sent), then the gateway's timeouts fire, then the
//! scenario's steps run in their order. An upstream answer with no latency is delivered at the
//! instant of its call, before the next step: a burst at one instant is a burst of complete
//! round trips, as over a fast transport.
//!
//! # Approvals
//! A scenario with `approvers` has operators: a call that requires approval is held (its line
//! says `held`), decided by `approve` and `deny` steps through the gateway's approvals API, or
//! ended by its timeout at exactly its deadline (a session deadline like any other); its
//! outcome is printed when it comes. Without approvers nobody could approve, and such a call
//! is refused at once, as by a gateway without `--admin-tokens`.

pub mod format;
pub mod fuzz;
pub mod recording;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::core::{Direct, DirectAnswer, Gateway, GatewayOptions, Out, SessionCore};
use tollgate_gateway::refusal::DecisionTexts;
use tollgate_mcp::ProtocolVersion;
use tollgate_mcp::protocol::{META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_PROTOCOL_VERSION};
use tollgate_mock_eks::faults::FaultEffect;
use tollgate_mock_eks::world::{Flags, ToolOutput};
use tollgate_mock_eks::{DirectHandled, Handled, MockConfig, MockEks};
use tollgate_policy::{CounterStore, Decision, DecisionKind, Engine, MemoryStore, Policy};

pub use format::Scenario;
use format::{Decide, PolicySource, ReloadExpect, StepExpect, StepKind, Switch};

mod load;
mod mocks;
mod run;
mod schedule;
mod transcript;
mod wire;

pub use load::*;
pub use run::*;
pub use schedule::*;
pub use transcript::*;
pub use wire::*;

use mocks::Mocks;
use run::named_mocks;

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub transcript: String,
    /// Expectations that did not hold.
    pub failures: Vec<String>,
    pub calls: u64,
    /// Every call's decision, in the order the calls were made.
    pub decisions: Vec<CallDecision>,
}

/// What one call was decided as (what a live run must agree with).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallDecision {
    pub at_ms: u64,
    /// The request's id, if it has one: a live run's answers are matched to these calls by it
    /// (a held call's outcome comes later than the calls after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<IdText>,
    pub agent: Arc<str>,
    pub tool: Arc<str>,
    /// The upstream the tool's name routes to, with several upstreams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Arc<str>>,
    pub decision: Arc<str>,
}

/// A request's id as its JSON text (`7`, `"a"`): an integer's is kept as the number, with no
/// text made (a replay gives every call an id, and keeps each call's). Written out, and
/// serialized, as the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdText {
    Number(u64),
    /// Any other id's JSON text.
    Text(Box<str>),
}

impl IdText {
    /// The id whose JSON text is `text`: the number when `text` is an integer's own digits
    /// (`7`, not `07` or `7.0`).
    pub fn from_text(text: &str) -> IdText {
        let digits = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        match digits.then(|| text.parse::<u64>().ok()).flatten() {
            Some(n) => IdText::Number(n),
            None => IdText::Text(text.into()),
        }
    }

    /// The id `v` as [`IdText`] of its JSON text.
    pub fn of(v: &Value) -> IdText {
        match v.as_u64() {
            Some(n) => IdText::Number(n),
            None => IdText::Text(v.to_string().into()),
        }
    }
}

impl std::fmt::Display for IdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdText::Number(n) => f.write_str(itoa::Buffer::new().format(*n)),
            IdText::Text(t) => f.write_str(t),
        }
    }
}

impl serde::Serialize for IdText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::IdText;

    fn id_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[0-9a-z\"\\\\ -]{0,8}".prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    proptest! {
        /// An id kept as `IdText` is written (and serialized) as its JSON text, and an id read
        /// from a value and one read from that value's text are the same key: the runner's
        /// calls and a live run's answers meet under it.
        #[test]
        fn id_text_is_the_json_text_and_the_same_key_from_value_or_text(v in id_value()) {
            let text = v.to_string();
            let id = IdText::of(&v);
            prop_assert_eq!(id.to_string(), text.clone());
            prop_assert_eq!(&id, &IdText::from_text(&text));
            prop_assert_eq!(serde_json::to_value(&id).unwrap(), Value::from(text));
            prop_assert_eq!(matches!(id, IdText::Number(_)), v.is_u64());
        }
    }

    #[test]
    fn only_an_integers_own_digits_are_a_number() {
        assert_eq!(IdText::from_text("7"), IdText::Number(7));
        assert_eq!(IdText::from_text("0"), IdText::Number(0));
        for text in ["07", "7.0", "-7", "\"7\"", "", "18446744073709551616"] {
            assert_eq!(IdText::from_text(text), IdText::Text(text.into()), "{text}");
        }
    }
}
