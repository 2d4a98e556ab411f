//! The scenario file format (YAML), documented in docs/scenarios.md; its JSON Schema is
//! docs/scenario.schema.json, generated from these types.
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
//!
//! Errors name the file, line and column. Checks that involve one step (exactly one kind of
//! step, `repeat` at least 1, an agent the file declares) run while the step is parsed, so the
//! YAML parser attaches the step's own position to the message.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tollgate_mcp::ProtocolVersion;

/// A scenario file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name, the first line of its transcript.
    pub name: String,
    /// What the scenario proves (printed under the name).
    #[serde(default)]
    pub description: Option<String>,
    /// A policy file (relative to the scenario) or the policy itself.
    pub policy: PolicySource,
    /// The mock EKS server behind the gateway (one upstream; `upstreams` declares several).
    #[serde(default)]
    pub upstream: Option<Upstream>,
    /// Several mock EKS servers behind one gateway, each with a name, its tool set and its
    /// faults: their tools are exposed as `<prefix><tool>` (by default `<name>__<tool>`), the
    /// gateway's rule for a config file of several upstreams (docs/gateway.md). Not with
    /// `upstream`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<NamedMock>>", length(min = 1))]
    pub upstreams: Option<Upstreams>,
    /// How the gateway waits for the upstream.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// Agent name → its grant, session and protocol version.
    pub agents: BTreeMap<String, Agent>,
    /// The operators who may approve or deny held calls (`approve` and `deny` steps name one
    /// of them). Without approvers a call that requires approval is refused at once, as by a
    /// gateway without `--admin-tokens`.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// What happens, in virtual time.
    pub steps: Vec<Step>,
    /// Whole-run expectations.
    #[serde(default)]
    pub expect: Option<Totals>,
}

/// A policy: a path (relative to the scenario file) or the policy document inline.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PolicySource {
    /// A policy file, relative to the scenario file.
    Path(String),
    /// The policy document itself (docs/policy.schema.json).
    Inline(serde_json::Map<String, Value>),
}

impl PolicySource {
    /// The policy's text: the file's (relative to `base`, the scenario's directory), or the
    /// inline document written as JSON.
    pub fn text(&self, base: &std::path::Path) -> Result<String, String> {
        match self {
            PolicySource::Inline(v) => serde_json::to_string(v).map_err(|e| e.to_string()),
            PolicySource::Path(p) => {
                let path = base.join(p);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read the policy `{}`: {e}", path.display()))
            }
        }
    }
}

/// The mock EKS server behind the gateway.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Which tools the mock offers: `real`, `default`, `full`, or tool names and glob patterns
    /// (a comma-separated string or a list).
    #[serde(default = "default_tools")]
    pub tools: ToolSelection,
    /// The mock's `--allow-write`.
    #[serde(default)]
    pub allow_write: bool,
    /// The mock's `--allow-sensitive-data-access`.
    #[serde(default)]
    pub allow_sensitive_data_access: bool,
    /// `tools/list` page size (all in one page when omitted).
    #[serde(default)]
    pub page_size: Option<usize>,
    /// The mock's fault rules (docs/mock-eks.md): `is_error` and `rpc_error` answers, latencies
    /// (in virtual time), `malformed`, `hang`, `trickle` and `crash`.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub faults: Option<tollgate_mock_eks::faults::FaultPlan>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            tools: default_tools(),
            allow_write: false,
            allow_sensitive_data_access: false,
            page_size: None,
            faults: None,
        }
    }
}

