//! The audit log: append-only JSON lines, one per event, hash-chained.
//!
//! Each line is one JSON object whose last member is `"hash"`:
//!
//! ```text
//! {"seq":7,"prev":"<hash of line 6>","t_ms":1234,"kind":"decision",...,"hash":"<hex>"}
//! ```
//!
//! `hash` is the SHA-256 (hex) of the line's bytes up to, and not including, `,"hash":` — so the
//! hash covers `seq`, `prev` and every field. `prev` is the previous line's `hash` (64 zeros for
//! the first line). Changing a byte of a line breaks that line's hash; deleting, reordering or
//! inserting lines breaks `prev` or `seq`; a torn last line fails to parse. A log cut exactly at
//! a line boundary is a valid shorter chain: `verify` reports whether the log ends with the
//! `close` record a clean shutdown writes, and `--expect-head SEQ:HASH` checks the end against a
//! head kept elsewhere (docs/audit.md says what this does and does not prove).
//!
//! Durability: a record is written with one `write(2)` and flushed before the call it records
//! is forwarded, so a `kill -9` of the gateway loses nothing that was forwarded (the kernel
//! holds the bytes). With `fsync: true` each record is also `fdatasync`ed, which survives a power
//! loss at the cost of a disk sync per call.
//!
//! Records that nothing waits for (a call's outcome, after its answer went to the agent) may be
//! deferred ([`AuditLog::append_deferred`]): they take their place in the chain at once and are
//! written with the next durable record, in the same `write(2)`, or by [`AuditLog::flush`],
//! which the gateway calls every 20 ms and at shutdown. A `kill -9` can lose the deferred
//! records of the last few milliseconds; it never loses a decision, and what it leaves is
//! still a valid chain.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_MARKER: &str = ",\"hash\":\"";

/// An open audit log, appending.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    prev: String,
    fsync: bool,
    /// Deferred lines, in chain order, not written yet.
    pending: String,
}

/// Deferred lines are written at once past this many bytes.
const PENDING_MAX: usize = 64 << 10;

