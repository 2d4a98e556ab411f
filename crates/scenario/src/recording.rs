//! Gateway recordings (`tollgate gateway --record FILE`, docs/gateway.md): one JSON line per
//! message, `{"t_ms", "session", "grant", "dir", "message"}`. This module reads them, turns
//! them into regression scenarios (expectations = the recorded decisions), and replays them
//! under another policy to report how every decision changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

/// One `tools/call` the agent sent, with what the gateway decided then.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    pub t_ms: u64,
    pub session: String,
    pub grant: String,
    pub tool: String,
    pub arguments: Value,
    /// The upstream the call's name routed to, when the recording was made through a gateway
    /// of several upstreams (its line's `upstream`).
    pub upstream: Option<String>,
    /// The decision the agent saw (`unanswered` when the recording has no answer).
    pub decision: String,
}

/// A parsed recording.
#[derive(Debug, Default)]
pub struct Recording {
    pub calls: Vec<RecordedCall>,
    pub answers: RecordedAnswers,
}

/// What the upstream answered, to answer the same calls again (`--against recorded`).
#[derive(Debug, Default)]
pub struct RecordedAnswers {
    /// (session, tool, arguments as JSON text) → the upstream's answers, in order.
    calls: HashMap<(String, String, String), VecDeque<Value>>,
    /// The upstream's first `tools/list` result.
    tools_list: Option<Value>,
}

impl RecordedAnswers {
    /// The upstream's answer to `message` (a request the gateway forwards), its id replaced;
    /// `None` for notifications. A call the recording never forwarded (the old policy refused
    /// it) gets a tool error saying so.
    pub fn answer(&mut self, session: &str, message: &Value) -> Option<Value> {
        let id = message.get("id")?.clone();
        let method = message.get("method")?.as_str()?;
        let result = match method {
            "tools/list" => self
                .tools_list
                .clone()
                .unwrap_or_else(|| json!({"tools": []})),
            "tools/call" => {
                let params = &message["params"];
                let tool = params["name"].as_str().unwrap_or_default().to_owned();
                let key = (
                    session.to_owned(),
                    tool.clone(),
                    params["arguments"].to_string(),
                );
                match self.calls.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(answer) => {
                        let mut a = answer;
                        a["id"] = id;
                        return Some(a);
                    }
                    None => {
                        json!({"content": [{"type": "text", "text": format!("no recorded answer: the recording never forwarded this call to `{tool}`")}], "isError": true})
                    }
                }
            }
            "initialize" => {
                json!({"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}}, "serverInfo": {"name": "recording", "version": "0"}})
            }
            _ => json!({}),
        };
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }
}

fn items(message: &Value) -> Vec<&Value> {
    match message {
        Value::Array(items) => items.iter().collect(),
        m => vec![m],
    }
}

/// Reads a recording; the error names the line.
pub fn parse(path: &Path) -> Result<Recording, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read recording `{}`: {e}", path.display()))?;
    parse_text(&path.display().to_string(), &text)
}

