//! docs/policy.schema.json is generated from the policy types: this test fails when the
//! committed file and the types disagree. Regenerate with
//! `UPDATE_SCHEMA=1 cargo test -p tollgate-policy --test schema`.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use tollgate_policy::PolicyDoc;

fn schema_text() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(PolicyDoc)).unwrap();
    schema["$id"] = "https://tollgate.invalid/policy.schema.json".into();
    schema["title"] = "Tollgate policy, version 1".into();
    format!("{}\n", serde_json::to_string_pretty(&schema).unwrap())
}

/// The committed JSON Schema is exactly what the types generate.
#[test]
fn committed_schema_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/policy.schema.json");
    let generated = schema_text();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/policy.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test -p tollgate-policy --test schema`"
    );
}

/// Every example policy validates against the schema's required top-level fields (a light
/// check without a JSON Schema validator: version and default present, tools an object).
#[test]
fn schema_requires_version_and_default() {
    let schema: serde_json::Value = serde_json::from_str(&schema_text()).unwrap();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["version", "default"]);
    assert_eq!(schema["additionalProperties"], false);
}
