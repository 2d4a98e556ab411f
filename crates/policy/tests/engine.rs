//! The decision engine end to end on small policies: rule selection and its precedence,
//! branches on an argument, every kind of argument check (with JSON paths), limits shared
//! through a counter, approval, and `explain` taking nothing from the counters.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_policy::{
    Annotation, ApprovalVia, Call, DecisionKind, Engine, MemoryStore, Policy, RiskClass,
    TimeoutOutcome, ToolMeta,
};

fn engine(policy: Value) -> Engine {
    let text = serde_json::to_string_pretty(&policy).unwrap();
    let policy = Policy::parse("test.json", &text).unwrap_or_else(|d| panic!("{d}"));
    Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()))
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

fn with_meta(mut c: Call, class: Option<RiskClass>, annotations: &[Annotation]) -> Call {
    c.meta = ToolMeta {
        class,
        annotations: std::sync::Arc::new(annotations.iter().copied().collect()),
        defaults: None,
        upstream: None,
    };
    c
}

const T0: Duration = Duration::ZERO;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Exact beats pattern, the more specific pattern beats the less, patterns beat classes,
/// classes beat annotations, and the default takes the rest.
#[test]
fn precedence_exact_then_specific_pattern_then_class_then_annotation_then_default() {
    let e = engine(json!({
        "version": "1", "default": "deny",
        "tools": {
            "DeleteEKSCluster": {"action": "require_approval", "reason": "exact"},
            "DeleteEKS*": {"action": "deny", "reason": "specific pattern"},
            "Delete*": {"reason": "broad pattern"},
            "class:destructive": {"action": "deny", "reason": "class"},
            "annotation:readOnlyHint": {"reason": "read-only"}
        }
    }));
    let reason = |c: Call| e.decide(&c, T0).reason.map(|r| r.to_string());
    assert_eq!(
        reason(call("DeleteEKSCluster", json!({}))).as_deref(),
        Some("exact")
    );
    assert_eq!(
        reason(call("DeleteEKSNodegroup", json!({}))).as_deref(),
        Some("specific pattern")
    );
    assert_eq!(
        reason(call("DeleteIAMRole", json!({}))).as_deref(),
        Some("broad pattern")
    );
    let destructive = with_meta(
        call("TerminateThing", json!({})),
        Some(RiskClass::Destructive),
        &[Annotation::ReadOnly],
    );
    assert_eq!(reason(destructive).as_deref(), Some("class"));
    let read = with_meta(
        call("list_things", json!({})),
        Some(RiskClass::Read),
        &[Annotation::ReadOnly],
    );
    assert_eq!(reason(read).as_deref(), Some("read-only"));
    let other = e.decide(&call("list_k8s_resources", json!({})), T0);
    assert_eq!(other.kind, DecisionKind::Deny);
    assert_eq!(&*other.rule.pointer, "/default");
    assert_eq!(
        other.reason.as_deref(),
        Some("no rule names `list_k8s_resources` and the policy's default is deny")
    );
}

/// Exact names are case-sensitive: a near miss in case falls to the default.
#[test]
fn exact_names_are_case_sensitive() {
    let e = engine(json!({"version": "1", "default": "deny", "tools": {"CancelAHORunBatch": {}}}));
    assert_eq!(
        e.decide(&call("CancelAHORunBatch", json!({})), T0).kind,
        DecisionKind::Allow
    );
    assert_eq!(
        e.decide(&call("cancelAHORunBatch", json!({})), T0).kind,
        DecisionKind::Deny
    );
    assert_eq!(
        e.decide(&call("CancelAHORunBatch ", json!({})), T0).kind,
        DecisionKind::Deny
    );
}

