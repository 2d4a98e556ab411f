//! docs/scenario.schema.json is generated from the scenario types: this test fails when the
//! committed file and the types disagree. Regenerate with
//! `UPDATE_SCHEMA=1 cargo test -p tollgate-scenario --test schema`.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

fn schema_text() -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(&tollgate_scenario::format::schema()).unwrap()
    )
}

/// The committed JSON Schema is exactly what the types generate.
#[test]
fn committed_scenario_schema_matches_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/scenario.schema.json"
    );
    let generated = schema_text();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/scenario.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test -p tollgate-scenario --test schema`"
    );
}

/// The schema requires what the parser requires and refuses unknown top-level fields.
#[test]
fn scenario_schema_requires_name_policy_agents_steps() {
    let schema: serde_json::Value = serde_json::from_str(&schema_text()).unwrap();
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["agents", "name", "policy", "steps"]);
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["$defs"]["Step"]["properties"]["concurrent"].is_object());
}
