//! Properties of the audit log: any single change of a valid log fails `verify` at the first
//! line it changed (a cut at a record boundary excepted: it is a shorter valid chain that no
//! longer ends with `close` and fails `--expect-head`); deferred records keep the chain valid and
//! in order on disk.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use proptest::prelude::*;
use serde_json::json;
use tollgate_gateway::audit::{AuditLog, verify};

/// Strings a client could choose, escapes and all: the log must hold them exactly.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "CancelAHORunBatch",
            "ci-bot",
            "Delete\u{200b}Cluster",
            "a\nb\r\"c\\",
            "\u{1b}]8;;x\u{7}",
            "é日\u{2028}\u{9b}",
            "",
        ])
        .prop_map(str::to_owned),
        "[a-z]{0,8}",
    ]
}

/// A log's records: `(kind, tool, grant, deferred)`; the log ends with `close`.
fn records() -> impl Strategy<Value = Vec<(bool, String, String, bool)>> {
    prop::collection::vec(
        (any::<bool>(), odd_string(), odd_string(), any::<bool>()),
        1..8,
    )
}

/// Writes the log and returns its bytes.
fn write_log(dir: &std::path::Path, records: &[(bool, String, String, bool)]) -> Vec<u8> {
    let path = dir.join("a.jsonl");
    let mut log = AuditLog::open(&path, false).unwrap();
    for (i, (deny, tool, grant, deferred)) in records.iter().enumerate() {
        let i = i as u64;
        let decision = if *deny { "deny" } else { "allow" };
        let fields = json!({"tool": tool, "grant": grant, "decision": {"decision": decision}, "n": i, "f": 0.5});
        if *deferred {
            log.append_deferred(i, "outcome", fields).unwrap();
        } else {
            log.append(i, "decision", fields).unwrap();
        }
    }
    log.append(records.len() as u64, "close", json!({}))
        .unwrap();
    drop(log);
    std::fs::read(&path).unwrap()
}

