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

//!
//! Rotation ([`Rotation`], `rotate.rs`): past a size or an age, the log's file is closed with a
//! `rotate` record, renamed `<stem>.<first seq, 12 digits>.<ext>` beside it (and optionally
//! compressed), and a new file under the log's own name starts with a `continue` record that
//! carries the chain on. [`verify_set`] checks a set of such files as one chain.

mod rotate;
mod verify;

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub use rotate::{Rotation, closed_files};
pub use verify::{
    Problem, SetReport, Verified, VerifyReport, read_records, read_verified, read_verified_set,
    verify, verify_set,
};

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

/// Wall-clock time in milliseconds since the Unix epoch: what a rotation's age is measured
/// with (never a policy decision). Passed in, so tests move it by hand.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock.
pub fn system_wall_clock() -> WallClock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// The log's gauges on `/metrics` (handles share their series' values).
#[derive(Debug, Clone, Default)]
pub struct AuditMetrics {
    /// Bytes in the log's current file.
    pub bytes: prometheus_client::metrics::gauge::Gauge,
    /// Rotations since the gateway started.
    pub rotations: prometheus_client::metrics::counter::Counter,
    /// The Unix time of the last rotation, in seconds (0: none since the start).
    pub last_rotation: prometheus_client::metrics::gauge::Gauge,
    /// Writes that failed (a full disk, a file grown past its limit...): each refused a call
    /// or delayed deferred records.
    pub write_failures: prometheus_client::metrics::counter::Counter,
    /// 1 while the log cannot be written (its last write failed), else 0.
    pub failing: prometheus_client::metrics::gauge::Gauge,
}

/// An open audit log, appending. It holds an exclusive lock on its file while it is open.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    prev: String,
    fsync: bool,
    /// Deferred lines, in chain order, not written yet.
    pending: String,
    rotation: Rotation,
    wall: WallClock,
    /// Bytes written to the current file (deferred lines not counted).
    bytes: u64,
    /// The `seq` of the current file's first record: the name it takes when it is closed.
    file_first_seq: u64,
    /// When the current file was started (Unix ms): its `continue` record's `unix_ms`, or when
    /// this process opened it.
    started_ms: u64,
    /// A rename failed: rotation is off until the next start (said once, in the log).
    rotation_failed: bool,
    /// The last write failed (said once in the process's log, and again when writes work).
    failing: bool,
    /// The compression and retention work of the last rotation, in the background.
    housekeeping: Option<std::thread::JoinHandle<()>>,
    metrics: AuditMetrics,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
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

/// Opens `path` for appending and takes its lock (before anything is read: nobody appends
/// between the check and our first record).
fn open_locked(path: &Path) -> Result<File, AuditError> {
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
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AuditError::Locked { path: name }),
        Err(TryLockError::Error(error)) => Err(AuditError::Lock { path: name, error }),
    }
}

impl AuditLog {
    /// Opens (or creates) a log, locks it, and continues its chain. A log that another
    /// [`AuditLog`] holds (in this process or another) is refused with [`AuditError::Locked`];
    /// a log that does not verify to its last line is refused: appending to it would hide the
    /// damage. Never rotated.
    pub fn open(path: &Path, fsync: bool) -> Result<AuditLog, AuditError> {
        AuditLog::open_rotating(path, fsync, Rotation::default(), system_wall_clock())
    }

