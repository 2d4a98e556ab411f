//! Human approvals in the session core, in virtual time, against the in-process mock EKS
//! server: a held call is answered by the upstream once approved and never reaches it when
//! denied or expired; timeouts fire exactly at the deadline on the injected clock; every
//! verdict is an audit record naming who decided and when; the budget is taken at approval;
//! elicitation asks the client's user instead.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::approvals::ApprovalError;
use tollgate_gateway::audit::{AuditLog, read_records, verify};
use tollgate_gateway::core::{Gateway, GatewayOptions, Out, SessionCore};
use tollgate_mock_eks::world::Flags;
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_policy::{Engine, MemoryStore, Policy};

/// Approval rules for the tests: `add_inline_policy` (5 minutes, then deny, its `permissions`
/// redacted), `delete_cfn_stack`-like `manage_eks_stacks` (2 minutes, then allow), a limited
/// `CancelAHORunBatch` (2 per hour), and `get_pod_logs` asked of the client's user.
const POLICY: &str = r#"{"version": "1", "default": "allow", "tools": {
    "add_inline_policy": {"action": "require_approval", "reason": "grants IAM permissions",
        "approval": {"timeout": "5m"}, "redact": ["permissions"]},
    "manage_eks_stacks": {"action": "require_approval", "approval": {"timeout": "2m", "on_timeout": "allow"}},
    "CancelAHORunBatch": {"action": "require_approval", "limits": [{"counter": "cancels", "window": "hour", "max": 2}]},
    "get_pod_logs": {"action": "require_approval", "approval": {"timeout": "1m", "via": "elicitation"}}
}}"#;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Clients, their gateway sessions and one mock, wired in process.
struct Rig {
    gateway: Arc<Gateway>,
    sessions: Vec<(SessionCore, Vec<Value>)>,
    mock: MockEks,
}

