//! The audit log cannot be written: the gateway fails closed. A full file system is made
//! without root by the gateway's own file size limit (`ulimit -f`, with `SIGXFSZ` ignored so a
//! write past it fails with `EFBIG` instead of killing the process): the log fills up in the
//! middle of a run and of a record, as a full disk does (`ENOSPC` itself is tested on
//! `/dev/full` in the audit module's unit tests). And a rotation whose rename fails.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::approvals::decision;
use crate::mock_eks::{Guard, start_http};
use crate::redis_store::post;
use crate::util::{assert_audit_verifies, json_lines, tollgate};

const ALLOW_ALL: &str = r#"{"version": "1", "default": "allow"}"#;

/// A gateway whose stderr (its log) is kept whole, started through `sh` so that `prelude`
/// (shell commands) runs first in the same process.
struct Logged {
    _child: Guard,
    url: String,
    log: Arc<Mutex<String>>,
}

fn start_logged(prelude: &str, args: &[&str]) -> Logged {
    let bin = tollgate().get_program().to_owned();
    let mut child: Child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(bin)
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Logged {
        _child: Guard(child),
        url,
        log,
    }
}

fn journal_count(journal: &Path) -> usize {
    json_lines(journal)
        .iter()
        .filter(|e| e["tool"] == "GetAHOBatch")
        .count()
}

/// The calls the log allowed (decision records of `allow`).
fn audited_allows(audit: &Path) -> usize {
    json_lines(audit)
        .iter()
        .filter(|r| {
            r["kind"] == "decision"
                && r["tool"] == "GetAHOBatch"
                && r["decision"]["decision"] == "allow"
        })
        .count()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The log fills up mid-run (8 KiB: a few dozen records): from the first record that does
/// not fit, every call is refused with `audit_unavailable`, nothing more reaches the upstream
/// (its journal holds exactly the calls the log allowed), the gateway goes on answering
/// (`tools/list`, `/metrics`), its log says once what happened and what to do, and the audit
/// file is still one valid chain: the record cut off by the full disk was taken back out.
#[test]
fn a_full_audit_file_system_refuses_every_call_and_forwards_nothing_unaudited() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, ALLOW_ALL).unwrap();
    let journal = dir.path().join("journal.jsonl");
    let audit = dir.path().join("audit.jsonl");
    let (_mock, mock_url) = start_http(&["--journal", journal.to_str().unwrap()]);
    // 16 blocks of 512 bytes.
    let gateway = start_logged(
        "trap '' XFSZ; ulimit -f 16",
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy.to_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
            "--upstream-url",
            &mock_url,
        ],
    );
    let http = reqwest::Client::new();
    let (forwarded, refused, listed, metrics) = rt().block_on(async {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let session = post(&http, &gateway.url, None, init).await.0.unwrap();
        let (mut forwarded, mut refused) = (0, 0);
        // Bounded: 8 KiB holds far fewer than 200 calls' records.
        for id in 1..=200u64 {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "GetAHOBatch", "arguments": {"batchId": "rb-0001"}}});
            let (_, answer) = post(&http, &gateway.url, Some(&session), call).await;
            match decision(&answer).as_str() {
                "forwarded" => {
                    assert_eq!(refused, 0, "a call forwarded after a refusal: {answer}");
                    forwarded += 1;
                }
                "audit_unavailable" => {
                    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
                    assert!(text.contains("no call is forwarded unaudited"), "{text}");
                    refused += 1;
                    if refused == 5 {
                        break;
                    }
                }
                other => panic!("{other}: {answer}"),
            }
        }
        let list = json!({"jsonrpc": "2.0", "id": 999, "method": "tools/list"});
        let (_, listed) = post(&http, &gateway.url, Some(&session), list).await;
        let metrics = http
            .get(gateway.url.replace("/mcp", "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (forwarded, refused, listed, metrics)
    });
    assert!(forwarded >= 1, "the log took some calls before it was full");
    assert_eq!(refused, 5);
    assert!(
        listed["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{listed}"
    );
    assert!(metrics.contains("tollgate_audit_failing 1"), "{metrics}");
    assert!(
        !metrics.contains("tollgate_audit_write_failures_total 0\n"),
        "{metrics}"
    );
    assert_eq!(
        journal_count(&journal),
        forwarded,
        "the upstream ran only what was forwarded"
    );
    assert_eq!(
        audited_allows(&audit),
        forwarded,
        "every forwarded call has its record"
    );
    let size = std::fs::metadata(&audit).unwrap().len();
    assert!(size <= 16 * 512, "{size}");
    assert_audit_verifies(&audit);
    std::thread::sleep(Duration::from_millis(100));
    let log = gateway.log.lock().unwrap().clone();
    // Said when writes start failing (again: a smaller record can still fit once), not on
    // every retry of the deferred records every 20 ms.
    let said = log.matches("cannot write audit log").count();
    assert!((1..=3).contains(&said), "said {said} times: {log}");
    assert!(
        log.contains("every call is refused (`audit_unavailable`)"),
        "{log}"
    );
    assert!(log.contains("free space on its file system"), "{log}");
}

/// With rotation on, a rotation that cannot rename the full file (the closed file's name is
/// taken by a folder) leaves the log in its file: every call is still audited before it is
/// forwarded, the log says why rotation stopped, and the file verifies as one chain.
#[test]
fn a_failed_rotation_keeps_every_forwarded_call_audited() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, ALLOW_ALL).unwrap();
    let journal = dir.path().join("journal.jsonl");
    let audit = dir.path().join("audit.jsonl");
    let (_mock, mock_url) = start_http(&["--journal", journal.to_str().unwrap()]);
    let gateway = start_logged(
        "true",
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy.to_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
            "--audit-rotate-size",
            "1K",
            "--upstream-url",
            &mock_url,
        ],
    );
    // The name the first file takes when closed, taken (after the start, which would read it).
    let blocker = dir.path().join("audit.000000000000.jsonl");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("keep"), "").unwrap();
    let http = reqwest::Client::new();
    let forwarded = rt().block_on(async {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let session = post(&http, &gateway.url, None, init).await.0.unwrap();
        let mut forwarded = 0;
        for id in 1..=12u64 {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "GetAHOBatch", "arguments": {"batchId": "rb-0001"}}});
            let (_, answer) = post(&http, &gateway.url, Some(&session), call).await;
            if decision(&answer) == "forwarded" {
                forwarded += 1;
            }
        }
        forwarded
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(journal_count(&journal), forwarded);
    assert_eq!(audited_allows(&audit), forwarded);
    assert!(
        json_lines(&audit).iter().any(|r| r["kind"] == "rotate"),
        "a rotation was attempted"
    );
    assert!(
        std::fs::metadata(&audit).unwrap().len() > 1024,
        "the log went on in its file"
    );
    assert_audit_verifies(&audit);
    let log = gateway.log.lock().unwrap().clone();
    assert!(log.contains("cannot rotate audit log"), "{log}");
    assert!(
        log.contains("without rotation until the gateway restarts"),
        "{log}"
    );
}