/// The seed's policy: ten cancels per minute per grant, the eleventh refused with the exact
/// time until the oldest leaves the window; another grant has its own budget.
#[test]
fn seed_policy_admits_ten_per_minute_per_grant_and_says_when_to_retry() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policies/seed.json"
    ))
    .unwrap();
    let e = Engine::new(
        Arc::new(Policy::parse("seed.json", &text).unwrap()),
        Arc::new(MemoryStore::new()),
    );
    let c = call("CancelAHORunBatch", json!({"batchId": "rb-0001"}));
    for i in 0..10 {
        let d = e.decide(&c, Duration::from_millis(1200 * i));
        assert_eq!(d.kind, DecisionKind::Allow, "call {i}");
        assert_eq!(d.limits[0].used, u32::try_from(i).unwrap() + 1);
    }
    let d = e.decide(&c, secs(12));
    assert_eq!(
        d.kind,
        DecisionKind::RateLimited {
            retry_after: secs(48)
        }
    );
    assert_eq!(d.limits[0].used, 10);
    assert_eq!(d.limits[0].oldest_leaves_at, Some(secs(60)));
    assert_eq!(
        d.summary("CancelAHORunBatch"),
        "`CancelAHORunBatch` rate limited by rule `CancelAHORunBatch` (/tools/CancelAHORunBatch) (cancelahorunbatch_rate 10/10 per minute); retry in 48s"
    );
    let mut other = c.clone();
    other.grant = "other-bot".into();
    assert_eq!(e.decide(&other, secs(12)).kind, DecisionKind::Allow);
    // At 60 s the first call leaves the window (half-open: (now - 60 s, now]).
    assert_eq!(e.decide(&c, secs(60)).kind, DecisionKind::Allow);
    assert!(matches!(
        e.decide(&c, secs(60)).kind,
        DecisionKind::RateLimited { .. }
    ));
}

/// Every `Delete*` tool draws on one `destructive_budget`, whichever rule names it.
#[test]
fn a_counter_named_by_several_rules_is_one_budget() {
    let budget =
        json!([{"counter": "destructive_budget", "window": "1h", "max": 3, "scope": "global"}]);
    let e = engine(json!({
        "version": "1", "default": "deny",
        "tools": {
            "DeleteEKSCluster": {"limits": budget},
            "Delete*": {"limits": budget},
        }
    }));
    let tools = ["DeleteEKSCluster", "DeleteIAMRole", "DeleteCFNStack"];
    for tool in tools {
        assert_eq!(
            e.decide(&call(tool, json!({})), secs(1)).kind,
            DecisionKind::Allow
        );
    }
    let mut c = call("DeleteECRRepository", json!({}));
    c.grant = "someone-else".into();
    let d = e.decide(&c, secs(2));
    assert_eq!(
        d.kind,
        DecisionKind::RateLimited {
            retry_after: secs(3599)
        },
        "global scope"
    );
}

/// The `rate_limit` shorthand counts per session (as the seed's documentation says), so a new
/// session starts with a fresh budget.
#[test]
fn rate_limit_shorthand_counts_per_session() {
    let e = engine(json!({"version": "1", "default": "deny",
        "tools": {"get_pod_logs": {"rate_limit": {"max": 2, "window": 60}}}}));
    let c = call("get_pod_logs", json!({}));
    assert_eq!(e.decide(&c, T0).kind, DecisionKind::Allow);
    assert_eq!(e.decide(&c, T0).kind, DecisionKind::Allow);
    let d = e.decide(&c, T0);
    assert_eq!(
        d.kind,
        DecisionKind::RateLimited {
            retry_after: secs(60)
        }
    );
    assert_eq!(&*d.limits[0].counter, "rate_limit:get_pod_logs");
    let mut s2 = c.clone();
    s2.session = "s2".into();
    assert_eq!(e.decide(&s2, T0).kind, DecisionKind::Allow);
}

fn manage_policy() -> Value {
    json!({
        "version": "1", "default": "deny",
        "tools": {
            "manage_k8s_resource": {
                "arguments": {"cluster_name": {"required": true, "prefix": "staging-"}},
                "when": {
                    "argument": "operation",
                    "cases": {
                        "read": {"rate_limit": {"max": 100, "window": "minute"}},
                        "delete": {
                            "action": "require_approval",
                            "reason": "deleting Kubernetes resources needs a human",
                            "approval": {"timeout": "10m"},
                            "limits": [{"counter": "k8s_deletes", "window": "hour", "max": 2}]
                        },
                        "create": {"action": "deny", "reason": "creation goes through CI"}
                    }
                }
            }
        }
    })
}

