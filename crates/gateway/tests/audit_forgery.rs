//! The audit log cannot be forged by editing its text: every byte of a record line is either
//! covered by the record's hash or part of the line's fixed end (`,"hash":"<hex>"}` and a line
//! feed), and a line a reader could read two ways (a key twice in one object) is refused. Each
//! test pins a forgery an attacker review found to verify before the fix; logs written by the
//! v0.1.0 writer still verify.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};
use tollgate_gateway::audit::{AuditError, AuditLog, GENESIS, read_verified, verify};

/// A log of `n` denied calls, then (if `close`) the closing record.
fn deny_log(dir: &Path, n: u64, close: bool) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let mut log = AuditLog::open(&path, false).unwrap();
    for i in 0..n {
        log.append(
            i,
            "decision",
            json!({"tool": "DeleteCluster", "grant": "ci-bot", "decision": {"decision": "deny"}}),
        )
        .unwrap();
    }
    if close {
        log.append(n, "close", json!({})).unwrap();
    }
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rewrite(path: &Path, lines: &[String], end: &str) {
    let text: String = lines.iter().map(|l| format!("{l}{end}")).collect();
    std::fs::write(path, text).unwrap();
}

/// A chain whose every hash is right, of the prefixes `prefix(seq, prev)` gives: what an
/// attacker who can recompute hashes writes.
fn forged_chain(path: &Path, n: u64, prefix: impl Fn(u64, &str) -> String) {
    let mut prev = GENESIS.to_owned();
    let mut text = String::new();
    for seq in 0..n {
        let p = prefix(seq, &prev);
        let hash = hex::encode(Sha256::digest(p.as_bytes()));
        text.push_str(&format!("{p},\"hash\":\"{hash}\"}}\n"));
        prev = hash;
    }
    std::fs::write(path, text).unwrap();
}

/// The first problem's line and message; fails when there is none.
fn broken_at(path: &Path, head: Option<(u64, &str)>) -> (usize, String) {
    let report = verify(path, head).unwrap();
    let Some(p) = report.problems.first() else {
        panic!("the log verifies: {report:?}")
    };
    (p.line, p.message.clone())
}

/// Logs the v0.1.0 writer wrote (the demo's, and one with odd strings, floats and every
/// escape serde_json writes) verify, end closed, and are continued by the new writer.
#[test]
fn logs_written_by_the_v0_1_0_writer_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, records) in [
        ("audit-demo-v0.1.0.jsonl", 35),
        ("audit-odd-v0.1.0.jsonl", 5),
    ] {
        let path = dir.path().join(name);
        std::fs::copy(fixtures.join(name), &path).unwrap();
        let report = verify(&path, None).unwrap();
        assert!(report.problems.is_empty(), "{name}: {report:?}");
        assert_eq!((report.records, report.closed), (records, true), "{name}");
        let mut log = AuditLog::open(&path, false).unwrap();
        log.append(1, "open", json!({"policy": "p.json"})).unwrap();
        drop(log);
        let report = verify(&path, None).unwrap();
        assert!(report.problems.is_empty(), "{name}: {report:?}");
        assert_eq!(report.records, records + 1);
    }
}

/// Appending `,"decision":{"decision":"allow"}` after a deny record's hash: the hash does not
/// cover it and a last-key-wins parser would read `allow`. `verify` (with or without the
/// expected head) names the line, the reader returns no record from it on, and the gateway
/// refuses to reopen the log.
#[test]
fn a_field_appended_after_the_hash_is_refused() {
    for at in [0usize, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = deny_log(dir.path(), 3, true);
        let good = verify(&path, None).unwrap();
        let head = (good.records - 1, good.last_hash.clone());
        let mut ls = lines(&path);
        ls[at].pop();
        ls[at].push_str(",\"decision\":{\"decision\":\"allow\"}}");
        rewrite(&path, &ls, "\n");
        let (line, message) = broken_at(&path, None);
        assert_eq!(line, at + 1);
        assert!(message.contains("after its `hash`"), "{message}");
        assert_eq!(broken_at(&path, Some((head.0, &head.1))).0, at + 1);
        let read = read_verified(&path).unwrap();
        assert_eq!(read.records.len(), at, "no record from the forged line on");
        assert!(
            read.records
                .iter()
                .all(|r| r["decision"]["decision"] == "deny")
        );
        match AuditLog::open(&path, false) {
            Err(AuditError::Damaged { line, .. }) => assert_eq!(line, at + 1),
            other => panic!("a forged log is reopened: {other:?}"),
        }
    }
}

