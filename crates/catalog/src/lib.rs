//! The Tollgate tool catalogue: the 16 tools of the real Amazon EKS MCP server plus the
//! extended catalogue of AWS-operation tools generated from botocore's service models, each
//! with a risk class, a risk level and MCP tool annotations.
//!
//! The data is committed (`data/`) and embedded at build time; building and testing need no
//! Python. The generator lives in `xtask/`.

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
#[serde(rename_all = "snake_case")]
pub struct CatalogTool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the tool's arguments, as sent in `tools/list`.
    pub input_schema: serde_json::Value,
    pub class: RiskClass,
    pub level: RiskLevel,
    pub annotations: ToolAnnotations,
    pub source: ToolSource,
}
