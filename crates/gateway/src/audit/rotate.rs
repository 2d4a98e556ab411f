//! The files of a rotated log: their names, the newest closed one, compression and retention.
//!
//! A log `DIR/audit.jsonl` closes its files as `DIR/audit.<first seq, 12 digits>.jsonl` (a
//! name without an extension gets `.<digits>` at its end), compressed to `….jsonl.gz` with
//! `--audit-compress`. The digits sort the files in chain order, and so does a shell glob:
//! `audit*.jsonl*` lists the closed files oldest first, then the current one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// When and how a log rotates (`tollgate gateway --audit-rotate-size, --audit-rotate-age,
/// --audit-keep, --audit-compress`). The default never rotates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Close the current file at the first record after it reaches this many bytes.
    pub max_bytes: Option<u64>,
    /// Close the current file at the first record after it is this old (wall-clock time since
    /// its `continue` record; for the first file, since the gateway opened it).
    pub max_age: Option<Duration>,
    /// Keep this many closed files; remove older ones (oldest first) after each rotation.
    pub keep: Option<usize>,
    /// Compress each closed file with gzip (in the background).
    pub compress: bool,
}

/// The digits of a closed file's name.
const DIGITS: usize = 12;

/// The stem and the extension (with its dot, or empty) of a log's file name.
fn split_name(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => (name[..i].to_owned(), name[i..].to_owned()),
        _ => (name, String::new()),
    }
}

/// The name the current file of `log` takes when it is closed, its first record being `seq`.
pub(crate) fn closed_path(log: &Path, first_seq: u64) -> PathBuf {
    let (stem, ext) = split_name(log);
    log.with_file_name(format!("{stem}.{first_seq:0DIGITS$}{ext}"))
}

/// The first `seq` a file name says, if it is a closed file of `log` (compressed or not).
fn closed_seq(log: &Path, name: &str) -> Option<u64> {
    let (stem, ext) = split_name(log);
    let rest = name.strip_prefix(&stem)?.strip_prefix('.')?;
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    let digits = rest.strip_suffix(ext.as_str())?;
    if digits.len() < DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The closed files of `log`, oldest first (by the first `seq` their names say). A file closed
/// both compressed and not (a compression cut short) is listed once, uncompressed.
pub fn closed_files(log: &Path) -> Vec<PathBuf> {
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(u64, bool, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq = closed_seq(log, &name)?;
            Some((seq, name.ends_with(".gz"), log.with_file_name(name)))
        })
        .collect();
    files.sort();
    files.dedup_by_key(|(seq, _, _)| *seq);
    files.into_iter().map(|(_, _, p)| p).collect()
}

/// The newest closed file of `log`, if any.
pub(crate) fn newest_closed(log: &Path) -> Option<PathBuf> {
    closed_files(log).pop()
}

/// After a rotation: compresses the file just closed (if asked), then removes the oldest
/// closed files beyond `keep`. Failures are said in the gateway's log; none stops the log.
pub(crate) fn housekeeping(log: &Path, closed: &Path, rotation: &Rotation) {
    if rotation.compress
        && let Err(e) = compress(closed)
    {
        tracing::error!(
            "cannot compress closed audit file `{}`: {e}",
            closed.display()
        );
    }
    if let Some(keep) = rotation.keep {
        let files = closed_files(log);
        let extra = files.len().saturating_sub(keep);
        for old in &files[..extra] {
            match std::fs::remove_file(old) {
                Ok(()) => tracing::info!(
                    "removed audit file `{}` (--audit-keep {keep})",
                    old.display()
                ),
                Err(e) => tracing::error!("cannot remove old audit file `{}`: {e}", old.display()),
            }
        }
    }
}

/// Writes `FILE.gz` (through `FILE.gz.tmp`, synced, then renamed) and removes `FILE`.
fn compress(file: &Path) -> std::io::Result<()> {
    let mut gz_name = file.as_os_str().to_owned();
    gz_name.push(".gz");
    let gz = PathBuf::from(gz_name);
    let mut tmp_name = gz.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut input = std::fs::File::open(file)?;
    let out = std::fs::File::create(&tmp)?;
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut input, &mut encoder)?;
    let mut out = encoder.finish()?;
    out.flush()?;
    out.sync_all()?;
    std::fs::rename(&tmp, &gz)?;
    std::fs::remove_file(file)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    #[test]
    fn closed_names_sort_in_chain_order_and_are_recognized() {
        let log = Path::new("/var/log/tollgate/audit.jsonl");
        let a = closed_path(log, 0);
        let b = closed_path(log, 45_000);
        assert_eq!(a, Path::new("/var/log/tollgate/audit.000000000000.jsonl"));
        assert_eq!(b, Path::new("/var/log/tollgate/audit.000000045000.jsonl"));
        assert_eq!(closed_seq(log, "audit.000000045000.jsonl"), Some(45_000));
        assert_eq!(closed_seq(log, "audit.000000045000.jsonl.gz"), Some(45_000));
        assert_eq!(closed_seq(log, "audit.jsonl"), None);
        assert_eq!(closed_seq(log, "audit.45000.jsonl"), None, "too few digits");
        assert_eq!(closed_seq(log, "other.000000045000.jsonl"), None);
        let bare = Path::new("log");
        assert_eq!(closed_path(bare, 7), Path::new("log.000000000007"));
        assert_eq!(closed_seq(bare, "log.000000000007"), Some(7));
    }

    #[test]
    fn closed_files_are_listed_oldest_first_and_compressed_ones_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        for name in [
            "audit.000000000200.jsonl.gz",
            "audit.000000000000.jsonl",
            "audit.000000000100.jsonl",
            "audit.jsonl",
            "unrelated.txt",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<String> = closed_files(&log)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "audit.000000000000.jsonl",
                "audit.000000000100.jsonl",
                "audit.000000000200.jsonl.gz"
            ]
        );
    }
}
