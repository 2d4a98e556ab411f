//! What `tollgate test --format json` and `--coverage` read from a run: the audit log the
//! gateway's core writes in virtual time (one `decision` record per call the policy decided,
//! with its rule, reason, counters and retry time; `approval` and `reload` records), matched
//! to the transcript's calls. The audit log is the gateway's own account of every decision,
//! so nothing here re-decides or parses a message meant for people.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use tollgate_policy::coverage::{Item, ItemKind};
use tollgate_policy::{Counts, Policy};
use tollgate_scenario::format::PolicySource;
use tollgate_scenario::{CallDecision, IdText, Scenario};

/// One audit record of a decision, with what became of it when it was held.
#[derive(Debug, Default)]
struct Decided {
    decision: Value,
    /// The release decision of an approved call (its limits taken at the approval).
    release: Option<Value>,
    /// The `approval` record of a held call: verdict, approver, reason.
    approval: Option<Value>,
}

/// Every call of a run, for `--format json`: the transcript's decision, with the rule, reason,
/// retry time, counters and violations of the audit record that decided it.
pub fn calls(decisions: &[CallDecision], audit: &[Value]) -> Vec<Value> {
    let mut by_seq: BTreeMap<u64, Decided> = BTreeMap::new();
    let mut order: Vec<(u64, String, String)> = Vec::new();
    for r in audit {
        let seq = r["seq"].as_u64().unwrap_or_default();
        match r["kind"].as_str() {
            Some("decision") => {
                if let Some(held) = r["held_decision_seq"].as_u64() {
                    if let Some(d) = by_seq.get_mut(&held) {
                        d.release = Some(r["decision"].clone());
                    }
                    continue;
                }
                let id = match r.get("id") {
                    Some(v) if !v.is_null() => IdText::of(v).to_string(),
                    _ => String::new(),
                };
                order.push((seq, id, r["tool"].as_str().unwrap_or_default().to_owned()));
                by_seq.insert(
                    seq,
                    Decided {
                        decision: r["decision"].clone(),
                        ..Decided::default()
                    },
                );
            }
            Some("approval") => {
                if let Some(d) = r["decision_seq"].as_u64().and_then(|s| by_seq.get_mut(&s)) {
                    d.approval = Some(r.clone());
                }
            }
            _ => {}
        }
    }
    // (id, tool) → the decisions of those calls, in the order they were made.
    let mut queue: HashMap<(String, String), VecDeque<u64>> = HashMap::new();
    for (seq, id, tool) in order {
        queue.entry((id, tool)).or_default().push_back(seq);
    }
    decisions
        .iter()
        .map(|d| {
            let id = d.id.as_ref().map(ToString::to_string).unwrap_or_default();
            let found = queue
                .get_mut(&(id.clone(), d.tool.to_string()))
                .and_then(VecDeque::pop_front)
                .and_then(|seq| by_seq.get(&seq));
            call_json(d, &id, found)
        })
        .collect()
}

fn call_json(d: &CallDecision, id: &str, found: Option<&Decided>) -> Value {
    let mut call = json!({
        "at_seconds": d.at_ms as f64 / 1000.0,
        "agent": &*d.agent,
        "tool": &*d.tool,
        "id": if id.is_empty() { Value::Null } else { Value::String(id.to_owned()) },
        "decision": &*d.decision,
        "rule": Value::Null,
        "reason": Value::Null,
        "retry_after_seconds": Value::Null,
    });
    // With several upstreams: the one the tool's name routes to.
    if let Some(upstream) = &d.upstream {
        call["upstream"] = json!(&**upstream);
    }
    let Some(found) = found else {
        return call;
    };
    // An approved call's release decision says what was taken; the held one why it was held.
    let decision = found.release.as_ref().unwrap_or(&found.decision);
    call["rule"] = decision["rule"].clone();
    call["reason"] = found.decision["reason"].clone();
    call["retry_after_seconds"] = decision["retry_after_seconds"].clone();
    // A held call that was not approved took nothing: its counters as measured when it was
    // held are not shown as its own.
    let took_nothing = found.release.is_none() && found.approval.is_some();
    for key in ["limits", "violations", "store_unavailable"] {
        if key == "limits" && took_nothing {
            continue;
        }
        if let Some(v) = decision.get(key) {
            call[key] = v.clone();
        }
    }
    if let Some(a) = &found.approval {
        call["approval"] = json!({
            "id": a["approval_id"],
            "verdict": a["verdict"],
            "by": a["approver"],
            "reason": a["reason"],
        });
    }
    call
}

