//! Argument checks hold against the value the upstream reads, not the JSON spelling sent.
//!
//! Calls go through the gateway's session core in process, to an upstream that validates its
//! arguments as the real Amazon EKS MCP server does (FastMCP and pydantic v2 in lax mode). What
//! the upstream reads of each forwarded argument is computed by the mock EKS server's reader
//! (`tollgate_mock_eks::world::pydantic_reads`), written apart from the gateway's and checked
//! against pydantic itself: it is the oracle. Two upstreams: the in-process mock EKS server
//! (the real tools' parameters) and a scripted one listing one tool per scalar parameter type
//! (`number`, unions and nullable forms the real tools do not have), with the schemas pydantic
//! writes for them (tests/fixtures/reference/pydantic-reads.json).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate_gateway::audit::AuditLog;
use tollgate_gateway::core::{Gateway, GatewayOptions, Out, SessionCore};
use tollgate_mock_eks::world::{Flags, PyValue, pydantic_reads};
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_policy::{Engine, MemoryStore, Policy};

/// The parameter schemas pydantic writes for 17 scalar types and unions, by type name.
fn reference_schemas() -> Vec<(String, Value)> {
    let data: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/reference/pydantic-reads.json"
    ))
    .unwrap();
    data["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap().to_owned(), c["schema"].clone()))
        .collect()
}

/// The real tools' scalar parameters the property drives through the mock EKS server.
const REAL_PARAMS: &[(&str, &str)] = &[
    ("get_pod_logs", "tail_lines"),
    ("get_pod_logs", "previous"),
    ("get_pod_logs", "since_seconds"),
    ("get_pod_logs", "container_name"),
    ("apply_yaml", "force"),
    ("apply_yaml", "namespace"),
    ("list_k8s_resources", "namespace"),
    ("generate_app_manifest", "replicas"),
];

/// An upstream that lists one tool `t<i>` per schema, each with one parameter `x`, and keeps
/// the arguments of every call it receives.
#[derive(Debug)]
struct Scripted {
    schemas: Vec<Value>,
    calls: Vec<Value>,
}

impl Scripted {
    fn answer(&mut self, msg: &Value) -> Option<Value> {
        let id = msg.get("id")?.clone();
        let result = match msg["method"].as_str().unwrap_or_default() {
            "initialize" => json!({
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "scripted", "version": "1"}
            }),
            "tools/list" => json!({"tools": self.schemas.iter().enumerate().map(|(i, s)| json!({
                "name": format!("t{i}"),
                "inputSchema": {"type": "object", "properties": {"x": s}}
            })).collect::<Vec<_>>()}),
            "tools/call" => {
                self.calls.push(msg["params"]["arguments"].clone());
                json!({"content": [{"type": "text", "text": "ok"}], "isError": false})
            }
            _ => json!({}),
        };
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }
}

#[derive(Debug)]
enum Upstream {
    Mock(Box<MockEks>),
    Scripted(Scripted),
}

/// A client, the gateway's session core and an upstream, wired in process.
struct Rig {
    core: SessionCore,
    upstream: Upstream,
    next_id: u64,
}

impl Rig {
    fn new(policy: &Value, upstream: Upstream) -> Rig {
        Rig::with_audit(policy, upstream, None)
    }

    fn with_audit(policy: &Value, upstream: Upstream, audit: Option<AuditLog>) -> Rig {
        let text = serde_json::to_string(policy).unwrap();
        let policy = Policy::parse("policy.json", &text).unwrap_or_else(|d| panic!("{d}"));
        let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
        let gateway = Gateway::new(engine, audit, GatewayOptions::default());
        let mut rig = Rig {
            core: gateway.session("agent", "s1"),
            upstream,
            next_id: 1,
        };
        rig.send(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        );
        rig.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        rig
    }