impl Rig {
    fn new(audit: Option<AuditLog>, options: GatewayOptions) -> Rig {
        let policy = Policy::parse("policy.json", POLICY).unwrap_or_else(|d| panic!("{d}"));
        let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
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
            gateway,
            sessions: Vec::new(),
            mock,
        }
    }

    fn operators() -> GatewayOptions {
        GatewayOptions {
            approvals: true,
            ..GatewayOptions::default()
        }
    }

    /// Opens a session for `grant` with these client capabilities; returns its index.
    fn session(&mut self, grant: &str, capabilities: Value) -> usize {
        let n = self.sessions.len();
        let core = self.gateway.session(grant, &format!("s{n}"));
        self.sessions.push((core, Vec::new()));
        self.send(n, json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "1"}}}), Duration::ZERO);
        self.send(
            n,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            Duration::ZERO,
        );
        n
    }

    /// Sends a client message and pumps until quiet; returns what reached the client.
    fn send(&mut self, s: usize, msg: Value, now: Duration) -> Vec<Value> {
        let outs = self.sessions[s]
            .0
            .from_client(msg.to_string().as_bytes(), now);
        self.pump(s, outs, now)
    }

    /// Ticks a session at `now`; returns what reached the client.
    fn tick(&mut self, s: usize, now: Duration) -> Vec<Value> {
        let outs = self.sessions[s].0.tick(now);
        self.pump(s, outs, now)
    }

    fn pump(&mut self, s: usize, mut outs: Vec<Out>, now: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        for _ in 0..1000 {
            if outs.is_empty() {
                self.sessions[s].1.extend(got.clone());
                return got;
            }
            match outs.remove(0) {
                Out::Client(v) => got.push(v),
                Out::Upstream(v) => {
                    let session = format!("s{s}");
                    let h = self.mock.handle(&session, v.to_string().as_bytes(), now);
                    if let Some(r) = h.response {
                        outs.extend(
                            self.sessions[s]
                                .0
                                .from_upstream(r.to_string().as_bytes(), now),
                        );
                    }
                }
            }
        }
        panic!("messages kept flowing");
    }

    fn in_journal(&self, tool: &str) -> usize {
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

fn inline_policy(id: u64) -> Value {
    call(
        id,
        "add_inline_policy",
        json!({"policy_name": "p", "role_name": "r", "permissions": {"Action": "s3:*"}}),
    )
}

fn decision_of(answer: &Value) -> &str {
    answer["result"]["_meta"]["dev.tollgate/decision"]["decision"]
        .as_str()
        .unwrap_or("forwarded")
}

/// Approved: the call is held (no answer, nothing upstream), listed with its redacted
/// arguments, grant, session and deadline; once approved, the next tick forwards it exactly
/// once and the agent gets the upstream's own answer.
#[test]
fn approved_call_is_forwarded_once_and_answered_by_the_upstream() {
    let mut rig = Rig::new(None, Rig::operators());
    let s = rig.session("ci-bot", json!({}));
    assert!(rig.send(s, inline_policy(1), SECS(10)).is_empty());
    assert_eq!(rig.in_journal("add_inline_policy"), 0);
    let (pending, _) = rig.gateway.list_approvals(SECS(11));
    assert_eq!(pending.len(), 1);
    let p = &pending[0];
    assert_eq!(
        (p.id, p.tool.as_str(), p.grant.as_str(), p.session.as_str()),
        (1, "add_inline_policy", "ci-bot", "s0")
    );
    assert_eq!(p.arguments["permissions"], "[redacted]");
    assert_eq!(p.arguments["role_name"], "r");
    assert_eq!((p.created_at_ms, p.deadline_ms), (10_000, 310_000));
    assert_eq!(rig.sessions[s].0.next_deadline(), Some(SECS(310)));
    assert_eq!(rig.gateway.metrics.approvals_pending.get(), 1);

    let decided = rig
        .gateway
        .approve(1, "alice", Some("ticket OPS-7"), SECS(20))
        .unwrap();
    assert_eq!(decided.verdict.approver.as_deref(), Some("alice"));
    assert_eq!(rig.gateway.metrics.approvals_pending.get(), 0);
    let answers = rig.tick(s, SECS(20));
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["id"], 1);
    // The mock's own answer (its world has no role `r`), not a gateway refusal.
    assert_eq!(decision_of(&answers[0]), "forwarded");
    let text = answers[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("Failed to create inline policy"), "{text}");
    assert_eq!(rig.in_journal("add_inline_policy"), 1);
    // The real arguments went upstream, not the redacted ones.
    let sent = rig
        .mock
        .journal()
        .iter()
        .find(|e| e.tool.as_deref() == Some("add_inline_policy"))
        .map(|e| format!("{e:?}"))
        .unwrap();
    assert!(sent.contains("s3:*"), "{sent}");
    // Nothing more happens later: the call was forwarded once.
    assert!(rig.tick(s, SECS(400)).is_empty());
    assert_eq!(rig.in_journal("add_inline_policy"), 1);
    let (pending, recent) = rig.gateway.list_approvals(SECS(400));
    assert!(pending.is_empty());
    assert_eq!(recent[0].verdict.reason.as_deref(), Some("ticket OPS-7"));
}

/// Denied: the agent gets a refusal naming the approver and their reason; the call never
/// reaches the upstream; a second decision on the same id is refused as not pending, and an
/// id never issued is unknown.
#[test]
fn denied_call_names_the_approver_and_never_reaches_the_upstream() {
    let mut rig = Rig::new(None, Rig::operators());
    let s = rig.session("ci-bot", json!({}));
    rig.send(s, inline_policy(1), SECS(1));
    rig.gateway
        .deny(1, "bob", Some("not during the freeze"), SECS(5))
        .unwrap();
    let answers = rig.tick(s, SECS(5));
    assert_eq!(decision_of(&answers[0]), "approval_denied");
    let text = answers[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("`bob` denied it"), "{text}");
    assert!(text.contains("not during the freeze"), "{text}");
    let t = &answers[0]["result"]["_meta"]["dev.tollgate/decision"];
    assert_eq!(t["approver"], "bob");
    assert_eq!(t["approval_id"], 1);
    assert_eq!(rig.in_journal("add_inline_policy"), 0);
    assert!(matches!(
        rig.gateway.approve(1, "alice", None, SECS(6)),
        Err(ApprovalError::NotPending { id: 1, .. })
    ));
    let e = rig.gateway.approve(1, "alice", None, SECS(6)).unwrap_err();
    assert!(e.to_string().contains("bob denied it"), "{e}");
    assert_eq!(e.status(), 409);
    assert!(matches!(
        rig.gateway.deny(99, "alice", None, SECS(6)),
        Err(ApprovalError::NotFound { id: 99 })
    ));
}

