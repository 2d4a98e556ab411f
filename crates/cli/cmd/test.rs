//! `tollgate test [PATHS...] [--update | --accept] [--junit FILE] [--filter PATTERN]
//! [--snapshots DIR]`: runs scenario files in virtual time, checks their expectations, and
//! compares each transcript with its snapshot (insta's `.snap` format) under `--snapshots`
//! (default `snapshots/scenarios`).
//!
//! On a mismatch it prints a diff and writes `NAME.snap.new` next to the snapshot; `--accept`
//! (or `cargo insta review`) accepts the pending `.snap.new` files, `--update` rewrites the
//! snapshots in place. `--junit FILE` writes a JUnit XML report. Exit codes: 0 all passed, 1 a
//! failure (an expectation or a snapshot), 2 a broken scenario (the message says
//! file:line:col).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

mod live;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files or directories (default: `scenarios`).
    paths: Vec<PathBuf>,
    /// Rewrite the snapshots in place instead of failing on a difference.
    #[arg(long, conflicts_with = "accept")]
    update: bool,
    /// Accept the pending `NAME.snap.new` files (written by an earlier run), then check.
    #[arg(long)]
    accept: bool,
    /// Write a JUnit XML report (one test case per scenario) to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Only scenarios whose file name contains this text.
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
    /// Also run each scenario against real processes (a `tollgate gateway` in front of a
    /// `tollgate mock-eks` over stdio, in real time) and require the same decisions.
    #[arg(long)]
    live: bool,
    /// With `--live`: real seconds per scenario second (0.1 runs ten times faster). The
    /// policy's windows are not scaled.
    #[arg(long, value_name = "F", default_value_t = 1.0, requires = "live")]
    time_scale: f64,
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
    let mut cases = Vec::new();
    for file in &files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario");
        if args.accept {
            let pending = args.snapshots.join(format!("{stem}.snap.new"));
            if pending.exists() {
                std::fs::rename(&pending, args.snapshots.join(format!("{stem}.snap")))
                    .with_context(|| format!("cannot accept `{}`", pending.display()))?;
                writeln!(out, "accepted {}", pending.display())?;
            }
        }
        let loaded = match tollgate_scenario::load(file) {
            Ok(l) => l,
            Err(e) => {
                writeln!(out, "BROKEN {}\n{e}\n", file.display())?;
                cases.push(Case {
                    name: stem.to_owned(),
                    file: file.display().to_string(),
                    calls: 0,
                    result: CaseResult::Broken(e.to_string()),
                });
                broken += 1;
                continue;
            }
        };
        let plan = if args.live {
            Some(tollgate_scenario::wire_plan(&loaded))
        } else {
            None
        };
        let live_config = args.live.then(|| live::Config::of(&loaded));
        let outcome = tollgate_scenario::run(loaded);
        let snap = args.snapshots.join(format!("{stem}.snap"));
        let new = args.snapshots.join(format!("{stem}.snap.new"));
        let current = std::fs::read_to_string(&snap).ok();
        let matches = current.as_deref().map(snapshot_body) == Some(outcome.transcript.as_str());
        let mut problems = outcome.failures.clone();
        match (plan, live_config) {
            (Some(Ok(plan)), Some(config)) => {
                let answered = live::run(&config, &plan, args.time_scale)?;
                let answered_calls = answered.len();
                let live = in_virtual_order(&outcome.decisions, answered);
                let virtual_time: Vec<&str> =
                    outcome.decisions.iter().map(|d| &*d.decision).collect();
                for (i, d) in outcome.decisions.iter().enumerate() {
                    let got = live.get(i).map_or("missing", String::as_str);
                    if got != &*d.decision {
                        problems.push(format!(
                            "live run differs at call {} (`{}` at {:.3}s): virtual time {}, live {got}",
                            i + 1,
                            d.tool,
                            d.at_ms as f64 / 1000.0,
                            d.decision
                        ));
                    }
                }
                if answered_calls != virtual_time.len() {
                    problems.push(format!(
                        "live run answered {} calls, virtual time {}",
                        answered_calls,
                        virtual_time.len()
                    ));
                }
            }
            (Some(Err(e)), _) => {
                writeln!(out, "BROKEN {}\n--live: {e}\n", file.display())?;
                cases.push(Case {
                    name: stem.to_owned(),
                    file: file.display().to_string(),
                    calls: 0,
                    result: CaseResult::Broken(format!("--live: {e}")),
                });
                broken += 1;
                continue;
            }
            _ => {}
        }
        if !matches {
            if args.update {
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
                    "{} differs from the transcript ({}); review {}, then `tollgate test --accept` or `cargo insta review`:\n{text}",
                    snap.display(),
                    new.display(),
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
            cases.push(Case {
                name: stem.to_owned(),
                file: file.display().to_string(),
                calls: outcome.calls,
                result: CaseResult::Passed,
            });
        } else {
            writeln!(out, "FAILED {}", file.display())?;
            for p in &problems {
                writeln!(out, "  {p}")?;
            }
            failed += 1;
            cases.push(Case {
                name: stem.to_owned(),
                file: file.display().to_string(),
                calls: outcome.calls,
                result: CaseResult::Failed(problems),
            });
        }
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, junit(&cases))
            .with_context(|| format!("cannot write the JUnit report `{}`", path.display()))?;
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

