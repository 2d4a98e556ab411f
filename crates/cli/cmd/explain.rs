//! `tollgate explain POLICY TOOL [--args JSON] [--grant G] [--session S] [--class C]
//! [--annotations JSON] [--upstream NAME] [--format human|json]`: which rule decides a call, through which branch, against which
//! limits, and what the decision would be, without taking from any counter.
//!
//! The arguments are first brought to the values the tool reads, by its input schema in the
//! catalogue, as the gateway does (`tollgate_gateway::coerce`): the explanation is of the
//! decision the gateway would make, and says which arguments it reads otherwise than written.
//!
//! Exit codes: 0 explained (whatever the decision), 2 a broken policy or bad arguments.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tollgate_policy::{Call, Engine, MemoryStore, RiskClass};

use super::known::{KnownSource, known_tool, with_catalog};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    policy: PathBuf,
    /// The tool being called.
    #[arg(value_name = "TOOL")]
    tool: String,
    /// The call's arguments, a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    args: String,
    /// The agent's grant (what `scope: grant` limits count by).
    #[arg(long, default_value = "default")]
    grant: String,
    /// The MCP session (what `scope: session` limits count by).
    #[arg(long, default_value = "session-1")]
    session: String,
    /// The tool's risk class, overriding the catalogue's (read, write, execute, destructive).
    #[arg(long, value_parser = parse_class)]
    class: Option<RiskClass>,
    /// The tool's MCP annotations as its server lists them, a JSON object (e.g.
    /// '{"readOnlyHint": true}'): a tool outside the catalogue is classed by them, as the
    /// gateway classes it (docs/catalog.md, "Tools outside the catalogue").
    #[arg(long, value_name = "JSON")]
    annotations: Option<String>,
    /// The upstream the tool belongs to behind a gateway of several upstreams (what
    /// `upstream:NAME` selectors match; the gateway takes it from the exposed name's prefix).
    #[arg(long, value_name = "NAME")]
    upstream: Option<String>,
    #[command(flatten)]
    known: KnownSource,
    /// `human` or `json`.
    #[arg(long, value_enum, default_value_t = super::check::Format::Human)]
    format: super::check::Format,
}

