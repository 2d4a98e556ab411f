//! Pinned tool definitions in the session core, against the in-process mock whose `rug_pull`
//! fault changes a tool mid-session: the gateway's own listing (a call before the client listed)
//! and the client's, the metric counted once per drift, the mock's journal proving that a
//! refused call never reached it.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::audit::{AuditLog, verify};
use tollgate_gateway::core::{Gateway, GatewayOptions, Out, SessionCore};
use tollgate_gateway::pin::{DEFAULT_UPSTREAM, Lock, LockMode, Pins};
use tollgate_mock_eks::faults::FaultPlan;
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_policy::{Engine, MemoryStore, Policy};

struct Rig {
    gateway: Arc<Gateway>,
    core: SessionCore,
    mock: MockEks,
    to_client: Vec<Value>,
}

const NOW: Duration = Duration::ZERO;

fn mock() -> MockEks {
    let faults: FaultPlan = serde_json::from_value(json!({"faults": [
        {"tool": "list_k8s_resources", "effect": "rug_pull", "target": "get_pod_logs"}
    ]}))
    .unwrap();
    MockEks::new(MockConfig {
        tools: "real".into(),
        page_size: Some(4),
        faults,
        ..MockConfig::default()
    })
    .unwrap()
}

impl Rig {
    /// Pins the mock's tools as they are listed before any fault, then starts a gateway with
    /// them in `mode`.
    fn new(mode: LockMode, audit: Option<AuditLog>) -> Rig {
        let mut mock = mock();
        let mut tools = Vec::new();
        let mut cursor = Value::Null;
        for _ in 0..10 {
            let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": cursor, "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
            let answer = mock
                .handle("pin", list.to_string().as_bytes(), NOW)
                .response
                .unwrap();
            tools.extend(
                answer["result"]["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .cloned(),
            );
            cursor = answer["result"]["nextCursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        assert_eq!(tools.len(), 16);
        let mut lock = Lock::new();
        lock.pin(DEFAULT_UPSTREAM, &tools);
        let pins = Pins::new(&lock, DEFAULT_UPSTREAM, mode).unwrap();
        let policy = Policy::parse("policy.json", r#"{"version": "1", "default": "allow"}"#)
            .unwrap_or_else(|d| panic!("{d}"));
        let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
        let options = GatewayOptions {
            pins: Some(Arc::new(pins)),
            ..GatewayOptions::default()
        };
        let gateway = Gateway::new(engine, audit, options);
        Rig {
            core: gateway.session("ci-bot", "s1"),
            gateway,
            mock: self::mock(),
            to_client: Vec::new(),
        }
    }

    fn send(&mut self, msg: Value) -> Vec<Value> {
        let before = self.to_client.len();
        let outs = self.core.from_client(msg.to_string().as_bytes(), NOW);
        self.pump(outs);
        self.to_client[before..].to_vec()
    }

    /// Delivers every message, the mock's `tools/list_changed` after the answer that caused it.
    fn pump(&mut self, mut outs: Vec<Out>) {
        for _ in 0..1000 {
            let Some(out) = (!outs.is_empty()).then(|| outs.remove(0)) else {
                return;
            };
            match out {
                Out::Client(v) => self.to_client.push(v),
                Out::Upstream(v) => {
                    let h = self.mock.handle("s1", v.to_string().as_bytes(), NOW);
                    if let Some(r) = h.response {
                        outs.extend(self.core.from_upstream(r.to_string().as_bytes(), NOW));
                    }
                    if self.mock.take_list_changed() {
                        let n =
                            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
                        outs.extend(self.core.from_upstream(n.to_string().as_bytes(), NOW));
                    }
                }
            }
        }
        panic!("messages kept flowing");
    }

    fn initialize(&mut self) {
        self.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    }

    /// Every tool the client is shown, page by page.
    fn list(&mut self, id: u64) -> Vec<Value> {
        let mut tools = Vec::new();
        let mut cursor = Value::Null;
        for page in 0..10 {
            let answer = self.send(json!({"jsonrpc": "2.0", "id": id * 100 + page, "method": "tools/list", "params": {"cursor": cursor}}));
            let result = &answer.last().unwrap()["result"];
            tools.extend(result["tools"].as_array().unwrap().iter().cloned());
            cursor = result["nextCursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        tools
    }

    fn journal_calls(&self, tool: &str) -> usize {
        self.mock
            .journal()
            .iter()
            .filter(|e| e.tool.as_deref() == Some(tool))
            .count()
    }

    fn drift_metric(&self) -> Option<String> {
        self.gateway
            .metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("tollgate_pin_drift_total{"))
            .map(str::to_owned)
    }
}

fn call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"cluster_name": "prod-eks", "kind": "Pod", "api_version": "v1", "namespace": "shop", "pod_name": "web-1"}}})
}

fn decision(answer: &[Value]) -> Value {
    answer.last().unwrap()["result"]["_meta"]["dev.tollgate/decision"]["decision"].clone()
}

/// The gateway lists the tools itself (the client calls before it lists): after the rug pull
/// and the upstream's `list_changed`, the next call of the changed tool makes the gateway list
/// again, finds the drift, and refuses the call without forwarding it. The client's own listing
/// then hides the tool; the drift is audited and counted once, and the log verifies.
#[test]
fn after_a_rug_pull_the_changed_tool_is_refused_and_hidden_and_the_drift_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = AuditLog::open(&path, false).unwrap();
    let mut rig = Rig::new(LockMode::Refuse, Some(audit));
    rig.initialize();
    let first = rig.send(call(1, "get_pod_logs"));
    assert_eq!(decision(&first), Value::Null, "forwarded: {first:?}");
    assert_eq!(rig.journal_calls("get_pod_logs"), 1);
    rig.send(call(2, "list_k8s_resources"));
    assert_eq!(
        rig.drift_metric(),
        None,
        "nothing listed since the rug pull"
    );
    let refused = rig.send(call(3, "get_pod_logs"));
    assert_eq!(decision(&refused), "pin_drift", "{refused:?}");
    assert_eq!(
        rig.journal_calls("get_pod_logs"),
        1,
        "the refused call never reached the mock"
    );
    let listed = rig.list(4);
    assert_eq!(listed.len(), 15);
    assert!(listed.iter().all(|t| t["name"] != "get_pod_logs"));
    rig.list(5);
    assert_eq!(
        rig.drift_metric().as_deref(),
        Some(
            r#"tollgate_pin_drift_total{upstream="default",tool="get_pod_logs",change="changed"} 1"#
        )
    );
    // Unchanged tools go on as the policy decides.
    rig.send(call(6, "list_k8s_resources"));
    assert_eq!(rig.journal_calls("list_k8s_resources"), 2);
    rig.gateway.close(NOW).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let drifts: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "pin_drift")
        .collect();
    assert_eq!(drifts.len(), 1, "{drifts:?}");
    assert_eq!(drifts[0]["fields"], json!(["description"]));
    let report = verify(&path, None).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
}

/// `warn`: the changed tool stays listed and its calls are forwarded; the drift is counted.
#[test]
fn in_warn_mode_the_changed_tool_is_listed_and_forwarded() {
    let mut rig = Rig::new(LockMode::Warn, None);
    rig.initialize();
    rig.send(call(1, "list_k8s_resources"));
    let listed = rig.list(2);
    assert_eq!(listed.len(), 16);
    let answer = rig.send(call(3, "get_pod_logs"));
    assert_ne!(decision(&answer), "pin_drift");
    assert_eq!(rig.journal_calls("get_pod_logs"), 1);
    assert!(rig.drift_metric().is_some_and(|l| l.ends_with(" 1")));
}
