//! What a person reads of a decision, for every kind of decision and every path through the
//! engine: the one-line summary an agent gets, the JSON an audit record keeps, and `explain`'s
//! rendering. One snapshot holds the whole tour, so a change to any message is reviewed where
//! it shows (and `cargo mutants` finds no message the tests do not read: docs/testing.md).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tollgate_policy::limiter::{CounterKey, LimitSpec};
use tollgate_policy::{
    Acquire, Annotation, Call, CounterStore, Engine, FailMode, MemoryStore, Policy, RiskClass,
    ToolMeta, TypeMismatch,
};

/// A policy with a rule for each path: limits over every named window, approval by operators
/// and by elicitation, exact names, a pattern, a class, an annotation, two branches and every
/// kind of argument check.
fn tour_policy() -> Value {
    json!({
        "version": "1", "default": "deny",
        "approval": {"timeout": "90s", "on_timeout": "allow"},
        "tools": {
            "ListClusters": {"limits": [
                {"counter": "reads", "window": "minute", "max": 2, "scope": "grant"},
                {"counter": "daily", "window": "day", "max": 100, "scope": "global"}
            ]},
            "Burst": {"limits": [{"counter": "burst", "window": "second", "max": 1, "scope": "session"}]},
            "Hourly": {"reason": "one an hour", "limits": [{"counter": "hourly", "window": "hour", "max": 1}]},
            "Odd": {"limits": [{"counter": "odd", "window": "90s", "max": 1, "by": ["/cluster", "/region"]}]},
            "DeleteCluster": {"action": "require_approval", "reason": "destructive"},
            "Elicit": {"action": "require_approval",
                "approval": {"timeout": "2h", "on_timeout": "deny", "via": "elicitation"}},
            "Delete*": {"action": "deny", "reason": "no deletes"},
            "class:destructive": {"action": "deny", "reason": "destructive class"},
            "annotation:readOnlyHint": {"reason": "read-only hint"},
            "manage": {"redact": ["secret"], "when": {"argument": "operation", "cases": {
                "read": {},
                "delete": {"action": "deny", "reason": "delete op"},
                "3": {"reason": "three"},
                "true": {"reason": "yes", "arguments": {"level": {"max": 2}}}
            }, "otherwise": {"action": "require_approval", "reason": "other op"}}},
            "strict": {"when": {"argument": "mode", "cases": {"a": {}, "1": {}, "1.5": {}}}},
            "args": {"redact": ["token"], "arguments": {
                "name": {"pattern": "^[a-z]+$", "prefix": "ab", "max_length": 4},
                "n": {"min": 1, "max": 10},
                "list": {"max_length": 2},
                "ns": {"not_enum": ["kube-system", 0]},
                "kind": {"enum": ["x", 1]},
                "f": {"forbidden": true},
                "r": {"required": true},
                "odd name": {"enum": ["y"]},
                "9lives": {"enum": ["z"]},
                "token": {"enum": ["t"], "max_length": 2, "min": 5}
            }}
        }
    })
}

fn parse(policy: &Value) -> Arc<Policy> {
    let text = serde_json::to_string_pretty(policy).unwrap();
    Arc::new(Policy::parse("tour.json", &text).unwrap_or_else(|d| panic!("{d}")))
}

fn call(tool: &str, arguments: Value) -> Call {
    Call {
        tool: tool.into(),
        arguments: arguments.into(),
        grant: "ci-bot".into(),
        session: "s1".into(),
        meta: ToolMeta::default(),
    }
}

fn meta(class: Option<RiskClass>, annotations: &[Annotation]) -> ToolMeta {
    ToolMeta {
        class,
        annotations: Arc::new(annotations.iter().copied().collect()),
        defaults: None,
        upstream: None,
    }
}

