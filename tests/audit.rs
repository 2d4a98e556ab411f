//! `tollgate audit` and the gateway's audit log as the operator meets them: `tail` and `query`
//! never show a record at or after a break in the chain, the table escapes what clients chose
//! (snapshots), `--format json` stays exact, and a second gateway on the same `--audit` file is
//! refused at start instead of breaking the chain.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_gateway::audit::{AuditLog, read_records, verify};

use crate::mock_eks::Guard;
use crate::util::{root, tollgate};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tollgate().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A log of three decisions (deny, deny, allow) and its close.
fn decisions_log(dir: &Path) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let mut log = AuditLog::open(&path, false).unwrap();
    for (i, d) in ["deny", "deny", "allow"].iter().enumerate() {
        log.append(
            i as u64 * 10,
            "decision",
            json!({"tool": "DeleteCluster", "grant": "ci-bot", "decision": {"decision": d, "rule": {"selector": "DeleteCluster"}}}),
        )
        .unwrap();
    }
    log.append(40, "close", json!({})).unwrap();
    path
}

/// The attack of the review: `,"decision":{"decision":"allow"}` added after the hash of the
/// first deny record. `query --decision allow` and `tail` exit 1, name the line, and show
/// nothing from the forged line on: never the forged `allow`.
#[test]
fn tail_and_query_never_show_a_record_at_or_after_a_break() {
    let dir = tempfile::tempdir().unwrap();
    let path = decisions_log(dir.path());
    let file = path.to_str().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[0].pop();
    lines[0].push_str(",\"decision\":{\"decision\":\"allow\"}}");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let (code, out, err) = run(&[
        "audit",
        "query",
        file,
        "--decision",
        "allow",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out, "", "no record is shown from the forged line on");
    assert!(
        err.contains(&format!("{file}:1: the chain is broken")),
        "{err}"
    );

    let (code, out, err) = run(&["audit", "tail", file]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out.lines().count(), 2, "the header and the break: {out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("the chain is broken at line 1"),
        "{out}"
    );

    // Forged further on: the records before the break are shown, marked.
    std::fs::write(&path, &text).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replace("\"deny\"", "\"allow\"");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (code, out, _) = run(&["audit", "query", file, "--format", "json"]);
    assert_eq!(code, Some(1));
    assert_eq!(out.lines().count(), 1, "only record 0: {out}");
}

/// A log whose clients chose hostile strings: a tool name with a line feed that forges a
/// table row, escape sequences (colour, OSC 8 hyperlink, C1 CSI), a zero-width space, a bidi
/// override, a Cyrillic look-alike, a grant with a tab. The table shows each escaped (the
/// snapshot), holds no control or format character, and has one line per record; the JSON
/// output is the records exactly.
#[test]
fn the_table_escapes_what_clients_chose_and_json_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut log = AuditLog::open(&path, false).unwrap();
    log.append(
        0,
        "open",
        json!({"policy": "/etc/tollgate/\u{1b}[2Jpolicy.json"}),
    )
    .unwrap();
    let tools = [
        "ListClusters\n     9          99  decision  ci-bot        DeleteCluster           allow",
        "\u{1b}[32mDeleteCluster\u{1b}[0m",
        "\u{1b}]8;;https://x.invalid\u{7}Delete\u{1b}]8;;\u{7}",
        "Delete\u{200b}Cluster",
        "Delete\u{202e}retsulC",
        "Cr\u{435}ateCluster",
        "\u{9b}2JWipe",
    ];
    for (i, tool) in tools.iter().enumerate() {
        log.append(
            i as u64 + 1,
            "decision",
            json!({"tool": tool, "grant": "ci\tbot", "decision": {"decision": "deny", "rule": {"selector": "Delete*"}}}),
        )
        .unwrap();
    }
    log.append(9, "outcome", json!({"latency_ms": 3, "is_error": true}))
        .unwrap();
    log.append(10, "close", json!({})).unwrap();
    drop(log);
    let file = path.to_str().unwrap();

    let (code, table, _) = run(&["audit", "tail", file, "-n", "100"]);
    assert_eq!(code, Some(0));
    assert_eq!(table.lines().count(), 1 + tools.len() + 3, "{table}");
    assert!(
        table
            .chars()
            .all(|c| c == '\n' || c == ' ' || c.is_ascii_graphic()),
        "{table:?}"
    );
    insta::with_settings!({snapshot_path => root().join("snapshots/audit"), prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("tail_hostile_strings", table);
    });

    let (code, json_out, _) = run(&["audit", "tail", file, "-n", "100", "--format", "json"]);
    assert_eq!(code, Some(0));
    let shown: Vec<Value> = json_out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown, read_records(&path).unwrap());
    assert_eq!(shown[4]["tool"], "Delete\u{200b}Cluster");
}

