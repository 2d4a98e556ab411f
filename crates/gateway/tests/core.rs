//! The session core against the in-process mock EKS server, in virtual time: decisions before
//! forwarding, refusal shapes, the mock's journal proving nothing refused reached it, batches,
//! timeouts, and an audit log that verifies.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::audit::{AuditLog, verify};
use tollgate_gateway::core::{Gateway, GatewayOptions, Out, SessionCore};
use tollgate_mock_eks::world::Flags;
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_policy::{Engine, MemoryStore, Policy};

/// A client, the gateway session and the mock, wired in process.
struct Rig {
    gateway: Arc<Gateway>,
    core: SessionCore,
    mock: MockEks,
    to_client: Vec<Value>,
}

impl Rig {
    fn new(policy: &str, audit: Option<AuditLog>, options: GatewayOptions) -> Rig {
        Rig::with_store(policy, audit, options, Arc::new(MemoryStore::new()))
    }

    fn with_store(
        policy: &str,
        audit: Option<AuditLog>,
        options: GatewayOptions,
        store: Arc<dyn tollgate_policy::CounterStore>,
    ) -> Rig {
        let policy = Policy::parse("policy.json", policy).unwrap_or_else(|d| panic!("{d}"));
        let engine = Engine::new(Arc::new(policy), store);
        let gateway = Gateway::new(engine, audit, options);
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
            gateway,
            mock,
            to_client: Vec::new(),
        }
    }

    /// Sends client bytes and pumps every message to its destination until quiet.
    fn send_raw(&mut self, bytes: &[u8], now: Duration) {
        let outs = self.core.from_client(bytes, now);
        self.pump(outs, now);
    }

    fn send(&mut self, msg: Value, now: Duration) -> Vec<Value> {
        let before = self.to_client.len();
        self.send_raw(msg.to_string().as_bytes(), now);
        self.to_client[before..].to_vec()
    }

    fn pump(&mut self, mut outs: Vec<Out>, now: Duration) {
        for _ in 0..1000 {
            let Some(out) = (!outs.is_empty()).then(|| outs.remove(0)) else {
                return;
            };
            match out {
                Out::Client(v) => self.to_client.push(v),
                Out::Upstream(v) => {
                    let h = self.mock.handle("s1", v.to_string().as_bytes(), now);
                    if let Some(r) = h.response {
                        outs.extend(self.core.from_upstream(r.to_string().as_bytes(), now));
                    }
                }
            }
        }
        panic!("messages kept flowing");
    }

    fn initialize(&mut self, version: &str) {
        self.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}), Duration::ZERO);
        self.send(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            Duration::ZERO,
        );
    }

    fn calls_in_journal(&self, tool: &str) -> usize {
        self.mock
            .journal()
            .iter()
            .filter(|e| e.tool.as_deref() == Some(tool))
            .count()
    }
}

