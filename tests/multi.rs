//! Several upstreams behind one gateway (`--config`, docs/gateway.md "Several upstreams"): two
//! `tollgate mock-eks` upstreams with different tool sets, behind a stdio gateway and an HTTP
//! gateway, driven by the official Python SDK. Each mock's `--journal` proves where each call
//! went, and that a refused call went nowhere.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::mock_eks::python;
use crate::util::{root, tollgate, wait_for_file};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

const EKS_TOOLS: &str = "list_k8s_resources,get_pod_logs";
const OMICS_TOOLS: &str = "CancelAHORunBatch,get_k8s_events";

/// A policy in exposed names: every call allowed but `eks__get_pod_logs`.
const POLICY: &str = r#"{"version": "1", "default": "allow", "tools": {"eks__get_pod_logs": {"action": "deny", "reason": "no pod logs here"}}}"#;

/// Writes the policy and a config of two mock upstreams (`eks`, `omics`) into `dir`. The omics
/// upstream runs through `sh`, writes its pid to `omics.pid` and, while `omics.down` exists,
/// exits at once (a restart that fails).
fn setup(dir: &Path, listen: bool) -> std::path::PathBuf {
    setup_with(dir, listen, POLICY)
}

fn setup_with(dir: &Path, listen: bool, policy: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("policy.json"), policy).unwrap();
    let eks_journal = dir.join("eks.journal");
    let omics_journal = dir.join("omics.journal");
    let script = format!(
        "if [ -e '{down}' ]; then exit 1; fi; echo $$ > '{pid}'; exec '{bin}' mock-eks --allow-write --allow-sensitive-data-access --tools {OMICS_TOOLS} --journal '{journal}'",
        down = dir.join("omics.down").display(),
        pid = dir.join("omics.pid").display(),
        bin = bin(),
        journal = omics_journal.display(),
    );
    let listen = if listen {
        "[listen]\naddr = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let config = format!(
        "policy = \"policy.json\"\naudit = \"audit.jsonl\"\n{listen}\n[[upstream]]\nname = \"eks\"\ncommand = {eks}\n\n[[upstream]]\nname = \"omics\"\ncommand = {omics}\n",
        eks = json!([
            bin(),
            "mock-eks",
            "--tools",
            EKS_TOOLS,
            "--allow-sensitive-data-access",
            "--journal",
            eks_journal.display().to_string()
        ]),
        omics = json!(["sh", "-c", script]),
    );
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn journal_tools(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["method"] == "tools/call")
        .map(|e| e["tool"].as_str().unwrap().to_owned())
        .collect()
}

const LIST_ARGS: &str =
    r#"{"cluster_name": "prod-eks", "kind": "Deployment", "api_version": "apps/v1"}"#;
const LOGS_ARGS: &str = r#"{"cluster_name": "prod-eks", "namespace": "shop", "pod_name": "web-0"}"#;
const CANCEL_ARGS: &str = r#"{"batchId": "rb-0001"}"#;
const EVENTS_ARGS: &str =
    r#"{"cluster_name": "prod-eks", "kind": "Deployment", "name": "web", "namespace": "shop"}"#;

fn client(mode: &str, target: &[String], extra: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(root().join("tests/python/multi_client.py"))
        .args(["--mode", mode])
        .args([
            "--call",
            "omics__CancelAHORunBatch",
            CANCEL_ARGS,
            "--call",
            "eks__list_k8s_resources",
            LIST_ARGS,
            "--call",
            "eks__get_pod_logs",
            LOGS_ARGS,
        ])
        .args(extra)
        .args(target);
    c
}

