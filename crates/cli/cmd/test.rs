//! `tollgate test [PATHS...] [--update | --accept] [--junit FILE] [--filter PATTERN]
//! [--snapshots DIR] [--format human|json] [--coverage [--min-coverage PCT]]`: runs scenario
//! files in virtual time, checks their expectations, and compares each transcript with its
//! snapshot (insta's `.snap` format) under `--snapshots` (default: the project's
//! `snapshots/scenarios`, found from each scenario's path, see [`snapshot_dir`]).
//!
//! On a mismatch it prints a diff and writes `NAME.snap.new` next to the snapshot; `--accept`
//! (or `cargo insta review`) accepts the pending `.snap.new` files, `--update` rewrites the
//! snapshots in place. `--junit FILE` writes a JUnit XML report; `--format json` one JSON
//! document with every call's decision, rule, reason and retry time (docs/ci.md);
//! `--coverage` what of each policy the scenarios exercised (`report.rs`). Exit codes: 0 all
//! passed, 1 a failure (an expectation, a snapshot, or coverage below `--min-coverage`), 2 a
//! broken scenario (the message says file:line:col).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

mod live;
mod report;

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
    /// Where the transcripts' snapshots live (default: `snapshots/scenarios` of the project
    /// each scenario belongs to: the nearest folder above the scenario that holds `snapshots/`,
    /// `Cargo.toml` or `.git`).
    #[arg(long, value_name = "DIR")]
    snapshots: Option<PathBuf>,
    /// `human`, or `json`: one JSON document on stdout with every scenario's result and every
    /// call's decision, rule, reason and `retry_after_seconds` (docs/ci.md).
    #[arg(long, value_enum, default_value_t = super::check::Format::Human)]
    format: super::check::Format,
    /// Report which rules, `when` cases, argument checks, limits, approval outcomes and
    /// defaults of each policy the scenarios exercised (docs/ci.md, "Coverage").
    #[arg(long)]
    coverage: bool,
    /// With `--coverage`: exit 1 when less than PCT percent of the items are covered.
    #[arg(long, value_name = "PCT", requires = "coverage", value_parser = parse_percent)]
    min_coverage: Option<f64>,
}

fn parse_percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a percentage from 0 to 100")),
    }
}

/// Where a scenario's snapshot lives when `--snapshots` is not given: `snapshots/scenarios`
/// in the nearest folder above the scenario file that holds a `snapshots/` folder, or else
/// that is a project's root (it holds `Cargo.toml` or `.git`); the scenario's own folder when
/// there is none. So `tollgate test` finds the same snapshots from any working directory.
pub fn snapshot_dir(scenario: &Path) -> PathBuf {
    let dir = scenario.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let start = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    // `ancestors` ends at the root: the walk is bounded by the path's depth.
    let project = start
        .ancestors()
        .find(|d| {
            d.join("snapshots").is_dir()
                || d.join("Cargo.toml").is_file()
                || d.join(".git").exists()
        })
        .unwrap_or(&start);
    relative(&project.join("snapshots").join("scenarios"))
}

/// `path` relative to the working directory when it is below it, as given otherwise.
fn relative(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| std::fs::canonicalize(cwd).ok())
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_owned))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_owned())
}