/// One tool, two operations, two outcomes: the real EKS server decides mutation by the
/// `operation` argument, so the policy branches on it, each case with its own limits.
#[test]
fn branches_on_operation_give_each_case_its_own_action_and_limits() {
    let e = engine(manage_policy());
    let args = |op: &str| json!({"operation": op, "cluster_name": "staging-eks", "kind": "Pod"});
    let read = e.decide(&call("manage_k8s_resource", args("read")), T0);
    assert_eq!(read.kind, DecisionKind::Allow);
    assert_eq!(
        &*read.rule.pointer,
        "/tools/manage_k8s_resource/when/cases/read"
    );
    assert_eq!(
        &*read.limits[0].counter,
        "rate_limit:manage_k8s_resource[operation=read]"
    );
    let delete = e.decide(&call("manage_k8s_resource", args("delete")), T0);
    assert_eq!(
        delete.kind,
        DecisionKind::ApprovalRequired {
            timeout: secs(600),
            on_timeout: TimeoutOutcome::Deny,
            via: ApprovalVia::Operators
        }
    );
    assert_eq!(
        delete.reason.as_deref(),
        Some("deleting Kubernetes resources needs a human")
    );
    let create = e.decide(&call("manage_k8s_resource", args("create")), T0);
    assert_eq!(create.kind, DecisionKind::Deny);
}

/// Held calls are measured, not counted: holding many deletes takes nothing; approving takes
/// at the approval's instant, all or nothing; once two approved deletes fill the hour, the
/// next one is rate limited at once (nobody is asked) and a third approval finds the budget
/// full and takes nothing (a refused call consumes nothing).
#[test]
fn approval_takes_the_budget_when_approved_not_when_held() {
    let e = engine(manage_policy());
    let delete = call(
        "manage_k8s_resource",
        json!({"operation": "delete", "cluster_name": "staging-eks", "kind": "Pod"}),
    );
    for i in 0..5 {
        assert!(matches!(
            e.decide(&delete, secs(i)).kind,
            DecisionKind::ApprovalRequired { .. }
        ));
    }
    let first = e.admit_approved(&delete, secs(10));
    assert_eq!(first.kind, DecisionKind::Allow);
    assert_eq!(first.limits[0].used, 1);
    assert_eq!(
        &*first.rule.pointer,
        "/tools/manage_k8s_resource/when/cases/delete"
    );
    assert_eq!(
        e.admit_approved(&delete, secs(20)).kind,
        DecisionKind::Allow
    );
    // The hour is full: a new delete is refused without asking anybody.
    assert_eq!(
        e.decide(&delete, secs(30)).kind,
        DecisionKind::RateLimited {
            retry_after: secs(3580)
        }
    );
    // A call held before the budget filled, approved now, is refused and takes nothing.
    let late = e.admit_approved(&delete, secs(40));
    assert_eq!(
        late.kind,
        DecisionKind::RateLimited {
            retry_after: secs(3570)
        }
    );
    assert_eq!(late.limits[0].used, 2);
    // An hour after the first approval, the budget has room again.
    assert_eq!(
        e.admit_approved(&delete, secs(3610)).kind,
        DecisionKind::Allow
    );
}

/// A value no case names, or a missing branch argument, is an invalid argument when there is
/// no `otherwise`; checks on the rule apply before the branch.
#[test]
fn an_unnamed_case_without_otherwise_is_an_invalid_argument() {
    let e = engine(manage_policy());
    let d = e.decide(
        &call(
            "manage_k8s_resource",
            json!({"operation": "patch", "cluster_name": "prod-eks"}),
        ),
        T0,
    );
    let DecisionKind::InvalidArguments { violations } = d.kind else {
        panic!("{d:?}")
    };
    let text: Vec<String> = violations
        .iter()
        .map(|v| format!("{} {}", v.path, v.message))
        .collect();
    assert_eq!(
        text,
        [
            "$.cluster_name must start with `staging-`, not \"prod-eks\"",
            "$.operation must be one of `create`, `delete`, `read`, not \"patch\"",
        ]
    );
    let d = e.decide(
        &call("manage_k8s_resource", json!({"cluster_name": "staging-a"})),
        T0,
    );
    let DecisionKind::InvalidArguments { violations } = d.kind else {
        panic!("{d:?}")
    };
    assert_eq!(
        violations[0].message,
        "is required: one of `create`, `delete`, `read`"
    );
}

