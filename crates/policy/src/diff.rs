//! `tollgate diff`: what a policy change does to every call it can affect, without traffic.
//!
//! A decision depends on the tool (its name, class and annotations), on the values of the
//! arguments the selected rule checks or branches on, and on counters. The grant and the
//! session only key counters: no rule selects by them, so one grant stands for all. For each
//! tool given (the catalogue, the tools either policy names, a name for each pattern, and a
//! tool nobody names), the probe calls are every combination of representative values of the
//! arguments that either policy's rules for that tool read: absent; every value the rules name
//! (`enum`, `not_enum`, case keys, the tool's own class-deciding values) with the other
//! spellings a lax reader takes for it (`"0"`, `0`, `false`); every numeric bound with a value
//! between and beyond each; the strings at and one past each `max_length`; a string with and
//! without each `prefix`; and one string no rule names. Every probe is decided under both
//! policies by the engine itself (`explain`: nothing is counted). A call changes when its
//! decision, its approval terms or the limits it is counted against differ.
//!
//! What this cannot see: a `pattern` (regular expression) is probed with the values named
//! elsewhere and one string outside them, not with a string built to match it; a tool with
//! more than [`MAX_PROBES_PER_TOOL`] combinations is probed one argument at a time (the report
//! says which tools).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::engine::{Call, DecisionKind, Engine, TypeMismatch, argument_signature};
use crate::limiter::{Counts, MemoryStore};
use crate::model::{ApprovalVia, TimeoutOutcome};
use crate::policy::{Policy, RuleBody, scope_name};
use crate::selector::{Selector, ToolMeta};

/// Probe calls per tool above which arguments are varied one at a time.
pub const MAX_PROBES_PER_TOOL: usize = 4096;

/// The longest `max_length` probed past (a string and an array one longer are made).
pub const MAX_LENGTH_PROBED: usize = 65_536;

/// The grant and session every probe call carries: decisions do not depend on them.
pub const PROBE_GRANT: &str = "agent";
pub const PROBE_SESSION: &str = "session-1";

/// A tool to probe: its name and the argument values its class depends on (a tool classed by
/// its `operation`, such as `manage_k8s_resource`, gives each operation).
#[derive(Debug, Clone, Default)]
pub struct ProbeTool {
    pub name: String,
    pub class_values: BTreeMap<String, Vec<Value>>,
}

/// Turns a tool and its arguments into the call the gateway would decide: the arguments as
/// the tool reads them, the tool's meta for those arguments, and the arguments it cannot
/// read. The gateway's reading (the catalogue, `coerce`) lives outside this crate.
pub type Prepare<'a> = dyn Fn(&str, Value) -> (Arc<Value>, ToolMeta, Vec<TypeMismatch>) + 'a;

/// How a call is decided under one policy, as far as a change matters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// `allow`, `deny`, `approval_required`, `invalid_arguments`.
    pub decision: &'static str,
    /// The selector and pointer of the rule that decided.
    pub rule: Arc<str>,
    pub pointer: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Arc<str>>,
    /// For `approval_required`: how long it is held and what happens then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalTerms>,
    /// The limits an admitted (or held) call is counted against.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitTerms>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalTerms {
    pub timeout_seconds: u64,
    pub on_timeout: TimeoutOutcome,
    /// Who is asked: the operators, or the client's user (elicitation).
    pub via: ApprovalVia,
}

/// One limit as a call meets it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LimitTerms {
    pub counter: Arc<str>,
    pub max: u32,
    pub window_seconds: u64,
    pub scope: &'static str,
    /// `errors` for a limit that counts upstream errors (omitted for calls).
    #[serde(skip_serializing_if = "Counts::is_calls")]
    pub counts: Counts,
}

impl LimitTerms {
    /// `reads: 10 per minute, scope grant`; `failures: 3 errors per 10m, scope grant`.
    pub fn text(&self) -> String {
        format!(
            "{}: {}{} per {}, scope {}",
            self.counter,
            self.max,
            if self.counts.is_calls() {
                ""
            } else {
                " errors"
            },
            crate::engine::window_text(Duration::from_secs(self.window_seconds)),
            self.scope
        )
    }
}

