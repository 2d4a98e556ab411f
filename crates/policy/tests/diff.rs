//! `diff` against the engine: for random policy pairs, every tool `diff` says is unchanged
//! decides random calls alike under both policies, and every change it reports is real (the
//! engine's own `decide`, on fresh counters, disagrees).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tollgate_policy::diff::{self, ProbeTool};
use tollgate_policy::{
    Annotation, Call, Decision, DecisionKind, Engine, MemoryStore, Policy, RiskClass, ToolMeta,
};

/// The tools of the test world: one read tool, one whose class is its `op` (as
/// `manage_k8s_resource`'s is its `operation`), a destructive one, and one nobody catalogues.
const TOOLS: [&str; 4] = ["get_logs", "manage", "DeleteThing", "other_tool"];

fn meta(tool: &str, args: &Value) -> ToolMeta {
    let (class, annotations): (Option<RiskClass>, Vec<Annotation>) = match tool {
        "get_logs" => (Some(RiskClass::Read), vec![Annotation::ReadOnly]),
        "manage" => match args.get("op").and_then(Value::as_str) {
            Some("read") => (Some(RiskClass::Read), vec![]),
            _ => (Some(RiskClass::Destructive), vec![]),
        },
        "DeleteThing" => (Some(RiskClass::Destructive), vec![Annotation::Destructive]),
        _ => (None, vec![]),
    };
    ToolMeta {
        class,
        annotations: Arc::new(annotations.into_iter().collect::<BTreeSet<_>>()),
        defaults: None,
        upstream: None,
    }
}

fn prepare(tool: &str, args: Value) -> (Arc<Value>, ToolMeta, Vec<tollgate_policy::TypeMismatch>) {
    let m = meta(tool, &args);
    (Arc::new(args), m, Vec::new())
}

fn probe_tools() -> Vec<ProbeTool> {
    TOOLS
        .iter()
        .map(|t| ProbeTool {
            name: (*t).to_owned(),
            class_values: if *t == "manage" {
                BTreeMap::from([("op".to_owned(), vec![json!("read"), json!("delete")])])
            } else {
                BTreeMap::new()
            },
        })
        .collect()
}

fn action() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("allow")),
        Just(Some("deny")),
        Just(Some("require_approval")),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("read")),
        Just(json!("delete")),
        Just(json!("dev-x")),
        Just(json!(1)),
        Just(json!(3)),
        Just(json!(2.5)),
        Just(json!(true)),
        Just(json!(0)),
    ]
}

/// Checks on one argument: a few of every kind but `pattern` (see `diff`'s module docs).
fn arg_rule() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(proptest::collection::vec(scalar(), 1..3)),
        proptest::option::of(proptest::collection::vec(scalar(), 1..3)),
        proptest::option::of(prop_oneof![Just(0.0), Just(2.5), Just(3.0)]),
        proptest::option::of(prop_oneof![Just(3.0), Just(10.0)]),
        proptest::option::of(prop_oneof![Just("dev-"), Just("prod-")]),
        proptest::option::of(prop_oneof![Just(2u64), Just(4u64)]),
        any::<bool>(),
    )
        .prop_map(
            |(one_of, not_enum, min, max, prefix, max_length, required)| {
                let mut m = Map::new();
                if let Some(v) = one_of {
                    m.insert("enum".into(), json!(v));
                }
                if let Some(v) = not_enum {
                    m.insert("not_enum".into(), json!(v));
                }
                if let Some(v) = min {
                    m.insert("min".into(), json!(v));
                }
                if let Some(v) = max {
                    m.insert("max".into(), json!(v));
                }
                if let Some(v) = prefix {
                    m.insert("prefix".into(), json!(v));
                }
                if let Some(v) = max_length {
                    m.insert("max_length".into(), json!(v));
                }
                if required {
                    m.insert("required".into(), json!(true));
                }
                Value::Object(m)
            },
        )
}

