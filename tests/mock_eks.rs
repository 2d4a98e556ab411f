//! `tollgate mock-eks` as a process: over stdio and Streamable HTTP, driven by the official
//! Python SDK (both its stateless auto mode and the legacy handshake), by raw bytes for the bad
//! input cases, and by the MCP conformance suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{root, tollgate};

/// The Python interpreter with `mcp==2.3.0` (scripts/test-all.sh creates it). A missing one
/// fails the test: the test command installs it, nothing is skipped.
pub(crate) fn python() -> String {
    std::env::var("TOLLGATE_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = root().join(".venv/bin/python");
        assert!(venv.exists(), "TOLLGATE_TEST_PYTHON is not set and .venv/bin/python is missing: run `bash scripts/test-all.sh`");
        venv.to_string_lossy().into_owned()
    })
}

/// A child process killed when the test ends, however it ends.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tollgate ARGS` (a server that prints `listening on URL` on stderr first) and returns
/// it with its URL.
pub(crate) fn start_listening(args: &[&str]) -> (Guard, String) {
    let mut child = tollgate()
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (Guard(child), url)
}

/// Starts `tollgate mock-eks --http 127.0.0.1:0 ARGS` and returns its URL.
pub(crate) fn start_http(args: &[&str]) -> (Guard, String) {
    start_listening(&[&["mock-eks", "--http", "127.0.0.1:0"], args].concat())
}

pub(crate) fn run_python_client(mode: &str, target: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(root().join("tests/python/mcp_client.py"))
        .args(["--mode", mode])
        .args(target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn check_client_summary(summary: &Value, version: &str, pages_at_least: u64) {
    assert_eq!(summary["protocol_version"], version);
    assert_eq!(summary["server_name"], "tollgate-mock-eks");
    let tools = summary["tools"].as_array().unwrap();
    assert_eq!(
        tools.len(),
        23,
        "the default tool set: 16 real + 7 HealthOmics batch tools"
    );
    assert_eq!(tools[0], "list_k8s_resources", "the real server's order");
    assert!(summary["pages"].as_u64().unwrap() >= pages_at_least);
    let calls = summary["calls"].as_array().unwrap();
    assert_eq!(
        calls[0],
        json!({"is_error": false, "text": "CancelRunBatch succeeded"})
    );
    assert_eq!(
        calls[1]["is_error"], true,
        "the second cancel of rb-0001 fails"
    );
    assert!(
        calls[1]["text"]
            .as_str()
            .unwrap()
            .contains("ConflictException")
    );
    assert_eq!(
        calls[2]["text"],
        "Successfully retrieved Deployment shop/web"
    );
}

/// The Python SDK over stdio, stateless (2026-07-28) and legacy (2025-11-25), paging with a
/// page size of 5.
#[test]
fn python_sdk_over_stdio() {
    let bin = env!("CARGO_BIN_EXE_tollgate");
    for (mode, version) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let summary = run_python_client(
            mode,
            &[
                "--stdio",
                bin,
                "mock-eks",
                "--allow-write",
                "--page-size",
                "5",
            ],
        );
        check_client_summary(&summary, version, 5);
    }
}

/// The Python SDK over Streamable HTTP, both modes.
#[test]
fn python_sdk_over_http() {
    for (mode, version) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        // One server per client: the world is shared by every session of one server, and each
        // client cancels the same batch.
        let (_guard, url) = start_http(&["--allow-write"]);
        let summary = run_python_client(mode, &["--url", &url]);
        check_client_summary(&summary, version, 1);
    }
}

/// Over stdio, bad lines get JSON-RPC errors, an over-long line is refused without being
/// buffered whole, blank lines are ignored, and stdin's end ends the server with exit 0; the
/// journal file holds one JSON line per request.
#[test]
fn stdio_bad_input_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let mut child = tollgate()
        .args([
            "mock-eks",
            "--max-message-bytes",
            "4096",
            "--journal",
            journal.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let long = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\",\"pad\":\"{}\"}}\n",
        "x".repeat(100_000)
    );
    let input: Vec<u8> = [
        b"{nope\n".to_vec(),
        b"\n".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffng\"}\n".to_vec(),
        long.into_bytes(),
        b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}\n".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n".to_vec(),
    ]
    .concat();
    stdin.write_all(&input).unwrap();
    drop(stdin);
    let start = Instant::now();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: Vec<Value> = answers.iter().map(|a| a["error"]["code"].clone()).collect();
    assert_eq!(
        codes,
        [
            json!(-32700),
            json!(-32700),
            json!(-32700),
            Value::Null,
            Value::Null
        ],
        "{out}"
    );
    assert!(
        answers[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 4096 bytes")
    );
    let lines = std::fs::read_to_string(&journal).unwrap();
    let methods: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["method"].clone())
        .collect();
    assert_eq!(methods, [json!("initialize"), json!("ping")]);
}