    /// [`AuditLog::open`], rotating as `rotation` says, with `wall` for the age of a file.
    ///
    /// A log whose file is missing or empty, beside a closed file whose last record is a
    /// `rotate` (a gateway stopped between closing a file and starting the next), carries the
    /// chain on from that file with a `continue` record, as the rotation would have.
    pub fn open_rotating(
        path: &Path,
        fsync: bool,
        rotation: Rotation,
        wall: WallClock,
    ) -> Result<AuditLog, AuditError> {
        let name = path.display().to_string();
        let file = open_locked(path)?;
        let damaged = |file: &Path, p: &Problem| AuditError::Damaged {
            path: file.display().to_string(),
            line: p.line,
            problem: p.message.clone(),
        };
        let report = verify::walk(
            std::io::BufReader::new(&file),
            verify::Start::Partial,
            None,
            &mut |_| {},
        )
        .map_err(|error| AuditError::Open {
            path: name.clone(),
            error,
        })?;
        if let Some(problem) = report.problems.first() {
            return Err(damaged(path, problem));
        }
        let bytes = file.metadata().map_or(0, |m| m.len());
        let now = wall();
        let mut log = AuditLog {
            path: path.to_owned(),
            file,
            seq: report.next_seq,
            prev: report.last_hash.clone(),
            fsync,
            pending: String::new(),
            rotation,
            wall,
            bytes,
            file_first_seq: report.first_seq,
            started_ms: report.started_unix_ms.unwrap_or(now),
            rotation_failed: false,
            failing: false,
            housekeeping: None,
            metrics: AuditMetrics::default(),
        };
        if report.records == 0
            && let Some(closed) = rotate::newest_closed(path)
        {
            let before = verify::walk(
                verify::open_reader(&closed).map_err(|error| AuditError::Open {
                    path: closed.display().to_string(),
                    error,
                })?,
                verify::Start::Partial,
                None,
                &mut |_| {},
            )
            .map_err(|error| AuditError::Open {
                path: closed.display().to_string(),
                error,
            })?;
            if let Some(problem) = before.problems.first() {
                return Err(damaged(&closed, problem));
            }
            if let Some(previous) = before.rotated_to {
                log.seq = before.next_seq;
                log.prev = before.last_hash;
                log.file_first_seq = before.next_seq;
                log.append(
                    0,
                    "continue",
                    json!({"previous_file": previous, "unix_ms": now}),
                )?;
            }
        }
        Ok(log)
    }

    /// Reports the log's size and rotations on these gauges from now on.
    pub fn set_metrics(&mut self, metrics: AuditMetrics) {
        metrics
            .bytes
            .set(i64::try_from(self.bytes).unwrap_or(i64::MAX));
        self.metrics = metrics;
    }

    /// Appends one record: `fields` (an object) after `seq`, `prev`, `t_ms` and `kind`. Returns
    /// the record's sequence number. The record is written and flushed (and synced, if asked)
    /// when this returns. When the current file is due for rotation, it is rotated first.
    pub fn append(&mut self, t_ms: u64, kind: &str, fields: Value) -> Result<u64, AuditError> {
        if let Some(reason) = self.rotation_due() {
            self.rotate(t_ms, reason)?;
        }
        self.append_here(t_ms, kind, fields)
    }

