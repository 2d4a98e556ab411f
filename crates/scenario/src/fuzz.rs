//! Policy fuzzing (`tollgate fuzz`): proptest, used as a library, generates agent sessions from
//! the policy and the catalogue; each runs through the gateway's session core and the
//! in-process mock in virtual time, and a reference model checks what came out:
//!
//! - limits are strict and exact: a brute-force count of the admitted calls of every counter
//!   key over its window (no over-admission, no false refusal);
//! - nothing refused reaches the upstream (the mock's journal grows by exactly the allowed
//!   calls);
//! - `default` decides every tool no rule names;
//! - every refusal's text names the tool, the rule and the reason;
//! - argument rules, read independently of the engine: a `when` branch takes the case its
//!   argument's value names (or `otherwise`), and a call is refused `invalid_arguments`
//!   exactly when its arguments break a check of its rule, with one violation per broken
//!   argument;
//! - determinism: the same session run twice gives the same answers.
//!
//! A failing session is shrunk by proptest to a minimal one and returned as a scenario file
//! that replays it. The cases run in [`SHARDS`] shards on every core; the split depends on the
//! seed alone, so the report does too. Time is the session's own: nothing here reads a clock
//! except the optional time budget.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{Value, json};
use tollgate_gateway::core::{Gateway, GatewayOptions, Out, SessionCore, call_meta};
use tollgate_policy::{Action, Call, CounterStore, Engine, Policy};

/// How to fuzz.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    pub cases: u32,
    pub seed: u64,
    /// Stop generating new cases after this long (shrinking a failure still finishes).
    pub time_budget: Option<Duration>,
    /// The shortest session, in calls.
    pub min_calls: usize,
    /// The longest session, in calls.
    pub max_calls: usize,
    /// Threads to run the shards on; `None`: one per core. The report does not depend on it.
    pub jobs: Option<usize>,
}

impl FuzzOptions {
    /// The threads the shards run on: `jobs`, or one per core, at most one per shard.
    pub fn threads(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            })
            .clamp(1, SHARDS as usize)
    }
}

impl Default for FuzzOptions {
    fn default() -> Self {
        FuzzOptions {
            cases: 256,
            seed: 0,
            time_budget: None,
            min_calls: 1,
            max_calls: 50,
            jobs: None,
        }
    }
}

/// One generated call: indexes into the tool pool and the agents, a gap before it, and the
/// seed its arguments are drawn from.
#[derive(Debug, Clone, PartialEq)]
pub struct GenCall {
    pub tool: usize,
    pub agent: usize,
    pub gap: usize,
    pub args: u64,
    /// The same call this many times in a burst (no gap between them): how sessions reach the
    /// limits of a policy that names many tools.
    pub repeat: usize,
}

/// What a fuzzing run found.
#[derive(Debug, Default)]
pub struct FuzzReport {
    pub cases: u64,
    pub calls: u64,
    /// Decision name → calls.
    pub decisions: BTreeMap<String, u64>,
    /// The policy's selectors (and `default`) that decided at least one call.
    pub fired: BTreeSet<String>,
    /// The policy's selectors (and `default`) that never decided a call.
    pub never_fired: Vec<String>,
    pub violation: Option<Violation>,
    /// Cases not run because the time budget ran out.
    pub skipped: u64,
}

/// A broken property, with the minimal session that shows it.
#[derive(Debug)]
pub struct Violation {
    pub message: String,
    pub calls: usize,
    /// A scenario file replaying the minimal session.
    pub scenario: String,
}

/// The agents of every session: three grants with two sessions each.
const AGENTS: [(&str, &str); 6] = [
    ("ci-bot", "ci-bot-1"),
    ("ci-bot", "ci-bot-2"),
    ("analyst", "analyst-1"),
    ("analyst", "analyst-2"),
    ("ops", "ops-1"),
    ("ops", "ops-2"),
];

/// What the sessions are drawn from.
struct Pool {
    tools: Vec<String>,
    gaps: Vec<Duration>,
    /// The mock's tool set: the pool's tools that the catalogue has (near misses are not
    /// offered, so they meet the gateway's unknown-tool refusal).
    spec: String,
    /// Indexes of the tools the policy names exactly: drawn more often, so that sessions
    /// reach the policy's limits.
    focus: Vec<usize>,
    /// Tool → argument → values at the edges of the policy's own argument rules and `when`
    /// branches (for the tools it names exactly).
    edges: HashMap<String, BTreeMap<String, Vec<Value>>>,
    /// Behind several upstreams: each one's (name, prefix); empty with one.
    upstreams: Vec<(String, String)>,
}

impl Pool {
    /// A tool's own name (its upstream's prefix taken off), as the catalogue names it.
    fn own<'a>(&self, tool: &'a str) -> &'a str {
        self.upstreams
            .iter()
            .find_map(|(_, p)| tool.strip_prefix(p.as_str()))
            .unwrap_or(tool)
    }
}

/// A number as JSON: an integer when it is one (so the value path stays exact).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// The values at the edges of `rule`'s argument checks and `when` branches, added to `out` by
/// argument name: each side of every bound, enum members and a non-member, the cases' values
/// and one no case names.
fn rule_edges(rule: &tollgate_policy::model::Rule, out: &mut BTreeMap<String, Vec<Value>>) {
    for (name, check) in &rule.arguments {
        let values = out.entry(name.clone()).or_default();
        if let Some(members) = &check.one_of {
            values.extend(members.iter().cloned());
            values.push(json!("not-a-member"));
        }
        if let Some(members) = &check.not_enum {
            values.extend(members.iter().cloned());
        }
        if let Some(p) = &check.prefix {
            values.extend([json!(format!("{p}x")), json!(format!("x{p}"))]);
        }
        if let Some(min) = check.min {
            values.extend([number(min), number(min - 1.0)]);
        }
        if let Some(max) = check.max {
            values.extend([number(max), number(max + 1.0)]);
        }
        if let Some(n) = check.max_length {
            let n = n.min(10_000) as usize;
            values.extend([json!("x".repeat(n)), json!("x".repeat(n + 1))]);
        }
        if check.pattern.is_some() {
            values.extend([json!(""), json!("has spaces and ; semicolons")]);
        }
        if check.forbidden {
            values.push(json!("present"));
        }
    }
    if let Some(when) = &rule.when {
        let values = out.entry(when.argument.clone()).or_default();
        values.extend(when.cases.keys().map(|k| json!(k)));
        values.push(json!("no-such-case"));
        for case in when.cases.values().chain(when.otherwise.as_ref()) {
            rule_edges(case, out);
        }
    }
}

