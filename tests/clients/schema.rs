//! Every answer the gateway makes itself is valid for the session's protocol version: each
//! refusal kind, each JSON-RPC error it answers with, and its `notifications/tools/list_changed`,
//! checked against the MCP specification's own JSON Schema for that version (vendored in
//! `tests/fixtures/mcp-schema/`, with its source in the README there). The stdio gateway in
//! front of the mock gets one session per version (2025-03-26, 2025-06-18, 2025-11-25, and the
//! stateless 2026-07-28 with its `_meta` envelope on every request), and the test checks that
//! every shape it means to cover did appear, so a kind that stops being produced fails too.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{bin, fixture};
use crate::util::root;

const VERSIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

/// One version's schema, compiled once per definition asked for.
struct Spec {
    version: &'static str,
    doc: Value,
    defs_key: &'static str,
}

impl Spec {
    fn load(version: &'static str) -> Spec {
        let path = root().join(format!("tests/fixtures/mcp-schema/{version}/schema.json"));
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let defs_key = if doc.get("$defs").is_some() {
            "$defs"
        } else {
            "definitions"
        };
        Spec {
            version,
            doc,
            defs_key,
        }
    }

    fn has(&self, def: &str) -> bool {
        self.doc[self.defs_key].get(def).is_some()
    }

    /// The errors of `value` against the definition `def` (the whole document is the schema, so
    /// its references resolve; its root `$ref` names the definition).
    fn errors(&self, def: &str, value: &Value) -> Vec<String> {
        self.errors_in(self.doc.clone(), def, value)
    }

    /// [`Spec::errors`] in `schema`, this version's document or a copy of it.
    fn errors_in(&self, mut schema: Value, def: &str, value: &Value) -> Vec<String> {
        assert!(self.has(def), "{}: no definition {def}", self.version);
        let obj = schema.as_object_mut().unwrap();
        obj.insert("$ref".into(), json!(format!("#/{}/{def}", self.defs_key)));
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("{}: the schema does not compile: {e}", self.version));
        validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// The definitions a response of the gateway's must satisfy: the version's response
    /// envelope, then the shape of what it carries.
    fn check(&self, v: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let mut lenient_errors = Vec::new();
        let mut against = |def: &str, value: &Value| {
            for e in self.errors(def, value) {
                errors.push(format!("{def}: {e}"));
            }
        };
        if v.get("method").is_some() {
            against("ServerNotification", v);
            against("JSONRPCNotification", v);
        } else if let Some(error) = v.get("error") {
            let envelope = if self.has("JSONRPCErrorResponse") {
                "JSONRPCErrorResponse"
            } else {
                "JSONRPCError"
            };
            if v["id"].is_null() {
                // The one documented deviation (docs/clients.md, "Valid for every version"): an
                // error for a message whose id could not be read says `"id": null`, as JSON-RPC
                // 2.0 requires; the MCP schemas have no `null` id (2025-11-25 and later leave it
                // out, earlier ones have no shape for such an error). Everything else in it is
                // checked, against the envelope with its id optional.
                let mut lenient = self.doc.clone();
                let required = &mut lenient[self.defs_key][envelope]["required"];
                if let Some(list) = required.as_array_mut() {
                    list.retain(|k| k != "id");
                }
                let mut without = v.clone();
                without.as_object_mut().unwrap().remove("id");
                for e in self.errors_in(lenient, envelope, &without) {
                    lenient_errors.push(format!("{envelope}: {e}"));
                }
            } else {
                against(envelope, v);
            }
            // 2026-07-28 names each standard error's shape.
            let specific = match error["code"].as_i64() {
                Some(-32700) => "ParseError",
                Some(-32600) => "InvalidRequestError",
                Some(-32601) => "MethodNotFoundError",
                Some(-32602) => "InvalidParamsError",
                Some(-32603) => "InternalError",
                _ => "",
            };
            if !specific.is_empty() && self.has(specific) {
                against(specific, error);
            }
        } else {
            if self.has("CallToolResultResponse") {
                against("CallToolResultResponse", v);
            } else if self.has("JSONRPCResultResponse") {
                against("JSONRPCResultResponse", v);
            } else {
                against("JSONRPCResponse", v);
            }
            against("CallToolResult", &v["result"]);
        }
        errors.extend(lenient_errors);
        errors
    }
}

/// The requests' `_meta` envelope of the stateless protocol.
fn envelope() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "schema-check", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}})
}