/// The client's `--stdio` target: a stdio gateway run with `config`.
fn stdio_target(config: &Path) -> Vec<String> {
    [
        "--stdio",
        bin(),
        "gateway",
        "--config",
        config.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn run(mut c: Command) -> Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What the client saw: both namespaces listed, each call answered by its own upstream, the
/// refused call answered by the gateway; and what the journals hold.
fn check_routed(out: &Value, dir: &Path) {
    let mut tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tools.sort_unstable();
    assert_eq!(
        tools,
        [
            "eks__get_pod_logs",
            "eks__list_k8s_resources",
            "omics__CancelAHORunBatch",
            "omics__get_k8s_events"
        ]
    );
    let calls = out["calls"].as_array().unwrap();
    assert_eq!(calls[0]["is_error"], false, "{calls:?}");
    assert_eq!(calls[0]["text"], "CancelRunBatch succeeded");
    assert_eq!(calls[1]["is_error"], false, "{calls:?}");
    assert_eq!(
        calls[1]["text"],
        "Successfully listed 2 Deployment resources in all namespaces"
    );
    assert_eq!(calls[2]["is_error"], true, "{calls:?}");
    assert!(
        calls[2]["text"]
            .as_str()
            .unwrap()
            .contains("no pod logs here"),
        "{calls:?}"
    );
    // Each upstream received its own names, and only its own calls; the refused call none.
    assert_eq!(
        journal_tools(&dir.join("eks.journal")),
        ["list_k8s_resources"]
    );
    assert_eq!(
        journal_tools(&dir.join("omics.journal")),
        ["CancelAHORunBatch"]
    );
    // The audit log names the exposed tool and the upstream of each decision.
    let decisions: Vec<(String, String)> = std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "decision")
        .map(|r| {
            (
                r["tool"].as_str().unwrap().to_owned(),
                r["upstream"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("omics__CancelAHORunBatch".to_owned(), "omics".to_owned()),
            ("eks__list_k8s_resources".to_owned(), "eks".to_owned()),
            ("eks__get_pod_logs".to_owned(), "eks".to_owned()),
        ]
    );
}

/// Over stdio, with the Python SDK's legacy handshake: both namespaces listed, each call
/// routed to the upstream that listed it (under its own name), the refused call to none.
#[test]
fn stdio_gateway_routes_each_call_to_its_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), false);
    let target = stdio_target(&config);
    let out = run(client("legacy", &target, &[]));
    check_routed(&out, dir.path());
}

