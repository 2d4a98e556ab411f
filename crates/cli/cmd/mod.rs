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
pub mod policy;
mod procs;
pub mod replay;
pub mod scenario;
pub mod test;