/// A request of `version`'s session (the stateless protocol's carries the envelope).
fn request(version: &str, id: u64, method: &str, mut params: Value) -> String {
    if version == "2026-07-28" {
        params["_meta"] = envelope();
    }
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// The lines one session sends: the handshake (not for the stateless protocol), the tool list,
/// every call of the client matrix's plan (each refusal kind), a call that times out, and every
/// malformed message the gateway answers itself. Ids from 100 up are the gateway's own answers.
fn session_lines(version: &str) -> Vec<String> {
    let mut lines = Vec::new();
    if version != "2026-07-28" {
        lines.push(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "schema-check", "version": "1"}}}).to_string());
        lines.push(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
    }
    lines.push(request(version, 2, "tools/list", json!({})));
    for (i, step) in super::plan().iter().enumerate() {
        let params = json!({"name": step["tool"], "arguments": step["arguments"]});
        lines.push(request(version, 100 + i as u64, "tools/call", params));
    }
    // The mock holds this one for 3 s; the gateway gives up after 1 (upstream_timeout). While it
    // is in flight, its id again is refused.
    lines.push(request(
        version,
        120,
        "tools/call",
        json!({"name": "GetAHOBatch", "arguments": {"batchId": "rb-0003"}}),
    ));
    lines.push(request(
        version,
        120,
        "tools/call",
        json!({"name": "GetAHOBatch", "arguments": {"batchId": "rb-0003"}}),
    ));
    // Protocol errors.
    lines.push("{not json".into());
    lines.push(r#"{"jsonrpc": "2.0", "id": 121, "id": 122, "method": "tools/list"}"#.into());
    lines.push(json!({"jsonrpc": "1.0", "id": 123, "method": "tools/list"}).to_string());
    lines.push(request(
        version,
        124,
        "tools/call",
        json!({"arguments": {}}),
    ));
    lines.push(request(
        version,
        125,
        "Tools/Call",
        json!({"name": "GetAHOBatch"}),
    ));
    lines.push(request(version, 126, "tools/list\u{200b}", json!({})));
    lines.push("[]".into());
    if version != "2025-03-26" {
        // A batch where the version has none.
        let one = request(version, 127, "tools/list", json!({}));
        lines.push(format!("[{one}]"));
    }
    lines
}

/// Runs one session through the stdio gateway and returns every line it answered with, after
/// saving a policy that hides one more tool (the gateway then says `tools/list_changed`).
fn run_session(version: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.json");
    let mut policy: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("policy.json")).unwrap()).unwrap();
    policy["hide_from_list"] = json!(true);
    std::fs::write(&policy_path, policy.to_string()).unwrap();
    let faults = dir.path().join("faults.json");
    std::fs::write(
        &faults,
        r#"{"seed": 1, "faults": [{"tool": "GetAHOBatch", "latency_ms": 3000}]}"#,
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["gateway", "--policy", policy_path.to_str().unwrap()])
        .args(["--tool-timeout", "GetAHOBatch=1", "--"])
        .args([&bin(), "mock-eks", "--allow-write", "--faults"])
        .arg(&faults)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("the gateway wrote a line that is not JSON ({e}): {line}")
            });
            // A batch's answers are checked one by one.
            let items = match v {
                Value::Array(items) => items,
                v => vec![v],
            };
            if items.into_iter().any(|v| tx.send(v).is_err()) {
                break;
            }
        }
    });
    let mut got = Vec::new();
    // Wait for the answer of `id` (bounded), keeping everything that arrives.
    let wait_for = |got: &mut Vec<Value>, pred: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !got.iter().any(pred) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) => got.push(v),
                Err(_) => panic!("{version}: no expected answer within 30 s; got {got:?}"),
            }
        }
    };
    for line in session_lines(version) {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        // The handshake and the listing first, so that the calls are decided on the listing.
        if line.contains("\"initialize\"") {
            wait_for(&mut got, &|v| v["id"] == 1);
        }
        if line.contains("tools/list") && line.contains("\"id\":2") {
            wait_for(&mut got, &|v| v["id"] == 2);
        }
    }
    wait_for(&mut got, &|v| {
        v["result"]["_meta"]["dev.tollgate/decision"]["decision"] == "upstream_timeout"
    });
    // A reload that hides one more tool: the client that listed the tools is told.
    policy["tools"]["GetAHOBatch"] = json!({"action": "deny"});
    let tmp = dir.path().join("policy.json.new");
    std::fs::write(&tmp, policy.to_string()).unwrap();
    std::fs::rename(&tmp, &policy_path).unwrap();
    wait_for(&mut got, &|v| {
        v["method"] == "notifications/tools/list_changed"
    });
    drop(stdin);
    let _ = child.wait();
    let _ = reader.join();
    got.extend(rx.try_iter());
    got
}