/// Why the audit log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log `{path}`: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "audit log `{path}` is damaged at line {line}: {problem}; run `tollgate audit verify {path}` and move the file aside to start a new log"
    )]
    Damaged {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("cannot write audit log `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Computes the hash of a record line (the text before `,"hash":`).
fn hash_prefix(prefix: &str) -> String {
    hex::encode(Sha256::digest(prefix.as_bytes()))
}

impl AuditLog {
    /// Opens (or creates) a log and continues its chain. A log whose last line is damaged is
    /// refused: appending to it would hide the damage.
    pub fn open(path: &Path, fsync: bool) -> Result<AuditLog, AuditError> {
        let name = path.display().to_string();
        let (seq, prev) = if path.exists() {
            let report = verify(path, None).map_err(|source| AuditError::Open {
                path: name.clone(),
                source,
            })?;
            if let Some(problem) = report.problems.first() {
                return Err(AuditError::Damaged {
                    path: name,
                    line: problem.line,
                    problem: problem.message.clone(),
                });
            }
            (report.records, report.last_hash)
        } else {
            (0, GENESIS.to_owned())
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError::Open { path: name, source })?;
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            seq,
            prev,
            fsync,
            pending: String::new(),
        })
    }

    /// Appends one record: `fields` (an object) after `seq`, `prev`, `t_ms` and `kind`. Returns
    /// the record's sequence number. The record is written and flushed (and synced, if asked)
    /// when this returns.
    pub fn append(&mut self, t_ms: u64, kind: &str, fields: Value) -> Result<u64, AuditError> {
        let (line, hash) = self.line(t_ms, kind, fields);
        let deferred = self.pending.len();
        let mut all = std::mem::take(&mut self.pending);
        all.push_str(&line);
        if let Err(e) = self.write(all.as_bytes()) {
            // Not written: the chain stays before this record (the caller refuses the call it
            // was for), and the deferred records wait for the next write.
            all.truncate(deferred);
            self.pending = all;
            return Err(e);
        }
        Ok(self.advance(hash))
    }

    /// Appends a record nothing waits for: it takes its sequence number and place in the chain
    /// now, and is written with the next [`AuditLog::append`] or [`AuditLog::flush`] (or at once,
    /// past 64 KiB of deferred records).
    pub fn append_deferred(
        &mut self,
        t_ms: u64,
        kind: &str,
        fields: Value,
    ) -> Result<u64, AuditError> {
        let (line, hash) = self.line(t_ms, kind, fields);
        self.pending.push_str(&line);
        let seq = self.advance(hash);
        if self.pending.len() > PENDING_MAX {
            self.flush()?;
        }
        Ok(seq)
    }

    /// Writes the deferred records, if any.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let all = std::mem::take(&mut self.pending);
        let written = self.write(all.as_bytes());
        if written.is_err() {
            self.pending = all;
        }
        written
    }

    /// Writes `bytes` with one `write(2)`, flushed (and synced, if asked).
    fn write(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        let error = |source| AuditError::Write {
            path: self.path.display().to_string(),
            source,
        };
        self.file.write_all(bytes).map_err(error)?;
        self.file.flush().map_err(error)?;
        if self.fsync {
            self.file.sync_data().map_err(error)?;
        }
        Ok(())
    }

    /// Takes the next record into the chain: returns its sequence number.
    fn advance(&mut self, hash: String) -> u64 {
        self.seq += 1;
        self.prev = hash;
        self.seq - 1
    }

    /// The next record's line and its hash (the chain is not advanced).
    fn line(&self, t_ms: u64, kind: &str, fields: Value) -> (String, String) {
        let seq = self.seq;
        let mut head = Map::new();
        head.insert("seq".into(), json!(seq));
        head.insert("prev".into(), json!(self.prev));
        head.insert("t_ms".into(), json!(t_ms));
        head.insert("kind".into(), json!(kind));
        let mut text = serde_json::to_string(&Value::Object(head)).unwrap_or_default();
        if let Value::Object(extra) = fields
            && !extra.is_empty()
        {
            let rest = serde_json::to_string(&Value::Object(extra)).unwrap_or_default();
            // Join the two objects: drop the first's `}` and the second's `{`.
            text.pop();
            text.push(',');
            text.push_str(&rest[1..]);
        }
        text.pop();
        let hash = hash_prefix(&text);
        let line = format!("{text}{HASH_MARKER}{hash}\"}}\n");
        (line, hash)
    }

    /// The next sequence number and the last hash (the log's head, deferred records included).
    pub fn head(&self) -> (u64, &str) {
        (self.seq, &self.prev)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("{e}");
        }
    }
}

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Well-formed records in an unbroken chain from the start.
    pub records: u64,
    pub last_hash: String,
    /// Whether the last record is a `close` (a clean shutdown).
    pub closed: bool,
    pub problems: Vec<Problem>,
}

