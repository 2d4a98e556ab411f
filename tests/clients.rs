//! The client matrix (issue 18): the clients people run, through `tollgate gateway` over stdio
//! and Streamable HTTP, each reading every kind of refusal. One policy (`tests/clients/policy.json`)
//! and one plan of calls (`tests/clients/plan.json`): list the tools, an allowed call, then a
//! rate-limited call, a denial, a default denial, invalid arguments, an approval the gateway has
//! nobody to ask for, and an unknown tool. Each client must hand every refusal to its
//! application as a normal tool result (`isError: true`, not an exception) with the refusal's
//! text, the retry time included, and the machine-readable detail in `_meta`.
//!
//! Clients: the official Python SDK (mcp 2.3.0) in auto (stateless) and legacy mode, FastMCP's
//! client (fastmcp 4.2.x), the TypeScript SDK (@modelcontextprotocol/sdk 1.32.x) and the
//! Inspector CLI (2.12.0). Upstreams: the mock EKS server, and a FastMCP server whose typed tools
//! all declare an `outputSchema` (the TypeScript SDK and the Inspector check a result's
//! `structuredContent` against it, refusals included). docs/clients.md is the user's side.
//!
//! Each test runs its clients at once (threads), each against its own gateway, so the module's
//! wall time is about its slowest client's.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mock_eks::{Guard, python, start_http, start_listening};
use crate::util::root;

// Every answer the gateway makes itself, checked against the MCP schema of each version.
mod schema;

fn bin() -> String {
    env!("CARGO_BIN_EXE_tollgate").to_owned()
}

fn fixture(name: &str) -> String {
    root()
        .join("tests/clients")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn plan() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("plan.json")).unwrap();
    let plan: Value = serde_json::from_str(&text).unwrap();
    plan["steps"].as_array().unwrap().clone()
}

fn node_dir() -> PathBuf {
    root().join(".ci/node")
}

fn inspector() -> String {
    std::env::var("TOLLGATE_TEST_INSPECTOR").unwrap_or_else(|_| {
        let bin = node_dir().join("node_modules/.bin/mcp-inspector");
        assert!(bin.exists(), "TOLLGATE_TEST_INSPECTOR is not set and .ci/node is not installed: run `bash scripts/test-all.sh`");
        bin.to_string_lossy().into_owned()
    })
}

/// The upstream behind the gateway.
#[derive(Clone, Copy, Debug)]
enum Upstream {
    /// `tollgate mock-eks --allow-write`.
    Mock,
    /// `tests/clients/fastmcp_server.py`: typed tools, each with an `outputSchema`.
    FastMcp,
}

/// How a client reaches the gateway.
#[derive(Clone, Copy, Debug)]
enum Front {
    Stdio,
    Http,
}

/// A gateway a client can reach: a command line for a stdio client, or a URL (with the
/// processes behind it, killed when it is dropped).
struct Target {
    stdio: Vec<String>,
    url: Option<String>,
    _guards: Vec<Guard>,
}

impl Target {
    /// The client's arguments that name this gateway: `--url URL` or `--stdio COMMAND ARGS...`.
    fn client_args(&self) -> Vec<String> {
        match &self.url {
            Some(url) => vec!["--url".into(), url.clone()],
            None => [vec!["--stdio".to_owned()], self.stdio.clone()].concat(),
        }
    }
}

/// A FastMCP server over Streamable HTTP on a free loopback port, once it accepts connections.
fn start_fastmcp_http() -> (Guard, String) {
    let port = tollgate_store_redis::testing::free_port().unwrap();
    let child = Command::new(python())
        .args([&fixture("fastmcp_server.py"), "http", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the FastMCP server did not listen on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, format!("http://127.0.0.1:{port}/mcp"))
}

/// The gateway with the matrix's policy (and `extra` flags) in front of `upstream`.
fn gateway(upstream: Upstream, front: Front, extra: &[&str]) -> Target {
    let policy = fixture("policy.json");
    match front {
        Front::Stdio => {
            let upstream_cmd: Vec<String> = match upstream {
                Upstream::Mock => vec![bin(), "mock-eks".into(), "--allow-write".into()],
                Upstream::FastMcp => vec![python(), fixture("fastmcp_server.py"), "stdio".into()],
            };
            let mut stdio = vec![bin(), "gateway".into(), "--policy".into(), policy];
            stdio.extend(extra.iter().map(|s| (*s).to_owned()));
            stdio.push("--".into());
            stdio.extend(upstream_cmd);
            Target {
                stdio,
                url: None,
                _guards: Vec::new(),
            }
        }
        Front::Http => {
            let (up, up_url) = match upstream {
                Upstream::Mock => start_http(&["--allow-write"]),
                Upstream::FastMcp => start_fastmcp_http(),
            };
            let mut target = gateway_to(&up_url, extra);
            target._guards.push(up);
            target
        }
    }
}

/// The HTTP gateway with the matrix's policy (and `extra` flags) in front of the server at
/// `up_url`, with an approver (`tests/clients/admins.txt`) who never answers: a call that needs
/// approval is held for the policy's 1 s, then refused as `approval_timeout`.
fn gateway_to(up_url: &str, extra: &[&str]) -> Target {
    let policy = fixture("policy.json");
    let admins = fixture("admins.txt");
    let args = [
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            &policy,
            "--admin-tokens",
            &admins,
            "--upstream-url",
            up_url,
        ][..],
        extra,
    ]
    .concat();
    let (gw, url) = start_listening(&args);
    Target {
        stdio: Vec::new(),
        url: Some(url),
        _guards: vec![gw],
    }
}

