//! The subcommands, one module each: `pub struct Args` (clap) and
//! `pub fn run(args: Args) -> anyhow::Result<ExitCode>` (an `Err` is exit code 2).
mod agent_http;
pub mod approvals;
pub mod audit;
pub mod bench;
pub mod catalog;
pub mod check;
pub mod demo;
pub mod diff;
pub mod explain;
pub mod fuzz;
pub mod gateway;
mod known;
pub mod mock_eks;
pub mod pin;
pub mod policy;
mod procs;
pub mod replay;
pub mod scenario;
pub mod test;

/// Loads a policy, or prints its diagnostics on stderr as `tollgate check` does (in colour on a
/// terminal, unless `NO_COLOR` is set) and then `error: `PATH` is not a valid policy` followed
/// by `consequence` (what happens now, or where to look): `None` then, for exit code 2.
pub(crate) fn load_policy(
    path: &std::path::Path,
    consequence: &str,
) -> anyhow::Result<Option<tollgate_policy::Policy>> {
    match tollgate_policy::Policy::load(path) {
        Ok(p) => Ok(Some(p)),
        Err(diags) => {
            print_diagnostics(&diags, path, "policy", consequence)?;
            Ok(None)
        }
    }
}

/// Prints `diags` on stderr (in colour on a terminal unless `NO_COLOR`), then
/// `error: `PATH` is not a valid WHAT` and `consequence`.
fn print_diagnostics(
    diags: &tollgate_policy::Diagnostics,
    path: &std::path::Path,
    what: &str,
    consequence: &str,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
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
        "error: `{}` is not a valid {what}{consequence}",
        path.display()
    )?;
    Ok(())
}

/// Loads a config file, or prints its diagnostics on stderr as [`load_policy`] does and then
/// `error: `PATH` is not a valid config` and `consequence`: `None` then, for exit code 2.
pub(crate) fn load_config(
    path: &std::path::Path,
    consequence: &str,
) -> anyhow::Result<Option<tollgate_gateway::config::Config>> {
    match tollgate_gateway::config::load(path) {
        Ok(c) => Ok(Some(c)),
        Err(diags) => {
            print_diagnostics(&diags, path, "config", consequence)?;
            Ok(None)
        }
    }
}
