//! `class:` rules for a server outside the EKS catalogue (issue 20): the gateway classes each of
//! its tools by the tool's own MCP annotations (docs/catalog.md, "Tools outside the
//! catalogue"), and `tollgate explain --annotations` classes it the same way.

use std::time::Duration;

use serde_json::{Value, json};

use super::{call, initialize, stdio_gateway, write};
use crate::mock_eks::python;
use crate::util::{root, tollgate};

const POLICY: &str = r#"{"version": "1", "default": "allow", "tools": {
    "class:read": {"action": "allow"},
    "class:write": {"action": "deny", "reason": "writes wait for the change window"},
    "class:destructive": {"action": "deny", "reason": "destructive tools are refused"}
}}"#;

/// The rule selector that decided an answer (`None`: the call went through undecided by a
/// refusal, its result is the tool's).
fn refused_by(answer: &Value) -> Option<String> {
    answer["result"]["_meta"]["dev.tollgate/decision"]["rule"]["selector"]
        .as_str()
        .map(str::to_owned)
}

/// The annotated FastMCP server behind the stdio gateway: its read-only tool runs, its
/// non-destructive write is refused by `class:write`, its destructive tool and its unannotated
/// tool (the specification's defaults: possibly destructive) by `class:destructive`.
#[test]
fn class_rules_apply_to_an_annotated_server_outside_the_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "classes.json", POLICY);
    let server = root().join("tests/clients/annotated_server.py");
    let answers = stdio_gateway(
        &[
            "--policy",
            &policy,
            "--",
            &python(),
            server.to_str().unwrap(),
        ],
        &[
            initialize(1),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            call(2, "lookup_ticket", json!({"ticket": "T-1"})),
            call(3, "add_comment", json!({"ticket": "T-1", "text": "on it"})),
            call(4, "purge_queue", json!({"queue": "q"})),
            call(5, "mystery", json!({"x": "y"})),
        ],
        Duration::from_secs(8),
    );
    let by_id = |id: u64| {
        answers
            .iter()
            .find(|a| a["id"] == json!(id))
            .unwrap_or_else(|| panic!("no answer to {id}: {answers:?}"))
    };
    let read = by_id(2);
    assert_eq!(read["result"]["isError"], false, "{read}");
    assert_eq!(
        read["result"]["content"][0]["text"], "ticket T-1: open",
        "the read-only tool ran: {read}"
    );
    for (id, selector) in [
        (3, "class:write"),
        (4, "class:destructive"),
        (5, "class:destructive"),
    ] {
        let answer = by_id(id);
        assert_eq!(answer["result"]["isError"], true, "{answer}");
        assert_eq!(refused_by(answer).as_deref(), Some(selector), "{answer}");
    }
}

/// `tollgate explain` with the tool's annotations picks the rule the gateway picks for it;
/// without them, it reads the tool as the specification's defaults do (destructive).
#[test]
fn explain_classes_a_tool_outside_the_catalogue_by_its_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "classes.json", POLICY);
    for (annotations, selector) in [
        (Some(r#"{"readOnlyHint": true}"#), "class:read"),
        (Some(r#"{"destructiveHint": false}"#), "class:write"),
        (Some(r#"{"destructiveHint": true}"#), "class:destructive"),
        (None, "class:destructive"),
    ] {
        let mut cmd = tollgate();
        cmd.args(["explain", &policy, "lookup_ticket", "--format", "json"]);
        if let Some(a) = annotations {
            cmd.args(["--annotations", a]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            explained["decision"]["rule"]["selector"], selector,
            "{annotations:?}: {explained}"
        );
    }
    let human = tollgate()
        .args(["explain", &policy, "lookup_ticket"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("not in the catalogue; its class is read from its annotations"),
        "{text}"
    );
}