/// Checks a log from its first line: every line parses, every hash matches its line, every
/// `prev` is the previous hash, sequence numbers count up from 0. `expect_head` (`seq`, `hash`
/// of the last record) checks the end against a head kept elsewhere. Stops at the first
/// problem: after a break, nothing later can be trusted.
pub fn verify(path: &Path, expect_head: Option<(u64, &str)>) -> std::io::Result<VerifyReport> {
    let file = File::open(path)?;
    let mut reader = BufReader::new(file);
    let mut report = VerifyReport {
        records: 0,
        last_hash: GENESIS.to_owned(),
        closed: false,
        problems: Vec::new(),
    };
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let problem = |message: String| Problem {
            line: line_no,
            message,
        };
        if buf.last() != Some(&b'\n') {
            report.problems.push(problem(
                "the last line is incomplete (a torn write, or the file was cut mid-record)".into(),
            ));
            break;
        }
        buf.pop();
        let Ok(text) = std::str::from_utf8(&buf) else {
            report
                .problems
                .push(problem("the line is not UTF-8: it was edited".into()));
            break;
        };
        let Some(cut) = text.rfind(HASH_MARKER) else {
            report.problems.push(problem(
                "the line has no `hash` field: it was edited or is not an audit record".into(),
            ));
            break;
        };
        let prefix = &text[..cut];
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                report.problems.push(problem(format!(
                    "the line is not valid JSON ({e}): it was edited"
                )));
                break;
            }
        };
        let stated = value
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if hash_prefix(prefix) != stated {
            report.problems.push(problem(format!(
                "record {} does not match its hash: its content was edited",
                value
                    .get("seq")
                    .map_or_else(|| "?".to_owned(), Value::to_string)
            )));
            break;
        }
        let seq = value.get("seq").and_then(Value::as_u64);
        if seq != Some(report.records) {
            report.problems.push(problem(format!(
                "expected record {} here, found record {}: records were deleted, inserted or reordered",
                report.records,
                seq.map_or_else(|| "?".to_owned(), |s| s.to_string())
            )));
            break;
        }
        let prev = value
            .get("prev")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if prev != report.last_hash {
            report.problems.push(problem(format!(
                "record {} does not follow the previous record (its `prev` is not the previous hash): records were deleted, inserted or reordered",
                report.records
            )));
            break;
        }
        report.records += 1;
        report.last_hash = stated.to_owned();
        report.closed = value.get("kind").and_then(Value::as_str) == Some("close");
    }
    if report.problems.is_empty()
        && let Some((seq, hash)) = expect_head
    {
        let last = report.records.checked_sub(1);
        if last != Some(seq) || report.last_hash != hash {
            report.problems.push(Problem {
                line: line_no,
                message: format!(
                    "the log ends at record {} with hash {}, not at the expected head {seq}:{hash}: records were cut from the end",
                    last.map_or_else(|| "(none)".to_owned(), |s| s.to_string()),
                    short(&report.last_hash)
                ),
            });
        }
    }
    Ok(report)
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// Replaces the values of the named top-level arguments with `"[redacted]"`.
pub fn redact(arguments: &Value, names: &[String]) -> Value {
    match arguments {
        Value::Object(map) if !names.is_empty() => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if names.iter().any(|n| n == k) {
                        json!("[redacted]")
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Reads every well-formed record of a log (for `tail` and `query`), stopping at a damaged line.
pub fn read_records(path: &Path) -> std::io::Result<Vec<Value>> {
    let file = File::open(path)?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        match serde_json::from_str::<Value>(&line?) {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn write_log(dir: &Path, n: u64) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path, false).unwrap();
        for i in 0..n {
            log.append(
                i * 10,
                "decision",
                json!({"tool": format!("t{i}"), "decision": "allow"}),
            )
            .unwrap();
        }
        path
    }

    #[test]
    fn a_written_log_verifies_and_reopening_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3);
        let mut log = AuditLog::open(&path, true).unwrap();
        assert_eq!(log.head().0, 3);
        log.append(99, "close", json!({})).unwrap();
        let r = verify(&path, None).unwrap();
        assert_eq!((r.records, r.closed, r.problems.len()), (4, true, 0));
    }

    fn tampered(dir: &Path, f: impl Fn(&mut Vec<String>)) -> VerifyReport {
        let _ = std::fs::remove_file(dir.join("audit.jsonl"));
        let path = write_log(dir, 5);
        let mut lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        f(&mut lines);
        std::fs::write(
            &path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        verify(&path, None).unwrap()
    }

    #[test]
    fn each_kind_of_tampering_is_found_and_located() {
        let dir = tempfile::tempdir().unwrap();
        let edit = tampered(dir.path(), |l| l[2] = l[2].replace("\"allow\"", "\"deny\""));
        assert_eq!(edit.problems[0].line, 3);
        assert!(edit.problems[0].message.contains("edited"));
        let delete = tampered(dir.path(), |l| {
            l.remove(1);
        });
        assert_eq!(delete.problems[0].line, 2);
        assert!(
            delete.problems[0]
                .message
                .contains("expected record 1 here, found record 2")
        );
        let swap = tampered(dir.path(), |l| l.swap(3, 4));
        assert_eq!(swap.problems[0].line, 4);
        let dir2 = tempfile::tempdir().unwrap();
        let path = write_log(dir2.path(), 5);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 10]).unwrap();
        let torn = verify(&path, None).unwrap();
        assert!(torn.problems[0].message.contains("incomplete"), "{torn:?}");
        assert!(
            AuditLog::open(&path, false).is_err(),
            "a damaged log is not appended to"
        );
    }

    #[test]
    fn a_cut_at_a_record_boundary_is_caught_by_the_expected_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 5);
        let full = verify(&path, None).unwrap();
        let head = (full.records - 1, full.last_hash.clone());
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, kept).unwrap();
        let cut = verify(&path, None).unwrap();
        assert!(
            cut.problems.is_empty() && !cut.closed,
            "a clean cut is a shorter valid chain"
        );
        let cut = verify(&path, Some((head.0, &head.1))).unwrap();
        assert!(
            cut.problems[0].message.contains("cut from the end"),
            "{cut:?}"
        );
    }

    #[test]
    fn redaction_replaces_named_values_only() {
        let args = json!({"body": {"secret": 1}, "name": "web"});
        assert_eq!(
            redact(&args, &["body".into()]),
            json!({"body": "[redacted]", "name": "web"})
        );
    }
}