/// `otherwise` takes every value the cases do not name.
#[test]
fn otherwise_takes_the_other_values() {
    let e = engine(
        json!({"version": "1", "default": "deny", "tools": {"manage_eks_stacks": {
        "when": {"argument": "operation", "cases": {"describe": {}},
                 "otherwise": {"action": "deny", "reason": "stacks are changed by CI"}}}}}),
    );
    let d = e.decide(
        &call("manage_eks_stacks", json!({"operation": "deploy"})),
        T0,
    );
    assert_eq!(d.kind, DecisionKind::Deny);
    assert_eq!(&*d.rule.pointer, "/tools/manage_eks_stacks/when/otherwise");
    let d = e.decide(
        &call("manage_eks_stacks", json!({"operation": "describe"})),
        T0,
    );
    assert_eq!(d.kind, DecisionKind::Allow);
}

/// Each argument check, failing, names the argument's JSON path and says what was expected.
#[test]
fn every_argument_check_reports_its_json_path() {
    let e = engine(
        json!({"version": "1", "default": "deny", "tools": {"t": {"arguments": {
            "a": {"enum": ["x", "y"]},
            "b": {"not_enum": ["kube-system"]},
            "c": {"pattern": "^[a-z-]+$"},
            "d": {"min": 1, "max": 10},
            "e": {"max_length": 3},
            "f": {"required": true},
            "g": {"forbidden": true},
            "odd name": {"prefix": "ok"}
        }}}}),
    );
    let d = e.decide(&call("t", json!({
        "a": "z", "b": "kube-system", "c": "Bad_Name", "d": 11, "e": "long", "g": true, "odd name": "no"
    })), T0);
    let DecisionKind::InvalidArguments { violations } = d.kind else {
        panic!("{d:?}")
    };
    let text: Vec<String> = violations
        .iter()
        .map(|v| format!("{} {}", v.path, v.message))
        .collect();
    assert_eq!(
        text,
        [
            "$.a must be one of \"x\", \"y\", not \"z\"",
            "$.b must not be \"kube-system\"",
            "$.c \"Bad_Name\" does not match the pattern `^[a-z-]+$`",
            "$.d must be at most 10, not 11",
            "$.e is 4 long, over the maximum of 3",
            "$.f is required",
            "$.g must not be given",
            "$[\"odd name\"] must start with `ok`, not \"no\"",
        ]
    );
    let ok = e.decide(&call("t", json!({"a": "x", "b": "default", "c": "fine", "d": 1, "e": "abc", "f": 0, "odd name": "okay"})), T0);
    assert_eq!(ok.kind, DecisionKind::Allow);
    // Wrong types are violations too, never a pass.
    let d = e.decide(&call("t", json!({"c": 5, "d": "5", "e": {}, "f": 1})), T0);
    let DecisionKind::InvalidArguments { violations } = d.kind else {
        panic!("{d:?}")
    };
    assert_eq!(violations.len(), 3, "{violations:?}");
}

/// An argument check never lets through a call whose arguments are not an object.
#[test]
fn non_object_arguments_fail_required_checks() {
    let e = engine(
        json!({"version": "1", "default": "deny", "tools": {"t": {"arguments": {"f": {"required": true}}}}}),
    );
    for args in [json!(null), json!([1]), json!("f")] {
        let d = e.decide(&call("t", args.clone()), T0);
        assert!(
            matches!(d.kind, DecisionKind::InvalidArguments { .. }),
            "{args}"
        );
    }
}

/// Invalid arguments take nothing from the counters: a rejected call does not burn budget.
#[test]
fn invalid_arguments_take_nothing_from_the_limits() {
    let e = engine(json!({"version": "1", "default": "deny", "tools": {"t": {
        "arguments": {"f": {"required": true}},
        "limits": [{"counter": "c", "window": 60, "max": 1}]}}}));
    for _ in 0..5 {
        let d = e.decide(&call("t", json!({})), T0);
        assert!(matches!(d.kind, DecisionKind::InvalidArguments { .. }));
    }
    assert_eq!(
        e.decide(&call("t", json!({"f": 1})), T0).kind,
        DecisionKind::Allow
    );
}