impl Outcome {
    /// Whether two outcomes decide alike: the same decision, approval terms (timeout,
    /// `on_timeout`, who is asked) and limits (the rule and the reason may differ: a renamed or
    /// reworded rule decides alike).
    pub fn alike(&self, other: &Outcome) -> bool {
        self.decision == other.decision
            && self.approval == other.approval
            && self.limits == other.limits
    }

    /// `deny (rule `X` /tools/X)` for people.
    pub fn text(&self) -> String {
        let mut t = format!("{} (rule `{}` {}", self.decision, self.rule, self.pointer);
        if let Some(a) = &self.approval {
            t.push_str(&format!(
                ", held up to {} then {}",
                crate::engine::duration_text(Duration::from_secs(a.timeout_seconds)),
                match a.on_timeout {
                    TimeoutOutcome::Deny => "deny",
                    TimeoutOutcome::Allow => "allow",
                }
            ));
            if a.via == ApprovalVia::Elicitation {
                t.push_str(", asked of the client's user");
            }
        }
        for l in &self.limits {
            t.push_str(&format!(", {}", l.text()));
        }
        t.push(')');
        t
    }
}

/// A call the change decides differently: a counterexample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallChange {
    pub tool: String,
    /// The arguments as sent (an argument left out is absent).
    pub arguments: Value,
    pub grant: &'static str,
    pub old: Outcome,
    pub new: Outcome,
}

/// A counter whose window, max or scope changed, or that only one policy has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitChange {
    pub counter: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<LimitTerms>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<LimitTerms>,
}

/// What `diff` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Tools probed.
    pub tools: usize,
    /// Calls decided under both policies.
    pub calls: usize,
    /// Tools not probed exhaustively: too many argument combinations (each argument was varied
    /// alone), or a `max_length` over [`MAX_LENGTH_PROBED`] (not probed past).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partial: Vec<String>,
    pub changed_calls: Vec<CallChange>,
    pub changed_limits: Vec<LimitChange>,
}

impl Report {
    /// Whether the two policies decide every probed call alike and keep every limit.
    pub fn unchanged(&self) -> bool {
        self.changed_calls.is_empty() && self.changed_limits.is_empty()
    }
}

/// A tool name no rule of either policy should name, standing for tools nobody names.
pub const UNNAMED_TOOL: &str = "zz_tool_no_rule_names";

/// The tools to probe besides `tools`: every exact selector of either policy, a name for each
/// pattern (one it matches), and [`UNNAMED_TOOL`]; deduplicated, in order.
pub fn named_tools(old: &Policy, new: &Policy, tools: Vec<ProbeTool>) -> Vec<ProbeTool> {
    let mut seen: BTreeSet<String> = tools.iter().map(|t| t.name.clone()).collect();
    let mut out = tools;
    let mut add = |name: String, out: &mut Vec<ProbeTool>| {
        if seen.insert(name.clone()) {
            out.push(ProbeTool {
                name,
                class_values: BTreeMap::new(),
            });
        }
    };
    for policy in [old, new] {
        for rule in &policy.rules {
            match &rule.selector {
                Selector::Exact(name) => add(name.clone(), &mut out),
                Selector::Glob(g) => {
                    if let Some(w) = g.witness(g).filter(|w| g.is_match(w)) {
                        add(w, &mut out);
                    }
                }
                Selector::Upstream(_) | Selector::Class(_) | Selector::Annotation(_) => {}
            }
        }
    }
    add(UNNAMED_TOOL.to_owned(), &mut out);
    out
}