    /// Sends a client message and carries every message to its destination until quiet.
    fn send(&mut self, msg: &Value) -> Vec<Value> {
        let mut outs = self
            .core
            .from_client(msg.to_string().as_bytes(), Duration::ZERO);
        let mut to_client = Vec::new();
        for _ in 0..100 {
            let Some(out) = (!outs.is_empty()).then(|| outs.remove(0)) else {
                return to_client;
            };
            match out {
                Out::Client(v) => to_client.push(v),
                Out::Upstream(v) => {
                    let answer = match &mut self.upstream {
                        Upstream::Mock(m) => {
                            m.handle("s1", v.to_string().as_bytes(), Duration::ZERO)
                                .response
                        }
                        Upstream::Scripted(s) => s.answer(&v),
                    };
                    if let Some(a) = answer {
                        outs.extend(
                            self.core
                                .from_upstream(a.to_string().as_bytes(), Duration::ZERO),
                        );
                    }
                }
            }
        }
        panic!("messages kept flowing");
    }

    /// Calls `tool` with `{name: value}`; the arguments the upstream received, if any.
    fn call(&mut self, tool: &str, name: &str, value: &Value) -> Option<Value> {
        let before = self.upstream_calls();
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
            "params": {"name": tool, "arguments": {name: value}}});
        let answers = self.send(&msg);
        assert_eq!(answers.len(), 1, "{answers:?}");
        let after = self.upstream_calls();
        assert!(after.len() <= before.len() + 1);
        (after.len() > before.len()).then(|| after.last().cloned().unwrap_or_default())
    }

    fn upstream_calls(&self) -> Vec<Value> {
        match &self.upstream {
            Upstream::Mock(m) => m
                .journal()
                .iter()
                .filter(|e| e.method == "tools/call")
                .map(|e| e.arguments_value().unwrap_or_default())
                .collect(),
            Upstream::Scripted(s) => s.calls.clone(),
        }
    }
}

fn mock() -> Upstream {
    Upstream::Mock(Box::new(
        MockEks::new(MockConfig {
            tools: "real".into(),
            flags: Flags {
                allow_write: true,
                allow_sensitive_data_access: true,
            },
            ..MockConfig::default()
        })
        .unwrap(),
    ))
}

/// Python's `==` between a value the tool received and a policy's JSON value: numbers by
/// value, `True == 1`, `False == 0`.
fn py_eq(read: &PyValue, policy: &Value) -> bool {
    let number = |x: f64| match policy {
        Value::Number(n) => n.as_f64() == Some(x),
        Value::Bool(b) => x == f64::from(u8::from(*b)),
        _ => false,
    };
    match read {
        PyValue::None => policy.is_null(),
        PyValue::Bool(b) => number(f64::from(u8::from(*b))),
        PyValue::Int(i) => match policy {
            Value::Number(n) => {
                n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) == Some(*i)
                    || (n.is_f64() && n.as_f64() == Some(*i as f64))
            }
            Value::Bool(b) => *i == i128::from(*b),
            _ => false,
        },
        PyValue::Float(f) => number(*f),
        PyValue::Str(s) => policy.as_str() == Some(s.as_str()),
    }
}

