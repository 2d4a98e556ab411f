//! Human approvals end to end: `tollgate gateway --listen 127.0.0.1:0 --admin-tokens ...` in
//! front of `tollgate mock-eks`, driven by real HTTP agents, the admin API, `tollgate
//! approvals` and (in `console`) headless Chromium. The mock's journal proves that a denied
//! or expired call never reached it and an approved one did exactly once.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mock_eks::{Guard, start_http, start_listening};
use crate::util::{json_lines, tollgate};

pub(crate) const AGENT_TOKEN: &str = "ci-bot-token-000000";
pub(crate) const ANALYST_TOKEN: &str = "analyst-token-00000";
pub(crate) const ADMIN_TOKEN: &str = "alice-admin-token-0000";

/// `add_inline_policy` waits 10 minutes (its `permissions` redacted); `CancelAHORunBatch`
/// waits 2 seconds, then is denied.
pub(crate) const POLICY: &str = r#"{"version": "1", "default": "allow", "tools": {
    "add_inline_policy": {"action": "require_approval", "reason": "grants IAM permissions",
        "redact": ["permissions"], "approval": {"timeout": "10m"}},
    "CancelAHORunBatch": {"action": "require_approval", "approval": {"timeout": "2s"}}
}}"#;

/// A mock and a gateway with agent and admin tokens, an audit log and the mock's journal.
pub(crate) struct Stack {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub base: String,
    _mock: Guard,
    _gateway: Guard,
}

