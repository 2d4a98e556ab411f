//! The audit log: append-only JSON lines, one per event, hash-chained.
//!
//! Each line is one JSON object whose last member is `"hash"`:
//!
//! ```text
//! {"kind":"decision","prev":"<hash of line 6>","seq":7,"t_ms":1234,...,"hash":"<hex>"}
//! ```
//!
//! A line is exactly `PREFIX,"hash":"<64 lowercase hex>"}` and a line feed, where `hash` is the
//! SHA-256 of PREFIX's bytes: every byte of the line is either covered by the hash or part of
//! that fixed end. `prev` is the previous line's `hash` (64 zeros for the first line).
//! [`verify`] refuses any other byte (something after the hash, a carriage return, a trailing
//! space), a key that appears twice in one object (a reader would see only one copy), a `hash`
//! key inside PREFIX, and a record without `seq`, `prev`, `t_ms` and `kind` of the right types.
//! Changing, adding or removing a byte of a line breaks that line; deleting, reordering or
//! inserting lines breaks `prev` or `seq`; a torn last line is incomplete. A log cut exactly at
//! a line boundary is a valid shorter chain: `verify` reports whether the log ends with the
//! `close` record a clean shutdown writes, and `--expect-head SEQ:HASH` checks the end against a
//! head kept elsewhere (docs/audit.md says what this does and does not prove).
//!
//! One writer at a time: [`AuditLog::open`] takes an exclusive lock on the file (`flock`) and
//! holds it while the log is open, so a second gateway on the same file is refused at start
//! instead of interleaving a second chain into the first.
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

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tollgate_mcp::WireError;
use tollgate_mcp::strict::parse_strict;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What separates a record's PREFIX (the bytes its hash covers) from its hash.
const HASH_MARKER: &str = ",\"hash\":\"";

/// The length of a hash in hex.
const HASH_HEX: usize = 64;

/// The length of a line's fixed end: `,"hash":"`, the hash's hex digits, `"}`.
const SUFFIX_LEN: usize = HASH_MARKER.len() + HASH_HEX + 2;

/// The members every record starts with; `fields` may not use them, nor `hash`.
const RESERVED: [&str; 5] = ["seq", "prev", "t_ms", "kind", "hash"];