fn call(id: u64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

const SEED: &str = include_str!("../../../examples/policies/seed.json");

/// The seed's runaway agent: 15 cancels a second apart; 10 go through, 5 are rate limited, and
/// the mock's journal holds exactly the 10 (promise 1: nothing refused reaches the upstream).
#[test]
fn runaway_agent_is_cut_at_ten_and_the_journal_proves_it() {
    let mut rig = Rig::new(SEED, None, GatewayOptions::default());
    rig.initialize("2025-11-25");
    let mut decisions = Vec::new();
    for i in 0..15u64 {
        let answer = rig.send(
            call(
                i + 1,
                "CancelAHORunBatch",
                json!({"batchId": format!("rb-{:04}", i % 12 + 1)}),
            ),
            Duration::from_secs(i),
        );
        let result = &answer.last().unwrap()["result"];
        decisions.push(
            result["_meta"]["dev.tollgate/decision"]["decision"]
                .as_str()
                .unwrap_or("forwarded")
                .to_owned(),
        );
    }
    assert_eq!(
        decisions.iter().filter(|d| *d == "forwarded").count(),
        10,
        "{decisions:?}"
    );
    assert_eq!(decisions.iter().filter(|d| *d == "rate_limited").count(), 5);
    assert_eq!(rig.calls_in_journal("CancelAHORunBatch"), 10);
}

/// What the agent reads for each kind of refusal (reviewed snapshot).
#[test]
fn refusal_shapes() {
    let policy = r#"{"version": "1", "default": "deny", "tools": {
        "CancelAHORunBatch": {"reason": "runaway guard", "limits": [{"counter": "cancel_rate", "window": "minute", "max": 1}]},
        "manage_k8s_resource": {"arguments": {"namespace": {"not_enum": ["kube-system"]}}, "when": {"argument": "operation",
            "cases": {"read": {}}, "otherwise": {"action": "deny", "reason": "writes go through CI"}}},
        "add_inline_policy": {"action": "require_approval", "reason": "grants IAM permissions"}}}"#;
    let mut rig = Rig::new(policy, None, GatewayOptions::default());
    rig.initialize("2025-06-18");
    let mut transcript = String::new();
    let cases = [
        (
            "allowed and forwarded",
            call(1, "CancelAHORunBatch", json!({"batchId": "rb-0001"})),
            Duration::from_secs(12),
        ),
        (
            "rate limited",
            call(2, "CancelAHORunBatch", json!({"batchId": "rb-0002"})),
            Duration::from_secs(12),
        ),
        (
            "denied by a branch",
            call(
                3,
                "manage_k8s_resource",
                json!({"operation": "delete", "cluster_name": "prod-eks", "kind": "Pod", "api_version": "v1", "name": "x", "namespace": "shop"}),
            ),
            Duration::from_secs(13),
        ),
        (
            "invalid arguments",
            call(
                4,
                "manage_k8s_resource",
                json!({"operation": "read", "cluster_name": "prod-eks", "kind": "Pod", "api_version": "v1", "name": "x", "namespace": "kube-system"}),
            ),
            Duration::from_secs(13),
        ),
        (
            "default deny",
            call(
                5,
                "get_pod_logs",
                json!({"cluster_name": "prod-eks", "namespace": "shop", "pod_name": "x"}),
            ),
            Duration::from_secs(14),
        ),
        (
            "approval required",
            call(
                6,
                "add_inline_policy",
                json!({"policy_name": "p", "role_name": "r", "permissions": {}}),
            ),
            Duration::from_secs(15),
        ),
        (
            "not advertised",
            call(7, "DeleteEKSCluster", json!({"name": "prod-eks"})),
            Duration::from_secs(16),
        ),
    ];
    for (what, msg, at) in cases {
        let answer = rig.send(msg, at);
        transcript.push_str(&format!(
            "== {what}\n{}\n",
            serde_json::to_string_pretty(answer.last().unwrap()).unwrap()
        ));
    }
    insta::assert_snapshot!(transcript);
    assert_eq!(rig.calls_in_journal("manage_k8s_resource"), 0);
    assert_eq!(rig.calls_in_journal("CancelAHORunBatch"), 1);
    assert_eq!(rig.calls_in_journal("DeleteEKSCluster"), 0);
}

/// A message with a duplicated key is refused with its id and never forwarded.
#[test]
fn duplicate_keys_are_refused_and_not_forwarded() {
    let mut rig = Rig::new(SEED, None, GatewayOptions::default());
    rig.initialize("2025-11-25");
    let before = rig.mock.journal().len();
    rig.send_raw(br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"CancelAHORunBatch","arguments":{"batchId":"rb-0001","batchId":"rb-0002"}}}"#, Duration::ZERO);
    let answer = rig.to_client.last().unwrap();
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["error"]["code"], -32600);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`batchId` twice")
    );
    assert_eq!(rig.mock.journal().len(), before);
}