    /// [`AuditLog::append`] into the current file, whatever its size or age.
    fn append_here(&mut self, t_ms: u64, kind: &str, fields: Value) -> Result<u64, AuditError> {
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
    ///
    /// A write that fails part way (the disk filled up in the middle of a line) is cut back to
    /// the last whole record, so the file stays a valid chain and the next write continues it.
    /// The first failure and the recovery are said in the process's log (not every failure:
    /// the deferred records are retried every 20 ms).
    fn write(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        let written = self.file.write_all(bytes).and_then(|()| self.file.flush());
        let written = written.and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(error) = written {
            let cut = self.file.set_len(self.bytes);
            self.metrics.write_failures.inc();
            if !self.failing {
                self.failing = true;
                self.metrics.failing.set(1);
                tracing::error!(
                    "cannot write audit log `{}` ({error}): every call is refused (`audit_unavailable`) until it can be written; free space on its file system (or raise its size limit){}",
                    self.path.display(),
                    match &cut {
                        Ok(()) => String::new(),
                        Err(e) => format!(
                            "; the partly written record could not be cut off ({e}): run `tollgate audit verify` on it"
                        ),
                    }
                );
            }
            return Err(AuditError::Write {
                path: self.path.display().to_string(),
                error,
            });
        }
        if self.failing {
            self.failing = false;
            self.metrics.failing.set(0);
            tracing::warn!(
                "audit log `{}` can be written again: calls are decided and forwarded again",
                self.path.display()
            );
        }
        self.bytes += bytes.len() as u64;
        self.metrics
            .bytes
            .set(i64::try_from(self.bytes).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Why the current file should be rotated before the next record, if it should: it holds
    /// at least one record besides its `continue`, and its size or age reached the limit.
    fn rotation_due(&self) -> Option<&'static str> {
        // The current file's records, deferred ones included, are those from its first `seq`.
        if self.rotation_failed || self.seq - self.file_first_seq < 2 {
            return None;
        }
        let size = self.bytes + self.pending.len() as u64;
        if self.rotation.max_bytes.is_some_and(|max| size >= max) {
            return Some("size");
        }
        let age = Duration::from_millis((self.wall)().saturating_sub(self.started_ms));
        if self.rotation.max_age.is_some_and(|max| age >= max) {
            return Some("age");
        }
        None
    }

    /// Closes the current file with a `rotate` record (the deferred records before it), renames
    /// it to its closed name, and starts a new file under the log's name with a `continue`
    /// record. Compression and retention run in the background.
    ///
    /// A rename that fails leaves the log in its file (the `rotate` record then stands inside
    /// it, which [`verify`] accepts) and turns rotation off until the next start. A new file
    /// that cannot be created or locked is an error: the records wait (the calls they are for
    /// are refused) rather than go anywhere else.
    fn rotate(&mut self, t_ms: u64, reason: &str) -> Result<(), AuditError> {
        let closed = rotate::closed_path(&self.path, self.file_first_seq);
        let closed_name = closed
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let now = (self.wall)();
        self.append_here(
            t_ms,
            "rotate",
            json!({"file": closed_name, "reason": reason, "unix_ms": now}),
        )?;
        if let Err(e) = std::fs::rename(&self.path, &closed) {
            tracing::error!(
                "cannot rotate audit log `{}` to `{}`: {e}; the log goes on in its file, without rotation until the gateway restarts",
                self.path.display(),
                closed.display()
            );
            self.rotation_failed = true;
            return Ok(());
        }
        // The old file keeps its lock until it is dropped, after the new one holds its own.
        let file = open_locked(&self.path)?;
        let old = std::mem::replace(&mut self.file, file);
        self.bytes = 0;
        self.file_first_seq = self.seq;
        self.started_ms = now;
        self.append_here(
            t_ms,
            "continue",
            json!({"previous_file": closed_name, "unix_ms": now}),
        )?;
        drop(old);
        self.metrics.rotations.inc();
        self.metrics
            .last_rotation
            .set(i64::try_from(now / 1000).unwrap_or(i64::MAX));
        if let Some(previous) = self.housekeeping.take() {
            let _ = previous.join();
        }
        let rotation = self.rotation.clone();
        let path = self.path.clone();
        self.housekeeping = Some(std::thread::spawn(move || {
            rotate::housekeeping(&path, &closed, &rotation);
        }));
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

    /// Waits for the background work of the last rotation (compression, retention).
    pub fn finish_housekeeping(&mut self) {
        if let Some(work) = self.housekeeping.take() {
            let _ = work.join();
        }
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
        self.finish_housekeeping();
    }
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

    /// A full disk (Linux's `/dev/full` answers every write with ENOSPC, put in place of the
    /// log's file): the record is refused with the error, the chain does not advance, the
    /// failure is counted and shown; once writes work again the same record goes in and the
    /// log verifies with no gap.
    #[test]
    fn a_full_disk_refuses_the_record_and_the_chain_resumes_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 2);
        let mut log = AuditLog::open(&path, false).unwrap();
        let metrics = AuditMetrics::default();
        log.set_metrics(metrics.clone());
        let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let file = std::mem::replace(&mut log.file, full);
        let refused = log.append(30, "decision", json!({"tool": "t2"}));
        let Err(AuditError::Write { error, .. }) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(error.raw_os_error(), Some(28), "ENOSPC: {error}");
        assert_eq!(log.head().0, 2, "the chain did not advance");
        assert_eq!(
            (metrics.write_failures.get(), metrics.failing.get()),
            (1, 1)
        );
        // Deferred records wait (and a failing flush keeps them).
        log.append_deferred(31, "outcome", json!({"tool": "t1"}))
            .unwrap();
        assert!(log.flush().is_err());
        assert_eq!(metrics.write_failures.get(), 2);
        log.file = file;
        log.append(40, "decision", json!({"tool": "t2"})).unwrap();
        assert_eq!(metrics.failing.get(), 0);
        drop(log);
        let r = verify(&path, None).unwrap();
        assert_eq!((r.records, r.problems.len()), (4, 0), "{:?}", r.problems);
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

    /// A log that rotates every `max_bytes`, on a wall clock the test moves; returns the log's
    /// path (the files are closed when this returns).
    fn rotated_log(dir: &Path, records: u64, rotation: Rotation) -> (PathBuf, (u64, String)) {
        let path = dir.join("audit.jsonl");
        let clock = Arc::new(std::sync::atomic::AtomicU64::new(1_000_000));
        let wall: WallClock = {
            let clock = Arc::clone(&clock);
            Arc::new(move || clock.load(std::sync::atomic::Ordering::Relaxed))
        };
        let mut log = AuditLog::open_rotating(&path, false, rotation, wall).unwrap();
        for i in 0..records {
            clock.fetch_add(60_000, std::sync::atomic::Ordering::Relaxed);
            log.append(i, "decision", json!({"tool": format!("t{i}")}))
                .unwrap();
            log.append_deferred(i, "outcome", json!({"decision_seq": i}))
                .unwrap();
        }
        log.append(records, "close", json!({})).unwrap();
        let head = log.head();
        let head = (head.0 - 1, head.1.to_owned());
        drop(log);
        (path, head)
    }

    fn set_of(path: &Path) -> Vec<PathBuf> {
        let mut files = closed_files(path);
        files.push(path.to_owned());
        files
    }

    /// Rotation by size keeps one chain: every file but the last ends with `rotate`, the next
    /// starts with `continue`, and the set verifies whole up to the head the writer ended at.
    #[test]
    fn a_log_rotated_by_size_verifies_as_one_chain_across_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: Some(2_000),
            ..Rotation::default()
        };
        let (path, head) = rotated_log(dir.path(), 40, rotation);
        let files = set_of(&path);
        assert!(files.len() >= 5, "{files:?}");
        let set = verify_set(&files, false, Some((head.0, &head.1))).unwrap();
        assert_eq!(set.report.problems, []);
        assert_eq!((set.report.records, set.report.closed), (head.0 + 1, true));
        for f in &files[..files.len() - 1] {
            let size = std::fs::metadata(f).unwrap().len();
            assert!(size < 2_000 + 1_000, "{} is {size} bytes", f.display());
        }
        // The last file on its own continues the one before it: refused unless partial.
        let alone = verify(&path, None).unwrap();
        assert!(alone.problems[0].message.contains("continues"), "{alone:?}");
        let partial = verify_set(std::slice::from_ref(&path), true, None).unwrap();
        assert_eq!(partial.report.problems, []);
        // Reopening carries on in the current file.
        let mut log = AuditLog::open(&path, false).unwrap();
        assert_eq!(log.head().0, head.0 + 1);
        log.append(0, "open", json!({})).unwrap();
        drop(log);
        assert_eq!(
            verify_set(&set_of(&path), false, None)
                .unwrap()
                .report
                .problems,
            []
        );
    }

