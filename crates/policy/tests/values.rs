//! How the engine compares argument values when it does not know their type
//! (docs/policy.md, "How values are compared"): a refusing check refuses every spelling a lax
//! reader (pydantic in lax mode) may take for a refused value, an admitting check admits only a
//! value of the listed value's own JSON kind, a `when` picks a case only for its exact spelling
//! and refuses a look-alike; arguments the gateway found unreadable fail the checks on them;
//! and no message quotes a redacted argument.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_policy::{
    Call, Decision, DecisionKind, Engine, MemoryStore, Policy, ToolMeta, TypeMismatch,
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

fn decide(e: &Engine, tool: &str, arguments: Value) -> Decision {
    e.decide(&call(tool, arguments), Duration::ZERO)
}

/// The violations' `path message` lines, or a panic naming the decision.
fn violations(d: &Decision) -> Vec<String> {
    match &d.kind {
        DecisionKind::InvalidArguments { violations } => violations
            .iter()
            .map(|v| format!("{} {}", v.path, v.message))
            .collect(),
        other => panic!("expected invalid arguments, got {other:?}"),
    }
}

/// The attacker review's finding: `not_enum: [0]` let `0.0`, `-0`, `0e5` and `"0"` through, and
/// `not_enum: [true]` let `"yes"`, `1`, `"TRUE"` and `"on"` through, though the real server
/// reads every one as the refused value. Each is refused now.
#[test]
fn not_enum_refuses_every_spelling_a_lax_reader_takes_for_a_refused_value() {
    let e = engine(
        json!({"version": "1", "default": "allow", "tools": {"t": {"arguments": {
            "n": {"not_enum": [0]}, "b": {"not_enum": [true]}, "s": {"not_enum": ["kube-system"]}
        }}}}),
    );
    for v in [
        json!(0),
        json!(0.0),
        json!(-0.0),
        json!(0e5),
        json!("0"),
        json!(" 0 "),
        json!("-0"),
        json!("0.0"),
        json!("0e5"),
        json!("+0_0"),
        json!(false),
    ] {
        let d = decide(&e, "t", json!({ "n": v }));
        assert_eq!(violations(&d).len(), 1, "{v}: {d:?}");
    }
    for v in [
        json!(true),
        json!("yes"),
        json!(1),
        json!(1.0),
        json!("TRUE"),
        json!("on"),
        json!("t"),
        json!("Y"),
        json!("1"),
    ] {
        let d = decide(&e, "t", json!({ "b": v }));
        assert_eq!(violations(&d).len(), 1, "{v}: {d:?}");
    }
    // Values no reader takes for a refused one pass.
    for args in [
        json!({"n": 1, "b": false, "s": "default"}),
        json!({"n": "zero", "b": "maybe", "s": "Kube-System"}),
        json!({"n": 0.5, "b": 2, "s": " kube-system"}),
    ] {
        assert_eq!(
            decide(&e, "t", args.clone()).kind,
            DecisionKind::Allow,
            "{args}"
        );
    }
    // The message says what was refused and how the value is read.
    let d = decide(&e, "t", json!({"n": "0.0", "b": true}));
    assert_eq!(
        violations(&d),
        [
            "$.b must not be true",
            "$.n must not be 0, and a tool may read \"0.0\" as it",
        ]
    );
}

/// `enum` admits a value only of the listed value's own JSON kind, numbers by value: `1.0` is
/// `1`, but `"1"` and `true` are not.
#[test]
fn enum_admits_only_the_listed_kind_with_numbers_by_value() {
    let e = engine(
        json!({"version": "1", "default": "allow", "tools": {"t": {"arguments": {
            "n": {"enum": [1, 2]}, "b": {"enum": [false]}, "s": {"enum": ["read", "1"]}
        }}}}),
    );
    for args in [
        json!({"n": 1}),
        json!({"n": 1.0}),
        json!({"n": 2e0}),
        json!({"b": false}),
        json!({"s": "read"}),
        json!({"s": "1"}),
    ] {
        assert_eq!(
            decide(&e, "t", args.clone()).kind,
            DecisionKind::Allow,
            "{args}"
        );
    }
    for args in [
        json!({"n": "1"}),
        json!({"n": true}),
        json!({"n": 1.5}),
        json!({"b": 0}),
        json!({"b": "false"}),
        json!({"b": "no"}),
        json!({"s": 1}),
        json!({"s": "READ"}),
    ] {
        let d = decide(&e, "t", args.clone());
        assert_eq!(violations(&d).len(), 1, "{args}: {d:?}");
    }
}