/// In a 2025-03-26 batch, allowed calls are forwarded as one batch and the refusals are merged
/// into the one array the client gets back.
#[test]
fn batches_forward_the_allowed_and_merge_the_refusals() {
    let mut rig = Rig::new(SEED, None, GatewayOptions::default());
    rig.initialize("2025-03-26");
    // List first, so the batch is decided at once.
    rig.send(
        json!({"jsonrpc": "2.0", "id": 100, "method": "tools/list"}),
        Duration::ZERO,
    );
    let answers = rig.send(json!([
        call(1, "CancelAHORunBatch", json!({"batchId": "rb-0001"})),
        call(2, "list_k8s_resources", json!({"cluster_name": "prod-eks", "kind": "Pod", "api_version": "v1"})),
        {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    ]), Duration::from_secs(1));
    let array = answers.last().unwrap().as_array().unwrap();
    let mut ids: Vec<u64> = array.iter().map(|a| a["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
    let refused = array.iter().find(|a| a["id"] == 2).unwrap();
    assert_eq!(
        refused["result"]["_meta"]["dev.tollgate/decision"]["decision"],
        "deny"
    );
    assert_eq!(rig.calls_in_journal("list_k8s_resources"), 0);
    assert_eq!(rig.calls_in_journal("CancelAHORunBatch"), 1);
}

/// A call the upstream does not answer in time gets an error result at the deadline and the
/// upstream is told to cancel.
#[test]
fn upstream_timeouts_answer_in_bounded_time() {
    let policy = Policy::parse("p", r#"{"version": "1", "default": "allow"}"#).unwrap();
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    let gateway = Gateway::new(
        engine,
        None,
        GatewayOptions {
            call_timeout: Duration::from_secs(5),
            ..GatewayOptions::default()
        },
    );
    let mut core = gateway.session("g", "s");
    let t0 = Duration::ZERO;
    // Teach the core the upstream's tools by passing a tools/list answer through.
    core.from_upstream(json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "slow", "inputSchema": {"type": "object"}}]}}).to_string().as_bytes(), t0);
    let outs = core.from_client(call(2, "slow", json!({})).to_string().as_bytes(), t0);
    assert!(matches!(outs.as_slice(), [Out::Upstream(_)]));
    assert!(core.tick(Duration::from_secs(4)).is_empty());
    assert_eq!(core.next_deadline(), Some(Duration::from_secs(5)));
    let outs = core.tick(Duration::from_secs(5));
    assert!(matches!(&outs[0], Out::Upstream(v) if v["method"] == "notifications/cancelled"));
    let Out::Client(answer) = &outs[1] else {
        panic!("{outs:?}")
    };
    assert_eq!(
        answer["result"]["_meta"]["dev.tollgate/decision"]["decision"],
        "upstream_timeout"
    );
    // The late answer is dropped: the client already has one.
    let late = core.from_upstream(
        json!({"jsonrpc": "2.0", "id": 2, "result": {"content": []}})
            .to_string()
            .as_bytes(),
        Duration::from_secs(6),
    );
    assert!(late.is_empty());
}

/// Every decision and outcome is in the audit log, decisions before their outcomes, and the
/// chain verifies.
#[test]
fn audit_log_records_decisions_then_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut rig = Rig::new(
        SEED,
        Some(AuditLog::open(&path, false).unwrap()),
        GatewayOptions::default(),
    );
    rig.initialize("2025-11-25");
    for i in 0..12u64 {
        rig.send(
            call(i + 1, "CancelAHORunBatch", json!({"batchId": "rb-0001"})),
            Duration::from_secs(i),
        );
    }
    let report = verify(&path, None).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    let records = tollgate_gateway::audit::read_records(&path).unwrap();
    let decisions = records.iter().filter(|r| r["kind"] == "decision").count();
    let outcomes = records.iter().filter(|r| r["kind"] == "outcome").count();
    assert_eq!((decisions, outcomes), (12, 10));
    let first_outcome = records.iter().position(|r| r["kind"] == "outcome").unwrap();
    assert_eq!(records[first_outcome - 1]["kind"], "decision");
    assert_eq!(
        records[first_outcome]["decision_seq"],
        records[first_outcome - 1]["seq"]
    );
}

