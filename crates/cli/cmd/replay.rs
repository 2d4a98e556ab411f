//! `tollgate replay RECORDING --policy FILE [--against recorded|mock-eks] [--format table|json]
//! [--fail-on-change]`: replays a gateway recording under another policy, in virtual time from
//! the recorded timestamps, and reports every decision that changes ("what would this policy
//! have done to yesterday's traffic?"). Exit 0, or 1 with `--fail-on-change` when a decision
//! changed; 2 for an unreadable recording or a broken policy.

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
    /// The policy to replay the recording under.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
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
    let report = recording::replay(rec, &args.policy, against).map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Table => {
            writeln!(
                out,
                "{} calls replayed under {}: {} decisions changed",
                report.calls,
                args.policy.display(),
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
                    writeln!(
                        out,
                        "  +{:>10.3}s grant={} session={} {}: {} -> {}",
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