/// Approval without a timeout uses the policy-wide default, then five minutes.
#[test]
fn approval_timeouts_come_from_the_rule_the_policy_or_five_minutes() {
    let e = engine(json!({"version": "1", "default": "require_approval",
        "approval": {"timeout": "2m", "on_timeout": "allow"},
        "tools": {"a": {"action": "require_approval", "approval": {"timeout": 30}}}}));
    assert_eq!(
        e.decide(&call("a", json!({})), T0).kind,
        DecisionKind::ApprovalRequired {
            timeout: secs(30),
            on_timeout: TimeoutOutcome::Deny,
            via: ApprovalVia::Operators
        }
    );
    assert_eq!(
        e.decide(&call("other", json!({})), T0).kind,
        DecisionKind::ApprovalRequired {
            timeout: secs(120),
            on_timeout: TimeoutOutcome::Allow,
            via: ApprovalVia::Operators
        }
    );
    let e = engine(json!({"version": "1", "default": "require_approval"}));
    assert_eq!(
        e.decide(&call("x", json!({})), T0).kind,
        DecisionKind::ApprovalRequired {
            timeout: secs(300),
            on_timeout: TimeoutOutcome::Deny,
            via: ApprovalVia::Operators
        }
    );
}

/// `explain` reports what `decide` would say and takes nothing: explaining a hundred times
/// leaves the budget whole.
#[test]
fn explain_takes_nothing_from_the_counters() {
    let e = engine(json!({"version": "1", "default": "deny", "tools": {
        "Cancel*": {"reason": "broad"},
        "CancelAHORunBatch": {"limits": [{"counter": "c", "window": "minute", "max": 1}]}}}));
    let c = call("CancelAHORunBatch", json!({}));
    for _ in 0..100 {
        assert_eq!(e.explain(&c, T0).decision.kind, DecisionKind::Allow);
    }
    let x = e.explain(&c, T0);
    assert_eq!(x.candidates.len(), 2);
    assert_eq!(&*x.candidates[0].selector, "CancelAHORunBatch");
    assert_eq!(e.decide(&c, T0).kind, DecisionKind::Allow);
    assert!(matches!(
        e.explain(&c, T0).decision.kind,
        DecisionKind::RateLimited { .. }
    ));
}

/// The decision as JSON: the shape the gateway, the audit log and transcripts print.
#[test]
fn decisions_serialize_with_their_rule_and_counters() {
    let e = engine(json!({"version": "1", "default": "deny", "tools": {
        "CancelAHORunBatch": {"reason": "runaway guard", "limits": [{"counter": "c", "window": "minute", "max": 1}]}}}));
    let c = call("CancelAHORunBatch", json!({}));
    e.decide(&c, T0);
    let d = e.decide(&c, secs(12));
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        json!({
            "decision": "rate_limited",
            "retry_after_seconds": 48.0,
            "rule": {"selector": "CancelAHORunBatch", "pointer": "/tools/CancelAHORunBatch", "line": 4, "column": 5},
            "reason": "runaway guard",
            "limits": [{"counter": "c", "key": "ci-bot", "used": 1, "max": 1,
                        "window_seconds": 60.0, "oldest_leaves_at_seconds": 60.0}]
        })
    );
}

/// `hide_from_list` support: which tools a policy refuses whatever the arguments.
#[test]
fn always_denies_knows_unconditional_refusals() {
    let e = engine(json!({"version": "1", "default": "deny", "tools": {
        "ok": {}, "no": {"action": "deny"}, "manage": {"when": {"argument": "operation",
            "cases": {"read": {}}, "otherwise": {"action": "deny"}}}}}));
    let p = e.policy();
    let meta = ToolMeta::default();
    assert!(p.always_denies("unknown", &meta));
    assert!(p.always_denies("no", &meta));
    assert!(!p.always_denies("ok", &meta));
    assert!(!p.always_denies("manage", &meta));
}

/// A counter store that never answers, as a Redis store does when Redis is down.
#[derive(Debug)]
struct DownStore(tollgate_policy::FailMode);