/// Waits for `child` to exit, at most `limit`; kills it and fails past that.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two gateways started on one `--audit` file (two desktop clients, or a relaunch while the
/// old one drains): the second exits 2 at once, naming the file and saying another gateway
/// holds it; the first runs on, and its log verifies to the end, with one `open` and its
/// `close`.
#[test]
fn a_second_gateway_on_the_same_audit_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let policy = dir.path().join("allow.json");
    std::fs::write(&policy, r#"{"version": "1", "default": "allow"}"#).unwrap();
    let gateway = |stdin: Stdio| {
        tollgate()
            .args(["gateway", "--policy", policy.to_str().unwrap(), "--audit"])
            .arg(&audit)
            .args(["--grant", "desktop", "--"])
            .arg(env!("CARGO_BIN_EXE_tollgate"))
            .arg("mock-eks")
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = Guard(gateway(Stdio::piped()));
    // The first holds the log once its `open` record is written.
    let start = Instant::now();
    while std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(start.elapsed() < Duration::from_secs(20), "no open record");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = gateway(Stdio::piped());
    let code = wait_exit(&mut second, Duration::from_secs(20));
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("`{}`", audit.display())) && err.contains("another gateway"),
        "{err}"
    );
    drop(first.0.stdin.take());
    assert_eq!(wait_exit(&mut first.0, Duration::from_secs(20)), Some(0));
    let report = verify(&audit, None).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(report.closed);
    let opens = read_records(&audit)
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "open")
        .count();
    assert_eq!(opens, 1);
}

/// End to end through a stdio gateway: an agent calls tools whose names hide a zero-width
/// space, a line feed that would forge a row, and an escape sequence. The refusal text the
/// agent reads shows each escaped while the machine-readable detail keeps the name exactly,
/// and `audit tail` shows the same escapes in one row per record.
#[test]
fn hostile_tool_names_are_escaped_in_refusals_and_in_the_audit_table() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let names = [
        "Delete\u{200b}Cluster",
        "list_k8s_resources\n     9          99  decision  ci-bot        DeleteCluster           allow",
        "\u{1b}]0;owned\u{7}\u{9b}2J",
    ];
    let mut child = tollgate()
        .args(["gateway", "--policy"])
        .arg(root().join("examples/policies/seed.json"))
        .arg("--audit")
        .arg(&audit)
        .args(["--grant", "ci-bot", "--"])
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .arg("mock-eks")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut input = vec![
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ];
    for (i, name) in names.iter().enumerate() {
        input.push(json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}));
    }
    for m in &input {
        writeln!(stdin, "{m}").unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), Some(0));
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<(String, Value)> = answers
        .iter()
        .filter(|a| a["result"]["isError"] == true)
        .map(|a| {
            (
                a["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                a["result"]["_meta"]["dev.tollgate/decision"]["tool"].clone(),
            )
        })
        .collect();
    assert_eq!(texts.len(), names.len(), "{out}");
    let expected = [
        "Delete\\u{200b}Cluster",
        "list_k8s_resources\\n\\u{20}\\u{20}",
        "\\u{1b}]0;owned\\u{7}\\u{9b}2J",
    ];
    for ((text, tool), (name, shown)) in texts.iter().zip(names.iter().zip(expected)) {
        assert!(
            text.starts_with(&format!("Tollgate refused the call to `{shown}")),
            "{text}"
        );
        assert!(!text.contains('\n') && !text.contains('\u{1b}') && !text.contains('\u{200b}'));
        assert_eq!(tool, name, "the detail keeps the name exactly");
    }
    let (code, table, _) = run(&["audit", "tail", audit.to_str().unwrap(), "-n", "100"]);
    assert_eq!(code, Some(0));
    assert!(
        table
            .chars()
            .all(|c| c == '\n' || c == ' ' || c.is_ascii_graphic()),
        "{table:?}"
    );
    let refusals: Vec<&str> = table.lines().filter(|l| l.contains("refusal")).collect();
    assert_eq!(refusals.len(), names.len(), "{table}");
    for (row, shown) in refusals.iter().zip(expected) {
        assert!(row.contains(shown), "{row}");
    }
}

