//! The scenario runner: replays an agent session, written as a scenario file, through the
//! gateway's session core and the in-process mock EKS server, in virtual time (nothing sleeps:
//! a day-long scenario runs in milliseconds), checks its expectations, and writes a
//! deterministic transcript for snapshot tests.

pub mod format;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::core::{Gateway, GatewayOptions, Out, SessionCore};
use tollgate_mock_eks::world::Flags;
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_policy::{Engine, MemoryStore, Policy};

pub use format::Scenario;

/// A scenario that cannot be run: where and what.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Bad { path: String, message: String },
    #[error("{path}: the policy is not valid:\n{diagnostics}")]
    Policy { path: String, diagnostics: String },
}

/// A loaded scenario with its compiled policy.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub scenario: Scenario,
    pub policy: Policy,
}

/// Reads and checks a scenario file and its policy.
pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: name.clone(),
        source,
    })?;
    let scenario: Scenario = serde_norway::from_str(&text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        ScenarioError::Invalid {
            path: name.clone(),
            line,
            column,
            message: e.to_string(),
        }
    })?;
    let bad = |message: String| ScenarioError::Bad {
        path: name.clone(),
        message,
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        let kinds = [
            step.call.is_some(),
            step.advance.is_some(),
            step.approve.is_some(),
            step.deny.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => {
                return Err(bad(format!(
                    "step {}: give `call: TOOL`, `advance: DURATION`, `approve: {{...}}` or `deny: {{...}}`",
                    i + 1
                )));
            }
            1 => {}
            _ => {
                return Err(bad(format!(
                    "step {}: a step is one of `call`, `advance`, `approve` or `deny`, not several",
                    i + 1
                )));
            }
        }
        if let Some(d) = step.approve.as_ref().or(step.deny.as_ref()) {
            if d.tool.is_some() == d.held.is_some() {
                return Err(bad(format!(
                    "step {}: say which held call to decide: `tool: NAME` (the oldest pending call of that tool) or `held: N` (the N-th call held), one of the two",
                    i + 1
                )));
            }
            if !scenario.approvers.contains(&d.by) {
                return Err(bad(format!(
                    "step {}: `{}` is not an approver; list the operators who decide in `approvers: [...]` (now: {})",
                    i + 1,
                    d.by,
                    if scenario.approvers.is_empty() {
                        "none".to_owned()
                    } else {
                        scenario.approvers.join(", ")
                    }
                )));
            }
        }
        if step.call.is_some() {
            let agent = step
                .agent
                .as_deref()
                .ok_or_else(|| bad(format!("step {}: a call needs `agent`", i + 1)))?;
            if !scenario.agents.contains_key(agent) {
                let known: Vec<&str> = scenario.agents.keys().map(String::as_str).collect();
                return Err(bad(format!(
                    "step {}: unknown agent `{agent}`; the agents are {}",
                    i + 1,
                    known.join(", ")
                )));
            }
        }
        if step.repeat == Some(0) {
            return Err(bad(format!("step {}: `repeat` is at least 1", i + 1)));
        }
    }
    let policy = match &scenario.policy {
        format::PolicySource::Path(p) => {
            let full = path.parent().unwrap_or(Path::new(".")).join(p);
            Policy::load(&full)
        }
        format::PolicySource::Inline(v) => {
            let text = serde_json::to_string_pretty(v).unwrap_or_default();
            Policy::parse(&format!("{name} (inline policy)"), &text)
        }
    }
    .map_err(|d| ScenarioError::Policy {
        path: name.clone(),
        diagnostics: d.render_plain(),
    })?;
    Ok(Loaded {
        path: path.to_owned(),
        scenario,
        policy,
    })
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub transcript: String,
    /// Expectations that did not hold.
    pub failures: Vec<String>,
    pub calls: u64,
}

struct Event {
    at: Duration,
    step: usize,
    agent: String,
    tool: String,
    args: Value,
    raw: Option<String>,
    /// An `approve` (true) or `deny` (false) step.
    decide: Option<(bool, format::Decide)>,
}