/// One scenario's result, for the JUnit report.
#[derive(Debug)]
struct Case {
    name: String,
    file: String,
    calls: u64,
    result: CaseResult,
}

#[derive(Debug)]
enum CaseResult {
    Passed,
    Failed(Vec<String>),
    Broken(String),
}

/// XML text and attribute escaping; characters XML 1.0 cannot hold (most control characters,
/// such as the diff's colour codes) are dropped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML report: one `testsuite` ("tollgate scenarios"), one `testcase` per scenario
/// (`classname` is the scenario file); a failed expectation or snapshot is a `failure`, a
/// broken scenario an `error`. No timings, so the report is deterministic.
fn junit(cases: &[Case]) -> String {
    let failures = cases
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Failed(_)))
        .count();
    let errors = cases
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Broken(_)))
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"tollgate test\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\">\n",
        cases.len()
    ));
    x.push_str(&format!(
        "  <testsuite name=\"tollgate scenarios\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\">\n",
        cases.len()
    ));
    for c in cases {
        let head = format!(
            "    <testcase name=\"{}\" classname=\"{}\"",
            xml_escape(&c.name),
            xml_escape(&c.file)
        );
        match &c.result {
            CaseResult::Passed => x.push_str(&format!(
                "{head}>\n      <system-out>{} call{}</system-out>\n    </testcase>\n",
                c.calls,
                if c.calls == 1 { "" } else { "s" }
            )),
            CaseResult::Failed(problems) => {
                let first = problems.first().map(|p| p.lines().next().unwrap_or_default());
                x.push_str(&format!(
                    "{head}>\n      <failure message=\"{}\" type=\"scenario\">{}</failure>\n    </testcase>\n",
                    xml_escape(first.unwrap_or_default()),
                    xml_escape(&problems.join("\n"))
                ));
            }
            CaseResult::Broken(e) => x.push_str(&format!(
                "{head}>\n      <error message=\"{}\" type=\"broken scenario\">{}</error>\n    </testcase>\n",
                xml_escape(e.lines().next().unwrap_or_default()),
                xml_escape(e)
            )),
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// A live run's decisions (in the order the calls were sent) in the order of the virtual-time
/// run's (where a held call's outcome comes when it is decided): matched by request id, and
/// calls without one (or sharing one) in the order they were sent. A call the live run did not
/// answer at all is `missing`.
fn in_virtual_order(
    virtual_time: &[tollgate_scenario::CallDecision],
    live: Vec<live::LiveDecision>,
) -> Vec<String> {
    use std::collections::{HashMap, VecDeque};
    let mut by_id: HashMap<Option<tollgate_scenario::IdText>, VecDeque<String>> = HashMap::new();
    for (id, decision) in live {
        let id = id.map(|text| tollgate_scenario::IdText::from_text(&text));
        by_id.entry(id).or_default().push_back(decision);
    }
    virtual_time
        .iter()
        .map(|d| {
            let got = by_id.get_mut(&d.id).and_then(VecDeque::pop_front);
            got.unwrap_or_else(|| "missing".to_owned())
        })
        .collect()
}