/// Streamable HTTP details: the session header, DELETE ending a session, GET refused, an
/// unknown session, a bad protocol-version header, a foreign Origin, an oversized body, SSE.
#[test]
fn http_sessions_and_refusals() {
    let (_guard, url) = start_http(&["--max-message-bytes", "65536"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let post = |body: Value| {
            http.post(&url)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .body(body.to_string())
        };
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let r = post(init.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
        let r = post(ping.clone()).header("mcp-session-id", &session).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["result"], json!({}));
        assert_eq!(post(ping.clone()).send().await.unwrap().status(), 400, "no session header");
        assert_eq!(post(ping.clone()).header("mcp-session-id", "nope").send().await.unwrap().status(), 404);
        assert_eq!(post(ping.clone()).header("mcp-session-id", &session).header("mcp-protocol-version", "1999-01-01").send().await.unwrap().status(), 400);
        assert_eq!(post(init.clone()).header("origin", "https://evil.example").send().await.unwrap().status(), 403);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(post(note).header("mcp-session-id", &session).send().await.unwrap().status(), 202);
        let big = json!({"jsonrpc": "2.0", "id": 3, "method": "ping", "pad": "x".repeat(100_000)});
        let r = post(big).header("mcp-session-id", &session).send().await.unwrap();
        assert_eq!(r.status(), 413);
        // A JSON-RPC error, not axum's plain-text rejection.
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32700);
        let sse = http.post(&url).header("accept", "text/event-stream").header("content-type", "application/json").header("mcp-session-id", &session).body(ping.to_string()).send().await.unwrap();
        assert_eq!(sse.headers()["content-type"], "text/event-stream");
        let events = tollgate_mcp::sse::decode_events(&sse.text().await.unwrap());
        assert_eq!(serde_json::from_str::<Value>(&events[0]).unwrap()["id"], 2);
        assert_eq!(http.get(&url).send().await.unwrap().status(), 405);
        assert_eq!(http.delete(&url).header("mcp-session-id", &session).send().await.unwrap().status(), 200);
        assert_eq!(post(ping).header("mcp-session-id", &session).send().await.unwrap().status(), 404, "ended");
    });
}

/// The conformance runner (`$TOLLGATE_TEST_CONFORMANCE`, installed by scripts/test-all.sh).
pub(crate) fn conformance_bin() -> String {
    std::env::var("TOLLGATE_TEST_CONFORMANCE").unwrap_or_else(|_| {
        let bin = root().join(".ci/node/node_modules/.bin/conformance");
        assert!(bin.exists(), "TOLLGATE_TEST_CONFORMANCE is not set and .ci/node is not installed: run `bash scripts/test-all.sh`");
        bin.to_string_lossy().into_owned()
    })
}

/// The scenarios that pass against an MCP server at `url`, sorted.
pub(crate) fn conformance_passing(url: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(conformance_bin())
        .args(["server", "--url", url, "-o", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut passing: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("✓ "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect();
    passing.sort_unstable();
    passing
}

/// Every check of every scenario the conformance suite runs against the MCP server at `url`:
/// scenario → `(check id, status)` in the suite's order, from the `checks.json` it writes per
/// scenario (bounded: 32 scenarios, each a few checks).
pub(crate) fn conformance_checks(
    url: &str,
) -> std::collections::BTreeMap<String, Vec<(String, String)>> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(conformance_bin())
        .args(["server", "--url", url, "-o", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let mut checks = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // `server-SCENARIO-2026-12-07T21-35-51-066Z`: the scenario is between the prefix and the
        // timestamp (24 characters and its dash).
        let scenario = name
            .strip_prefix("server-")
            .and_then(|n| n.get(..n.len().saturating_sub(25)))
            .unwrap_or_else(|| panic!("a result folder named {name}"))
            .to_owned();
        let text = std::fs::read_to_string(path.join("checks.json")).unwrap();
        let list: Vec<Value> = serde_json::from_str(&text).unwrap();
        let list = list
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_owned(),
                    c["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        checks.insert(scenario, list);
    }
    assert!(
        checks.len() >= 30,
        "the suite ran {} scenarios against {url}:\n{}",
        checks.len(),
        String::from_utf8_lossy(&out.stdout)
    );
    checks
}

/// What passes against the mock (docs/conformance.md says why the rest does not apply).
pub(crate) const CONFORMANCE_PASSING: [&str; 9] = [
    "dns-rebinding-protection",
    "ping",
    "prompts-list",
    "resources-list",
    "server-initialize",
    "server-sse-multiple-streams",
    "tools-call-error",
    "tools-call-simple-text",
    "tools-list",
];

/// The MCP conformance suite (@modelcontextprotocol/conformance 0.1.12) against the HTTP mock:
/// exactly the scenarios that apply to an EKS server pass.
#[test]
fn conformance_suite_passes_the_applicable_scenarios() {
    let (_guard, url) = start_http(&[]);
    assert_eq!(conformance_passing(&url), CONFORMANCE_PASSING);
}
