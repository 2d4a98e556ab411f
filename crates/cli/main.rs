//! `tollgate`: the one user-facing binary. Subcommands (`check`, `explain`, `catalog`,
//! `mock-eks`, `gateway`, ...) arrive with their issues, each as a thin module in `cmd/`:
//! parse, call a library crate, map the result to an exit code. None is wired yet, so the
//! binary offers only `--help` and `--version` rather than commands that pretend.
//!
//! Exit codes (documented in README.md):
//! - 0: ok
//! - 1: checks failed (a policy test, a verification, `--deny-warnings` with warnings)
//! - 2: bad input or configuration (a broken policy, an unreadable file, a bad flag)

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

/// Tollgate: a policy-enforcing MCP gateway and the harness that proves its policies.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(Cli {}) => {
            // No subcommand exists yet: show what the binary is and say so, as a usage error.
            let _ = Cli::command().print_help();
            eprintln!("\nerror: no subcommands are available in this build yet");
            ExitCode::from(2)
        }
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            ExitCode::from(code)
        }
    }
}
