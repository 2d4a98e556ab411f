//! `tollgate scenario from-recording RECORDING --policy FILE [--config FILE] [--name NAME]`:
//! prints a regression scenario made from a gateway recording: one agent per recorded session,
//! one step per call at its recorded instant, each expecting the decision the gateway made
//! then. A recording made through several upstreams needs the gateway's config file
//! (`--config`), whose upstreams the scenario declares as `upstreams:`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Turn a recording (`tollgate gateway --record FILE`) into a scenario on stdout.
    FromRecording {
        /// The recording.
        recording: PathBuf,
        /// The policy the scenario runs under, written as given (relative to where the
        /// scenario file will be, e.g. `../examples/policies/seed.json`).
        #[arg(long, value_name = "PATH")]
        policy: String,
        /// The config file of the gateway that made the recording (its upstreams' names and
        /// prefixes; needed when it had several).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The scenario's name (default: the recording's file stem).
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::FromRecording {
            recording,
            policy,
            config,
            name,
        } => {
            use tollgate_scenario::recording;
            let rec = recording::parse(&recording).map_err(anyhow::Error::msg)?;
            let upstreams: Vec<(String, String)> = match &config {
                Some(path) => match super::load_config(path, "; no scenario was written")? {
                    Some(c) => c
                        .upstreams
                        .iter()
                        .map(|u| (u.name.clone(), u.prefix.clone()))
                        .collect(),
                    None => return Ok(ExitCode::from(2)),
                },
                None => Vec::new(),
            };
            let named = recording::upstreams_named(&rec);
            if !named.is_empty() && upstreams.len() < 2 {
                anyhow::bail!(
                    "the recording was made through a gateway of several upstreams (its calls name {}): give that gateway's config file with `--config FILE`",
                    named.join(", ")
                );
            }
            let name = name.unwrap_or_else(|| {
                recording
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("recording")
                    .to_owned()
            });
            let text = recording::to_scenario_with_upstreams(&rec, &name, &policy, &upstreams);
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