/// `pattern` and `prefix` admit strings only: a number that reads as a matching string is not
/// one.
#[test]
fn pattern_and_prefix_admit_strings_only() {
    let e = engine(
        json!({"version": "1", "default": "allow", "tools": {"t": {"arguments": {
            "p": {"pattern": "^[0-9]+$"}, "x": {"prefix": "1"}
        }}}}),
    );
    assert_eq!(
        decide(&e, "t", json!({"p": "12", "x": "12"})).kind,
        DecisionKind::Allow
    );
    assert_eq!(
        violations(&decide(&e, "t", json!({"p": 12, "x": 12}))),
        [
            "$.p must be a string, not a number",
            "$.x must be a string, not a number"
        ]
    );
}

fn branching_policy() -> Value {
    json!({"version": "1", "default": "allow", "tools": {
        "apply": {"when": {"argument": "force", "cases": {
            "false": {}, "true": {"action": "require_approval", "reason": "forced"}
        }}},
        "scale": {"when": {"argument": "replicas", "cases": {
            "0": {"action": "deny", "reason": "scaling to zero"}
        }, "otherwise": {}}},
        "op": {"when": {"argument": "operation", "cases": {
            "read": {}, "delete": {"action": "deny", "reason": "no deletes"}
        }, "otherwise": {"action": "deny", "reason": "writes go through CI"}}},
        "mixed": {"when": {"argument": "v", "cases": {"1": {}, "true": {}}, "otherwise": {}}}
    }})
}

/// A `when` picks a case for its exact spelling: the case key as a string, or the number or
/// boolean whose JSON text it is.
#[test]
fn when_picks_a_case_for_its_exact_spelling() {
    let e = engine(branching_policy());
    for v in [json!(true), json!("true")] {
        let d = decide(&e, "apply", json!({ "force": v }));
        assert_eq!(&*d.rule.pointer, "/tools/apply/when/cases/true", "{v}");
    }
    for v in [json!(false), json!("false")] {
        let d = decide(&e, "apply", json!({ "force": v }));
        assert_eq!(&*d.rule.pointer, "/tools/apply/when/cases/false", "{v}");
    }
    for v in [json!(0), json!("0")] {
        let d = decide(&e, "scale", json!({ "replicas": v }));
        assert_eq!(d.kind, DecisionKind::Deny, "{v}");
    }
    // Values no reader takes for a case take `otherwise`.
    for v in [json!(3), json!("three"), json!(0.5), json!("read")] {
        let d = decide(&e, "scale", json!({ "replicas": v }));
        assert_eq!(&*d.rule.pointer, "/tools/scale/when/otherwise", "{v}");
    }
    let d = decide(&e, "op", json!({"operation": "Delete"}));
    assert_eq!(&*d.rule.pointer, "/tools/op/when/otherwise");
}

