//! OpenTelemetry traces (docs/observability.md) against a real OTLP/HTTP receiver run here
//! (tests/otel/otlp_receiver.py: the `ExportTraceServiceRequest` decoded by the OpenTelemetry
//! project's `opentelemetry-proto` package) and an upstream that writes down the trace context
//! each request brought (tests/otel/traced_upstream.py): span names, attributes, trace and parent
//! ids continuing a client's `traceparent` (header and `_meta`), the context passed on to the
//! HTTP upstream, no argument value in any span, and a gateway that keeps serving, counting the
//! spans it drops, when the endpoint is down.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{call, initialize, lines_of, rt, write};
use crate::mock_eks::Guard;
use crate::util::{root, tollgate};

/// The Python interpreter with `opentelemetry-proto` (scripts/test-all.sh installs it into
/// `.venv` and sets `TOLLGATE_TEST_OTLP_PYTHON`). A missing one fails the test: nothing is skipped.
fn otlp_python() -> String {
    std::env::var("TOLLGATE_TEST_OTLP_PYTHON").unwrap_or_else(|_| {
        let venv = root().join(".venv/bin/python");
        assert!(venv.exists(), "TOLLGATE_TEST_OTLP_PYTHON is not set and .venv/bin/python is missing: run `bash scripts/test-all.sh`");
        venv.to_string_lossy().into_owned()
    })
}

/// Runs one of tests/otel's scripts writing to `out`; returns it and the port it listens on.
fn start_script(script: &str, out: &Path) -> (Guard, u16) {
    let mut child = Command::new(otlp_python())
        .arg(root().join("tests/otel").join(script))
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{script} printed {line:?}"))
        .parse()
        .unwrap();
    (Guard(child), port)
}

/// `tollgate gateway --listen 127.0.0.1:0 ARGS`, exporting every 100 ms (the SDK's
/// `OTEL_BSP_SCHEDULE_DELAY`; 5 s by default); returns it and its URL.
fn start_gateway(args: &[&str]) -> (Guard, String) {
    let mut child = tollgate()
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (Guard(child), url)
}