/// Bad client input gets its JSON-RPC error from the gateway and nothing reaches the upstream:
/// oversized, deeply nested, invalid UTF-8, not JSON, a wrong `jsonrpc`, a call without a name,
/// arguments that are not an object.
#[test]
fn bad_client_input_is_answered_and_never_forwarded() {
    let mut rig = Rig::new(
        r#"{"version": "1", "default": "allow"}"#,
        None,
        GatewayOptions {
            limits: tollgate_mcp::Limits {
                max_bytes: 64 * 1024,
            },
            ..GatewayOptions::default()
        },
    );
    rig.initialize("2025-11-25");
    let before = rig.mock.journal().len();
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"list_api_versions","arguments":{{"pad":"{}"}}}}}}"#,
        "x".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>, i64)> = vec![
        ("oversized", huge.into_bytes(), -32700),
        ("deep", "[".repeat(50_000).into_bytes(), -32700),
        ("invalid UTF-8", b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"list_api_versions\xff\"}}".to_vec(), -32700),
        ("not JSON", b"{\"jsonrpc\":".to_vec(), -32700),
        ("wrong version", br#"{"jsonrpc":"1.0","id":3,"method":"tools/call","params":{"name":"list_api_versions"}}"#.to_vec(), -32600),
        ("no tool name", br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#.to_vec(), -32602),
        ("arguments not an object", br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"list_api_versions","arguments":"x"}}"#.to_vec(), -32602),
    ];
    for (what, bytes, code) in cases {
        let n = rig.to_client.len();
        rig.send_raw(&bytes, Duration::ZERO);
        let answer = rig
            .to_client
            .get(n)
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
    }
    assert_eq!(
        rig.mock.journal().len(),
        before,
        "nothing reached the upstream"
    );
}

fn listed_names(answer: &[Value]) -> Vec<String> {
    answer[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `hide_from_list` hides the tools a policy always refuses; a reload that changes that set
/// sends the client `notifications/tools/list_changed` (once), a reload that keeps it sends
/// nothing, and the handshake tells the client to expect the notification.
#[test]
fn reload_that_changes_the_visible_tools_sends_list_changed() {
    let hiding = r#"{"version": "1", "default": "allow", "hide_from_list": true,
        "tools": {"CancelAHORunBatch": {"action": "deny", "reason": "no cancels today"}}}"#;
    let open = r#"{"version": "1", "default": "allow", "hide_from_list": true}"#;
    let mut rig = Rig::new(hiding, None, GatewayOptions::default());
    let init = rig.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}), Duration::ZERO);
    assert_eq!(
        init[0]["result"]["capabilities"]["tools"]["listChanged"],
        json!(true)
    );
    rig.send(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Duration::ZERO,
    );

    // Before anything is listed, a reload has nobody to tell.
    assert!(rig.core.policy_changed(Duration::ZERO).is_empty());
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let names = listed_names(&rig.send(list.clone(), Duration::ZERO));
    assert!(
        !names.contains(&"CancelAHORunBatch".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"GetAHOBatch".to_owned()), "{names:?}");

    let secs = Duration::from_secs;
    rig.gateway
        .reload(
            Policy::parse("open.json", open).unwrap(),
            secs(1),
            json!({}),
        )
        .unwrap();
    let outs = rig.core.policy_changed(secs(1));
    assert_eq!(
        outs,
        vec![Out::Client(
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        )]
    );
    // Told once: asking again without another reload says nothing.
    assert!(rig.core.policy_changed(secs(1)).is_empty());
    let names = listed_names(&rig.send(list.clone(), secs(2)));
    assert!(names.contains(&"CancelAHORunBatch".to_owned()), "{names:?}");

    // A different policy that shows the same tools: no notification.
    let same = r#"{"version": "1", "default": "allow", "hide_from_list": true,
        "tools": {"CancelAHORunBatch": {"rate_limit": {"max": 5, "window": "minute"}}}}"#;
    rig.gateway
        .reload(
            Policy::parse("same.json", same).unwrap(),
            secs(3),
            json!({}),
        )
        .unwrap();
    assert!(rig.core.policy_changed(secs(3)).is_empty());
}