impl tollgate_policy::CounterStore for DownStore {
    fn record(
        &self,
        limits: &[(
            tollgate_policy::limiter::CounterKey,
            tollgate_policy::limiter::LimitSpec,
        )],
        now: Duration,
    ) -> tollgate_policy::Acquire {
        self.acquire(limits, now, false)
    }

    fn acquire(
        &self,
        _: &[(
            tollgate_policy::limiter::CounterKey,
            tollgate_policy::limiter::LimitSpec,
        )],
        _: Duration,
        _: bool,
    ) -> tollgate_policy::Acquire {
        tollgate_policy::Acquire::Unavailable {
            store: "redis://127.0.0.1:1/0".into(),
            reason: "connection refused".into(),
            mode: self.0,
        }
    }
}

fn engine_over(policy: Value, store: DownStore) -> Engine {
    let text = serde_json::to_string_pretty(&policy).unwrap();
    let policy = Policy::parse("test.json", &text).unwrap_or_else(|d| panic!("{d}"));
    Engine::new(Arc::new(policy), Arc::new(store))
}

/// With the store down and failing closed, a limited call is refused as `store_unavailable`
/// naming the store and the cause; calls without limits never ask the store and are decided as
/// usual.
#[test]
fn an_unavailable_store_fails_closed_for_limited_calls_only() {
    use tollgate_policy::FailMode;
    let e = engine_over(
        json!({"version": "1", "default": "allow", "tools": {
            "CancelAHORunBatch": {"limits": [{"counter": "c", "window": "minute", "max": 5}]}}}),
        DownStore(FailMode::Closed),
    );
    let d = e.decide(&call("CancelAHORunBatch", json!({})), T0);
    assert_eq!(d.kind, DecisionKind::StoreUnavailable);
    assert!(!d.admits());
    let f = d.store_unavailable.as_ref().unwrap();
    assert_eq!(
        (&*f.store, f.reason.as_str(), f.outcome),
        (
            "redis://127.0.0.1:1/0",
            "connection refused",
            FailMode::Closed
        )
    );
    let record = serde_json::to_value(&d).unwrap();
    assert_eq!(record["decision"], "store_unavailable");
    assert_eq!(record["store_unavailable"]["outcome"], "fail_closed");
    assert!(
        d.summary("CancelAHORunBatch")
            .contains("is unavailable (connection refused)")
    );
    let other = e.decide(&call("ListEKSClusters", json!({})), T0);
    assert_eq!(other.kind, DecisionKind::Allow);
    assert_eq!(other.store_unavailable, None);
}

/// Failing open, the limited call goes on uncounted and the decision says so.
#[test]
fn an_unavailable_store_failing_open_admits_and_records_it() {
    use tollgate_policy::FailMode;
    let e = engine_over(
        json!({"version": "1", "default": "deny", "tools": {
            "CancelAHORunBatch": {"limits": [{"counter": "c", "window": "minute", "max": 5}]}}}),
        DownStore(FailMode::Open),
    );
    let d = e.decide(&call("CancelAHORunBatch", json!({})), T0);
    assert_eq!(d.kind, DecisionKind::Allow);
    assert!(d.limits.is_empty());
    let record = serde_json::to_value(&d).unwrap();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["store_unavailable"]["outcome"], "fail_open");
    assert_eq!(record["store_unavailable"]["reason"], "connection refused");
    assert!(
        e.explain(&call("CancelAHORunBatch", json!({})), T0)
            .render()
            .contains("fail open, the call goes on uncounted")
    );
}

proptest::proptest! {
    /// `seconds_3` writes exactly what `{:.3}` writes of the seconds as a float, for whole
    /// milliseconds (its integer path) and for any other duration (its float path), up to
    /// the largest durations (where the float's digits are no longer the integer's).
    #[test]
    fn seconds_3_writes_what_float_formatting_writes(
        secs in proptest::prop_oneof![0..120u64, 0..(1u64 << 33), (1u64 << 55)..u64::MAX],
        millis in 0..1000u32,
        nanos in proptest::prop_oneof![proptest::strategy::Just(0u32), 0..1_000_000u32],
    ) {
        let d = Duration::new(secs, millis * 1_000_000 + nanos);
        let mut text = String::new();
        tollgate_policy::engine::seconds_3(&mut text, d);
        proptest::prop_assert_eq!(text, format!("{:.3}", d.as_secs_f64()));
    }
}