/// Appending `,"kind":"close"` to the last record does not fake a clean shutdown.
#[test]
fn a_close_appended_after_the_hash_does_not_fake_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = deny_log(dir.path(), 3, false);
    let mut ls = lines(&path);
    let last = ls.len() - 1;
    ls[last].pop();
    ls[last].push_str(",\"kind\":\"close\"}");
    rewrite(&path, &ls, "\n");
    let report = verify(&path, None).unwrap();
    assert!(!report.closed);
    assert_eq!(report.problems[0].line, 3);
}

/// Rewriting line ends as CRLF, or adding a trailing space, changes bytes the hash does not
/// cover: refused at the first line.
#[test]
fn crlf_and_trailing_space_rewrites_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = deny_log(dir.path(), 3, true);
    let ls = lines(&path);
    rewrite(&path, &ls, "\r\n");
    let (line, message) = broken_at(&path, None);
    assert_eq!(line, 1);
    assert!(message.contains("carriage return"), "{message}");
    rewrite(&path, &ls, " \n");
    assert_eq!(broken_at(&path, None).0, 1);
    rewrite(&path, &ls, "\n");
    assert!(verify(&path, None).unwrap().problems.is_empty());
    // A blank line at the end is not a record either.
    rewrite(&path, &[ls.clone(), vec![String::new()]].concat(), "\n");
    assert_eq!(broken_at(&path, None).0, 5);
}

/// A key twice in one object is refused, at the top or nested, even when the hash covers it
/// (an attacker who rewrites the last line recomputes its hash): two readers could see two
/// different records.
#[test]
fn a_duplicate_key_is_refused_even_under_a_valid_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    for dup in [
        r#""decision":{"decision":"deny","decision":"allow"}"#,
        r#""tool":"DeleteCluster","tool":"ListClusters""#,
        r#""kind":"close""#,
    ] {
        forged_chain(&path, 2, |seq, prev| {
            let extra = if seq == 1 {
                format!(",{dup}")
            } else {
                String::new()
            };
            format!(r#"{{"kind":"decision","prev":"{prev}","seq":{seq},"t_ms":0{extra}"#)
        });
        let (line, message) = broken_at(&path, None);
        assert_eq!(line, 2, "{dup}");
        assert!(message.contains("appears twice"), "{dup}: {message}");
    }
}

/// A `hash` key inside the covered bytes is refused (the line's own `hash` is the only one).
#[test]
fn a_hash_key_inside_the_covered_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    forged_chain(&path, 1, |seq, prev| {
        format!(r#"{{"kind":"close","prev":"{prev}","seq":{seq},"t_ms":0,"hash":"{GENESIS}""#)
    });
    let (line, message) = broken_at(&path, None);
    assert_eq!(line, 1);
    assert!(message.contains("`hash` appears twice"), "{message}");
}

/// A record's PREFIX from its `seq` and `prev`.
type Prefix = fn(u64, &str) -> String;

/// Every record has `seq`, `prev`, `t_ms` and `kind` of the right types, even under a valid
/// hash.
#[test]
fn a_record_without_its_head_of_the_right_types_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let cases: [(&str, Prefix); 5] = [
        ("t_ms", |seq, prev| {
            format!(r#"{{"kind":"decision","prev":"{prev}","seq":{seq}"#)
        }),
        ("t_ms", |seq, prev| {
            format!(r#"{{"kind":"decision","prev":"{prev}","seq":{seq},"t_ms":"5""#)
        }),
        ("kind", |seq, prev| {
            format!(r#"{{"prev":"{prev}","seq":{seq},"t_ms":5"#)
        }),
        ("kind", |seq, prev| {
            format!(r#"{{"kind":7,"prev":"{prev}","seq":{seq},"t_ms":5"#)
        }),
        ("seq", |seq, prev| {
            format!(r#"{{"kind":"close","prev":"{prev}","seq":{seq}.0,"t_ms":5"#)
        }),
    ];
    for (field, prefix) in cases {
        forged_chain(&path, 1, prefix);
        let (line, message) = broken_at(&path, None);
        assert_eq!(line, 1);
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
}

/// An upper-case hash is not the writer's form: refused, since it is a byte the hash's value
/// does not pin.
#[test]
fn an_upper_case_hash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = deny_log(dir.path(), 1, false);
    let mut ls = lines(&path);
    let cut = ls[0].len() - 66;
    let upper = ls[0][cut..].to_ascii_uppercase();
    ls[0].replace_range(cut.., &upper);
    rewrite(&path, &ls, "\n");
    assert_eq!(broken_at(&path, None).0, 1);
}
