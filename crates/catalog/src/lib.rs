//! The Tollgate tool catalogue: the 16 tools of the real Amazon EKS MCP server plus the
//! extended catalogue of AWS-operation tools generated from botocore's service models, each
//! with a risk class, a risk level and MCP tool annotations.
//!
//! The data is committed (`data/`) and embedded at build time; building and testing need no
//! Python. The generator lives in `xtask/`.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// What a tool does to the world, coarsely. Policies select on it with `class:NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskClass {
    Read,
    Write,
    Execute,
    Destructive,
}

/// How bad a misuse of the tool can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

/// MCP tool annotations (`tools/list` → `annotations`), as the spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolAnnotations {
    pub read_only_hint: bool,
    pub destructive_hint: bool,
    pub idempotent_hint: bool,
    pub open_world_hint: bool,
}

/// Where a catalogue tool comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolSource {
    /// One of the 16 tools of awslabs.eks-mcp-server 0.2.1.
    Real,
    /// An AWS API operation from botocore's service model.
    Aws {
        /// botocore's service directory name, e.g. `omics`.
        service: String,
        /// The abbreviation used in tool names, e.g. `AHO`.
        abbreviation: String,
        /// The operation name in the service model, e.g. `CancelRunBatch`.
        operation: String,
    },
}

/// One tool of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct CatalogTool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the tool's arguments, as sent in `tools/list`.
    pub input_schema: serde_json::Value,
    /// The worst case over the tool's operations.
    pub class: RiskClass,
    pub level: RiskLevel,
    pub annotations: ToolAnnotations,
    pub source: ToolSource,
    /// For tools whose effect depends on their `operation` argument (`manage_k8s_resource`,
    /// `manage_eks_stacks`): the class of each operation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub operation_classes: BTreeMap<String, RiskClass>,
}

impl CatalogTool {
    /// The class of one call: the class of its `operation` for tools that have per-operation
    /// classes, the tool's (worst-case) class otherwise or for an unknown operation.
    pub fn class_for(&self, arguments: &serde_json::Value) -> RiskClass {
        // Most tools have one class whatever their arguments: no look-up.
        if self.operation_classes.is_empty() {
            return self.class;
        }
        arguments
            .get("operation")
            .and_then(serde_json::Value::as_str)
            .and_then(|op| self.operation_classes.get(op))
            .copied()
            .unwrap_or(self.class)
    }

    /// The tool as an MCP `tools/list` entry: name, description, inputSchema, annotations.
    pub fn to_mcp(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
            "annotations": self.annotations,
        })
    }

    pub fn is_real(&self) -> bool {
        self.source == ToolSource::Real
    }
}

/// The catalogue file: what `tollgate catalog --format json` writes and `from_json` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// The botocore version the AWS tools were generated from.
    pub botocore_version: String,
    /// botocore service name → abbreviation in tool names.
    pub services: BTreeMap<String, String>,
    pub tools: Vec<CatalogTool>,
}

/// What went wrong reading a catalogue or a tool selection.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("not a Tollgate catalogue: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("the catalogue names `{0}` twice")]
    Duplicate(String),
    #[error("`{pattern}` is not a valid tool pattern: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("`{0}` matches no tool of the catalogue (see `tollgate catalog`)")]
    NoMatch(String),
    #[error(
        "empty tool selection: use `real`, `default`, `full`, or tool names and patterns separated by commas"
    )]
    Empty,
}

/// The catalogue: tools in a stable order (the real tools first, in the real server's order,
/// then the generated ones by name) with O(1)
/// lookup by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub botocore_version: String,
    pub services: BTreeMap<String, String>,
    tools: Vec<CatalogTool>,
    by_name: HashMap<String, usize, foldhash::quality::RandomState>,
}

/// The committed catalogue (generated by `python3 xtask/gen_catalog.py`).
const EMBEDDED: &str = include_str!("../data/catalog.json");

/// The tools the default selection adds to the real ones: the HealthOmics run-batch tools the
/// seed's policy names, so that policy works out of the box.
pub const DEFAULT_EXTRA: &str = "*AHO*Batch*";