/// Runs a loaded scenario in virtual time.
///
/// A scenario with `approvers` has operators: a call that requires approval is held (its line
/// says `held`), decided by `approve` and `deny` steps, or ended by its timeout at exactly its
/// deadline; its outcome is printed when it comes. Without approvers nobody could approve, and
/// such a call is refused at once, as by a gateway without `--admin-tokens`.
pub fn run(loaded: Loaded) -> Outcome {
    let Loaded {
        scenario, policy, ..
    } = loaded;
    let approvers = !scenario.approvers.is_empty();
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    let gateway = Gateway::new(
        engine,
        None,
        GatewayOptions {
            approvals: approvers,
            ..GatewayOptions::default()
        },
    );
    let mut mock = match MockEks::new(MockConfig {
        tools: scenario.upstream.tools.clone(),
        flags: Flags {
            allow_write: scenario.upstream.allow_write,
            allow_sensitive_data_access: scenario.upstream.allow_sensitive_data_access,
        },
        faults: scenario.upstream.faults.clone().unwrap_or_default(),
        ..MockConfig::default()
    }) {
        Ok(m) => m,
        Err(e) => {
            return Outcome {
                transcript: String::new(),
                failures: vec![format!("upstream.tools: {e}")],
                calls: 0,
            };
        }
    };
    // Expand the steps into timed calls and decisions.
    let mut events = Vec::new();
    let mut cursor = Duration::ZERO;
    for (i, step) in scenario.steps.iter().enumerate() {
        if let Some(d) = step.advance {
            cursor += d;
            continue;
        }
        let start = step.at.unwrap_or(cursor);
        if let Some((approve, d)) = step
            .approve
            .as_ref()
            .map(|d| (true, d))
            .or(step.deny.as_ref().map(|d| (false, d)))
        {
            events.push(Event {
                at: start,
                step: i,
                agent: String::new(),
                tool: String::new(),
                args: Value::Null,
                raw: None,
                decide: Some((approve, d.clone())),
            });
            cursor = cursor.max(start);
            continue;
        }
        let every = step.every.unwrap_or(Duration::ZERO);
        let repeat = step.repeat.unwrap_or(1);
        for k in 0..repeat {
            let at = start + every * k;
            events.push(Event {
                at,
                step: i,
                agent: step.agent.clone().unwrap_or_default(),
                tool: step.call.clone().unwrap_or_default(),
                args: step.args.clone().unwrap_or_else(|| json!({})),
                raw: step.raw.clone(),
                decide: None,
            });
            cursor = cursor.max(at);
        }
    }
    // Stable: calls at the same instant keep the order of the file.
    events.sort_by_key(|e| e.at);

    let mut run = Run {
        scenario: &scenario,
        gateway: &gateway,
        sessions: BTreeMap::new(),
        held: BTreeMap::new(),
        transcript: format!("scenario: {}\n", scenario.name),
        totals: BTreeMap::new(),
        failures: Vec::new(),
    };
    if let Some(d) = &scenario.description {
        run.transcript.push_str(&format!("  {}\n", d.trim()));
    }
    run.transcript.push('\n');
    let mut calls = 0u64;
    for (id, e) in (1u64..).zip(events.iter()) {
        if approvers {
            run.settle_until(&mut mock, e.at);
        }
        if let Some((approve, d)) = &e.decide {
            run.decide(&mut mock, e, *approve, d);
            continue;
        }
        calls += 1;
        let agent = &scenario.agents[&e.agent];
        let session_id = agent.session.clone().unwrap_or_else(|| e.agent.clone());
        let core = run.sessions.entry(e.agent.clone()).or_insert_with(|| {
            let mut core = gateway.session(&agent.grant, &session_id);
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": e.agent, "version": "scenario"}}});
            pump(&mut core, &mut mock, &session_id, init, e.at);
            pump(&mut core, &mut mock, &session_id, json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), e.at);
            core
        });
        let held_before = core.held_approvals();
        let answers = match &e.raw {
            Some(raw) => pump_bytes(core, &mut mock, &session_id, raw.as_bytes(), e.at),
            None => {
                let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": e.tool, "arguments": e.args}});
                pump(core, &mut mock, &session_id, msg, e.at)
            }
        };
        let newly_held = core
            .held_approvals()
            .into_iter()
            .find(|a| !held_before.contains(a));
        if let Some(approval) = newly_held {
            // Held for a human: the answer comes when it is decided, or at its deadline.
            run.transcript.push_str(&format!(
                "+{:>10.3}s grant={} session={} {} -> held (approval {approval})\n",
                e.at.as_secs_f64(),
                agent.grant,
                session_id,
                e.tool
            ));
            run.held.insert(
                id,
                Waiting {
                    step: e.step,
                    agent: e.agent.clone(),
                    tool: e.tool.clone(),
                    approval,
                },
            );
            continue;
        }
        // A raw message carries its own id (or none that parses): take the last answer.
        let answer = match &e.raw {
            Some(_) => answers.last().cloned().unwrap_or(Value::Null),
            None => answers
                .into_iter()
                .find(|a| a["id"] == id)
                .unwrap_or(Value::Null),
        };
        run.report(e.at, e.step, &e.agent, &e.tool, &answer, None);
    }
    if approvers {
        // Every call still held ends at its deadline.
        run.settle_until(&mut mock, Duration::MAX);
    }
    let Run {
        mut transcript,
        totals,
        mut failures,
        held,
        ..
    } = run;
    for w in held.values() {
        failures.push(format!(
            "step {}: `{}` (approval {}) was never answered",
            w.step + 1,
            w.tool,
            w.approval
        ));
    }
    let events_len = calls;
    let mut journal: BTreeMap<String, u64> = BTreeMap::new();
    for entry in mock.journal() {
        if let Some(tool) = &entry.tool {
            *journal.entry(tool.clone()).or_default() += 1;
        }
    }
    transcript.push_str("\ntotals:\n");
    for (k, v) in &totals {
        transcript.push_str(&format!("  {k:<18} {v}\n"));
    }
    transcript.push_str("journal (calls that reached the upstream):\n");
    if journal.is_empty() {
        transcript.push_str("  (none)\n");
    }
    for (k, v) in &journal {
        transcript.push_str(&format!("  {k:<24} {v}\n"));
    }
    if let Some(expect) = &scenario.expect {
        for (k, want) in &expect.totals {
            let got = totals.get(k).copied().unwrap_or(0);
            if got != *want {
                failures.push(format!("expected {want} calls decided {k}, got {got}"));
            }
        }
        for (k, want) in &expect.journal {
            let got = journal.get(k).copied().unwrap_or(0);
            if got != *want {
                failures.push(format!(
                    "expected {want} calls of {k} to reach the upstream, got {got}"
                ));
            }
        }
    }
    Outcome {
        transcript,
        failures,
        calls: events_len,
    }
}