/// The values a `when` case key stands for: its string, and the number or boolean whose JSON
/// text it is.
fn case_values(key: &str) -> Vec<Value> {
    let mut values = vec![json!(key)];
    if let Ok(v @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str::<Value>(key)
        && key.trim() == key
    {
        values.push(v);
    }
    values
}

/// One generated argument rule.
#[derive(Debug, Clone)]
enum Check {
    NotEnum(Vec<Value>),
    Enum(Vec<Value>),
    Pattern(String),
    Prefix(String),
    /// A branch on the argument; the one body that allows is case `cases[i]`, or
    /// `otherwise` for `None`: every other body denies.
    When {
        cases: Vec<String>,
        allowed: Option<usize>,
    },
}

impl Check {
    /// The rule putting this check on the argument `param`.
    fn rule(&self, param: &str) -> Value {
        let action = |allow: bool| json!({"action": if allow { "allow" } else { "deny" }});
        match self {
            Check::NotEnum(v) => json!({"arguments": {param: {"not_enum": v}}}),
            Check::Enum(v) => json!({"arguments": {param: {"enum": v}}}),
            Check::Pattern(p) => json!({"arguments": {param: {"pattern": p}}}),
            Check::Prefix(p) => json!({"arguments": {param: {"prefix": p}}}),
            Check::When { cases, allowed } => {
                let bodies: serde_json::Map<String, Value> = cases
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (k.clone(), action(*allowed == Some(i))))
                    .collect();
                json!({"when": {"argument": param, "cases": bodies, "otherwise": action(allowed.is_none())}})
            }
        }
    }

    /// The policy putting this check on the argument `param` of `tool` (default deny).
    fn policy(&self, tool: &str, param: &str) -> Value {
        json!({"version": "1", "default": "deny", "tools": {tool: self.rule(param)}})
    }

    /// Why admitting a call whose argument the upstream read as `read` broke this check, if
    /// it did.
    fn broken_by(&self, read: &PyValue) -> Option<String> {
        // A `null` the upstream reads is an absent argument to the policy.
        let absent = matches!(read, PyValue::None);
        match self {
            Check::NotEnum(refused) => refused
                .iter()
                .find(|r| py_eq(read, r))
                .map(|r| format!("read as the refused value {r}")),
            Check::Enum(_) if absent => None,
            Check::Enum(allowed) => (!allowed.iter().any(|a| py_eq(read, a)))
                .then(|| format!("read as {read:?}, outside the enum")),
            Check::Pattern(_) | Check::Prefix(_) if absent => None,
            Check::Pattern(p) => {
                let re = regex::Regex::new(p).unwrap();
                match read {
                    PyValue::Str(s) if re.is_match(s) => None,
                    other => Some(format!(
                        "read as {other:?}, which the pattern does not pass"
                    )),
                }
            }
            Check::Prefix(p) => match read {
                PyValue::Str(s) if s.starts_with(p.as_str()) => None,
                other => Some(format!(
                    "read as {other:?}, not a string starting with {p:?}"
                )),
            },
            Check::When { cases, allowed } => {
                let picks: Vec<&String> = cases
                    .iter()
                    .filter(|k| case_values(k).iter().any(|v| py_eq(read, v)))
                    .collect();
                let decided = allowed.map(|i| &cases[i]);
                match decided {
                    Some(k) if picks != [k] => Some(format!(
                        "decided by case `{k}`, but read as {read:?}, which picks {picks:?}"
                    )),
                    None if !picks.is_empty() => Some(format!(
                        "decided by `otherwise`, but read as {read:?}, which picks {picks:?}"
                    )),
                    _ => None,
                }
            }
        }
    }
}

/// Canonical values: what policies list and what spellings are made of.
fn pool() -> Vec<Value> {
    vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(7),
        json!(100),
        json!(9_007_199_254_740_993_u64),
        json!(0.5),
        json!(1.5),
        json!(true),
        json!(false),
        json!("0"),
        json!("1"),
        json!("7"),
        json!("yes"),
        json!("true"),
        json!("kube-system"),
        json!("read"),
        json!(""),
        json!("null"),
        json!("a1"),
    ]
}

