//! The value path (`from_client_value`, `from_upstream_value`, `MockEks::handle_value`) against
//! the text path it shortcuts: the same session, fed the same messages once as text and once
//! as values, gives the same answers, the same journal and the same audit log.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::audit::AuditLog;
use tollgate_gateway::core::{Gateway, GatewayOptions, Out, SessionCore};
use tollgate_mock_eks::world::Flags;
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_policy::{Engine, MemoryStore, Policy};

const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
  "GetAHOBatch": {"limits": [{"counter": "r", "window": "minute", "max": 3}]},
  "CancelAHORunBatch": {"action": "deny", "reason": "not in CI"},
  "list_k8s_resources": {"action": "allow"},
  "add_inline_policy": {"action": "require_approval"}}}"#;

fn rig(audit: &std::path::Path) -> (SessionCore, MockEks) {
    let policy = Policy::parse("policy.json", POLICY).unwrap_or_else(|d| panic!("{d}"));
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    let audit = AuditLog::open(audit, false).unwrap();
    // With an approval channel, so a call is held, and withdrawn (audited at the session's
    // last instant) when the session is dropped at the end of the run.
    let options = GatewayOptions {
        approvals: true,
        ..GatewayOptions::default()
    };
    let gateway = Gateway::new(engine, Some(audit), options);
    let mock = MockEks::new(MockConfig {
        flags: Flags {
            allow_write: true,
            allow_sensitive_data_access: true,
        },
        ..MockConfig::default()
    })
    .unwrap();
    (gateway.session("ci-bot", "s1"), mock)
}

/// Runs the messages through a fresh rig; `values` picks the path at every hop.
fn run(messages: &[Value], values: bool, audit: &std::path::Path) -> (Vec<Value>, String) {
    let (mut core, mut mock) = rig(audit);
    let mut to_client = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let now = Duration::from_millis(i as u64 * 10);
        let mut outs = if values {
            core.from_client_value(m.clone(), now)
        } else {
            core.from_client(m.to_string().as_bytes(), now)
        };
        while !outs.is_empty() {
            match outs.remove(0) {
                Out::Client(v) => to_client.push(v),
                Out::Upstream(v) => {
                    let h = if values {
                        mock.handle_value("s1", v, now)
                    } else {
                        mock.handle("s1", v.to_string().as_bytes(), now)
                    };
                    if let Some(r) = h.response {
                        outs.extend(if values {
                            core.from_upstream_value(r, now)
                        } else {
                            core.from_upstream(r.to_string().as_bytes(), now)
                        });
                    }
                }
            }
        }
    }
    let journal = serde_json::to_string(mock.journal()).unwrap();
    (to_client, journal)
}

#[test]
fn the_value_path_answers_journals_and_audits_exactly_as_the_text_path() {
    let call = |id: u64, tool: &str, args: Value| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
    let messages = vec![
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        call(1, "GetAHOBatch", json!({"batchId": "rb-0001"})),
        call(2, "GetAHOBatch", json!({"batchId": "rb-nope"})),
        call(3, "CancelAHORunBatch", json!({"batchId": "rb-0013"})),
        call(4, "GetAHOBatch", json!({"batchId": "rb-0002"})),
        call(5, "GetAHOBatch", json!({"batchId": "rb-0003"})),
        call(6, "NoSuchTool", json!({})),
        // A float takes the text path inside the value path; the answer must not differ.
        call(
            7,
            "list_k8s_resources",
            json!({"cluster_name": "prod", "kind": "Pod", "api_version": "v1", "limit": 0.5}),
        ),
        json!([
            call(8, "GetAHOBatch", json!({"batchId": "rb-0001"})),
            call(9, "CancelAHORunBatch", json!({}))
        ]),
        json!({"jsonrpc": "1.0", "id": 10, "method": "ping"}),
        json!([]),
        call(
            11,
            "add_inline_policy",
            json!({"role_name": "ops", "policy_name": "p", "permissions": {}}),
        ),
        json!({"jsonrpc": "2.0", "id": 12, "method": "ping"}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (text_answers, text_journal) = run(&messages, false, &dir.path().join("text.jsonl"));
    let (value_answers, value_journal) = run(&messages, true, &dir.path().join("value.jsonl"));
    assert_eq!(value_answers, text_answers);
    assert_eq!(value_journal, text_journal);
    let text_log = std::fs::read_to_string(dir.path().join("text.jsonl")).unwrap();
    let value_log = std::fs::read_to_string(dir.path().join("value.jsonl")).unwrap();
    assert_eq!(value_log, text_log);
    // The run exercised what it claims: an allowed call, a rate limit, a deny, a batch.
    let all = serde_json::to_string(&text_answers).unwrap();
    for needle in ["rate_limited", "\"deny\"", "rb-0001", "unknown_tool"] {
        assert!(all.contains(needle), "{needle} in {all}");
    }
    assert!(text_log.contains("\"verdict\":\"withdrawn\""), "{text_log}");
}