    /// A file missing from the middle, two files swapped, a closed file cut at its end, and a
    /// set without its first file: each breaks the set, at the file that shows it.
    #[test]
    fn a_missing_reordered_or_cut_file_breaks_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: Some(1_500),
            ..Rotation::default()
        };
        let (path, _) = rotated_log(dir.path(), 30, rotation);
        let files = set_of(&path);
        assert!(files.len() >= 4);
        let broken = |set: &[PathBuf]| verify_set(set, false, None).unwrap();
        let mut missing = files.clone();
        missing.remove(1);
        let r = broken(&missing);
        assert_eq!(r.broken_file, Some(1));
        assert!(r.report.problems[0].message.contains("missing"), "{r:?}");
        let mut swapped = files.clone();
        swapped.swap(1, 2);
        assert_eq!(broken(&swapped).broken_file, Some(1));
        let r = broken(&files[1..]);
        assert_eq!(r.broken_file, Some(0));
        assert!(r.report.problems[0].message.contains("--partial"), "{r:?}");
        assert_eq!(
            verify_set(&files[1..], true, None).unwrap().report.problems,
            []
        );
        // Cut the `rotate` record off the second file.
        let text = std::fs::read_to_string(&files[1]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cut: String = lines[..lines.len() - 1]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&files[1], cut).unwrap();
        let r = broken(&files);
        assert_eq!(r.broken_file, Some(1));
        assert!(
            r.report.problems[0]
                .message
                .contains("does not end with a `rotate`"),
            "{r:?}"
        );
    }

    /// Any one byte changed anywhere in any file of a rotated set fails the set's verification,
    /// in that file, at that line.
    #[test]
    fn any_byte_changed_in_any_file_of_a_set_is_found_in_that_file_at_that_line() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: Some(1_200),
            ..Rotation::default()
        };
        let (path, _) = rotated_log(dir.path(), 12, rotation);
        let files = set_of(&path);
        for (f, file) in files.iter().enumerate() {
            let original = std::fs::read(file).unwrap();
            let mut line = 1;
            for at in (0..original.len()).step_by(7) {
                let mut changed = original.clone();
                changed[at] = if changed[at] == b'0' { b'1' } else { b'0' };
                std::fs::write(file, &changed).unwrap();
                let r = verify_set(&files, false, None).unwrap();
                assert_eq!(r.broken_file, Some(f), "byte {at} of {}", file.display());
                let expected_line = 1 + original[..at].iter().filter(|b| **b == b'\n').count();
                if original[at] != b'\n' {
                    assert_eq!(r.report.problems[0].line, expected_line, "byte {at}");
                }
                line = expected_line;
            }
            assert!(line > 1);
            std::fs::write(file, &original).unwrap();
        }
        assert_eq!(verify_set(&files, false, None).unwrap().report.problems, []);
    }

    /// By age on the wall clock passed in; closed files compressed and read back compressed;
    /// `keep` removes the oldest; the metrics count the rotations.
    #[test]
    fn rotation_by_age_with_compression_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_age: Some(Duration::from_secs(300)),
            keep: Some(2),
            compress: true,
            ..Rotation::default()
        };
        // A record a minute: a file every five or six.
        let (path, head) = rotated_log(dir.path(), 30, rotation);
        let closed = closed_files(&path);
        assert_eq!(closed.len(), 2, "{closed:?}");
        assert!(
            closed
                .iter()
                .all(|p| p.extension().is_some_and(|e| e == "gz")),
            "{closed:?}"
        );
        let set = verify_set(&set_of(&path), true, Some((head.0, &head.1))).unwrap();
        assert_eq!(set.report.problems, []);
        assert!(set.report.first_seq > 0 && set.report.continues.is_some());
        assert!(verify_set(&set_of(&path), false, None).unwrap().broken_file == Some(0));
    }

    /// A gateway stopped after closing a file and before starting the next (the current file
    /// missing or empty): the next start carries the chain on from the newest closed file.
    #[test]
    fn a_start_after_an_interrupted_rotation_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: Some(1_000),
            ..Rotation::default()
        };
        let (path, _) = rotated_log(dir.path(), 8, rotation.clone());
        std::fs::write(&path, "").unwrap();
        let metrics = AuditMetrics::default();
        let mut log = AuditLog::open_rotating(&path, false, rotation, system_wall_clock()).unwrap();
        log.set_metrics(metrics.clone());
        for i in 0..10 {
            log.append(i, "decision", json!({"tool": "t"})).unwrap();
        }
        drop(log);
        assert!(metrics.rotations.get() >= 1);
        assert!(metrics.last_rotation.get() > 0);
        let set = verify_set(&set_of(&path), false, None).unwrap();
        assert_eq!(set.report.problems, [], "{set:?}");
    }
}