/// A call held for approval, waiting for its answer.
struct Waiting {
    step: usize,
    agent: String,
    tool: String,
    approval: u64,
}

/// The state of a run: sessions, held calls, the transcript and the counts so far.
struct Run<'a> {
    scenario: &'a Scenario,
    gateway: &'a Arc<Gateway>,
    sessions: BTreeMap<String, SessionCore>,
    /// Held calls by request id.
    held: BTreeMap<u64, Waiting>,
    transcript: String,
    totals: BTreeMap<String, u64>,
    failures: Vec<String>,
}

impl Run<'_> {
    fn session_id(&self, agent: &str) -> String {
        self.scenario.agents[agent]
            .session
            .clone()
            .unwrap_or_else(|| agent.to_owned())
    }

    /// Lets virtual time run to `until`: every session is ticked at each deadline (a held
    /// call's expiry, exactly) before `until`, in time order, and its answers are reported.
    fn settle_until(&mut self, mock: &mut MockEks, until: Duration) {
        // Bounded: each tick ends at least one deadline.
        for _ in 0..100_000 {
            let next = self
                .sessions
                .iter()
                .filter_map(|(agent, core)| core.next_deadline().map(|d| (d, agent.clone())))
                .filter(|(d, _)| *d <= until)
                .min();
            let Some((at, agent)) = next else {
                return;
            };
            self.tick(mock, &agent, at);
        }
    }

    fn tick(&mut self, mock: &mut MockEks, agent: &str, at: Duration) {
        let session = self.session_id(agent);
        let Some(core) = self.sessions.get_mut(agent) else {
            return;
        };
        let outs = core.tick(at);
        let answers = drain(core, mock, &session, outs, at);
        for answer in answers {
            let Some(id) = answer["id"].as_u64() else {
                continue;
            };
            if let Some(w) = self.held.remove(&id) {
                let verdict = self
                    .gateway
                    .list_approvals(at)
                    .1
                    .into_iter()
                    .find(|d| d.approval.id == w.approval)
                    .map(|d| {
                        if d.verdict.approver.is_none() {
                            let then = match d.approval.on_timeout {
                                tollgate_policy::TimeoutOutcome::Allow => "allow",
                                tollgate_policy::TimeoutOutcome::Deny => "deny",
                            };
                            return format!(
                                "approval {} {}, on timeout: {then}",
                                w.approval,
                                d.verdict.verdict.name()
                            );
                        }
                        let who = d.verdict.approver.as_deref().unwrap_or_default();
                        let why = d
                            .verdict
                            .reason
                            .as_deref()
                            .filter(|_| d.verdict.approver.is_some())
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default();
                        format!(
                            "approval {} {} by {who}{why}",
                            w.approval,
                            d.verdict.verdict.name()
                        )
                    });
                self.report(at, w.step, &w.agent, &w.tool, &answer, verdict);
            }
        }
    }

    /// An `approve` or `deny` step: finds the held call and decides it, then lets the session
    /// holding it act.
    fn decide(&mut self, mock: &mut MockEks, e: &Event, approve: bool, d: &format::Decide) {
        let (pending, _) = self.gateway.list_approvals(e.at);
        let found = pending.iter().find(|p| match (&d.tool, d.held) {
            (Some(tool), _) => &p.tool == tool,
            (None, Some(n)) => p.id == n,
            (None, None) => false,
        });
        let what = d.tool.as_ref().map_or_else(
            || format!("held call {}", d.held.unwrap_or(0)),
            |t| format!("`{t}`"),
        );
        let verb = if approve { "approve" } else { "deny" };
        let Some(p) = found else {
            self.transcript.push_str(&format!(
                "+{:>10.3}s {verb} {what} by {}: nothing pending matches\n",
                e.at.as_secs_f64(),
                d.by
            ));
            self.failures.push(format!(
                "step {} at {:.3}s: no pending approval matches {what}",
                e.step + 1,
                e.at.as_secs_f64()
            ));
            return;
        };
        let (id, session) = (p.id, p.session.clone());
        let result = if approve {
            self.gateway.approve(id, &d.by, d.reason.as_deref(), e.at)
        } else {
            self.gateway.deny(id, &d.by, d.reason.as_deref(), e.at)
        };
        let why = d
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        match result {
            Ok(_) => self.transcript.push_str(&format!(
                "+{:>10.3}s {verb} approval {id} ({}) by {}{why}\n",
                e.at.as_secs_f64(),
                p.tool,
                d.by
            )),
            Err(err) => {
                self.transcript.push_str(&format!(
                    "+{:>10.3}s {verb} approval {id} by {}: {err}\n",
                    e.at.as_secs_f64(),
                    d.by
                ));
                self.failures.push(format!("step {}: {err}", e.step + 1));
            }
        }
        let agent = self
            .scenario
            .agents
            .keys()
            .find(|a| self.session_id(a) == session)
            .cloned();
        if let Some(agent) = agent {
            self.tick(mock, &agent, e.at);
        }
    }

    /// One call's outcome: its transcript line, its count, its step's expectations.
    fn report(
        &mut self,
        at: Duration,
        step: usize,
        agent_name: &str,
        tool: &str,
        answer: &Value,
        approval: Option<String>,
    ) {
        let agent = &self.scenario.agents[agent_name];
        let session_id = self.session_id(agent_name);
        let (decision, mut detail, message) = describe(answer);
        if let Some(a) = approval {
            detail = if detail.is_empty() {
                a
            } else {
                format!("{a}; {detail}")
            };
        }
        *self.totals.entry(decision.clone()).or_default() += 1;
        self.transcript.push_str(&format!(
            "+{:>10.3}s grant={} session={} {} -> {decision}{}\n",
            at.as_secs_f64(),
            agent.grant,
            session_id,
            tool,
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        ));
        if let Some(m) = &message {
            self.transcript.push_str(&format!("    {m}\n"));
        }
        if let Some(x) = &self.scenario.steps[step].expect {
            if let Some(want) = &x.decision
                && want != &decision
            {
                self.failures.push(format!(
                    "step {} at {:.3}s: `{tool}` was {decision}, expected {want}",
                    step + 1,
                    at.as_secs_f64(),
                ));
            }
            if let Some(want) = &x.message_contains
                && !message
                    .as_deref()
                    .unwrap_or_default()
                    .contains(want.as_str())
            {
                self.failures.push(format!(
                    "step {} at {:.3}s: the message of `{tool}` does not contain {want:?}",
                    step + 1,
                    at.as_secs_f64(),
                ));
            }
        }
    }
}