/// The fuzzer's own reading of argument checks (from the policy format's documentation, not
/// the engine's code): the names of the arguments `args` breaks.
fn broken_arguments(
    checks: &BTreeMap<String, tollgate_policy::model::ArgRule>,
    args: &Value,
    defaults: &serde_json::Map<String, Value>,
    out: &mut BTreeSet<String>,
) {
    for (name, check) in checks {
        let given = args.get(name).filter(|v| !v.is_null());
        // An argument left out is what the tool's schema default says (the value it acts on):
        // its value checks apply to the default; `required` asks for the argument itself, and
        // a `forbidden` one left out is fine.
        let default = defaults
            .get(name)
            .filter(|v| !v.is_null() && given.is_none() && !check.forbidden);
        let broken = match given.or(default) {
            None => check.required,
            Some(_) if given.is_none() && check.required => true,
            Some(_) if given.is_some() && check.forbidden => true,
            Some(v) => {
                let string_checks = check.pattern.is_some() || check.prefix.is_some();
                let number_checks = check.min.is_some() || check.max.is_some();
                check.one_of.as_ref().is_some_and(|m| !m.contains(v))
                    || check.not_enum.as_ref().is_some_and(|m| m.contains(v))
                    || (string_checks && !v.is_string())
                    || v.as_str().is_some_and(|text| {
                        check
                            .prefix
                            .as_ref()
                            .is_some_and(|p| !text.starts_with(p.as_str()))
                            || check
                                .pattern
                                .as_ref()
                                .is_some_and(|p| matches_pattern(p, text) == Some(false))
                    })
                    || (number_checks && !v.is_number())
                    || v.as_f64().is_some_and(|n| {
                        check.min.is_some_and(|min| n < min) || check.max.is_some_and(|max| n > max)
                    })
                    || check.max_length.is_some_and(|limit| match v {
                        Value::String(text) => text.chars().count() as u64 > limit,
                        Value::Array(items) => items.len() as u64 > limit,
                        _ => true,
                    })
            }
        };
        if broken {
            out.insert(name.clone());
        }
    }
}

/// Whether `text` matches the regular expression `pattern` (unanchored); `None` for a pattern
/// that does not compile (a policy with one does not load). Compiled once per thread.
fn matches_pattern(pattern: &str, text: &str) -> Option<bool> {
    thread_local! {
        static COMPILED: RefCell<HashMap<String, Option<regex::Regex>>> = RefCell::default();
    }
    COMPILED.with(|c| {
        let mut c = c.borrow_mut();
        if !c.contains_key(pattern) {
            c.insert(pattern.to_owned(), regex::Regex::new(pattern).ok());
        }
        c.get(pattern)?.as_ref().map(|re| re.is_match(text))
    })
}

/// A `when` case's key for an argument value: strings as they are, numbers and booleans as
/// their JSON text (the format's rule); other values name no case.
fn case_key(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        _ => None,
    }
}

/// What the argument oracle expects of a call whose rule (the one its selector picked) is
/// `rule` at `/tools/<selector>`: the pointer of the body that decides (the rule, or the case
/// its `when` argument names, or `otherwise`), and the arguments it breaks.
fn expected_arguments(
    selector: &str,
    rule: &tollgate_policy::model::Rule,
    args: &Value,
    defaults: &serde_json::Map<String, Value>,
) -> (String, BTreeSet<String>) {
    use tollgate_policy::source::escape_pointer as escape;
    let mut pointer = format!("/tools/{}", escape(selector));
    let mut broken = BTreeSet::new();
    broken_arguments(&rule.arguments, args, defaults, &mut broken);
    if let Some(when) = &rule.when {
        let key = args
            .get(&when.argument)
            .filter(|v| !v.is_null())
            .or_else(|| defaults.get(&when.argument).filter(|v| !v.is_null()))
            .and_then(case_key);
        match key.as_ref().and_then(|k| when.cases.get(k).map(|c| (k, c))) {
            Some((k, case)) => {
                pointer = format!("{pointer}/when/cases/{}", escape(k));
                broken_arguments(&case.arguments, args, defaults, &mut broken);
            }
            None => match &when.otherwise {
                Some(otherwise) => {
                    pointer = format!("{pointer}/when/otherwise");
                    broken_arguments(&otherwise.arguments, args, defaults, &mut broken);
                }
                // No case and no `otherwise`: the branch's argument is invalid.
                None => {
                    broken.insert(when.argument.clone());
                }
            },
        }
    }
    (pointer, broken)
}