/// One of several mock EKS servers (`upstreams:`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedMock {
    /// Its name (as a config file's `[[upstream]] name`): letters, digits, `_` and `-`, at most
    /// 64; unique. Policies select its tools with `upstream:NAME`; the audit log, the
    /// transcript and `--format json` name it.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub name: String,
    /// The prefix of its exposed tool names (default `<name>__`; several upstreams only).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub prefix: Option<String>,
    /// The upstream is down for the whole run: it never answers `initialize`, so none of its
    /// tools is listed and a call to one is `unknown_tool`; the others serve.
    #[serde(default)]
    pub down: bool,
    /// Which tools this mock offers (as `upstream.tools`).
    #[serde(default = "default_tools")]
    pub tools: ToolSelection,
    /// The mock's `--allow-write`.
    #[serde(default)]
    pub allow_write: bool,
    /// The mock's `--allow-sensitive-data-access`.
    #[serde(default)]
    pub allow_sensitive_data_access: bool,
    /// `tools/list` page size (the gateway follows every upstream's pages).
    #[serde(default)]
    pub page_size: Option<usize>,
    /// This mock's fault rules (as `upstream.faults`): `is_error` and `rpc_error` answers,
    /// latencies and `hang`. The effects that end or garble an upstream's connection
    /// (`malformed`, `trickle`, `crash`) and `rug_pull` are refused here: behind several
    /// upstreams the router turns them into restarts on the wall clock, which virtual time does
    /// not model (`down: true` models an upstream that is not there).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub faults: Option<tollgate_mock_eks::faults::FaultPlan>,
}

/// The `upstreams:` list, checked as a whole while it is parsed (so an error points at it):
/// at least one, names valid and unique, prefixes valid and not overlapping, by the same rules
/// as the gateway's config file ([`tollgate_gateway::config`]).
#[derive(Debug, Clone)]
pub struct Upstreams(pub Vec<NamedMock>);

impl<'de> Deserialize<'de> for Upstreams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Upstreams, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Upstreams;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of upstreams: `- {name: eks, tools: real}`")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Upstreams, A::Error> {
                let mut list = Vec::new();
                while let Some(CheckedMock(m)) = seq.next_element()? {
                    list.push(m);
                }
                check_upstreams(&list).map_err(A::Error::custom)?;
                Ok(Upstreams(list))
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}

/// One entry of `upstreams`, its own checks made while it is parsed (so an error points at it).
struct CheckedMock(NamedMock);

impl<'de> Deserialize<'de> for CheckedMock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CheckedMock, D::Error> {
        struct MockVisitor;
        impl<'de> Visitor<'de> for MockVisitor {
            type Value = CheckedMock;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an upstream: a mapping with `name` and its mock's settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CheckedMock, A::Error> {
                use tollgate_gateway::config::{valid_prefix, valid_upstream_name};
                let m = NamedMock::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if !valid_upstream_name(&m.name) {
                    return Err(A::Error::custom(format!(
                        "`{}` is not an upstream name: use letters, digits, `_` and `-` (at most 64), e.g. `eks`",
                        m.name
                    )));
                }
                if let Some(p) = &m.prefix
                    && !valid_prefix(p)
                {
                    return Err(A::Error::custom(format!(
                        "`{p}` is not a prefix: use 1 to 64 of letters, digits, `_`, `.` and `-` (tool names allow no others)"
                    )));
                }
                Ok(CheckedMock(m))
            }
        }
        d.deserialize_map(MockVisitor)
    }
}

/// The checks of the list as a whole (each entry's own were made while it was parsed).
fn check_upstreams(list: &[NamedMock]) -> Result<(), String> {
    use tollgate_gateway::config::{overlapping_prefixes, prefix_overlap_message};
    use tollgate_mock_eks::faults::EffectKind;
    if list.is_empty() {
        return Err("`upstreams` lists at least one upstream: `- {name: eks, tools: real}`".into());
    }
    let several = list.len() > 1;
    for (i, u) in list.iter().enumerate() {
        if list[..i].iter().any(|o| o.name == u.name) {
            return Err(format!(
                "upstreams[{i}]: two upstreams are named `{}`: give each a name of its own",
                u.name
            ));
        }
        if u.down && !several {
            return Err(format!(
                "upstreams[{i}]: `down` applies only with several upstreams (the others serve while it is down); a lone upstream that is down leaves nothing to run"
            ));
        }
        if u.prefix.is_some() && !several {
            return Err(format!(
                "upstreams[{i}]: a `prefix` applies only with several upstreams (one upstream's names are exposed as they are): remove it"
            ));
        }
        if several
            && let Some(plan) = &u.faults
            && let Some(kind) = plan.faults.iter().find_map(|r| {
                r.effect.filter(|k| {
                    matches!(
                        k,
                        EffectKind::Malformed
                            | EffectKind::Trickle
                            | EffectKind::Crash
                            | EffectKind::RugPull
                    )
                })
            })
        {
            return Err(format!(
                "upstreams[{i}] (`{}`): the fault effect `{}` is not modelled behind several upstreams (the router restarts or re-lists an upstream on the wall clock, which virtual time does not follow); use `is_error`, `rpc_error`, `latency_ms` or `hang`, or `down: true` for an upstream that is not there",
                u.name,
                serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ));
        }
    }
    let mocks = mock_specs(list);
    let named: Vec<(&str, &str)> = mocks
        .iter()
        .map(|m| (m.name.as_str(), m.prefix.as_str()))
        .collect();
    if let Some((a, b)) = overlapping_prefixes(&named).first() {
        return Err(format!(
            "upstreams: {}; give each upstream a prefix that does not start another's",
            prefix_overlap_message(named[*a], named[*b])
        ));
    }
    Ok(())
}