/// Timed out under `on_timeout: deny` (the default): nothing a millisecond before the
/// deadline, the `approval_timeout` refusal exactly at it; an operator who approves after the
/// deadline is told it expired; the call never reached the upstream.
#[test]
fn timeout_with_deny_refuses_exactly_at_the_deadline() {
    let mut rig = Rig::new(None, Rig::operators());
    let s = rig.session("ci-bot", json!({}));
    rig.send(s, inline_policy(1), SECS(0));
    assert!(rig.tick(s, SECS(300) - Duration::from_millis(1)).is_empty());
    let e = rig
        .gateway
        .approve(1, "alice", None, SECS(300))
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    let answers = rig.tick(s, SECS(300));
    assert_eq!(decision_of(&answers[0]), "approval_timeout");
    let text = answers[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("within 5m"), "{text}");
    assert_eq!(rig.in_journal("add_inline_policy"), 0);
    assert_eq!(rig.sessions[s].0.next_deadline(), None);
}

/// Timed out under `on_timeout: allow`: forwarded at the deadline, answered by the upstream.
#[test]
fn timeout_with_allow_forwards_at_the_deadline() {
    let mut rig = Rig::new(None, Rig::operators());
    let s = rig.session("ci-bot", json!({}));
    let args =
        json!({"operation": "describe", "template_file": "t.yaml", "cluster_name": "prod-eks"});
    assert!(
        rig.send(s, call(1, "manage_eks_stacks", args), SECS(0))
            .is_empty()
    );
    assert!(rig.tick(s, SECS(119)).is_empty());
    assert_eq!(rig.in_journal("manage_eks_stacks"), 0);
    let answers = rig.tick(s, SECS(120));
    assert_eq!(answers.len(), 1);
    assert_eq!(decision_of(&answers[0]), "forwarded", "{}", answers[0]);
    assert_eq!(rig.in_journal("manage_eks_stacks"), 1);
}

/// The audit log holds, in order, the decision that held each call, the verdict (who, why,
/// when, how long it waited), the release decision and the outcome of the approved call; the
/// chain verifies.
#[test]
fn every_verdict_is_an_audit_record_with_who_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut rig = Rig::new(
        Some(AuditLog::open(&path, false).unwrap()),
        Rig::operators(),
    );
    let s = rig.session("ci-bot", json!({}));
    rig.send(s, inline_policy(1), SECS(1));
    rig.send(s, inline_policy(2), SECS(2));
    rig.send(s, inline_policy(3), SECS(3));
    rig.gateway.approve(1, "alice", None, SECS(4)).unwrap();
    rig.gateway
        .deny(2, "bob", Some("duplicate"), SECS(5))
        .unwrap();
    rig.tick(s, SECS(5));
    rig.tick(s, SECS(303));
    assert!(verify(&path, None).unwrap().problems.is_empty());
    let records = read_records(&path).unwrap();
    let approvals: Vec<(u64, &str, Value, u64)> = records
        .iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| {
            (
                r["approval_id"].as_u64().unwrap(),
                r["verdict"].as_str().unwrap(),
                r["approver"].clone(),
                r["t_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        approvals,
        [
            (1, "approved", json!("alice"), 4000),
            (2, "denied", json!("bob"), 5000),
            (3, "expired", Value::Null, 303_000),
        ]
    );
    let denied = records.iter().find(|r| r["verdict"] == "denied").unwrap();
    assert_eq!(denied["reason"], "duplicate");
    assert_eq!(denied["waited_ms"], 3000);
    let expired = records.iter().find(|r| r["verdict"] == "expired").unwrap();
    assert_eq!(expired["on_timeout"], "deny");
    // Held decisions carry the approval id; the release is a decision of its own, before the
    // outcome, pointing back at the held decision.
    let held: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["kind"] == "decision" && r["approval_id"].is_u64() && r.get("approved_by").is_none()
        })
        .collect();
    assert_eq!(held.len(), 3);
    assert_eq!(held[0]["arguments"]["permissions"], "[redacted]");
    let release = records
        .iter()
        .position(|r| r["kind"] == "decision" && r["approved_by"] == "alice")
        .unwrap();
    assert_eq!(records[release]["decision"]["decision"], "allow");
    assert_eq!(records[release]["held_decision_seq"], held[0]["seq"]);
    let outcome = records.iter().position(|r| r["kind"] == "outcome").unwrap();
    assert!(outcome > release);
    assert_eq!(records[outcome]["decision_seq"], records[release]["seq"]);
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "outcome").count(),
        1,
        "only the approved call reached the upstream"
    );
}