fn pool(policy: &Policy) -> Pool {
    let catalog = tollgate_catalog::Catalog::embedded();
    let mut tools = BTreeSet::new();
    for selector in policy.doc.tools.keys() {
        if selector.contains(':') {
            continue;
        }
        if selector.contains(['*', '?', '[']) {
            // The edges of a pattern: tools it matches, and the pattern's text itself.
            let glob = globset::Glob::new(selector).map(|g| g.compile_matcher());
            if let Ok(m) = glob {
                for t in catalog
                    .tools()
                    .iter()
                    .filter(|t| m.is_match(&t.name))
                    .take(3)
                {
                    tools.insert(t.name.clone());
                }
            }
            tools.insert(selector.replace(['*', '?'], ""));
            continue;
        }
        tools.insert(selector.clone());
        // Near misses: case, a look-alike letter, a trailing space.
        tools.insert(selector.to_lowercase());
        tools.insert(selector.to_uppercase());
        tools.insert(selector.replacen('a', "\u{430}", 1));
        tools.insert(format!("{selector} "));
    }
    // Tools no rule names, for `default`: the real server's and a few generated ones.
    for t in catalog.tools().iter().step_by(97).take(8) {
        tools.insert(t.name.clone());
    }
    for name in ["list_k8s_resources", "manage_k8s_resource", "GetAHOBatch"] {
        tools.insert(name.to_owned());
    }
    let mut gaps = vec![
        Duration::ZERO,
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(500),
    ];
    for w in policy.windows() {
        let ms = Duration::from_millis(1);
        gaps.extend([w.saturating_sub(ms), w, w + ms, w / 10]);
    }
    let spec = tools
        .iter()
        .filter(|t| catalog.get(t).is_some())
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    let tools: Vec<String> = tools.into_iter().collect();
    let mut focus: Vec<usize> = tools
        .iter()
        .enumerate()
        .filter(|(_, t)| policy.doc.tools.contains_key(*t))
        .map(|(i, _)| i)
        .collect();
    if focus.is_empty() {
        focus = (0..tools.len()).collect();
    }
    let edges = policy
        .doc
        .tools
        .iter()
        .filter(|(selector, _)| !selector.contains(['*', '?', '[', ':']))
        .map(|(selector, rule)| {
            let mut by_argument = BTreeMap::new();
            rule_edges(rule, &mut by_argument);
            (selector.clone(), by_argument)
        })
        .filter(|(_, by_argument)| !by_argument.is_empty())
        .collect();
    Pool {
        tools,
        gaps,
        spec,
        focus,
        edges,
        upstreams: Vec::new(),
    }
}

/// The pool behind several upstreams (`upstreams`: (name, prefix)): the policy's names as it
/// writes them (exposed names, near misses and unprefixed names, which no upstream lists), and
/// the union of every upstream's exposed names of the tools drawn; each mock offers the own
/// names (`spec`).
fn pool_several(policy: &Policy, upstreams: &[(String, String)]) -> Pool {
    let mut base = pool(policy);
    base.upstreams = upstreams.to_vec();
    let catalog = tollgate_catalog::Catalog::embedded();
    let own: BTreeSet<String> = base
        .tools
        .iter()
        .map(|t| base.own(t).to_owned())
        .filter(|t| catalog.get(t).is_some())
        .collect();
    let mut tools: BTreeSet<String> = base.tools.iter().cloned().collect();
    for (_, prefix) in upstreams {
        tools.extend(own.iter().map(|t| format!("{prefix}{t}")));
    }
    base.spec = own.iter().cloned().collect::<Vec<_>>().join(",");
    base.tools = tools.into_iter().collect();
    base.focus = base
        .tools
        .iter()
        .enumerate()
        .filter(|(_, t)| policy.doc.tools.contains_key(*t))
        .map(|(i, _)| i)
        .collect();
    if base.focus.is_empty() {
        base.focus = (0..base.tools.len()).collect();
    }
    base
}

/// Arguments for `tool` drawn from `seed`: its schema's required properties (and sometimes the
/// optional ones) with boundary values, enum members and one value outside the enum; then, for
/// the arguments the policy checks, often a value at the edge of the policy's check (or none).
fn arguments(pool: &Pool, tool: &str, seed: u64) -> Value {
    let mut out = schema_arguments(pool.own(tool), seed);
    let (Some(edges), Value::Object(args)) = (pool.edges.get(tool), &mut out) else {
        return out;
    };
    let mut bits = seed.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    for (name, values) in edges {
        let pick = bits % (values.len() as u64 + 3);
        bits = bits.rotate_left(13) ^ (bits >> 7);
        match pick as usize {
            // Half the time or so, the policy's edge values; sometimes the argument is absent;
            // otherwise what the schema gave.
            k if k < values.len() => {
                args.insert(name.clone(), values[k].clone());
            }
            k if k == values.len() => {
                args.remove(name);
            }
            _ => {}
        }
    }
    out
}

/// Arguments for `tool` from its schema alone (see [`arguments`]).
fn schema_arguments(tool: &str, seed: u64) -> Value {
    let Some(t) = tollgate_catalog::Catalog::embedded().get(tool) else {
        return json!({});
    };
    let schema = &t.input_schema;
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = serde_json::Map::new();
    let mut bits = seed;
    let mut next = |n: u64| {
        let v = bits % n.max(1);
        bits = (bits / n.max(1)) ^ bits.rotate_left(17);
        v
    };
    if let Some(props) = schema["properties"].as_object() {
        for (name, p) in props {
            if !required.contains(name.as_str()) && next(3) != 0 {
                continue;
            }
            let value = if let Some(e) = p["enum"].as_array() {
                let k = next(e.len() as u64 + 1) as usize;
                e.get(k).cloned().unwrap_or_else(|| json!("not-a-member"))
            } else {
                match p["type"].as_str() {
                    Some("integer") | Some("number") => {
                        [json!(0), json!(1), json!(-1), json!(1000)][next(4) as usize].clone()
                    }
                    Some("boolean") => json!(next(2) == 0),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => [
                        json!(""),
                        json!("prod-eks"),
                        json!("kube-system"),
                        json!("rb-0001"),
                        json!("x".repeat(300)),
                    ][next(5) as usize]
                        .clone(),
                }
            };
            out.insert(name.clone(), value);
        }
    }
    Value::Object(out)
}

/// One session through the core and the mock.
struct Rig {
    gateway: Arc<Gateway>,
    mock: crate::Mocks,
    cores: Vec<SessionCore>,
}

