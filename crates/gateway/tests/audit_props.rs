//! Properties of the audit log: any single tampering of a valid log is detected by `verify`;
//! deferred records keep the chain valid and in order on disk.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use proptest::prelude::*;
use serde_json::json;
use tollgate_gateway::audit::{AuditLog, verify};

fn valid_log(dir: &std::path::Path, n: u64) -> Vec<u8> {
    let path = dir.join("a.jsonl");
    let mut log = AuditLog::open(&path, false).unwrap();
    for i in 0..n {
        log.append(i, "decision", json!({"tool": "CancelAHORunBatch", "decision": if i % 3 == 0 { "allow" } else { "rate_limited" }, "i": i})).unwrap();
    }
    std::fs::read(&path).unwrap()
}

#[derive(Debug, Clone)]
enum Tamper {
    /// Replace one byte with a different one.
    Edit { at: usize, byte: u8 },
    /// Delete one whole line (not the last: a clean cut at the end is a shorter valid chain,
    /// caught only against an expected head).
    DeleteLine(usize),
    /// Swap two different lines.
    Swap(usize, usize),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Tamper::Edit { at, byte }),
        any::<usize>().prop_map(Tamper::DeleteLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Tamper::Swap(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every single-byte edit, deletion of an inner line, or swap of two lines of a valid log
    /// makes `verify` report a problem.
    #[test]
    fn any_single_tampering_is_detected(n in 2u64..12, t in tamper()) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = valid_log(dir.path(), n);
        let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
        let changed: Vec<u8> = match t {
            Tamper::Edit { at, byte } => {
                let at = at % bytes.len();
                let mut b = bytes.clone();
                prop_assume!(b[at] != byte);
                b[at] = byte;
                b
            }
            Tamper::DeleteLine(i) => {
                let i = i % (lines.len() - 1);
                lines.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, l)| l.iter().copied()).collect()
            }
            Tamper::Swap(a, b) => {
                let (a, b) = (a % lines.len(), b % lines.len());
                prop_assume!(a != b);
                let mut ls = lines.clone();
                ls.swap(a, b);
                ls.concat()
            }
        };
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, &changed).unwrap();
        let report = verify(&path, None).unwrap();
        prop_assert!(!report.problems.is_empty(), "undetected");
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