/// Sends one client message and pumps until quiet; returns what reached the client.
fn pump(
    core: &mut SessionCore,
    mock: &mut MockEks,
    session: &str,
    msg: Value,
    now: Duration,
) -> Vec<Value> {
    // Values, not text, between the runner, the core and the mock: each hop skips the text
    // exactly when it would parse back to the same value, so the transcript is the same.
    let outs = core.from_client_value(msg, now);
    drain(core, mock, session, outs, now)
}

fn pump_bytes(
    core: &mut SessionCore,
    mock: &mut MockEks,
    session: &str,
    bytes: &[u8],
    now: Duration,
) -> Vec<Value> {
    let outs = core.from_client(bytes, now);
    drain(core, mock, session, outs, now)
}

/// Delivers what a session core produced, and the mock's answers, until quiet; returns what
/// reached the client.
fn drain(
    core: &mut SessionCore,
    mock: &mut MockEks,
    session: &str,
    mut outs: Vec<Out>,
    now: Duration,
) -> Vec<Value> {
    let mut to_client = Vec::new();
    // Bounded: a session core and a mock never ping-pong more than a handful of times per
    // message (tool listing pages, then the call).
    for _ in 0..10_000 {
        if outs.is_empty() {
            break;
        }
        match outs.remove(0) {
            Out::Client(v) => to_client.push(v),
            Out::Upstream(v) => {
                let h = mock.handle_value(session, v, now);
                if let Some(r) = h.response {
                    outs.extend(core.from_upstream_value(r, now));
                }
            }
        }
    }
    to_client
}

