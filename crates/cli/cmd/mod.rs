//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<ExitCode>`;
//! an `Err` is reported on stderr and exits 2 (bad input or configuration).

pub mod catalog;
pub mod check;
pub mod explain;
pub mod mock_eks;