/// Decides every probe call of every tool under both policies.
pub fn diff(
    old: &Arc<Policy>,
    new: &Arc<Policy>,
    tools: &[ProbeTool],
    prepare: &Prepare<'_>,
) -> Report {
    // `explain` counts nothing, so one store serves every probe and no probe changes another.
    let engine = |p: &Arc<Policy>| {
        Engine::new(
            Arc::clone(p),
            Arc::new(MemoryStore::new()) as Arc<dyn crate::CounterStore>,
        )
    };
    let (old_engine, new_engine) = (engine(old), engine(new));
    let mut report = Report {
        tools: tools.len(),
        calls: 0,
        partial: Vec::new(),
        changed_calls: Vec::new(),
        changed_limits: limit_changes(old, new),
    };
    for tool in tools {
        let (values, lengths_probed) = probe_values(old, new, tool, prepare);
        let (calls, complete) = combinations(&values);
        if !complete || !lengths_probed {
            report.partial.push(tool.name.clone());
        }
        for arguments in calls {
            report.calls += 1;
            let (args, meta, unreadable) = prepare(&tool.name, arguments.clone());
            let call = Call {
                tool: Arc::from(tool.name.as_str()),
                arguments: args,
                grant: Arc::from(PROBE_GRANT),
                session: Arc::from(PROBE_SESSION),
                meta,
            };
            let a = outcome(&old_engine, &call, &unreadable);
            let b = outcome(&new_engine, &call, &unreadable);
            if !a.alike(&b) {
                report.changed_calls.push(CallChange {
                    tool: tool.name.clone(),
                    arguments,
                    grant: PROBE_GRANT,
                    old: a,
                    new: b,
                });
            }
        }
    }
    report
}

/// How `engine` decides `call` now, counting nothing.
pub fn outcome(engine: &Engine, call: &Call, unreadable: &[TypeMismatch]) -> Outcome {
    let e = engine.explain_coerced(call, Duration::ZERO, unreadable);
    let d = e.decision;
    let (approval, counted) = match &d.kind {
        DecisionKind::ApprovalRequired {
            timeout,
            on_timeout,
            via,
        } => (
            Some(ApprovalTerms {
                timeout_seconds: timeout.as_secs(),
                on_timeout: *on_timeout,
                via: *via,
            }),
            true,
        ),
        DecisionKind::Allow
        | DecisionKind::RateLimited { .. }
        | DecisionKind::ErrorLimited { .. } => (None, true),
        _ => (None, false),
    };
    let mut limits: Vec<LimitTerms> = if counted {
        e.limits
            .iter()
            .map(|l| LimitTerms {
                counter: Arc::clone(&l.counter),
                max: l.max,
                window_seconds: l.window_seconds,
                scope: l.scope,
                counts: l.counts,
            })
            .collect()
    } else {
        Vec::new()
    };
    limits.sort();
    // A first call on a fresh store is never rate limited (every `max` is at least 1), nor
    // stopped by errors (none was recorded).
    let decision = match d.kind {
        DecisionKind::RateLimited { .. } | DecisionKind::ErrorLimited { .. } => "allow",
        ref k => k.name(),
    };
    Outcome {
        decision,
        rule: d.rule.selector,
        pointer: d.rule.pointer,
        reason: d.reason,
        approval,
        limits,
    }
}

/// Every counter of a policy with its terms.
fn counters(policy: &Policy) -> BTreeMap<Arc<str>, LimitTerms> {
    fn walk(b: &RuleBody, out: &mut BTreeMap<Arc<str>, LimitTerms>) {
        for l in &b.limits {
            out.insert(
                Arc::clone(&l.counter),
                LimitTerms {
                    counter: Arc::clone(&l.counter),
                    max: l.max,
                    window_seconds: l.window.as_secs(),
                    scope: scope_name(l.scope),
                    counts: l.counts,
                },
            );
        }
        if let Some(w) = &b.when {
            for c in w.cases.values().chain(w.otherwise.iter()) {
                walk(c, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&policy.default, &mut out);
    for r in &policy.rules {
        walk(&r.body, &mut out);
    }
    out
}

fn limit_changes(old: &Policy, new: &Policy) -> Vec<LimitChange> {
    let (a, b) = (counters(old), counters(new));
    let names: BTreeSet<&Arc<str>> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (o, n) = (a.get(name), b.get(name));
            (o != n).then(|| LimitChange {
                counter: Arc::clone(name),
                old: o.cloned(),
                new: n.cloned(),
            })
        })
        .collect()
}

/// The bodies either policy could decide `tool` with, whatever its class-deciding values.
fn bodies_for<'a>(
    policy: &'a Policy,
    tool: &ProbeTool,
    metas: &[ToolMeta],
    out: &mut Vec<&'a RuleBody>,
) {
    out.push(&policy.default);
    for r in &policy.rules {
        if metas.iter().any(|m| r.selector.matches(&tool.name, m)) {
            out.push(&r.body);
        }
    }
}