/// The decision, a short detail and the refusal message of a client answer.
pub fn describe(answer: &Value) -> (String, String, Option<String>) {
    if let Some(err) = answer.get("error") {
        return (
            "error".into(),
            err["message"].as_str().unwrap_or_default().to_owned(),
            None,
        );
    }
    let result = &answer["result"];
    let Some(t) = result
        .get("structuredContent")
        .and_then(|s| s.get("tollgate"))
    else {
        let text = result["content"][0]["text"].as_str().unwrap_or_default();
        let first = text.lines().next().unwrap_or_default();
        let detail = if result["isError"] == true {
            format!("upstream isError: {first}")
        } else {
            format!("upstream: {first}")
        };
        return ("allow".into(), detail, None);
    };
    let decision = t["decision"].as_str().unwrap_or("?").to_owned();
    let mut detail = Vec::new();
    for l in t["limits"].as_array().into_iter().flatten() {
        if l["used"].as_u64() >= l["max"].as_u64() {
            detail.push(format!(
                "{} {}/{}",
                l["counter"].as_str().unwrap_or_default(),
                l["used"],
                l["max"]
            ));
        }
    }
    if let Some(r) = t["retry_after_seconds"].as_f64() {
        detail.push(format!(
            "retry in {}",
            tollgate_policy::engine::duration_text(Duration::from_secs_f64(r))
        ));
    }
    if detail.is_empty()
        && let Some(rule) = t["rule"]["selector"].as_str()
    {
        detail.push(format!("rule {rule}"));
    }
    let message = result["content"][0]["text"].as_str().map(str::to_owned);
    (decision, detail.join(", "), message)
}
