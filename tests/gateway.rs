//! `tollgate gateway` as a process, in front of `tollgate mock-eks`: over stdio (a child
//! upstream) and Streamable HTTP (an HTTP upstream), with the Python SDK, raw clients, bearer
//! tokens, many concurrent sessions on one counter, an upstream that crashes or hangs, a
//! `kill -9` under load, and the conformance suite. The mock's journal proves what reached it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mock_eks::{
    CONFORMANCE_PASSING, Guard, check_client_summary, conformance_passing, run_python_client,
    start_http,
};
use crate::util::{root, tollgate};

// The bounds on connections, bodies, sessions, child processes, streams and stdio.
mod limits;
// Upstream commands that never start: a clear error, fast, and exit 2.
mod failfast;
// The Origin check and `--allow-origin`.
mod origin;
// docs/gateway.md's setup, run as written; `tollgate policy init`.
mod setup;
// The OAuth 2.1 resource server: JWT access tokens, discovery, refusals and their audit.
mod oauth;
// https: upstreams trusted by a CA file, the https listener, its handshake timeout.
mod tls;
// `class:` rules for a server outside the catalogue, classed by its annotations.
mod classes;
// OpenTelemetry traces against a real OTLP receiver: spans, parents, propagation, a dead endpoint.
mod telemetry;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const ALLOW_ALL: &str = r#"{"version": "1", "default": "allow"}"#;

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn journal_calls(path: &Path, tool: &str) -> Vec<Value> {
    lines_of(path)
        .into_iter()
        .filter(|e| e["tool"] == tool)
        .collect()
}

/// Starts `tollgate gateway --listen 127.0.0.1:0 ARGS` and returns its URL.
fn start_gateway_http(args: &[&str]) -> (Guard, String) {
    crate::mock_eks::start_listening(&[&["gateway", "--listen", "127.0.0.1:0"], args].concat())
}

/// Runs the stdio gateway over `input` lines and returns its answers.
fn stdio_gateway(args: &[&str], input: &[Value], linger: Duration) -> Vec<Value> {
    let mut child = tollgate()
        .arg("gateway")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for m in input {
        writeln!(stdin, "{m}").unwrap();
    }
    std::thread::sleep(linger);
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

fn call(id: u64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

/// The seed's runaway agent through the stdio gateway: 10 cancels reach the mock, 5 are
/// refused there and then; the mock's journal holds exactly the 10; the audit log verifies,
/// holds every decision before its outcome, and ends with the closing record.
#[test]
fn stdio_runaway_agent_is_cut_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let audit = dir.path().join("audit.jsonl");
    let mut input = vec![
        initialize(1),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ];
    for i in 0..15u64 {
        input.push(call(
            i + 2,
            "CancelAHORunBatch",
            json!({"batchId": format!("rb-{:04}", i % 12 + 1)}),
        ));
    }
    let answers = stdio_gateway(
        &[
            "--policy",
            &root().join("examples/policies/seed.json").to_string_lossy(),
            "--grant",
            "ci-bot",
            "--audit",
            audit.to_str().unwrap(),
            "--",
            bin(),
            "mock-eks",
            "--allow-write",
            "--journal",
            journal.to_str().unwrap(),
        ],
        &input,
        Duration::from_millis(500),
    );
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a["result"]["_meta"]["dev.tollgate/decision"]["decision"] == "rate_limited")
        .collect();
    assert_eq!(refused.len(), 5);
    assert!(
        refused[0]["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Retry in")
    );
    assert_eq!(journal_calls(&journal, "CancelAHORunBatch").len(), 10);
    crate::util::assert_audit_verifies(&audit);
    let records = lines_of(&audit);
    assert_eq!(records.first().unwrap()["kind"], "open");
    assert_eq!(records.last().unwrap()["kind"], "close");
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "decision").count(),
        15
    );
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "outcome").count(),
        10
    );
}

/// The stdio gateway reads a client's pipe and writes its answers through the event loop, and
/// falls back to blocking reads and writes for anything that is not a pipe: here stdin and
/// stdout are regular files, and every call in the input is still answered, in order, before
/// the gateway exits 0.
#[test]
fn stdio_gateway_serves_files_as_well_as_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.json", ALLOW_ALL);
    let mut input = format!("{}\n", initialize(1));
    input.push_str("{\"jsonrpc\": \"2.0\", \"method\": \"notifications/initialized\"}\n");
    for id in 2..6 {
        input.push_str(&format!(
            "{}\n",
            call(id, "GetAHOBatch", json!({"batchId": "rb-0001"}))
        ));
    }
    let input_path = write(dir.path(), "input.jsonl", &input);
    let output_path = dir.path().join("output.jsonl");
    let status = tollgate()
        .args(["gateway", "--policy", &policy, "--", bin(), "mock-eks"])
        .stdin(std::fs::File::open(&input_path).unwrap())
        .stdout(std::fs::File::create(&output_path).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let answers = lines_of(&output_path);
    let ids: Vec<u64> = answers.iter().filter_map(|a| a["id"].as_u64()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "{answers:?}");
    for a in &answers[1..] {
        assert_eq!(a["result"]["isError"], false, "{a}");
    }
}

