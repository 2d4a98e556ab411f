//! Several replicas: two `tollgate gateway` processes sharing one `redis-server` (started by the
//! test on a free loopback port), each in front of its own `tollgate mock-eks`. A call held on
//! replica `a` is listed on `b`, decided there, and executed by `a`'s upstream exactly once
//! (its journal) and audited once in `a`'s log with the replica that took the verdict; the race
//! rules (docs/approvals.md, "Several replicas"): two verdicts, a verdict after the timeout, the
//! holding replica gone, Redis gone. And a stateless client (2026-07-28) alternating between
//! the two replicas: its limits hold across both exactly, its held call is decided on the other.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_store_redis::testing::RedisServer;

use crate::approvals::{ADMIN_TOKEN, AGENT_TOKEN, Agent, POLICY, decision, inline_policy_args, rt};
use crate::mock_eks::{Guard, start_http, start_listening};
use crate::util::json_lines;

const BOB_TOKEN: &str = "bob-admin-token-00000000";

/// One replica: a mock, and a gateway in front of it sharing `redis` as replica `name`.
struct Replica {
    gateway: Option<Guard>,
    _mock: Guard,
    url: String,
    base: String,
    journal: PathBuf,
    audit: PathBuf,
}

fn replica(dir: &Path, name: &str, redis: &str, policy: &str) -> Replica {
    let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
    std::fs::write(dir.join(format!("policy-{name}.json")), policy).unwrap();
    std::fs::write(dir.join("tokens"), format!("{AGENT_TOKEN} ci-bot\n")).unwrap();
    std::fs::write(
        dir.join("admins"),
        format!("{ADMIN_TOKEN} alice\n{BOB_TOKEN} bob\n"),
    )
    .unwrap();
    let journal = dir.join(format!("journal-{name}.jsonl"));
    let audit = dir.join(format!("audit-{name}.jsonl"));
    let (mock, mock_url) = start_http(&["--allow-write", "--journal", journal.to_str().unwrap()]);
    let (gateway, url) = start_listening(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        &path(&format!("policy-{name}.json")),
        "--tokens",
        &path("tokens"),
        "--admin-tokens",
        &path("admins"),
        "--audit",
        audit.to_str().unwrap(),
        "--store",
        redis,
        "--replica",
        name,
        "--upstream-url",
        &mock_url,
    ]);
    let base = url.trim_end_matches("/mcp").to_owned();
    Replica {
        gateway: Some(gateway),
        _mock: mock,
        url,
        base,
        journal,
        audit,
    }
}

impl Replica {
    fn journal_calls(&self, tool: &str) -> usize {
        json_lines(&self.journal)
            .iter()
            .filter(|e| e["tool"] == tool)
            .count()
    }

    fn records(&self, kind: &str) -> Vec<Value> {
        json_lines(&self.audit)
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }

