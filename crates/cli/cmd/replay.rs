//! `tollgate replay RECORDING (--policy FILE | --config FILE [--policy FILE]) [--against
//! recorded|mock-eks] [--format table|json] [--fail-on-change]`: replays a gateway recording
//! under another policy, in virtual time from the recorded timestamps, and reports every
//! decision that changes ("what would this policy have done to yesterday's traffic?"). A
//! recording made through a gateway of several upstreams is replayed with its config file
//! (`--config`: the upstreams' names and prefixes, and its policy unless `--policy` names
//! another). Exit 0, or 1 with `--fail-on-change` when a decision changed; 2 for an unreadable
//! recording, config or policy, or a recording of several upstreams without `--config`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_scenario::recording::{self, Against};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AgainstArg {
    /// Allowed calls are answered with the upstream's recorded answers.
    Recorded,
    /// Allowed calls go to the in-process mock EKS server.
    MockEks,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A recording written by `tollgate gateway --record FILE`.
    recording: PathBuf,
    /// The policy to replay the recording under (default: the `--config` file's).
    #[arg(long, value_name = "FILE", required_unless_present = "config")]
    policy: Option<PathBuf>,
    /// The config file of the gateway (`tollgate gateway --config`): its upstreams' names and
    /// prefixes (needed for a recording made through several upstreams), and its policy.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where allowed calls go.
    #[arg(long, value_enum, default_value = "recorded")]
    against: AgainstArg,
    /// `table` (changed decisions per tool and grant, then each call) or `json`.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Exit 1 when any decision changed.
    #[arg(long)]
    fail_on_change: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rec = recording::parse(&args.recording).map_err(anyhow::Error::msg)?;
    let against = match args.against {
        AgainstArg::Recorded => Against::Recorded,
        AgainstArg::MockEks => Against::MockEks,
    };
    let config = match &args.config {
        Some(path) => match super::load_config(path, "; nothing was replayed")? {
            Some(c) => Some(c),
            None => return Ok(ExitCode::from(2)),
        },
        None => None,
    };
    let policy = match (&args.policy, &config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.policy.clone(),
        (None, None) => anyhow::bail!("no policy: give `--policy FILE` or `--config FILE`"),
    };
    let upstreams: Vec<(String, String)> = config
        .iter()
        .flat_map(|c| &c.upstreams)
        .map(|u| (u.name.clone(), u.prefix.clone()))
        .collect();
    let report =
        recording::replay(rec, &policy, against, &upstreams).map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Table => {
            writeln!(
                out,
                "{} calls replayed under {}: {} decisions changed",
                report.calls,
                policy.display(),
                report.changed.len()
            )?;
            if !report.summary.is_empty() {
                writeln!(
                    out,
                    "\n{:<28} {:<16} {:<18} {:<18} {:>6}",
                    "TOOL", "GRANT", "RECORDED", "REPLAYED", "CALLS"
                )?;
                for c in &report.summary {
                    writeln!(
                        out,
                        "{:<28} {:<16} {:<18} {:<18} {:>6}",
                        c.tool, c.grant, c.recorded, c.replayed, c.calls
                    )?;
                }
                writeln!(out, "\ncalls:")?;
                for c in &report.changed {
                    let upstream = c
                        .upstream
                        .as_deref()
                        .map(|u| format!(" upstream={u}"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "  +{:>10.3}s grant={} session={}{upstream} {}: {} -> {}",
                        c.t_ms as f64 / 1000.0,
                        c.grant,
                        c.session,
                        c.tool,
                        c.recorded,
                        c.replayed
                    )?;
                }
            }
        }
    }
    Ok(if args.fail_on_change && !report.changed.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
