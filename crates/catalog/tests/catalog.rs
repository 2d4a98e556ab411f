//! The embedded catalogue: its size, unique names, well-formed schemas, the 16 real tools
//! exactly as the real server declares them, and the classification of known examples.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tollgate_catalog::{Catalog, RiskClass, RiskLevel, ToolSource};

/// At least 805 tools, the count the seed's catalogue claims, each name once.
#[test]
fn at_least_805_tools_with_unique_names() {
    let c = Catalog::embedded();
    assert!(c.tools().len() >= 805, "{} tools", c.tools().len());
    let mut names: Vec<&str> = c.tools().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), c.tools().len());
    assert_eq!(c.botocore_version, "1.44.8");
}

/// Removes the prose (descriptions and titles) the recording replaced with placeholders.
fn without_prose(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != "description" && *k != "title")
                .map(|(k, v)| (k.clone(), without_prose(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_prose).collect()),
        other => other.clone(),
    }
}

/// The real tools have the names and input schemas the real server declares (prose aside),
/// in the same order, first in the catalogue.
#[test]
fn real_tools_match_the_recorded_server() {
    let recorded: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/reference/eks-mcp-server-0.2.1.tools.json"
    ))
    .unwrap();
    let recorded = recorded["tools"].as_array().unwrap();
    let c = Catalog::embedded();
    let real = c.select("real").unwrap();
    assert_eq!(real.len(), 16);
    let by_name: BTreeMap<&str, &Value> = recorded
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), &t["inputSchema"]))
        .collect();
    for tool in real {
        let want = by_name
            .get(tool.name.as_str())
            .unwrap_or_else(|| panic!("{}", tool.name));
        assert_eq!(
            without_prose(&tool.input_schema),
            without_prose(want),
            "{}",
            tool.name
        );
        assert!(!tool.description.contains("prose omitted"), "{}", tool.name);
    }
    assert!(c.tools()[..16].iter().all(|t| t.source == ToolSource::Real));
}

/// Every input schema is a JSON Schema object: `type: object` with `properties`.
#[test]
fn every_schema_is_an_object_schema() {
    for t in Catalog::embedded().tools() {
        assert_eq!(t.input_schema["type"], "object", "{}", t.name);
        assert!(t.input_schema["properties"].is_object(), "{}", t.name);
    }
}

/// Known examples are classified by the documented rules.
#[test]
fn known_tools_are_classified_by_the_rules() {
    let c = Catalog::embedded();
    let class = |name: &str| {
        let t = c.get(name).unwrap_or_else(|| panic!("no tool {name}"));
        (t.class, t.level)
    };
    assert_eq!(
        class("CancelAHORunBatch"),
        (RiskClass::Execute, RiskLevel::High)
    );
    assert_eq!(
        class("DeleteEKSCluster"),
        (RiskClass::Destructive, RiskLevel::Critical)
    );
    assert_eq!(class("ListEKSClusters"), (RiskClass::Read, RiskLevel::Low));
    assert_eq!(class("CreateIAMRole"), (RiskClass::Write, RiskLevel::High));
    assert_eq!(
        class("DeleteIAMRole"),
        (RiskClass::Destructive, RiskLevel::Critical)
    );
    assert_eq!(class("get_pod_logs"), (RiskClass::Read, RiskLevel::Medium));
    let cancel = c.get("CancelAHORunBatch").unwrap();
    assert_eq!(
        cancel.source,
        ToolSource::Aws {
            service: "omics".into(),
            abbreviation: "AHO".into(),
            operation: "CancelRunBatch".into()
        }
    );
    assert!(!cancel.annotations.read_only_hint && !cancel.annotations.destructive_hint);
    let delete = c.get("DeleteEKSCluster").unwrap();
    assert!(delete.annotations.destructive_hint && delete.annotations.open_world_hint);
}

/// `manage_k8s_resource` and `manage_eks_stacks` are classed by their `operation`.
#[test]
fn operation_decides_the_class_of_the_two_manage_tools() {
    let c = Catalog::embedded();
    let k8s = c.get("manage_k8s_resource").unwrap();
    assert_eq!(k8s.class, RiskClass::Destructive, "worst case");
    assert_eq!(
        k8s.class_for(&json!({"operation": "read"})),
        RiskClass::Read
    );
    assert_eq!(
        k8s.class_for(&json!({"operation": "patch"})),
        RiskClass::Write
    );
    assert_eq!(
        k8s.class_for(&json!({"operation": "delete"})),
        RiskClass::Destructive
    );
    assert_eq!(
        k8s.class_for(&json!({"operation": "nonsense"})),
        RiskClass::Destructive
    );
    let stacks = c.get("manage_eks_stacks").unwrap();
    assert_eq!(
        stacks.class_for(&json!({"operation": "describe"})),
        RiskClass::Read
    );
}

/// Selections: `default` is the real tools plus the HealthOmics run-batch tools; lists of
/// names and patterns must each match something.
#[test]
fn selections_and_their_errors() {
    let c = Catalog::embedded();
    let default: Vec<&str> = c
        .select("default")
        .unwrap()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert!(default.contains(&"CancelAHORunBatch") && default.contains(&"list_k8s_resources"));
    assert_eq!(default.len(), 16 + 7, "{default:?}");
    let some = c.select("Delete*EKS*, list_k8s_resources").unwrap();
    assert!(some.iter().any(|t| t.name == "DeleteEKSCluster"));
    assert!(some.iter().any(|t| t.name == "list_k8s_resources"));
    assert_eq!(c.select("full").unwrap().len(), c.tools().len());
    assert!(
        c.select("NoSuchTool")
            .unwrap_err()
            .to_string()
            .contains("matches no tool")
    );
    assert!(c.select("Delete[").is_err());
    assert!(c.select(" ").is_err());
}

/// A JSON export reads back as the same catalogue.
#[test]
fn json_export_round_trips() {
    let c = Catalog::embedded();
    let text = serde_json::to_string(&c.export(c.tools())).unwrap();
    let back = Catalog::from_json(&text).unwrap();
    assert_eq!(back.tools(), c.tools());
    assert!(Catalog::from_json("{}").is_err());
}
