//! Real parts behind one gateway (issue 20, "Real parts in the tests"): `tollgate mock-eks` over
//! stdio (`eks`), a second mock-eks over https trusted through the config's `ca_file` (`omics`),
//! npm `@modelcontextprotocol/server-everything` over Streamable HTTP (`everything`) and the real
//! `awslabs.eks-mcp-server` over stdio (`aws`), all four behind one stdio gateway run with
//! `--config`; the official Python SDK and TypeScript SDK as clients. Each mock's `--journal`
//! proves where each call went and that refused calls went nowhere; server-everything's echo text
//! proves it answered; the real EKS server is only listed and refused (its calls would reach AWS).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

use crate::mock_eks::{Guard, conformance_bin, python, start_http};
use crate::util::{root, wait_for_file};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

const EKS_TOOLS: &str = "list_k8s_resources,get_pod_logs";
const OMICS_TOOLS: &str = "CancelAHORunBatch,get_k8s_events";
const LIST_ARGS: &str =
    r#"{"cluster_name": "prod-eks", "kind": "Deployment", "api_version": "apps/v1"}"#;
const LOGS_ARGS: &str = r#"{"cluster_name": "prod-eks", "namespace": "shop", "pod_name": "web-0"}"#;
const CANCEL_ARGS: &str = r#"{"batchId": "rb-0001"}"#;
const EVENTS_ARGS: &str =
    r#"{"cluster_name": "prod-eks", "kind": "Deployment", "name": "web", "namespace": "shop"}"#;
const ECHO_ARGS: &str = r#"{"message": "through the gateway"}"#;

/// Every call allowed but the pod logs of `eks`, every tool of the real EKS server (its calls
/// would reach AWS) and every server-everything tool but `echo`.
const POLICY: &str = r#"{"version": "1", "default": "allow", "tools": {
  "eks__get_pod_logs": {"action": "deny", "reason": "no pod logs here"},
  "upstream:aws": {"action": "deny", "reason": "no AWS from the tests"},
  "everything__*": {"action": "deny", "reason": "only echo"},
  "everything__echo": {"action": "allow"}
}}"#;

/// The real EKS server (`$TOLLGATE_TEST_EKS_SERVER`, else the venv's).
fn eks_server() -> String {
    std::env::var("TOLLGATE_TEST_EKS_SERVER").unwrap_or_else(|_| {
        let bin = root().join(".venv/bin/awslabs.eks-mcp-server");
        assert!(bin.exists(), "TOLLGATE_TEST_EKS_SERVER is not set and .venv has no awslabs.eks-mcp-server: run `bash scripts/test-all.sh`");
        bin.to_string_lossy().into_owned()
    })
}

/// The folder whose node_modules holds the TypeScript SDK (.ci/node), from the conformance
/// binary's place (`.ci/node/node_modules/.bin/conformance`).
fn node_dir() -> PathBuf {
    let conformance = PathBuf::from(conformance_bin());
    conformance
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .to_owned()
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 it signed (`server.pem`, `server.key`), in
/// `dir`.
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Tollgate multi test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// The stack: the https mock and server-everything running, the policy and the config of the
/// four upstreams written in `dir`. The `eks` mock runs through `sh`, writes its pid to
/// `eks.pid` and, while `eks.down` exists, exits at once (a restart that fails).
struct Stack {
    _omics: Guard,
    _everything: Guard,
    config: PathBuf,
}

fn stack(dir: &Path) -> Stack {
    let (ca, cert, key) = pki(dir);
    let omics_journal = dir.join("omics.journal");
    let (omics, omics_url) = start_http(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tools",
        OMICS_TOOLS,
        "--allow-write",
        "--allow-sensitive-data-access",
        "--journal",
        omics_journal.to_str().unwrap(),
    ]);
    assert!(omics_url.starts_with("https://"), "{omics_url}");
    let (everything, everything_url) = crate::gateway::start_everything_http();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();
    let eks_script = format!(
        "if [ -e '{down}' ]; then exit 1; fi; echo $$ > '{pid}'; exec '{bin}' mock-eks --tools {EKS_TOOLS} --allow-sensitive-data-access --journal '{journal}'",
        down = dir.join("eks.down").display(),
        pid = dir.join("eks.pid").display(),
        bin = bin(),
        journal = dir.join("eks.journal").display(),
    );
    // The real EKS server gets fake credentials and a region, and no instance metadata.
    let aws = json!([
        "env",
        "AWS_REGION=us-east-1",
        "AWS_ACCESS_KEY_ID=x",
        "AWS_SECRET_ACCESS_KEY=y",
        "AWS_EC2_METADATA_DISABLED=true",
        eks_server()
    ]);
    let config = format!(
        "policy = \"policy.json\"\naudit = \"audit.jsonl\"\n\n[[upstream]]\nname = \"eks\"\ncommand = {eks}\n\n[[upstream]]\nname = \"omics\"\nurl = \"{omics_url}\"\nca_file = \"{ca}\"\n\n[[upstream]]\nname = \"everything\"\nurl = \"{everything_url}\"\n\n[[upstream]]\nname = \"aws\"\ncommand = {aws}\n",
        eks = json!(["sh", "-c", eks_script]),
        ca = ca.file_name().unwrap().to_str().unwrap(),
    );
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, config).unwrap();
    Stack {
        _omics: omics,
        _everything: everything,
        config: path,
    }
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