impl Stack {
    pub(crate) fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        std::fs::write(path("policy.json"), POLICY).unwrap();
        std::fs::write(
            path("tokens"),
            format!("{AGENT_TOKEN} ci-bot\n{ANALYST_TOKEN} analyst\n"),
        )
        .unwrap();
        std::fs::write(
            path("admins"),
            format!("# approvers\n{ADMIN_TOKEN} alice\n"),
        )
        .unwrap();
        let (mock, mock_url) = start_http(&["--allow-write", "--journal", &path("journal.jsonl")]);
        let (gateway, url) = start_listening(&[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            &path("policy.json"),
            "--tokens",
            &path("tokens"),
            "--admin-tokens",
            &path("admins"),
            "--audit",
            &path("audit.jsonl"),
            "--upstream-url",
            &mock_url,
        ]);
        let base = url.trim_end_matches("/mcp").to_owned();
        Stack {
            dir,
            url,
            base,
            _mock: mock,
            _gateway: gateway,
        }
    }

    pub(crate) fn journal_calls(&self, tool: &str) -> usize {
        json_lines(&self.dir.path().join("journal.jsonl"))
            .iter()
            .filter(|e| e["tool"] == tool)
            .count()
    }

    pub(crate) fn audit(&self) -> Vec<Value> {
        json_lines(&self.dir.path().join("audit.jsonl"))
    }

    /// `tollgate approvals --url BASE ARGS` with `token` in TOLLGATE_ADMIN_TOKEN.
    fn cli(&self, token: &str, args: &[&str]) -> Output {
        tollgate()
            .args(["approvals", "--url", &self.url])
            .args(args)
            .env("TOLLGATE_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    }

    /// Polls the admin API until `n` calls are pending (bounded: 20 s).
    pub(crate) async fn pending(&self, http: &reqwest::Client, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list: Value = http
                .get(format!("{}/admin/approvals", self.base))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let pending = list["pending"].as_array().cloned().unwrap_or_default();
            if pending.len() == n {
                return pending;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} pending approvals: {list}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An HTTP agent: opens a session with its token and makes calls (each POST waits for its
/// answer, however long the call is held).
#[derive(Clone)]
pub(crate) struct Agent {
    http: reqwest::Client,
    url: String,
    token: &'static str,
    session: String,
}

impl Agent {
    pub(crate) async fn open(url: &str, token: &'static str) -> Agent {
        let http = reqwest::Client::new();
        let r = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "agent", "version": "1"}}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        Agent {
            http,
            url: url.to_owned(),
            token,
            session,
        }
    }

    pub(crate) async fn call(&self, id: u64, tool: &str, args: Value) -> Value {
        self.http
            .post(&self.url)
            .bearer_auth(self.token)
            .header("mcp-session-id", &self.session)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

pub(crate) fn inline_policy_args(role: &str) -> Value {
    json!({"policy_name": "p", "role_name": role, "permissions": {"Action": "s3:*"}})
}

pub(crate) fn decision(answer: &Value) -> String {
    answer["result"]["_meta"]["dev.tollgate/decision"]["decision"]
        .as_str()
        .unwrap_or("forwarded")
        .to_owned()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The admin API and `tollgate approvals` against a real gateway: three agents' calls are
/// held; an agent's token cannot list, approve or deny (403, exit 2) and an admin token is no
/// agent's at /mcp (401); the CLI lists them (table and JSON, arguments redacted), approves
/// one (its agent gets the upstream's answer), denies one with a reason (its agent is told
/// who and why); deciding again is 409 (exit 1), an unknown id 404 (exit 1); the third
/// expires after its 2 s. The live feed carries each event; the journal holds the approved
/// call once and nothing else; the audit log verifies and records who decided what and when.
#[test]
fn admin_api_and_cli_decide_held_calls_end_to_end() {
    let stack = Stack::start();
    let runtime = rt();
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}{path}", stack.base);

    // The live feed, opened before anything happens.
    let feed = runtime.block_on(async {
        let r = http
            .get(admin("/admin/approvals/events"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        r
    });
    let feed = runtime.spawn(async move {
        use futures::StreamExt;
        let mut body = feed.bytes_stream();
        let mut seen = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.matches("event: decided").count() < 3 {
            match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
        seen
    });

    let (approved, denied, expired) = runtime.block_on(async {
        let a = Agent::open(&stack.url, AGENT_TOKEN).await;
        let b = Agent::open(&stack.url, ANALYST_TOKEN).await;
        let c = Agent::open(&stack.url, AGENT_TOKEN).await;
        let ta = tokio::spawn({
            let a = a.clone();
            async move {
                a.call(1, "add_inline_policy", inline_policy_args("a"))
                    .await
            }
        });
        stack.pending(&http, 1).await;
        let tb = tokio::spawn({
            let b = b.clone();
            async move {
                b.call(1, "add_inline_policy", inline_policy_args("b"))
                    .await
            }
        });
        stack.pending(&http, 2).await;
        let pending = stack.pending(&http, 2).await;
        assert_eq!(pending[0]["id"], 1);
        assert_eq!(pending[0]["grant"], "ci-bot");
        assert_eq!(pending[1]["grant"], "analyst");
        assert_eq!(pending[0]["arguments"]["permissions"], "[redacted]");

        // An agent's token is refused with a clear body, an admin token is no agent token,
        // and no token is 401.
        for (method, path) in [
            ("GET", "/admin/approvals"),
            ("POST", "/admin/approvals/1/approve"),
            ("POST", "/admin/approvals/1/deny"),
        ] {
            let r = http
                .request(method.parse().unwrap(), admin(path))
                .bearer_auth(AGENT_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path}");
            let body: Value = r.json().await.unwrap();
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("agent's token (grant `ci-bot`)"),
                "{body}"
            );
        }
        let r = http.get(admin("/admin/approvals")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .post(&stack.url)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.text().await.unwrap().contains("admin token"));

        let tc = tokio::spawn({
            let c = c.clone();
            async move {
                c.call(7, "CancelAHORunBatch", json!({"batchId": "rb-0001"}))
                    .await
            }
        });
        stack.pending(&http, 3).await;
        (ta, tb, tc)
    });

    // The CLI: an agent's token is refused (exit 2) and nothing is decided.
    let out = stack.cli(AGENT_TOKEN, &["approve", "1"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("agent's token"), "{err}");
    let out = tollgate()
        .args(["approvals", "--url", &stack.base, "list"])
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("no admin token"));

    // A table for people, JSON for machines.
    let out = stack.cli(ADMIN_TOKEN, &["list"]);
    let (table, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("ID  TOOL"), "{table}");
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[1].contains("add_inline_policy") && rows[1].contains("ci-bot"));
    assert!(
        rows[1].contains("[redacted]") && !table.contains("s3:*"),
        "{table}"
    );
    let out = stack.cli(ADMIN_TOKEN, &["list", "--format", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);

    // Approve 1 (the flag this time), deny 2 with a reason (the env var).
    let out = tollgate()
        .args(["approvals", "--url", &stack.base, "--token", ADMIN_TOKEN])
        .args(["approve", "1", "--reason", "change OPS-12"])
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    let (said, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(said.contains("approved 1 (`add_inline_policy` from grant `ci-bot`) as alice"));
    let out = stack.cli(ADMIN_TOKEN, &["deny", "2", "--reason", "wrong account"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);

    // Deciding again, or an id that never existed.
    let out = stack.cli(ADMIN_TOKEN, &["approve", "2"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no longer pending: alice denied it"), "{err}");
    let out = stack.cli(ADMIN_TOKEN, &["deny", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("no approval has the id `99`"));
    runtime.block_on(async {
        let r = http
            .post(admin("/admin/approvals/2/approve"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        let r = http
            .post(admin("/admin/approvals/99/deny"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = http
            .post(admin("/admin/approvals/3/deny"))
            .bearer_auth(ADMIN_TOKEN)
            .body(r#"{"reason": 5}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    });

    let (approved, denied, expired) = runtime.block_on(async {
        (
            approved.await.unwrap(),
            denied.await.unwrap(),
            expired.await.unwrap(),
        )
    });
    assert_eq!(decision(&approved), "forwarded", "{approved}");
    assert!(
        approved["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Failed to create inline policy"),
        "the mock's own answer: {approved}"
    );
    assert_eq!(decision(&denied), "approval_denied");
    let said = denied["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        said.contains("`alice` denied it") && said.contains("wrong account"),
        "{said}"
    );
    assert_eq!(decision(&expired), "approval_timeout", "{expired}");

    // The journal: the approved call once, the denied and the expired never.
    assert_eq!(stack.journal_calls("add_inline_policy"), 1);
    assert_eq!(stack.journal_calls("CancelAHORunBatch"), 0);

    // The audit log verifies and names who decided what, when.
    let log = stack.dir.path().join("audit.jsonl");
    crate::util::assert_audit_verifies(&log);
    let verdicts: Vec<(String, Value, Value)> = stack
        .audit()
        .iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| {
            (
                r["verdict"].as_str().unwrap().to_owned(),
                r["approver"].clone(),
                r["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (
                "approved".to_owned(),
                json!("alice"),
                json!("change OPS-12")
            ),
            ("denied".to_owned(), json!("alice"), json!("wrong account")),
            (
                "expired".to_owned(),
                Value::Null,
                json!("nobody decided before the deadline")
            ),
        ]
    );

    let seen = runtime.block_on(feed).unwrap();
    assert_eq!(seen.matches("event: held").count(), 3, "{seen}");
    assert_eq!(seen.matches("event: decided").count(), 3, "{seen}");
    assert!(seen.contains("\"verdict\":\"expired\""), "{seen}");

    // The gauge went back to zero.
    let metrics = runtime.block_on(async {
        http.get(admin("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains("tollgate_approvals_pending 0"),
        "{metrics}"
    );
}

/// Bad configuration: admin tokens without a listener, and one token in both files, are
/// refused at start (exit 2) with what to do.
#[test]
fn gateway_refuses_admin_tokens_it_cannot_keep_apart() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    std::fs::write(p("policy.json"), POLICY).unwrap();
    std::fs::write(p("tokens"), format!("{AGENT_TOKEN} ci-bot\n")).unwrap();
    std::fs::write(p("admins"), format!("{AGENT_TOKEN} alice\n")).unwrap();
    let out = tollgate()
        .args([
            "gateway",
            "--policy",
            &p("policy.json"),
            "--admin-tokens",
            &p("admins"),
        ])
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("add `--listen ADDR`"));
    let out = tollgate()
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            &p("policy.json"),
        ])
        .args(["--tokens", &p("tokens"), "--admin-tokens", &p("admins")])
        .args(["--upstream-url", "http://127.0.0.1:9/mcp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out).1;
    assert!(
        err.contains("approver `alice`") && err.contains("grant `ci-bot`"),
        "{err}"
    );
}

/// The console in headless Chromium (Debian's `chromium`, driven by playwright-core): an
/// operator enters the admin token, sees three held calls with their tool, redacted
/// arguments, grant, session and age, clicks approve on one and deny (with a reason) on
/// another; the two agents get the upstream's answer and the refusal naming the approver and
/// the reason; the audit log records both as alice's; the third stays pending (and is shown
/// in the screenshot kept at target/test-artifacts/approvals-console.png).
#[test]
fn console_approves_and_denies_with_real_clicks() {
    let root = crate::util::root();
    let chromium =
        std::env::var("TOLLGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let playwright = std::env::var("TOLLGATE_TEST_PLAYWRIGHT").unwrap_or_else(|_| {
        root.join(".ci/node/node_modules/playwright-core")
            .to_string_lossy()
            .into_owned()
    });
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/test-all.sh installs it (apt-get install -y chromium)"
    );
    assert!(
        Path::new(&playwright).exists(),
        "{playwright} is missing: scripts/test-all.sh installs it (npm ci --prefix .ci/node)"
    );
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("approvals-console.png");
    let _ = std::fs::remove_file(&screenshot);

    let stack = Stack::start();
    let runtime = rt();
    let http = reqwest::Client::new();
    let (approved, denied, agents) = runtime.block_on(async {
        let a = Agent::open(&stack.url, AGENT_TOKEN).await;
        let b = Agent::open(&stack.url, ANALYST_TOKEN).await;
        let c = Agent::open(&stack.url, AGENT_TOKEN).await;
        let mut held = Vec::new();
        for (n, agent, role) in [(1, &a, "web"), (2, &b, "billing"), (3, &c, "ops")] {
            let agent = agent.clone();
            held.push(tokio::spawn(async move {
                agent
                    .call(n, "add_inline_policy", inline_policy_args(role))
                    .await
            }));
            stack.pending(&http, n as usize).await;
        }
        let mut held = held.into_iter();
        (
            held.next().unwrap(),
            held.next().unwrap(),
            (held.next().unwrap(), c),
        )
    });
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("node")
        .arg(root.join("tests/console/approvals-console.cjs"))
        .env("BASE", &stack.base)
        .env("TOKEN", ADMIN_TOKEN)
        .env("APPROVE", "1")
        .env("DENY", "2")
        .env("REASON", "not during the freeze")
        .env("SCREENSHOT", &screenshot)
        .env("USER_DATA_DIR", profile.path())
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT_CORE", &playwright)
        .output()
        .unwrap();
    let (said, err) = text(&out);
    assert!(out.status.success(), "{err}\n{said}");
    let report: Value = serde_json::from_str(said.trim()).unwrap();
    assert_eq!(
        report["problems"],
        json!([]),
        "no script errors in the page"
    );
    assert_eq!(report["who"], "approving as alice");
    // What the operator saw before clicking: every held call, redacted, with grant and age.
    let before = report["pendingBefore"].as_array().unwrap();
    assert_eq!(before.len(), 3);
    let first: Vec<&str> = before[0]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(first[0], "1");
    assert!(first[1].starts_with("add_inline_policy"), "{first:?}");
    assert!(
        first[2].contains("[redacted]") && !first[2].contains("s3:*"),
        "{first:?}"
    );
    assert_eq!(first[3], "ci-bot");
    assert!(first[4].starts_with("tg-"), "the session id: {first:?}");
    assert!(first[5].ends_with('s'), "an age: {first:?}");
    assert_eq!(before[1]["cells"][3], "analyst");
    let decisions = report["decisions"].as_array().unwrap();
    let of = |id: &str| decisions.iter().find(|d| d["id"] == id).unwrap();
    assert_eq!(
        (of("1")["verdict"].as_str(), of("1")["by"].as_str()),
        (Some("approved"), Some("alice"))
    );
    assert_eq!(of("2")["reason"], "not during the freeze");
    assert_eq!(report["pendingAfter"], json!(["3"]));

    // The agents' outcomes.
    let (approved, denied) =
        runtime.block_on(async { (approved.await.unwrap(), denied.await.unwrap()) });
    assert_eq!(decision(&approved), "forwarded", "{approved}");
    assert_eq!(decision(&denied), "approval_denied");
    let text_of = denied["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text_of.contains("`alice` denied it") && text_of.contains("not during the freeze"),
        "{text_of}"
    );
    assert_eq!(stack.journal_calls("add_inline_policy"), 1);
    // The audit log: both verdicts are alice's.
    let verdicts: Vec<(Value, Value, Value)> = stack
        .audit()
        .iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| {
            (
                r["approval_id"].clone(),
                r["verdict"].clone(),
                r["approver"].clone(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (json!(1), json!("approved"), json!("alice")),
            (json!(2), json!("denied"), json!("alice"))
        ]
    );
    // Release the third agent; its call never reached the mock.
    let (third, _c) = agents;
    runtime.block_on(async {
        let r = http
            .post(format!("{}/admin/approvals/3/deny", stack.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(decision(&third.await.unwrap()), "approval_denied");
    });
    assert_eq!(stack.journal_calls("add_inline_policy"), 1);
    assert!(
        screenshot.exists(),
        "the screenshot is kept as a test artifact"
    );
}

/// Elicitation with a real client: the official Python SDK, declaring the capability, through
/// the stdio gateway (no operators at all) and through the HTTP gateway (the question travels
/// on the held request's SSE stream, the answer comes back as a POST). A rule with
/// `via: elicitation` asks its user; the first question is accepted (the call reaches the
/// mock and its answer comes back), the second declined (refused, naming the client's user);
/// the audit log records both with the approver `elicitation`.
#[test]
fn elicitation_asks_the_python_sdk_clients_user() {
    for transport in ["stdio", "http"] {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        std::fs::write(
            p("policy.json"),
            r#"{"version": "1", "default": "allow", "tools": {
                "get_pod_logs": {"action": "require_approval", "reason": "logs may hold customer data",
                                 "approval": {"timeout": "1m", "via": "elicitation"}}}}"#,
        )
        .unwrap();
        let mut client = std::process::Command::new(crate::mock_eks::python());
        client.arg(crate::util::root().join("tests/python/elicitation_client.py"));
        let mut servers = Vec::new();
        if transport == "stdio" {
            client
                .arg("--stdio")
                .arg(env!("CARGO_BIN_EXE_tollgate"))
                .args([
                    "gateway",
                    "--policy",
                    &p("policy.json"),
                    "--audit",
                    &p("audit.jsonl"),
                ])
                .args([
                    "--grant",
                    "desktop",
                    "--",
                    env!("CARGO_BIN_EXE_tollgate"),
                    "mock-eks",
                ])
                .args([
                    "--allow-sensitive-data-access",
                    "--journal",
                    &p("journal.jsonl"),
                ]);
        } else {
            let (mock, mock_url) = start_http(&[
                "--allow-sensitive-data-access",
                "--journal",
                &p("journal.jsonl"),
            ]);
            let (gateway, url) = start_listening(&[
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--policy",
                &p("policy.json"),
                "--audit",
                &p("audit.jsonl"),
                "--upstream-url",
                &mock_url,
            ]);
            servers.push(mock);
            servers.push(gateway);
            client.args(["--url", &url]);
        }
        let out = client.output().unwrap();
        let (said, err) = text(&out);
        assert!(out.status.success(), "{transport}: {err}");
        let summary: Value = serde_json::from_str(&said).unwrap();
        assert_eq!(summary["protocol_version"], "2025-11-25");
        let asked = summary["asked"].as_array().unwrap();
        assert_eq!(asked.len(), 2, "{transport}: {summary}");
        let question = asked[0]["message"].as_str().unwrap();
        assert!(
            question.contains("`get_pod_logs`") && question.contains("logs may hold customer data"),
            "{question}"
        );
        let calls = summary["calls"].as_array().unwrap();
        assert_eq!(
            calls[0]["decision"],
            Value::Null,
            "{transport}: forwarded: {summary}"
        );
        assert_eq!(calls[1]["decision"], "approval_denied", "{transport}");
        assert!(
            calls[1]["text"]
                .as_str()
                .unwrap()
                .contains("the client's user (asked through elicitation) denied it"),
            "{summary}"
        );
        drop(servers);
        let journal = json_lines(&dir.path().join("journal.jsonl"));
        assert_eq!(
            journal
                .iter()
                .filter(|e| e["tool"] == "get_pod_logs")
                .count(),
            1,
            "{transport}"
        );
        let verdicts: Vec<(Value, Value)> = json_lines(&dir.path().join("audit.jsonl"))
            .iter()
            .filter(|r| r["kind"] == "approval")
            .map(|r| (r["verdict"].clone(), r["approver"].clone()))
            .collect();
        assert_eq!(
            verdicts,
            [
                (json!("approved"), json!("elicitation")),
                (json!("denied"), json!("elicitation"))
            ],
            "{transport}"
        );
    }
}