/// Every body reachable from `body` (itself and its cases).
fn with_cases<'a>(body: &'a RuleBody, out: &mut Vec<&'a RuleBody>) {
    out.push(body);
    if let Some(w) = &body.when {
        for c in w.cases.values().chain(w.otherwise.iter()) {
            with_cases(c, out);
        }
    }
}

/// Argument name → its representative values (`None`: left out).
type Values = BTreeMap<String, Vec<Option<Value>>>;

/// The representative values of every argument the rules for `tool` read; false when some
/// `max_length` was too long to probe past (over [`MAX_LENGTH_PROBED`]).
fn probe_values(
    old: &Policy,
    new: &Policy,
    tool: &ProbeTool,
    prepare: &Prepare<'_>,
) -> (Values, bool) {
    let mut lengths_probed = true;
    // The tool's meta under each of its class-deciding values (and with none).
    let mut metas = vec![prepare(&tool.name, Value::Object(Map::new())).1];
    for (arg, values) in &tool.class_values {
        for v in values {
            metas.push(prepare(&tool.name, json!({ arg: v })).1);
        }
    }
    let mut tops = Vec::new();
    bodies_for(old, tool, &metas, &mut tops);
    bodies_for(new, tool, &metas, &mut tops);
    let mut bodies = Vec::new();
    for b in tops {
        with_cases(b, &mut bodies);
    }
    let mut literals: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut numbers: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut lengths: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (arg, values) in &tool.class_values {
        literals
            .entry(arg.clone())
            .or_default()
            .extend(values.iter().cloned());
    }
    for body in &bodies {
        if let Some(w) = &body.when {
            let lits = literals.entry(w.argument.clone()).or_default();
            for key in w.cases.keys() {
                lits.push(Value::String(key.clone()));
                if let Ok(v) = serde_json::from_str::<Value>(key)
                    && !v.is_string()
                    && !v.is_object()
                    && !v.is_array()
                {
                    lits.push(v);
                }
            }
        }
        for check in &body.arguments {
            let lits = literals.entry(check.name.clone()).or_default();
            let r = &check.rule;
            lits.extend(r.one_of.iter().flatten().cloned());
            lits.extend(r.not_enum.iter().flatten().cloned());
            if let Some(p) = &r.prefix {
                lits.push(Value::String(p.clone()));
                lits.push(Value::String(format!("{p}zz")));
            }
            let nums = numbers.entry(check.name.clone()).or_default();
            nums.extend(r.min);
            nums.extend(r.max);
            if let Some(n) = r.max_length {
                lengths.entry(check.name.clone()).or_default().push(n);
            }
        }
    }
    let mut out: Values = BTreeMap::new();
    let names: BTreeSet<&String> = literals
        .keys()
        .chain(numbers.keys())
        .chain(lengths.keys())
        .collect();
    for name in names {
        let mut values: Vec<Value> = Vec::new();
        let push = |v: Value, values: &mut Vec<Value>| {
            if !values.contains(&v) {
                values.push(v);
            }
        };
        for v in literals.get(name).into_iter().flatten() {
            for spelled in spellings(v) {
                push(spelled, &mut values);
            }
        }
        // Numbers: every bound and literal, a value between each two, and one beyond.
        let mut points: Vec<f64> = numbers.get(name).cloned().unwrap_or_default();
        points.extend(values.iter().filter_map(Value::as_f64));
        points.sort_by(f64::total_cmp);
        points.dedup();
        if let (Some(lo), Some(hi)) = (points.first().copied(), points.last().copied()) {
            let mut all = vec![lo - 1.0, hi + 1.0];
            all.extend(points.windows(2).map(|w| (w[0] + w[1]) / 2.0));
            all.extend(points.iter().copied());
            for p in all {
                push(number(p), &mut values);
            }
        }
        for &n in lengths.get(name).into_iter().flatten() {
            // Bounded: a string one past a longer bound is not made (the report says so).
            let Some(n) = usize::try_from(n).ok().filter(|&n| n <= MAX_LENGTH_PROBED) else {
                lengths_probed = false;
                continue;
            };
            push(Value::String("a".repeat(n)), &mut values);
            push(Value::String("a".repeat(n + 1)), &mut values);
            push(Value::Array(vec![json!(0); n]), &mut values);
            push(Value::Array(vec![json!(0); n + 1]), &mut values);
        }
        push(Value::String("zz-outside".into()), &mut values);
        // One value of each kind: values every check and branch of every body treats alike
        // (and that give the tool one class) decide alike, whatever the other arguments.
        let mut kinds: BTreeSet<String> = BTreeSet::new();
        let mut kept = Vec::new();
        for v in std::iter::once(None).chain(values.into_iter().map(Some)) {
            let mut args = Map::new();
            if let Some(v) = &v {
                args.insert(name.clone(), v.clone());
            }
            let (args, meta, unreadable) = prepare(&tool.name, Value::Object(args));
            let mut kind = format!("{:?}", meta.class);
            for body in &bodies {
                kind.push(';');
                kind.push_str(&argument_signature(
                    body,
                    name,
                    &args,
                    &unreadable,
                    meta.defaults.as_deref(),
                ));
            }
            if kinds.insert(kind) {
                kept.push(v);
            }
        }
        out.insert(name.clone(), kept);
    }
    (out, lengths_probed)
}

