//! The scenario file format (YAML), documented in docs/scenarios.md.
//!
//! ```yaml
//! name: runaway-agent
//! policy: ../examples/policies/seed.json     # a path (relative to this file) or a mapping
//! upstream: {tools: default, allow_write: true}
//! agents:
//!   ci-bot: {grant: ci-bot}
//! steps:
//!   - {at: 0s, agent: ci-bot, call: CancelAHORunBatch, args: {batchId: rb-0001}, repeat: 15, every: 2s}
//! expect:
//!   totals: {allow: 10, rate_limited: 5}
//!   journal: {CancelAHORunBatch: 10}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A policy file (relative to the scenario) or the policy itself.
    pub policy: PolicySource,
    #[serde(default)]
    pub upstream: Upstream,
    /// Agent name → its grant and session.
    pub agents: BTreeMap<String, Agent>,
    /// The operators who may approve or deny held calls (`approve` and `deny` steps name one
    /// of them). Without approvers a call that requires approval is refused at once, as by a
    /// gateway without `--admin-tokens`.
    #[serde(default)]
    pub approvers: Vec<String>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub expect: Option<Totals>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PolicySource {
    Path(String),
    Inline(Value),
}

/// The mock EKS server behind the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    #[serde(default = "default_tools")]
    pub tools: String,
    #[serde(default)]
    pub allow_write: bool,
    #[serde(default)]
    pub allow_sensitive_data_access: bool,
    /// The mock's fault rules (docs/mock-eks.md): `is_error` and `rpc_error` answers apply in
    /// virtual time; latencies are not simulated yet.
    #[serde(default)]
    pub faults: Option<tollgate_mock_eks::faults::FaultPlan>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            tools: default_tools(),
            allow_write: false,
            allow_sensitive_data_access: false,
            faults: None,
        }
    }
}

fn default_tools() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub grant: String,
    /// The MCP session; the agent's name when omitted.
    #[serde(default)]
    pub session: Option<String>,
}

/// One step: a call (possibly repeated), or time passing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When the (first) call happens; after the previous step when omitted.
    #[serde(default, deserialize_with = "opt_duration")]
    pub at: Option<Duration>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub call: Option<String>,
    #[serde(default)]
    pub args: Option<Value>,
    /// The exact bytes the agent sends instead of a generated call (for malformed input such
    /// as duplicate keys); `call` still names the tool for the transcript.
    #[serde(default)]
    pub raw: Option<String>,
    /// How many calls (default 1).
    #[serde(default)]
    pub repeat: Option<u32>,
    /// The time between repeated calls (default 0: a burst).
    #[serde(default, deserialize_with = "opt_duration")]
    pub every: Option<Duration>,
    /// Let time pass without a call.
    #[serde(default, deserialize_with = "opt_duration")]
    pub advance: Option<Duration>,
    /// An operator approves a held call (docs/approvals.md).
    #[serde(default)]
    pub approve: Option<Decide>,
    /// An operator denies a held call.
    #[serde(default)]
    pub deny: Option<Decide>,
    /// What each call of this step must be decided as, and text its message must contain.
    #[serde(default)]
    pub expect: Option<StepExpect>,
}

/// Which held call an `approve` or `deny` step decides, and who decides it:
/// `{tool: add_inline_policy, by: alice, reason: "ticket OPS-7"}` (the oldest pending call of
/// that tool) or `{held: 2, by: bob}` (the second call held in the run).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    #[serde(default)]
    pub tool: Option<String>,
    /// The order of holding, from 1 (the approval id).
    #[serde(default)]
    pub held: Option<u64>,
    /// The approver's name, as the audit log records it.
    pub by: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepExpect {
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub message_contains: Option<String>,
}

/// Whole-run expectations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Decision → count over the run.
    #[serde(default)]
    pub totals: BTreeMap<String, u64>,
    /// Tool → calls that reached the mock.
    #[serde(default)]
    pub journal: BTreeMap<String, u64>,
}

/// A duration: `90s`, `1.5s`, `250ms`, `5m`, `1h`, or a number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (number, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number.trim().parse().ok()?;
    if !(value.is_finite() && value >= 0.0) {
        return None;
    }
    Duration::try_from_secs_f64(value * unit).ok()
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(|f| Duration::try_from_secs_f64(f).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("`{n}` is not a duration"))),
        Some(Value::String(s)) => parse_duration(&s).map(Some).ok_or_else(|| {
            D::Error::custom(format!(
                "`{s}` is not a duration: write e.g. `90s`, `1.5s`, `250ms`, `5m`, `1h`"
            ))
        }),
        Some(other) => Err(D::Error::custom(format!("`{other}` is not a duration"))),
    }
}