/// The attacker review's `when` finding: a spelling that a lax reader takes for a case, but
/// that is not the case's spelling, went to `otherwise` (or to the wrong case) while the tool
/// read the case's value. It is refused now, with how to write it.
#[test]
fn when_refuses_a_look_alike_of_a_case_and_says_how_to_write_it() {
    let e = engine(branching_policy());
    for v in [
        json!("TRUE"),
        json!("yes"),
        json!(1),
        json!("on"),
        json!(1.0),
    ] {
        let d = decide(&e, "apply", json!({ "force": v }));
        let text = violations(&d);
        assert_eq!(text.len(), 1, "{v}: {d:?}");
        assert!(
            text[0].ends_with("write `true` or `\"true\"`"),
            "{v}: {text:?}"
        );
    }
    for v in [
        json!(0.0),
        json!(-0.0),
        json!("0.0"),
        json!(" 0"),
        json!(false),
    ] {
        let d = decide(&e, "scale", json!({ "replicas": v }));
        assert_eq!(violations(&d).len(), 1, "{v}: {d:?}");
    }
    assert_eq!(
        violations(&decide(&e, "scale", json!({"replicas": "0e0"}))),
        [
            "$.replicas \"0e0\" may be read as case `0` but is not written as that case is: write `0` or `\"0\"`"
        ]
    );
    // A value that spells one case but may be read as another is refused too.
    let d = decide(&e, "mixed", json!({"v": 1}));
    assert_eq!(
        violations(&d),
        [
            "$.v 1 may be read as case `1` or `true`, and the tool's reading would decide which: write one case's value as it is written (`1` or `\"1\"`; `true` or `\"true\"`)"
        ]
    );
}

/// The gateway's unreadable arguments fail the checks on them (and a branch on them) with the
/// type the schema expects; an unchecked one is left to the tool.
#[test]
fn unreadable_arguments_fail_the_checks_on_them() {
    let e = engine(json!({"version": "1", "default": "allow", "tools": {
        "t": {"arguments": {"n": {"not_enum": [0]}}},
        "w": {"when": {"argument": "n", "cases": {"1": {}}, "otherwise": {}}}
    }}));
    let unreadable = [TypeMismatch {
        argument: "n".into(),
        expected: "an integer".into(),
    }];
    let args = json!({"n": "zero", "m": "x"});
    for tool in ["t", "w"] {
        let d = e.decide_coerced(&call(tool, args.clone()), Duration::ZERO, &unreadable);
        assert_eq!(
            violations(&d),
            ["$.n must be an integer (the tool's input schema), not \"zero\""],
            "{tool}"
        );
    }
    let unchecked = [TypeMismatch {
        argument: "m".into(),
        expected: "an integer".into(),
    }];
    let d = e.decide_coerced(&call("t", args), Duration::ZERO, &unchecked);
    assert_eq!(d.kind, DecisionKind::Allow);
}

/// A redacted argument's value is quoted in no violation, no refusal summary and no
/// explanation: `(redacted)` stands in for it, whichever check fails and whichever case
/// redacts it.
#[test]
fn violations_of_redacted_arguments_quote_no_value() {
    let secret = "hunter2-secret";
    let e = engine(json!({"version": "1", "default": "allow", "tools": {
        "t": {"redact": ["token"], "arguments": {"token": {
            "enum": ["a"], "not_enum": [secret], "pattern": "^x", "prefix": "x", "max_length": 3
        }}},
        "n": {"redact": ["pin"], "arguments": {"pin": {"max": 10}}},
        "w": {"when": {"argument": "token", "cases": {"true": {"redact": ["token"]}}}},
        "u": {"redact": ["token"], "arguments": {"token": {"required": true}}}
    }}));
    let d = decide(&e, "t", json!({ "token": secret }));
    assert_eq!(
        violations(&d),
        [
            "$.token must be one of \"a\", not (redacted)",
            "$.token must not be (redacted)",
            "$.token (redacted) does not match the pattern `^x`",
            "$.token must start with `x`, not (redacted)",
            "$.token is longer than the maximum of 3",
        ]
    );
    let d2 = decide(&e, "n", json!({"pin": 1234}));
    assert_eq!(
        violations(&d2),
        ["$.pin must be at most 10, not (redacted)"]
    );
    let d3 = decide(&e, "w", json!({ "token": secret }));
    let d4 = decide(&e, "w", json!({"token": "Yes"}));
    let mismatch = [TypeMismatch {
        argument: "token".into(),
        expected: "a boolean".into(),
    }];
    let d5 = e.decide_coerced(
        &call("u", json!({ "token": secret })),
        Duration::ZERO,
        &mismatch,
    );
    let explained = e.explain(&call("t", json!({ "token": secret })), Duration::ZERO);
    let branch = e.explain(&call("w", json!({"token": true})), Duration::ZERO);
    assert_eq!(branch.branch.as_deref(), Some("token = (redacted)"));
    for (what, text) in [
        ("t", serde_json::to_string(&d).unwrap() + &d.summary("t")),
        ("n", serde_json::to_string(&d2).unwrap() + &d2.summary("n")),
        ("w", serde_json::to_string(&d3).unwrap() + &d3.summary("w")),
        ("w, a look-alike", d4.summary("w")),
        ("u, unreadable", d5.summary("u")),
        ("explain", explained.render()),
    ] {
        assert!(text.contains("(redacted)"), "{what}: {text}");
        for leak in [secret, "1234", "Yes"] {
            assert!(!text.contains(leak), "{what} quotes `{leak}`: {text}");
        }
    }
}