/// Reads an audit log written by a run: one JSON value per line.
pub fn read_audit(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// A policy as coverage names it: its file (relative to the working directory when it is
/// below it), or the scenario (and step) that writes it inline.
fn policy_key(scenario_file: &Path, source: &PolicySource, step: Option<&str>) -> String {
    match source {
        PolicySource::Path(p) => {
            let full = scenario_file.parent().unwrap_or(Path::new(".")).join(p);
            super::shown(&full)
        }
        PolicySource::Inline(_) => match step {
            None => format!("{} (inline policy)", scenario_file.display()),
            Some(s) => format!("{} step {s} (inline policy)", scenario_file.display()),
        },
    }
}

/// The step a label names: `3` (the third step) or `3.2` (the second member of the third
/// step's `concurrent` group).
fn step_of<'a>(scenario: &'a Scenario, label: &str) -> Option<&'a tollgate_scenario::format::Step> {
    let mut parts = label.split('.');
    let i: usize = parts.next()?.parse().ok()?;
    let step = scenario.steps.get(i.checked_sub(1)?)?;
    match parts.next() {
        None => Some(step),
        Some(j) => {
            let j: usize = j.parse().ok()?;
            step.concurrent.as_ref()?.get(j.checked_sub(1)?)
        }
    }
}

/// One coverage item and what exercised it.
#[derive(Debug, Clone, Serialize)]
pub struct Tally {
    #[serde(flatten)]
    pub item: Item,
    pub covered: bool,
    /// For a check or a limit: what was seen (`passed`, `failed`; `admitted`, `refused`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<&'static str>,
}

/// The coverage of one policy over every scenario that ran it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyCoverage {
    pub policy: String,
    /// Whether `line` and `column` are in the policy's file (an inline policy has none).
    #[serde(skip)]
    pub file: bool,
    pub covered: usize,
    pub total: usize,
    pub percent: f64,
    pub items: Vec<Tally>,
}

