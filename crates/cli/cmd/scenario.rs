//! `tollgate scenario from-recording RECORDING --policy FILE [--name NAME]`: prints a regression
//! scenario made from a gateway recording: one agent per recorded session, one step per call at
//! its recorded instant, each expecting the decision the gateway made then.

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
            name,
        } => {
            let rec =
                tollgate_scenario::recording::parse(&recording).map_err(anyhow::Error::msg)?;
            let name = name.unwrap_or_else(|| {
                recording
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("recording")
                    .to_owned()
            });
            let text = tollgate_scenario::recording::to_scenario(&rec, &name, &policy);
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