fn parse_class(text: &str) -> Result<RiskClass, String> {
    RiskClass::parse(text).ok_or_else(|| {
        format!("`{text}` is not a risk class: use read, write, execute or destructive")
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(policy) = super::load_policy(&args.policy, " (see `tollgate check`)")? else {
        return Ok(ExitCode::from(2));
    };
    let arguments: serde_json::Value = serde_json::from_str(&args.args)
        .with_context(|| format!("--args is not JSON: `{}`", args.args))?;
    anyhow::ensure!(
        arguments.is_object(),
        "--args must be a JSON object of argument names to values, such as '{{\"operation\": \"read\"}}'"
    );
    let mut listed = serde_json::json!({ "name": args.tool });
    if let Some(text) = &args.annotations {
        let annotations: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("--annotations is not JSON: `{text}`"))?;
        anyhow::ensure!(
            annotations.is_object(),
            "--annotations must be a JSON object of MCP tool annotations, such as '{{\"readOnlyHint\": true}}'"
        );
        listed["annotations"] = annotations;
    }
    let classifiers = super::known::classifiers(&args.known)?;
    let (known, catalogued) = with_catalog(&args.known, |catalog| {
        let known: Vec<_> = catalog.tools().iter().map(known_tool).collect();
        (known, catalog.get(&args.tool).cloned())
    })?;
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    let sent = arguments.clone();
    let (mut call, unreadable) = explained_call(
        &engine,
        &classifiers,
        &listed,
        catalogued.as_ref(),
        known.iter().find(|k| k.name == args.tool),
        arguments,
    );
    call.grant = args.grant.into();
    call.session = args.session.into();
    if let Some(class) = args.class {
        call.meta.class = Some(class);
    }
    if let Some(upstream) = &args.upstream {
        call.meta.upstream = Some(Arc::from(upstream.as_str()));
    }
    let arguments = Arc::clone(&call.arguments);
    let explanation = engine.explain_coerced(&call, Duration::ZERO, &unreadable);
    let redactions = engine.policy().redactions(&call.tool, &call.meta);
    let read_otherwise = read_otherwise(&sent, &arguments, &redactions);
    let mut stdout = std::io::stdout().lock();
    match args.format {
        super::check::Format::Human => {
            for (name, was, read) in &read_otherwise {
                writeln!(stdout, "argument: {name} = {was} is read as {read}")?;
            }
            write!(stdout, "{}", explanation.render())?;
            if !known.is_empty() && !known.iter().any(|k| *k.name == *call.tool) {
                let read_as = match call.meta.class {
                    Some(class) if args.class.is_none() => format!(
                        "; its class is read from its annotations ({}): {}",
                        if args.annotations.is_some() {
                            "--annotations"
                        } else {
                            "none given, so the specification's defaults"
                        },
                        class.as_str()
                    ),
                    _ => String::new(),
                };
                writeln!(
                    stdout,
                    "note: `{}` is not in the catalogue{read_as} (docs/catalog.md, \"Tools outside the catalogue\")",
                    call.tool
                )?;
            }
        }
        super::check::Format::Json => {
            let mut value = serde_json::to_value(&explanation)?;
            if !read_otherwise.is_empty()
                && let Some(object) = value.as_object_mut()
            {
                let read: serde_json::Map<String, serde_json::Value> = read_otherwise
                    .iter()
                    .map(|(name, was, read)| {
                        (name.clone(), serde_json::json!({"sent": was, "read": read}))
                    })
                    .collect();
                object.insert("arguments_read".into(), read.into());
            }
            writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The call `explain` decides on: the arguments brought to the values the tool reads (its
/// schema in the catalogue, as the gateway's `coerce` does), with the defaults of those left
/// out, the catalogue's annotations, and the class of this call as the gateway computes it
/// (`tollgate_gateway::core::call_class`: per operation, on the arguments the gateway decides
/// on). Returns the call (grant and session left at their defaults) and the arguments the tool
/// could not read.
fn explained_call(
    engine: &Engine,
    classifiers: &tollgate_gateway::classify::Classifiers,
    listed: &serde_json::Value,
    catalogued: Option<&tollgate_catalog::CatalogTool>,
    known: Option<&tollgate_policy::KnownTool>,
    arguments: serde_json::Value,
) -> (Call, Vec<tollgate_policy::TypeMismatch>) {
    let sent = Arc::new(arguments);
    let mut arguments = Arc::clone(&sent);
    let types = tollgate_gateway::coerce::ArgTypes::of_schema(catalogued.map(|t| &t.input_schema));
    let unreadable = types
        .as_ref()
        .map_or_else(Vec::new, |types| types.coerce(&mut arguments));
    let mut meta = known.map(|k| k.meta.clone()).unwrap_or_default();
    // Arguments left out are checked as the tool's defaults, as the gateway checks them.
    meta.defaults = types.as_ref().and_then(|t| t.defaults().cloned());
    // The gateway reads the arguments as the tool does only when the policy reads arguments.
    let decided_on = if engine.reads_arguments() {
        &arguments
    } else {
        &sent
    };
    meta.class = tollgate_gateway::core::call_class(classifiers, listed, decided_on);
    if known.is_none() {
        // Outside the catalogue, the annotations given are what `annotation:` selectors see.
        meta.annotations = Arc::new(tollgate_gateway::classify::annotation_set(
            listed.get("annotations"),
        ));
    }
    let tool = listed
        .get("name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let call = Call {
        tool: Arc::from(tool),
        arguments,
        grant: "default".into(),
        session: "session-1".into(),
        meta,
    };
    (call, unreadable)
}

/// The arguments the tool reads otherwise than they were written: `(name, sent, read)` as JSON
/// text, or `(redacted)` for an argument the policy redacts.
fn read_otherwise(
    sent: &serde_json::Value,
    read: &serde_json::Value,
    redactions: &[String],
) -> Vec<(String, String, String)> {
    let (Some(sent), Some(read)) = (sent.as_object(), read.as_object()) else {
        return Vec::new();
    };
    sent.iter()
        .filter_map(|(name, was)| {
            let now = read.get(name)?;
            if now == was {
                return None;
            }
            let hidden = redactions.iter().any(|r| r == name);
            let text = |v: &serde_json::Value| {
                if hidden {
                    "(redacted)".to_owned()
                } else {
                    v.to_string()
                }
            };
            Some((name.clone(), text(was), text(now)))
        })
        .collect()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]
mod tests {
    use std::collections::BTreeSet;
    use tollgate_gateway::classify::Classifiers;

    use serde_json::{Value, json};
    use tollgate_gateway::core::{Gateway, GatewayOptions, Out, SessionCore};
    use tollgate_mock_eks::world::Flags;
    use tollgate_mock_eks::{MockConfig, MockEks};
    use tollgate_policy::Policy;

    use super::*;

    /// Every class selector denies with its own reason, so a refusal names the class the
    /// gateway saw; an `operation` branch on the k8s tool and an argument check make the policy
    /// read arguments, as most real policies do.
    const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
        "class:read": {"action": "deny", "reason": "read"},
        "class:write": {"action": "deny", "reason": "write"},
        "class:execute": {"action": "deny", "reason": "execute"},
        "class:destructive": {"action": "deny", "reason": "destructive"},
        "get_cloudwatch_logs": {"action": "deny", "arguments": {"cluster_name": {"max_length": 100}}}
    }}"#;

    /// Pumps messages between the session core and the mock until quiet; returns what reached
    /// the client.
    fn pump(core: &mut SessionCore, mock: &mut MockEks, mut outs: Vec<Out>) -> Vec<Value> {
        let mut to_client = Vec::new();
        for _ in 0..10_000 {
            if outs.is_empty() {
                break;
            }
            match outs.remove(0) {
                Out::Client(v) => to_client.push(v),
                Out::Upstream(v) => {
                    let h = mock.handle("s1", v.to_string().as_bytes(), Duration::ZERO);
                    if let Some(r) = h.response {
                        outs.extend(core.from_upstream(r.to_string().as_bytes(), Duration::ZERO));
                    }
                }
            }
        }
        to_client
    }

    /// The `operation` values worth trying on a tool: every one the catalogue classes, every
    /// one its schema lists, one it does not know, and none at all.
    fn operations(tool: &tollgate_catalog::CatalogTool) -> Vec<Option<String>> {
        let mut ops: BTreeSet<String> = tool.operation_classes.keys().cloned().collect();
        if let Some(list) = tool.input_schema["properties"]["operation"]["enum"].as_array() {
            ops.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        let mut out: Vec<Option<String>> = ops.into_iter().map(Some).collect();
        if !tool.operation_classes.is_empty() {
            out.push(Some("no_such_operation".into()));
        }
        out.push(None);
        out
    }

    /// Issue 19: `explain` classed `manage_k8s_resource {"operation": "read"}` by the
    /// catalogue's worst case (destructive) while the gateway classes it per operation (read),
    /// so they picked different rules. For every tool of the full catalogue and every operation
    /// value, the rule `explain` names is the rule the gateway's refusal names.
    #[test]
    fn explain_and_the_gateway_pick_the_same_rule_for_every_tool_and_operation() {
        let catalog = tollgate_catalog::Catalog::embedded();
        let known: Vec<_> = catalog.tools().iter().map(known_tool).collect();
        let policy = Arc::new(Policy::parse("policy.json", POLICY).unwrap());
        let engine = Engine::new(Arc::clone(&policy), Arc::new(MemoryStore::new()));
        assert!(engine.reads_arguments());
        let gateway = Gateway::new(
            Engine::new(policy, Arc::new(MemoryStore::new())),
            None,
            GatewayOptions::default(),
        );
        let mut mock = MockEks::new(MockConfig {
            tools: "full".into(),
            flags: Flags {
                allow_write: true,
                allow_sensitive_data_access: true,
            },
            ..MockConfig::default()
        })
        .unwrap();
        let mut core = gateway.session("ci-bot", "s1");
        for msg in [
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        ] {
            let outs = core.from_client(msg.to_string().as_bytes(), Duration::ZERO);
            pump(&mut core, &mut mock, outs);
        }
        let mut id = 10;
        let mut checked = 0;
        let mut per_operation = 0;
        for tool in catalog.tools() {
            for op in operations(tool) {
                let arguments = match &op {
                    Some(op) => json!({"operation": op}),
                    None => json!({}),
                };
                let (call, unreadable) = explained_call(
                    &engine,
                    &Classifiers::standard(),
                    &json!({"name": tool.name}),
                    Some(tool),
                    known.iter().find(|k| k.name == tool.name),
                    arguments.clone(),
                );
                let explained = engine.explain_coerced(&call, Duration::ZERO, &unreadable);
                let explained = serde_json::to_value(&explained).unwrap();
                id += 1;
                let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": {"name": tool.name, "arguments": arguments}});
                let outs = core.from_client(msg.to_string().as_bytes(), Duration::ZERO);
                let answers = pump(&mut core, &mut mock, outs);
                let answer = answers
                    .iter()
                    .find(|a| a["id"] == json!(id))
                    .unwrap_or_else(|| panic!("{} {op:?}: no answer in {answers:?}", tool.name));
                let live = &answer["result"]["_meta"]["dev.tollgate/decision"];
                assert_eq!(
                    explained["decision"]["rule"]["selector"], live["rule"]["selector"],
                    "{} with operation {op:?}: explain {} / gateway {}",
                    tool.name, explained["decision"], live
                );
                assert_eq!(
                    explained["decision"]["reason"], live["reason"],
                    "{} with operation {op:?}",
                    tool.name
                );
                checked += 1;
                per_operation += usize::from(!tool.operation_classes.is_empty());
            }
        }
        assert!(checked > 800, "{checked} calls checked");
        assert!(per_operation > 10, "{per_operation} per-operation calls");
    }

    /// The case the issue names, as a user runs it: a read of a Kubernetes resource is a read.
    #[test]
    fn explain_classes_a_k8s_read_as_read() {
        let catalog = tollgate_catalog::Catalog::embedded();
        let tool = catalog.get("manage_k8s_resource").unwrap();
        let known = known_tool(tool);
        let policy = Arc::new(Policy::parse("policy.json", POLICY).unwrap());
        let engine = Engine::new(policy, Arc::new(MemoryStore::new()));
        for (op, class) in [
            ("read", RiskClass::Read),
            ("create", RiskClass::Write),
            ("delete", RiskClass::Destructive),
        ] {
            let (call, _) = explained_call(
                &engine,
                &Classifiers::standard(),
                &json!({"name": tool.name}),
                Some(tool),
                Some(&known),
                json!({"operation": op}),
            );
            assert_eq!(call.meta.class, Some(class), "{op}");
        }
    }
}