/// Ways of writing `base` that a lax reader may take for it (and some it may not): signs,
/// white space, case, exponents, leading zeros, fractions of zeros, strings of numbers,
/// numbers for booleans and booleans for numbers.
fn spellings(base: &Value) -> Vec<Value> {
    let mut out = vec![base.clone()];
    match base {
        Value::Number(n) => {
            let f = n.as_f64().unwrap();
            let text = n.to_string();
            out.extend([
                json!(f),
                json!(text),
                json!(format!(" {text} ")),
                json!(format!("{text}\n")),
                json!(format!("+{text}")),
                json!(format!("{f:e}")),
                json!(format!("{f:E}")),
                json!(format!("{text}.000")),
                json!(format!("00{text}")),
            ]);
            if f == 0.0 {
                out.extend([
                    json!(-0.0),
                    json!("-0"),
                    json!("-0.0"),
                    json!("0e5"),
                    json!(false),
                    json!("false"),
                ]);
            }
            if f == 1.0 {
                out.extend([json!(true), json!("true"), json!("yes"), json!("1.")]);
            }
            if f == 100.0 {
                out.extend([json!(1e2), json!("1_00"), json!("1e2")]);
            }
        }
        Value::Bool(b) => {
            let words: &[&str] = if *b {
                &[
                    "true", "True", "TRUE", " true", "yes", "YES", "on", "On", "t", "T", "y", "1",
                ]
            } else {
                &[
                    "false", "FALSE", "no", "No", "off", "OFF", "f", "n", "N", "0", "false ",
                ]
            };
            out.extend(words.iter().map(|w| json!(w)));
            let bit = u8::from(*b);
            out.extend([json!(bit), json!(f64::from(bit)), json!(format!("{bit}.0"))]);
        }
        Value::String(s) => {
            out.extend([
                json!(s.to_uppercase()),
                json!(format!(" {s}")),
                json!(format!("{s} ")),
                json!(format!("\"{s}\"")),
            ]);
            if let Ok(v) = serde_json::from_str::<Value>(s) {
                out.push(v);
            }
        }
        _ => {}
    }
    out
}

fn pick<T: Clone>(items: &[T], i: prop::sample::Index) -> T {
    items[i.index(items.len())].clone()
}

/// A check on argument `x`, from the pool.
fn check_strategy() -> impl Strategy<Value = Check> {
    let values = prop::collection::vec(any::<prop::sample::Index>(), 1..4)
        .prop_map(|ix| ix.into_iter().map(|i| pick(&pool(), i)).collect::<Vec<_>>());
    let keys = [
        "0", "1", "7", "-1", "true", "false", "yes", "read", "1.5", "0.5", "100", "null", "1e2",
    ];
    prop_oneof![
        values.clone().prop_map(Check::NotEnum),
        values.prop_map(Check::Enum),
        prop::sample::select(vec![
            "^[0-9]+$",
            "^a",
            "^(yes|no)$",
            "1",
            "^-?[0-9]+(\\.[0-9]+)?$",
            "^ ?null",
            "^$",
        ])
        .prop_map(|p| Check::Pattern(p.to_owned())),
        prop::sample::select(vec!["1", "0", "t", "y", "k", "-", " "])
            .prop_map(|p| Check::Prefix(p.to_owned())),
        (
            prop::collection::btree_set(prop::sample::select(keys.to_vec()), 1..4),
            any::<prop::sample::Index>(),
            any::<bool>()
        )
            .prop_map(|(set, i, otherwise)| {
                let cases: Vec<String> = set.into_iter().map(str::to_owned).collect();
                let allowed = (!otherwise).then(|| i.index(cases.len()));
                Check::When { cases, allowed }
            }),
    ]
}

/// Argument values: spellings of the pool's values (and of the check's own values).
fn values_strategy() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
        1..12,
    )
    .prop_map(|picks| {
        picks
            .into_iter()
            .map(|(b, s)| pick(&spellings(&pick(&pool(), b)), s))
            .collect()
    })
}