/// The budget is taken at approval, never at hold: five held cancels take nothing, so the
/// first two approvals go through; a third approval finds the hour's budget full and is
/// refused as rate limited (naming the approver), consuming nothing; a new cancel is then
/// refused at once without being held.
#[test]
fn the_budget_is_taken_at_approval_and_a_refused_call_consumes_nothing() {
    let mut rig = Rig::new(None, Rig::operators());
    let s = rig.session("ci-bot", json!({}));
    for i in 1..=4u64 {
        assert!(
            rig.send(
                s,
                call(
                    i,
                    "CancelAHORunBatch",
                    json!({"batchId": format!("rb-000{i}")})
                ),
                SECS(i)
            )
            .is_empty()
        );
    }
    for (approval, at) in [(1, 10), (2, 11), (3, 12)] {
        rig.gateway
            .approve(approval, "alice", None, SECS(at))
            .unwrap();
    }
    let mut answers = rig.tick(s, SECS(12));
    answers.sort_by_key(|a| a["id"].as_u64());
    let decisions: Vec<&str> = answers.iter().map(decision_of).collect();
    assert_eq!(decisions, ["forwarded", "forwarded", "rate_limited"]);
    let text = answers[2]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("`alice` approved it (approval 3), but its budget filled up"),
        "{text}"
    );
    assert_eq!(rig.in_journal("CancelAHORunBatch"), 2);
    let fresh = rig.send(
        s,
        call(5, "CancelAHORunBatch", json!({"batchId": "rb-0005"})),
        SECS(13),
    );
    assert_eq!(decision_of(&fresh[0]), "rate_limited");
    // Approval 4 is still pending: the new call was not held.
    let (pending, _) = rig.gateway.list_approvals(SECS(13));
    assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), [4]);
}

/// Without an approval channel (no operators, no elicitation) the call is refused at once, as
/// before approvals existed; with one, a grant may hold at most `max_held_per_grant` calls.
#[test]
fn no_channel_refuses_at_once_and_the_queue_per_grant_is_bounded() {
    let mut rig = Rig::new(None, GatewayOptions::default());
    let s = rig.session("ci-bot", json!({}));
    let answers = rig.send(s, inline_policy(1), SECS(0));
    assert_eq!(decision_of(&answers[0]), "approval_required");

    let mut rig = Rig::new(
        None,
        GatewayOptions {
            approvals: true,
            max_held_per_grant: 2,
            ..GatewayOptions::default()
        },
    );
    let a = rig.session("ci-bot", json!({}));
    let b = rig.session("ci-bot", json!({}));
    let other = rig.session("analyst", json!({}));
    assert!(rig.send(a, inline_policy(1), SECS(0)).is_empty());
    assert!(rig.send(b, inline_policy(1), SECS(0)).is_empty());
    let full = rig.send(a, inline_policy(2), SECS(0));
    assert_eq!(decision_of(&full[0]), "approval_queue_full");
    assert!(rig.send(other, inline_policy(1), SECS(0)).is_empty());
    // Issue 19: the refusal names the rule and the policy's reason, as every refusal does.
    insta::assert_snapshot!(serde_json::to_string_pretty(&full[0]).unwrap());
}