fn leaf_rule() -> impl Strategy<Value = Value> {
    (
        action(),
        proptest::option::of((prop_oneof![Just("op"), Just("n"), Just("name")], arg_rule())),
        proptest::option::of((1u32..3, prop_oneof![Just(60u64), Just(3600u64)])),
        proptest::option::of(prop_oneof![Just(60u64), Just(300u64)]),
    )
        .prop_map(|(action, check, limit, timeout)| {
            let mut m = Map::new();
            if let Some(a) = action {
                m.insert("action".into(), json!(a));
                if a == "require_approval"
                    && let Some(t) = timeout
                {
                    let via = if t == 60 { "elicitation" } else { "operators" };
                    m.insert("approval".into(), json!({"timeout": t, "via": via}));
                }
            }
            if let Some((name, rule)) = check {
                m.insert("arguments".into(), json!({ name: rule }));
            }
            if let Some((max, window)) = limit
                && action != Some("deny")
            {
                m.insert("rate_limit".into(), json!({"max": max, "window": window}));
            }
            Value::Object(m)
        })
}

fn rule() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => leaf_rule(),
        1 => (
            proptest::collection::btree_map(
                prop_oneof![Just("read"), Just("delete"), Just("1"), Just("true")],
                leaf_rule(),
                1..3
            ),
            proptest::option::of(leaf_rule()),
        )
            .prop_map(|(cases, otherwise)| {
                let mut when = json!({"argument": "op", "cases": cases});
                if let Some(o) = otherwise {
                    when["otherwise"] = o;
                }
                json!({ "when": when })
            }),
    ]
}

fn policy() -> impl Strategy<Value = Arc<Policy>> {
    (
        prop_oneof![Just("allow"), Just("deny"), Just("require_approval")],
        proptest::collection::btree_map(
            prop_oneof![
                Just("get_logs"),
                Just("manage"),
                Just("Delete*"),
                Just("*_tool"),
                Just("class:destructive"),
                Just("class:read"),
                Just("annotation:destructiveHint"),
            ],
            rule(),
            0..4,
        ),
    )
        .prop_filter_map("the policy is valid", |(default, tools)| {
            let doc = json!({"version": "1", "default": default, "tools": tools});
            Policy::parse("p.json", &serde_json::to_string_pretty(&doc).ok()?)
                .ok()
                .map(Arc::new)
        })
}

/// A random call to a random tool with values around every bound the generators use.
fn call() -> impl Strategy<Value = (&'static str, Value)> {
    let op = prop_oneof![
        Just(json!("read")),
        Just(json!("delete")),
        Just(json!("READ")),
        Just(json!("1")),
        Just(json!(1)),
        Just(json!(true)),
        Just(json!("yes")),
        Just(json!("other")),
        Just(json!(3)),
    ];
    let n = prop_oneof![
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(2.7)),
        Just(json!(3)),
        Just(json!(3.5)),
        Just(json!(10)),
        Just(json!(11)),
        Just(json!("3")),
        Just(json!(false)),
    ];
    let name = prop_oneof![
        Just(json!("")),
        Just(json!("aa")),
        Just(json!("aaa")),
        Just(json!("aaaaa")),
        Just(json!("dev-x")),
        Just(json!("dev-")),
        Just(json!("prod-1")),
        Just(json!([1, 2, 3])),
        Just(json!(0)),
    ];
    (
        proptest::sample::select(TOOLS.to_vec()),
        proptest::option::of(op),
        proptest::option::of(n),
        proptest::option::of(name),
    )
        .prop_map(|(tool, op, n, name)| {
            let mut m = Map::new();
            for (k, v) in [("op", op), ("n", n), ("name", name)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            (tool, Value::Object(m))
        })
}