/// One mock upstream of a run, resolved: its name, the prefix of its exposed names (empty for
/// a scenario's only upstream) and its settings.
#[derive(Debug, Clone)]
pub struct MockSpec {
    pub name: String,
    pub prefix: String,
    pub down: bool,
    pub upstream: Upstream,
}

/// The name a scenario's only upstream has (as the gateway's `--lock` names the one upstream
/// given on its command line).
pub const SINGLE_UPSTREAM: &str = tollgate_gateway::pin::DEFAULT_UPSTREAM;

fn mock_specs(list: &[NamedMock]) -> Vec<MockSpec> {
    let several = list.len() > 1;
    list.iter()
        .map(|u| MockSpec {
            name: u.name.clone(),
            prefix: tollgate_gateway::config::exposed_prefix(&u.name, u.prefix.as_deref(), several),
            down: u.down,
            upstream: Upstream {
                tools: u.tools.clone(),
                allow_write: u.allow_write,
                allow_sensitive_data_access: u.allow_sensitive_data_access,
                page_size: u.page_size,
                faults: u.faults.clone(),
            },
        })
        .collect()
}

impl Scenario {
    /// The mock upstreams of the run, in their order: `upstreams`, or the one `upstream` (named
    /// [`SINGLE_UPSTREAM`], no prefix), or the default mock.
    pub fn mocks(&self) -> Vec<MockSpec> {
        match &self.upstreams {
            Some(list) => mock_specs(&list.0),
            None => vec![MockSpec {
                name: SINGLE_UPSTREAM.to_owned(),
                prefix: String::new(),
                down: false,
                upstream: self.upstream.clone().unwrap_or_default(),
            }],
        }
    }

    /// Whether the run has several upstreams (their tools namespaced).
    pub fn several_upstreams(&self) -> bool {
        self.upstreams.as_ref().is_some_and(|l| l.0.len() > 1)
    }
}

fn default_tools() -> ToolSelection {
    ToolSelection::Spec("default".into())
}

/// A catalogue subset (docs/catalog.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ToolSelection {
    /// `real`, `default`, `full`, or a comma-separated list of names and globs.
    Spec(String),
    /// Tool names and glob patterns.
    List(Vec<String>),
}

impl ToolSelection {
    /// The selection as the catalogue reads it.
    pub fn spec(&self) -> String {
        match self {
            ToolSelection::Spec(s) => s.clone(),
            ToolSelection::List(items) => items.join(","),
        }
    }
}

/// The gateway's timeouts.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// How long a forwarded call may wait for the upstream (default 60s).
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<Duration>,
    /// Per-tool timeouts (exact names), overriding `timeout`.
    #[serde(default)]
    pub tool_timeouts: BTreeMap<String, DurationValue>,
    /// How many calls one grant may have waiting for approval at once, at least 1 (`tollgate
    /// gateway --max-held-per-grant`, default 16); the next is refused as
    /// `approval_queue_full`.
    #[serde(default)]
    pub max_held_per_grant: Option<std::num::NonZeroUsize>,
    /// The largest message the gateway accepts from the agent or the upstream, in bytes
    /// (`tollgate gateway --max-message-bytes`, default 4 MiB); a longer one is answered with
    /// a JSON-RPC error.
    #[serde(default)]
    pub max_message_bytes: Option<std::num::NonZeroUsize>,
}

