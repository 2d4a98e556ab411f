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

/// Issue 19: docs/scenarios.md, the schema and the runner disagreed about the decisions a step
/// can expect (`duplicate_key` listed but written as `error`, approval outcomes missing from the
/// schema). Now one set: the schema's enum is the runner's `ExpectedDecision::ALL`, and that is
/// exactly the set of names the gateway can put in a refusal (the policy engine's decision
/// kinds, the gateway's own refusals in `core/`, the held-call outcomes in `refusal.rs`) plus
/// `error` for a JSON-RPC error answer.
#[test]
fn the_schemas_decisions_are_the_runners_and_the_gateways() {
    use std::collections::BTreeSet;

    use tollgate_scenario::format::ExpectedDecision;

    let runner: BTreeSet<&str> = ExpectedDecision::ALL.iter().map(|d| d.as_str()).collect();
    assert_eq!(runner.len(), ExpectedDecision::ALL.len());

    let schema: serde_json::Value = serde_json::from_str(&schema_text()).unwrap();
    let listed: BTreeSet<&str> = schema["$defs"]["ExpectedDecision"]["enum"]
        .as_array()
        // schemars writes documented variants as `oneOf` of constants instead.
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_else(|| {
            schema["$defs"]["ExpectedDecision"]["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|v| {
                    v.get("const").and_then(|c| c.as_str()).into_iter().chain(
                        v.get("enum")
                            .and_then(|e| e.as_array())
                            .into_iter()
                            .flatten()
                            .map(|e| e.as_str().unwrap()),
                    )
                })
                .collect()
        });
    assert_eq!(listed, runner, "the schema's decisions are the runner's");

    // What the gateway can write, read from its source.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).unwrap();
    let quoted_after = |text: &str, marker: &str| -> Vec<String> {
        text.match_indices(marker)
            .filter_map(|(i, _)| {
                let rest = &text[i + marker.len()..];
                let end = rest.find(')')?;
                let call = &rest[..end];
                let start = call.rfind('"')?;
                let open = call[..start].rfind('"')?;
                Some(call[open + 1..start].to_owned())
            })
            .collect()
    };
    let core: String = [
        "mod", "client", "decide", "held", "listing", "upstream", "gateway", "record",
    ]
    .iter()
    .map(|m| read(&format!("crates/gateway/src/core/{m}.rs")))
    .collect();
    let refusal = read("crates/gateway/src/refusal.rs");
    let engine = read("crates/policy/src/engine.rs");
    let mut gateway: BTreeSet<String> = quoted_after(&core, "refusal::gateway(")
        .into_iter()
        .chain(quoted_after(&refusal, "held.detail("))
        .chain(quoted_after(&refusal, "[\"decision\"] = json!("))
        .collect();
    let kinds = &engine[engine.find("pub fn name(&self) -> &'static str").unwrap()..];
    let kinds = &kinds[..kinds.find("\n    }\n").unwrap()];
    for line in kinds.lines().filter(|l| l.contains("=> \"")) {
        let name = line.split('"').nth(1).unwrap();
        gateway.insert(name.to_owned());
    }
    gateway.insert("error".to_owned());
    assert!(gateway.len() >= 15, "{gateway:?}");
    let gateway: BTreeSet<&str> = gateway.iter().map(String::as_str).collect();
    assert_eq!(
        gateway, runner,
        "the runner expects what the gateway writes"
    );

    // And docs/scenarios.md lists them all, and no `duplicate_key` decision.
    let doc = read("docs/scenarios.md");
    let para = &doc[doc.find("- `expect.decision` is one of").unwrap()..];
    let para = &para[..para.find("\n- ").unwrap()];
    for name in &runner {
        assert!(
            para.contains(&format!("`{name}`")),
            "docs/scenarios.md: {name}"
        );
    }
    assert!(!para.contains("`duplicate_key`,"), "{para}");
}
