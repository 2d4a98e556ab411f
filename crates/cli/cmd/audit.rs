//! `tollgate audit verify FILE... [--partial] [--expect-head SEQ:HASH]`, `tollgate audit tail
//! FILE... [-n N]`, `tollgate audit query FILE... [--tool GLOB] [--grant G] [--session S]
//! [--decision KIND] [--since MS] [--until MS] [--format table|json]`: the gateway's
//! hash-chained audit log. Several files are a rotated log's files in chain order, oldest
//! first (`audit*.jsonl*` in a shell lists them so); they are checked as one chain.
//!
//! Exit codes: verify: 0 the chain holds, 1 it is broken (the message says where and how),
//! 2 the file cannot be read or a flag is bad. tail and query: 0; 1 when the log does not
//! verify (only records before the break are shown, the table ends with a line saying so, and
//! the break is reported on stderr: a record at or after it is never shown); 2 for bad input.
//!
//! The table is for a terminal: every string a client chose (tool, grant, ...) is escaped by
//! `tollgate_mcp::display`, so a line feed cannot forge a row and an escape sequence cannot
//! reach the terminal. `--format json` prints the records exactly, as JSON escapes them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;
use tollgate_gateway::audit::{Verified, read_verified_set, verify_set};
use tollgate_mcp::display::{ident, text};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Check the hash chain: every line exactly a record, every record intact, none deleted,
    /// inserted or reordered (a cut at a record boundary is caught only by --expect-head).
    Verify {
        /// The log's files, oldest first (a rotated log: every closed file, then the current).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Allow the first file to continue an earlier one that is not given (removed by
        /// `--audit-keep`, or archived): records before it are not checked.
        #[arg(long)]
        partial: bool,
        /// The head the log must end at (`SEQ:HASH`, e.g. from `tollgate audit tail -n 1`),
        /// to detect records cut from the end.
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<String>,
    },
    /// Print the last records (of those that verify: exit 1 after a break in the chain).
    Tail {
        /// The log's files, oldest first (the first may continue files not given).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// How many records.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print the records that match every filter given (of those that verify: exit 1 after a
    /// break in the chain).
    Query {
        /// The log's files, oldest first (the first may continue files not given).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Tool name glob (case-sensitive).
        #[arg(long, value_name = "GLOB")]
        tool: Option<String>,
        #[arg(long)]
        grant: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// allow, deny, rate_limited, approval_required, invalid_arguments, unknown_tool, ...
        #[arg(long, value_name = "KIND")]
        decision: Option<String>,
        /// Only records at or after this many milliseconds since the gateway started.
        #[arg(long, value_name = "MS")]
        since: Option<u64>,
        /// Only records before this many milliseconds since the gateway started.
        #[arg(long, value_name = "MS")]
        until: Option<u64>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.command {
        AuditCommand::Verify {
            files,
            partial,
            expect_head,
        } => {
            let head = match &expect_head {
                None => None,
                Some(text) => {
                    let (seq, hash) = text
                        .split_once(':')
                        .context("--expect-head is `SEQ:HASH`, e.g. `41:3fa2...`")?;
                    Some((
                        seq.parse::<u64>()
                            .context("--expect-head: SEQ is a record number")?,
                        hash.to_owned(),
                    ))
                }
            };
            readable(&files)?;
            let set = verify_set(
                &files,
                partial,
                head.as_ref().map(|(s, h)| (*s, h.as_str())),
            )
            .context("cannot read the audit log")?;
            let report = &set.report;
            if let Some(p) = report.problems.first() {
                let file = &files[set.broken_file.unwrap_or(0)];
                writeln!(
                    out,
                    "{}:{}: the chain is broken: {}",
                    file.display(),
                    p.line,
                    p.message
                )?;
                writeln!(out, "{} records before the break verify", report.records)?;
                return Ok(ExitCode::from(1));
            }
            let what = match files.as_slice() {
                [one] => one.display().to_string(),
                many => format!("{} files", many.len()),
            };
            let from = match &report.continues {
                Some(previous) if report.records > 0 => format!(
                    ", from record {} (it continues `{}`, not checked)",
                    report.first_seq,
                    text(previous)
                ),
                _ => String::new(),
            };
            writeln!(
                out,
                "{what}: ok, {} records{from}, head {}:{}{}",
                report.records,
                report.next_seq.saturating_sub(1),
                report.last_hash,
                if report.closed {
                    ""
                } else if report.rotated_to.is_some() {
                    " (the last file given was rotated: the files after it are not given)"
                } else {
                    " (no closing record: the gateway is running, stopped without a clean shutdown, or the end was cut; compare with a head kept elsewhere using --expect-head)"
                }
            )?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail { files, n, format } => {
            readable(&files)?;
            let read = read_verified_set(&files, true).context("cannot read the audit log")?;
            let start = read.records.len().saturating_sub(n);
            print_records(&mut out, &read.records[start..], format)?;
            Ok(report_break(&mut out, &files, &read, format)?)
        }
        AuditCommand::Query {
            files,
            tool,
            grant,
            session,
            decision,
            since,
            until,
            format,
        } => {
            let matcher = tool
                .as_deref()
                .map(tollgate_catalog::glob)
                .transpose()
                .context("--tool")?;
            readable(&files)?;
            let read = read_verified_set(&files, true).context("cannot read the audit log")?;
            let kept: Vec<&Value> = read
                .records
                .iter()
                .filter(|r| {
                    matcher
                        .as_ref()
                        .is_none_or(|m| r["tool"].as_str().is_some_and(|t| m.is_match(t)))
                })
                .filter(|r| {
                    grant
                        .as_ref()
                        .is_none_or(|g| r["grant"].as_str() == Some(g))
                })
                .filter(|r| {
                    session
                        .as_ref()
                        .is_none_or(|s| r["session"].as_str() == Some(s))
                })
                .filter(|r| {
                    decision
                        .as_ref()
                        .is_none_or(|d| decision_of(r) == Some(d.as_str()))
                })
                .filter(|r| since.is_none_or(|s| r["t_ms"].as_u64().unwrap_or(0) >= s))
                .filter(|r| until.is_none_or(|u| r["t_ms"].as_u64().unwrap_or(0) < u))
                .collect();
            print_records(&mut out, &kept, format)?;
            Ok(report_break(&mut out, &files, &read, format)?)
        }
    }
}

/// After `tail` or `query` printed the records that verify: when the log does not verify to
/// its end, says so (a last table line, and stderr) and answers exit code 1.
fn report_break(
    out: &mut impl Write,
    files: &[PathBuf],
    read: &Verified,
    format: Format,
) -> std::io::Result<ExitCode> {
    let Some(p) = read.report.problems.first() else {
        return Ok(ExitCode::SUCCESS);
    };
    let file = &files[read.broken_file.unwrap_or(0)];
    let all: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    if format == Format::Table {
        writeln!(
            out,
            "-- the chain is broken at line {}: nothing from there on is shown --",
            p.line
        )?;
    }
    eprintln!(
        "error: {}:{}: the chain is broken: {}; only the {} records before line {} were read (run `tollgate audit verify {}`)",
        file.display(),
        p.line,
        p.message,
        read.report.records,
        p.line,
        all.join(" ")
    );
    Ok(ExitCode::from(1))
}

/// Each file exists and can be opened: said with its name, exit 2, before anything is checked.
fn readable(files: &[PathBuf]) -> anyhow::Result<()> {
    for f in files {
        std::fs::File::open(f)
            .with_context(|| format!("cannot read audit log `{}`", f.display()))?;
    }
    Ok(())
}

fn decision_of(r: &Value) -> Option<&str> {
    r["decision"]["decision"]
        .as_str()
        .or_else(|| r["decision"].as_str())
}

fn print_records<R: std::borrow::Borrow<Value>>(
    out: &mut impl Write,
    records: &[R],
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            for r in records {
                writeln!(out, "{}", r.borrow())?;
            }
        }
        Format::Table => {
            writeln!(
                out,
                "{:>6}  {:>10}  {:<8}  {:<12}  {:<22}  {:<24}  DETAIL",
                "SEQ", "T_MS", "KIND", "GRANT", "TOOL", "DECISION"
            )?;
            for r in records {
                let r = r.borrow();
                let detail = match r["kind"].as_str() {
                    Some("decision") => r["decision"]["rule"]["selector"]
                        .as_str()
                        .map(|s| format!("rule {}", ident(s)))
                        .unwrap_or_default(),
                    Some("outcome") => format!(
                        "{} ms{}{}",
                        cell(&r["latency_ms"]),
                        if r["is_error"] == true {
                            ", isError"
                        } else {
                            ""
                        },
                        if r["timeout"] == true {
                            ", timeout"
                        } else {
                            ""
                        }
                    ),
                    Some("open") => text(r["policy"].as_str().unwrap_or_default()).to_string(),
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "{:>6}  {:>10}  {:<8}  {:<12}  {:<22}  {:<24}  {detail}",
                    cell(&r["seq"]),
                    cell(&r["t_ms"]),
                    ident(r["kind"].as_str().unwrap_or("?")),
                    ident(r["grant"].as_str().unwrap_or("-")),
                    ident(r["tool"].as_str().unwrap_or("-")),
                    ident(decision_of(r).unwrap_or("-")),
                )?;
            }
        }
    }
    Ok(())
}

/// A value for a table cell: a string escaped as an identifier, anything else as its JSON text
/// (escaped too: JSON leaves some characters raw that a terminal acts on).
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => ident(s).to_string(),
        other => text(&other.to_string()).to_string(),
    }
}