/// One policy's items, whether they are placed in a file, and what has been seen of each (by
/// item index).
type Seen = (Vec<Item>, bool, Vec<BTreeMap<&'static str, bool>>);

/// Coverage gathered over a `tollgate test` run.
#[derive(Debug, Default)]
pub struct Coverage {
    /// Policy key → its items and what has been seen of each.
    policies: BTreeMap<String, Seen>,
}

impl Coverage {
    /// Loads `key`'s policy (once) so its items can be counted.
    fn ensure(&mut self, key: &str, load: impl FnOnce() -> Option<(Policy, bool)>) -> bool {
        if self.policies.contains_key(key) {
            return true;
        }
        let Some((policy, file)) = load() else {
            return false;
        };
        let items = policy.coverage_items();
        let seen = vec![BTreeMap::new(); items.len()];
        self.policies.insert(key.to_owned(), (items, file, seen));
        true
    }

    /// Counts what one scenario's run (its audit log) exercised.
    pub fn add_run(&mut self, scenario_file: &Path, scenario: &Scenario, audit: &[Value]) {
        let base = scenario_file.parent().unwrap_or(Path::new(".")).to_owned();
        let load = |source: &PolicySource, inline_name: String| -> Option<(Policy, bool)> {
            match source {
                PolicySource::Path(p) => Policy::load(&base.join(p)).ok().map(|p| (p, true)),
                PolicySource::Inline(v) => {
                    let text = serde_json::to_string_pretty(v).ok()?;
                    Policy::parse(&inline_name, &text).ok().map(|p| (p, false))
                }
            }
        };
        let mut current = policy_key(scenario_file, &scenario.policy, None);
        if !self.ensure(&current, || load(&scenario.policy, "inline".into())) {
            return;
        }
        // Held calls: decision seq → (policy, rule pointer).
        let mut held: HashMap<u64, (String, Arc<str>)> = HashMap::new();
        // Admitted calls whose rule counts errors: decision seq → (policy, rule pointer).
        let mut charged: HashMap<u64, (String, Arc<str>)> = HashMap::new();
        for r in audit {
            match r["kind"].as_str() {
                Some("reload") => {
                    let Some(step) = r["step"].as_str().and_then(|l| step_of(scenario, l)) else {
                        continue;
                    };
                    let Some(source) = &step.reload else { continue };
                    let key = policy_key(scenario_file, source, r["step"].as_str());
                    if self.ensure(&key, || load(source, "inline".into())) {
                        current = key;
                    }
                }
                Some("decision") => {
                    let d = &r["decision"];
                    let pointer: Arc<str> = Arc::from(d["rule"]["pointer"].as_str().unwrap_or(""));
                    // A release is decided by the policy that held the call (a reload while
                    // it waited does not change whose rule it is).
                    let release = r["held_decision_seq"].as_u64();
                    let key = release
                        .and_then(|s| held.get(&s))
                        .map_or_else(|| current.clone(), |(k, _)| k.clone());
                    self.decided(&key, &pointer, d);
                    let counts_errors = d["limits"]
                        .as_array()
                        .is_some_and(|ls| ls.iter().any(|l| l["counts"] == "errors"));
                    if counts_errors
                        && d["decision"] == "allow"
                        && let Some(seq) = r["seq"].as_u64()
                    {
                        charged.insert(seq, (key.clone(), Arc::clone(&pointer)));
                    }
                    let is_release = release.is_some();
                    if is_release && d["decision"] == "allow" {
                        self.approval(&key, &pointer, "approved");
                    }
                    if !is_release
                        && d["decision"] == "approval_required"
                        && r.get("approval_id").is_some()
                        && let Some(seq) = r["seq"].as_u64()
                    {
                        held.insert(seq, (current.clone(), pointer));
                    }
                }
                Some("outcome") => {
                    let Some((key, pointer)) = r["decision_seq"]
                        .as_u64()
                        .and_then(|s| charged.get(&s))
                        .cloned()
                    else {
                        continue;
                    };
                    for state in r["errors_counted"].as_array().into_iter().flatten() {
                        let counter = state["counter"].as_str().unwrap_or_default();
                        self.counted(&key, &pointer, counter);
                    }
                }
                Some("approval") => {
                    let Some((key, pointer)) = r["decision_seq"]
                        .as_u64()
                        .and_then(|s| held.get(&s))
                        .cloned()
                    else {
                        continue;
                    };
                    let refused = match r["verdict"].as_str() {
                        Some("denied") => true,
                        Some("expired") => r["on_timeout"] != "allow",
                        _ => false,
                    };
                    if refused {
                        self.approval(&key, &pointer, "refused");
                    }
                }
                _ => {}
            }
        }
    }

    fn approval(&mut self, key: &str, pointer: &str, outcome: &'static str) {
        let Some((items, _, seen)) = self.policies.get_mut(key) else {
            return;
        };
        for (item, seen) in items.iter().zip(seen.iter_mut()) {
            if item.kind == ItemKind::Approval
                && &*item.pointer == pointer
                && item.name.as_deref() == Some(outcome)
            {
                seen.insert(outcome, true);
            }
        }
    }

    /// An upstream error was counted on `counter` for a call the rule body at `pointer` of
    /// policy `key` admitted.
    fn counted(&mut self, key: &str, pointer: &str, counter: &str) {
        let Some((items, _, seen)) = self.policies.get_mut(key) else {
            return;
        };
        for (item, seen) in items.iter().zip(seen.iter_mut()) {
            if item.kind == ItemKind::Limit
                && &*item.pointer == pointer
                && item.name.as_deref() == Some(counter)
            {
                seen.insert("counted", true);
            }
        }
    }

    /// One decision `d` by the rule body at `pointer` of policy `key`.
    fn decided(&mut self, key: &str, pointer: &str, d: &Value) {
        let Some((items, _, seen)) = self.policies.get_mut(key) else {
            return;
        };
        let kind = d["decision"].as_str().unwrap_or_default();
        let under = |p: &str| pointer == p || pointer.starts_with(&format!("{p}/when/"));
        for (item, seen) in items.iter().zip(seen.iter_mut()) {
            match item.kind {
                ItemKind::Rule | ItemKind::Default if under(&item.pointer) => {
                    seen.insert("decided", true);
                }
                ItemKind::Branch if *item.pointer == *pointer => {
                    seen.insert("taken", true);
                }
                ItemKind::Check if under(&item.pointer) => {
                    let path = json_path(item.name.as_deref().unwrap_or_default());
                    let failed = kind == "invalid_arguments"
                        && d["violations"]
                            .as_array()
                            .is_some_and(|vs| vs.iter().any(|v| v["path"] == path.as_str()));
                    seen.insert(if failed { "failed" } else { "passed" }, true);
                }
                ItemKind::Limit if *item.pointer == *pointer => {
                    let counter = item.name.as_deref().unwrap_or_default();
                    let state = d["limits"]
                        .as_array()
                        .and_then(|ls| ls.iter().find(|l| l["counter"] == counter));
                    // A limit that counts errors is covered by an error counted on it (an
                    // outcome record, `counted`) and a refusal, not by admissions.
                    let errors = item.counts == Counts::Errors;
                    match (kind, state) {
                        ("allow", Some(_)) if !errors => {
                            seen.insert("admitted", true);
                        }
                        ("rate_limited" | "error_limited", Some(s))
                            if s["used"].as_u64() >= s["max"].as_u64() =>
                        {
                            seen.insert("refused", true);
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// Each policy's items, whether each is covered, and the share covered.
    pub fn report(&self) -> Vec<PolicyCoverage> {
        self.policies
            .iter()
            .map(|(key, (items, file, seen))| {
                let tallies: Vec<Tally> = items
                    .iter()
                    .zip(seen)
                    .map(|(item, seen)| {
                        let covered = match item.kind {
                            ItemKind::Check => {
                                seen.contains_key("passed") && seen.contains_key("failed")
                            }
                            ItemKind::Limit if item.counts == Counts::Errors => {
                                seen.contains_key("counted") && seen.contains_key("refused")
                            }
                            ItemKind::Limit => {
                                seen.contains_key("admitted") && seen.contains_key("refused")
                            }
                            _ => !seen.is_empty(),
                        };
                        Tally {
                            item: item.clone(),
                            covered,
                            seen: match item.kind {
                                ItemKind::Check | ItemKind::Limit => seen.keys().copied().collect(),
                                _ => Vec::new(),
                            },
                        }
                    })
                    .collect();
                let covered = tallies.iter().filter(|t| t.covered).count();
                PolicyCoverage {
                    policy: key.clone(),
                    file: *file,
                    covered,
                    total: tallies.len(),
                    percent: percent(covered, tallies.len()),
                    items: tallies,
                }
            })
            .collect()
    }
}

/// `covered` of `total` in percent, one decimal (100 when there is nothing to cover).
pub fn percent(covered: usize, total: usize) -> f64 {
    if total == 0 {
        return 100.0;
    }
    (covered as f64 * 1000.0 / total as f64).floor() / 10.0
}

/// `$.name`, or `$["odd name"]`: how the engine names an argument in a violation.
fn json_path(name: &str) -> String {
    let plain = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        format!("$.{name}")
    } else {
        format!("$[{}]", Value::String(name.to_owned()))
    }
}

/// The coverage report as a person reads it: each policy's share, then what is not covered,
/// each at its place in the file.
pub fn human(report: &[PolicyCoverage], min: Option<f64>) -> String {
    let mut t = String::from(
        "\ncoverage (rules, when cases, argument checks, limits, approval outcomes and defaults the scenarios exercised; docs/ci.md):\n",
    );
    let (mut covered, mut total) = (0, 0);
    for p in report {
        covered += p.covered;
        total += p.total;
        t.push_str(&format!(
            "  {}: {}/{} ({:.1}%)\n",
            p.policy, p.covered, p.total, p.percent
        ));
        for tally in p.items.iter().filter(|t| !t.covered) {
            let i = &tally.item;
            let place = if p.file && i.line > 0 {
                format!("{}:{}:{}", p.policy, i.line, i.column)
            } else {
                i.pointer.to_string()
            };
            let what = match i.kind {
                ItemKind::Rule => format!("rule {} decided no call", i.pointer),
                ItemKind::Default => "the default decided no call".to_owned(),
                ItemKind::Branch => format!(
                    "case `{}` ({}) took no call",
                    i.name.as_deref().unwrap_or_default(),
                    i.pointer
                ),
                ItemKind::Check => format!(
                    "the checks on `{}` of {} {}",
                    i.name.as_deref().unwrap_or_default(),
                    i.pointer,
                    missing(&tally.seen, "passed", "failed", "a call")
                ),
                ItemKind::Limit if i.counts == Counts::Errors => format!(
                    "limit `{}` (counts errors) of {} {}",
                    i.name.as_deref().unwrap_or_default(),
                    i.pointer,
                    match (
                        tally.seen.contains(&"counted"),
                        tally.seen.contains(&"refused")
                    ) {
                        (true, false) => "counted an upstream error but never refused a call",
                        (false, true) => "refused a call but never counted an upstream error",
                        _ => "counted no upstream error and refused no call",
                    }
                ),
                ItemKind::Limit => format!(
                    "limit `{}` of {} {}",
                    i.name.as_deref().unwrap_or_default(),
                    i.pointer,
                    missing(&tally.seen, "admitted", "refused", "a call")
                ),
                ItemKind::Approval => format!(
                    "no held call of {} was {}",
                    i.pointer,
                    match i.name.as_deref() {
                        Some("approved") => "approved",
                        _ => "denied or timed out",
                    }
                ),
            };
            t.push_str(&format!("    not covered: {place}: {what}\n"));
        }
    }
    let all = percent(covered, total);
    t.push_str(&format!("  total: {covered}/{total} ({all:.1}%)"));
    if let Some(min) = min {
        t.push_str(&format!(
            ", minimum {min:.1}%: {}",
            if all >= min { "met" } else { "NOT met" }
        ));
    }
    t.push('\n');
    t
}

/// `never failed a call`, `never passed a call`, or `was never met`.
fn missing(seen: &[&str], a: &'static str, b: &'static str, who: &str) -> String {
    match (seen.contains(&a), seen.contains(&b)) {
        (true, false) => format!("{a} {who} but never {b} one"),
        (false, true) => format!("{b} {who} but never {a} one"),
        _ => "met no call".to_owned(),
    }
}

/// Where `tollgate test` keeps a temporary audit log.
pub fn audit_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("audit-{i}.jsonl"))
}
