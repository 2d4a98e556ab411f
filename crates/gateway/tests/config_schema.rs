//! docs/config.schema.json is generated from the config file's types: this test fails when the
//! committed file and the types disagree. Regenerate with
//! `UPDATE_SCHEMA=1 cargo test -p tollgate-gateway --test config_schema`.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use std::path::Path;

use tollgate_gateway::config::{ConfigFile, parse};

fn schema_value() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(ConfigFile)).unwrap();
    schema["$id"] = "https://tollgate.invalid/config.schema.json".into();
    schema["title"] = "Tollgate gateway config file (TOML)".into();
    schema
}

/// The committed JSON Schema is exactly what the types generate.
#[test]
fn committed_config_schema_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.schema.json");
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&schema_value()).unwrap()
    );
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/config.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test -p tollgate-gateway --test config_schema`"
    );
}

/// The schema and the loader agree: the example config and these variants are accepted by
/// both or refused by both (unknown keys, wrong types, a missing policy, a bad name or prefix).
#[test]
fn schema_and_loader_accept_the_same_files() {
    let schema = schema_value();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/config/tollgate.toml"
    );
    let example = std::fs::read_to_string(example).unwrap();
    let two = "[[upstream]]\nname = \"a\"\ncommand = [\"x\"]\n[[upstream]]\nname = \"b\"\nurl = \"http://127.0.0.1:1/mcp\"\n";
    let cases: Vec<(String, bool)> = vec![
        (example, true),
        (format!("policy = \"p.json\"\n{two}"), true),
        (
            format!("policy = \"p.json\"\ngrant = \"ops\"\nstore = \"memory\"\n{two}"),
            true,
        ),
        (format!("policy = \"p.json\"\npolcy = \"x\"\n{two}"), false),
        (format!("policy = 1\n{two}"), false),
        (two.to_owned(), false),
        (
            format!("policy = \"p.json\"\n[listen]\naddr = \"127.0.0.1:1\"\nport = 2\n{two}"),
            false,
        ),
        (
            "policy = \"p.json\"\n[[upstream]]\nname = \"a b\"\ncommand = [\"x\"]\n".to_owned(),
            false,
        ),
        (
            "policy = \"p.json\"\n[[upstream]]\nname = \"a\"\ncommand = []\n".to_owned(),
            false,
        ),
        (
            format!("policy = \"p.json\"\n{two}prefix = \"b/\"\n"),
            false,
        ),
        ("policy = \"p.json\"\n".to_owned(), false),
    ];
    for (text, ok) in cases {
        let value: serde_json::Value = toml::from_str(&text).unwrap();
        let by_schema = validator.is_valid(&value);
        let by_loader = parse("t.toml", &text, Path::new("/cfg")).is_ok();
        assert_eq!(by_schema, ok, "schema on:\n{text}");
        assert_eq!(by_loader, ok, "loader on:\n{text}");
    }
}