/// Runs the calls and returns the first broken invariant, with the number admitted.
fn run(
    check: &Check,
    tool: &str,
    param: &str,
    schema: &Value,
    upstream: Upstream,
    values: &[Value],
) -> Result<usize, String> {
    let mut rig = Rig::new(&check.policy(tool, param), upstream);
    let mut admitted = 0;
    for v in values {
        let Some(forwarded) = rig.call(tool, param, v) else {
            continue;
        };
        admitted += 1;
        let sent = &forwarded[param];
        let read = match pydantic_reads(schema, sent) {
            Ok(read) => read,
            // The upstream refuses it: it reads nothing.
            Err(_) => continue,
        };
        if let Some(why) = check.broken_by(&read) {
            return Err(format!(
                "{tool}.{param} ({schema}) under {:?}: {v} was admitted, forwarded as {sent}, {why}",
                check.rule(param)
            ));
        }
    }
    Ok(admitted)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Invariant: no call the gateway admits carries an argument that the upstream reads as a
    /// refused value (`not_enum`), outside an `enum`, as anything but a string the `pattern`
    /// or `prefix` passes, or as the value of another `when` case than the one the policy
    /// decided on; for every scalar parameter type pydantic writes (unions and nullable forms
    /// included), through a scripted upstream listing them.
    #[test]
    fn no_admitted_argument_is_read_as_a_value_its_checks_refuse(
        check in check_strategy(),
        schema_index in any::<prop::sample::Index>(),
        values in values_strategy(),
    ) {
        let schemas = reference_schemas();
        let i = schema_index.index(schemas.len());
        let schema = &schemas[i].1;
        let upstream = Upstream::Scripted(Scripted {
            schemas: schemas.iter().map(|(_, s)| s.clone()).collect(),
            calls: Vec::new(),
        });
        let outcome = run(&check, &format!("t{i}"), "x", schema, upstream, &values);
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }

    /// Invariant: the same, for the real tools' scalar parameters, through the in-process mock
    /// EKS server (which validates as the real server does) and its journal.
    #[test]
    fn no_admitted_argument_of_a_real_tool_is_read_as_a_value_its_checks_refuse(
        check in check_strategy(),
        param in prop::sample::select(REAL_PARAMS.to_vec()),
        values in values_strategy(),
    ) {
        let (tool, name) = param;
        let schema = tollgate_catalog::Catalog::embedded()
            .get(tool)
            .unwrap()
            .input_schema["properties"][name]
            .clone();
        let outcome = run(&check, tool, name, &schema, mock(), &values);
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// The attacker review's spellings, through the core to the mock EKS server: each is refused,
/// and the plain values around them are admitted (the property above is not met by refusing
/// everything).
#[test]
fn the_reviews_spellings_are_refused_and_plain_values_admitted() {
    let integer = Check::NotEnum(vec![json!(0)]);
    let boolean = Check::NotEnum(vec![json!(true)]);
    // (check, tool, parameter, values refused, values admitted)
    type Case<'a> = (&'a Check, &'a str, &'a str, &'a [Value], &'a [Value]);
    let cases: [Case; 2] = [
        (
            &integer,
            "get_pod_logs",
            "tail_lines",
            &[
                json!(0),
                json!(0.0),
                json!(-0.0),
                json!(0e5),
                json!("0"),
                json!(" -0 "),
                json!("0.0"),
                json!(false),
            ],
            &[json!(1), json!(100), json!("100"), json!(7.0)],
        ),
        (
            &boolean,
            "apply_yaml",
            "force",
            &[
                json!(true),
                json!("yes"),
                json!(1),
                json!("TRUE"),
                json!("on"),
                json!("t"),
                json!(1.0),
            ],
            &[json!(false), json!("no"), json!(0), json!("off")],
        ),
    ];
    for (check, tool, param, refused, admitted) in cases {
        let mut rig = Rig::new(&check.policy(tool, param), mock());
        for v in refused {
            assert_eq!(rig.call(tool, param, v), None, "{tool}.{param} = {v}");
        }
        for v in admitted {
            let forwarded = rig.call(tool, param, v);
            assert!(forwarded.is_some(), "{tool}.{param} = {v}");
        }
    }
    // What is forwarded is what was decided on: `"100"` goes upstream as 100.
    let mut rig = Rig::new(&integer.policy("get_pod_logs", "tail_lines"), mock());
    let forwarded = rig
        .call("get_pod_logs", "tail_lines", &json!(" 100 "))
        .unwrap();
    assert_eq!(forwarded, json!({"tail_lines": 100}));
}

/// A redacted argument that fails a check is quoted nowhere: not in the refusal the agent
/// reads, not in the audit log's decision records (`(redacted)` stands in), whichever check
/// fails (`not_enum`, `pattern`, `max`, a `when` with no such case, a value the tool cannot
/// read as its type).
#[test]
fn failed_checks_of_redacted_arguments_quote_no_value() {
    let policy = json!({"version": "1", "default": "deny", "tools": {
        "get_pod_logs": {"redact": ["namespace", "tail_lines"], "arguments": {
            "namespace": {"not_enum": ["kube-system-secret"], "pattern": "^[a-z]+$"},
            "tail_lines": {"max": 10}}},
        "apply_yaml": {"redact": ["force"], "arguments": {"force": {"not_enum": [true]}}},
        "manage_k8s_resource": {"redact": ["operation"],
            "when": {"argument": "operation", "cases": {"read": {}}}}
    }});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = AuditLog::open(&path, false).unwrap();
    let mut rig = Rig::with_audit(&policy, mock(), Some(audit));
    let calls = [
        (
            "get_pod_logs",
            json!({"namespace": "kube-system-secret", "tail_lines": 5123}),
        ),
        ("get_pod_logs", json!({"tail_lines": "all-secret"})),
        ("apply_yaml", json!({"force": "YES-secret"})),
        ("apply_yaml", json!({"force": "on"})),
        ("manage_k8s_resource", json!({"operation": "drop-secret"})),
    ];
    let mut answers = String::new();
    for (tool, args) in calls {
        rig.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": rig.next_id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}});
        let answer = rig.send(&msg);
        let text = serde_json::to_string(&answer).unwrap();
        assert!(text.contains("invalid_arguments"), "{tool}: {text}");
        assert!(text.contains("(redacted)"), "{tool}: {text}");
        answers.push_str(&text);
    }
    assert!(rig.upstream_calls().is_empty());
    let log = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        log.matches("\"decision\":\"invalid_arguments\"").count(),
        5,
        "{log}"
    );
    for secret in [
        "kube-system-secret",
        "5123",
        "all-secret",
        "YES-secret",
        "drop-secret",
        "\"on\"",
    ] {
        assert!(
            !answers.contains(secret),
            "a refusal quotes `{secret}`: {answers}"
        );
        assert!(
            !log.contains(secret),
            "the audit log quotes `{secret}`: {log}"
        );
    }
}

