//! `tollgate explain POLICY TOOL [--args JSON] [--grant G] [--session S] [--class C]
//! [--format human|json]`: which rule decides a call, through which branch, against which
//! limits, and what the decision would be, without taking from any counter.
//!
//! The arguments are first brought to the values the tool reads, by its input schema in the
//! catalogue, as the gateway does (`tollgate_gateway::coerce`): the explanation is of the
//! decision the gateway would make, and says which arguments it reads otherwise than written.
//!
//! Exit codes: 0 explained (whatever the decision), 2 a broken policy or bad arguments.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tollgate_policy::{Call, Engine, MemoryStore, Policy, RiskClass};

use super::known::{KnownSource, known_tool, with_catalog};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    policy: PathBuf,
    /// The tool being called.
    #[arg(value_name = "TOOL")]
    tool: String,
    /// The call's arguments, a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    args: String,
    /// The agent's grant (what `scope: grant` limits count by).
    #[arg(long, default_value = "default")]
    grant: String,
    /// The MCP session (what `scope: session` limits count by).
    #[arg(long, default_value = "session-1")]
    session: String,
    /// The tool's risk class, overriding the catalogue's (read, write, execute, destructive).
    #[arg(long, value_parser = parse_class)]
    class: Option<RiskClass>,
    #[command(flatten)]
    known: KnownSource,
    /// `human` or `json`.
    #[arg(long, value_enum, default_value_t = super::check::Format::Human)]
    format: super::check::Format,
}

fn parse_class(text: &str) -> Result<RiskClass, String> {
    RiskClass::parse(text).ok_or_else(|| {
        format!("`{text}` is not a risk class: use read, write, execute or destructive")
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = match Policy::load(&args.policy) {
        Ok(p) => p,
        Err(diags) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let mut stderr = std::io::stderr().lock();
            for d in &diags.0 {
                let text = if color {
                    d.render_color()
                } else {
                    d.render_plain()
                };
                writeln!(stderr, "{text}")?;
            }
            writeln!(
                stderr,
                "error: `{}` is not a valid policy (see `tollgate check`)",
                args.policy.display()
            )?;
            return Ok(ExitCode::from(2));
        }
    };
    let arguments: serde_json::Value = serde_json::from_str(&args.args)
        .with_context(|| format!("--args is not JSON: `{}`", args.args))?;
    anyhow::ensure!(
        arguments.is_object(),
        "--args must be a JSON object of argument names to values, such as '{{\"operation\": \"read\"}}'"
    );
    let (known, schema) = with_catalog(&args.known, |catalog| {
        let known: Vec<_> = catalog.tools().iter().map(known_tool).collect();
        let schema = catalog.get(&args.tool).map(|t| t.input_schema.clone());
        (known, schema)
    })?;
    // As the gateway reads them (crate tollgate_gateway::coerce).
    let sent = arguments.clone();
    let mut arguments = Arc::new(arguments);
    let types = tollgate_gateway::coerce::ArgTypes::of_schema(schema.as_ref());
    let unreadable = types
        .as_ref()
        .map_or_else(Vec::new, |types| types.coerce(&mut arguments));
    let mut meta = known
        .iter()
        .find(|k| k.name == args.tool)
        .map(|k| k.meta.clone())
        .unwrap_or_default();
    // Arguments left out are checked as the tool's defaults, as the gateway checks them.
    meta.defaults = types.as_ref().and_then(|t| t.defaults().cloned());
    if let Some(class) = args.class {
        meta.class = Some(class);
    }
    let call = Call {
        tool: Arc::from(args.tool.as_str()),
        arguments: Arc::clone(&arguments),
        grant: args.grant.into(),
        session: args.session.into(),
        meta,
    };
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    let explanation = engine.explain_coerced(&call, Duration::ZERO, &unreadable);
    let redactions = engine.policy().redactions(&call.tool, &call.meta);
    let read_otherwise = read_otherwise(&sent, &arguments, &redactions);
    let mut stdout = std::io::stdout().lock();
    match args.format {
        super::check::Format::Human => {
            for (name, was, read) in &read_otherwise {
                writeln!(stdout, "argument: {name} = {was} is read as {read}")?;
            }
            write!(stdout, "{}", explanation.render())?;
            if !known.is_empty() && !known.iter().any(|k| *k.name == *call.tool) {
                writeln!(
                    stdout,
                    "note: `{}` is not in the catalogue; class selectors cannot match it",
                    call.tool
                )?;
            }
        }
        super::check::Format::Json => {
            let mut value = serde_json::to_value(&explanation)?;
            if !read_otherwise.is_empty()
                && let Some(object) = value.as_object_mut()
            {
                let read: serde_json::Map<String, serde_json::Value> = read_otherwise
                    .iter()
                    .map(|(name, was, read)| {
                        (name.clone(), serde_json::json!({"sent": was, "read": read}))
                    })
                    .collect();
                object.insert("arguments_read".into(), read.into());
            }
            writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The arguments the tool reads otherwise than they were written: `(name, sent, read)` as JSON
/// text, or `(redacted)` for an argument the policy redacts.
fn read_otherwise(
    sent: &serde_json::Value,
    read: &serde_json::Value,
    redactions: &[String],
) -> Vec<(String, String, String)> {
    let (Some(sent), Some(read)) = (sent.as_object(), read.as_object()) else {
        return Vec::new();
    };
    sent.iter()
        .filter_map(|(name, was)| {
            let now = read.get(name)?;
            if now == was {
                return None;
            }
            let hidden = redactions.iter().any(|r| r == name);
            let text = |v: &serde_json::Value| {
                if hidden {
                    "(redacted)".to_owned()
                } else {
                    v.to_string()
                }
            };
            Some((name.clone(), text(was), text(now)))
        })
        .collect()
}