/// The spans the receiver wrote, once there are at least `n` (at most 30 s).
fn spans_at_least(path: &Path, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let spans = lines_of(path);
        if spans.len() >= n {
            return spans;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} spans of {n} arrived: {spans:#?}",
            spans.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn post(http: &reqwest::Client, url: &str, headers: &[(&str, &str)], msg: &Value) -> Value {
    let mut req = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(msg.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().json().await.unwrap()
}

async fn open_session(http: &reqwest::Client, url: &str) -> String {
    let r = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(initialize(0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_A: &str = "00f067aa0ba902b7";
const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_B: &str = "b7ad6b7169203331";
const SECRET: &str = "s3cr3t-argument-value";

/// Each request gets a server span named as the MCP semantic conventions say, with the
/// decision, the rule, the deciding counter, the grant, the session, the tool, the upstream
/// and the outcome; a `traceparent` header and a `_meta.traceparent` each make it a child of
/// the client's span; the upstream gets the gateway span's context in `_meta` and in its
/// headers; a refused call's span says so; no argument value is in any span.
#[test]
fn spans_carry_decisions_and_continue_the_clients_trace() {
    let dir = tempfile::tempdir().unwrap();
    let spans_file = dir.path().join("spans.jsonl");
    let seen_file = dir.path().join("upstream.jsonl");
    let (_receiver, otlp) = start_script("otlp_receiver.py", &spans_file);
    let (_upstream, up) = start_script("traced_upstream.py", &seen_file);
    let policy = write(
        dir.path(),
        "p.json",
        r#"{"version": "1", "default": "allow", "tools": {
            "echo": {"limits": [{"counter": "echo_rate", "window": "minute", "max": 5}]},
            "danger": {"action": "deny", "reason": "nobody runs danger"}}}"#,
    );
    let up_url = format!("http://127.0.0.1:{up}/mcp");
    let (_gw, url) = start_gateway(&[
        "--policy",
        &policy,
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{otlp}"),
        "--otlp-service-name",
        "tollgate-test",
        "--upstream-url",
        &up_url,
    ]);
    let header_a = format!("00-{TRACE_A}-{PARENT_A}-01");
    let meta_b = format!("00-{TRACE_B}-{PARENT_B}-01");
    let session = rt().block_on(async {
        let http = reqwest::Client::new();
        let session = open_session(&http, &url).await;
        let s = [("mcp-session-id", session.as_str())];
        let with_header = [
            ("mcp-session-id", session.as_str()),
            ("traceparent", header_a.as_str()),
            ("tracestate", "vendor=a"),
        ];
        let a = post(
            &http,
            &url,
            &with_header,
            &call(1, "echo", json!({"text": SECRET})),
        )
        .await;
        assert_eq!(a["result"]["content"][0]["text"], SECRET, "{a}");
        let mut b = call(2, "echo", json!({"text": "b"}));
        b["params"]["_meta"] = json!({"traceparent": meta_b});
        let b = post(&http, &url, &s, &b).await;
        assert_eq!(b["result"]["isError"], false, "{b}");
        let c = post(&http, &url, &s, &call(3, "danger", json!({}))).await;
        assert_eq!(c["result"]["isError"], true, "{c}");
        session
    });
    // initialize, and the three calls.
    let spans = spans_at_least(&spans_file, 4);
    let raw = std::fs::read_to_string(&spans_file).unwrap();
    assert!(!raw.contains(SECRET), "an argument value in a span: {raw}");
    let by_id = |id: &str| {
        spans
            .iter()
            .find(|s| s["attributes"]["jsonrpc.request.id"] == id)
            .unwrap_or_else(|| panic!("no span of request {id}: {spans:#?}"))
    };
    let init = by_id("0");
    assert_eq!(init["name"], "initialize");
    assert_eq!(init["attributes"]["tollgate.outcome"], "result");

    let a = by_id("1");
    assert_eq!(a["name"], "tools/call echo");
    // SPAN_KIND_SERVER.
    assert_eq!(a["kind"], 2);
    assert_eq!(a["resource"]["service.name"], "tollgate-test");
    assert_eq!(a["scope"], "tollgate");
    assert_eq!(a["trace_id"], TRACE_A);
    assert_eq!(a["parent_span_id"], PARENT_A);
    let attrs = &a["attributes"];
    for (k, v) in [
        ("mcp.method.name", json!("tools/call")),
        ("gen_ai.tool.name", json!("echo")),
        ("gen_ai.operation.name", json!("execute_tool")),
        ("mcp.session.id", json!(session)),
        ("tollgate.grant", json!("default")),
        ("tollgate.upstream", json!(up_url)),
        ("tollgate.decision", json!("allow")),
        ("tollgate.rule", json!("echo")),
        ("tollgate.rule.pointer", json!("/tools/echo")),
        ("tollgate.limit.counter", json!("echo_rate")),
        ("tollgate.limit.key", json!("default")),
        ("tollgate.limit.used", json!(1)),
        ("tollgate.limit.max", json!(5)),
        ("tollgate.outcome", json!("result")),
    ] {
        assert_eq!(attrs[k], v, "{k} of {a:#}");
    }

    let b = by_id("2");
    assert_eq!(b["trace_id"], TRACE_B);
    assert_eq!(b["parent_span_id"], PARENT_B);
    assert_eq!(b["attributes"]["tollgate.limit.used"], 2);

    let c = by_id("3");
    assert_eq!(c["name"], "tools/call danger");
    assert_eq!(c["attributes"]["tollgate.decision"], "deny");
    assert_eq!(c["attributes"]["tollgate.reason"], "nobody runs danger");
    assert_eq!(c["attributes"]["tollgate.outcome"], "refused");
    // A client without trace context starts a trace at the gateway.
    assert_eq!(c["parent_span_id"], "");

    // The upstream got each forwarded call with the gateway span's context, in `_meta` and in
    // the W3C headers; the client's `tracestate` went on with it; `danger` never reached it.
    let seen = lines_of(&seen_file);
    let calls: Vec<&Value> = seen
        .iter()
        .filter(|m| m["method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 2, "{seen:#?}");
    for (got, span) in calls.iter().zip([a, b]) {
        let expected = format!(
            "00-{}-{}-01",
            span["trace_id"].as_str().unwrap(),
            span["span_id"].as_str().unwrap()
        );
        assert_eq!(got["meta"]["traceparent"], expected, "{got}");
        assert_eq!(got["traceparent"], expected, "{got}");
    }
    assert_eq!(calls[0]["tracestate"], "vendor=a");
    assert_eq!(calls[0]["meta"]["tracestate"], "vendor=a");
}

/// With the OTLP endpoint down (a closed port) and an export queue of 4 (`[telemetry]` of a
/// config file), every call is still answered at once, and the spans that could not be
/// delivered are counted in `tollgate_trace_spans_dropped_total`.
#[test]
fn the_gateway_keeps_serving_when_the_endpoint_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let seen_file = dir.path().join("upstream.jsonl");
    let (_upstream, up) = start_script("traced_upstream.py", &seen_file);
    write(
        dir.path(),
        "p.json",
        r#"{"version": "1", "default": "allow"}"#,
    );
    let config = write(
        dir.path(),
        "tollgate.toml",
        &format!(
            "policy = \"p.json\"\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\nmax_queue = 4\n[[upstream]]\nname = \"up\"\nurl = \"http://127.0.0.1:{up}/mcp\"\n"
        ),
    );
    let (_gw, url) = start_gateway(&["--config", &config]);
    let dropped = rt().block_on(async {
        let http = reqwest::Client::new();
        let session = open_session(&http, &url).await;
        let s = [("mcp-session-id", session.as_str())];
        let started = Instant::now();
        for i in 1..=40u64 {
            let a = post(&http, &url, &s, &call(i, "echo", json!({"text": "x"}))).await;
            assert_eq!(a["result"]["content"][0]["text"], "x", "{a}");
        }
        // Telemetry holds no call up: 40 calls in far less than one export timeout.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let metrics_url = url.replace("/mcp", "/metrics");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = http
                .get(&metrics_url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let dropped: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("tollgate_trace_spans_dropped_total "))
                .unwrap_or_else(|| panic!("no dropped-spans metric: {text}"))
                .trim()
                .parse()
                .unwrap();
            // More than the queue holds: the queue bound dropped some at once.
            if dropped > 4 {
                break dropped;
            }
            assert!(Instant::now() < deadline, "{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(dropped <= 41, "{dropped}");
}

/// Over stdio (a child upstream): the first call waits for the gateway's own tool list and
/// keeps its span, which continues the client's `_meta` trace context, ends as a result and is
/// exported when the client goes away (the gateway flushes on its way out).
#[test]
fn a_stdio_call_that_waits_for_the_tool_list_keeps_its_span() {
    let dir = tempfile::tempdir().unwrap();
    let spans_file = dir.path().join("spans.jsonl");
    let (_receiver, otlp) = start_script("otlp_receiver.py", &spans_file);
    let mut first = call(
        2,
        "list_k8s_resources",
        json!({"cluster_name": "c", "kind": "Pod", "api_version": "v1"}),
    );
    first["params"]["_meta"] = json!({"traceparent": format!("00-{TRACE_A}-{PARENT_A}-01")});
    let answers = super::stdio_gateway(
        &[
            "--policy",
            &write(dir.path(), "p.json", super::ALLOW_ALL),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{otlp}"),
            "--",
            env!("CARGO_BIN_EXE_tollgate"),
            "mock-eks",
        ],
        &[
            initialize(1),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            first,
        ],
        Duration::from_secs(2),
    );
    assert!(answers.iter().any(|a| a["id"] == 2), "{answers:?}");
    let spans = spans_at_least(&spans_file, 2);
    let call_span = spans
        .iter()
        .find(|s| s["attributes"]["jsonrpc.request.id"] == "2")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(call_span["name"], "tools/call list_k8s_resources");
    assert_eq!(call_span["trace_id"], TRACE_A);
    assert_eq!(call_span["parent_span_id"], PARENT_A);
    assert_eq!(call_span["attributes"]["mcp.session.id"], "stdio");
    assert_eq!(call_span["attributes"]["tollgate.decision"], "allow");
    assert_ne!(call_span["attributes"]["tollgate.outcome"], "abandoned");
}
