//! The gateway's stance on every kind of client message (docs/security.md, "Message kinds"),
//! against the in-process mock EKS server, which runs a `tools/call` notification as a call
//! (JSON-RPC lets a server do so): its journal proves what reached it. Each test is named for
//! the bypass it pins.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::audit::{AuditLog, verify};
use tollgate_gateway::core::{Gateway, GatewayOptions, Out, Recorder, SessionCore};
use tollgate_mock_eks::world::Flags;
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_policy::{Engine, MemoryStore, Policy};

/// Allows `CancelAHORunBatch` (10 a minute); everything else is denied by default; the `token`
/// argument of `GetAHORunBatch` is redacted.
const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "CancelAHORunBatch": {"limits": [{"counter": "cancels", "window": "minute", "max": 10}]},
    "GetAHORunBatch": {"action": "deny", "reason": "reads are off today", "redact": ["batchId"]}
  }
}"#;

struct Rig {
    core: SessionCore,
    mock: MockEks,
    to_client: Vec<Value>,
    to_upstream: Vec<Value>,
}

impl Rig {
    fn new(audit: Option<AuditLog>) -> Rig {
        Rig::build(audit, None)
    }

    fn build(audit: Option<AuditLog>, recorder: Option<Recorder>) -> Rig {
        let policy = Policy::parse("policy.json", POLICY).unwrap_or_else(|d| panic!("{d}"));
        let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
        let gateway = match recorder {
            Some(r) => Gateway::new_recording(engine, audit, GatewayOptions::default(), r),
            None => Gateway::new(engine, audit, GatewayOptions::default()),
        };
        let mock = MockEks::new(MockConfig {
            flags: Flags {
                allow_write: true,
                allow_sensitive_data_access: true,
            },
            ..MockConfig::default()
        })
        .unwrap();
        Rig {
            core: gateway.session("ci-bot", "s1"),
            mock,
            to_client: Vec::new(),
            to_upstream: Vec::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Vec<Value> {
        let before = self.to_client.len();
        let outs = self.core.from_client(bytes, Duration::ZERO);
        self.pump(outs);
        self.to_client[before..].to_vec()
    }

    fn send(&mut self, msg: Value) -> Vec<Value> {
        self.send_raw(msg.to_string().as_bytes())
    }

    fn pump(&mut self, mut outs: Vec<Out>) {
        for _ in 0..1000 {
            let Some(out) = (!outs.is_empty()).then(|| outs.remove(0)) else {
                return;
            };
            match out {
                Out::Client(v) => self.to_client.push(v),
                Out::Upstream(v) => {
                    self.to_upstream.push(v.clone());
                    let h = self
                        .mock
                        .handle("s1", v.to_string().as_bytes(), Duration::ZERO);
                    if let Some(r) = h.response {
                        outs.extend(
                            self.core
                                .from_upstream(r.to_string().as_bytes(), Duration::ZERO),
                        );
                    }
                }
            }
        }
        panic!("messages kept flowing");
    }

    fn initialize(&mut self, version: &str) {
        self.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        // The tools are listed, so calls are decided at once.
        self.send(json!({"jsonrpc": "2.0", "id": "list", "method": "tools/list"}));
    }

    /// How many times the mock ran anything named like `tool`.
    fn ran(&self, tool: &str) -> usize {
        self.mock
            .journal()
            .iter()
            .filter(|e| e.tool.as_deref() == Some(tool))
            .count()
    }
}

fn audit_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The bypass: a `tools/call` sent as a notification was forwarded undecided, and the mock
/// (like any server JSON-RPC allows) ran the denied tool. Now it is refused, audited, counted,
/// and nothing reaches the upstream; single or inside a 2025-03-26 batch.
#[test]
fn a_tools_call_notification_never_reaches_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut rig = Rig::new(Some(AuditLog::open(&path, false).unwrap()));
    rig.initialize("2025-03-26");
    let denied = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "DeleteAHORunBatch", "arguments": {"batchId": "rb-0001"}}});
    let allowed = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "CancelAHORunBatch", "arguments": {"batchId": "rb-0001"}}});
    let upstream_before = rig.to_upstream.len();
    assert!(
        rig.send(denied.clone()).is_empty(),
        "a notification gets no answer"
    );
    assert!(rig.send(allowed.clone()).is_empty());
    let answers = rig.send(json!([denied, allowed, {"jsonrpc": "2.0", "id": 9, "method": "ping"}]));
    assert_eq!(rig.ran("DeleteAHORunBatch"), 0);
    assert_eq!(
        rig.ran("CancelAHORunBatch"),
        0,
        "even an allowed tool: undecided"
    );
    // Only the batch's ping went upstream.
    let sent: Vec<&Value> = rig.to_upstream[upstream_before..].iter().collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].as_array().map(Vec::len), Some(1), "{sent:?}");
    assert_eq!(answers.len(), 1);
    let records = audit_records(&path);
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision"] == "call_as_notification")
        .collect();
    assert_eq!(refused.len(), 4, "each refused notification is audited");
    assert_eq!(refused[0]["tool"], "DeleteAHORunBatch");
    assert!(verify(&path, None).unwrap().problems.is_empty());
}