fn parse_output(who: &str, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{who} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{who} printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `tests/clients/python_client.py --client CLIENT [--mode MODE]` against `target`.
fn run_python(client: &str, mode: &str, target: &Target) -> Value {
    let out = Command::new(python())
        .arg(fixture("python_client.py"))
        .args(["--client", client, "--mode", mode])
        .args(target.client_args())
        .output()
        .unwrap();
    parse_output(&format!("the Python client {client} ({mode})"), &out)
}

/// `tests/clients/ts_client.cjs` (the TypeScript SDK) against `target`.
fn run_typescript(target: &Target) -> Value {
    let out = Command::new("node")
        .arg(fixture("ts_client.cjs"))
        .args(target.client_args())
        .env("NODE_DIR", node_dir())
        .output()
        .unwrap();
    parse_output("the TypeScript SDK client", &out)
}

/// One Inspector CLI call of `step` (one process per call: the CLI runs one method each time).
/// A tool result with `isError: true` exits 5 ("tool_is_error") with the result on stdout.
fn inspector_call(target: &Target, step: &Value) -> Value {
    let mut cmd = Command::new(inspector());
    cmd.arg("--cli");
    match &target.url {
        Some(url) => cmd.args([url.as_str(), "--transport", "http"]),
        None => cmd.arg(&target.stdio[0]),
    };
    cmd.args(["--method", "tools/call", "--tool-name"])
        .arg(step["tool"].as_str().unwrap());
    for (k, v) in step["arguments"].as_object().unwrap() {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        cmd.arg("--tool-arg").arg(format!("{k}={v}"));
    }
    let out = cmd.output().unwrap();
    if step["expect"] == "unknown_tool" {
        // The Inspector checks the name against its own `tools/list` and refuses an unknown
        // tool itself: the call is never sent (docs/clients.md).
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("tool_not_found"),
            "the Inspector sent a call to an unknown tool: {err}"
        );
        return serde_json::json!({"refused_by_client": err.trim()});
    }
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the Inspector printed no result for {step} ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let is_error = result["isError"] == true;
    assert_eq!(
        out.status.code(),
        Some(if is_error { 5 } else { 0 }),
        "the Inspector's exit code for {step}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = &result["content"][0];
    serde_json::json!({
        "is_error": is_error,
        "text": if first["type"] == "text" { first["text"].clone() } else { Value::from("") },
        "decision": result["_meta"]["dev.tollgate/decision"],
        "raised": null,
    })
}

/// The plan through the Inspector CLI: its tools, then every step, each its own process. The
/// steps run at once (one process each) except the rate-limited one, which runs after the
/// first cancel has been counted.
fn run_inspector(target: &Target) -> Value {
    let mut list = Command::new(inspector());
    list.arg("--cli");
    match &target.url {
        Some(url) => list.args([url.as_str(), "--transport", "http"]),
        None => list.arg(&target.stdio[0]),
    };
    let out = list.args(["--method", "tools/list"]).output().unwrap();
    let listed = parse_output("the Inspector's tools/list", &out);
    let tools: Vec<Value> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    let steps = plan();
    let mut answers: Vec<Value> = vec![Value::Null; steps.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = steps
            .iter()
            .enumerate()
            .filter(|(_, step)| step["expect"] != "rate_limited")
            .map(|(i, step)| (i, s.spawn(move || inspector_call(target, step))))
            .collect();
        for (i, h) in handles {
            answers[i] = h.join().unwrap();
        }
    });
    for (i, step) in steps.iter().enumerate() {
        if step["expect"] == "rate_limited" {
            answers[i] = inspector_call(target, step);
        }
    }
    serde_json::json!({"tools": tools, "steps": answers})
}