impl Rig {
    fn new(
        policy: &Arc<Policy>,
        store: Arc<dyn CounterStore>,
        template: &crate::Mocks,
        upstreams: &Arc<Vec<tollgate_gateway::upstream::NamedUpstream>>,
    ) -> Rig {
        let engine = Engine::new(Arc::clone(policy), store);
        let options = GatewayOptions {
            upstreams: Arc::clone(upstreams),
            ..GatewayOptions::default()
        };
        let gateway = Gateway::new(engine, None, options);
        let mock = template.fresh();
        let cores = AGENTS
            .iter()
            .map(|(grant, session)| gateway.session(grant, session))
            .collect();
        let mut rig = Rig {
            gateway,
            mock,
            cores,
        };
        for i in 0..AGENTS.len() {
            rig.send(i, json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}), Duration::ZERO);
            rig.send(
                i,
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                Duration::ZERO,
            );
        }
        rig
    }

    fn send(&mut self, agent: usize, msg: Value, now: Duration) -> Vec<Value> {
        let session = AGENTS[agent].1;
        let mut outs = self.cores[agent].from_client_value(msg, now);
        let mut to_client = Vec::new();
        for _ in 0..10_000 {
            if outs.is_empty() {
                break;
            }
            match outs.remove(0) {
                Out::Client(v) => to_client.push(v),
                Out::Upstream(v) => {
                    for h in self.mock.handle_value(session, v, now) {
                        if let Some(r) = h.response {
                            outs.extend(self.cores[agent].from_upstream_value(r, now));
                        }
                    }
                }
            }
        }
        to_client
    }

    /// The `tools/call` requests the upstreams received since mark `from`: how many, and the
    /// last one's tool (by exposed name behind several upstreams).
    fn journal_calls(&self, from: usize) -> (usize, Option<&str>) {
        self.mock.calls_since(from)
    }
}

/// What one call came to, for the report.
#[derive(Debug, Default)]
struct CaseStats {
    /// Calls in the session (its bursts expanded).
    calls: usize,
    decisions: Vec<String>,
    fired: Vec<String>,
}

/// A generated call's tool index meaning "the previous call's tool" (the first call's: the
/// pool's first focus tool).
const SAME_TOOL: usize = usize::MAX;

/// One call of a session: its instant, its agent (an index into [`AGENTS`]), tool, arguments.
type TimedCall = (Duration, usize, String, Value);

/// The timed calls of a session (bursts expanded), at most `max_calls` of them.
fn timeline(pool: &Pool, session: &[GenCall], max_calls: usize) -> Vec<TimedCall> {
    let mut now = Duration::ZERO;
    let mut previous = pool.focus.first().copied().unwrap_or(0);
    let mut out = Vec::new();
    for c in session {
        now += pool.gaps[c.gap % pool.gaps.len()];
        if c.tool != SAME_TOOL {
            previous = c.tool % pool.tools.len();
        }
        let tool = &pool.tools[previous];
        let args = arguments(pool, tool, c.args);
        for _ in 0..c.repeat.max(1) {
            if out.len() == max_calls {
                return out;
            }
            out.push((now, c.agent % AGENTS.len(), tool.clone(), args.clone()));
        }
    }
    out
}