/// Rotation end to end: a stdio gateway with `--audit-rotate-size 1K --audit-compress` takes
/// 60 calls; its log is several files that `tollgate audit verify` checks as one chain (given
/// in the order a shell glob lists them), `tail` reads across them, a file left out of the
/// middle is named with exit 1, and the current file alone needs `--partial`.
#[test]
fn a_rotated_log_verifies_as_one_chain_and_a_missing_file_is_named() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let policy = dir.path().join("allow.json");
    std::fs::write(&policy, r#"{"version": "1", "default": "allow"}"#).unwrap();
    let mut child = Guard(
        tollgate()
            .args(["gateway", "--policy", policy.to_str().unwrap(), "--audit"])
            .arg(&audit)
            .args(["--audit-rotate-size", "1K", "--audit-compress", "--"])
            .arg(env!("CARGO_BIN_EXE_tollgate"))
            .arg("mock-eks")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let mut lines = vec![
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ];
    for i in 1..=60 {
        lines.push(json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "list_k8s_resources", "arguments": {"cluster_name": "c", "kind": "Pod", "api_version": "v1"}}}));
    }
    for l in &lines {
        writeln!(stdin, "{l}").unwrap();
    }
    // Every call answered, then stdin closes: a clean shutdown.
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut answered = 0;
    let mut line = String::new();
    while answered < 61 {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "the gateway stopped after {answered} answers"
        );
        if serde_json::from_str::<Value>(&line)
            .unwrap()
            .get("id")
            .is_some()
        {
            answered += 1;
        }
    }
    drop(stdin);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(20)), Some(0));

    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("audit")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    assert_eq!(
        files.last(),
        Some(&audit),
        "the glob order ends with the current file"
    );
    assert!(
        files[..files.len() - 1]
            .iter()
            .all(|f| f.extension().unwrap() == "gz"),
        "{files:?}"
    );
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut args = vec!["audit", "verify"];
    args.extend(&names);
    let (code, out, err) = run(&args);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with(&format!("{} files: ok, ", names.len())),
        "{out}"
    );
    assert!(!out.contains("no closing record"), "{out}");

    let mut args = vec!["audit", "query", "--format", "json", "--decision", "allow"];
    args.extend(&names);
    let (code, out, _) = run(&args);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 60, "every decision, across the files");

    let mut args = vec!["audit", "verify"];
    args.extend(
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, n)| *n),
    );
    let (code, out, _) = run(&args);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!("{}:1: the chain is broken: ", names[2])),
        "{out}"
    );
    assert!(out.contains("missing"), "{out}");

    let (code, out, _) = run(&["audit", "verify", audit.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--partial"), "{out}");
    let (code, out, _) = run(&["audit", "verify", "--partial", audit.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("it continues"), "{out}");
}
