//! Reading a log back: every line checked on its own (its form, its JSON, its hash) and in its
//! place in the chain, over one file or a rotated set of files in order.
//!
//! A rotated set links its files inside the chain itself: a file that rotation closed ends
//! with a `rotate` record naming the file it became (`"file"`), and the next file starts with
//! a `continue` record naming that same file (`"previous_file"`), whose `seq` and `prev`
//! carry on from the `rotate` record. Both names are covered by the hashes, so a file missing
//! from the middle of a set, two files swapped, or a file cut at its end breaks the link; the
//! names the files have on disk do not matter.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tollgate_mcp::WireError;
use tollgate_mcp::strict::parse_strict;

use super::{GENESIS, HASH_HEX, HASH_MARKER, SUFFIX_LEN, hash_prefix};

/// The longest line read: the gateway's records hold a message of at most 64 MiB
/// (`--max-message-bytes`) and a few fields, so a longer line is not a record, and reading it
/// whole would let a hostile file take any amount of memory.
pub(crate) const MAX_LINE: usize = 256 << 20;

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
    /// The `seq` of the first record (0 unless the log starts with a `continue` record).
    pub first_seq: u64,
    /// The `seq` the next record would take.
    pub next_seq: u64,
    /// The file the log continues (`previous_file` of a first `continue` record).
    pub continues: Option<String>,
    /// The file this one became (`file` of a last `rotate` record): more files follow.
    pub rotated_to: Option<String>,
    /// The `unix_ms` of a first `continue` record: when rotation started this file.
    pub started_unix_ms: Option<u64>,
}

/// Where a walk expects its first record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start<'a> {
    /// At the start of a chain: `seq` 0, `prev` 64 zeros.
    Genesis,
    /// At the start of a chain, or at a `continue` record (a set whose first files were
    /// removed, or a file read on its own for its own use, such as appending).
    Partial,
    /// A `continue` record that carries on from `seq - 1`, hash `hash`, file `file`.
    After {
        seq: u64,
        hash: &'a str,
        file: &'a str,
    },
}

/// Checks a log from its first line: every line has the exact form of a record (PREFIX, then
/// `,"hash":"<64 lowercase hex>"}` and a line feed, nothing else), is strict JSON (no key twice
/// in one object) with `seq`, `prev`, `t_ms` and `kind` of the right types, its hash is the
/// SHA-256 of PREFIX, its `prev` is the previous hash, and sequence numbers count up from 0.
/// `expect_head` (`seq`, `hash` of the last record) checks the end against a head kept
/// elsewhere. Stops at the first problem: after a break, nothing later can be trusted. A file
/// that rotation started (its first record a `continue`) is a problem here: check it with the
/// files before it ([`verify_set`]).
pub fn verify(path: &Path, expect_head: Option<(u64, &str)>) -> std::io::Result<VerifyReport> {
    walk(open_reader(path)?, Start::Genesis, expect_head, &mut |_| {})
}

/// What [`verify_set`] found: the whole set's report (records counted over every file, the
/// head of the last), and which file the first problem is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetReport {
    pub report: VerifyReport,
    /// The index, in the paths given, of the file the first problem is in.
    pub broken_file: Option<usize>,
}

/// Checks a rotated set of files, given in chain order (oldest first), as one chain: each file
/// as [`verify`] does, and each link: every file but the last ends with a `rotate` record, and
/// the next file starts with the `continue` record that carries on from it. `partial` allows the
/// set to start at a `continue` record (its earlier files were removed, e.g. by retention):
/// nothing before that record is checked then. Stops at the first problem.
pub fn verify_set(
    paths: &[PathBuf],
    partial: bool,
    expect_head: Option<(u64, &str)>,
) -> std::io::Result<SetReport> {
    walk_set(paths, partial, expect_head, &mut |_| {})
}

/// What [`read_verified`] found: the records of the chain up to its first problem, and the
/// report saying whether there was one.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The records before the first problem, in order: each one verified.
    pub records: Vec<Value>,
    pub report: VerifyReport,
    /// The file of the first problem (an index into the paths read).
    pub broken_file: Option<usize>,
}