/// An open audit log, appending. It holds an exclusive lock on its file while it is open.
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
    // The I/O error is part of the message, not a `source`: a chain printed in full (`{:#}`)
    // would say it twice.
    #[error("cannot open audit log `{path}`: {error}")]
    Open { path: String, error: std::io::Error },
    #[error(
        "audit log `{path}` is in use: another gateway holds its lock (two writers would break its hash chain); stop that gateway, or give this one its own `--audit` file"
    )]
    Locked { path: String },
    #[error("cannot lock audit log `{path}` for writing: {error}")]
    Lock { path: String, error: std::io::Error },
    #[error(
        "audit log `{path}` is damaged at line {line}: {problem}; run `tollgate audit verify {path}` and move the file aside to start a new log"
    )]
    Damaged {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("cannot write audit log `{path}`: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("audit record field `{key}` is reserved for the hash chain (a bug in the gateway)")]
    Reserved { key: String },
}

/// Computes the hash of a record line's PREFIX (the text before `,"hash":`).
fn hash_prefix(prefix: &[u8]) -> String {
    hex::encode(Sha256::digest(prefix))
}

impl AuditLog {
    /// Opens (or creates) a log, locks it, and continues its chain. A log that another
    /// [`AuditLog`] holds (in this process or another) is refused with [`AuditError::Locked`];
    /// a log that does not verify to its last line is refused: appending to it would hide the
    /// damage.
    pub fn open(path: &Path, fsync: bool) -> Result<AuditLog, AuditError> {
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|error| AuditError::Open {
                path: name.clone(),
                error,
            })?;
        // Locked before it is read: nobody appends between the check and our first record.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(AuditError::Locked { path: name }),
            Err(TryLockError::Error(error)) => {
                return Err(AuditError::Lock { path: name, error });
            }
        }
        let report =
            walk(BufReader::new(&file), None, &mut |_| {}).map_err(|error| AuditError::Open {
                path: name.clone(),
                error,
            })?;
        if let Some(problem) = report.problems.first() {
            return Err(AuditError::Damaged {
                path: name,
                line: problem.line,
                problem: problem.message.clone(),
            });
        }
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            seq: report.records,
            prev: report.last_hash,
            fsync,
            pending: String::new(),
        })
    }

    /// Appends one record: `fields` (an object) after `seq`, `prev`, `t_ms` and `kind`. Returns
    /// the record's sequence number. The record is written and flushed (and synced, if asked)
    /// when this returns.
    pub fn append(&mut self, t_ms: u64, kind: &str, fields: Value) -> Result<u64, AuditError> {
        let (line, hash) = self.line(t_ms, kind, fields)?;
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
        let (line, hash) = self.line(t_ms, kind, fields)?;
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
        let error = |error| AuditError::Write {
            path: self.path.display().to_string(),
            error,
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

    /// The next record's line and its hash (the chain is not advanced). The line is the form
    /// [`verify`] accepts: `fields` may not repeat a member of the head, nor name `hash`.
    fn line(&self, t_ms: u64, kind: &str, fields: Value) -> Result<(String, String), AuditError> {
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
            if let Some(key) = RESERVED.iter().find(|k| extra.contains_key(**k)) {
                return Err(AuditError::Reserved {
                    key: (*key).to_owned(),
                });
            }
            let rest = serde_json::to_string(&Value::Object(extra)).unwrap_or_default();
            // Join the two objects: drop the first's `}` and the second's `{`.
            text.pop();
            text.push(',');
            text.push_str(&rest[1..]);
        }
        text.pop();
        let hash = hash_prefix(text.as_bytes());
        let line = format!("{text}{HASH_MARKER}{hash}\"}}\n");
        Ok((line, hash))
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

/// Checks a log from its first line: every line has the exact form of a record (PREFIX, then
/// `,"hash":"<64 lowercase hex>"}` and a line feed, nothing else), is strict JSON (no key twice
/// in one object) with `seq`, `prev`, `t_ms` and `kind` of the right types, its hash is the
/// SHA-256 of PREFIX, its `prev` is the previous hash, and sequence numbers count up from 0.
/// `expect_head` (`seq`, `hash` of the last record) checks the end against a head kept
/// elsewhere. Stops at the first problem: after a break, nothing later can be trusted.
pub fn verify(path: &Path, expect_head: Option<(u64, &str)>) -> std::io::Result<VerifyReport> {
    walk(BufReader::new(File::open(path)?), expect_head, &mut |_| {})
}

/// What [`read_verified`] found: the records of the chain up to its first problem, and the
/// report saying whether there was one.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The records before the first problem, in order: each one verified.
    pub records: Vec<Value>,
    pub report: VerifyReport,
}

/// Reads a log as [`verify`] checks it, keeping the records that verify (those before the
/// first problem). A record at or after a break is never returned.
pub fn read_verified(path: &Path) -> std::io::Result<Verified> {
    let mut records = Vec::new();
    let report = walk(BufReader::new(File::open(path)?), None, &mut |v| {
        records.push(v);
    })?;
    Ok(Verified { records, report })
}

/// Reads the records of a log that verify, stopping at the first problem (see
/// [`read_verified`], which also says whether there was one).
pub fn read_records(path: &Path) -> std::io::Result<Vec<Value>> {
    read_verified(path).map(|v| v.records)
}

/// A line's record, checked on its own (its place in the chain is checked by [`walk`]).
struct Record {
    value: Value,
    seq: u64,
    hash: String,
}

/// [`verify`] over any reader: `keep` gets each record that verifies, in order.
fn walk(
    mut reader: impl BufRead,
    expect_head: Option<(u64, &str)>,
    keep: &mut dyn FnMut(Value),
) -> std::io::Result<VerifyReport> {
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
        let record = match check_line(&buf) {
            Ok(r) => r,
            Err(message) => {
                report.problems.push(problem(message));
                break;
            }
        };
        if record.seq != report.records {
            report.problems.push(problem(format!(
                "expected record {} here, found record {}: records were deleted, inserted or reordered",
                report.records, record.seq
            )));
            break;
        }
        if record.value.get("prev").and_then(Value::as_str) != Some(report.last_hash.as_str()) {
            report.problems.push(problem(format!(
                "record {} does not follow the previous record (its `prev` is not the previous hash): records were deleted, inserted or reordered",
                report.records
            )));
            break;
        }
        report.records += 1;
        report.last_hash = record.hash;
        report.closed = record.value.get("kind").and_then(Value::as_str) == Some("close");
        keep(record.value);
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

/// Checks one line (without its line feed) on its own: its form, its JSON, its head's types
/// and its hash. The message says what is wrong, for a line that is not a record.
fn check_line(line: &[u8]) -> Result<Record, String> {
    let (prefix, hash) = split_line(line)?;
    let text =
        std::str::from_utf8(line).map_err(|_| "the line is not UTF-8: it was edited".to_owned())?;
    let value = parse_strict(text).map_err(|e| match e {
        WireError::DuplicateKey { key } => format!(
            "the key `{}` appears twice in one object (readers would disagree on its value): the line was edited",
            tollgate_mcp::display::text(&key)
        ),
        WireError::TooDeep => "the line nests too deeply to be an audit record".to_owned(),
        other => format!("the line is not valid JSON ({other}): it was edited"),
    })?;
    let Value::Object(map) = &value else {
        return Err("the line is not a JSON object: it was edited".to_owned());
    };
    // The line's form makes `hash` its object's last member, and duplicate keys are refused,
    // so this holds; it is checked anyway, as the one thing everything else rests on.
    if map.get("hash").and_then(Value::as_str) != Some(hash) {
        return Err("the record's `hash` is not the one its line ends with: it was edited".into());
    }
    let seq = map.get("seq").and_then(Value::as_u64);
    let head = [
        ("seq", seq.is_some(), "a whole number"),
        (
            "prev",
            map.get("prev")
                .and_then(Value::as_str)
                .is_some_and(is_hash_hex),
            "64 lowercase hex digits",
        ),
        (
            "t_ms",
            map.get("t_ms").is_some_and(Value::is_u64),
            "a whole number",
        ),
        (
            "kind",
            map.get("kind").is_some_and(Value::is_string),
            "a string",
        ),
    ];
    if let Some((field, _, what)) = head.iter().find(|(_, ok, _)| !ok) {
        return Err(format!(
            "the record's `{field}` is missing or not {what}: the line was edited or is not an audit record"
        ));
    }
    if hash_prefix(prefix) != hash {
        return Err(format!(
            "record {} does not match its hash: its content was edited",
            seq.unwrap_or_default()
        ));
    }
    Ok(Record {
        seq: seq.unwrap_or_default(),
        hash: hash.to_owned(),
        value,
    })
}

/// Splits a line (without its line feed) into PREFIX and its stated hash: the line must end
/// with exactly `,"hash":"<64 lowercase hex>"}`.
fn split_line(line: &[u8]) -> Result<(&[u8], &str), String> {
    let marker = HASH_MARKER.as_bytes();
    let at = line.len().checked_sub(SUFFIX_LEN);
    if let Some(at) = at {
        let (prefix, end) = line.split_at(at);
        if let Some(rest) = end.strip_prefix(marker)
            && let Some(hex) = rest.strip_suffix(b"\"}")
            && let Ok(hex) = std::str::from_utf8(hex)
            && is_hash_hex(hex)
        {
            return Ok((prefix, hex));
        }
    }
    // Not a record's form: say how, as precisely as the bytes allow.
    let Some(last) = line.windows(marker.len()).rposition(|w| w == marker) else {
        return Err(
            "the line has no `hash` field: it was edited or is not an audit record".to_owned(),
        );
    };
    let after = &line[last + marker.len()..];
    let hex_ok = after
        .get(..HASH_HEX)
        .and_then(|h| std::str::from_utf8(h).ok())
        .is_some_and(is_hash_hex);
    if !hex_ok {
        return Err("the record's `hash` is not 64 lowercase hex digits: it was edited".to_owned());
    }
    if line.contains(&b'\r') {
        return Err(
            "the line holds a carriage return: it was rewritten (e.g. with CRLF line ends), and the hash does not cover it"
                .to_owned(),
        );
    }
    // Past `"}` after the hex digits, the line should have ended.
    let extra = after.len().saturating_sub(HASH_HEX + 2);
    if extra > 0 {
        return Err(format!(
            "the line goes on after its `hash`: {extra} byte{} that the hash does not cover (a field, or anything else, added after it): the line was edited",
            if extra == 1 { "" } else { "s" }
        ));
    }
    Err("the line does not end with `\"hash\":\"<hex>\"}`: it was edited".to_owned())
}

/// Whether `s` is a hash as the log writes it: 64 lowercase hex digits.
fn is_hash_hex(s: &str) -> bool {
    s.len() == HASH_HEX && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]
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

    /// One writer at a time: a second open of a log that is open (here in the same process,
    /// as two gateways in two processes) is refused with an error naming the file, nothing is
    /// written, and once the first writer is gone the log opens again and its chain holds.
    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut first = AuditLog::open(&path, false).unwrap();
        first.append(0, "open", json!({})).unwrap();
        let second = AuditLog::open(&path, false);
        let Err(e) = second else {
            panic!("a second writer opened the log")
        };
        let message = e.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("another gateway"),
            "{message}"
        );
        first.append(1, "close", json!({})).unwrap();
        drop(first);
        let mut third = AuditLog::open(&path, false).unwrap();
        third.append(2, "open", json!({})).unwrap();
        drop(third);
        let r = verify(&path, None).unwrap();
        assert_eq!((r.records, r.problems.len()), (3, 0));
    }

    /// `fields` cannot repeat the head or name `hash`: such a record would not verify.
    #[test]
    fn a_reserved_field_is_refused_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path, false).unwrap();
        for key in RESERVED {
            let mut fields = json!({"tool": "t"});
            fields[key] = json!(1);
            assert!(matches!(
                log.append(0, "decision", fields),
                Err(AuditError::Reserved { .. })
            ));
        }
        log.append(0, "decision", json!({"tool": "t"})).unwrap();
        drop(log);
        assert!(verify(&path, None).unwrap().problems.is_empty());
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