/// The calls both clients make, in order.
const CALLS: [(&str, &str); 6] = [
    ("eks__list_k8s_resources", LIST_ARGS),
    ("omics__CancelAHORunBatch", CANCEL_ARGS),
    ("everything__echo", ECHO_ARGS),
    ("eks__get_pod_logs", LOGS_ARGS),
    ("aws__list_k8s_resources", LIST_ARGS),
    ("everything__get-env", "{}"),
];

/// What a client saw: the four namespaces listed (the real EKS server's and server-everything's
/// tools among them), each allowed call answered by its own upstream, each refused one by the
/// gateway. `cancel` is what the https mock answers the batch cancellation: it succeeds for the
/// first client, and the second one (same mock, same world) is told the batch is cancelled.
fn check_seen(out: &Value, cancel: &str) {
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for name in [
        "eks__list_k8s_resources",
        "eks__get_pod_logs",
        "omics__CancelAHORunBatch",
        "omics__get_k8s_events",
        "everything__echo",
        "aws__list_k8s_resources",
        "aws__manage_eks_stacks",
    ] {
        assert!(tools.contains(&name), "{name} is not listed: {tools:?}");
    }
    assert!(
        tools
            .iter()
            .all(|t| ["eks__", "omics__", "everything__", "aws__"]
                .iter()
                .any(|p| t.starts_with(p))),
        "every exposed name carries its upstream's prefix: {tools:?}"
    );
    let calls = out["calls"].as_array().unwrap();
    let text = |k: usize| calls[k]["text"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        text(0),
        "Successfully listed 2 Deployment resources in all namespaces",
        "{calls:?}"
    );
    assert!(text(1).contains(cancel), "{calls:?}");
    assert!(text(2).contains("through the gateway"), "{calls:?}");
    assert_eq!(calls[2]["is_error"], false, "{calls:?}");
    for (k, why) in [
        (3, "no pod logs here"),
        (4, "no AWS from the tests"),
        (5, "only echo"),
    ] {
        assert_eq!(calls[k]["is_error"], true, "{calls:?}");
        assert!(text(k).contains(why), "{calls:?}");
    }
}