/// The engine says whether any rule reads argument values (checks or branches on one, in a
/// rule, a case or the default): the gateway reads arguments as the tool will only then.
#[test]
fn reads_arguments_knows_whether_any_rule_looks_at_values() {
    let plain = engine(json!({"version": "1", "default": "allow", "tools": {
        "t": {"rate_limit": {"max": 3, "window": "minute"}}}}));
    assert!(!plain.reads_arguments());
    for rule in [
        json!({"arguments": {"n": {"required": true}}}),
        json!({"when": {"argument": "op", "cases": {"read": {}}}}),
    ] {
        let e = engine(json!({"version": "1", "default": "deny", "tools": {"t": rule}}));
        assert!(e.reads_arguments(), "{e:?}");
    }
}

/// The review's finding: the real EKS server's `apply_yaml.force` defaults to `true`, so a call
/// that leaves `force` out forces, and `force: {not_enum: [true]}` let it through. An argument
/// left out is now checked as the tool's default (from `ToolMeta::defaults`), and a `when`
/// branches on it; `required` still asks for the argument itself, and a `forbidden` argument
/// left out is fine.
#[test]
fn an_argument_left_out_is_checked_as_the_tools_default() {
    let e = engine(json!({"version": "1", "default": "allow", "tools": {
        "apply_yaml": {"arguments": {
            "force": {"not_enum": [true]},
            "namespace": {"forbidden": true},
            "yaml": {"required": true}
        }},
        "get_pod_logs": {"when": {"argument": "previous", "cases": {
            "true": {"action": "deny", "reason": "no previous logs"},
            "false": {}
        }}}
    }}));
    let with = |tool: &str, arguments: Value, defaults: Value| {
        let mut c = call(tool, arguments);
        c.meta.defaults = defaults.as_object().cloned().map(Arc::new);
        e.decide(&c, Duration::ZERO)
    };
    let defaults = json!({"force": true, "namespace": "default"});
    let left_out = with("apply_yaml", json!({"yaml": "x"}), defaults.clone());
    assert_eq!(
        violations(&left_out),
        vec![
            "$.force must not be true (it was left out, and the tool takes its default; send the argument with an allowed value)"
        ]
    );
    let explicit = with(
        "apply_yaml",
        json!({"yaml": "x", "force": false}),
        defaults.clone(),
    );
    assert_eq!(explicit.kind, DecisionKind::Allow);
    // `required` asks for the argument itself, default or not.
    let no_yaml = with("apply_yaml", json!({"force": false}), json!({"yaml": "y"}));
    assert_eq!(violations(&no_yaml), vec!["$.yaml is required"]);
    // Without a default, a left-out argument has no value to check.
    assert_eq!(
        with("apply_yaml", json!({"yaml": "x"}), json!({})).kind,
        DecisionKind::Allow
    );
    // A `when` on an argument left out takes the default's case.
    let logs = with("get_pod_logs", json!({}), json!({"previous": true}));
    assert_eq!(logs.kind, DecisionKind::Deny);
    let logs = with("get_pod_logs", json!({}), json!({"previous": false}));
    assert_eq!(logs.kind, DecisionKind::Allow);
}
