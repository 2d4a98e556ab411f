//! `tollgate policy init [eks|minimal|seed|runaway-agent]`: prints an example policy shipped in
//! the binary (the files of `examples/policies/`), to start a setup from something that passes
//! `tollgate check`: `tollgate policy init eks > ~/.config/tollgate/eks.json`.
//!
//! Exit codes: 0 printed, 2 a bad name (clap lists the names).

use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// Print an example policy (shipped in the binary) to stdout, to save and edit.
    Init {
        /// Which example.
        #[arg(value_enum, default_value_t = Example::Eks)]
        example: Example,
    },
}

/// The example policies the binary ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Example {
    /// For the Amazon EKS MCP server's 16 tools: reads counted, arguments checked, changes
    /// (deletes, IAM policies, stacks) held for a human's approval, the rest denied.
    Eks,
    /// For any MCP server: only tools that declare `readOnlyHint` are allowed, 60 a minute;
    /// everything else is denied and hidden from the list.
    Minimal,
    /// The seed's example: `CancelAHORunBatch` 10 a minute per grant, the rest denied.
    Seed,
    /// A budget of destructive calls shared by every `Delete*` tool (a runaway agent's brake).
    RunawayAgent,
}

impl Example {
    /// The policy's text, as the file in `examples/policies/` has it, without its `$schema`
    /// line (a path relative to this repository, which a copy elsewhere would not find).
    fn text(self) -> String {
        let text = match self {
            Example::Eks => include_str!("../../../examples/policies/eks-recommended.json"),
            Example::Minimal => include_str!("../../../examples/policies/minimal.json"),
            Example::Seed => include_str!("../../../examples/policies/seed.json"),
            Example::RunawayAgent => include_str!("../../../examples/policies/runaway-agent.json"),
        };
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            if !line.trim_start().starts_with("\"$schema\"") {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::Init { example } => {
            std::io::stdout()
                .lock()
                .write_all(example.text().as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
