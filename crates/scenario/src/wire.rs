//! A scenario as messages on a wire (`--live` and the differential tests): the plan of what each
//! agent sends, and the requests the runner builds.

use super::*;

/// The session the gateway counts an agent's calls in (`scope: session` counters are keyed by
/// it), by the live gateway's rules (docs/gateway.md): the stateless protocol (2026-07-28) has
/// no sessions, and the HTTP front gives every grant's stateless requests one shared session,
/// `stateless:GRANT`; every other agent is an MCP session of its own, even when two agents
/// declare the same session name (the live gateway gives each `initialize` its own id), so a
/// name another session-ful agent also declares becomes `SESSION/AGENT`.
pub fn session_identity(scenario: &Scenario, agent: &str) -> String {
    let Some(spec) = scenario.agents.get(agent) else {
        return agent.to_owned();
    };
    let protocol = spec.protocol.unwrap_or(ProtocolVersion::V2025_11_25);
    if protocol.is_stateless() {
        return format!("stateless:{}", spec.grant);
    }
    let declared = |name: &str, a: &format::Agent| a.session.as_deref().unwrap_or(name).to_owned();
    let session = declared(agent, spec);
    let shared = scenario.agents.iter().any(|(other, a)| {
        other != agent
            && !a.protocol.is_some_and(|p| p.is_stateless())
            && declared(other, a) == session
    });
    if shared {
        format!("{session}/{agent}")
    } else {
        session
    }
}

/// An agent's `initialize` (none for the stateless protocol, which has no handshake): the same
/// in virtual time and in live runs.
pub(super) fn initialize_request(agent: &str, protocol: ProtocolVersion) -> Option<Value> {
    (!protocol.is_stateless()).then(|| {
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": protocol.as_str(), "capabilities": {}, "clientInfo": {"name": agent, "version": "scenario"}}})
    })
}

/// A `tools/call` as an agent speaking `protocol` sends it (with the stateless `_meta`
/// envelope for 2026-07-28): the same in virtual time and in live runs.
pub(super) fn call_request(
    id: u64,
    agent: &str,
    protocol: ProtocolVersion,
    tool: &str,
    args: &Value,
) -> Value {
    let mut params = json!({"name": tool, "arguments": args});
    if protocol.is_stateless() {
        params["_meta"] = json!({
            META_PROTOCOL_VERSION: protocol.as_str(),
            META_CLIENT_INFO: {"name": agent, "version": "scenario"},
            META_CLIENT_CAPABILITIES: {},
        });
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// The id of a raw message, read leniently (the bytes may not parse): none when it has no
/// usable one. The same in virtual time and in live runs.
pub(super) fn raw_message_id(raw: &str) -> Option<Value> {
    serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| v.get("id").filter(|id| !id.is_null()).cloned())
}

/// One message an agent sends in a live run (`tollgate test --live`).
#[derive(Debug, Clone)]
pub struct WireSend {
    pub at: Duration,
    /// The agent that sends it (a key of the scenario's `agents`).
    pub agent: String,
    pub message: String,
    /// The ids of the calls in the message, in order (`null` for a raw message without one).
    pub ids: Vec<Value>,
}

/// One step of a live run.
#[derive(Debug, Clone)]
pub enum WireStep {
    Send(WireSend),
    /// A policy reload at `at`: the new policy's text (which may be invalid: the gateway must
    /// refuse it then).
    Reload {
        at: Duration,
        policy: String,
    },
    /// An `approve` or `deny` step at `at`, made by an operator on the gateway's admin API.
    Decide {
        at: Duration,
        approve: bool,
        decide: Decide,
    },
    /// A `faults: on|off` step at `at`, made through the mock's switch file.
    Faults {
        at: Duration,
        on: bool,
    },
}

/// One agent of a live run.
#[derive(Debug, Clone)]
pub struct WireAgent {
    pub name: String,
    pub grant: String,
    /// Its `initialize` (none for the stateless protocol, which has no handshake).
    pub init: Option<String>,
}

/// A scenario as wire messages, for a live run against real processes.
#[derive(Debug, Clone)]
pub struct WirePlan {
    pub agents: Vec<WireAgent>,
    /// The scenario's approvers: a live run gives each an admin token (none: the gateway has no
    /// approval channel, as in the virtual-time run).
    pub approvers: Vec<String>,
    /// Every agent's messages and the policy reloads, in the order the virtual-time run takes
    /// them.
    pub steps: Vec<WireStep>,
}

impl WirePlan {
    /// Whether the plan needs the HTTP gateway: several agents, a reload (the stdio gateway's
    /// stderr is the client's to ignore, so a live run cannot see it reload) or approvers (the
    /// admin API is served on the HTTP listener).
    pub fn needs_http(&self) -> bool {
        self.agents.len() > 1
            || !self.approvers.is_empty()
            || self
                .steps
                .iter()
                .any(|s| matches!(s, WireStep::Reload { .. } | WireStep::Decide { .. }))
    }

    /// Whether the plan switches the mock's faults.
    pub fn switches_faults(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, WireStep::Faults { .. }))
    }

    /// The messages, without the reloads and decisions.
    pub fn sends(&self) -> impl Iterator<Item = &WireSend> {
        self.steps.iter().filter_map(|s| match s {
            WireStep::Send(send) => Some(send),
            WireStep::Reload { .. } | WireStep::Decide { .. } | WireStep::Faults { .. } => None,
        })
    }
}