/// The review's finding: the real server's `apply_yaml.force` defaults to `true` (its listed
/// schema says so), so a call that left `force` out forced, and `force: {not_enum: [true]}`
/// forwarded it. Through the session core against the mock's real tools: left out, it is
/// refused and nothing reaches the upstream; sent as `false`, it goes on.
#[test]
fn an_argument_left_out_is_decided_as_the_tools_listed_default() {
    let policy = json!({"version": "1", "default": "allow", "tools": {
        "apply_yaml": {"arguments": {"force": {"not_enum": [true]}}}
    }});
    let mut rig = Rig::new(&policy, mock());
    let args = json!({"cluster_name": "c", "namespace": "n", "yaml_content": "x"});
    let before = rig.upstream_calls().len();
    rig.next_id += 1;
    let answers = rig.send(
        &json!({"jsonrpc": "2.0", "id": rig.next_id, "method": "tools/call",
        "params": {"name": "apply_yaml", "arguments": args}}),
    );
    assert_eq!(rig.upstream_calls().len(), before, "nothing forwarded");
    let text = answers[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("it was left out, and the tool takes its default"),
        "{text}"
    );
    let mut explicit = args.clone();
    explicit["force"] = json!(false);
    rig.next_id += 1;
    rig.send(
        &json!({"jsonrpc": "2.0", "id": rig.next_id, "method": "tools/call",
        "params": {"name": "apply_yaml", "arguments": explicit}}),
    );
    assert_eq!(rig.upstream_calls().len(), before + 1);
}