/// Two agents hold one call each; the operator approves one and denies the other: each agent
/// gets its own outcome, in its own session.
#[test]
fn decisions_reach_the_session_that_holds_the_call() {
    let mut rig = Rig::new(None, Rig::operators());
    let a = rig.session("ci-bot", json!({}));
    let b = rig.session("analyst", json!({}));
    rig.send(a, inline_policy(7), SECS(0));
    rig.send(b, inline_policy(7), SECS(0));
    let (pending, _) = rig.gateway.list_approvals(SECS(1));
    let of = |grant: &str| pending.iter().find(|p| p.grant == grant).unwrap().id;
    rig.gateway
        .deny(of("ci-bot"), "alice", None, SECS(2))
        .unwrap();
    rig.gateway
        .approve(of("analyst"), "alice", None, SECS(2))
        .unwrap();
    assert_eq!(decision_of(&rig.tick(a, SECS(2))[0]), "approval_denied");
    assert_eq!(decision_of(&rig.tick(b, SECS(2))[0]), "forwarded");
    assert_eq!(rig.in_journal("add_inline_policy"), 1);
}

/// A client that declared elicitation is asked through `elicitation/create` for a rule with
/// `via: elicitation`: accept forwards the call, decline refuses it with the approver recorded
/// as `elicitation`; operators cannot decide such a call; a client without the capability
/// falls back to the operators.
#[test]
fn elicitation_asks_the_clients_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut rig = Rig::new(
        Some(AuditLog::open(&path, false).unwrap()),
        Rig::operators(),
    );
    let s = rig.session("desktop", json!({"elicitation": {"form": {}}}));
    let logs = json!({"cluster_name": "prod-eks", "namespace": "shop", "pod_name": "web-1"});
    let asked = rig.send(s, call(1, "get_pod_logs", logs.clone()), SECS(0));
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["method"], "elicitation/create");
    assert_eq!(asked[0]["params"]["mode"], "form");
    let message = asked[0]["params"]["message"].as_str().unwrap();
    assert!(
        message.contains("`get_pod_logs`") && message.contains("web-1"),
        "{message}"
    );
    let eid = asked[0]["id"].clone();
    let e = rig.gateway.approve(1, "alice", None, SECS(1)).unwrap_err();
    assert!(matches!(e, ApprovalError::Elicitation { id: 1 }), "{e}");
    let answers = rig.send(
        s,
        json!({"jsonrpc": "2.0", "id": eid, "result": {"action": "accept", "content": {}}}),
        SECS(2),
    );
    assert_eq!(decision_of(&answers[0]), "forwarded", "{answers:?}");
    assert_eq!(rig.in_journal("get_pod_logs"), 1);

    let asked = rig.send(s, call(2, "get_pod_logs", logs.clone()), SECS(3));
    let answers = rig.send(
        s,
        json!({"jsonrpc": "2.0", "id": asked[0]["id"], "result": {"action": "decline"}}),
        SECS(4),
    );
    assert_eq!(decision_of(&answers[0]), "approval_denied");
    let text = answers[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("the client's user (asked through elicitation) denied it"),
        "{text}"
    );
    assert_eq!(rig.in_journal("get_pod_logs"), 1);
    // The elicitation's answers never reached the upstream as messages of their own.
    assert!(!format!("{:?}", rig.mock.journal()).contains("accept"));
    let records = read_records(&path).unwrap();
    let verdicts: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| {
            (
                r["verdict"].as_str().unwrap(),
                r["approver"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [("approved", "elicitation"), ("denied", "elicitation")]
    );

    // Unanswered: at the deadline the call is refused and the client told to stop asking.
    let asked = rig.send(s, call(3, "get_pod_logs", logs.clone()), SECS(10));
    let out = rig.tick(s, SECS(70));
    assert_eq!(out[0]["method"], "notifications/cancelled");
    assert_eq!(out[0]["params"]["requestId"], asked[0]["id"]);
    assert_eq!(decision_of(&out[1]), "approval_timeout");

    // A client without the capability: the operators are asked.
    let plain = rig.session("ci-bot", json!({}));
    assert!(
        rig.send(plain, call(1, "get_pod_logs", logs), SECS(80))
            .is_empty()
    );
    let (pending, _) = rig.gateway.list_approvals(SECS(80));
    assert_eq!(pending[0].via, "operators");
}

/// An agent that cancels its held call withdraws it (audited, no answer); a session that ends
/// withdraws what it still holds; neither reaches the upstream or stays listed.
#[test]
fn cancelled_and_abandoned_calls_are_withdrawn() {
    let mut rig = Rig::new(None, Rig::operators());
    let s = rig.session("ci-bot", json!({}));
    rig.send(s, inline_policy(1), SECS(0));
    rig.send(s, inline_policy(2), SECS(0));
    let out = rig.send(
        s,
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        SECS(1),
    );
    assert!(out.is_empty());
    let (pending, recent) = rig.gateway.list_approvals(SECS(1));
    assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), [2]);
    assert_eq!(recent[0].verdict.verdict.name(), "withdrawn");
    rig.sessions.clear();
    let (pending, _) = rig.gateway.list_approvals(SECS(2));
    assert!(pending.is_empty());
    assert_eq!(rig.gateway.metrics.approvals_pending.get(), 0);
    assert_eq!(rig.in_journal("add_inline_policy"), 0);
}

