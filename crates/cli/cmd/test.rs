//! `tollgate test [PATHS...] [--accept] [--filter PATTERN] [--snapshots DIR]`: runs scenario
//! files in virtual time, checks their expectations, and compares each transcript with its
//! snapshot (insta's `.snap` format) under `--snapshots` (default `snapshots/scenarios`).
//!
//! On a mismatch it prints a diff and writes `NAME.snap.new` next to the snapshot; `--accept`
//! (or `cargo insta review`) accepts it. Exit codes: 0 all passed, 1 a failure (an expectation
//! or a snapshot), 2 a broken scenario (the message says file:line:col).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files or directories (default: `scenarios`).
    paths: Vec<PathBuf>,
    /// Write new snapshots instead of failing on a difference.
    #[arg(long)]
    accept: bool,
    /// Only scenarios whose file name contains this text.
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
    /// Where the transcripts' snapshots live.
    #[arg(long, value_name = "DIR", default_value = "snapshots/scenarios")]
    snapshots: PathBuf,
}

fn scenario_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read `{}`", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            anyhow::ensure!(p.exists(), "no scenario `{}`", p.display());
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// The snapshot file text: insta's header, then the transcript.
fn snapshot_text(source: &Path, transcript: &str) -> String {
    format!(
        "---\nsource: {}\nexpression: transcript\n---\n{transcript}",
        source.display()
    )
}

/// The transcript part of a snapshot file (after the second `---` line).
fn snapshot_body(text: &str) -> &str {
    let mut parts = text.splitn(3, "---\n");
    let _ = parts.next();
    let _ = parts.next();
    parts.next().unwrap_or_default()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("scenarios")]
    } else {
        args.paths.clone()
    };
    let files: Vec<PathBuf> = scenario_files(&paths)?
        .into_iter()
        .filter(|f| {
            args.filter.as_ref().is_none_or(|p| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(p.as_str()))
            })
        })
        .collect();
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    for file in &files {
        let loaded = match tollgate_scenario::load(file) {
            Ok(l) => l,
            Err(e) => {
                writeln!(out, "BROKEN {}\n{e}\n", file.display())?;
                broken += 1;
                continue;
            }
        };
        let outcome = tollgate_scenario::run(loaded);
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario");
        let snap = args.snapshots.join(format!("{stem}.snap"));
        let new = args.snapshots.join(format!("{stem}.snap.new"));
        let current = std::fs::read_to_string(&snap).ok();
        let matches = current.as_deref().map(snapshot_body) == Some(outcome.transcript.as_str());
        let mut problems = outcome.failures.clone();
        if !matches {
            if args.accept {
                std::fs::create_dir_all(&args.snapshots)?;
                std::fs::write(&snap, snapshot_text(file, &outcome.transcript))?;
                let _ = std::fs::remove_file(&new);
            } else {
                std::fs::create_dir_all(&args.snapshots)?;
                std::fs::write(&new, snapshot_text(file, &outcome.transcript))?;
                let old = current.as_deref().map(snapshot_body).unwrap_or_default();
                let diff = similar::TextDiff::from_lines(old, outcome.transcript.as_str());
                let mut text = String::new();
                for change in diff.iter_all_changes() {
                    let (sign, start, end) = match change.tag() {
                        similar::ChangeTag::Delete => ("-", "\x1b[31m", "\x1b[0m"),
                        similar::ChangeTag::Insert => ("+", "\x1b[32m", "\x1b[0m"),
                        similar::ChangeTag::Equal => continue,
                    };
                    if color {
                        text.push_str(&format!("{start}{sign}{change}{end}"));
                    } else {
                        text.push_str(&format!("{sign}{change}"));
                    }
                }
                problems.push(format!(
                    "{} differs from the transcript ({}); review it, then `tollgate test --accept` or `cargo insta review`:\n{text}",
                    snap.display(),
                    if current.is_some() { "changed" } else { "no snapshot yet" }
                ));
            }
        }
        if problems.is_empty() {
            let calls = if outcome.calls == 1 {
                "1 call".to_owned()
            } else {
                format!("{} calls", outcome.calls)
            };
            writeln!(out, "ok     {} ({calls})", file.display())?;
            passed += 1;
        } else {
            writeln!(out, "FAILED {}", file.display())?;
            for p in problems {
                writeln!(out, "  {p}")?;
            }
            failed += 1;
        }
    }
    let n = files.len();
    let noun = if n == 1 { "scenario" } else { "scenarios" };
    writeln!(
        out,
        "\n{n} {noun}: {passed} passed, {failed} failed, {broken} broken"
    )?;
    Ok(if broken > 0 {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
