//! Setup as a person does it (issue 18): docs/gateway.md's first two shell blocks run as
//! written, in an empty home folder, with `tollgate` and the real EKS server found on `PATH`
//! as their installers put them; the `mcpServers` entry the second block prints starts the
//! gateway as a desktop client does (no shell, full paths, its own `env`). Every example
//! policy `tollgate policy init` prints passes `tollgate check --deny-warnings`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::{bin, initialize};
use crate::util::{root, tollgate};

/// The `sh` blocks of docs/gateway.md, in order.
fn doc_shell_blocks() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("docs/gateway.md")).unwrap();
    let mut blocks = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + "```sh\n".len()..];
        let end = body.find("```").unwrap();
        blocks.push(body[..end].to_owned());
        rest = &body[end..][3..];
    }
    blocks
}

fn eks_server() -> PathBuf {
    PathBuf::from(std::env::var("TOLLGATE_TEST_EKS_SERVER").unwrap_or_else(|_| {
        let bin = root().join(".venv/bin/awslabs.eks-mcp-server");
        assert!(bin.exists(), "TOLLGATE_TEST_EKS_SERVER is not set and .venv has no awslabs.eks-mcp-server: run `bash scripts/test-all.sh`");
        bin.to_string_lossy().into_owned()
    }))
}

/// What a person's shell has: an empty home, `tollgate` and `awslabs.eks-mcp-server` on
/// `PATH`, AWS credentials of their own (fake here), and no `AWS_REGION` (the doc gives it).
fn person(cmd: &mut Command, home: &Path) {
    let tollgate_dir = Path::new(bin()).parent().unwrap();
    let server_dir = eks_server().parent().unwrap().to_owned();
    cmd.env_clear()
        .env("HOME", home)
        .env(
            "PATH",
            format!(
                "{}:{}:/usr/local/bin:/usr/bin:/bin",
                tollgate_dir.display(),
                server_dir.display()
            ),
        )
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

#[test]
fn setup_in_the_docs_runs_as_written() {
    let blocks = doc_shell_blocks();
    assert!(blocks.len() >= 2, "docs/gateway.md lost its setup blocks");
    let home = tempfile::tempdir().unwrap();

    // The first block: the policy, the folders, and three messages through the gateway.
    let mut first = Command::new("sh");
    first.args(["-e", "-c", &blocks[0]]);
    person(&mut first, home.path());
    let out = first.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the doc's first block failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{stdout}");
    assert_eq!(
        answers[0]["result"]["serverInfo"]["name"],
        "awslabs.eks-mcp-server"
    );
    assert_eq!(
        answers[1]["result"]["tools"].as_array().unwrap().len(),
        16,
        "{}",
        answers[1]
    );
    let audit = home.path().join(".local/state/tollgate/eks.jsonl");
    assert!(audit.exists(), "the audit log is where the doc says");

    // The second block prints the desktop client's entry; run it as the client would.
    let mut second = Command::new("sh");
    second.args(["-e", "-c", &blocks[1]]);
    person(&mut second, home.path());
    let out = second.output().unwrap();
    assert!(out.status.success());
    let config: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the printed entry is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let entry = &config["mcpServers"]["eks"];
    let command = entry["command"].as_str().unwrap();
    assert!(Path::new(command).is_absolute(), "{command}");
    let args: Vec<&str> = entry["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.iter().all(|a| !a.contains('~')), "{args:?}");
    let mut desktop = Command::new(command);
    desktop.args(&args);
    person(&mut desktop, home.path());
    for (k, v) in entry["env"].as_object().unwrap() {
        desktop.env(k, v.as_str().unwrap());
    }
    let mut child = desktop
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "{}", initialize(1)).unwrap();
    let init: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
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
    let list: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 16);
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Every example `tollgate policy init` prints passes `tollgate check --deny-warnings`, and
/// is the file in examples/policies/ (less its repository-relative `$schema`).
#[test]
fn every_example_policy_init_prints_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    for (name, file) in [
        ("eks", "eks-recommended.json"),
        ("minimal", "minimal.json"),
        ("seed", "seed.json"),
        ("runaway-agent", "runaway-agent.json"),
    ] {
        let out = tollgate().args(["policy", "init", name]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}");
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut shipped: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("examples/policies").join(file)).unwrap(),
        )
        .unwrap();
        shipped.as_object_mut().unwrap().remove("$schema");
        assert_eq!(printed, shipped, "{name}");
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, &out.stdout).unwrap();
        let check = tollgate()
            .args(["check", "--deny-warnings"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            check.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let out = tollgate()
        .args(["policy", "init", "no-such-example"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: eks, minimal"));
}

/// The Inspector CLI command lines docs/gateway.md gives, against the mock: its options, `--`,
/// then the gateway's command line with its own `--` (a refused call comes back as the
/// refusal); the desktop entry read with `--config`; and the form that fails, failing as the
/// doc says.
#[test]
fn inspector_cli_command_lines_in_the_docs_work() {
    let dir = tempfile::tempdir().unwrap();
    let seed = root()
        .join("examples/policies/seed.json")
        .to_string_lossy()
        .into_owned();
    let inspector = super::inspector();
    let call = [
        "--method",
        "tools/call",
        "--tool-name",
        "list_k8s_resources",
        "--tool-arg",
        "cluster_name=prod-eks",
        "--tool-arg",
        "kind=Pod",
        "--tool-arg",
        "api_version=v1",
    ];
    let gateway = [bin(), "gateway", "--policy", &seed, "--", bin(), "mock-eks"];
    let documented = Command::new(&inspector)
        .arg("--cli")
        .args(call)
        .arg("--")
        .args(gateway)
        .output()
        .unwrap();
    // The Inspector exits 1 for a tool result with `isError`; the refusal is on stdout.
    let text = String::from_utf8_lossy(&documented.stdout);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["_meta"]["dev.tollgate/decision"]["decision"], "deny",
        "{answer}"
    );

    let config = dir.path().join("mcp.json");
    let entry = json!({"mcpServers": {"eks": {"command": bin(), "args": &gateway[1..], "env": {"AWS_REGION": "us-east-1"}}}});
    std::fs::write(&config, entry.to_string()).unwrap();
    let listed = Command::new(&inspector)
        .arg("--cli")
        .arg("--config")
        .arg(&config)
        .args(["--server", "eks", "--method", "tools/list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert!(list["tools"].as_array().unwrap().len() >= 16, "{list}");

    let natural = Command::new(&inspector)
        .arg("--cli")
        .args(gateway)
        .args(call)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&natural.stdout),
        String::from_utf8_lossy(&natural.stderr)
    );
    assert!(all.contains("unexpected argument"), "{all}");
}