/// Issue 19 (one class truth): `hide_from_list` hides a tool only if every call of it is
/// refused. `manage_k8s_resource` is destructive in the worst case, but its `read` operation is
/// a read, which this policy allows: it stays listed, while a tool that is destructive whatever
/// its arguments is hidden.
#[test]
fn hide_from_list_keeps_a_tool_whose_some_operations_are_allowed() {
    let policy = r#"{"version": "1", "default": "allow", "hide_from_list": true,
        "tools": {"class:destructive": {"action": "deny", "reason": "no destruction"}}}"#;
    let mut rig = Rig::new(policy, None, GatewayOptions::default());
    rig.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}), Duration::ZERO);
    rig.send(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Duration::ZERO,
    );
    let names = listed_names(&rig.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        Duration::ZERO,
    ));
    assert!(
        names.contains(&"manage_k8s_resource".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"list_k8s_resources".to_owned()),
        "{names:?}"
    );
    let destructive_only: Vec<&String> = names
        .iter()
        .filter(|n| {
            tollgate_catalog::Catalog::embedded()
                .get(n)
                .is_some_and(|t| {
                    t.operation_classes.is_empty()
                        && t.class == tollgate_catalog::RiskClass::Destructive
                })
        })
        .collect();
    assert!(destructive_only.is_empty(), "{destructive_only:?}");
    // The mock offers such tools, so the assertion above hid something.
    let offered = tollgate_catalog::Catalog::embedded()
        .select("default")
        .unwrap();
    assert!(
        offered.iter().any(|t| t.operation_classes.is_empty()
            && t.class == tollgate_catalog::RiskClass::Destructive)
    );
}

/// A counter store that cannot answer (Redis down), failing closed or open as configured.
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
            store: "redis://127.0.0.1:6379/0".into(),
            reason: "timed out after 250 ms".into(),
            mode: self.0,
        }
    }
}

/// With the counter store unavailable and failing closed, what the agent reads (reviewed
/// snapshot), and the mock's journal proving the call never reached it; failing open, the call
/// is forwarded and its audit record says `fail_open`.
#[test]
fn store_unavailable_refusal_and_fail_open_audit() {
    use tollgate_policy::FailMode;
    let policy = r#"{"version": "1", "default": "deny", "tools": {
        "CancelAHORunBatch": {"limits": [{"counter": "cancel_rate", "window": "minute", "max": 10}]}}}"#;
    let mut rig = Rig::with_store(
        policy,
        None,
        GatewayOptions::default(),
        Arc::new(DownStore(FailMode::Closed)),
    );
    rig.initialize("2025-06-18");
    let answer = rig.send(
        call(1, "CancelAHORunBatch", json!({"batchId": "rb-0001"})),
        Duration::from_secs(3),
    );
    insta::assert_snapshot!(serde_json::to_string_pretty(answer.last().unwrap()).unwrap());
    assert_eq!(rig.calls_in_journal("CancelAHORunBatch"), 0);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut rig = Rig::with_store(
        policy,
        Some(AuditLog::open(&path, false).unwrap()),
        GatewayOptions::default(),
        Arc::new(DownStore(FailMode::Open)),
    );
    rig.initialize("2025-06-18");
    let answer = rig.send(
        call(1, "CancelAHORunBatch", json!({"batchId": "rb-0001"})),
        Duration::from_secs(3),
    );
    assert_eq!(answer.last().unwrap()["result"]["isError"], json!(false));
    assert_eq!(rig.calls_in_journal("CancelAHORunBatch"), 1);
    let records: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decision = records
        .iter()
        .find(|r| r["kind"] == "decision" && r["tool"] == "CancelAHORunBatch")
        .unwrap();
    assert_eq!(decision["decision"]["decision"], "allow");
    assert_eq!(
        decision["decision"]["store_unavailable"]["outcome"],
        "fail_open"
    );
}