/// What a call comes to under `policy` on fresh counters, by the engine's `decide`: the
/// decision, its approval terms, and the counters it is measured against (with their keys,
/// which say the scope).
fn decided(policy: &Arc<Policy>, tool: &str, args: &Value) -> String {
    let engine = Engine::new(Arc::clone(policy), Arc::new(MemoryStore::new()));
    let (arguments, meta, _) = prepare(tool, args.clone());
    let call = Call {
        tool: Arc::from(tool),
        arguments,
        grant: Arc::from(diff::PROBE_GRANT),
        session: Arc::from(diff::PROBE_SESSION),
        meta,
    };
    let d: Decision = engine.decide(&call, Duration::ZERO);
    let terms = match &d.kind {
        DecisionKind::ApprovalRequired {
            timeout,
            on_timeout,
            via,
        } => format!(" {timeout:?} {on_timeout:?} {via:?}"),
        _ => String::new(),
    };
    let mut limits: Vec<String> = match d.kind {
        DecisionKind::Allow | DecisionKind::ApprovalRequired { .. } => d
            .limits
            .iter()
            .map(|l| format!("{} {} {:?} {}", l.counter, l.max, l.window, l.key))
            .collect(),
        _ => Vec::new(),
    };
    limits.sort();
    format!("{}{terms} {limits:?}", d.kind.name())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// Soundness: a tool with no reported change decides every call alike under both
    /// policies, and every change a call of a changed tool undergoes (its old and new outcome)
    /// is shown by a counterexample; and every reported change is a real difference.
    #[test]
    fn calls_diff_calls_unchanged_decide_alike_every_change_has_a_counterexample_and_every_reported_change_is_real(
        old in policy(),
        new in policy(),
        calls in proptest::collection::vec(call(), 1..24),
    ) {
        let report = diff::diff(&old, &new, &probe_tools(), &prepare);
        prop_assert!(report.partial.is_empty());
        let changed: BTreeSet<&str> =
            report.changed_calls.iter().map(|c| c.tool.as_str()).collect();
        for (tool, args) in &calls {
            let (a, b) = (decided(&old, tool, args), decided(&new, tool, args));
            if !changed.contains(tool) {
                prop_assert_eq!(a, b, "`{}` {} is said unchanged", tool, args);
            } else if a != b {
                // A call that changes has a counterexample of the same change: the same old
                // and new outcome, on the same tool.
                let shown = report.changed_calls.iter().any(|c| {
                    c.tool == *tool
                        && decided(&old, &c.tool, &c.arguments) == a
                        && decided(&new, &c.tool, &c.arguments) == b
                });
                prop_assert!(shown, "`{}` {} changes {} -> {}, and no counterexample shows it", tool, args, a, b);
            }
        }
        for c in &report.changed_calls {
            prop_assert_ne!(
                decided(&old, &c.tool, &c.arguments),
                decided(&new, &c.tool, &c.arguments),
                "reported change of `{}` {} is not real", c.tool, c.arguments
            );
        }
    }

    /// A policy compared with itself (and with itself reformatted) changes nothing.
    #[test]
    fn a_policy_diffed_with_itself_reformatted_changes_nothing(p in policy()) {
        let compact = serde_json::to_string(&p.doc).unwrap();
        let again = Arc::new(Policy::parse("q.json", &compact).unwrap());
        let report = diff::diff(&p, &again, &probe_tools(), &prepare);
        prop_assert!(report.unchanged(), "{:?}", report);
    }
}

/// Lowering a limit and turning a case to deny are both reported, with the call that shows
/// each (the counterexample) and nothing else.
#[test]
fn a_lowered_limit_and_a_new_deny_are_reported() {
    let old = Policy::parse(
        "old.json",
        r#"{"version":"1","default":"deny","tools":{"manage":{"when":{"argument":"op","cases":{
            "read":{"limits":[{"counter":"reads","max":10,"window":"minute"}]},
            "delete":{"action":"require_approval"}}}}}}"#,
    )
    .unwrap();
    let new = Policy::parse(
        "new.json",
        r#"{"version":"1","default":"deny","tools":{"manage":{"when":{"argument":"op","cases":{
            "read":{"limits":[{"counter":"reads","max":5,"window":"minute"}]},
            "delete":{"action":"deny"}}}}}}"#,
    )
    .unwrap();
    let report = diff::diff(&Arc::new(old), &Arc::new(new), &probe_tools(), &prepare);
    let limits: Vec<String> = report
        .changed_limits
        .iter()
        .map(|l| {
            format!(
                "{} {:?} -> {:?}",
                l.counter,
                l.old.as_ref().map(|t| t.max),
                l.new.as_ref().map(|t| t.max)
            )
        })
        .collect();
    assert_eq!(limits, ["reads Some(10) -> Some(5)"]);
    let calls: BTreeSet<String> = report
        .changed_calls
        .iter()
        .map(|c| {
            format!(
                "{} {} {} -> {}",
                c.tool, c.arguments["op"], c.old.decision, c.new.decision
            )
        })
        .collect();
    assert!(
        calls.contains("manage \"delete\" approval_required -> deny"),
        "{calls:?}"
    );
    assert!(
        calls.contains("manage \"read\" allow -> allow"),
        "{calls:?}"
    );
    assert!(report.changed_calls.iter().all(|c| c.tool == "manage"));
}