/// Decides `c` at `at_ms` after explaining it (explaining takes nothing), and writes what a
/// person reads of both (the explanation's list of rules that do not match only when `full`:
/// it is the same for most calls).
fn show_with(
    out: &mut String,
    engine: &Engine,
    c: &Call,
    at_ms: u64,
    unreadable: &[TypeMismatch],
    full: bool,
) {
    let now = Duration::from_millis(at_ms);
    let explained = engine.explain_coerced(c, now, unreadable);
    let d = engine.decide_coerced(c, now, unreadable);
    assert_eq!(
        explained.decision.kind.name(),
        d.kind.name(),
        "explain and decide differ for {c:?}"
    );
    writeln!(out, "## {} {} at {at_ms}ms", c.tool, c.arguments).unwrap();
    writeln!(out, "summary: {}", d.summary(&c.tool)).unwrap();
    writeln!(out, "json: {}", serde_json::to_string(&d).unwrap()).unwrap();
    writeln!(out, "admits: {}", d.admits()).unwrap();
    for line in explained.render().lines() {
        if full || !(line == "other rules:" || line.starts_with("     ")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
}

fn show(out: &mut String, engine: &Engine, c: &Call, at_ms: u64, unreadable: &[TypeMismatch]) {
    show_with(out, engine, c, at_ms, unreadable, false);
}

/// Every decision kind, every selector tier, every branch outcome and every argument check, as
/// a person reads them (reviewed in the snapshot).
#[test]
fn every_decision_reads_as_documented() {
    let engine = Engine::new(parse(&tour_policy()), Arc::new(MemoryStore::new()));
    let mut out = String::new();
    // Limits over a minute and a day, then a second, an hour, and 90 s keyed by arguments
    // (the instants only go forward: a store's time never goes back).
    for at in [0, 1_000, 2_000] {
        show(&mut out, &engine, &call("ListClusters", json!({})), at, &[]);
    }
    for at in [3_000, 3_500] {
        show(&mut out, &engine, &call("Burst", json!({})), at, &[]);
    }
    for at in [4_000, 4_010] {
        show(&mut out, &engine, &call("Hourly", json!({})), at, &[]);
    }
    let long = "é".repeat(300);
    for args in [
        json!({"cluster": "prod"}),
        json!({"cluster": "prod"}),
        json!({"cluster": long}),
    ] {
        show(&mut out, &engine, &call("Odd", args), 5_000, &[]);
    }
    // Approvals, a pattern, a name that differs in case only, a class and an annotation.
    show(&mut out, &engine, &call("DeleteCluster", json!({})), 0, &[]);
    show(&mut out, &engine, &call("Elicit", json!({})), 0, &[]);
    show(
        &mut out,
        &engine,
        &call("DeleteNodegroup", json!({})),
        0,
        &[],
    );
    show_with(
        &mut out,
        &engine,
        &call("deletecluster", json!({})),
        0,
        &[],
        true,
    );
    let mut rm = call("Rm", json!({}));
    rm.meta = meta(Some(RiskClass::Destructive), &[Annotation::Destructive]);
    show_with(&mut out, &engine, &rm, 0, &[], true);
    let mut look = call("Look", json!({}));
    look.meta = meta(Some(RiskClass::Read), &[Annotation::ReadOnly]);
    show_with(&mut out, &engine, &look, 0, &[], true);
    let mut write = call("Put", json!({}));
    write.meta = meta(Some(RiskClass::Write), &[]);
    show_with(&mut out, &engine, &write, 0, &[], true);
    // Branches: each case, `otherwise`, a missing value, look-alikes of cases.
    for args in [
        json!({"operation": "read"}),
        json!({"operation": "delete"}),
        json!({"operation": 3}),
        json!({"operation": "3"}),
        json!({"operation": true, "level": 3}),
        json!({"operation": "TRUE"}),
        json!({"operation": 3.0}),
        json!({"operation": "other"}),
        json!({}),
    ] {
        show(&mut out, &engine, &call("manage", args), 0, &[]);
    }
    for args in [
        json!({}),
        json!({"mode": "b"}),
        json!({"mode": 1.0}),
        json!({"mode": "1.50"}),
        json!({"mode": 1.5}),
        json!({"mode": "x".repeat(80)}),
    ] {
        show(&mut out, &engine, &call("strict", args), 0, &[]);
    }
    // Argument checks: each failing, with the wrong kind of value, and all passing.
    for args in [
        json!({"r": 1, "name": "ABCDE", "n": 0, "list": [1, 2, 3], "ns": "kube-system",
               "kind": "z", "f": false, "odd name": "n", "9lives": "n"}),
        json!({"r": 1, "name": 5, "n": "x", "list": 5, "ns": "0", "kind": "1", "n2": 1}),
        json!({"r": 1, "n": 11, "list": "abc", "ns": 0.0, "kind": 1.0, "token": "secret"}),
        json!({"r": 1, "name": "abc", "n": 10, "list": [1, 2], "ns": "default", "kind": 1,
               "odd name": "y", "9lives": "z"}),
        json!({"r": null}),
        json!([]),
    ] {
        show(&mut out, &engine, &call("args", args), 0, &[]);
    }
    // Arguments the gateway could not read as the tool's types, and defaults of left-out ones.
    let unreadable = [
        TypeMismatch {
            argument: "n".into(),
            expected: "an integer".into(),
        },
        TypeMismatch {
            argument: "operation".into(),
            expected: "a string".into(),
        },
    ];
    show(
        &mut out,
        &engine,
        &call("args", json!({"r": 1, "n": "many"})),
        0,
        &unreadable,
    );
    show(
        &mut out,
        &engine,
        &call("manage", json!({"operation": [1]})),
        0,
        &unreadable,
    );
    let mut defaulted = call("args", json!({"r": 1}));
    let defaults: Map<String, Value> =
        serde_json::from_value(json!({"n": 20, "f": true, "kind": null, "name": "abc"})).unwrap();
    defaulted.meta.defaults = Some(Arc::new(defaults));
    show(&mut out, &engine, &defaulted, 0, &[]);
    insta::assert_snapshot!(out);
}

/// A counter store that cannot answer, failing closed or open as configured.
#[derive(Debug)]
struct DownStore(FailMode);

impl CounterStore for DownStore {
    fn acquire(&self, _: &[(CounterKey, LimitSpec)], _: Duration, _: bool) -> Acquire {
        Acquire::Unavailable {
            store: "redis://127.0.0.1:1/0".into(),
            reason: "connection refused".into(),
            mode: self.0,
        }
    }

    fn record(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> Acquire {
        self.acquire(limits, now, false)
    }
}

/// A store that cannot answer is named in the summary and the explanation, with what the
/// engine did about it (fail closed: refused; fail open: on, uncounted).
#[test]
fn an_unavailable_store_reads_as_documented() {
    let mut out = String::new();
    for mode in [FailMode::Closed, FailMode::Open] {
        let engine = Engine::new(parse(&tour_policy()), Arc::new(DownStore(mode)));
        show(&mut out, &engine, &call("ListClusters", json!({})), 0, &[]);
        show(&mut out, &engine, &call("DeleteCluster", json!({})), 0, &[]);
        show(&mut out, &engine, &call("Elicit", json!({})), 0, &[]);
    }
    insta::assert_snapshot!(out);
}

/// Windows and retry times are written in the largest whole units.
#[test]
fn windows_read_by_name_or_as_durations() {
    use tollgate_policy::engine::window_text;
    for (secs, want) in [
        (1, "second"),
        (60, "minute"),
        (3600, "hour"),
        (86_400, "day"),
        (2, "2s"),
        (90, "1m30s"),
        (7200, "2h"),
        (86_401, "24h0m1s"),
    ] {
        assert_eq!(window_text(Duration::from_secs(secs)), want);
    }
}