/// A shell script that runs the stdio gateway: the Inspector CLI takes one command and would
/// swallow the gateway's own `--` (docs/clients.md).
fn stdio_script(dir: &std::path::Path, target: &Target) -> Target {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let line: Vec<String> = target.stdio.iter().map(|a| quote(a)).collect();
    let path = dir.join("gateway.sh");
    std::fs::write(&path, format!("#!/bin/sh\nexec {}\n", line.join(" "))).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    Target {
        stdio: vec![path.to_string_lossy().into_owned()],
        url: None,
        _guards: Vec::new(),
    }
}

/// What every client must have shown: the upstream's tools, the allowed calls' own answers,
/// and each refusal as a tool result with its text (the retry time included) and its detail.
fn check_plan(who: &str, summary: &Value, upstream: Upstream, front: Front) {
    let tools: Vec<&str> = summary["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{who}: no tool list in {summary}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let listed = match upstream {
        Upstream::Mock => 23,
        Upstream::FastMcp => 6,
    };
    assert_eq!(tools.len(), listed, "{who}: {tools:?}");
    for name in ["GetAHOBatch", "CancelAHORunBatch", "add_inline_policy"] {
        assert!(tools.contains(&name), "{who}: {name} is not listed");
    }
    let steps = plan();
    let answers = summary["steps"].as_array().unwrap();
    assert_eq!(answers.len(), steps.len(), "{who}: {summary}");
    for (step, got) in steps.iter().zip(answers) {
        let label = step["label"].as_str().unwrap();
        if step["expect"] == "unknown_tool" && got.get("refused_by_client").is_some() {
            // Only the Inspector does this (checked where it is run).
            continue;
        }
        assert!(
            got["raised"].is_null(),
            "{who}, {label}: the client raised instead of returning a result: {}",
            got["raised"]
        );
        let text = got["text"].as_str().unwrap_or_default();
        if step["expect"].is_null() {
            assert_eq!(got["is_error"], false, "{who}, {label}: {got}");
            assert!(got["decision"].is_null(), "{who}, {label}: {got}");
            continue;
        }
        assert_eq!(got["is_error"], true, "{who}, {label}: {got}");
        let expect = match front {
            Front::Http if step.get("expect_http").is_some() => &step["expect_http"],
            _ => &step["expect"],
        };
        assert_eq!(
            got["decision"]["decision"], *expect,
            "{who}, {label}: {got}"
        );
        assert_eq!(got["decision"]["tool"], step["tool"], "{who}, {label}");
        for part in step["says"].as_array().unwrap() {
            let part = part.as_str().unwrap();
            assert!(
                text.contains(part),
                "{who}, {label}: the text does not say {part:?}: {text}"
            );
        }
        if step["expect"] == "rate_limited" {
            let retry = got["decision"]["retry_after_seconds"].as_f64().unwrap();
            assert!(
                retry > 3000.0 && retry <= 3600.0,
                "{who}, {label}: retry after {retry}"
            );
            // The text ends with the retry time, as the agent reads it ("Retry in 3599.989s.").
            let said = text.rsplit("Retry in ").next().unwrap();
            assert!(said.ends_with('.') && said.len() > 2, "{who}: {text}");
        }
    }
}

/// One client run: who it is, the upstream behind the gateway, and the run (its summary).
type Job = (String, Upstream, Front, Box<dyn FnOnce() -> Value + Send>);

/// Runs `jobs` at once, each in its own thread, and checks each one's summary.
fn run_all(jobs: Vec<Job>) {
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(who, upstream, front, job)| (who, upstream, front, s.spawn(job)))
            .collect();
        for (who, upstream, front, h) in handles {
            let summary = h.join().unwrap_or_else(|_| panic!("{who} panicked"));
            check_plan(&who, &summary, upstream, front);
        }
    });
}

/// The Python SDK (mcp 2.3.0) in auto mode (the stateless protocol, 2026-07-28) and in legacy
/// mode (`initialize`), over stdio and Streamable HTTP, reads every refusal as a tool result.
#[test]
fn python_sdk_reads_every_refusal_in_auto_and_legacy_mode() {
    let mut jobs: Vec<Job> = Vec::new();
    for mode in ["auto", "legacy"] {
        for front in [Front::Stdio, Front::Http] {
            jobs.push((
                format!("Python SDK {mode} over {front:?}"),
                Upstream::Mock,
                front,
                Box::new(move || {
                    let target = gateway(Upstream::Mock, front, &[]);
                    let summary = run_python("sdk", mode, &target);
                    let version = if mode == "auto" {
                        "2026-07-28"
                    } else {
                        "2025-11-25"
                    };
                    assert_eq!(summary["protocol_version"], version, "{mode} {front:?}");
                    summary
                }),
            ));
        }
    }
    run_all(jobs);
}

