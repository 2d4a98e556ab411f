//! `tollgate check POLICY... [--config FILE] [--catalog FILE] [--format human|json]
//! [--deny-warnings]`: validates policy files (and a gateway config file, and the policy it
//! names), printing every error and warning like a compiler would.
//!
//! Exit codes: 0 every file is valid (warnings are printed), 1 `--deny-warnings` and a warning
//! was found, 2 a file has errors or cannot be read.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_policy::selector::Tier;
use tollgate_policy::source::escape_pointer;
use tollgate_policy::{Diagnostic, KnownTool, Policy, Severity};

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
    // The config's policy and its upstreams (name, prefix), when it has several.
    let mut several: Option<(PathBuf, Vec<(String, String)>)> = None;
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
                if config.upstreams.len() > 1 {
                    let named = config
                        .upstreams
                        .iter()
                        .map(|u| (u.name.clone(), u.prefix.clone()))
                        .collect();
                    several = Some((config.policy.clone(), named));
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
        let upstreams = several
            .as_ref()
            .filter(|(p, _)| p == path)
            .map(|(_, u)| u.as_slice());
        let diagnostics: Vec<Diagnostic> = match Policy::load(path) {
            Ok(policy) => {
                summary = Some(policy.summary());
                match upstreams {
                    // Behind several upstreams the gateway's tools are the catalogue's under
                    // each upstream's prefix; a name without one can never match.
                    Some(upstreams) => {
                        let never = unprefixed_selectors(&policy, upstreams);
                        let at = |d: &Diagnostic| d.labels.first().map(|l| l.span.clone());
                        let mut d = policy.lint(&exposed_tools(&known, upstreams));
                        // Said once, with the reason: not also as a name the catalogue lacks.
                        d.retain(|d| {
                            !matches!(d.code, "policy::unknown_tool" | "policy::matches_nothing")
                                || !never.iter().any(|n| at(n).is_some() && at(n) == at(d))
                        });
                        d.extend(never);
                        d
                    }
                    None => policy.lint(&known),
                }
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

/// The known tools as a gateway of several upstreams exposes them: each under each upstream's
/// prefix, belonging to that upstream (for `upstream:` selectors).
fn exposed_tools(known: &[KnownTool], upstreams: &[(String, String)]) -> Vec<KnownTool> {
    upstreams
        .iter()
        .flat_map(|(name, prefix)| {
            let upstream: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
            known.iter().map(move |k| {
                let mut k = k.clone();
                k.name = format!("{prefix}{}", k.name);
                k.meta.upstream = Some(std::sync::Arc::clone(&upstream));
                k
            })
        })
        .collect()
}

/// Warnings for the selectors of a policy run behind several upstreams that can never match:
/// an exact name or a pattern that no upstream's prefix can start (every exposed name starts
/// with one), and `upstream:NAME` for a name the config does not have. Each at the selector's
/// key, file:line:col.
fn unprefixed_selectors(policy: &Policy, upstreams: &[(String, String)]) -> Vec<Diagnostic> {
    let prefixes: Vec<String> = upstreams.iter().map(|(_, p)| format!("`{p}`")).collect();
    let example = upstreams.first().map_or("", |(_, p)| p.as_str());
    let mut out = Vec::new();
    for (selector, tier) in policy.selectors() {
        let span = policy
            .source
            .key_span(&format!("/tools/{}", escape_pointer(selector)));
        let warning = match tier {
            Tier::Exact if !upstreams.iter().any(|(_, p)| selector.starts_with(p.as_str())) => {
                Diagnostic::warning(
                    &policy.source,
                    "policy::no_upstream_prefix",
                    format!(
                        "`{selector}` names no tool of this gateway: with several upstreams every tool is exposed with its upstream's prefix ({}), so this rule can never match",
                        prefixes.join(", ")
                    ),
                )
                .with_help(format!(
                    "write the exposed name, e.g. `{example}{selector}`, or select the upstream with `upstream:NAME`"
                ))
            }
            Tier::Glob => {
                // The pattern's literal head: a name it matches starts with it.
                let head: String = selector
                    .chars()
                    .take_while(|c| !matches!(c, '*' | '?' | '['))
                    .collect();
                if upstreams
                    .iter()
                    .any(|(_, p)| head.starts_with(p.as_str()) || p.starts_with(&head))
                {
                    continue;
                }
                Diagnostic::warning(
                    &policy.source,
                    "policy::no_upstream_prefix",
                    format!(
                        "the pattern `{selector}` matches no tool of this gateway: with several upstreams every tool is exposed with its upstream's prefix ({}), and no name this pattern matches starts with one",
                        prefixes.join(", ")
                    ),
                )
                .with_help(format!(
                    "put the prefix in the pattern, e.g. `{example}{selector}`, or start it with `*`"
                ))
            }
            Tier::Upstream => {
                let name = selector.strip_prefix("upstream:").unwrap_or(selector);
                if upstreams.iter().any(|(n, _)| n == name) {
                    continue;
                }
                let names: Vec<String> = upstreams.iter().map(|(n, _)| format!("`{n}`")).collect();
                Diagnostic::warning(
                    &policy.source,
                    "policy::unknown_upstream",
                    format!(
                        "`{selector}` selects no upstream of this gateway (its upstreams are {}), so this rule can never match",
                        names.join(", ")
                    ),
                )
                .with_help("name an upstream of the config file")
            }
            _ => continue,
        };
        out.push(match span {
            Some(span) => warning.with_label(span, "never matches"),
            None => warning,
        });
    }
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