/// One change to a log's bytes.
#[derive(Debug, Clone)]
enum Change {
    /// Replace one byte with another.
    EditByte { at: usize, byte: u8 },
    /// Insert one byte anywhere (at the end too).
    InsertByte { at: usize, byte: u8 },
    /// Delete one byte.
    DeleteByte { at: usize },
    /// Insert a snippet (a field, a carriage return, a line feed, a second hash) anywhere.
    InsertText { at: usize, text: &'static str },
    /// Add a field to a record: after `{`, before `,"hash"`, after the hash (before the final
    /// `}`), or after the final `}`.
    AddField {
        line: usize,
        place: u8,
        field: &'static str,
    },
    /// Remove one top-level field of a record (`hash` too).
    RemoveField { line: usize, key: &'static str },
    /// Move a record to another place.
    MoveRecord { from: usize, to: usize },
    /// Insert a copy of a record anywhere.
    DuplicateRecord { line: usize, to: usize },
    /// Remove a record (the last one too: that is a cut at a record boundary).
    DropRecord { line: usize },
    /// Cut the file after `at` bytes (at a record boundary too).
    Cut { at: usize },
}

const SNIPPETS: [&str; 7] = [
    ",\"decision\":{\"decision\":\"allow\"}",
    ",\"kind\":\"close\"",
    "\r",
    " ",
    "\n",
    ",\"hash\":\"0000000000000000000000000000000000000000000000000000000000000000\"",
    "{}",
];

const FIELDS: [&str; 3] = [
    "\"decision\":{\"decision\":\"allow\"}",
    "\"kind\":\"close\"",
    "\"x\":1",
];

const KEYS: [&str; 10] = [
    "kind", "prev", "seq", "t_ms", "tool", "grant", "decision", "n", "f", "hash",
];

fn change() -> impl Strategy<Value = Change> {
    let n = any::<usize>();
    prop_oneof![
        (n, any::<u8>()).prop_map(|(at, byte)| Change::EditByte { at, byte }),
        (n, any::<u8>()).prop_map(|(at, byte)| Change::InsertByte { at, byte }),
        n.prop_map(|at| Change::DeleteByte { at }),
        (n, prop::sample::select(SNIPPETS.to_vec()))
            .prop_map(|(at, text)| Change::InsertText { at, text }),
        (n, 0..4u8, prop::sample::select(FIELDS.to_vec()))
            .prop_map(|(line, place, field)| Change::AddField { line, place, field }),
        (n, prop::sample::select(KEYS.to_vec()))
            .prop_map(|(line, key)| Change::RemoveField { line, key }),
        (n, n).prop_map(|(from, to)| Change::MoveRecord { from, to }),
        (n, n).prop_map(|(line, to)| Change::DuplicateRecord { line, to }),
        n.prop_map(|line| Change::DropRecord { line }),
        n.prop_map(|at| Change::Cut { at }),
    ]
}

/// The line without its top-level member `key` (and one comma beside it), if it has one. The
/// first `"key":` of a record line is its top-level member: the log's values never hold one.
fn remove_member(line: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\":");
    let start = line.find(&pattern)?;
    let value = start + pattern.len();
    let mut stream =
        serde_json::Deserializer::from_str(&line[value..]).into_iter::<serde_json::Value>();
    stream.next()?.ok()?;
    let end = value + stream.byte_offset();
    Some(if line[..start].ends_with(',') {
        format!("{}{}", &line[..start - 1], &line[end..])
    } else if line[end..].starts_with(',') {
        format!("{}{}", &line[..start], &line[end + 1..])
    } else {
        format!("{}{}", &line[..start], &line[end..])
    })
}

/// Applies the change; `None` when it does not apply to this log.
fn apply(bytes: &[u8], change: &Change) -> Option<Vec<u8>> {
    let lines: Vec<Vec<u8>> = bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let len = bytes.len();
    let mut b = bytes.to_vec();
    let record_text = |i: usize| String::from_utf8(lines[i % lines.len()].clone()).ok();
    Some(match change {
        Change::EditByte { at, byte } => {
            b[at % len] = *byte;
            b
        }
        Change::InsertByte { at, byte } => {
            b.insert(at % (len + 1), *byte);
            b
        }
        Change::DeleteByte { at } => {
            b.remove(at % len);
            b
        }
        Change::InsertText { at, text } => {
            let at = at % (len + 1);
            b.splice(at..at, text.bytes());
            b
        }
        Change::AddField { line, place, field } => {
            let i = line % lines.len();
            let text = record_text(i)?;
            let body = text.strip_suffix('\n')?;
            let hash_at = body.rfind(",\"hash\":")?;
            let changed = match place {
                0 => format!("{{{field},{}", &body[1..]),
                1 => format!("{},{field}{}", &body[..hash_at], &body[hash_at..]),
                2 => format!("{},{field}}}", &body[..body.len() - 1]),
                _ => format!("{body},{field}"),
            };
            let mut out = lines.clone();
            out[i] = format!("{changed}\n").into_bytes();
            out.concat()
        }
        Change::RemoveField { line, key } => {
            let i = line % lines.len();
            let mut out = lines.clone();
            out[i] = remove_member(&record_text(i)?, key)?.into_bytes();
            out.concat()
        }
        Change::MoveRecord { from, to } => {
            let mut out = lines.clone();
            let moved = out.remove(from % lines.len());
            out.insert(to % lines.len(), moved);
            out.concat()
        }
        Change::DuplicateRecord { line, to } => {
            let mut out = lines.clone();
            out.insert(to % (lines.len() + 1), lines[line % lines.len()].clone());
            out.concat()
        }
        Change::DropRecord { line } => {
            let mut out = lines.clone();
            out.remove(line % lines.len());
            out.concat()
        }
        Change::Cut { at } => {
            b.truncate(at % len);
            b
        }
    })
}

/// The 1-based number of the first line where `changed` differs from `original`.
fn first_changed_line(original: &[u8], changed: &[u8]) -> usize {
    let a: Vec<&[u8]> = original.split_inclusive(|b| *b == b'\n').collect();
    let b: Vec<&[u8]> = changed.split_inclusive(|b| *b == b'\n').collect();
    a.iter().zip(&b).take_while(|(x, y)| x == y).count() + 1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any single change of a valid log ending with `close` — a byte changed, inserted or
    /// deleted, a snippet inserted, a field added or removed, a record moved, duplicated or
    /// dropped, the file cut — fails `verify`, with or without the expected head, and the
    /// problem is on the first line that differs from the original, with every record before
    /// it verified.
    ///
    /// The one exception is by design: a change that leaves a prefix of the log ending at a
    /// record boundary (a cut there, or the last record dropped) is a valid, shorter chain.
    /// Then `closed` is false (the log no longer ends with its `close` record) and
    /// `--expect-head` with the original head fails.
    #[test]
    fn any_single_change_fails_verify_at_the_first_changed_line(records in records(), change in change()) {
        let dir = tempfile::tempdir().unwrap();
        let original = write_log(dir.path(), &records);
        let good = verify(&dir.path().join("a.jsonl"), None).unwrap();
        prop_assert!(good.problems.is_empty() && good.closed);
        let head = (good.records - 1, good.last_hash.clone());
        let Some(changed) = apply(&original, &change) else {
            return Ok(());
        };
        prop_assume!(changed != original);
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, &changed).unwrap();
        let report = verify(&path, None).unwrap();
        let with_head = verify(&path, Some((head.0, &head.1))).unwrap();
        let cut_at_boundary = original.starts_with(&changed)
            && (changed.is_empty() || changed.last() == Some(&b'\n'));
        if cut_at_boundary {
            prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
            prop_assert!(!report.closed, "a shorter chain no longer ends with `close`");
            prop_assert!(!with_head.problems.is_empty(), "the expected head catches a cut");
            prop_assert!(with_head.problems[0].message.contains("cut from the end"));
        } else {
            let line = first_changed_line(&original, &changed);
            prop_assert!(!report.problems.is_empty(), "undetected: {:?}", String::from_utf8_lossy(&changed));
            prop_assert_eq!(report.problems[0].line, line, "{:?}", report.problems);
            prop_assert_eq!(report.records, line as u64 - 1);
            prop_assert_eq!(with_head.problems[0].line, line);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever mix of durable and deferred records is appended, the file is always a valid
    /// chain ending at the last durable record (a deferred one is on disk once a durable record
    /// or a flush follows it, never before), and after a flush it holds every record in `seq`
    /// order.
    #[test]
    fn deferred_records_keep_the_chain_valid_and_in_order(kinds in proptest::collection::vec(any::<bool>(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut log = AuditLog::open(&path, false).unwrap();
        let mut durable_upto = 0u64;
        for (i, deferred) in kinds.iter().enumerate() {
            let i = i as u64;
            if *deferred {
                let seq = log.append_deferred(i, "outcome", json!({"i": i})).unwrap();
                prop_assert_eq!(seq, i);
            } else {
                let seq = log.append(i, "decision", json!({"i": i})).unwrap();
                prop_assert_eq!(seq, i);
                durable_upto = i + 1;
            }
            let report = verify(&path, None).unwrap();
            prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
            prop_assert_eq!(report.records, durable_upto);
        }
        log.flush().unwrap();
        let report = verify(&path, None).unwrap();
        prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        prop_assert_eq!(report.records, kinds.len() as u64);
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            prop_assert_eq!(v["seq"].as_u64(), Some(n as u64));
        }
    }
}

/// Dropping the log writes what was deferred.
#[test]
fn dropping_the_log_writes_the_deferred_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let mut log = AuditLog::open(&path, false).unwrap();
    log.append(0, "decision", json!({})).unwrap();
    log.append_deferred(1, "outcome", json!({})).unwrap();
    assert_eq!(verify(&path, None).unwrap().records, 1);
    drop(log);
    let report = verify(&path, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.records, 2);
}