/// The TypeScript SDK (@modelcontextprotocol/sdk 1.32.x) over stdio and Streamable HTTP.
#[test]
fn typescript_sdk_reads_every_refusal() {
    let mut jobs: Vec<Job> = Vec::new();
    for front in [Front::Stdio, Front::Http] {
        jobs.push((
            format!("TypeScript SDK over {front:?}"),
            Upstream::Mock,
            front,
            Box::new(move || run_typescript(&gateway(Upstream::Mock, front, &[]))),
        ));
    }
    run_all(jobs);
}

/// FastMCP's client (fastmcp 4.2.x, auto mode) over stdio and Streamable HTTP, reading tool
/// errors as results (`raise_on_error=False`); with its default it raises `ToolError`, whose
/// message is the refusal's text.
#[test]
fn fastmcp_client_reads_every_refusal() {
    let mut jobs: Vec<Job> = Vec::new();
    for front in [Front::Stdio, Front::Http] {
        jobs.push((
            format!("FastMCP client over {front:?}"),
            Upstream::Mock,
            front,
            Box::new(move || {
                let summary = run_python("fastmcp", "auto", &gateway(Upstream::Mock, front, &[]));
                let raised = summary["default_raises"].as_str().unwrap_or_default();
                assert!(
                    raised.contains("Tollgate denied the call to `DeleteAHORunBatch`"),
                    "{front:?}: {summary}"
                );
                summary
            }),
        ));
    }
    run_all(jobs);
}

/// The Inspector CLI (2.12.0): one process per call, so over stdio each call starts its own
/// gateway; their limits are kept in one Redis (the shared counter store), as replicas' are.
#[test]
fn inspector_cli_reads_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let redis = tollgate_store_redis::testing::RedisServer::start(dir.path()).unwrap();
    let store = redis.url();
    let stdio = stdio_script(
        dir.path(),
        &gateway(Upstream::Mock, Front::Stdio, &["--store", &store]),
    );
    let http = gateway(Upstream::Mock, Front::Http, &[]);
    let jobs: Vec<Job> = vec![
        (
            "Inspector CLI over stdio".into(),
            Upstream::Mock,
            Front::Stdio,
            Box::new(move || run_inspector(&stdio)),
        ),
        (
            "Inspector CLI over HTTP".into(),
            Upstream::Mock,
            Front::Http,
            Box::new(move || run_inspector(&http)),
        ),
    ];
    run_all(jobs);
}

/// Behind the gateway, a FastMCP server whose typed tools all declare an `outputSchema`: the
/// refusals carry no `structuredContent`, so the clients that check it against the tool's
/// schema (the TypeScript SDK, the Inspector) show them instead of throwing "-32602 Structured
/// content does not match the tool's output schema"; the allowed calls' structured results
/// pass through.
#[test]
fn refusals_of_typed_tools_pass_the_clients_output_schema_checks() {
    // The HTTP clients share one FastMCP server (each through its own gateway, with its own
    // limits): a Python server's start is most of a run's cost.
    let (_fastmcp, fastmcp_url) = start_fastmcp_http();
    let (a, b, c) = (fastmcp_url.clone(), fastmcp_url.clone(), fastmcp_url);
    let jobs: Vec<Job> = vec![
        (
            "TypeScript SDK, FastMCP upstream over stdio".into(),
            Upstream::FastMcp,
            Front::Stdio,
            Box::new(|| run_typescript(&gateway(Upstream::FastMcp, Front::Stdio, &[]))),
        ),
        (
            "TypeScript SDK, FastMCP upstream over HTTP".into(),
            Upstream::FastMcp,
            Front::Http,
            Box::new(move || run_typescript(&gateway_to(&a, &[]))),
        ),
        (
            "FastMCP client, FastMCP upstream over HTTP".into(),
            Upstream::FastMcp,
            Front::Http,
            Box::new(move || run_python("fastmcp", "auto", &gateway_to(&b, &[]))),
        ),
        (
            "Python SDK legacy, FastMCP upstream over stdio".into(),
            Upstream::FastMcp,
            Front::Stdio,
            Box::new(|| {
                run_python(
                    "sdk",
                    "legacy",
                    &gateway(Upstream::FastMcp, Front::Stdio, &[]),
                )
            }),
        ),
        (
            "Inspector CLI, FastMCP upstream over HTTP".into(),
            Upstream::FastMcp,
            Front::Http,
            Box::new(move || run_inspector(&gateway_to(&c, &[]))),
        ),
    ];
    run_all(jobs);
}

