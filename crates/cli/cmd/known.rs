//! The tools a policy is checked against: the embedded catalogue, or a catalogue export given
//! with `--catalog FILE` (the JSON `tollgate catalog --format json` writes). The policy crate
//! does not know the catalogue; this is where its classes and annotations are translated.

use std::path::PathBuf;

use anyhow::Context;
use tollgate_catalog::{Catalog, CatalogTool};
use tollgate_gateway::classify::Classifiers;
use tollgate_policy::{Annotation, KnownTool};

#[derive(Debug, clap::Args)]
pub struct KnownSource {
    /// A catalogue export (`tollgate catalog --format json`) to check tool names and classes
    /// against, instead of the embedded catalogue.
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
}

pub fn known_tools(source: &KnownSource) -> anyhow::Result<Vec<KnownTool>> {
    with_catalog(source, |catalog| {
        catalog.tools().iter().map(known_tool).collect()
    })
}

/// Runs `f` on the catalogue `source` names (the embedded one unless `--catalog FILE`).
pub fn with_catalog<T>(source: &KnownSource, f: impl FnOnce(&Catalog) -> T) -> anyhow::Result<T> {
    let loaded;
    let catalog = match &source.catalog {
        None => Catalog::embedded(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read catalogue `{}`", path.display()))?;
            loaded = Catalog::from_json(&text).with_context(|| {
                format!(
                    "`{}` is not a catalogue export (`tollgate catalog --format json`)",
                    path.display()
                )
            })?;
            &loaded
        }
    };
    Ok(f(catalog))
}

/// The classifier chain of the gateway over the catalogue `source` names: that catalogue, then
/// the tools' annotations (`tollgate_gateway::classify`), so `explain` and `check` class a tool
/// as the gateway does.
pub fn classifiers(source: &KnownSource) -> anyhow::Result<Classifiers> {
    if source.catalog.is_none() {
        return Ok(Classifiers::standard());
    }
    // A chain holds its catalogue for the process's life (the gateway's is the embedded one);
    // the CLI loads one catalogue once per run, so leaking it costs that and no more.
    let catalog = with_catalog(source, Clone::clone)?;
    Ok(Classifiers::with_catalog(Box::leak(Box::new(catalog))))
}

/// One catalogue tool as the policy engine sees it.
pub fn known_tool(tool: &CatalogTool) -> KnownTool {
    let class = tollgate_gateway::core::policy_class(tool.class);
    let a = &tool.annotations;
    let annotations: Vec<Annotation> = [
        (a.read_only_hint, Annotation::ReadOnly),
        (a.destructive_hint, Annotation::Destructive),
        (a.idempotent_hint, Annotation::Idempotent),
        (a.open_world_hint, Annotation::OpenWorld),
    ]
    .into_iter()
    .filter_map(|(on, hint)| on.then_some(hint))
    .collect();
    KnownTool::new(tool.name.clone(), Some(class), &annotations)
}