/// Parses a recording's text; `name` names it in errors.
pub fn parse_text(name: &str, text: &str) -> Result<Recording, String> {
    let mut recording = Recording::default();
    // (session, id text) → index in `calls`.
    let mut open: HashMap<(String, String), usize> = HashMap::new();
    // (session, id text) → (tool, arguments) forwarded upstream.
    let mut forwarded: HashMap<(String, String), (String, String)> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(line)
            .map_err(|e| format!("{name}:{}: not a recording line (JSON): {e}", n + 1))?;
        let (Some(t_ms), Some(session), Some(dir)) = (
            record["t_ms"].as_u64(),
            record["session"].as_str(),
            record["dir"].as_str(),
        ) else {
            return Err(format!(
                "{name}:{}: a recording line has `t_ms`, `session`, `grant`, `dir` and `message`",
                n + 1
            ));
        };
        let grant = record["grant"].as_str().unwrap_or_default();
        for m in items(&record["message"]) {
            let id = m.get("id").map(Value::to_string);
            match dir {
                "client" if m["method"] == "tools/call" => {
                    let Some(id) = id else { continue };
                    open.insert((session.to_owned(), id), recording.calls.len());
                    recording.calls.push(RecordedCall {
                        t_ms,
                        session: session.to_owned(),
                        grant: grant.to_owned(),
                        tool: m["params"]["name"].as_str().unwrap_or_default().to_owned(),
                        arguments: m["params"]
                            .get("arguments")
                            .cloned()
                            .unwrap_or_else(|| json!({})),
                        upstream: record["upstream"].as_str().map(str::to_owned),
                        decision: "unanswered".into(),
                    });
                }
                "to_client" => {
                    let Some(id) = id else { continue };
                    if let Some(&i) = open.get(&(session.to_owned(), id))
                        && let Some(call) = recording.calls.get_mut(i)
                    {
                        call.decision = crate::describe(m).0.into_owned();
                    }
                }
                "to_upstream" if m["method"] == "tools/call" => {
                    let Some(id) = id else { continue };
                    let p = &m["params"];
                    forwarded.insert(
                        (session.to_owned(), id),
                        (
                            p["name"].as_str().unwrap_or_default().to_owned(),
                            p["arguments"].to_string(),
                        ),
                    );
                }
                "upstream" => {
                    if recording.answers.tools_list.is_none()
                        && let Some(tools) = m.get("result").filter(|r| r.get("tools").is_some())
                    {
                        recording.answers.tools_list = Some(tools.clone());
                    }
                    let Some(id) = id else { continue };
                    if let Some((tool, args)) = forwarded.remove(&(session.to_owned(), id)) {
                        recording
                            .answers
                            .calls
                            .entry((session.to_owned(), tool, args))
                            .or_default()
                            .push_back(m.clone());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(recording)
}

/// A regression scenario from a recording: one agent per session, one step per call at its
/// recorded instant, each expecting the recorded decision. `policy` is written as given.
pub fn to_scenario(recording: &Recording, name: &str, policy: &str) -> String {
    to_scenario_with_upstreams(recording, name, policy, &[])
}

/// The upstreams a recording's calls name (their lines' `upstream`), sorted: none when it was
/// made through a gateway of one upstream.
pub fn upstreams_named(recording: &Recording) -> Vec<&str> {
    let names: std::collections::BTreeSet<&str> = recording
        .calls
        .iter()
        .filter_map(|c| c.upstream.as_deref())
        .collect();
    names.into_iter().collect()
}

/// [`to_scenario`] for a gateway of several upstreams, given as (name, prefix) as its config
/// file has them (`tollgate_gateway::config::Config::upstreams`): the scenario declares them as
/// `upstreams:`, each a mock of every catalogue tool, so the calls' exposed names route (and
/// `upstream:` rules select) as they did. With fewer than two, the one-upstream form.
pub fn to_scenario_with_upstreams(
    recording: &Recording,
    name: &str,
    policy: &str,
    upstreams: &[(String, String)],
) -> String {
    let q = |s: &str| Value::String(s.to_owned()).to_string();
    let mocks = "tools: full, allow_write: true, allow_sensitive_data_access: true";
    let upstream = if upstreams.len() < 2 {
        format!("upstream: {{{mocks}}}\n")
    } else {
        let mut y = "upstreams:\n".to_owned();
        for (n, prefix) in upstreams {
            y.push_str(&format!(
                "  - {{name: {}, prefix: {}, {mocks}}}\n",
                q(n),
                q(prefix)
            ));
        }
        y
    };
    let mut y = format!(
        "name: {}\ndescription: >\n  Made by `tollgate scenario from-recording` from {}: {} calls; each step expects the\n  decision the gateway made when it was recorded.\npolicy: {}\n{upstream}agents:\n",
        q(name),
        q(name),
        recording.calls.len(),
        q(policy)
    );
    let sessions: BTreeMap<&str, &str> = recording
        .calls
        .iter()
        .map(|c| (c.session.as_str(), c.grant.as_str()))
        .collect();
    for (session, grant) in &sessions {
        y.push_str(&format!(
            "  {}: {{grant: {}, session: {}}}\n",
            q(session),
            q(grant),
            q(session)
        ));
    }
    y.push_str("steps:\n");
    if recording.calls.is_empty() {
        y.push_str("  []\n");
    }
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &recording.calls {
        *totals.entry(c.decision.as_str()).or_default() += 1;
        y.push_str(&format!(
            "  - {{at: {}ms, agent: {}, call: {}, args: {}, expect: {{decision: {}}}}}\n",
            c.t_ms,
            q(&c.session),
            q(&c.tool),
            c.arguments,
            q(&c.decision)
        ));
    }
    y.push_str("expect:\n  totals: {");
    let list: Vec<String> = totals.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    y.push_str(&list.join(", "));
    y.push_str("}\n");
    y
}

/// One call whose decision changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub t_ms: u64,
    pub session: String,
    pub grant: String,
    pub tool: String,
    /// With several upstreams: the one the call's name routes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub recorded: String,
    pub replayed: String,
}

/// The result of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub calls: usize,
    pub changed: Vec<Change>,
    /// (tool, grant, recorded → replayed) → count.
    pub summary: Vec<ChangeCount>,
}

/// How many calls of one tool and grant went from one decision to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeCount {
    pub tool: String,
    pub grant: String,
    pub recorded: String,
    pub replayed: String,
    pub calls: u64,
}

/// Where allowed calls go in a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against {
    /// Answered from the recording.
    Recorded,
    /// Sent to the in-process mock EKS server.
    MockEks,
}