/// One agent: an MCP client session.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The grant (credential) the agent presents.
    pub grant: String,
    /// The MCP session; the agent's name when omitted.
    #[serde(default)]
    pub session: Option<String>,
    /// The protocol version the agent speaks: `2025-03-26` (batches allowed), `2025-06-18`,
    /// `2025-11-25` (the default) or `2026-07-28` (stateless: no `initialize`, `_meta` on
    /// every request).
    #[serde(default, deserialize_with = "opt_protocol")]
    #[schemars(with = "Option<ProtocolText>")]
    pub protocol: Option<ProtocolVersion>,
}

/// A step's fields; which ones are given says what the step is. Exactly one of `call`,
/// `batch`, `advance`, `reload`, `faults`, `concurrent`, `approve`, `deny`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepFields {
    /// When the (first) call happens; after the previous step when omitted. Inside a
    /// `concurrent` group: the offset from the group's start.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<DurationText>")]
    pub at: Option<Duration>,
    /// The agent that calls (a key of `agents`).
    #[serde(default)]
    pub agent: Option<String>,
    /// The tool to call.
    #[serde(default)]
    pub call: Option<String>,
    /// The call's arguments (default `{}`).
    #[serde(default)]
    pub args: Option<Value>,
    /// The exact bytes the agent sends instead of a generated call (for malformed input such
    /// as duplicate keys); `call` still names the tool for the transcript.
    #[serde(default)]
    pub raw: Option<String>,
    /// A JSON-RPC batch of calls sent as one message (2025-03-26 only).
    #[serde(default)]
    pub batch: Option<Vec<BatchItem>>,
    /// How many calls (default 1).
    #[serde(default)]
    pub repeat: Option<u32>,
    /// The time between repeated calls (default 0: a burst).
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<DurationText>")]
    pub every: Option<Duration>,
    /// Let time pass without a call.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<DurationText>")]
    pub advance: Option<Duration>,
    /// Replace the running policy (a path relative to the scenario, or inline). A policy that
    /// fails validation is refused and the old one keeps running.
    #[serde(default)]
    pub reload: Option<PolicySource>,
    /// Switch the upstream's fault rules on or off.
    #[serde(default)]
    pub faults: Option<Switch>,
    /// Steps of several agents at the same instants, interleaved: at each instant, the first
    /// call of every member in the group's order, then the second of every member, and so on.
    #[serde(default)]
    pub concurrent: Option<Vec<Step>>,
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

/// What a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Call,
    Raw,
    Batch,
    Advance,
    Reload,
    Faults,
    Concurrent,
    Approve,
    Deny,
}

/// Which held call an `approve` or `deny` step decides, and who decides it:
/// `{tool: add_inline_policy, by: alice, reason: "ticket OPS-7"}` (the oldest pending call of
/// that tool) or `{held: 2, by: bob}` (the second call held in the run).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// The tool of the held call (the oldest pending call of that tool).
    #[serde(default)]
    pub tool: Option<String>,
    /// The order of holding, from 1 (the approval id).
    #[serde(default)]
    pub held: Option<u64>,
    /// The approver's name (one of `approvers`), as the audit log records it.
    pub by: String,
    /// Why, as the audit log and the agent read it.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One step (a [`StepFields`] checked while parsing).
#[derive(Debug, Clone)]
pub struct Step {
    pub fields: StepFields,
    pub kind: StepKind,
}

impl std::ops::Deref for Step {
    type Target = StepFields;
    fn deref(&self) -> &StepFields {
        &self.fields
    }
}

impl JsonSchema for Step {
    fn schema_name() -> Cow<'static, str> {
        "Step".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        StepFields::json_schema(generator)
    }
}