/// The audit log's decisions: (exposed tool, upstream, decision).
fn decisions(dir: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "decision")
        .map(|r| {
            (
                r["tool"].as_str().unwrap().to_owned(),
                r["upstream"].as_str().unwrap_or("").to_owned(),
                r["decision"]["decision"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn expected_decisions(times: usize) -> Vec<(String, String, String)> {
    let one = [
        ("eks__list_k8s_resources", "eks", "allow"),
        ("omics__CancelAHORunBatch", "omics", "allow"),
        ("everything__echo", "everything", "allow"),
        ("eks__get_pod_logs", "eks", "deny"),
        ("aws__list_k8s_resources", "aws", "deny"),
        ("everything__get-env", "everything", "deny"),
    ];
    (0..times)
        .flat_map(|_| one.iter())
        .map(|(t, u, d)| ((*t).to_owned(), (*u).to_owned(), (*d).to_owned()))
        .collect()
}

/// The Python SDK and the TypeScript SDK, each through its own stdio gateway in front of the same
/// four upstreams: every namespace listed, each call routed to the upstream that listed it (the
/// mocks' journals hold exactly the allowed calls, under their own names), every refused call
/// answered by the gateway and audited with its upstream, and none of them reaching an upstream.
#[test]
fn python_and_typescript_sdks_reach_four_real_upstreams_through_one_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = stack(d);
    let gateway = ["gateway", "--config", stack.config.to_str().unwrap()];

    let mut py = Command::new(python());
    py.arg(root().join("tests/python/multi_client.py"))
        .args(["--mode", "legacy"]);
    for (name, args) in CALLS {
        py.args(["--call", name, args]);
    }
    py.arg("--stdio").arg(bin()).args(gateway);
    let out = py.output().unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_seen(
        &serde_json::from_slice(&out.stdout).unwrap(),
        "CancelRunBatch succeeded",
    );

    let mut ts = Command::new("node");
    ts.arg(root().join("tests/clients/multi_client.cjs"))
        .env("NODE_DIR", node_dir());
    for (name, args) in CALLS {
        ts.args(["--call", name, args]);
    }
    ts.arg("--stdio").arg(bin()).args(gateway);
    let out = ts.output().unwrap();
    assert!(
        out.status.success(),
        "TypeScript client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_seen(
        &serde_json::from_slice(&out.stdout).unwrap(),
        "Run batch rb-0001 is CANCELLED",
    );

    // Only the allowed calls reached the mocks, each under its own name, once per client.
    assert_eq!(
        journal_tools(&d.join("eks.journal")),
        ["list_k8s_resources", "list_k8s_resources"]
    );
    assert_eq!(
        journal_tools(&d.join("omics.journal")),
        ["CancelAHORunBatch", "CancelAHORunBatch"]
    );
    assert_eq!(decisions(d), expected_decisions(2));
    crate::util::assert_audit_verifies(&d.join("audit.jsonl"));
}

/// The stdio `eks` mock killed mid-session (and kept down for a while): its tools leave the
/// list, the https mock, server-everything and the real EKS server go on serving (or being
/// refused by the policy as before), a call to a gone tool reaches nobody; once `eks` starts
/// again its tools come back and are callable.
#[test]
fn a_killed_upstream_leaves_three_real_ones_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = stack(d);
    let file = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let mut c = Command::new(python());
    c.arg(root().join("tests/python/multi_client.py"))
        .args(["--mode", "legacy"])
        .args(["--call", "eks__list_k8s_resources", LIST_ARGS])
        .args(["--ready", &file("ready"), "--killed", &file("killed")])
        .args([
            "--checked",
            &file("checked"),
            "--back",
            "eks__list_k8s_resources",
        ])
        .args(["--then", "omics__get_k8s_events", EVENTS_ARGS])
        .args(["--then", "everything__echo", ECHO_ARGS])
        .args(["--then", "aws__list_k8s_resources", LIST_ARGS])
        .args(["--then", "eks__list_k8s_resources", LIST_ARGS])
        .args(["--finally", "eks__list_k8s_resources", LIST_ARGS])
        .arg("--stdio")
        .arg(bin())
        .args(["gateway", "--config", stack.config.to_str().unwrap()]);
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |name: &str| wait_for_file(&d.join(name));
    wait_for("ready");
    std::fs::write(d.join("eks.down"), "").unwrap();
    let pid = std::fs::read_to_string(d.join("eks.pid")).unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(d.join("killed"), "").unwrap();
    wait_for("checked");
    std::fs::remove_file(d.join("eks.down")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["gone"], true, "{out}");
    let after: Vec<&str> = out["tools_after_kill"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(!after.iter().any(|t| t.starts_with("eks__")), "{after:?}");
    for name in [
        "omics__get_k8s_events",
        "everything__echo",
        "aws__list_k8s_resources",
    ] {
        assert!(after.contains(&name), "{name} left with eks: {after:?}");
    }
    let then = out["then"].as_array().unwrap();
    assert_eq!(
        then[0]["is_error"], false,
        "the https mock still answers: {then:?}"
    );
    assert!(
        then[1]["text"]
            .as_str()
            .unwrap()
            .contains("through the gateway"),
        "server-everything still answers: {then:?}"
    );
    assert!(
        then[2]["text"]
            .as_str()
            .unwrap()
            .contains("no AWS from the tests"),
        "{then:?}"
    );
    assert!(
        then[3]["text"].as_str().unwrap().contains("does not offer"),
        "a gone tool is refused as unknown: {then:?}"
    );
    assert_eq!(
        out["back"], true,
        "the restarted mock's tools come back: {out}"
    );
    assert_eq!(out["finally"][0]["is_error"], false, "{out}");
    // The first eks process ran the first call, the restarted one the last; the refused and
    // the gone calls reached nobody.
    assert_eq!(
        journal_tools(&d.join("eks.journal")),
        ["list_k8s_resources", "list_k8s_resources"]
    );
    assert_eq!(journal_tools(&d.join("omics.journal")), ["get_k8s_events"]);
}