    async fn list(&self, http: &reqwest::Client) -> Value {
        http.get(format!("{}/admin/approvals", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls this replica's list until `n` calls are pending (bounded: 20 s).
    async fn pending(&self, http: &reqwest::Client, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = self.list(http).await;
            let pending = list["pending"].as_array().cloned().unwrap_or_default();
            if pending.len() == n {
                return pending;
            }
            assert!(Instant::now() < deadline, "expected {n} pending: {list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn decide(
        &self,
        http: &reqwest::Client,
        token: &str,
        id: &str,
        verdict: &str,
        reason: Option<&str>,
    ) -> (u16, Value) {
        let r = http
            .post(format!("{}/admin/approvals/{id}/{verdict}", self.base))
            .bearer_auth(token)
            .body(reason.map_or_else(String::new, |r| json!({"reason": r}).to_string()))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

/// Sends `add_inline_policy` (role `r{id}`) as request `id` without waiting for it: the call is
/// held for approval, and its answer comes once a verdict is taken.
fn held_call(agent: &Agent, id: u64) -> tokio::task::JoinHandle<Value> {
    let agent = agent.clone();
    let args = inline_policy_args(&format!("r{id}"));
    tokio::spawn(async move { agent.call(id, "add_inline_policy", args).await })
}

/// A call held on `a` is listed on `b` (its id `1@a`, its arguments redacted as `a` shows them,
/// its deadline on `b`'s clock), approved on `b`, run once by `a`'s upstream and audited once in
/// `a`'s log with the replica and the operator; a second is denied on `b`; a third is decided
/// on both at once (the first verdict wins, the second gets 409); a fourth times out and a late
/// verdict from either replica is told it expired (409); Redis stopped: `b` lists only its own
/// and refuses to carry a verdict (503), while `a` still decides its own; Redis back (empty):
/// a call held meanwhile is published and decided from `b`.
#[test]
fn a_call_held_on_one_replica_is_decided_from_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path()).unwrap();
    let a = replica(dir.path(), "a", &redis.url(), POLICY);
    let b = replica(dir.path(), "b", &redis.url(), POLICY);
    let runtime = rt();
    let http = reqwest::Client::new();
    runtime.block_on(async {
        let agent = Agent::open(&a.url, AGENT_TOKEN).await;

        // Approved on b.
        let call = held_call(&agent, 1);
        let on_b = b.pending(&http, 1).await;
        assert_eq!(on_b[0]["id"], "1@a", "{on_b:?}");
        assert_eq!(on_b[0]["replica"], "a");
        assert_eq!(on_b[0]["tool"], "add_inline_policy");
        assert_eq!(on_b[0]["arguments"]["permissions"], "[redacted]");
        let list_b = b.list(&http).await;
        let left = on_b[0]["deadline_ms"].as_u64().unwrap() - list_b["now_ms"].as_u64().unwrap();
        assert!(left > 500_000 && left <= 600_000, "10 minutes left: {left}");
        let one: Value = http
            .get(format!("{}/admin/approvals/1@a", b.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (&one["id"], &one["tool"]),
            (&json!("1@a"), &json!("add_inline_policy"))
        );
        let on_a = a.pending(&http, 1).await;
        assert_eq!(on_a[0]["id"], 1);
        assert_eq!(on_a[0]["replica"], "a");
        let (status, body) = b
            .decide(&http, BOB_TOKEN, "1@a", "approve", Some("change 42"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["verdict"], "approved");
        assert_eq!(body["approver"], "bob");
        assert_eq!(body["replica"], "b");
        assert_eq!(body["held_by"], "a");
        let answer = call.await.unwrap();
        assert_eq!(decision(&answer), "forwarded", "{answer}");
        assert_eq!(a.journal_calls("add_inline_policy"), 1);
        assert_eq!(b.journal_calls("add_inline_policy"), 0);
        b.pending(&http, 0).await;

        // Denied on b with `tollgate approvals`: the agent is told who and why; nothing reaches
        // the upstream.
        let call = held_call(&agent, 2);
        b.pending(&http, 1).await;
        let cli = |args: &'static [&'static str]| {
            let url = b.url.clone();
            tokio::task::spawn_blocking(move || {
                crate::util::tollgate()
                    .args(["approvals", "--url", &url])
                    .args(args)
                    .env("TOLLGATE_ADMIN_TOKEN", BOB_TOKEN)
                    .output()
                    .unwrap()
            })
        };
        let listed = cli(&["list"]).await.unwrap();
        let table = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(
            table.contains("2@a") && !table.contains("\"2@a\""),
            "{table}"
        );
        let denied = cli(&["deny", "2@a", "--reason", "not today"])
            .await
            .unwrap();
        assert!(
            denied.status.success(),
            "{}",
            String::from_utf8_lossy(&denied.stderr)
        );
        assert!(String::from_utf8_lossy(&denied.stdout).starts_with("denied 2@a"));
        let answer = call.await.unwrap();
        assert_eq!(decision(&answer), "approval_denied", "{answer}");
        let text = answer["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("bob") && text.contains("not today"), "{text}");
        assert_eq!(a.journal_calls("add_inline_policy"), 1);

        // Two operators at once, one on each replica: one verdict stands.
        let call = held_call(&agent, 3);
        b.pending(&http, 1).await;
        let (on_a, on_b) = tokio::join!(
            a.decide(&http, ADMIN_TOKEN, "3", "approve", None),
            b.decide(&http, BOB_TOKEN, "3@a", "approve", None),
        );
        let mut statuses = [on_a.0, on_b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{on_a:?} {on_b:?}");
        let loser = if on_a.0 == 409 { &on_a.1 } else { &on_b.1 };
        assert!(
            error_of(loser).contains("approval 3 is no longer pending")
                && error_of(loser).contains("approved it"),
            "{loser}"
        );
        assert_eq!(decision(&call.await.unwrap()), "forwarded");
        assert_eq!(a.journal_calls("add_inline_policy"), 2);

        // A timeout (2 s): the agent is refused at the deadline; a late verdict from either
        // replica is told it expired, and nothing is forwarded.
        let answer = agent
            .call(4, "CancelAHORunBatch", json!({"batchId": "rb-0001"}))
            .await;
        assert_eq!(decision(&answer), "approval_timeout", "{answer}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = b.decide(&http, BOB_TOKEN, "4@a", "approve", None).await;
        assert_eq!(status, 409, "{body}");
        assert!(
            error_of(&body).contains("approval 4 is no longer pending: it expired at"),
            "{body}"
        );
        let (status, body) = a.decide(&http, ADMIN_TOKEN, "4", "approve", None).await;
        assert_eq!(status, 409, "{body}");
        assert!(error_of(&body).contains("expired"), "{body}");
        assert_eq!(a.journal_calls("CancelAHORunBatch"), 0);

        // Redis stops: b lists its own calls only and says why; a verdict it cannot carry is
        // refused (fail closed); a still decides the calls it holds.
        let call = held_call(&agent, 5);
        b.pending(&http, 1).await;
        redis.kill();
        let list = b.list(&http).await;
        assert_eq!(list["pending"], json!([]), "{list}");
        assert!(
            list["replicas_error"]
                .as_str()
                .unwrap_or_default()
                .contains("cannot list"),
            "{list}"
        );
        let (status, body) = b.decide(&http, BOB_TOKEN, "5@a", "approve", None).await;
        assert_eq!(status, 503, "{body}");
        assert!(error_of(&body).contains("nothing was decided"), "{body}");
        let (status, body) = a.decide(&http, ADMIN_TOKEN, "5", "approve", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(decision(&call.await.unwrap()), "forwarded");
        assert_eq!(a.journal_calls("add_inline_policy"), 3);

        // A call held while Redis is down is published once it is back (restarted empty, it
        // lost every entry): b lists it and decides it.
        let call = held_call(&agent, 6);
        a.pending(&http, 1).await;
        redis.restart().unwrap();
        let on_b = b.pending(&http, 1).await;
        assert_eq!(on_b[0]["id"], "6@a");
        let (status, body) = b.decide(&http, BOB_TOKEN, "6@a", "approve", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(decision(&call.await.unwrap()), "forwarded");
        assert_eq!(a.journal_calls("add_inline_policy"), 4);
    });

    // a's log: each verdict once, naming the replica whose API took it and the operator.
    let verdicts: Vec<(Value, Value, Value, Value)> = a
        .records("approval")
        .into_iter()
        .map(|r| {
            (
                r["approval_id"].clone(),
                r["verdict"].clone(),
                r["approver"].clone(),
                r["replica"].clone(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (json!(1), json!("approved"), json!("bob"), json!("b")),
            (json!(2), json!("denied"), json!("bob"), json!("b")),
            (
                json!(3),
                json!("approved"),
                verdicts[2].2.clone(),
                verdicts[2].3.clone()
            ),
            (json!(4), json!("expired"), Value::Null, Value::Null),
            (json!(5), json!("approved"), json!("alice"), json!("a")),
            (json!(6), json!("approved"), json!("bob"), json!("b")),
        ]
    );
    let released: Vec<Value> = a
        .records("decision")
        .into_iter()
        .filter(|r| r.get("approved_by").is_some())
        .map(|r| r["approval_id"].clone())
        .collect();
    assert_eq!(
        released,
        vec![json!(1), json!(3), json!(5), json!(6)],
        "one release per approval"
    );
    assert!(
        b.records("approval").is_empty(),
        "b holds nothing, so records no verdict"
    );
    crate::util::assert_audit_verifies(&a.audit);
    crate::util::assert_audit_verifies(&b.audit);
}

/// The holding replica dies: its call leaves the other replica's list once its heartbeat
/// expires (3 s), and a verdict for it is told it is gone.
#[test]
fn a_dead_replicas_calls_are_gone_from_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let mut a = replica(dir.path(), "a", &redis.url(), POLICY);
    let b = replica(dir.path(), "b", &redis.url(), POLICY);
    let runtime = rt();
    let http = reqwest::Client::new();
    runtime.block_on(async {
        let agent = Agent::open(&a.url, AGENT_TOKEN).await;
        let _call = tokio::spawn(async move {
            let _ = agent
                .call(1, "add_inline_policy", inline_policy_args("r1"))
                .await;
        });
        b.pending(&http, 1).await;
        // SIGKILL: no clean shutdown, no withdrawal.
        drop(a.gateway.take());
        let started = Instant::now();
        b.pending(&http, 0).await;
        assert!(
            started.elapsed() <= Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let (status, body) = b.decide(&http, BOB_TOKEN, "1@a", "approve", None).await;
        assert_eq!(status, 410, "{body}");
        assert!(error_of(&body).contains("stopped answering"), "{body}");
    });
    assert_eq!(a.journal_calls("add_inline_policy"), 0);
}

/// A stateless client (2026-07-28: no session, no affinity needed) sends each request to the
/// other replica in turn: a limit of 3 calls a minute per grant admits exactly 3 across both,
/// and refuses the 4th and 5th whichever replica gets them; a call held on one replica is
/// approved on the other and runs there once.
#[test]
fn a_stateless_client_alternating_between_replicas_meets_one_limit_and_one_approval() {
    const LIMITED: &str = r#"{"version": "1", "default": "allow", "tools": {
        "GetAHOBatch": {"limits": [{"counter": "reads", "window": "minute", "max": 3, "scope": "grant"}]},
        "add_inline_policy": {"action": "require_approval", "approval": {"timeout": "10m"}}}}"#;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let a = replica(dir.path(), "a", &redis.url(), LIMITED);
    let b = replica(dir.path(), "b", &redis.url(), LIMITED);
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}});
    let runtime = rt();
    let http = reqwest::Client::new();
    let post = |url: String, id: u64, tool: &'static str, args: Value| {
        let (http, meta) = (http.clone(), meta.clone());
        async move {
            let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": tool, "arguments": args, "_meta": meta}});
            let r = http
                .post(&url)
                .bearer_auth(AGENT_TOKEN)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert!(
                r.headers().get("mcp-session-id").is_none(),
                "stateless: no session"
            );
            r.json::<Value>().await.unwrap()
        }
    };
    runtime.block_on(async {
        let mut outcomes = Vec::new();
        for i in 0..5u64 {
            let url = if i % 2 == 0 { &a.url } else { &b.url };
            let answer = post(
                url.clone(),
                i + 1,
                "GetAHOBatch",
                json!({"batchId": "rb-0001"}),
            )
            .await;
            outcomes.push(decision(&answer));
        }
        assert_eq!(
            outcomes,
            [
                "forwarded",
                "forwarded",
                "forwarded",
                "rate_limited",
                "rate_limited"
            ],
            "a, b, a admitted; b and a refused"
        );
        assert_eq!(
            a.journal_calls("GetAHOBatch") + b.journal_calls("GetAHOBatch"),
            3
        );

        // Held on b (this request went there), approved on a.
        let call = tokio::spawn(post(
            b.url.clone(),
            9,
            "add_inline_policy",
            inline_policy_args("r"),
        ));
        let on_a = a.pending(&http, 1).await;
        assert_eq!(on_a[0]["id"], "1@b", "{on_a:?}");
        let (status, body) = a.decide(&http, ADMIN_TOKEN, "1@b", "approve", None).await;
        assert_eq!(status, 200, "{body}");
        let answer = call.await.unwrap();
        assert_eq!(answer["id"], 9);
        assert_eq!(decision(&answer), "forwarded", "{answer}");
    });
    assert_eq!(b.journal_calls("add_inline_policy"), 1);
    assert_eq!(a.journal_calls("add_inline_policy"), 0);
    let approvals = b.records("approval");
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0]["replica"], "a");
    assert_eq!(approvals[0]["approver"], "alice");
}

/// The holding replica stops taking verdicts (SIGSTOP, its heartbeat still fresh): a verdict
/// sent to it is withdrawn after 3 s and the operator gets 504, nothing decided; when the
/// replica runs again it never applies that verdict: the call is still pending there, and is
/// decided by the next verdict.
#[test]
fn a_verdict_not_taken_in_time_is_withdrawn_and_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let a = replica(dir.path(), "a", &redis.url(), POLICY);
    let b = replica(dir.path(), "b", &redis.url(), POLICY);
    let pid = a.gateway.as_ref().unwrap().0.id().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let runtime = rt();
    let http = reqwest::Client::new();
    runtime.block_on(async {
        let agent = Agent::open(&a.url, AGENT_TOKEN).await;
        let call = tokio::spawn(async move {
            agent
                .call(1, "add_inline_policy", inline_policy_args("r1"))
                .await
        });
        b.pending(&http, 1).await;
        signal("-STOP");
        let started = Instant::now();
        let (status, body) = b.decide(&http, BOB_TOKEN, "1@a", "approve", None).await;
        signal("-CONT");
        assert_eq!(status, 504, "{body}");
        assert!(
            error_of(&body).contains("it was withdrawn and nothing was decided"),
            "{body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        // Running again, a takes nothing from its inbox: the call waits for a verdict.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let on_a = a.pending(&http, 1).await;
        assert_eq!(on_a[0]["id"], 1);
        let (status, body) = a.decide(&http, ADMIN_TOKEN, "1", "deny", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(decision(&call.await.unwrap()), "approval_denied");
    });
    let verdicts = a.records("approval");
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert_eq!(
        (&verdicts[0]["verdict"], &verdicts[0]["approver"]),
        (&json!("denied"), &json!("alice"))
    );
    assert_eq!(a.journal_calls("add_inline_policy"), 0);
}