/// The bypass: method names that differ from `tools/call` in case, whitespace or separators
/// passed through undecided, for an upstream that reads names loosely to run. Now each is
/// refused with a JSON-RPC error that says why, audited, and not forwarded.
#[test]
fn look_alike_method_names_are_refused_not_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut rig = Rig::new(Some(AuditLog::open(&path, false).unwrap()));
    rig.initialize("2025-11-25");
    let upstream_before = rig.to_upstream.len();
    for (i, method) in [
        "Tools/Call",
        "TOOLS/CALL",
        "tools/call ",
        " tools/call",
        "tools.call",
        "tools/\u{200b}call",
        "t\u{43e}ols/call",
    ]
    .into_iter()
    .enumerate()
    {
        let answer = rig.send(json!({"jsonrpc": "2.0", "id": i, "method": method, "params": {"name": "DeleteAHORunBatch", "arguments": {"batchId": "rb-0001"}}}));
        assert_eq!(answer.len(), 1, "{method:?}");
        assert_eq!(answer[0]["id"], json!(i));
        let code = answer[0]["error"]["code"].as_i64().unwrap();
        assert!(code == -32601 || code == -32600, "{method:?}: {answer:?}");
        let text = answer[0]["error"]["message"].as_str().unwrap();
        assert!(!text.contains('\u{200b}'), "the name is escaped: {text}");
    }
    assert_eq!(rig.to_upstream.len(), upstream_before, "nothing forwarded");
    let records = audit_records(&path);
    assert_eq!(
        records
            .iter()
            .filter(|r| r["kind"] == "refusal"
                && (r["decision"] == "method_look_alike" || r["decision"] == "malformed_method"))
            .count(),
        7
    );
    // Every other method still passes through untouched.
    let answer = rig.send(json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}));
    assert_eq!(
        answer,
        vec![json!({"jsonrpc": "2.0", "id": "p", "result": {}})]
    );
}

/// The hang: a batch in a 2025-06-18 session was forwarded, the upstream (rightly) did not
/// answer it as a batch, and the client waited 300 s while the allowed item was audited as
/// allowed and timed out although nothing ran. Now a batch outside 2025-03-26 is refused whole
/// at once: every request in it gets its error, nothing is forwarded, one refusal is audited.
#[test]
fn a_batch_outside_2025_03_26_is_refused_at_once() {
    for version in ["2025-06-18", "2025-11-25"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut rig = Rig::new(Some(AuditLog::open(&path, false).unwrap()));
        rig.initialize(version);
        let upstream_before = rig.to_upstream.len();
        let answers = rig.send(json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "CancelAHORunBatch", "arguments": {"batchId": "rb-0001"}}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "DeleteAHORunBatch", "arguments": {"batchId": "rb-0001"}}},
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
        ]));
        assert_eq!(
            rig.to_upstream.len(),
            upstream_before,
            "{version}: nothing forwarded"
        );
        assert_eq!(answers.len(), 1);
        let items = answers[0].as_array().unwrap();
        assert_eq!(items.len(), 2, "{version}: one error per request");
        for (item, id) in items.iter().zip([1, 2]) {
            assert_eq!(item["id"], json!(id));
            assert_eq!(item["error"]["code"], json!(-32600));
            assert!(
                item["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("protocol version {version}")),
                "{item}"
            );
        }
        let records = audit_records(&path);
        assert!(
            !records.iter().any(|r| r["kind"] == "decision"),
            "{version}: nothing was decided, nothing is audited as allowed"
        );
        let refusal = records
            .iter()
            .find(|r| r["decision"] == "batch_not_allowed")
            .unwrap();
        assert_eq!(
            refusal["tools"],
            json!(["CancelAHORunBatch", "DeleteAHORunBatch"])
        );
    }
}

/// A 2025-03-26 batch whose items the upstream answers one by one (not as an array): the
/// batch's own refusals still reach the client, with the last forwarded item's answer.
#[test]
fn a_batch_answered_item_by_item_still_gets_its_refusals() {
    let mut rig = Rig::new(None);
    rig.initialize("2025-03-26");
    let outs = rig.core.from_client(
        json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "CancelAHORunBatch", "arguments": {"batchId": "rb-0001"}}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "DeleteAHORunBatch", "arguments": {"batchId": "rb-0001"}}},
        ])
        .to_string()
        .as_bytes(),
        Duration::ZERO,
    );
    assert!(
        outs.iter().all(|o| matches!(o, Out::Upstream(_))),
        "the refusal waits for the batch: {outs:?}"
    );
    let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": false}});
    let outs = rig
        .core
        .from_upstream(answer.to_string().as_bytes(), Duration::ZERO);
    let to_client: Vec<&Value> = outs
        .iter()
        .filter_map(|o| match o {
            Out::Client(v) => Some(v),
            Out::Upstream(_) => None,
        })
        .collect();
    let ids: Vec<Value> = to_client
        .iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().map(|m| m["id"].clone()).collect(),
            m => vec![m["id"].clone()],
        })
        .collect();
    assert_eq!(ids, vec![json!(1), json!(2)], "{to_client:?}");
}