/// Durations read as people write them: the largest units that are whole, milliseconds when
/// they are not.
#[test]
fn duration_texts() {
    use tollgate_policy::engine::duration_text;
    for (d, want) in [
        (Duration::ZERO, "0s"),
        (Duration::from_secs(45), "45s"),
        (Duration::from_secs(60), "1m"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(3600), "1h"),
        (Duration::from_secs(3661), "1h1m1s"),
        (Duration::from_secs(7260), "2h1m0s"),
        (Duration::from_millis(1500), "1.500s"),
        (Duration::from_millis(59_990), "59.990s"),
        (Duration::from_nanos(1_000_400), "0.001s"),
    ] {
        assert_eq!(duration_text(d), want, "{d:?}");
    }
}

/// docs/policy.md and `check` say the same about annotation selectors (issue 19): they have no
/// order among themselves, so two that can match one tool must carry the same rule. Every pair
/// with different rules is refused as a selector conflict, except `readOnlyHint` with
/// `destructiveHint` (never carried together); a pair with the same rule is accepted.
#[test]
fn annotation_selectors_with_different_rules_conflict_unless_never_carried_together() {
    let all = [
        "readOnlyHint",
        "destructiveHint",
        "idempotentHint",
        "openWorldHint",
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let policy = |rule_b: Value| {
                json!({"version": "1", "default": "deny", "tools": {
                    format!("annotation:{a}"): {"action": "allow"},
                    format!("annotation:{b}"): rule_b,
                }})
                .to_string()
            };
            let different = Policy::parse("p.json", &policy(json!({"action": "deny"})));
            let never_together = (*a, *b) == ("readOnlyHint", "destructiveHint");
            match different {
                Ok(_) => assert!(never_together, "{a} and {b}: accepted with different rules"),
                Err(d) => {
                    assert!(!never_together, "{a} and {b}: refused: {d}");
                    assert!(
                        d.to_string().contains("can match the same tool"),
                        "{a} and {b}: {d}"
                    );
                }
            }
            Policy::parse("p.json", &policy(json!({"action": "allow"})))
                .unwrap_or_else(|d| panic!("{a} and {b} with the same rule: {d}"));
        }
    }
}

/// `upstream:NAME` selects every tool of one upstream, below exact names and patterns and above
/// classes and annotations; a tool of no named upstream (one upstream) never matches it.
#[test]
fn upstream_selector_sits_between_patterns_and_classes() {
    let e = engine(json!({
        "version": "1",
        "default": "deny",
        "tools": {
            "upstream:omics": {"action": "deny", "reason": "omics is off"},
            "omics__get_*": {"action": "allow"},
            "class:read": {"action": "allow"}
        }
    }));
    let of = |tool: &str, upstream: Option<&str>, class: Option<RiskClass>| {
        let mut c = with_meta(call(tool, json!({})), class, &[]);
        c.meta.upstream = upstream.map(std::sync::Arc::from);
        let d = e.decide(&c, T0);
        (d.kind, d.reason)
    };
    let read = Some(RiskClass::Read);
    // The upstream's rule beats the class rule...
    let (kind, reason) = of("omics__CancelAHORunBatch", Some("omics"), read);
    assert_eq!(kind, DecisionKind::Deny);
    assert_eq!(reason.as_deref(), Some("omics is off"));
    // ...and a pattern beats the upstream's rule.
    assert_eq!(
        of("omics__get_k8s_events", Some("omics"), read).0,
        DecisionKind::Allow
    );
    // Another upstream's tool, and a tool of no named upstream, fall to the class.
    assert_eq!(
        of("eks__list_k8s_resources", Some("eks"), read).0,
        DecisionKind::Allow
    );
    assert_eq!(of("list_k8s_resources", None, read).0, DecisionKind::Allow);
    assert_eq!(of("CancelAHORunBatch", None, None).0, DecisionKind::Deny);
}