/// A scenario as the wire messages of its agents, for a live run against real processes: each
/// agent's `initialize` (if its protocol has one), then each call at its instant, with the same
/// ids the virtual-time run uses, each policy reload and each approval decision at its
/// instant, and each fault switch at its instant. Live runs take every kind of step.
pub fn wire_plan(loaded: &Loaded) -> Result<WirePlan, String> {
    let scenario = &loaded.scenario;
    if scenario.agents.is_empty() {
        return Err("a live run needs at least one agent".into());
    }
    let base = loaded
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let protocol_of = |agent: &str| {
        scenario
            .agents
            .get(agent)
            .and_then(|s| s.protocol)
            .unwrap_or(ProtocolVersion::V2025_11_25)
    };
    let agents = scenario
        .agents
        .iter()
        .map(|(name, spec)| WireAgent {
            name: name.clone(),
            grant: spec.grant.clone(),
            init: initialize_request(name, protocol_of(name)).map(|v| v.to_string()),
        })
        .collect();
    // The ids run across agents, as in the virtual-time run.
    let mut next_id = 0u64;
    let mut request = |agent: &str, tool: &str, args: &Value| {
        next_id += 1;
        call_request(next_id, agent, protocol_of(agent), tool, args)
    };
    let mut steps = Vec::new();
    let mut schedule = Schedule::new(scenario);
    while let Some(a) = schedule.next_action() {
        let send = match a.kind {
            ActionKind::Call {
                agent, tool, args, ..
            } => {
                let m = request(agent, tool, args);
                WireSend {
                    at: a.at,
                    agent: agent.to_string(),
                    ids: vec![m["id"].clone()],
                    message: m.to_string(),
                }
            }
            ActionKind::Raw { agent, raw, .. } => WireSend {
                at: a.at,
                agent: agent.clone(),
                ids: vec![raw_message_id(raw).unwrap_or(Value::Null)],
                message: raw.clone(),
            },
            ActionKind::Batch { agent, items } => {
                let msgs: Vec<Value> = items
                    .iter()
                    .map(|(t, args, _)| request(agent, t, args))
                    .collect();
                WireSend {
                    at: a.at,
                    agent: agent.clone(),
                    ids: msgs.iter().map(|m| m["id"].clone()).collect(),
                    message: Value::Array(msgs).to_string(),
                }
            }
            ActionKind::Reload { source, .. } => {
                let text = source
                    .text(&base)
                    .map_err(|e| format!("step {}: {e}", a.label))?;
                steps.push(WireStep::Reload {
                    at: a.at,
                    policy: text,
                });
                continue;
            }
            ActionKind::Decide { approve, decide } => {
                steps.push(WireStep::Decide {
                    at: a.at,
                    approve: *approve,
                    decide: decide.clone(),
                });
                continue;
            }
            ActionKind::Faults(switch) => {
                steps.push(WireStep::Faults {
                    at: a.at,
                    on: *switch == Switch::On,
                });
                continue;
            }
        };
        steps.push(WireStep::Send(send));
    }
    Ok(WirePlan {
        agents,
        approvers: scenario.approvers.clone(),
        steps,
    })
}
