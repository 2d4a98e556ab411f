//! `tollgate diff OLD.json NEW.json [--catalog FILE] [--format human|json] [--fail-on-change]`:
//! what a policy change does to every call it can affect, without traffic
//! (`tollgate_policy::diff` says which calls it decides). Each probe call is read as the
//! gateway reads it: the tool's class for its arguments, the arguments brought to the tool's
//! input schema's types (`tollgate_gateway::coerce`), its defaults for arguments left out.
//!
//! Exit codes: 0 the policies decide alike (or they differ and `--fail-on-change` is not
//! given), 1 something changed and `--fail-on-change` is given, 2 bad input (a policy that does
//! not load, with file:line:col as `tollgate check` reports it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;
use tollgate_catalog::Catalog;
use tollgate_policy::diff::{self, ProbeTool, Report};
use tollgate_policy::{Policy, ToolMeta, TypeMismatch};

use super::check::Format;
use super::known::{KnownSource, known_tool, with_catalog};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy as it is (for example the base branch's).
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The policy as it would be.
    #[arg(value_name = "NEW")]
    new: PathBuf,
    #[command(flatten)]
    known: KnownSource,
    /// `human` or `json`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Exit 1 when any call is decided differently or any limit changed.
    #[arg(long)]
    fail_on_change: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let load = |path: &std::path::Path| {
        super::load_policy(path, &format!(" (run `tollgate check {}`)", path.display()))
    };
    let (old, new) = (load(&args.old)?, load(&args.new)?);
    let (Some(old), Some(new)) = (old, new) else {
        return Ok(ExitCode::from(2));
    };
    let (old, new) = (Arc::new(old), Arc::new(new));
    let report = with_catalog(&args.known, |catalog| compare(&old, &new, catalog))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let doc = serde_json::json!({
                "old": args.old.display().to_string(),
                "new": args.new.display().to_string(),
                "unchanged": report.unchanged(),
                "report": report,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Human => write!(
            out,
            "{}",
            human(
                &args.old.display().to_string(),
                &args.new.display().to_string(),
                &report
            )
        )?,
    }
    Ok(if args.fail_on_change && !report.unchanged() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every catalogue tool (with the operations its class depends on), every tool either policy
/// names, and a tool nobody names, decided under both policies.
fn compare(old: &Arc<Policy>, new: &Arc<Policy>, catalog: &Catalog) -> Report {
    let known: BTreeMap<&str, ToolMeta> = catalog
        .tools()
        .iter()
        .map(|t| (t.name.as_str(), known_tool(t).meta))
        .collect();
    let tools: Vec<ProbeTool> = catalog
        .tools()
        .iter()
        .map(|t| ProbeTool {
            name: t.name.clone(),
            class_values: if t.operation_classes.is_empty() {
                BTreeMap::new()
            } else {
                BTreeMap::from([(
                    "operation".to_owned(),
                    t.operation_classes
                        .keys()
                        .map(|k| Value::String(k.clone()))
                        .collect(),
                )])
            },
        })
        .collect();
    let tools = diff::named_tools(old, new, tools);
    // As the gateway reads a call (crates/gateway/src/core/decide.rs, `meta_of`): the class for these
    // arguments, the arguments brought to the schema's types, the defaults.
    let prepare = |tool: &str, arguments: Value| -> (Arc<Value>, ToolMeta, Vec<TypeMismatch>) {
        let mut arguments = Arc::new(arguments);
        let Some(entry) = catalog.get(tool) else {
            return (arguments, ToolMeta::default(), Vec::new());
        };
        let types = tollgate_gateway::coerce::ArgTypes::of_schema(Some(&entry.input_schema));
        let unreadable = types
            .as_ref()
            .map_or_else(Vec::new, |t| t.coerce(&mut arguments));
        let mut meta = known.get(tool).cloned().unwrap_or_default();
        meta.class = Some(tollgate_gateway::core::policy_class(
            entry.class_for(&arguments),
        ));
        meta.defaults = types.as_ref().and_then(|t| t.defaults().cloned());
        (arguments, meta, unreadable)
    };
    diff::diff(old, new, &tools, &prepare)
}

/// Changed calls a human report shows; the JSON report has all of them.
const SHOWN: usize = 50;

/// The report as a person reads it: what was probed, every changed call (old → new), every
/// changed limit.
pub fn human(old: &str, new: &str, report: &Report) -> String {
    let mut t = format!(
        "tollgate diff {old} {new}: {} calls decided under both ({} tools, one grant: no rule selects by grant)\n",
        report.calls, report.tools
    );
    if report.unchanged() {
        t.push_str("no change: every call is decided alike and every limit is the same\n");
        return t;
    }
    if !report.changed_calls.is_empty() {
        t.push_str(&format!(
            "\n{} call{} decided differently:\n",
            report.changed_calls.len(),
            if report.changed_calls.len() == 1 {
                ""
            } else {
                "s"
            }
        ));
        for c in report.changed_calls.iter().take(SHOWN) {
            t.push_str(&format!(
                "  {} {} grant={}\n    old: {}\n    new: {}\n",
                c.tool,
                c.arguments,
                c.grant,
                c.old.text(),
                c.new.text()
            ));
        }
    }
    if report.changed_calls.len() > SHOWN {
        t.push_str(&format!(
            "  ... and {} more (`--format json` lists every one)\n",
            report.changed_calls.len() - SHOWN
        ));
    }
    if !report.changed_limits.is_empty() {
        t.push_str(&format!(
            "\n{} limit{} changed:\n",
            report.changed_limits.len(),
            if report.changed_limits.len() == 1 {
                ""
            } else {
                "s"
            }
        ));
        let terms = |l: &Option<diff::LimitTerms>| match l {
            Some(l) => l.text(),
            None => "(no such counter)".to_owned(),
        };
        for l in &report.changed_limits {
            t.push_str(&format!("  {} -> {}\n", terms(&l.old), terms(&l.new)));
        }
    }
    if !report.partial.is_empty() {
        t.push_str(&format!(
            "\nnote: not every call of {} was probed (too many argument combinations: each argument was varied alone; or a `max_length` over 65536 was not probed past)\n",
            report.partial.join(", ")
        ));
    }
    t
}
