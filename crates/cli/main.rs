//! `tollgate`: the one user-facing binary. Each subcommand lives in `cmd/` and is thin: parse,
//! call a library crate, map the result to an exit code.
//!
//! Exit codes (documented in README.md and docs/cli.md):
//! - 0: ok
//! - 1: checks failed (a policy test, a verification, `--deny-warnings` with warnings)
//! - 2: bad input or configuration (a broken policy, an unreadable file, a bad flag)

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Tollgate: a policy-enforcing MCP gateway and the harness that proves its policies.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a policy file and summarise what it does.
    Check(cmd::check::Args),
    /// Show the decision for one call and every rule that was considered.
    Explain(cmd::explain::Args),
    /// List and export the risk-classified tool catalogue.
    Catalog(cmd::catalog::Args),
    /// Run the mock Amazon EKS MCP server (stdio by default, or Streamable HTTP).
    MockEks(cmd::mock_eks::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help and version on stdout with "error" kind DisplayHelp/DisplayVersion;
            // everything else is a usage error: exit 2, like any bad input.
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Check(args) => cmd::check::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Catalog(args) => cmd::catalog::run(args),
        Command::MockEks(args) => cmd::mock_eks::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
