//! Property: any single tampering of a valid audit log is detected by `verify`.

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