/// Runs one session's calls and checks every property; `Err` names the first broken one.
fn check_session(
    ctx: &ShardCtx<'_, impl Fn(u64) + Sync>,
    calls: &[TimedCall],
) -> Result<(CaseStats, Vec<Value>), String> {
    let policy = ctx.policy;
    let mut rig = Rig::new(policy, (ctx.store)(), ctx.template, ctx.upstreams);
    let mut stats = CaseStats::default();
    let mut answers = Vec::new();
    // The reference model: admitted instants per counter key.
    let mut admitted: HashMap<(String, String), Vec<Duration>> = HashMap::new();
    let mut allowed = 0usize;
    // The setup (initialize) sent no `tools/call`.
    let (mut received, mut journal_seen) = (0usize, rig.mock.received());
    stats.calls = calls.len();
    for (i, (now, agent, tool, args)) in calls.iter().cloned().enumerate() {
        let id = json!(i + 1);
        let (grant, session_id) = AGENTS[agent];
        let predicted = ctx.offered.get(&tool).map(|listed| {
            let mut meta = call_meta(listed, &args);
            meta.upstream = tollgate_gateway::multi::upstream_of(ctx.upstreams, &tool)
                .map(|u| Arc::from(u.name.as_str()));
            let call = Call {
                tool: Arc::from(tool.as_str()),
                arguments: args.clone().into(),
                grant: grant.into(),
                session: session_id.into(),
                meta,
            };
            rig.gateway.engine().explain(&call, now)
        });
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
        let got = rig.send(agent, msg, now);
        let answer = got
            .into_iter()
            .find(|a| a["id"] == id)
            .ok_or_else(|| format!("call {} to `{tool}` at {now:?} got no answer", i + 1))?;
        let (decision, _, message) = crate::describe(&answer);
        let detail = &answer["result"]["_meta"]["dev.tollgate/decision"];
        let at = format!(
            "call {} (`{tool}` by {grant}/{session_id} at {now:?})",
            i + 1
        );
        stats.decisions.push(decision.to_string());
        // Nothing refused reaches the upstream; everything allowed does, once.
        if decision == "allow" {
            allowed += 1;
        }
        // Counted from where the previous call left the journal, so each check is O(1).
        let (new_calls, last) = rig.journal_calls(journal_seen);
        journal_seen = rig.mock.received();
        received += new_calls;
        if received != allowed {
            return Err(format!(
                "{at}: the upstream received {received} calls but {allowed} were allowed (decision {decision})"
            ));
        }
        if decision == "allow" && (new_calls != 1 || last != Some(tool.as_str())) {
            return Err(format!(
                "{at}: allowed, but the upstream received {new_calls} calls for it (the last to {last:?})"
            ));
        }
        let Some(expl) = predicted else {
            // Not a tool the upstream offers: refused as unknown, before any policy.
            if decision != "unknown_tool" {
                return Err(format!(
                    "{at}: the upstream does not offer it, yet it was {decision}"
                ));
            }
            continue;
        };
        let selector = expl.decision.rule.selector.to_string();
        stats.fired.push(selector.clone());
        // `default` decides every tool no rule names.
        if expl.candidates.is_empty() {
            if detail.is_object() && detail["rule"]["pointer"] != "/default" {
                return Err(format!(
                    "{at}: no rule names it, yet it was decided by {}",
                    detail["rule"]["pointer"]
                ));
            }
            if policy.doc.default == Action::Deny && decision == "allow" {
                return Err(format!(
                    "{at}: no rule names it and the default is deny, yet it was allowed"
                ));
            }
        }
        // Every refusal names the tool, the rule and the reason.
        if decision != "allow" {
            let text = message.unwrap_or_default();
            let named = detail["rule"]["selector"].as_str().unwrap_or_default();
            if !text.contains(&format!("`{tool}`")) || !text.contains(named) {
                return Err(format!(
                    "{at}: the refusal does not name the tool and the rule `{named}`: {text}"
                ));
            }
            if let Some(reason) = detail["reason"].as_str()
                && !text.contains(reason)
            {
                return Err(format!(
                    "{at}: the refusal does not give the reason `{reason}`: {text}"
                ));
            }
        }
        // Argument rules, read independently: the branch taken, and refused for its arguments
        // exactly when they break a check, one violation per broken argument.
        if let Some(rule) = policy.doc.tools.get(&selector) {
            // The schema's defaults of the listed tool: what it acts on for arguments left out.
            let defaults: serde_json::Map<String, Value> = ctx
                .offered
                .get(&tool)
                .and_then(|listed| listed["inputSchema"]["properties"].as_object())
                .map(|props| {
                    props
                        .iter()
                        .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
                        .collect()
                })
                .unwrap_or_default();
            let (pointer, broken) = expected_arguments(&selector, rule, &args, &defaults);
            let decided_by = &*expl.decision.rule.pointer;
            if decided_by != pointer {
                return Err(format!(
                    "{at}: decided by `{decided_by}`, but its arguments pick `{pointer}`"
                ));
            }
            let refused_for_arguments = decision == "invalid_arguments";
            let breaks_a_check = !broken.is_empty();
            if refused_for_arguments != breaks_a_check {
                return Err(format!(
                    "{at}: {decision}, but the arguments break {} of the rule's checks ({})",
                    broken.len(),
                    broken.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            if refused_for_arguments {
                let paths: BTreeSet<&str> = detail["violations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["path"].as_str())
                    .collect();
                let named = broken
                    .iter()
                    .all(|name| paths.iter().any(|p| p.contains(name.as_str())));
                if paths.len() != broken.len() || !named {
                    return Err(format!(
                        "{at}: the refusal lists the arguments {paths:?}, but {broken:?} break the rule's checks"
                    ));
                }
            }
        }
        // Limits: strict (no over-admission) and exact (no false refusal), against a
        // brute-force count over every key the call is measured against.
        // (Limits that count upstream errors are not modelled here: the policy crate's
        // errors_limit proptest holds them; their counters are left out.)
        let limited = matches!(&*decision, "allow" | "rate_limited");
        if limited && !expl.decision.limits.is_empty() {
            let full: Vec<String> = expl
                .decision
                .limits
                .iter()
                .filter(|l| l.counts.is_calls())
                .filter(|l| {
                    let times = admitted
                        .get(&(l.counter.to_string(), l.key.to_string()))
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    times.iter().filter(|t| **t + l.window > now).count() >= l.max as usize
                })
                .map(|l| {
                    format!(
                        "`{}` for `{}` ({} per {:?})",
                        l.counter, l.key, l.max, l.window
                    )
                })
                .collect();
            match &*decision {
                "allow" if !full.is_empty() => {
                    return Err(format!(
                        "{at}: over-admission: allowed although {} already admitted its max in the window",
                        full.join(", ")
                    ));
                }
                "rate_limited" if full.is_empty() => {
                    return Err(format!(
                        "{at}: false refusal: rate limited although no counter was full"
                    ));
                }
                _ => {}
            }
            if decision == "allow" {
                for l in expl.decision.limits.iter().filter(|l| l.counts.is_calls()) {
                    admitted
                        .entry((l.counter.to_string(), l.key.to_string()))
                        .or_default()
                        .push(now);
                }
            }
        }
        answers.push(answer);
    }
    Ok((stats, answers))
}

/// A scenario file that replays `session` (the model's expectations are in the message).
fn scenario_of(policy_path: &Path, pool: &Pool, calls: &[TimedCall], message: &str) -> String {
    let description = format!(
        "Found by `tollgate fuzz` and shrunk to {} calls: {}",
        calls.len(),
        message.replace('\n', " ")
    );
    scenario_file("fuzz-violation", &description, policy_path, pool, calls)
}

/// A scenario file that runs `calls` over the pool's tools, with every agent of [`AGENTS`].
fn scenario_file(
    name: &str,
    description: &str,
    policy_path: &Path,
    pool: &Pool,
    calls: &[TimedCall],
) -> String {
    let mut out = String::new();
    out.push_str(&format!("name: {name}\n"));
    out.push_str(&format!("description: >\n  {description}\n"));
    out.push_str(&format!(
        "policy: {}\n",
        serde_json::to_string(&policy_path.display().to_string()).unwrap_or_default()
    ));
    let mock = format!(
        "tools: {}, allow_write: true, allow_sensitive_data_access: true",
        serde_json::to_string(&pool.spec).unwrap_or_default()
    );
    if pool.upstreams.len() > 1 {
        out.push_str("upstreams:\n");
        for (name, prefix) in &pool.upstreams {
            out.push_str(&format!(
                "  - {{name: {}, prefix: {}, {mock}}}\n",
                serde_json::to_string(name).unwrap_or_default(),
                serde_json::to_string(prefix).unwrap_or_default()
            ));
        }
    } else {
        out.push_str(&format!("upstream: {{{mock}}}\n"));
    }
    out.push_str("agents:\n");
    for (grant, session) in AGENTS {
        out.push_str(&format!("  {session}: {{grant: {grant}}}\n"));
    }
    out.push_str("steps:\n");
    for (now, agent, tool, args) in calls {
        out.push_str(&format!(
            "  - {{at: {}ms, agent: {}, call: {}, args: {}}}\n",
            now.as_millis(),
            AGENTS[*agent].1,
            serde_json::to_string(&tool).unwrap_or_default(),
            args
        ));
    }
    out
}

/// The gaps between the calls of a live-safe session: none (a burst), or far from each other
/// on the scale of a live run.
const LIVE_GAPS: [Duration; 5] = [
    Duration::ZERO,
    Duration::ZERO,
    Duration::from_secs(2),
    Duration::from_secs(13),
    Duration::from_secs(41),
];

/// What [`live_scenarios`] draws.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub seed: u64,
    /// How many scenario files.
    pub count: usize,
    /// The most calls in one scenario (bursts expanded).
    pub max_calls: usize,
    /// The most calls in one burst (a live run sends them one after the other, so a burst
    /// spreads over real time).
    pub max_burst: usize,
    /// How close, in scenario time, two calls may come to being one window of the policy
    /// apart (or the first call to being one window from the scenario's start).
    pub margin: Duration,
    /// The longest scenario, in scenario time.
    pub max_span: Duration,
}

/// One generated scenario file.
#[derive(Debug, Clone)]
pub struct GeneratedScenario {
    /// `generated-<seed>-<i>`: also the file's stem.
    pub name: String,
    pub text: String,
}

/// Scenario files for the live differential (issue 19; tests/scenarios.rs runs them in virtual
/// time and `--live` and compares every decision). The sessions come from the fuzzer's own
/// generator over `policy` (its tool pool with near-miss names and tools no rule names,
/// argument values at the edges of the policy's checks and branches, bursts, six agents of
/// three grants), seeded from `options.seed` alone, with gaps from [`LIVE_GAPS`] instead of
/// the window edges the fuzzer aims at. A session is kept only when it is live-safe: no two of
/// its instants are within `margin` of one window of the policy apart (a live run sends a
/// burst one call after the other, so a call due near a window's edge could land on either
/// side of it), and it spans at most `max_span`. Drawing is bounded (50 draws per file):
/// fewer than `count` files come back only for a policy whose windows leave no room.
pub fn live_scenarios(
    policy_path: &Path,
    policy: &Policy,
    options: &LiveOptions,
) -> Vec<GeneratedScenario> {
    let mut pool = pool(policy);
    pool.gaps = LIVE_GAPS.to_vec();
    let windows = policy.windows();
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&options.seed.to_le_bytes());
    seed[8..16].copy_from_slice(b"live-gen");
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let strategy = sessions(&pool, 1, options.max_calls, options.max_burst);
    let mut out = Vec::new();
    for _ in 0..options.count.saturating_mul(50) {
        if out.len() == options.count {
            break;
        }
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            break;
        };
        let calls = timeline(&pool, &tree.current(), options.max_calls);
        if !live_safe(&calls, &windows, options) {
            continue;
        }
        let name = format!("generated-{}-{}", options.seed, out.len());
        let description = format!(
            "Drawn by the scenario fuzzer's generator from seed {} (live-safe: no two calls near one window apart), for the live differential test",
            options.seed
        );
        let text = scenario_file(&name, &description, policy_path, &pool, &calls);
        out.push(GeneratedScenario { name, text });
    }
    out
}

/// Whether a live run decides `calls` as virtual time does, whatever the real time a burst
/// takes: every instant (and the start) at least `margin` away from being one window apart.
fn live_safe(calls: &[TimedCall], windows: &[Duration], options: &LiveOptions) -> bool {
    let Some((last, ..)) = calls.last() else {
        return false;
    };
    if *last > options.max_span {
        return false;
    }
    let instants: BTreeSet<Duration> = std::iter::once(Duration::ZERO)
        .chain(calls.iter().map(|(at, ..)| *at))
        .collect();
    instants.iter().all(|a| {
        instants.range(a..).all(|b| {
            windows
                .iter()
                .all(|w| (*b - *a).abs_diff(*w) >= options.margin)
        })
    })
}

/// How many runners a fuzzing run is split into, whatever the number of cores: shard `k`
/// generates its share of the cases from its own seed (the run's seed and `k`), so the sessions,
/// the report and the violation found depend on the seed alone, not on how many threads ran them.
pub const SHARDS: u32 = 16;

/// What one shard found.
#[derive(Debug, Default)]
struct ShardReport {
    cases: u64,
    calls: u64,
    skipped: u64,
    decisions: BTreeMap<String, u64>,
    fired: BTreeSet<String>,
    violation: Option<(String, Vec<GenCall>)>,
}

/// Fuzzes `policy` (loaded from `policy_path`) with counter stores made by `store`, on every
/// core; `progress` is called with the number of sessions done so far.
pub fn fuzz(
    policy_path: &Path,
    policy: Arc<Policy>,
    store: &(dyn Fn() -> Arc<dyn CounterStore> + Sync),
    options: &FuzzOptions,
    progress: impl Fn(u64) + Sync,
) -> FuzzReport {
    fuzz_several(policy_path, policy, store, options, &[], progress)
}

/// [`fuzz`] behind the gateway's upstreams, given as (name, prefix) as a config file of several
/// has them (`tollgate fuzz --config`; fewer than two: one upstream). Each upstream is a mock
/// of the tools drawn; the sessions draw names from the union of their exposed names (and the
/// policy's own, prefixed or not), go through a model of the router
/// (`crates/scenario/src/mocks.rs`), and are checked against the same model, `upstream:`
/// rules included; what reached the upstreams is checked by exposed name.
pub fn fuzz_several(
    policy_path: &Path,
    policy: Arc<Policy>,
    store: &(dyn Fn() -> Arc<dyn CounterStore> + Sync),
    options: &FuzzOptions,
    upstreams: &[(String, String)],
    progress: impl Fn(u64) + Sync,
) -> FuzzReport {
    let several = upstreams.len() > 1;
    let pool = if several {
        pool_several(&policy, upstreams)
    } else {
        pool(&policy)
    };
    let mut report = FuzzReport::default();
    let mock = crate::format::Upstream {
        tools: crate::format::ToolSelection::Spec(pool.spec.clone()),
        allow_write: true,
        allow_sensitive_data_access: true,
        page_size: None,
        faults: None,
    };
    let specs: Vec<crate::format::MockSpec> = if several {
        upstreams
            .iter()
            .map(|(name, prefix)| crate::format::MockSpec {
                name: name.clone(),
                prefix: prefix.clone(),
                down: false,
                upstream: mock.clone(),
            })
            .collect()
    } else {
        vec![crate::format::MockSpec {
            name: crate::format::SINGLE_UPSTREAM.to_owned(),
            prefix: String::new(),
            down: false,
            upstream: mock,
        }]
    };
    // The mocks every session starts afresh from (their tool sets are built once).
    let template = match crate::Mocks::with_journals(&specs) {
        Ok(m) => m,
        Err(e) => {
            report.violation = Some(Violation {
                message: format!("the mock cannot offer the generated tool set: {e}"),
                calls: 0,
                scenario: String::new(),
            });
            return report;
        }
    };
    let offered = template.offered();
    let named = Arc::new(if several {
        crate::named_mocks(&specs)
    } else {
        Vec::new()
    });
    let started = Instant::now();
    let done = AtomicU64::new(0);
    // Shards above the lowest one that failed stop early; the ones below it run to the end,
    // so the violation reported is always the lowest shard's.
    let lowest_failed = AtomicU32::new(u32::MAX);
    let next_shard = AtomicU32::new(0);
    let shards: Vec<Mutex<Option<ShardReport>>> = (0..SHARDS).map(|_| Mutex::new(None)).collect();
    let workers = options.threads();
    let shard_ctx = ShardCtx {
        policy: &policy,
        store,
        pool: &pool,
        template: &template,
        upstreams: &named,
        offered: &offered,
        options,
        started,
        done: &done,
        lowest_failed: &lowest_failed,
        progress: &progress,
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let k = next_shard.fetch_add(1, Ordering::Relaxed);
                    if k >= SHARDS {
                        break;
                    }
                    let r = run_shard(&shard_ctx, k);
                    if r.violation.is_some() {
                        lowest_failed.fetch_min(k, Ordering::Relaxed);
                    }
                    if let Ok(mut slot) = shards[k as usize].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    for slot in shards {
        let Some(r) = slot.into_inner().ok().flatten() else {
            continue;
        };
        report.cases += r.cases;
        report.calls += r.calls;
        report.skipped += r.skipped;
        for (d, n) in r.decisions {
            *report.decisions.entry(d).or_default() += n;
        }
        report.fired.extend(r.fired);
        if report.violation.is_none()
            && let Some((message, minimal)) = r.violation
        {
            let calls = timeline(&pool, &minimal, options.max_calls);
            report.violation = Some(Violation {
                calls: calls.len(),
                scenario: scenario_of(policy_path, &pool, &calls, &message),
                message,
            });
        }
    }
    let mut selectors: Vec<String> = policy.doc.tools.keys().cloned().collect();
    selectors.push("default".into());
    report.never_fired = selectors
        .into_iter()
        .filter(|s| !report.fired.contains(s))
        .collect();
    report
}

/// The generator of sessions over `pool`: `min_calls..=max_calls` generated calls, bursts of
/// up to `max_burst` calls.
fn sessions(
    pool: &Pool,
    min_calls: usize,
    max_calls: usize,
    max_burst: usize,
) -> impl Strategy<Value = Vec<GenCall>> + use<> {
    let (tools, agents, gaps) = (pool.tools.len(), AGENTS.len(), pool.gaps.len());
    // Biased towards what finds bugs: the tools the policy names, one busy agent, bursts.
    let focus = pool.focus.clone();
    // `SAME_TOOL` repeats the previous call's tool: runs of one tool reach its limits even
    // when the policy names many tools.
    let tool = prop_oneof![
        3 => (0..focus.len()).prop_map(move |i| focus[i]),
        2 => 0..tools,
        3 => Just(SAME_TOOL),
    ];
    let agent = prop_oneof![2 => Just(0usize), 1 => 0..agents];
    let repeat = prop_oneof![8 => Just(1usize), 1 => 2..=max_burst.max(2)];
    let gap = prop_oneof![2 => 0..2usize, 1 => 0..gaps];
    prop::collection::vec(
        (tool, agent, gap, any::<u64>(), repeat).prop_map(|(tool, agent, gap, args, repeat)| {
            GenCall {
                tool,
                agent,
                gap,
                args,
                repeat,
            }
        }),
        {
            let max = max_calls.max(1);
            min_calls.clamp(1, max)..=max
        },
    )
}

/// What every shard shares.
struct ShardCtx<'a, P: Fn(u64) + Sync> {
    policy: &'a Arc<Policy>,
    store: &'a (dyn Fn() -> Arc<dyn CounterStore> + Sync),
    pool: &'a Pool,
    template: &'a crate::Mocks,
    /// The upstreams the gateway is told of (several only).
    upstreams: &'a Arc<Vec<tollgate_gateway::upstream::NamedUpstream>>,
    /// The mock's tools as its `tools/list` gives them, by name (what the gateway knows of a
    /// tool it decides; taken from the mock itself, since the client's listing may hide some).
    offered: &'a HashMap<String, Value>,
    options: &'a FuzzOptions,
    started: Instant,
    done: &'a AtomicU64,
    lowest_failed: &'a AtomicU32,
    progress: &'a P,
}

/// The cases of shard `k` out of `cases`: an even share, the first shards taking the rest.
fn shard_cases(cases: u32, k: u32) -> u32 {
    cases / SHARDS + u32::from(k < cases % SHARDS)
}

/// Runs shard `k`: its cases through proptest's runner, seeded from the run's seed and `k`.
fn run_shard<P: Fn(u64) + Sync>(ctx: &ShardCtx<'_, P>, k: u32) -> ShardReport {
    let cases = shard_cases(ctx.options.cases, k);
    let mut report = ShardReport::default();
    if cases == 0 {
        return report;
    }
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&ctx.options.seed.to_le_bytes());
    seed[8..12].copy_from_slice(&k.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let pool = ctx.pool;
    let strategy = sessions(pool, ctx.options.min_calls, ctx.options.max_calls, 24);
    let report_cell = RefCell::new(&mut report);
    let shrinking = RefCell::new(false);
    let result = runner.run(&strategy, |session| {
        let counting = !*shrinking.borrow();
        let out_of_time = ctx
            .options
            .time_budget
            .is_some_and(|budget| ctx.started.elapsed() > budget);
        if counting && ctx.lowest_failed.load(Ordering::Relaxed) < k {
            // A shard before this one found a violation: that is the one reported.
            return Ok(());
        }
        if counting && out_of_time {
            report_cell.borrow_mut().skipped += 1;
            return Ok(());
        }
        // The calls are drawn once; both runs take the same ones.
        let calls = timeline(pool, &session, ctx.options.max_calls);
        let run = || check_session(ctx, &calls);
        let outcome = match run() {
            // Determinism: the same session again gives the same answers.
            Ok((stats, answers)) => match run() {
                Ok((_, again)) if again == answers => Ok(stats),
                Ok(_) => Err("the same session gave different answers the second time".to_owned()),
                Err(e) => Err(format!("the second run of the same session: {e}")),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(stats) => {
                if counting {
                    let mut r = report_cell.borrow_mut();
                    r.cases += 1;
                    r.calls += stats.calls as u64;
                    for d in stats.decisions {
                        *r.decisions.entry(d).or_default() += 1;
                    }
                    r.fired.extend(stats.fired);
                    (ctx.progress)(ctx.done.fetch_add(1, Ordering::Relaxed) + 1);
                }
                Ok(())
            }
            Err(e) => {
                *shrinking.borrow_mut() = true;
                Err(TestCaseError::fail(e))
            }
        }
    });
    if let Err(TestError::Fail(reason, minimal)) = result {
        report.violation = Some((reason.message().to_owned(), minimal));
    }
    report
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    fn rule(text: &str) -> tollgate_policy::model::Rule {
        serde_json::from_str(text).unwrap()
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    /// The argument oracle reads each check as the policy format documents it: `enum`,
    /// `not_enum`, `required` (absent or null), `forbidden`, `prefix` and `pattern` (strings
    /// only, the pattern unanchored), `min`/`max` (numbers only), `max_length` (characters of a
    /// string, elements of an array).
    #[test]
    fn oracle_reads_each_argument_check_as_documented() {
        let r = rule(
            r#"{"arguments": {
                "op": {"enum": ["read", "list"]},
                "ns": {"not_enum": ["kube-system"], "required": true},
                "secret": {"forbidden": true},
                "name": {"prefix": "app-", "pattern": "[0-9]$", "max_length": 8},
                "replicas": {"min": 1, "max": 5}
            }}"#,
        );
        let broken = |args: Value| expected_arguments("t", &r, &args, &serde_json::Map::new()).1;
        assert_eq!(names(&broken(json!({"ns": "shop"}))), Vec::<&str>::new());
        assert_eq!(names(&broken(json!({"ns": null}))), ["ns"]);
        assert_eq!(names(&broken(json!({}))), ["ns"]);
        assert_eq!(
            names(&broken(
                json!({"ns": "kube-system", "op": "delete", "secret": "x"})
            )),
            ["ns", "op", "secret"]
        );
        assert_eq!(
            names(&broken(json!({"ns": "a", "name": "app-1"}))),
            Vec::<&str>::new()
        );
        assert_eq!(
            names(&broken(json!({"ns": "a", "name": "web-1"}))),
            ["name"]
        );
        assert_eq!(
            names(&broken(json!({"ns": "a", "name": "app-x"}))),
            ["name"]
        );
        assert_eq!(
            names(&broken(json!({"ns": "a", "name": "app-12345"}))),
            ["name"]
        );
        assert_eq!(names(&broken(json!({"ns": "a", "name": 7}))), ["name"]);
        assert_eq!(
            names(&broken(json!({"ns": "a", "replicas": 5}))),
            Vec::<&str>::new()
        );
        assert_eq!(
            names(&broken(json!({"ns": "a", "replicas": 6}))),
            ["replicas"]
        );
        assert_eq!(
            names(&broken(json!({"ns": "a", "replicas": "3"}))),
            ["replicas"]
        );
    }

    /// A `when` branch takes the case its argument's value names (numbers and booleans by their
    /// JSON text), else `otherwise`; without `otherwise`, a value no case names (or none at
    /// all) breaks the branch's argument. The case's own checks add to the rule's.
    #[test]
    fn oracle_picks_the_when_case_the_value_names() {
        let r = rule(
            r#"{"arguments": {"cluster": {"required": true}},
                "when": {"argument": "operation", "cases": {
                    "read": {},
                    "delete": {"action": "deny", "arguments": {"force": {"forbidden": true}}},
                    "3": {}
                }}}"#,
        );
        let pick = |args: Value| expected_arguments("manage/x", &r, &args, &serde_json::Map::new());
        let (p, b) = pick(json!({"cluster": "c", "operation": "read"}));
        assert_eq!(
            (p.as_str(), names(&b)),
            ("/tools/manage~1x/when/cases/read", vec![])
        );
        let (p, b) = pick(json!({"operation": "delete", "force": true}));
        assert_eq!(
            (p.as_str(), names(&b)),
            (
                "/tools/manage~1x/when/cases/delete",
                vec!["cluster", "force"]
            )
        );
        let (p, _) = pick(json!({"cluster": "c", "operation": 3}));
        assert_eq!(p, "/tools/manage~1x/when/cases/3");
        let (p, b) = pick(json!({"cluster": "c", "operation": "scale"}));
        assert_eq!(
            (p.as_str(), names(&b)),
            ("/tools/manage~1x", vec!["operation"])
        );
        let (_, b) = pick(json!({"cluster": "c"}));
        assert_eq!(names(&b), ["operation"]);
        let with_otherwise = rule(
            r#"{"when": {"argument": "operation", "cases": {"read": {}},
                         "otherwise": {"arguments": {"why": {"required": true}}}}}"#,
        );
        let (p, b) = expected_arguments(
            "t",
            &with_otherwise,
            &json!({"operation": "scale"}),
            &serde_json::Map::new(),
        );
        assert_eq!(
            (p.as_str(), names(&b)),
            ("/tools/t/when/otherwise", vec!["why"])
        );
    }
}
