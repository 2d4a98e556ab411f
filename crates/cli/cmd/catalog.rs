//! `tollgate catalog [--tools SPEC] [--class C] [--level L] [--match GLOB]
//! [--format table|json]`: lists the risk-classified tool catalogue, or exports it as the JSON
//! that `tollgate check --catalog FILE` reads.
//!
//! Exit codes: 0 listed (even when the filters leave nothing), 2 a bad filter.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use tollgate_catalog::{Catalog, RiskClass, RiskLevel, ToolSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which tools: `real`, `default`, `full` (the default here), or names and patterns
    /// separated by commas.
    #[arg(long, default_value = "full")]
    tools: String,
    /// Only tools of this risk class: read, write, execute, destructive.
    #[arg(long, value_parser = parse_class)]
    class: Option<RiskClass>,
    /// Only tools of this risk level: low, medium, high, critical.
    #[arg(long, value_parser = parse_level)]
    level: Option<RiskLevel>,
    /// Only tools whose name matches this glob (case-sensitive), e.g. `Delete*`.
    #[arg(long = "match", value_name = "GLOB")]
    pattern: Option<String>,
    /// `table` (aligned columns) or `json` (a catalogue file).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn parse_class(text: &str) -> Result<RiskClass, String> {
    RiskClass::ALL
        .into_iter()
        .find(|c| c.as_str() == text)
        .ok_or_else(|| {
            format!("`{text}` is not a risk class: use read, write, execute or destructive")
        })
}

fn parse_level(text: &str) -> Result<RiskLevel, String> {
    RiskLevel::ALL
        .into_iter()
        .find(|l| l.as_str() == text)
        .ok_or_else(|| format!("`{text}` is not a risk level: use low, medium, high or critical"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::embedded();
    let matcher = args
        .pattern
        .as_deref()
        .map(tollgate_catalog::glob)
        .transpose()
        .context("--match")?;
    let tools: Vec<_> = catalog
        .select(&args.tools)
        .context("--tools")?
        .into_iter()
        .filter(|t| args.class.is_none_or(|c| t.class == c))
        .filter(|t| args.level.is_none_or(|l| t.level == l))
        .filter(|t| matcher.as_ref().is_none_or(|m| m.is_match(&t.name)))
        .collect();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let file = catalog.export(tools.iter().copied());
            writeln!(out, "{}", serde_json::to_string_pretty(&file)?)?;
        }
        Format::Table => {
            let width = tools.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
            writeln!(
                out,
                "{:<width$}  {:<11}  {:<8}  SOURCE",
                "NAME", "CLASS", "LEVEL"
            )?;
            for t in &tools {
                let source = match &t.source {
                    ToolSource::Real => "eks-mcp-server".to_owned(),
                    ToolSource::Aws {
                        service, operation, ..
                    } => format!("{service}:{operation}"),
                };
                writeln!(
                    out,
                    "{:<width$}  {:<11}  {:<8}  {source}",
                    t.name,
                    t.class.as_str(),
                    t.level.as_str()
                )?;
            }
            writeln!(out, "{} tools", tools.len())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