/// What the agent reads when a human denies its call, when nobody decides in time, and when
/// an approval finds the budget full (reviewed snapshot).
#[test]
fn held_call_refusals() {
    let mut rig = Rig::new(None, Rig::operators());
    let s = rig.session("ci-bot", json!({}));
    rig.send(s, inline_policy(1), SECS(10));
    rig.send(s, inline_policy(2), SECS(10));
    rig.gateway
        .deny(
            1,
            "alice",
            Some("no IAM changes during the freeze"),
            SECS(70),
        )
        .unwrap();
    let mut transcript = String::new();
    for (what, at) in [("denied by an operator", 70), ("timed out", 310)] {
        let answer = rig.tick(s, SECS(at));
        transcript.push_str(&format!(
            "== {what}\n{}\n",
            serde_json::to_string_pretty(&answer[0]).unwrap()
        ));
    }
    for i in 1..=3u64 {
        rig.send(
            s,
            call(10 + i, "CancelAHORunBatch", json!({"batchId": "rb-0001"})),
            SECS(400),
        );
    }
    for id in [3, 4, 5] {
        rig.gateway.approve(id, "alice", None, SECS(400)).unwrap();
    }
    let answer = rig.tick(s, SECS(400));
    let refused = answer.iter().find(|a| a["id"] == 13).unwrap();
    transcript.push_str(&format!(
        "== approved, but the budget filled up meanwhile\n{}\n",
        serde_json::to_string_pretty(refused).unwrap()
    ));
    insta::assert_snapshot!(transcript);
}

/// A session that ends (the gateway shuts down) answers its held calls with
/// `approval_withdrawn` rather than leaving the agents waiting; nothing was forwarded.
#[test]
fn ending_a_session_answers_its_held_calls() {
    let mut rig = Rig::new(None, Rig::operators());
    let s = rig.session("ci-bot", json!({}));
    rig.send(s, inline_policy(1), SECS(0));
    let outs = rig.sessions[s]
        .0
        .release_held(SECS(5), "the gateway shut down");
    let [Out::Client(answer)] = outs.as_slice() else {
        panic!("{outs:?}")
    };
    assert_eq!(answer["id"], 1);
    assert_eq!(decision_of(answer), "approval_withdrawn");
    let (pending, recent) = rig.gateway.list_approvals(SECS(5));
    assert!(pending.is_empty());
    assert_eq!(recent[0].verdict.verdict.name(), "withdrawn");
    assert_eq!(rig.in_journal("add_inline_policy"), 0);
}