/// Reads a log as [`verify`] checks it, keeping the records that verify (those before the
/// first problem). A record at or after a break is never returned.
pub fn read_verified(path: &Path) -> std::io::Result<Verified> {
    read_verified_set(&[path.to_owned()], false)
}

/// Reads a rotated set as [`verify_set`] checks it, keeping the records that verify.
pub fn read_verified_set(paths: &[PathBuf], partial: bool) -> std::io::Result<Verified> {
    let mut records = Vec::new();
    let set = walk_set(paths, partial, None, &mut |v| records.push(v))?;
    Ok(Verified {
        records,
        report: set.report,
        broken_file: set.broken_file,
    })
}

/// Reads the records of a log that verify, stopping at the first problem (see
/// [`read_verified`], which also says whether there was one).
pub fn read_records(path: &Path) -> std::io::Result<Vec<Value>> {
    read_verified(path).map(|v| v.records)
}

/// A file of a log, read as it is stored: gzip-compressed when its name ends with `.gz`.
pub(crate) fn open_reader(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let file = File::open(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

fn walk_set(
    paths: &[PathBuf],
    partial: bool,
    expect_head: Option<(u64, &str)>,
    keep: &mut dyn FnMut(Value),
) -> std::io::Result<SetReport> {
    let mut total: Option<VerifyReport> = None;
    for (i, path) in paths.iter().enumerate() {
        let last = i + 1 == paths.len();
        let head = if last { expect_head } else { None };
        let report = match &total {
            None => walk(
                open_reader(path)?,
                if partial {
                    Start::Partial
                } else {
                    Start::Genesis
                },
                head,
                keep,
            )?,
            Some(before) => {
                let Some(file) = before.rotated_to.as_deref() else {
                    // Checked below for the file before: unreachable.
                    break;
                };
                walk(
                    open_reader(path)?,
                    Start::After {
                        seq: before.next_seq,
                        hash: &before.last_hash,
                        file,
                    },
                    head,
                    keep,
                )?
            }
        };
        let mut report = report;
        if report.problems.is_empty() && !last && report.rotated_to.is_none() {
            report.problems.push(Problem {
                line: usize::try_from(report.records).unwrap_or(usize::MAX),
                message: format!(
                    "the file does not end with a `rotate` record, but {} more file{} follow{}: it was cut at its end, or the files are not in chain order (oldest first)",
                    paths.len() - i - 1,
                    if paths.len() - i - 1 == 1 { "" } else { "s" },
                    if paths.len() - i - 1 == 1 { "s" } else { "" },
                ),
            });
        }
        let broken = !report.problems.is_empty();
        total = Some(match total {
            None => report,
            Some(before) => VerifyReport {
                records: before.records + report.records,
                first_seq: before.first_seq,
                continues: before.continues,
                ..report
            },
        });
        if broken {
            return Ok(SetReport {
                report: total.unwrap_or_else(empty_report),
                broken_file: Some(i),
            });
        }
    }
    Ok(SetReport {
        report: total.unwrap_or_else(empty_report),
        broken_file: None,
    })
}

fn empty_report() -> VerifyReport {
    VerifyReport {
        records: 0,
        last_hash: GENESIS.to_owned(),
        closed: false,
        problems: Vec::new(),
        first_seq: 0,
        next_seq: 0,
        continues: None,
        rotated_to: None,
        started_unix_ms: None,
    }
}

/// A line's record, checked on its own (its place in the chain is checked by [`walk`]).
struct Record {
    value: Value,
    seq: u64,
    hash: String,
}

impl Record {
    fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    fn str_field(&self, name: &str) -> Option<&str> {
        self.value.get(name).and_then(Value::as_str)
    }
}

/// [`verify`] over any reader, from `start`: `keep` gets each record that verifies, in order.
pub(crate) fn walk(
    mut reader: impl BufRead,
    start: Start<'_>,
    expect_head: Option<(u64, &str)>,
    keep: &mut dyn FnMut(Value),
) -> std::io::Result<VerifyReport> {
    let mut report = empty_report();
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let problem = |message: String| Problem {
            line: line_no,
            message,
        };
        if buf.len() > MAX_LINE {
            report.problems.push(problem(format!(
                "the line is longer than {} MiB, which no record the gateway writes is (its messages are at most 64 MiB): it was edited, or this is not an audit log",
                MAX_LINE >> 20
            )));
            break;
        }
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
        if line_no == 1 {
            match first_record(&record, start) {
                // A `continue` record starts the walk where it says; any other first record
                // is checked as record 0 of a chain, below.
                Ok(true) => {
                    report.first_seq = record.seq;
                    report.next_seq = record.seq;
                    report.last_hash = record.str_field("prev").unwrap_or(GENESIS).to_owned();
                    report.continues = record.str_field("previous_file").map(str::to_owned);
                    report.started_unix_ms = record.value.get("unix_ms").and_then(Value::as_u64);
                }
                Ok(false) => {}
                Err(message) => {
                    report.problems.push(problem(message));
                    break;
                }
            }
        }
        if record.seq != report.next_seq {
            report.problems.push(problem(format!(
                "expected record {} here, found record {}: records were deleted, inserted or reordered",
                report.next_seq, record.seq
            )));
            break;
        }
        if record.str_field("prev") != Some(report.last_hash.as_str()) {
            report.problems.push(problem(format!(
                "record {} does not follow the previous record (its `prev` is not the previous hash): records were deleted, inserted or reordered",
                report.next_seq
            )));
            break;
        }
        report.records += 1;
        report.next_seq += 1;
        report.closed = record.kind() == Some("close");
        report.rotated_to = match record.kind() {
            Some("rotate") => record.str_field("file").map(str::to_owned),
            _ => None,
        };
        report.last_hash = record.hash;
        keep(record.value);
    }
    if line_no == 0
        && let Start::After { file, .. } = start
    {
        report.problems.push(Problem {
            line: 1,
            message: format!(
                "the file is empty, but it should start with the `continue` record that carries on from `{}`",
                tollgate_mcp::display::text(file)
            ),
        });
    }
    if report.problems.is_empty()
        && let Some((seq, hash)) = expect_head
    {
        let last = report
            .next_seq
            .checked_sub(1)
            .filter(|_| report.records > 0);
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

/// Whether a file's first record may start it, given where the walk expects it: `Ok(true)`
/// when it is a `continue` record the walk starts at.
fn first_record(record: &Record, start: Start<'_>) -> Result<bool, String> {
    let continues = record.kind() == Some("continue") && record.seq > 0;
    let previous = record.str_field("previous_file").unwrap_or("?");
    let previous = tollgate_mcp::display::text(previous);
    match start {
        Start::Genesis | Start::Partial if !continues => Ok(false),
        Start::Genesis => Err(format!(
            "this file continues `{previous}` from record {}: give the files before it too, oldest first (`tollgate audit verify` takes several), or pass --partial to check it from this record on",
            record.seq
        )),
        Start::Partial => Ok(true),
        Start::After { seq, hash, file } => {
            if !continues {
                return Err(format!(
                    "the file does not start with the `continue` record that carries on from `{}`: a file between them is missing, or the files are not in chain order (oldest first)",
                    tollgate_mcp::display::text(file)
                ));
            }
            if record.str_field("previous_file") != Some(file)
                || record.seq != seq
                || record.str_field("prev") != Some(hash)
            {
                return Err(format!(
                    "the file continues `{previous}` at record {}, not `{}` at record {seq}: a file between them is missing, or the files are not in chain order (oldest first)",
                    record.seq,
                    tollgate_mcp::display::text(file)
                ));
            }
            Ok(true)
        }
    }
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
pub(crate) fn is_hash_hex(s: &str) -> bool {
    s.len() == HASH_HEX && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// A line longer than any record (here an endless one, with no line feed) is a problem at
    /// that line after at most `MAX_LINE` bytes are read, never a read of the whole stream.
    #[test]
    fn an_endless_line_is_refused_after_the_line_limit() {
        let endless = std::io::BufReader::new(std::io::repeat(b'x'));
        let report = walk(endless, Start::Genesis, None, &mut |_| {}).unwrap();
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].line, 1);
        assert!(report.problems[0].message.contains("256 MiB"), "{report:?}");
    }
}