/// Each call `diff` reports changed between two policy texts, as "ARGUMENTS OLD -> NEW".
fn changed_arguments(old: &str, new: &str) -> Vec<String> {
    let old = Policy::parse("old.json", old).unwrap();
    let new = Policy::parse("new.json", new).unwrap();
    diff::diff(&Arc::new(old), &Arc::new(new), &probe_tools(), &prepare)
        .changed_calls
        .iter()
        .map(|c| format!("{} {} -> {}", c.arguments, c.old.decision, c.new.decision))
        .collect()
}

/// A change only between two bounds (a range narrowed to its two ends) is found: the probes
/// include a value between every two bounds, not only the bounds.
#[test]
fn a_change_only_between_two_bounds_is_found() {
    let calls = changed_arguments(
        r#"{"version":"1","default":"deny","tools":{"get_logs":{"arguments":{"n":{"min":2.5,"max":3}}}}}"#,
        r#"{"version":"1","default":"deny","tools":{"get_logs":{"arguments":{"n":{"enum":[2.5,3]}}}}}"#,
    );
    assert_eq!(calls, [r#"{"n":2.75} allow -> invalid_arguments"#]);
}

/// A limit that starts counting upstream errors instead of calls is a changed limit (its
/// `counts` in both terms and texts), and every call under it is a changed call (what it is
/// counted against differs).
#[test]
fn a_limit_that_now_counts_errors_is_reported() {
    let text = |counts: &str| {
        format!(
            r#"{{"version":"1","default":"deny","tools":{{"get_logs":{{"limits":[
                {{"counter":"creates","max":3,"window":"10m"{counts}}}]}}}}}}"#
        )
    };
    let old = Policy::parse("old.json", &text("")).unwrap();
    let new = Policy::parse("new.json", &text(r#","counts":"errors""#)).unwrap();
    let report = diff::diff(&Arc::new(old), &Arc::new(new), &probe_tools(), &prepare);
    let limits: Vec<String> = report
        .changed_limits
        .iter()
        .map(|l| {
            format!(
                "{} -> {}",
                l.old.as_ref().map(|t| t.text()).unwrap_or_default(),
                l.new.as_ref().map(|t| t.text()).unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        limits,
        ["creates: 3 per 10m, scope grant -> creates: 3 errors per 10m, scope grant"]
    );
    assert!(
        report.changed_calls.iter().any(|c| c.tool == "get_logs"),
        "{report:?}"
    );
}

/// The tools `diff` probes besides the catalogue's: every exact name either policy gives, a name
/// each glob matches, and one name no rule gives (standing for every other tool), once each, in
/// order after the catalogue's.
#[test]
fn the_probed_tools_add_every_named_tool_a_glob_witness_and_an_unnamed_tool() {
    let old = Policy::parse(
        "old.json",
        r#"{"version":"1","default":"allow","tools":{"get_logs":{"action":"deny"},"drop_*":{"action":"deny"}}}"#,
    )
    .unwrap();
    let new = Policy::parse(
        "new.json",
        r#"{"version":"1","default":"allow","tools":{"rotate_keys":{"action":"deny"},"get_logs":{"action":"allow"}}}"#,
    )
    .unwrap();
    let catalogue = vec![ProbeTool {
        name: "get_logs".to_owned(),
        class_values: BTreeMap::new(),
    }];
    let names: Vec<String> = diff::named_tools(&old, &new, catalogue)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names[0], "get_logs");
    assert!(names[1].starts_with("drop_"), "{names:?}");
    assert_eq!(names[2], "rotate_keys");
    assert_eq!(names[3], diff::UNNAMED_TOOL);
}

/// Probe numbers are written as a person writes them: a bound's neighbours and midpoints that
/// are whole are integers in the counterexamples (`8`, not `8.0`).
#[test]
fn whole_probe_numbers_are_reported_as_integers() {
    let calls = changed_arguments(
        r#"{"version":"1","default":"deny","tools":{"get_logs":{"arguments":{"n":{"max":10}}}}}"#,
        r#"{"version":"1","default":"deny","tools":{"get_logs":{"arguments":{"n":{"max":6}}}}}"#,
    );
    assert_eq!(calls, [r#"{"n":8} allow -> invalid_arguments"#]);
}