impl Catalog {
    /// The embedded catalogue, parsed once.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            // The embedded data is checked by this crate's tests; should it ever be broken, an
            // empty catalogue (every tool unknown) is the safe fallback, never a panic.
            Catalog::from_json(EMBEDDED).unwrap_or_else(|_| Catalog {
                botocore_version: String::new(),
                services: BTreeMap::new(),
                tools: Vec::new(),
                by_name: HashMap::default(),
            })
        })
    }

    /// Reads a catalogue export (`tollgate catalog --format json`).
    pub fn from_json(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = serde_json::from_str(text)?;
        Catalog::from_tools(file.botocore_version, file.services, file.tools)
    }

    fn from_tools(
        botocore_version: String,
        services: BTreeMap<String, String>,
        mut tools: Vec<CatalogTool>,
    ) -> Result<Catalog, CatalogError> {
        // The real tools keep the real server's order (a stable sort leaves them as the file
        // has them); the generated ones follow by name.
        tools.sort_by(|a, b| match (a.is_real(), b.is_real()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            (false, false) => a.name.cmp(&b.name),
        });
        let mut by_name = HashMap::with_capacity_and_hasher(tools.len(), Default::default());
        for (i, t) in tools.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(CatalogError::Duplicate(t.name.clone()));
            }
        }
        Ok(Catalog {
            botocore_version,
            services,
            tools,
            by_name,
        })
    }

    /// Every tool: the real tools first, then the generated ones by name.
    pub fn tools(&self) -> &[CatalogTool] {
        &self.tools
    }

    pub fn get(&self, name: &str) -> Option<&CatalogTool> {
        self.by_name.get(name).and_then(|&i| self.tools.get(i))
    }

    /// A subset of the catalogue: `real` (the 16 tools of the real server), `full` (all),
    /// `default` (the real tools and the HealthOmics run-batch tools), or a comma-separated
    /// list of tool names and glob patterns (`Delete*,list_k8s_resources`). Each item must
    /// match at least one tool, so a typo is an error rather than an empty server.
    pub fn select(&self, spec: &str) -> Result<Vec<&CatalogTool>, CatalogError> {
        let spec = spec.trim();
        match spec {
            "" => Err(CatalogError::Empty),
            "full" => Ok(self.tools.iter().collect()),
            "real" => Ok(self.tools.iter().filter(|t| t.is_real()).collect()),
            "default" => {
                let extra = glob(DEFAULT_EXTRA)?;
                Ok(self
                    .tools
                    .iter()
                    .filter(|t| t.is_real() || extra.is_match(&t.name))
                    .collect())
            }
            list => {
                let mut keep = vec![false; self.tools.len()];
                for item in list.split(',').map(str::trim) {
                    if item.is_empty() {
                        return Err(CatalogError::Empty);
                    }
                    let matcher = glob(item)?;
                    let mut any = false;
                    for (i, t) in self.tools.iter().enumerate() {
                        if matcher.is_match(&t.name) {
                            keep[i] = true;
                            any = true;
                        }
                    }
                    if !any {
                        return Err(CatalogError::NoMatch(item.to_owned()));
                    }
                }
                Ok(self
                    .tools
                    .iter()
                    .zip(keep)
                    .filter_map(|(t, k)| k.then_some(t))
                    .collect())
            }
        }
    }

    /// The catalogue file form of a selection (what `tollgate catalog --format json` writes).
    pub fn export<'a>(&self, tools: impl IntoIterator<Item = &'a CatalogTool>) -> CatalogFile {
        CatalogFile {
            botocore_version: self.botocore_version.clone(),
            services: self.services.clone(),
            tools: tools.into_iter().cloned().collect(),
        }
    }
}

/// A case-sensitive glob over tool names (`*` crosses every character).
pub fn glob(pattern: &str) -> Result<globset::GlobMatcher, CatalogError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| CatalogError::BadPattern {
            pattern: pattern.to_owned(),
            reason: e.kind().to_string(),
        })
}

impl RiskClass {
    pub const ALL: [RiskClass; 4] = [
        RiskClass::Read,
        RiskClass::Write,
        RiskClass::Execute,
        RiskClass::Destructive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskClass::Read => "read",
            RiskClass::Write => "write",
            RiskClass::Execute => "execute",
            RiskClass::Destructive => "destructive",
        }
    }
}

impl RiskLevel {
    pub const ALL: [RiskLevel; 4] = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }
}