/// The stateless protocol (2026-07-28) over HTTP learns of a reload that changes its tools on a
/// `subscriptions/listen` stream, the one way that protocol delivers change notifications (it
/// has no GET stream). Before, the gateway forwarded `subscriptions/listen` to the upstream and
/// the client got -32601 "Method not found" and never heard of the change. A raw client sees
/// the acknowledgment and the tagged notification; the Python SDK's `Client.listen()` gets its
/// `ToolsListChanged` event and lists the new set.
#[test]
fn a_stateless_http_client_is_told_of_a_reload_on_its_listen_stream() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let hide = |tools: &str| {
        let tmp = dir.path().join("policy.json.new");
        let text = format!(
            r#"{{"version": "1", "default": "allow", "hide_from_list": true, "tools": {{{tools}}}}}"#
        );
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &policy).unwrap();
    };
    hide("");
    let (_mock, mock_url) = start_http(&[]);
    let (gw, url) = start_listening(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        policy.to_str().unwrap(),
        "--upstream-url",
        &mock_url,
    ]);
    // A raw client: list, listen, reload, read the stream (bounded: 20 s).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures::StreamExt;
        let http = reqwest::Client::new();
        let post = |id: Value, method: &str, params: Value| {
            let mut params = params;
            params["_meta"] = serde_json::json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}});
            let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            http.post(&url)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
        };
        let listed: Value = post(1.into(), "tools/list", serde_json::json!({})).await.unwrap().json().await.unwrap();
        assert!(listed.to_string().contains("GetAHOBatch"), "{listed}");
        let listen = post("listen-1".into(), "subscriptions/listen", serde_json::json!({"notifications": {"toolsListChanged": true, "resourcesListChanged": true}}))
            .await
            .unwrap();
        assert_eq!(listen.headers()["content-type"], "text/event-stream");
        let mut body = listen.bytes_stream();
        let mut text = String::new();
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut reloaded = false;
        while events.len() < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, body.next())
                .await
                .unwrap_or_else(|_| panic!("the listen stream carried only {events:?}"))
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                    events.push(serde_json::from_str::<Value>(data.trim()).unwrap());
                }
            }
            if !events.is_empty() && !reloaded {
                hide(r#""GetAHOBatch": {"action": "deny"}"#);
                reloaded = true;
            }
        }
        assert_eq!(
            events[0],
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": "listen-1"},
                    "notifications": {"toolsListChanged": true}}}),
            "only toolsListChanged is honoured"
        );
        assert_eq!(
            events[1],
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": "listen-1"}}})
        );
    });
    // The Python SDK (auto mode): `Client.listen(tools_list_changed=True)`.
    hide("");
    let mut child = Command::new(python())
        .args([&fixture("listen_client.py"), &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(
        line.trim(),
        "acknowledged",
        "{:?}",
        child.wait_with_output()
    );
    hide(r#""GetAHOBatch": {"action": "deny"}"#);
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the Python client failed: {line}");
    let summary: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(summary["protocol_version"], "2026-07-28", "{summary}");
    assert_eq!(summary["event"], "ToolsListChanged", "{summary}");
    let has = |k: &str| {
        summary[k]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "GetAHOBatch")
    };
    assert!(has("before") && !has("after"), "{summary}");
    // On shutdown (SIGTERM) an open listen stream gets its request's completion result, then
    // ends: the client knows the subscription closed cleanly.
    let body = r#"{"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}, "io.modelcontextprotocol/clientCapabilities": {}}, "notifications": {"toolsListChanged": true}}}"#;
    let text = rt.block_on(async {
        let listen = reqwest::Client::new()
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let pid = gw.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        tokio::time::timeout(Duration::from_secs(20), listen.text())
            .await
            .unwrap_or_else(|_| panic!("the listen stream did not end within 20 s of SIGTERM"))
            .unwrap_or_default()
    });
    let last: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .unwrap_or_else(|| panic!("no events: {text}"));
    assert_eq!(
        last,
        serde_json::json!({"jsonrpc": "2.0", "id": 9, "result": {"resultType": "complete",
            "_meta": {"io.modelcontextprotocol/subscriptionId": 9}}}),
        "{text}"
    );
}
