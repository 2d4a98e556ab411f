//! `tollgate check POLICY... [--config FILE] [--catalog FILE] [--format human|json]
//! [--deny-warnings]`: validates policy files (and a gateway config file, and the policy it
//! names), printing every error and warning like a compiler would.
//!
//! Exit codes: 0 every file is valid (warnings are printed), 1 `--deny-warnings` and a warning
//! was found, 2 a file has errors or cannot be read.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_policy::{Diagnostic, Policy, Severity};

use super::known::{KnownSource, known_tools};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy files to check.
    #[arg(required_unless_present = "config", value_name = "POLICY")]
    policies: Vec<PathBuf>,
    /// A gateway config file (TOML) to check: its keys, types and values, then the policy it
    /// names.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    known: KnownSource,
    /// `human` (compiler-style text on stderr, a summary on stdout) or `json` (stdout).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Treat warnings as failures (exit code 1).
    #[arg(long)]
    deny_warnings: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let known = known_tools(&args.known)?;
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (mut errors, mut warnings) = (0usize, 0usize);
    let mut reports = Vec::new();
    let mut stdout = std::io::stdout().lock();
    let mut policies = args.policies.clone();
    if let Some(path) = &args.config {
        let diagnostics = match tollgate_gateway::config::load(path) {
            Ok(config) => {
                let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
                if args.format == Format::Human {
                    writeln!(
                        stdout,
                        "{}: ok: {} ({}), {}",
                        path.display(),
                        plural(names.len(), "upstream"),
                        names.join(", "),
                        if config.listen.is_some() {
                            "HTTP"
                        } else {
                            "stdio"
                        }
                    )?;
                }
                policies.push(config.policy);
                Vec::new()
            }
            Err(diags) => diags.0,
        };
        errors += diagnostics.len();
        match args.format {
            Format::Human => {
                let mut stderr = std::io::stderr().lock();
                for d in &diagnostics {
                    let text = if color {
                        d.render_color()
                    } else {
                        d.render_plain()
                    };
                    writeln!(stderr, "{text}")?;
                }
                if !diagnostics.is_empty() {
                    writeln!(
                        stdout,
                        "{}: {}",
                        path.display(),
                        plural(diagnostics.len(), "error")
                    )?;
                }
            }
            Format::Json => reports.push(serde_json::json!({
                "file": path.display().to_string(),
                "valid": diagnostics.is_empty(),
                "summary": null,
                "errors": diagnostics.len(),
                "warnings": 0,
                "diagnostics": diagnostics.iter().map(Diagnostic::to_json).collect::<Vec<_>>(),
            })),
        }
    }
    for path in &policies {
        let mut summary = None;
        let diagnostics: Vec<Diagnostic> = match Policy::load(path) {
            Ok(policy) => {
                summary = Some(policy.summary());
                policy.lint(&known)
            }
            Err(diags) => diags.0,
        };
        let e = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let w = diagnostics.len() - e;
        errors += e;
        warnings += w;
        match args.format {
            Format::Human => {
                let mut stderr = std::io::stderr().lock();
                for d in &diagnostics {
                    let text = if color {
                        d.render_color()
                    } else {
                        d.render_plain()
                    };
                    writeln!(stderr, "{text}")?;
                }
                let about = summary
                    .as_deref()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                let verdict = match (e, w) {
                    (0, 0) => format!("ok{about}"),
                    (0, w) => format!("ok{about}, {}", plural(w, "warning")),
                    (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
                };
                writeln!(stdout, "{}: {verdict}", path.display())?;
            }
            Format::Json => reports.push(serde_json::json!({
                "file": path.display().to_string(),
                "valid": e == 0,
                "summary": summary,
                "errors": e,
                "warnings": w,
                "diagnostics": diagnostics.iter().map(Diagnostic::to_json).collect::<Vec<_>>(),
            })),
        }
    }
    if args.format == Format::Json {
        let out = serde_json::json!({
            "files": reports,
            "errors": errors,
            "warnings": warnings,
            "known_tools": known.len(),
        });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
    }
    Ok(if errors > 0 {
        ExitCode::from(2)
    } else if warnings > 0 && args.deny_warnings {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