/// A number as JSON: an integer when it is one.
fn number(p: f64) -> Value {
    if p.fract() == 0.0 && p.abs() < 9.0e15 {
        json!(p as i64)
    } else {
        json!(p)
    }
}

/// `v` and the other spellings a lax reader (pydantic) may take for it.
fn spellings(v: &Value) -> Vec<Value> {
    let mut out = vec![v.clone()];
    match v {
        Value::String(s) => {
            if let Some(b) = crate::lax::boolean_text(s) {
                out.push(Value::Bool(b));
            }
            if let Some(n) = crate::lax::number_text(s) {
                out.push(number(n));
            }
        }
        Value::Number(n) => {
            out.push(Value::String(n.to_string()));
            if let Some(f) = n.as_f64() {
                out.push(json!(f));
                if f == 0.0 || f == 1.0 {
                    out.push(Value::Bool(f == 1.0));
                }
            }
        }
        Value::Bool(b) => {
            out.push(Value::String(b.to_string()));
            out.push(json!(u8::from(*b)));
        }
        _ => {}
    }
    out
}

/// Every combination of the values (all of them when there are at most
/// [`MAX_PROBES_PER_TOOL`]; else each argument varied alone, the others left out); whether it
/// was all of them.
fn combinations(values: &Values) -> (Vec<Value>, bool) {
    let total = values
        .values()
        .try_fold(1usize, |n, v| n.checked_mul(v.len()))
        .filter(|&n| n <= MAX_PROBES_PER_TOOL);
    let object = |pairs: Vec<(&String, &Option<Value>)>| {
        let mut m = Map::new();
        for (k, v) in pairs {
            if let Some(v) = v {
                m.insert(k.clone(), v.clone());
            }
        }
        Value::Object(m)
    };
    match total {
        Some(_) => {
            let mut calls: Vec<Vec<(&String, &Option<Value>)>> = vec![Vec::new()];
            for (name, vs) in values {
                calls = calls
                    .into_iter()
                    .flat_map(|c| {
                        vs.iter().map(move |v| {
                            let mut c = c.clone();
                            c.push((name, v));
                            c
                        })
                    })
                    .collect();
            }
            (calls.into_iter().map(object).collect(), true)
        }
        None => {
            let mut calls = vec![Value::Object(Map::new())];
            for (name, vs) in values {
                for v in vs.iter().flatten() {
                    calls.push(json!({ name: v }));
                }
            }
            (calls, false)
        }
    }
}