/// The names a scenario declares: its agents and its approvers.
#[derive(Debug, Default)]
struct Known {
    agents: BTreeSet<String>,
    approvers: Vec<String>,
}

thread_local! {
    /// The agents and approvers a scenario declares, while its steps are parsed the second
    /// time (see [`parse`]), so that a step naming another agent or approver fails with its
    /// own position.
    static KNOWN: RefCell<Option<Known>> = const { RefCell::new(None) };
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = Step;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a step: a mapping with `call`, `batch`, `advance`, `reload`, `faults`, `concurrent`, `approve` or `deny`")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Step, A::Error> {
                let fields =
                    StepFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                check_step(fields).map_err(A::Error::custom)
            }
        }
        d.deserialize_map(StepVisitor)
    }
}

fn check_step(fields: StepFields) -> Result<Step, String> {
    let mut kinds = Vec::new();
    if fields.call.is_some() {
        kinds.push(if fields.raw.is_some() {
            StepKind::Raw
        } else {
            StepKind::Call
        });
    } else if fields.raw.is_some() {
        return Err("`raw` needs `call: TOOL` too (the tool's name for the transcript)".into());
    }
    for (given, kind) in [
        (fields.batch.is_some(), StepKind::Batch),
        (fields.advance.is_some(), StepKind::Advance),
        (fields.reload.is_some(), StepKind::Reload),
        (fields.faults.is_some(), StepKind::Faults),
        (fields.concurrent.is_some(), StepKind::Concurrent),
        (fields.approve.is_some(), StepKind::Approve),
        (fields.deny.is_some(), StepKind::Deny),
    ] {
        if given {
            kinds.push(kind);
        }
    }
    let kind = match kinds.as_slice() {
        [k] => *k,
        [] => {
            return Err(
                "a step needs one of `call: TOOL`, `batch: [...]`, `advance: DURATION`, `reload: POLICY`, `faults: on|off`, `concurrent: [...]`, `approve: {...}`, `deny: {...}`"
                    .into(),
            );
        }
        _ => {
            return Err(
                "a step is one of `call`, `batch`, `advance`, `reload`, `faults`, `concurrent`, `approve` or `deny`, not several"
                    .into(),
            );
        }
    };
    if matches!(kind, StepKind::Call | StepKind::Raw | StepKind::Batch) {
        let Some(agent) = fields.agent.as_deref() else {
            return Err("a call needs `agent: NAME` (a key of `agents`)".into());
        };
        let unknown = KNOWN.with(|k| {
            k.borrow()
                .as_ref()
                .filter(|known| !known.agents.contains(agent))
                .map(|known| known.agents.iter().cloned().collect::<Vec<_>>().join(", "))
        });
        if let Some(known) = unknown {
            return Err(format!("unknown agent `{agent}`; the agents are {known}"));
        }
    } else if fields.agent.is_some() {
        return Err("`agent` belongs to a call".into());
    }
    if let Some(d) = fields.approve.as_ref().or(fields.deny.as_ref()) {
        if d.tool.is_some() == d.held.is_some() {
            return Err("say which held call to decide: `tool: NAME` (the oldest pending call of that tool) or `held: N` (the N-th call held), one of the two".into());
        }
        let refused = KNOWN.with(|k| {
            k.borrow()
                .as_ref()
                .filter(|known| !known.approvers.contains(&d.by))
                .map(|known| {
                    if known.approvers.is_empty() {
                        "none".to_owned()
                    } else {
                        known.approvers.join(", ")
                    }
                })
        });
        if let Some(now) = refused {
            return Err(format!(
                "`{}` is not an approver; list the operators who decide in `approvers: [...]` (now: {now})",
                d.by
            ));
        }
    }
    if fields.repeat == Some(0) {
        return Err("`repeat` is at least 1".into());
    }
    if (fields.repeat.is_some() || fields.every.is_some())
        && !matches!(kind, StepKind::Call | StepKind::Raw | StepKind::Batch)
    {
        return Err("`repeat` and `every` belong to a call or a batch".into());
    }
    if let Some(b) = &fields.batch
        && b.is_empty()
    {
        return Err("a batch has at least one call".into());
    }
    if let Some(group) = &fields.concurrent {
        if group.is_empty() {
            return Err("a concurrent group has at least one step".into());
        }
        if group
            .iter()
            .any(|s| !matches!(s.kind, StepKind::Call | StepKind::Raw | StepKind::Batch))
        {
            return Err("a concurrent group holds calls and batches only".into());
        }
    }
    if fields.expect.as_ref().is_some_and(|e| e.reload.is_some()) && kind != StepKind::Reload {
        return Err("`expect.reload` belongs to a `reload` step".into());
    }
    Ok(Step { fields, kind })
}