/// Over HTTP, with the Python SDK's default (stateless) mode: the same routing, and metrics
/// that name the upstream of each decision and latency.
#[test]
fn http_gateway_routes_each_call_to_its_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), true);
    let (_gateway, url) =
        crate::mock_eks::start_listening(&["gateway", "--config", config.to_str().unwrap()]);
    let out = run(client("auto", &["--url".to_owned(), url.clone()], &[]));
    check_routed(&out, dir.path());
    // The metrics name each decision's and each latency's upstream.
    let metrics = crate::approvals::rt().block_on(async {
        reqwest::get(url.replace("/mcp", "/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    for series in [
        r#"tollgate_decisions_total{tool="omics__CancelAHORunBatch",decision="allow",rule="default",upstream="omics"} 1"#,
        r#"tollgate_upstream_latency_seconds_count{tool="eks__list_k8s_resources",upstream="eks"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} not in {metrics}");
    }
}

/// An upstream killed mid-session takes only its own tools away: the other's stay callable,
/// a call to a gone tool is refused and reaches nobody, and once the upstream starts again
/// its tools come back and are callable.
#[test]
fn a_killed_upstream_leaves_the_others_callable_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = setup(d, false);
    let target = stdio_target(&config);
    let file = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let mut c = client(
        "legacy",
        &target,
        &[
            "--ready",
            &file("ready"),
            "--killed",
            &file("killed"),
            "--checked",
            &file("checked"),
            "--back",
            "omics__get_k8s_events",
            "--then",
            "eks__list_k8s_resources",
            LIST_ARGS,
            "--then",
            "omics__get_k8s_events",
            EVENTS_ARGS,
            "--finally",
            "omics__get_k8s_events",
            EVENTS_ARGS,
        ],
    );
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |name: &str| wait_for_file(&d.join(name));
    wait_for("ready");
    // Restarts fail while `omics.down` exists.
    std::fs::write(d.join("omics.down"), "").unwrap();
    let pid = std::fs::read_to_string(d.join("omics.pid")).unwrap();
    let killed = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::fs::write(d.join("killed"), "").unwrap();
    wait_for("checked");
    std::fs::remove_file(d.join("omics.down")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["gone"], true, "{out}");
    let mut after: Vec<&str> = out["tools_after_kill"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    after.sort_unstable();
    assert_eq!(after, ["eks__get_pod_logs", "eks__list_k8s_resources"]);
    let then = out["then"].as_array().unwrap();
    assert_eq!(
        then[0]["is_error"], false,
        "the other upstream still answers: {then:?}"
    );
    assert_eq!(then[1]["is_error"], true, "{then:?}");
    assert!(
        then[1]["text"].as_str().unwrap().contains("does not offer"),
        "a gone tool is refused as unknown: {then:?}"
    );
    assert_eq!(
        out["back"], true,
        "the restarted upstream's tools come back: {out}"
    );
    let fin = out["finally"].as_array().unwrap();
    assert_eq!(fin[0]["is_error"], false, "{fin:?}");
    // The restarted omics process journals the call that came after it was back, and none
    // while it was gone.
    assert_eq!(
        journal_tools(&d.join("omics.journal")),
        ["CancelAHORunBatch", "get_k8s_events"]
    );
    assert_eq!(
        journal_tools(&d.join("eks.journal")),
        ["list_k8s_resources", "list_k8s_resources"]
    );
}

/// An `upstream:omics` rule refuses every tool of that upstream (a pattern still beats it);
/// the other upstream's tools fall to `default`; refused calls reach no upstream.
#[test]
fn upstream_selector_refuses_one_upstreams_tools() {
    let dir = tempfile::tempdir().unwrap();
    let policy = r#"{"version": "1", "default": "allow", "tools": {"upstream:omics": {"action": "deny", "reason": "omics is off"}, "omics__get_*": {"action": "allow"}}}"#;
    let config = setup_with(dir.path(), false, policy);
    let target = stdio_target(&config);
    let c = client(
        "legacy",
        &target,
        &["--call", "omics__get_k8s_events", EVENTS_ARGS],
    );
    let out = run(c);
    let calls = out["calls"].as_array().unwrap();
    assert_eq!(calls[0]["is_error"], true, "{calls:?}");
    assert!(
        calls[0]["text"].as_str().unwrap().contains("omics is off"),
        "{calls:?}"
    );
    assert_eq!(calls[1]["is_error"], false, "{calls:?}");
    // Answered by the eks mock itself (the pod does not exist there), not by the gateway.
    assert!(
        calls[2]["text"]
            .as_str()
            .unwrap()
            .starts_with("Failed to get logs"),
        "{calls:?}"
    );
    assert_eq!(calls[3]["is_error"], false, "{calls:?}");
    assert_eq!(
        journal_tools(&dir.path().join("omics.journal")),
        ["get_k8s_events"]
    );
    assert_eq!(
        journal_tools(&dir.path().join("eks.journal")),
        ["list_k8s_resources", "get_pod_logs"]
    );
}

/// `tollgate check --config`: a good file is ok (exit 0) and names its upstreams; an unknown
/// key is an error at its line and column with the closest key (exit 2); the upstream flags
/// with `--config` are refused (exit 2).
#[test]
fn check_config_reports_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), true);
    let out = tollgate()
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ok: 2 upstreams (eks, omics), HTTP"),
        "{stdout}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "policy = \"policy.json\"\n[[upstream]]\nname = \"eks\"\ncomand = [\"x\"]\n",
    )
    .unwrap();
    let out = tollgate()
        .args(["check", "--config", bad.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown key `comand`"), "{stderr}");
    assert!(stderr.contains("bad.toml:4:1"), "{stderr}");
    assert!(stderr.contains("did you mean `command`?"), "{stderr}");
    let out = tollgate()
        .args([
            "gateway",
            "--config",
            config.to_str().unwrap(),
            "--upstream-url",
            "http://127.0.0.1:1/mcp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tollgate explain --upstream NAME` explains a call as that upstream's: an `upstream:omics`
/// rule decides it; without `--upstream` the rule does not apply (the default does).
#[test]
fn explain_takes_the_upstream_of_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"version": "1", "default": "allow", "tools": {"upstream:omics": {"action": "deny", "reason": "omics is off"}}}"#,
    )
    .unwrap();
    let explain = |extra: &[&str]| {
        let out = tollgate()
            .args(["explain", policy.to_str().unwrap(), "omics__get_k8s_events"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let with = explain(&["--upstream", "omics"]);
    assert!(with.contains("upstream:omics"), "{with}");
    assert!(with.contains("omics is off"), "{with}");
    let without = explain(&[]);
    assert!(!without.contains("omics is off"), "{without}");
}