/// Replays a recording under the policy at `policy` (a path) in virtual time from the
/// recorded timestamps, and compares every decision with the recorded one. `upstreams` are the
/// gateway's upstreams as (name, prefix), from its config file (empty: one upstream); a
/// recording whose calls name upstreams needs them (an error otherwise: its `upstream:` rules
/// could not select what they did).
pub fn replay(
    recording: Recording,
    policy: &Path,
    against: Against,
    upstreams: &[(String, String)],
) -> Result<Replay, String> {
    let named = upstreams_named(&recording);
    if !named.is_empty() && upstreams.len() < 2 {
        return Err(format!(
            "the recording was made through a gateway of several upstreams (its calls name {}): replay it with that gateway's config file, `--config FILE`, so the calls route and `upstream:` rules select as they did",
            named
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(missing) = named
        .iter()
        .find(|n| !upstreams.iter().any(|(u, _)| u == *n))
    {
        return Err(format!(
            "the recording's calls name the upstream `{missing}`, which the config does not declare: give the config file of the gateway that made the recording"
        ));
    }
    let policy = std::path::absolute(policy)
        .map_err(|e| format!("cannot resolve `{}`: {e}", policy.display()))?;
    let text =
        to_scenario_with_upstreams(&recording, "replay", &policy.to_string_lossy(), upstreams);
    let loaded = crate::load_text(Path::new("replay.yaml"), &text).map_err(|e| e.to_string())?;
    let Recording { calls, answers } = recording;
    let outcome = crate::run_replay(
        loaded,
        match against {
            Against::Recorded => Some(answers),
            Against::MockEks => None,
        },
    );
    let mut changed = Vec::new();
    let mut counts: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    for (c, d) in calls.iter().zip(&outcome.decisions) {
        if *c.decision != *d.decision {
            changed.push(Change {
                t_ms: c.t_ms,
                session: c.session.clone(),
                grant: c.grant.clone(),
                tool: c.tool.clone(),
                upstream: d.upstream.as_deref().map(str::to_owned),
                recorded: c.decision.clone(),
                replayed: d.decision.to_string(),
            });
            *counts
                .entry((
                    c.tool.clone(),
                    c.grant.clone(),
                    c.decision.clone(),
                    d.decision.to_string(),
                ))
                .or_default() += 1;
        }
    }
    Ok(Replay {
        calls: calls.len(),
        changed,
        summary: counts
            .into_iter()
            .map(|((tool, grant, recorded, replayed), calls)| ChangeCount {
                tool,
                grant,
                recorded,
                replayed,
                calls,
            })
            .collect(),
    })
}