/// Each refusal kind, each JSON-RPC error and the reload's notification the gateway makes
/// itself, in a session of each protocol version, validates against that version's schema.
#[test]
fn every_answer_the_gateway_makes_is_valid_for_the_sessions_protocol_version() {
    let results: Vec<(&str, Vec<Value>)> = std::thread::scope(|s| {
        let handles: Vec<_> = VERSIONS
            .iter()
            .map(|v| (*v, s.spawn(move || run_session(v))))
            .collect();
        handles
            .into_iter()
            .map(|(v, h)| (v, h.join().unwrap()))
            .collect()
    });
    let mut failures = Vec::new();
    for (version, answers) in results {
        let spec = Spec::load(version);
        let mut decisions = BTreeSet::new();
        let mut codes = BTreeSet::new();
        let mut notifications = BTreeSet::new();
        let mut null_ids = BTreeSet::new();
        let mut invalid = Vec::new();
        for a in &answers {
            // The upstream's own answers (the handshake, the listing, allowed calls) are not
            // the gateway's to check.
            let own = a.get("error").is_some()
                || a.get("method").is_some()
                || a["result"]["_meta"].get("dev.tollgate/decision").is_some();
            if !own {
                continue;
            }
            if let Some(d) = a["result"]["_meta"]["dev.tollgate/decision"]["decision"].as_str() {
                decisions.insert(d.to_owned());
            }
            if let Some(c) = a["error"]["code"].as_i64() {
                codes.insert(c);
                if a["id"].is_null() {
                    null_ids.insert(
                        a["error"]["message"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            }
            if let Some(m) = a["method"].as_str() {
                notifications.insert(m.to_owned());
            }
            let errors = spec.check(a);
            if !errors.is_empty() {
                invalid.push(format!("{a}\n  {}", errors.join("\n  ")));
            }
        }
        if !invalid.is_empty() {
            failures.push(format!(
                "{version}: answers that break the schema:\n{}",
                invalid.join("\n")
            ));
        }
        let expected: BTreeSet<String> = [
            "rate_limited",
            "deny",
            "invalid_arguments",
            "approval_required",
            "unknown_tool",
            "upstream_timeout",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(decisions, expected, "{version}: refusal kinds checked");
        assert_eq!(
            codes,
            BTreeSet::from([-32700, -32602, -32601, -32600]),
            "{version}: JSON-RPC errors checked"
        );
        // `"id": null` only where no id could be read: a line that is not JSON, an empty batch.
        assert_eq!(
            null_ids
                .iter()
                .map(|m| m.split(':').next().unwrap())
                .collect::<Vec<_>>(),
            ["invalid request", "message is not JSON"],
            "{version}: {null_ids:?}"
        );
        assert_eq!(
            notifications,
            BTreeSet::from(["notifications/tools/list_changed".to_owned()]),
            "{version}"
        );
        if version == "2026-07-28" {
            for a in answers.iter().filter(|a| a.get("result").is_some()) {
                assert_eq!(a["result"]["resultType"], "complete", "{a}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One HTTP POST of `body` (with `session` if any): the answer (JSON, or the last SSE event's
/// data) and the session id the gateway gave.
async fn post(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: &Value,
) -> (Option<Value>, Option<String>) {
    let mut req = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let r = req.send().await.unwrap();
    let session = r
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    // A notification's 202 has no body and no content type.
    let sse = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = r.text().await.unwrap();
    let answer = if text.is_empty() {
        None
    } else if sse {
        let data = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .next_back();
        data.map(|d| serde_json::from_str(d.trim()).unwrap())
    } else {
        Some(serde_json::from_str(&text).unwrap())
    };
    (answer, session)
}

/// A held call's refusal (`approval_timeout`: the HTTP gateway has an approver, who never
/// answers within the policy's 1 s) in a session of each protocol version over HTTP, against
/// that version's schema.
#[test]
fn a_held_calls_refusal_over_http_is_valid_for_each_version() {
    let (_mock, mock_url) = crate::mock_eks::start_http(&["--allow-write"]);
    let target = super::gateway_to(&mock_url, &[]);
    let url = target.url.clone().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answers: Vec<(&str, Value)> = rt.block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for version in VERSIONS {
            let (http, url) = (http.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut session = None;
                if version != "2026-07-28" {
                    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "schema-check", "version": "1"}}});
                    session = post(&http, &url, None, &init).await.1;
                    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
                    post(&http, &url, session.as_deref(), &done).await;
                }
                let parse = |line: String| -> Value { serde_json::from_str(&line).unwrap() };
                let list = parse(request(version, 2, "tools/list", json!({})));
                post(&http, &url, session.as_deref(), &list).await;
                let call = parse(request(
                    version,
                    3,
                    "tools/call",
                    json!({"name": "add_inline_policy", "arguments": {"policy_name": "p", "role_name": "r", "permissions": {}}}),
                ));
                let (answer, _) = post(&http, &url, session.as_deref(), &call).await;
                (version, answer.unwrap())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (version, answer) in answers {
        assert_eq!(
            answer["result"]["_meta"]["dev.tollgate/decision"]["decision"], "approval_timeout",
            "{version}: {answer}"
        );
        let errors = Spec::load(version).check(&answer);
        assert!(
            errors.is_empty(),
            "{version}: {answer}\n{}",
            errors.join("\n")
        );
    }
}
