//! What a loaded policy reports about itself: `check`'s summary line, the arguments a tool's
//! rule redacts, how long a transport must be ready to hold a call, and the help a refused
//! policy file gets for a bad value or a duplicate key.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_policy::{Policy, ToolMeta};

fn parse(doc: Value) -> Policy {
    Policy::parse("policy.json", &serde_json::to_string_pretty(&doc).unwrap())
        .unwrap_or_else(|d| panic!("{d}"))
}

/// The help and message of every diagnostic a refused policy text gets.
fn refused(text: &str) -> Vec<(String, String)> {
    match Policy::parse("policy.json", text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(d) => {
            d.0.iter()
                .map(|d| (d.message.clone(), d.help.clone().unwrap_or_default()))
                .collect()
        }
    }
}

#[test]
fn the_summary_counts_rules_by_kind_counters_and_names_the_default() {
    let p = parse(json!({
        "version": "1",
        "default": "deny",
        "tools": {
            "get_logs": {"action": "allow", "limits": [{"counter": "reads", "window": "minute", "max": 5}]},
            "delete_*": {"when": {"argument": "/env", "cases": {
                "prod": {"action": "allow", "limits": [{"counter": "prod_deletes", "window": "hour", "max": 1}]}
            }, "otherwise": {"action": "allow", "limits": [{"counter": "reads", "window": "minute", "max": 5}]}}},
            "class:read": {"action": "allow"}
        }
    }));
    assert_eq!(
        p.summary(),
        "3 rules (1 exact, 1 pattern, 1 class), 2 counters, default deny"
    );
    let one = parse(json!({"version": "1", "default": "allow", "tools": {
        "get_logs": {"action": "allow", "limits": [{"counter": "c", "window": "minute", "max": 1}]}
    }}));
    assert_eq!(one.summary(), "1 rule (1 exact), 1 counter, default allow");
    let none = parse(json!({"version": "1", "default": "require_approval", "tools": {}}));
    assert_eq!(
        none.summary(),
        "0 rules, 0 counters, default require_approval"
    );
}

#[test]
fn a_tools_redactions_merge_its_rule_and_every_branch_sorted_once_and_other_tools_have_none() {
    let p = parse(json!({"version": "1", "default": "allow", "tools": {
        "login": {"redact": ["token"], "when": {"argument": "/mode", "cases": {
            "password": {"action": "allow", "redact": ["password", "token"]}
        }, "otherwise": {"action": "allow", "redact": ["api_key"]}}}
    }}));
    let meta = ToolMeta::default();
    assert_eq!(
        p.redactions("login", &meta),
        ["api_key", "password", "token"]
    );
    assert!(p.redactions("get_logs", &meta).is_empty());
}

#[test]
fn the_longest_approval_is_the_longest_hold_of_a_body_that_asks_for_approval() {
    let p = parse(json!({"version": "1", "default": "allow", "tools": {
        "drop_table": {"action": "require_approval", "approval": {"timeout": "30s"}},
        "scale": {"when": {"argument": "/replicas", "cases": {
            "0": {"action": "require_approval", "approval": {"timeout": "90s"}}
        }}}
    }}));
    assert_eq!(p.longest_approval(), Duration::from_secs(90));
    let none = parse(json!({"version": "1", "default": "allow", "tools": {
        "get_logs": {"action": "deny"}
    }}));
    assert_eq!(none.longest_approval(), Duration::ZERO);
}

#[test]
fn a_bad_value_gets_help_for_its_field() {
    let max = refused(
        r#"{"version":"1","default":"allow","tools":{"t":{"action":"allow","limits":[{"counter":"c","window":"minute","max":0}]}}}"#,
    );
    assert!(
        max.iter().any(|(_, h)| h
            == "`max` is a whole number of calls (of errors, with `counts: errors`), at least 1"),
        "{max:?}"
    );
    let redact =
        refused(r#"{"version":"1","default":"allow","tools":{"t":{"action":"allow","redact":5}}}"#);
    assert!(
        redact
            .iter()
            .any(|(_, h)| h == "see docs/policy.md for what `redact` takes"),
        "{redact:?}"
    );
}

#[test]
fn a_duplicate_tool_key_is_named_as_written() {
    let dup = refused(
        r#"{"version":"1","default":"allow","tools":{"team/a~b":{"action":"deny"},"team/a~b":{"action":"allow"}}}"#,
    );
    assert!(
        dup.iter().any(|(m, _)| m == "duplicate key `team/a~b`"),
        "{dup:?}"
    );
}

/// A hostile policy nested far deeper than any real one (open, or closed a million deep) is
/// refused with a diagnostic and never overflows the stack (serde_json stops at 128 levels; the
/// span map's recursive walk is guarded by a depth scan, and the syntax-tree parser refuses such
/// nesting by itself too).
#[test]
fn a_policy_nested_a_million_deep_is_refused_without_crashing() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for text in [
        "[".repeat(100_000),
        deep(1_000_000),
        format!("{{\"version\":\"1\",\"tools\":{}}}", deep(1_000_000)),
    ] {
        let Err(err) = Policy::parse("deep.json", &text) else {
            panic!("a policy nested a million deep was accepted");
        };
        assert!(!err.0.is_empty());
    }
}

/// `check`'s suggestion for a misspelt tool is the closest known name, and nothing when no
/// name is close.
#[test]
fn a_misspelt_tool_gets_the_closest_known_name_and_a_far_one_gets_none() {
    use tollgate_policy::policy::suggest_tool;
    let known = ["get_logs", "list_k8s_resources", "manage_eks_stacks"];
    assert_eq!(suggest_tool("get_log", known.into_iter()), Some("get_logs"));
    assert_eq!(
        suggest_tool("list_k8s_resource", known.into_iter()),
        Some("list_k8s_resources")
    );
    assert_eq!(suggest_tool("zzzz", known.into_iter()), None);
}

/// A rule whose body is refused is left out of the checks between rules, so its error is not
/// followed by errors about a rule that does not exist (two annotation rules that could match
/// one tool are refused together only when both compiled).
#[test]
fn a_refused_rule_body_brings_no_follow_on_errors() {
    let both = refused(
        r#"{"version":"1","default":"allow","tools":{
            "annotation:readOnlyHint":{"action":"allow"},
            "annotation:idempotentHint":{"action":"deny"}}}"#,
    );
    let broken = refused(
        r#"{"version":"1","default":"allow","tools":{
            "annotation:readOnlyHint":{"action":"allow","limits":[{"counter":"","window":"minute","max":1}]},
            "annotation:idempotentHint":{"action":"deny"}}}"#,
    );
    assert!(
        !both.is_empty(),
        "overlapping annotation rules were accepted"
    );
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(broken[0].0, "empty counter name");
}
