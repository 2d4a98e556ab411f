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
        match (&step.call, &step.advance) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "step {}: a step is a `call` or an `advance`, not both",
                    i + 1
                )));
            }
            (None, None) => {
                return Err(bad(format!(
                    "step {}: give `call: TOOL` or `advance: DURATION`",
                    i + 1
                )));
            }
            (Some(_), None) => {
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
            (None, Some(_)) => {}
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
}

/// Runs a loaded scenario in virtual time.
pub fn run(loaded: Loaded) -> Outcome {
    let Loaded {
        scenario, policy, ..
    } = loaded;
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    let gateway = Gateway::new(engine, None, GatewayOptions::default());
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
    // Expand the steps into timed calls.
    let mut events = Vec::new();
    let mut cursor = Duration::ZERO;
    for (i, step) in scenario.steps.iter().enumerate() {
        if let Some(d) = step.advance {
            cursor += d;
            continue;
        }
        let start = step.at.unwrap_or(cursor);
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
            });
            cursor = cursor.max(at);
        }
    }
    // Stable: calls at the same instant keep the order of the file.
    events.sort_by_key(|e| e.at);

    let mut sessions: BTreeMap<String, SessionCore> = BTreeMap::new();
    let mut transcript = format!("scenario: {}\n", scenario.name);
    if let Some(d) = &scenario.description {
        transcript.push_str(&format!("  {}\n", d.trim()));
    }
    transcript.push('\n');
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    for (id, e) in (1u64..).zip(events.iter()) {
        let agent = &scenario.agents[&e.agent];
        let session_id = agent.session.clone().unwrap_or_else(|| e.agent.clone());
        let core = sessions.entry(e.agent.clone()).or_insert_with(|| {
            let mut core = gateway.session(&agent.grant, &session_id);
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": e.agent, "version": "scenario"}}});
            pump(&mut core, &mut mock, &session_id, init, e.at);
            pump(&mut core, &mut mock, &session_id, json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), e.at);
            core
        });
        let answers = match &e.raw {
            Some(raw) => pump_bytes(core, &mut mock, &session_id, raw.as_bytes(), e.at),
            None => {
                let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": e.tool, "arguments": e.args}});
                pump(core, &mut mock, &session_id, msg, e.at)
            }
        };
        // A raw message carries its own id (or none that parses): take the last answer.
        let answer = match &e.raw {
            Some(_) => answers.last().cloned().unwrap_or(Value::Null),
            None => answers
                .into_iter()
                .find(|a| a["id"] == id)
                .unwrap_or(Value::Null),
        };
        let (decision, detail, message) = describe(&answer);
        *totals.entry(decision.clone()).or_default() += 1;
        transcript.push_str(&format!(
            "+{:>10.3}s grant={} session={} {} -> {decision}{}\n",
            e.at.as_secs_f64(),
            agent.grant,
            session_id,
            e.tool,
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        ));
        if let Some(m) = &message {
            transcript.push_str(&format!("    {m}\n"));
        }
        if let Some(x) = &scenario.steps[e.step].expect {
            if let Some(want) = &x.decision
                && want != &decision
            {
                failures.push(format!(
                    "step {} at {:.3}s: `{}` was {decision}, expected {want}",
                    e.step + 1,
                    e.at.as_secs_f64(),
                    e.tool
                ));
            }
            if let Some(want) = &x.message_contains
                && !message
                    .as_deref()
                    .unwrap_or_default()
                    .contains(want.as_str())
            {
                failures.push(format!(
                    "step {} at {:.3}s: the message of `{}` does not contain {want:?}",
                    e.step + 1,
                    e.at.as_secs_f64(),
                    e.tool
                ));
            }
        }
    }
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
        calls: events.len() as u64,
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

/// Delivers what the core sent until quiet; returns what reached the client.
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