/// The confusion: a client id that looked like the gateway's own (`tollgate-internal-1`, the
/// id of its own `tools/list`) was mistaken for the gateway's answer. Now the client's ids reach
/// the upstream escaped, come back as the client sent them, and the gateway's own listing
/// still works.
#[test]
fn client_ids_never_share_the_gateways_id_space() {
    let mut rig = Rig::new(None);
    rig.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    // No tools/list yet: this call makes the gateway list the tools with its own id.
    let answer = rig.send(json!({"jsonrpc": "2.0", "id": "tollgate-internal-1", "method": "tools/call", "params": {"name": "CancelAHORunBatch", "arguments": {"batchId": "rb-0001"}}}));
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0]["id"], "tollgate-internal-1");
    assert!(answer[0]["result"].is_object(), "{answer:?}");
    assert_eq!(rig.ran("CancelAHORunBatch"), 1);
    let forwarded = rig
        .to_upstream
        .iter()
        .find(|m| m["method"] == "tools/call")
        .unwrap();
    assert_eq!(forwarded["id"], "tollgate-x-tollgate-internal-1");
    for id in ["tollgate-reinit-1", "tollgate-elicit-1", "tollgate-x-7"] {
        let answer = rig.send(json!({"jsonrpc": "2.0", "id": id, "method": "ping"}));
        assert_eq!(
            answer,
            vec![json!({"jsonrpc": "2.0", "id": id, "result": {}})]
        );
    }
    // An answer to an id in the gateway's space that it never escaped is nobody's: dropped.
    let stray = json!({"jsonrpc": "2.0", "id": "tollgate-internal-99", "result": {}});
    let outs = rig
        .core
        .from_upstream(stray.to_string().as_bytes(), Duration::ZERO);
    assert!(outs.is_empty(), "{outs:?}");
}

/// Two requests with one id in flight made the second's answer and audit settle the first's.
/// The second is refused while the first is unanswered; once answered, the id is free again.
#[test]
fn a_request_id_in_flight_cannot_be_reused() {
    let mut rig = Rig::new(None);
    rig.initialize("2025-11-25");
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "CancelAHORunBatch", "arguments": {"batchId": "rb-0001"}}});
    let outs = rig
        .core
        .from_client(call.to_string().as_bytes(), Duration::ZERO);
    assert!(matches!(outs.as_slice(), [Out::Upstream(_)]), "{outs:?}");
    let again = rig
        .core
        .from_client(call.to_string().as_bytes(), Duration::ZERO);
    let [Out::Client(refusal)] = again.as_slice() else {
        panic!("{again:?}")
    };
    assert_eq!(refusal["id"], 5);
    assert_eq!(refusal["error"]["code"], -32600);
    let answer = json!({"jsonrpc": "2.0", "id": 5, "result": {"content": [], "isError": false}});
    rig.core
        .from_upstream(answer.to_string().as_bytes(), Duration::ZERO);
    let third = rig.send(call);
    assert!(third[0]["result"].is_object(), "{third:?}");
}

/// `redact` reached the audit log but not recordings (`--record`): a redacted argument was
/// written there verbatim, in the client's message and in the one forwarded upstream.
#[test]
fn recordings_redact_what_the_audit_log_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recording.jsonl");
    let mut rig = Rig::build(None, Some(Recorder::create(&path).unwrap()));
    rig.initialize("2025-11-25");
    rig.send(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "GetAHORunBatch", "arguments": {"batchId": "secret-batch-id"}}}));
    rig.send_raw(b"{not json secret-batch-id");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("GetAHORunBatch"));
    assert!(!text.contains("secret-batch-id"), "{text}");
}

/// The Python SDK in its default (auto) mode speaks the stateless protocol and refused every
/// refusal the gateway made itself: its results lacked `resultType: "complete"`, which the
/// upstream's own results carry. A stateless client's answers now all carry it; and no refusal
/// carries `structuredContent`, which clients check against a tool's `outputSchema` even on an
/// error result (the detail is in `_meta`).
#[test]
fn a_stateless_clients_refusals_are_complete_results_without_structured_content() {
    let mut rig = Rig::new(None);
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}});
    let answers = rig.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "DeleteAHORunBatch", "arguments": {"batchId": "rb-0001"}, "_meta": meta}}),
    );
    let result = &answers[0]["result"];
    assert_eq!(result["isError"], true, "{answers:?}");
    assert_eq!(result["resultType"], "complete", "{answers:?}");
    assert!(result.get("structuredContent").is_none(), "{answers:?}");
    assert_eq!(result["_meta"]["dev.tollgate/decision"]["decision"], "deny");
    // A session-ful client's results are left as they were.
    let mut rig = Rig::new(None);
    rig.initialize("2025-11-25");
    let answers = rig.send(call_json(2, "DeleteAHORunBatch"));
    assert!(
        answers[0]["result"].get("resultType").is_none(),
        "{answers:?}"
    );
}

fn call_json(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"batchId": "rb-0001"}}})
}