/// A path for people: relative to the working directory when it is below it.
pub(crate) fn shown(path: &Path) -> String {
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    relative(&full).display().to_string()
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
    let json = args.format == super::check::Format::Json;
    let color = !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // With `--format json` stdout is the JSON document alone; the lines for people go to
    // stderr.
    let mut out: Box<dyn Write> = if json {
        Box::new(std::io::stderr().lock())
    } else {
        Box::new(std::io::stdout().lock())
    };
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    let mut cases = Vec::new();
    // `--format json` and `--coverage` read the decisions from the audit log each run writes
    // (in a temporary folder).
    let observe = json || args.coverage;
    let audit_dir = if observe {
        Some(tempfile::tempdir().context("cannot make a temporary folder for the audit logs")?)
    } else {
        None
    };
    let mut coverage = report::Coverage::default();
    let mut results: Vec<serde_json::Value> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario");
        let snapshots = args.snapshots.clone().unwrap_or_else(|| snapshot_dir(file));
        if args.accept {
            let pending = snapshots.join(format!("{stem}.snap.new"));
            if pending.exists() {
                std::fs::rename(&pending, snapshots.join(format!("{stem}.snap")))
                    .with_context(|| format!("cannot accept `{}`", pending.display()))?;
                writeln!(out, "accepted {}", pending.display())?;
            }
        }
        let loaded = match tollgate_scenario::load(file) {
            Ok(l) => l,
            Err(e) => {
                writeln!(out, "BROKEN {}\n{e}\n", file.display())?;
                results.push(serde_json::json!({
                    "name": stem, "file": file.display().to_string(), "result": "broken",
                    "problems": [e.to_string()], "calls": [],
                }));
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
        let (outcome, audit) = match &audit_dir {
            Some(dir) => {
                let scenario = loaded.scenario.clone();
                let path = report::audit_path(dir.path(), index);
                let (outcome, _) = tollgate_scenario::run_observed(loaded, true, &path)
                    .map_err(|e| anyhow::anyhow!("cannot write the run's audit log: {e}"))?;
                let audit = report::read_audit(&path)
                    .with_context(|| format!("cannot read `{}`", path.display()))?;
                // Read once: a long replay's log is not kept on disk for the rest of the run.
                let _ = std::fs::remove_file(&path);
                if args.coverage {
                    coverage.add_run(file, &scenario, &audit);
                }
                (outcome, audit)
            }
            None => (tollgate_scenario::run(loaded), Vec::new()),
        };
        let snap = snapshots.join(format!("{stem}.snap"));
        let new = snapshots.join(format!("{stem}.snap.new"));
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
                results.push(serde_json::json!({
                    "name": stem, "file": file.display().to_string(), "result": "broken",
                    "problems": [format!("--live: {e}")], "calls": [],
                }));
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
                std::fs::create_dir_all(&snapshots)?;
                std::fs::write(&snap, snapshot_text(file, &outcome.transcript))?;
                let _ = std::fs::remove_file(&new);
            } else if current.is_none() {
                // A new scenario: one line says where its transcript is and how to accept it.
                std::fs::create_dir_all(&snapshots)?;
                std::fs::write(&new, snapshot_text(file, &outcome.transcript))?;
                let snapshots_flag = match &args.snapshots {
                    Some(dir) => format!(" --snapshots {}", dir.display()),
                    None => String::new(),
                };
                problems.push(format!(
                    "new scenario, no snapshot yet: review {}, then accept it with `tollgate test {}{snapshots_flag} --accept`",
                    new.display(),
                    file.display()
                ));
            } else {
                std::fs::create_dir_all(&snapshots)?;
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
                    "{} differs from the transcript ({}); review changed, then `tollgate test --accept` or `cargo insta review`:\n{text}",
                    snap.display(),
                    new.display(),
                ));
            }
        }
        if json {
            results.push(serde_json::json!({
                "name": stem,
                "file": file.display().to_string(),
                "result": if problems.is_empty() { "passed" } else { "failed" },
                "problems": problems,
                "calls": report::calls(&outcome.decisions, &audit),
            }));
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
    let policies = coverage.report();
    let (covered, total) = policies
        .iter()
        .fold((0, 0), |(c, t), p| (c + p.covered, t + p.total));
    let share = report::percent(covered, total);
    let below = args.coverage && args.min_coverage.is_some_and(|min| share < min);
    if args.coverage && !json {
        write!(out, "{}", report::human(&policies, args.min_coverage))?;
    }
    if json {
        let mut doc = serde_json::json!({
            "format": "tollgate-test/1",
            "scenarios": results,
            "summary": {"scenarios": n, "passed": passed, "failed": failed, "broken": broken},
        });
        if args.coverage {
            doc["coverage"] = serde_json::json!({
                "covered": covered,
                "total": total,
                "percent": share,
                "min_percent": args.min_coverage,
                "met": !below,
                "policies": policies,
            });
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(if broken > 0 {
        ExitCode::from(2)
    } else if failed > 0 || below {
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