/// One call inside a batch.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// The tool to call.
    pub call: String,
    /// The call's arguments (default `{}`).
    #[serde(default)]
    pub args: Option<Value>,
    /// What this call must be decided as.
    #[serde(default)]
    pub expect: Option<StepExpect>,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

/// What a step must produce.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepExpect {
    /// The decision the transcript writes for the call (docs/scenarios.md lists them).
    #[serde(default)]
    pub decision: Option<ExpectedDecision>,
    /// Text the message the agent read must contain.
    #[serde(default)]
    pub message_contains: Option<String>,
    /// For a `reload` step: `applied` or `refused`.
    #[serde(default)]
    pub reload: Option<ReloadExpect>,
}

/// A decision a step can expect: every name the runner writes in a transcript, and nothing
/// else (a misspelt decision is an error where it is written, not a step that always fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedDecision {
    /// Forwarded, and answered by the upstream (with a result or a tool error).
    Allow,
    Deny,
    RateLimited,
    /// A limit that counts upstream errors (`counts: errors`) is full: the tool keeps failing.
    ErrorLimited,
    InvalidArguments,
    /// The rule requires approval and the gateway has no approval channel.
    ApprovalRequired,
    /// An approver denied the held call.
    ApprovalDenied,
    /// Nobody decided in time, under `on_timeout: deny`.
    ApprovalTimeout,
    /// The approval queue was full: refused at once.
    ApprovalQueueFull,
    /// The client went away or cancelled the held call.
    ApprovalWithdrawn,
    /// The counter store could not answer (fail closed).
    StoreUnavailable,
    /// The upstream does not offer the tool.
    UnknownTool,
    /// The session has as many calls in flight as the gateway allows.
    TooManyInFlight,
    /// The audit log could not record the decision.
    AuditUnavailable,
    UpstreamTimeout,
    UpstreamFailed,
    /// A JSON-RPC error answer, from the gateway (a malformed message, duplicate keys) or the
    /// upstream.
    Error,
}

impl ExpectedDecision {
    /// Every decision, in declaration order.
    pub const ALL: [ExpectedDecision; 17] = [
        ExpectedDecision::Allow,
        ExpectedDecision::Deny,
        ExpectedDecision::RateLimited,
        ExpectedDecision::ErrorLimited,
        ExpectedDecision::InvalidArguments,
        ExpectedDecision::ApprovalRequired,
        ExpectedDecision::ApprovalDenied,
        ExpectedDecision::ApprovalTimeout,
        ExpectedDecision::ApprovalQueueFull,
        ExpectedDecision::ApprovalWithdrawn,
        ExpectedDecision::StoreUnavailable,
        ExpectedDecision::UnknownTool,
        ExpectedDecision::TooManyInFlight,
        ExpectedDecision::AuditUnavailable,
        ExpectedDecision::UpstreamTimeout,
        ExpectedDecision::UpstreamFailed,
        ExpectedDecision::Error,
    ];

