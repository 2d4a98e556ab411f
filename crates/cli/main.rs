//! `tollgate`: the one user-facing binary. Each subcommand is a thin module in `cmd/`: parse,
//! call a library crate, map the result to an exit code.
//!
//! Exit codes (documented in README.md):
//! - 0: ok
//! - 1: checks failed (a policy test, a verification, `--deny-warnings` with warnings)
//! - 2: bad input or configuration (a broken policy, an unreadable file, a bad flag)

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;

/// mimalloc instead of glibc's malloc: the gateway and the harness allocate many small JSON
/// values per call, and glibc's allocator took a quarter of their CPU time (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tollgate: a policy-enforcing MCP gateway and the harness that proves its policies.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// One variant per module in `cmd/`; each module owns its `Args` and its `run`.
#[derive(Debug, Subcommand)]
enum Command {
    // Subcommands are listed here, one line each.
    /// The demo: a runaway agent replayed live through a real gateway in front of the mock EKS server.
    Demo(cmd::demo::Args),
    /// Fuzz a policy: generated sessions through the gateway and the mock, checked against a model.
    Fuzz(cmd::fuzz::Args),
    /// Run scenarios in virtual time; check expectations and transcript snapshots.
    Test(cmd::test::Args),
    /// Replay a gateway recording under another policy; report every decision that changes.
    Replay(cmd::replay::Args),
    /// Make scenarios: `scenario from-recording RECORDING --policy PATH`.
    Scenario(cmd::scenario::Args),
    /// Verify, tail and query the gateway's hash-chained audit log.
    Audit(cmd::audit::Args),
    /// List, approve and deny the calls a gateway holds for a human's approval.
    Approvals(cmd::approvals::Args),
    /// Run the enforcing gateway in front of an MCP server (stdio, or HTTP with --listen).
    // Boxed: its many limits' flags make it far larger than the other commands' arguments.
    Gateway(Box<cmd::gateway::Args>),
    /// Pin the upstream's tool definitions: print a lock file, or `--check` one (exit 1 on drift).
    Pin(cmd::pin::Args),
    /// Run the mock Amazon EKS MCP server (stdio, or Streamable HTTP with --http).
    MockEks(cmd::mock_eks::Args),
    /// List and export the risk-classified tool catalogue.
    Catalog(cmd::catalog::Args),
    /// Validate policy files: errors and warnings with file:line:col, like a compiler.
    Check(cmd::check::Args),
    /// Start a policy: `policy init eks > policy.json` prints an example shipped in the binary.
    Policy(cmd::policy::Args),
    /// Show which rule decides a call, through which branch and limits, and the decision.
    Explain(cmd::explain::Args),
    /// What a policy change does to every call it can affect: old and new decisions, changed limits.
    Diff(cmd::diff::Args),
    /// Measure the gateway against the mock side by side (HTTP, stdio, idle sessions).
    Bench(cmd::bench::Args),
    /// The bench's floor: a relay that forwards bytes and nothing else.
    #[command(hide = true)]
    BenchRelay(cmd::bench::RelayArgs),
    /// The wire fuzzer's deliberately naive upstream: runs anything that looks like a call.
    #[command(hide = true)]
    NaiveUpstream(cmd::fuzz::NaiveArgs),
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        // One arm per subcommand.
        Command::Demo(args) => cmd::demo::run(args),
        Command::Fuzz(args) => cmd::fuzz::run(args),
        Command::Test(args) => cmd::test::run(args),
        Command::Replay(args) => cmd::replay::run(args),
        Command::Scenario(args) => cmd::scenario::run(args),
        Command::Audit(args) => cmd::audit::run(args),
        Command::Approvals(args) => cmd::approvals::run(args),
        Command::Gateway(args) => cmd::gateway::run(*args),
        Command::MockEks(args) => cmd::mock_eks::run(args),
        Command::Pin(args) => cmd::pin::run(args),
        Command::Catalog(args) => cmd::catalog::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Policy(args) => cmd::policy::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Diff(args) => cmd::diff::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::BenchRelay(args) => cmd::bench::relay(args),
        Command::NaiveUpstream(args) => cmd::fuzz::naive_upstream(args),
    }
}

fn main() -> ExitCode {
    // Logs go to stderr, filtered by RUST_LOG (e.g. `RUST_LOG=tollgate_gateway=debug`); quiet
    // unless asked, so stdout stays the protocol or the report.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed: a supervisor that read the banner
        // and went away) is dropped; reporting it would `eprintln!`, which panics, and take
        // down the task that logged (an HTTP connection, a session).
        .log_internal_errors(false)
        .try_init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        eprintln!("\nerror: a subcommand is required");
        return ExitCode::from(2);
    };
    match dispatch(command) {
        Ok(code) => code,
        Err(err) => {
            // Bad input or configuration: the message says what and where.
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