/// A limit that counts upstream errors (`counts: errors`), through the session core: an
/// `isError` result, a JSON-RPC error, a timeout and the upstream gone mid-call are each counted
/// at the instant the answer (or its absence) is known, a success is not, and the fifth call is
/// refused as `error_limited` with the exact retry time; the refusal counts nothing. The
/// outcome records say what was counted, and the log verifies.
#[test]
fn upstream_errors_of_every_kind_are_counted_and_refuse_at_max() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let policy = Policy::parse(
        "p",
        r#"{"version": "1", "default": "deny", "tools": {"flaky": {"limits": [
            {"counter": "flaky_errors", "window": "1m", "max": 4, "counts": "errors"}]}}}"#,
    )
    .unwrap();
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    let gateway = Gateway::new(
        engine,
        Some(AuditLog::open(&path, false).unwrap()),
        GatewayOptions {
            call_timeout: Duration::from_secs(5),
            ..GatewayOptions::default()
        },
    );
    let mut core = gateway.session("g", "s");
    let secs = Duration::from_secs;
    let answer = |core: &mut SessionCore, v: Value, at: Duration| {
        core.from_upstream(v.to_string().as_bytes(), at)
    };
    answer(
        &mut core,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "flaky", "inputSchema": {"type": "object"}}]}}),
        secs(0),
    );
    let send = |core: &mut SessionCore, id: u64, at: Duration| {
        core.from_client(call(id, "flaky", json!({})).to_string().as_bytes(), at)
    };
    // A success: nothing counted.
    assert!(matches!(
        send(&mut core, 2, secs(0)).as_slice(),
        [Out::Upstream(_)]
    ));
    answer(
        &mut core,
        json!({"jsonrpc": "2.0", "id": 2, "result": {"content": []}}),
        secs(0),
    );
    // isError at 1 s, a JSON-RPC error at 2 s.
    send(&mut core, 3, secs(0));
    answer(
        &mut core,
        json!({"jsonrpc": "2.0", "id": 3, "result": {"content": [], "isError": true}}),
        secs(1),
    );
    send(&mut core, 4, secs(2));
    answer(
        &mut core,
        json!({"jsonrpc": "2.0", "id": 4, "error": {"code": -32603, "message": "boom"}}),
        secs(2),
    );
    // No answer: the timeout at 8 s.
    send(&mut core, 5, secs(3));
    assert_eq!(core.tick(secs(8)).len(), 2);
    // The upstream gone mid-call at 10 s.
    assert!(matches!(
        send(&mut core, 6, secs(9)).as_slice(),
        [Out::Upstream(_)]
    ));
    core.upstream_closed(secs(10), "exited with code 70");
    let outs = send(&mut core, 7, secs(11));
    let [Out::Client(refused)] = outs.as_slice() else {
        panic!("{outs:?}")
    };
    let detail = &refused["result"]["_meta"]["dev.tollgate/decision"];
    assert_eq!(detail["decision"], "error_limited");
    // The error at 1 s leaves the window at 61 s.
    assert_eq!(detail["retry_after_seconds"], 50.0);
    assert_eq!(detail["limits"][0]["used"], 4);
    // Still refused just before, admitted at 61 s (three errors left in the window).
    let outs = send(&mut core, 8, Duration::from_millis(60_999));
    assert!(matches!(outs.as_slice(), [Out::Client(_)]), "{outs:?}");
    assert!(matches!(
        send(&mut core, 9, secs(61)).as_slice(),
        [Out::Upstream(_)]
    ));
    gateway.flush_audit();
    let report = verify(&path, None).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    let records = tollgate_gateway::audit::read_records(&path).unwrap();
    let counted: Vec<(u64, u64)> = records
        .iter()
        .filter(|r| r["kind"] == "outcome")
        .map(|r| {
            let used = r["errors_counted"][0]["used"].as_u64().unwrap_or(0);
            (r["t_ms"].as_u64().unwrap(), used)
        })
        .collect();
    assert_eq!(
        counted,
        [(0, 0), (1_000, 1), (2_000, 2), (8_000, 3), (10_000, 4)],
        "(instant, errors in the window after counting) per outcome"
    );
}