    /// The name the transcript writes.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedDecision::Allow => "allow",
            ExpectedDecision::Deny => "deny",
            ExpectedDecision::RateLimited => "rate_limited",
            ExpectedDecision::ErrorLimited => "error_limited",
            ExpectedDecision::InvalidArguments => "invalid_arguments",
            ExpectedDecision::ApprovalRequired => "approval_required",
            ExpectedDecision::ApprovalDenied => "approval_denied",
            ExpectedDecision::ApprovalTimeout => "approval_timeout",
            ExpectedDecision::ApprovalQueueFull => "approval_queue_full",
            ExpectedDecision::ApprovalWithdrawn => "approval_withdrawn",
            ExpectedDecision::StoreUnavailable => "store_unavailable",
            ExpectedDecision::UnknownTool => "unknown_tool",
            ExpectedDecision::TooManyInFlight => "too_many_in_flight",
            ExpectedDecision::AuditUnavailable => "audit_unavailable",
            ExpectedDecision::UpstreamTimeout => "upstream_timeout",
            ExpectedDecision::UpstreamFailed => "upstream_failed",
            ExpectedDecision::Error => "error",
        }
    }
}

impl std::fmt::Display for ExpectedDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reload must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReloadExpect {
    Applied,
    Refused,
}

/// Whole-run expectations.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Decision → count over the run.
    #[serde(default)]
    pub totals: BTreeMap<String, u64>,
    /// Tool → calls that reached the mock.
    #[serde(default)]
    pub journal: BTreeMap<String, u64>,
}

/// Parses a scenario's text; the error carries the line and column. Called twice when a step
/// names an agent or an approver the file does not declare, the second time with the declared
/// names, so the message points at the step.
pub fn parse(text: &str) -> Result<Scenario, serde_norway::Error> {
    let scenario: Scenario = serde_norway::from_str(text)?;
    if scenario.upstream.is_some() && scenario.upstreams.is_some() {
        return Err(serde_norway::Error::custom(
            "a scenario has `upstream` (one mock) or `upstreams` (several), not both",
        ));
    }
    let known = Known {
        agents: scenario.agents.keys().cloned().collect(),
        approvers: scenario.approvers.clone(),
    };
    if all_known(&scenario.steps, &known) {
        return Ok(scenario);
    }
    KNOWN.with(|k| *k.borrow_mut() = Some(known));
    let again = serde_norway::from_str::<Scenario>(text);
    KNOWN.with(|k| *k.borrow_mut() = None);
    again
}

fn all_known(steps: &[Step], known: &Known) -> bool {
    steps.iter().all(|s| {
        s.agent.as_ref().is_none_or(|a| known.agents.contains(a))
            && s.approve
                .as_ref()
                .or(s.deny.as_ref())
                .is_none_or(|d| known.approvers.contains(&d.by))
            && s.concurrent.as_deref().is_none_or(|g| all_known(g, known))
    })
}

/// A duration in the file: `90s`, `1.5s`, `250ms`, `5m`, `1h`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DurationValue, D::Error> {
        match opt_duration(d)? {
            Some(v) => Ok(DurationValue(v)),
            None => Err(D::Error::custom("a duration is required here")),
        }
    }
}

impl JsonSchema for DurationValue {
    fn schema_name() -> Cow<'static, str> {
        DurationText::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        DurationText::json_schema(generator)
    }
}

/// The schema of a duration.
struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: `90s`, `1.5s`, `250ms`, `5m`, `1h`, or a number of seconds.",
            "oneOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*(ms|s|m|h)?\\s*$" },
            ],
        })
    }
}

/// The schema of a protocol version.
struct ProtocolText;

impl JsonSchema for ProtocolText {
    fn schema_name() -> Cow<'static, str> {
        "ProtocolVersion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let all: Vec<&str> = ProtocolVersion::ALL.iter().map(|v| v.as_str()).collect();
        json_schema!({
            "description": "An MCP protocol version.",
            "type": "string",
            "enum": all,
        })
    }
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

fn opt_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ProtocolVersion>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    ProtocolVersion::parse(&text).map(Some).ok_or_else(|| {
        let all: Vec<&str> = ProtocolVersion::ALL.iter().map(|v| v.as_str()).collect();
        D::Error::custom(format!(
            "`{text}` is not a protocol version this gateway knows: use one of {}",
            all.join(", ")
        ))
    })
}

/// The JSON Schema of the format (docs/scenario.schema.json).
pub fn schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Scenario)).unwrap_or(Value::Null);
    schema["$id"] = "https://tollgate.invalid/scenario.schema.json".into();
    schema["title"] = "Tollgate scenario".into();
    schema
}