/// The official Python SDK through the gateway, stdio and HTTP, auto (stateless) and legacy
/// modes, with an allow-all policy: the same answers as without the gateway.
#[test]
fn python_sdk_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    for (mode, version) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let summary = run_python_client(
            mode,
            &[
                "--stdio",
                bin(),
                "gateway",
                "--policy",
                &policy,
                "--",
                bin(),
                "mock-eks",
                "--allow-write",
                "--page-size",
                "5",
            ],
        );
        check_client_summary(&summary, version, 5);
        let (_mock, mock_url) = start_http(&["--allow-write"]);
        let (_gw, url) = start_gateway_http(&["--policy", &policy, "--upstream-url", &mock_url]);
        let summary = run_python_client(mode, &["--url", &url]);
        check_client_summary(&summary, version, 1);
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn http_session(http: &reqwest::Client, url: &str, token: &str) -> String {
    let r = http
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(initialize(0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

async fn http_call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: &str,
    msg: Value,
) -> Value {
    http.post(url)
        .bearer_auth(token)
        .header("mcp-session-id", session)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(msg.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Bearer tokens map to grants (a `sha256:` entry too), a bad or missing token is 401, and a
/// session belongs to the grant that opened it.
#[test]
fn http_tokens_map_to_grants() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "p.json",
        r#"{"version": "1", "default": "deny", "tools": {"CancelAHORunBatch": {"limits": [{"counter": "c", "window": "hour", "max": 1}]}}}"#,
    );
    let hashed = "sha256:".to_owned() + &sha256_hex("analyst-token-00000");
    let tokens = write(
        dir.path(),
        "tokens",
        &format!("# test tokens\nci-bot-token-000000 ci-bot\n{hashed} analyst\n"),
    );
    let recording = dir.path().join("recording.jsonl");
    let (_mock, mock_url) = start_http(&["--allow-write"]);
    let (_gw, url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--tokens",
        &tokens,
        "--record",
        recording.to_str().unwrap(),
        "--upstream-url",
        &mock_url,
    ]);
    rt().block_on(async {
        let http = reqwest::Client::new();
        // Health endpoints need no token.
        let base = url.trim_end_matches("/mcp");
        assert_eq!(
            http.get(format!("{base}/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(initialize(0).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = http
            .post(&url)
            .bearer_auth("wrong-token-0000000")
            .body(initialize(0).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let ci = http_session(&http, &url, "ci-bot-token-000000").await;
        let analyst = http_session(&http, &url, "analyst-token-00000").await;
        let first = http_call(
            &http,
            &url,
            "ci-bot-token-000000",
            &ci,
            call(1, "CancelAHORunBatch", json!({"batchId": "rb-0001"})),
        )
        .await;
        assert_eq!(first["result"]["isError"], false, "{first}");
        let second = http_call(
            &http,
            &url,
            "ci-bot-token-000000",
            &ci,
            call(2, "CancelAHORunBatch", json!({"batchId": "rb-0002"})),
        )
        .await;
        assert_eq!(
            second["result"]["_meta"]["dev.tollgate/decision"]["decision"],
            "rate_limited"
        );
        // The analyst's grant has its own budget.
        let other = http_call(
            &http,
            &url,
            "analyst-token-00000",
            &analyst,
            call(1, "CancelAHORunBatch", json!({"batchId": "rb-0003"})),
        )
        .await;
        assert_eq!(other["result"]["isError"], false, "{other}");
        // A session id presented with another grant's token is not found.
        let r = http
            .post(&url)
            .bearer_auth("analyst-token-00000")
            .header("mcp-session-id", &ci)
            .header("content-type", "application/json")
            .body(call(3, "CancelAHORunBatch", json!({"batchId": "rb-0004"})).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    });
    // The recording has every message in every direction, and never a token.
    let text = std::fs::read_to_string(&recording).unwrap();
    assert!(!text.contains("ci-bot-token-000000") && !text.contains("analyst-token-00000"));
    let dirs: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["dir"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        dirs.into_iter().collect::<Vec<_>>(),
        ["client", "to_client", "to_upstream", "upstream"]
    );
    assert!(text.lines().any(|l| l.contains("\"grant\":\"analyst\"")));
}

fn sha256_hex(text: &str) -> String {
    let out = Command::new(crate::mock_eks::python())
        .args([
            "-c",
            &format!("import hashlib; print(hashlib.sha256(b'{text}').hexdigest())"),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Promise 2 over a real server: 8 HTTP sessions of one grant race 10 calls each against one
/// counter of max 20; exactly 20 reach the mock and 60 are refused.
#[test]
fn concurrent_sessions_never_exceed_a_shared_counter() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let policy = write(
        dir.path(),
        "p.json",
        r#"{"version": "1", "default": "deny", "tools": {"GetAHOBatch": {"limits": [{"counter": "reads", "window": "hour", "max": 20, "scope": "global"}]}}}"#,
    );
    let (_mock, mock_url) = start_http(&["--journal", journal.to_str().unwrap()]);
    let (_gw, url) = start_gateway_http(&["--policy", &policy, "--upstream-url", &mock_url]);
    let results = rt().block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (http, url) = (http.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let s = http_session(&http, &url, "unused").await;
                let mut decisions = Vec::new();
                for i in 0..10 {
                    let a = http_call(
                        &http,
                        &url,
                        "unused",
                        &s,
                        call(i + 1, "GetAHOBatch", json!({"batchId": "rb-0001"})),
                    )
                    .await;
                    decisions.push(
                        a["result"]["_meta"]["dev.tollgate/decision"]["decision"]
                            .as_str()
                            .unwrap_or("forwarded")
                            .to_owned(),
                    );
                }
                decisions
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert_eq!(
        results.iter().filter(|d| *d == "forwarded").count(),
        20,
        "{results:?}"
    );
    // The metrics count the same decisions.
    let metrics = rt().block_on(async {
        reqwest::get(url.replace("/mcp", "/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains(
            r#"tollgate_decisions_total{tool="GetAHOBatch",decision="allow",rule="GetAHOBatch"} 20"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tollgate_decisions_total{tool="GetAHOBatch",decision="rate_limited",rule="GetAHOBatch"} 60"#), "{metrics}");
    assert!(
        metrics.contains(r#"tollgate_upstream_latency_seconds_count{tool="GetAHOBatch"} 20"#),
        "{metrics}"
    );
    // The shared counter is full, and every refusal found it so.
    assert!(
        metrics.contains(r#"tollgate_counter_saturation_ratio{counter="reads"} 1.0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tollgate_counter_full_total{counter="reads"} 60"#),
        "{metrics}"
    );
    assert_eq!(results.iter().filter(|d| *d == "rate_limited").count(), 60);
    assert_eq!(journal_calls(&journal, "GetAHOBatch").len(), 20);
}

/// An upstream that crashes mid-call: the call gets an error result at once, the child is
/// restarted and re-initialized with the client's own `initialize`, and the next call of the
/// same session goes through.
#[test]
fn upstream_crash_errors_the_call_and_restarts_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    // Crash on the first call only: after the restart the journal index starts again at 0,
    // so the rule is bounded by tool, not by index.
    let faults = write(
        dir.path(),
        "faults.json",
        r#"{"faults": [{"tool": "list_api_versions", "effect": "crash"}]}"#,
    );
    let mut child = tollgate()
        .args([
            "gateway",
            "--policy",
            &policy,
            "--",
            bin(),
            "mock-eks",
            "--faults",
            &faults,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |m: Value| writeln!(stdin, "{m}").unwrap();
    send(initialize(1));
    let _init = answers.next().unwrap().unwrap();
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(call(
        2,
        "list_api_versions",
        json!({"cluster_name": "prod-eks"}),
    ));
    let crashed: Value = serde_json::from_str(&answers.next().unwrap().unwrap()).unwrap();
    assert_eq!(crashed["id"], 2);
    assert_eq!(
        crashed["result"]["_meta"]["dev.tollgate/decision"]["decision"], "upstream_failed",
        "{crashed}"
    );
    // The restarted child answers the same session.
    send(call(
        3,
        "get_eks_vpc_config",
        json!({"cluster_name": "prod-eks"}),
    ));
    let after: Value = serde_json::from_str(&answers.next().unwrap().unwrap()).unwrap();
    assert_eq!(after["id"], 3);
    assert_eq!(after["result"]["isError"], false, "{after}");
    assert!(
        after["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Retrieved VPC configuration"),
        "{after}"
    );
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// A hung upstream call: the gateway answers it at its timeout, in bounded time, and the
/// upstream answers the calls after it (a `hang` stalls that call, not the connection).
#[test]
fn hung_upstream_is_answered_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let faults = write(
        dir.path(),
        "faults.json",
        r#"{"faults": [{"tool": "get_eks_vpc_config", "effect": "hang"}]}"#,
    );
    let start = Instant::now();
    let answers = stdio_gateway(
        &[
            "--policy",
            &policy,
            "--call-timeout",
            "1",
            "--",
            bin(),
            "mock-eks",
            "--faults",
            &faults,
        ],
        &[
            initialize(1),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            call(2, "get_eks_vpc_config", json!({"cluster_name": "prod-eks"})),
            call(3, "list_api_versions", json!({"cluster_name": "prod-eks"})),
        ],
        Duration::from_millis(1500),
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    let answer = answers.iter().find(|a| a["id"] == 2).unwrap();
    assert_eq!(
        answer["result"]["_meta"]["dev.tollgate/decision"]["decision"], "upstream_timeout",
        "{answer}"
    );
    let after = answers.iter().find(|a| a["id"] == 3).unwrap();
    assert_eq!(after["result"]["isError"], false, "{after}");
}

/// Promise 4: `kill -9` of the gateway under load loses no record of a forwarded call: every
/// call in the mock's journal has its decision in the audit log, and the log verifies.
#[test]
fn kill_9_loses_no_record_of_a_forwarded_call() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let audit = dir.path().join("audit.jsonl");
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (_mock, mock_url) = start_http(&["--journal", journal.to_str().unwrap()]);
    let (mut gw, url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--audit",
        audit.to_str().unwrap(),
        "--upstream-url",
        &mock_url,
    ]);
    rt().block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (http, url) = (http.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let s = http_session(&http, &url, "x").await;
                for i in 0..200u64 {
                    let r = http
                        .post(&url)
                        .header("mcp-session-id", &s)
                        .header("content-type", "application/json")
                        .body(call(i + 1, "GetAHOBatch", json!({"batchId": "rb-0001"})).to_string())
                        .send()
                        .await;
                    if r.is_err() {
                        return;
                    }
                }
            }));
        }
        // Mid-load: once calls reach the mock (bounded: a loaded machine is slow to start).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // Counted in the text: a line being written may not parse yet.
        let reached = || {
            std::fs::read_to_string(&journal)
                .unwrap_or_default()
                .matches(r#""tool":"GetAHOBatch""#)
                .count()
        };
        while reached() < 20 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SIGKILL, mid-load.
        gw.0.kill().unwrap();
        for t in tasks {
            let _ = t.await;
        }
    });
    let _ = gw.0.wait();
    let forwarded = journal_calls(&journal, "GetAHOBatch");
    assert!(!forwarded.is_empty(), "the load reached the mock");
    let out = tollgate()
        .args(["audit", "verify", audit.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&audit).unwrap();
    // SIGKILL can land inside the write of the last record (the kernel copies page by page):
    // that record's call was never forwarded, since forwarding waits for the write. So the log
    // either verifies whole, or its one problem is an incomplete last line.
    if out.status.code() != Some(0) {
        assert!(!text.ends_with('\n'), "{report}");
        assert!(report.contains("the last line is incomplete"), "{report}");
        assert_eq!(report.matches("the chain is broken").count(), 1, "{report}");
    }
    let complete: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(complete.len() + 1 >= text.lines().count());
    let decisions: Vec<(String, String)> = complete
        .into_iter()
        .filter(|r| r["kind"] == "decision" && r["decision"]["decision"] == "allow")
        .map(|r| {
            (
                r["session"].as_str().unwrap().to_owned(),
                r["id"].to_string(),
            )
        })
        .collect();
    // Each forwarded call (journal: upstream session, id) has an allow decision for the same id.
    let mut ids: Vec<String> = decisions.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    for entry in &forwarded {
        assert!(
            ids.binary_search(&entry["id"].to_string()).is_ok(),
            "no decision for {entry}"
        );
    }
    assert!(decisions.len() >= forwarded.len());
}

/// The conformance suite through the gateway (allow-all) gives the same results as against the
/// mock directly.
#[test]
fn conformance_through_the_gateway_matches_direct() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (_mock, mock_url) = start_http(&[]);
    let (_gw, url) = start_gateway_http(&["--policy", &policy, "--upstream-url", &mock_url]);
    let through = conformance_passing(&url);
    let missing: Vec<&str> = CONFORMANCE_PASSING
        .iter()
        .copied()
        .filter(|s| !through.iter().any(|t| t == s))
        .collect();
    assert!(
        missing.is_empty(),
        "through the gateway these fail: {missing:?} (passing: {through:?})"
    );
}

/// A broken policy never starts a gateway: exit 2 with the diagnostic.
#[test]
fn a_broken_policy_is_exit_2() {
    let out = tollgate()
        .args([
            "gateway",
            "--policy",
            "tests/check/broken/08-misspelt-field.json",
            "--",
            bin(),
            "mock-eks",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `acton`"));
}

/// A Streamable HTTP upstream that answers the handshake and the tool list properly, then
/// misbehaves on `tools/call` as `call` says.
fn misbehaving_upstream(
    rt: &tokio::runtime::Runtime,
    call: wiremock::ResponseTemplate,
) -> wiremock::MockServer {
    use wiremock::matchers::{body_string_contains, method};
    use wiremock::{Mock, ResponseTemplate};
    rt.block_on(async {
        let server = wiremock::MockServer::start().await;
        let init = json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "wiremock", "version": "1"}}});
        Mock::given(method("POST")).and(body_string_contains("\"initialize\"")).respond_with(ResponseTemplate::new(200).insert_header("mcp-session-id", "w-1").set_body_json(init)).mount(&server).await;
        Mock::given(method("POST")).and(body_string_contains("notifications/")).respond_with(ResponseTemplate::new(202)).mount(&server).await;
        // The gateway's own listing uses a string id it chose; answer any tools/list with it.
        Mock::given(method("POST")).and(body_string_contains("tools/list")).respond_with(|req: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            ResponseTemplate::new(200).set_body_json(json!({"jsonrpc": "2.0", "id": body["id"], "result": {"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}}))
        }).mount(&server).await;
        Mock::given(method("POST")).and(body_string_contains("tools/call")).respond_with(call).mount(&server).await;
        server
    })
}

/// What the stdio gateway answers call 2 with, in front of `upstream`.
fn call_through(upstream: &str, timeout: &str, linger: Duration) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let answers = stdio_gateway(
        &[
            "--policy",
            &policy,
            "--call-timeout",
            timeout,
            "--upstream-url",
            upstream,
        ],
        &[
            initialize(1),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            call(2, "t", json!({})),
        ],
        linger,
    );
    answers
        .into_iter()
        .find(|a| a["id"] == 2)
        .unwrap_or_else(|| panic!("no answer to call 2"))
}

/// An HTTP upstream that fails in each way gets the call a clear answer in bounded time: a 500
/// with an HTML page, invalid JSON, an SSE stream cut before its event ends, a slow answer.
#[test]
fn misbehaving_http_upstreams_get_clear_answers() {
    use wiremock::ResponseTemplate;
    let rt = rt();
    let cases: [(&str, ResponseTemplate, &str); 3] = [
        (
            "500",
            ResponseTemplate::new(500).set_body_string("<html>Internal Server Error</html>"),
            "HTTP 500",
        ),
        (
            "invalid JSON",
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string("{\"jsonrpc\": \"2.0\", \"id\": 2, \"result\": {"),
            "not JSON",
        ),
        (
            "SSE cut",
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string("event: message\ndata: {\"jsonrpc\": \"2.0\", \"id\": 2, \"res"),
            "not JSON",
        ),
    ];
    for (what, template, says) in cases {
        let server = misbehaving_upstream(&rt, template);
        let answer = call_through(
            &format!("{}/mcp", server.uri()),
            "10",
            Duration::from_millis(800),
        );
        assert_eq!(answer["error"]["code"], -32603, "{what}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{what}: {answer}"
        );
    }
    let slow = misbehaving_upstream(
        &rt,
        ResponseTemplate::new(200)
            .set_delay(Duration::from_secs(30))
            .set_body_json(json!({"jsonrpc": "2.0", "id": 2, "result": {"content": []}})),
    );
    let start = Instant::now();
    let answer = call_through(
        &format!("{}/mcp", slow.uri()),
        "1",
        Duration::from_millis(1800),
    );
    assert_eq!(
        answer["result"]["_meta"]["dev.tollgate/decision"]["decision"], "upstream_timeout",
        "{answer}"
    );
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// Transparency against a server with every MCP feature (@modelcontextprotocol/server-everything
/// 2026.8.31, installed by the test command): the conformance suite gives the same result for
/// every check of every scenario through the gateway (allow-all) as directly, except the
/// differences docs/conformance.md lists with their reasons: the gateway refuses a foreign
/// `Origin`, which the server itself does not, and answers JSON where the server streams SSE.
#[test]
fn conformance_against_server_everything_is_the_same_through_the_gateway() {
    let (_everything, direct_url) = start_everything_http();
    let direct = crate::mock_eks::conformance_checks(&direct_url);
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (_gw, url) = start_gateway_http(&["--policy", &policy, "--upstream-url", &direct_url]);
    let through = crate::mock_eks::conformance_checks(&url);
    let passing = |checks: &[(String, String)]| checks.iter().all(|(_, s)| s == "SUCCESS");
    assert!(
        direct.values().filter(|c| passing(c)).count() >= 10,
        "server-everything passes {direct:?}"
    );
    // docs/conformance.md, "Through the gateway": the documented differences. The gateway
    // refuses a foreign `Origin`; it answers a POST whose first message is the answer with JSON
    // where server-everything streams SSE, which the suite notes as INFO ("SSE streams
    // optional") instead of testing the streams.
    let mut expected = direct.clone();
    let differences = [
        (
            "dns-rebinding-protection",
            "localhost-host-rebinding-rejected",
            "SUCCESS",
        ),
        (
            "server-sse-multiple-streams",
            "server-sse-streams-functional",
            "INFO",
        ),
    ];
    for (scenario, check, through) in differences {
        for (id, status) in expected.get_mut(scenario).unwrap() {
            if id == check {
                *status = through.into();
            }
        }
    }
    for (scenario, checks) in &expected {
        assert_eq!(
            through.get(scenario),
            Some(checks),
            "{scenario}: directly {:?}",
            direct.get(scenario)
        );
    }
    assert_eq!(through.len(), expected.len());
}

/// A shell script that runs `tollgate gateway --policy POLICY ARGS -- UPSTREAM...`: for clients
/// (the Inspector CLI) that take a server command and would swallow the gateway's `--`.
fn gateway_script(dir: &Path, policy: &str, args: &[&str], upstream: &[&str]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut line = format!("exec {} gateway --policy {}", quote(bin()), quote(policy));
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    line.push_str(" --");
    for u in upstream {
        line.push(' ');
        line.push_str(&quote(u));
    }
    let path = dir.join("gateway.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{line}\n")).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path.to_string_lossy().into_owned()
}

pub(super) fn inspector() -> String {
    std::env::var("TOLLGATE_TEST_INSPECTOR").unwrap_or_else(|_| {
        let bin = root().join(".ci/node/node_modules/.bin/mcp-inspector");
        assert!(bin.exists(), "TOLLGATE_TEST_INSPECTOR is not set and .ci/node is not installed: run `bash scripts/test-all.sh`");
        bin.to_string_lossy().into_owned()
    })
}

/// The MCP Inspector CLI (2.12.0) through the gateway, over stdio and over Streamable HTTP: it
/// lists the tools, and a call the policy refuses comes back as the refusal, which never reached
/// the mock.
#[test]
fn inspector_cli_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let seed = root()
        .join("examples/policies/seed.json")
        .to_string_lossy()
        .into_owned();
    let script = gateway_script(
        dir.path(),
        &seed,
        &[],
        &[
            bin(),
            "mock-eks",
            "--allow-write",
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    let list = Command::new(inspector())
        .args(["--cli", &script, "--method", "tools/list"])
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let tools: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(tools["tools"].as_array().unwrap().len(), 23);
    let refused = Command::new(inspector())
        .args([
            "--cli",
            &script,
            "--method",
            "tools/call",
            "--tool-name",
            "DeleteAHORunBatch",
            "--tool-arg",
            "batchId=rb-0001",
        ])
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(answer["isError"], true, "{answer}");
    assert_eq!(answer["_meta"]["dev.tollgate/decision"]["decision"], "deny");
    assert!(journal_calls(&journal, "DeleteAHORunBatch").is_empty());
    // The same over Streamable HTTP.
    let (_mock, mock_url) = start_http(&["--journal", journal.to_str().unwrap()]);
    let (_gw, url) = start_gateway_http(&["--policy", &seed, "--upstream-url", &mock_url]);
    let list = Command::new(inspector())
        .args([
            "--cli",
            &url,
            "--transport",
            "http",
            "--method",
            "tools/list",
        ])
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let tools: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(tools["tools"].as_array().unwrap().len(), 23);
    let refused = Command::new(inspector())
        .args([
            "--cli",
            &url,
            "--transport",
            "http",
            "--method",
            "tools/call",
            "--tool-name",
            "DeleteAHORunBatch",
            "--tool-arg",
            "batchId=rb-0001",
        ])
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(
        answer["_meta"]["dev.tollgate/decision"]["decision"], "deny",
        "{answer}"
    );
    assert!(journal_calls(&journal, "DeleteAHORunBatch").is_empty());
}

/// In front of the real awslabs.eks-mcp-server 0.2.1 (stdio, offline, dummy credentials): its 16
/// tools pass through, a refused call never reaches it (the recording shows nothing forwarded),
/// and an allowed one returns the server's own answer.
#[test]
fn in_front_of_the_real_eks_server() {
    let server = std::env::var("TOLLGATE_TEST_EKS_SERVER").unwrap_or_else(|_| {
        let bin = root().join(".venv/bin/awslabs.eks-mcp-server");
        assert!(bin.exists(), "TOLLGATE_TEST_EKS_SERVER is not set and .venv has no awslabs.eks-mcp-server: run `bash scripts/test-all.sh`");
        bin.to_string_lossy().into_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("recording.jsonl");
    let policy = write(
        dir.path(),
        "p.json",
        r#"{"version": "1", "default": "deny", "tools": {
        "get_eks_metrics_guidance": {},
        "list_k8s_resources": {}}}"#,
    );
    let mut child = tollgate()
        .args([
            "gateway",
            "--policy",
            &policy,
            "--record",
            recording.to_str().unwrap(),
            "--",
            &server,
        ])
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> Value { serde_json::from_str(&answers.next().unwrap().unwrap()).unwrap() };
    writeln!(stdin, "{}", initialize(1)).unwrap();
    let init = next();
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "awslabs.eks-mcp-server"
    );
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    )
    .unwrap();
    let list = next();
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 16);
    writeln!(stdin, "{}", call(3, "manage_k8s_resource", json!({"operation": "delete", "cluster_name": "c1", "kind": "Pod", "api_version": "v1", "name": "p"}))).unwrap();
    let refused = next();
    assert_eq!(
        refused["result"]["_meta"]["dev.tollgate/decision"]["decision"], "deny",
        "{refused}"
    );
    writeln!(
        stdin,
        "{}",
        call(
            4,
            "get_eks_metrics_guidance",
            json!({"resource_type": "pod"})
        )
    )
    .unwrap();
    let allowed = next();
    assert_eq!(allowed["id"], 4);
    assert!(
        allowed["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("metrics for resource type pod"),
        "{allowed}"
    );
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let forwarded: Vec<Value> = lines_of(&recording)
        .into_iter()
        .filter(|r| r["dir"] == "to_upstream" && r["message"]["method"] == "tools/call")
        .collect();
    assert_eq!(
        forwarded.len(),
        1,
        "only the allowed call was forwarded: {forwarded:?}"
    );
    assert_eq!(
        forwarded[0]["message"]["params"]["name"],
        "get_eks_metrics_guidance"
    );
}

/// SIGTERM drains: a call in flight when the gateway is told to stop still gets the upstream's
/// answer, the gateway exits 0, and its audit log ends with the closing record.
#[test]
fn sigterm_drains_calls_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let faults = write(
        dir.path(),
        "faults.json",
        r#"{"faults": [{"tool": "get_eks_insights", "latency_ms": 1500}]}"#,
    );
    let (_mock, mock_url) = start_http(&["--faults", &faults]);
    let (mut gw, url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--audit",
        audit.to_str().unwrap(),
        "--upstream-url",
        &mock_url,
    ]);
    let answer = rt().block_on(async {
        let http = reqwest::Client::new();
        let s = http_session(&http, &url, "x").await;
        let pending = tokio::spawn({
            let (http, url) = (http.clone(), url.clone());
            async move {
                http_call(
                    &http,
                    &url,
                    "x",
                    &s,
                    call(1, "get_eks_insights", json!({"cluster_name": "prod-eks"})),
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = Command::new("kill")
            .args(["-TERM", &gw.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        pending.await.unwrap()
    });
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert_eq!(gw.0.wait().unwrap().code(), Some(0));
    let records = lines_of(&audit);
    assert_eq!(records.last().unwrap()["kind"], "close");
    assert!(records.iter().any(|r| r["kind"] == "outcome"));
}

/// A slow or stalled client holds only its own connection: with one client stuck half-way
/// through its headers and another stuck half-way through its body, a third is served at once.
#[test]
fn stalled_clients_do_not_hold_up_others() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (_mock, mock_url) = start_http(&[]);
    let (_gw, url) = start_gateway_http(&["--policy", &policy, "--upstream-url", &mock_url]);
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let mut half_headers = TcpStream::connect(&addr).unwrap();
    half_headers
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .unwrap();
    let mut half_body = TcpStream::connect(&addr).unwrap();
    half_body
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"jsonrpc\":")
        .unwrap();
    let start = Instant::now();
    let answer = rt().block_on(async {
        let http = reqwest::Client::new();
        let s = http_session(&http, &url, "x").await;
        http_call(
            &http,
            &url,
            "x",
            &s,
            call(1, "GetAHOBatch", json!({"batchId": "rb-0001"})),
        )
        .await
    });
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert!(start.elapsed() < Duration::from_secs(10));
    drop((half_headers, half_body));
}

/// Server-to-client messages that belong to no request (a stdio upstream's notifications) reach
/// an HTTP client on its session's GET stream: server-everything's simulated logging.
#[test]
fn unsolicited_server_messages_reach_the_get_stream() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (_gw, url) = start_gateway_http(&["--policy", &policy, "--", &everything_bin(), "stdio"]);
    let got = simulated_logging_on_get_stream(&url);
    assert!(
        got.contains("\"method\":\"notifications/message\""),
        "{got}"
    );
}

/// The same through an HTTP upstream: the gateway opens the upstream's own GET stream once the
/// session is initialized, and relays what arrives there to the client's GET stream.
#[test]
fn an_http_upstreams_get_stream_reaches_the_clients_get_stream() {
    let (_everything, upstream) = start_everything_http();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (_gw, url) = start_gateway_http(&["--policy", &policy, "--upstream-url", &upstream]);
    let got = simulated_logging_on_get_stream(&url);
    assert!(
        got.contains("\"method\":\"notifications/message\""),
        "{got}"
    );
}

fn everything_bin() -> String {
    let node_bin = std::path::Path::new(&crate::mock_eks::conformance_bin())
        .parent()
        .unwrap()
        .to_owned();
    node_bin
        .join("mcp-server-everything")
        .to_string_lossy()
        .into_owned()
}

/// server-everything over Streamable HTTP on a free port: the process guard and its URL.
pub(crate) fn start_everything_http() -> (Guard, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(everything_bin())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Ready when the port accepts connections (bounded: 15 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server-everything did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Guard(child), format!("http://127.0.0.1:{port}/mcp"))
}

/// Opens a session and its GET stream on the gateway at `url`, turns on server-everything's
/// simulated logging, and returns what the GET stream carried (bounded: 20 s).
fn simulated_logging_on_get_stream(url: &str) -> String {
    rt().block_on(async {
        let http = reqwest::Client::new();
        let s = http_session(&http, url, "x").await;
        let mut get = http.get(url).header("mcp-session-id", &s).header("accept", "text/event-stream").send().await.unwrap();
        assert_eq!(get.status(), 200);
        let post = |m: Value| http.post(url).header("mcp-session-id", &s).header("content-type", "application/json").header("accept", "application/json").body(m.to_string()).send();
        post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await.unwrap();
        post(json!({"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "debug"}})).await.unwrap();
        post(call(3, "toggle-simulated-logging", json!({}))).await.unwrap();
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !text.contains("notifications/message") {
            match tokio::time::timeout_at(deadline, get.chunk()).await {
                Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
        text
    })
}

/// SIGHUP reloads the policy (promise 7): a valid new policy takes over, audited with its hash;
/// a broken one is refused with its diagnostics and the running policy stays; counters go on.
#[test]
fn sighup_reloads_a_valid_policy_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let policy_path = dir.path().join("policy.json");
    std::fs::write(&policy_path, r#"{"version": "1", "default": "deny"}"#).unwrap();
    let mut child = tollgate()
        .args([
            "gateway",
            "--policy",
            policy_path.to_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
            // This test is about SIGHUP alone; the file watch has its own test.
            "--no-watch",
            "--",
            bin(),
            "mock-eks",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ask = |m: Value| -> Value {
        writeln!(stdin, "{m}").unwrap();
        serde_json::from_str(&answers.next().unwrap().unwrap()).unwrap()
    };
    ask(initialize(1));
    let decision = |a: &Value| {
        a["result"]["_meta"]["dev.tollgate/decision"]["decision"]
            .as_str()
            .unwrap_or("forwarded")
            .to_owned()
    };
    let hup = |pid: u32| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    assert_eq!(
        decision(&ask(call(2, "GetAHOBatch", json!({"batchId": "rb-0001"})))),
        "deny"
    );
    std::fs::write(&policy_path, r#"{"version": "1", "default": "deny", "tools": {"GetAHOBatch": {"limits": [{"counter": "r", "window": "hour", "max": 1}]}}}"#).unwrap();
    hup(child.id());
    // The reload is asynchronous: ask until the new policy answers (bounded).
    let mut after = String::new();
    for i in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        after = decision(&ask(call(
            10 + i,
            "GetAHOBatch",
            json!({"batchId": "rb-0001"}),
        )));
        if after != "deny" {
            break;
        }
    }
    assert_eq!(after, "forwarded");
    std::fs::write(
        &policy_path,
        r#"{"version": "1", "default": "allow", "tools": {"x": {"acton": "deny"}}}"#,
    )
    .unwrap();
    hup(child.id());
    std::thread::sleep(Duration::from_millis(500));
    // Still the reloaded policy: its one-per-hour counter is spent, and nothing else is allowed.
    assert_eq!(
        decision(&ask(call(
            100,
            "GetAHOBatch",
            json!({"batchId": "rb-0001"})
        ))),
        "rate_limited"
    );
    assert_eq!(decision(&ask(call(101, "ListAHOBatch", json!({})))), "deny");
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(
        stderr.contains("unknown field `acton`") && stderr.contains("the running policy stays"),
        "{stderr}"
    );
    let kinds: Vec<String> = lines_of(&audit)
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .filter(|k| k.starts_with("reload"))
        .collect();
    assert_eq!(kinds, ["reload", "reload_refused"]);
}

/// Saving the policy file reloads it (an editor's write-then-rename, and a write in place): the
/// client that listed the tools hears `notifications/tools/list_changed` when the visible set
/// changes, the new rules decide the next call, a broken save is refused once with its
/// diagnostics while the running policy stays, and saving the same bytes again does nothing.
#[test]
fn saving_the_policy_file_reloads_it_and_tells_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let policy_path = dir.path().join("policy.json");
    let save = |text: &str| {
        let tmp = dir.path().join(".policy.json.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &policy_path).unwrap();
    };
    save(
        r#"{"version": "1", "default": "allow", "hide_from_list": true, "tools": {"GetAHOBatch": {"action": "deny"}}}"#,
    );
    let mut child = tollgate()
        .args([
            "gateway",
            "--policy",
            policy_path.to_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
            "--",
            bin(),
            "mock-eks",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut send = |m: Value| writeln!(stdin, "{m}").unwrap();
    send(initialize(1));
    assert_eq!(
        next()["result"]["capabilities"]["tools"]["listChanged"],
        json!(true)
    );
    let listed = |answer: &Value| -> Vec<String> {
        answer["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    assert!(!listed(&next()).contains(&"GetAHOBatch".to_owned()));

    save(r#"{"version": "1", "default": "allow", "hide_from_list": true}"#);
    // The watch reloads within a bounded time and the session tells its client.
    assert_eq!(
        next(),
        json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    );
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}));
    assert!(listed(&next()).contains(&"GetAHOBatch".to_owned()));
    send(call(4, "GetAHOBatch", json!({"batchId": "rb-0001"})));
    let answer = next();
    assert!(
        answer["result"]["_meta"]["dev.tollgate/decision"].is_null(),
        "{answer}"
    );

    let broken = r#"{"version": "1", "default": "allow", "tools": {"x": {"acton": "deny"}}}"#;
    save(broken);
    std::thread::sleep(Duration::from_millis(700));
    save(broken);
    std::thread::sleep(Duration::from_millis(700));
    // Still the reloaded policy.
    send(call(5, "GetAHOBatch", json!({"batchId": "rb-0001"})));
    assert!(next()["result"]["_meta"]["dev.tollgate/decision"].is_null());

    // A save in place (truncate, write, close: what `cp` and many editors do) reloads too.
    std::fs::write(
        &policy_path,
        r#"{"version": "1", "default": "allow", "hide_from_list": true, "tools": {"GetAHOBatch": {"action": "deny"}}}"#,
    )
    .unwrap();
    assert_eq!(
        next(),
        json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    );
    send(call(6, "GetAHOBatch", json!({"batchId": "rb-0001"})));
    assert_eq!(
        next()["result"]["_meta"]["dev.tollgate/decision"]["decision"],
        "deny"
    );
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        stderr.matches("unknown field `acton`").count(),
        1,
        "{stderr}"
    );
    let reloads: Vec<(String, String)> = lines_of(&audit)
        .iter()
        .filter(|r| r["kind"].as_str().unwrap().starts_with("reload"))
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["cause"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reloads,
        [
            ("reload".to_owned(), "file_watch".to_owned()),
            ("reload_refused".to_owned(), "file_watch".to_owned()),
            ("reload".to_owned(), "file_watch".to_owned())
        ]
    );
}

/// The stateless protocol's clients of one grant share one gateway session, and each numbers
/// its requests from its own start: two clients that both sent id 1 at once could each receive
/// the other's answer (or be refused as reusing an id in flight). Each request now takes a
/// number of its own inside the session, and every client gets exactly its own answer back, with
/// its own id.
#[test]
fn stateless_clients_of_one_grant_get_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let faults = write(
        dir.path(),
        "faults.json",
        r#"{"seed": 1, "faults": [{"tool": "GetAHOBatch", "latency_ms": 300}]}"#,
    );
    let (_mock, mock_url) = start_http(&["--faults", &faults]);
    let (_gw, url) = start_gateway_http(&["--policy", &policy, "--upstream-url", &mock_url]);
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}});
    let answers = rt().block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for batch in ["rb-0001", "rb-0002", "rb-0003", "rb-0004"] {
            let (http, url, meta) = (http.clone(), url.clone(), meta.clone());
            tasks.push(tokio::spawn(async move {
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                    "name": "GetAHOBatch", "arguments": {"batchId": batch}, "_meta": meta}});
                let r = http
                    .post(&url)
                    .header("accept", "application/json, text/event-stream")
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                (batch, r.json::<Value>().await.unwrap())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (batch, answer) in answers {
        assert_eq!(answer["id"], 1, "{answer}");
        let text = answer["result"]["content"][1]["text"]
            .as_str()
            .unwrap_or("");
        assert!(text.contains(batch), "{batch} got {answer}");
    }
}

/// The official Python SDK in its default (auto, stateless) mode and in legacy mode reads the
/// gateway's own refusals as normal tool results, over stdio and HTTP. In auto mode it raised
/// a pydantic `ValidationError` on every refusal (no `resultType: "complete"`), so the agent never
/// saw the reason.
#[test]
fn python_sdk_reads_refusals_in_auto_and_legacy_mode() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "deny.json",
        r#"{"version": "1", "default": "allow", "tools": {"CancelAHORunBatch": {"action": "deny", "reason": "batches are cancelled by the on-call only"}}}"#,
    );
    for mode in ["auto", "legacy"] {
        let stdio = run_python_client(
            mode,
            &[
                "--stdio",
                bin(),
                "gateway",
                "--policy",
                &policy,
                "--",
                bin(),
                "mock-eks",
                "--allow-write",
            ],
        );
        let (_mock, mock_url) = start_http(&["--allow-write"]);
        let (_gw, url) = start_gateway_http(&["--policy", &policy, "--upstream-url", &mock_url]);
        let http = run_python_client(mode, &["--url", &url]);
        for summary in [stdio, http] {
            let refusal = &summary["calls"][0];
            assert_eq!(refusal["is_error"], true, "{mode}: {summary}");
            let text = refusal["text"].as_str().unwrap();
            assert!(
                text.contains("Tollgate denied the call to `CancelAHORunBatch`")
                    && text.contains("batches are cancelled by the on-call only"),
                "{mode}: {text}"
            );
            // The allowed read still goes through.
            assert_eq!(summary["calls"][2]["is_error"], false, "{mode}: {summary}");
        }
    }
}

/// An audit log in a folder that does not exist is a configuration error (exit 2) that says
/// so once: the cause was printed twice, once in the message and once as its source.
#[test]
fn a_missing_audit_folder_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let audit = dir.path().join("no-such-folder/audit.jsonl");
    let out = crate::util::tollgate()
        .args(["gateway", "--policy", &policy, "--audit"])
        .arg(&audit)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("cannot open audit log"), "{err}");
    // What to do: the folder is named, with the command that makes it.
    assert!(
        err.contains("does not exist; create it (`mkdir -p "),
        "{err}"
    );
}
