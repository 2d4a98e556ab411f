//! Argument validation. The real tools answer bad arguments the way the real server does
//! (pydantic 2.14's messages, in an `isError` result); the extended tools validate against
//! their JSON Schema (the `jsonschema` crate) and name each failing JSON path.

use serde_json::Value;
use tollgate_catalog::CatalogTool;

/// Each real tool's parameters in the order its Python signature declares them, which is the
/// order pydantic reports errors in (the catalogue's schemas keep no key order).
const DECLARED: &[(&str, &[&str])] = &[
    (
        "list_k8s_resources",
        &[
            "cluster_name",
            "kind",
            "api_version",
            "namespace",
            "label_selector",
            "field_selector",
        ],
    ),
    (
        "get_pod_logs",
        &[
            "cluster_name",
            "namespace",
            "pod_name",
            "container_name",
            "since_seconds",
            "tail_lines",
            "limit_bytes",
            "previous",
        ],
    ),
    (
        "get_k8s_events",
        &["cluster_name", "kind", "name", "namespace"],
    ),
    ("list_api_versions", &["cluster_name"]),
    (
        "manage_k8s_resource",
        &[
            "operation",
            "cluster_name",
            "kind",
            "api_version",
            "name",
            "namespace",
            "body",
        ],
    ),
    (
        "apply_yaml",
        &["yaml_path", "cluster_name", "namespace", "force"],
    ),
    (
        "generate_app_manifest",
        &[
            "app_name",
            "image_uri",
            "output_dir",
            "port",
            "replicas",
            "cpu",
            "memory",
            "namespace",
            "load_balancer_scheme",
        ],
    ),
    ("search_eks_troubleshoot_guide", &["query"]),
    (
        "get_cloudwatch_logs",
        &[
            "resource_type",
            "cluster_name",
            "log_type",
            "resource_name",
            "minutes",
            "start_time",
            "end_time",
            "limit",
            "filter_pattern",
            "fields",
        ],
    ),
    (
        "get_cloudwatch_metrics",
        &[
            "cluster_name",
            "metric_name",
            "namespace",
            "dimensions",
            "minutes",
            "start_time",
            "end_time",
            "limit",
            "period",
            "stat",
        ],
    ),
    (
        "manage_eks_stacks",
        &["operation", "template_file", "cluster_name"],
    ),
    (
        "add_inline_policy",
        &["policy_name", "role_name", "permissions"],
    ),
    ("get_policies_for_role", &["role_name"]),
    ("get_eks_metrics_guidance", &["resource_type"]),
    ("get_eks_vpc_config", &["cluster_name", "vpc_id"]),
    (
        "get_eks_insights",
        &["cluster_name", "insight_id", "category", "next_token"],
    ),
];

/// Python's `repr` of a JSON value, as pydantic quotes inputs.
pub(crate) fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => py_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => py_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `repr` of a string: single quotes unless the text has a single quote and no double
/// quote, backslash escapes for the quote, backslash and control characters.
fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of a float: the shortest digits that read back, positional for exponents
/// from -4 to 15, scientific (`1.5e+30`) otherwise, and always a `.0` on whole numbers.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // `{:e}` gives the shortest round-tripping digits as `d.ddddde[-]x`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let plain = format!("{f}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// pydantic shows inputs whose repr is over 50 characters as the first 25, `...`, the last 24.
fn truncated(repr: &str) -> String {
    let chars: Vec<char> = repr.chars().collect();
    if chars.len() <= 50 {
        return repr.to_owned();
    }
    let head: String = chars[..25].iter().collect();
    let tail: String = chars[chars.len() - 24..].iter().collect();
    format!("{head}...{tail}")
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// An input pydantic can show: its repr and Python type name.
trait Shown {
    fn repr(&self) -> String;
    fn type_name(&self) -> &'static str;
}

impl Shown for Value {
    fn repr(&self) -> String {
        py_repr(self)
    }
    fn type_name(&self) -> &'static str {
        py_type(self)
    }
}

impl Shown for OrderedArgs {
    fn repr(&self) -> String {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
            .collect();
        format!("{{{}}}", items.join(", "))
    }
    fn type_name(&self) -> &'static str {
        "dict"
    }
}

/// One error line block, as pydantic prints it.
fn error_block(loc: &str, msg: &str, kind: &str, v: &dyn Shown) -> String {
    format!(
        "{loc}\n  {msg} [type={kind}, input_value={}, input_type={}]\n    For further information visit https://errors.pydantic.dev/2.14/v/{kind}",
        truncated(&v.repr()),
        v.type_name()
    )
}

/// The alternatives a property's schema admits (`anyOf` flattened, `null` kept).
fn alternatives(schema: &Value) -> Vec<&Value> {
    match schema.get("anyOf").and_then(Value::as_array) {
        Some(alts) => alts.iter().collect(),
        None if schema.get("type").is_some() => vec![schema],
        None => Vec::new(),
    }
}

fn type_of(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

/// pydantic's name for a type inside a union's error location.
fn union_label(schema: &Value) -> String {
    match type_of(schema) {
        "string" => "str".into(),
        "integer" => "int".into(),
        "number" => "float".into(),
        "boolean" => "bool".into(),
        "object" => "dict[str,any]".into(),
        "array" => format!(
            "list[{}]",
            schema.get("items").map_or("any".into(), union_label)
        ),
        other => other.to_owned(),
    }
}

/// pydantic's errors (location suffix, message, kind, input) for `v` against one type schema
/// in lax mode; empty when it is accepted.
fn check(schema: &Value, v: &Value, loc: &str, out: &mut Vec<String>) {
    let float_is_whole = |f: f64| f.fract() == 0.0 && f.is_finite();
    let bad =
        |msg: &str, kind: &str, out: &mut Vec<String>| out.push(error_block(loc, msg, kind, v));
    match type_of(schema) {
        "string" if !v.is_string() => bad("Input should be a valid string", "string_type", out),
        "integer" => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => {}
            Value::Number(n) if n.as_f64().is_some_and(float_is_whole) => {
                if n.as_f64().is_some_and(|f| f.abs() > 9.2e18) {
                    bad(
                        "Unable to parse input string as an integer, exceeded maximum size",
                        "int_parsing_size",
                        out,
                    );
                }
            }
            Value::Number(_) => bad(
                "Input should be a valid integer, got a number with a fractional part",
                "int_from_float",
                out,
            ),
            Value::Bool(_) => {}
            Value::String(s) if s.trim().parse::<i64>().is_ok() => {}
            Value::String(_) => bad(
                "Input should be a valid integer, unable to parse string as an integer",
                "int_parsing",
                out,
            ),
            _ => bad("Input should be a valid integer", "int_type", out),
        },
        "number" => match v {
            Value::Number(_) | Value::Bool(_) => {}
            Value::String(s) if s.trim().parse::<f64>().is_ok() => {}
            Value::String(_) => bad(
                "Input should be a valid number, unable to parse string as a number",
                "float_parsing",
                out,
            ),
            _ => bad("Input should be a valid number", "float_type", out),
        },
        "boolean" => match v {
            Value::Bool(_) => {}
            Value::Number(n) if n.as_f64().is_some_and(|f| f == 0.0 || f == 1.0) => {}
            Value::String(s)
                if matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true"
                        | "false"
                        | "1"
                        | "0"
                        | "yes"
                        | "no"
                        | "on"
                        | "off"
                        | "t"
                        | "f"
                        | "y"
                        | "n"
                ) => {}
            Value::Number(_) | Value::String(_) => bad(
                "Input should be a valid boolean, unable to interpret input",
                "bool_parsing",
                out,
            ),
            _ => bad("Input should be a valid boolean", "bool_type", out),
        },
        "object" if !v.is_object() => bad("Input should be a valid dictionary", "dict_type", out),
        "array" => match (v, schema.get("items")) {
            (Value::Array(items), Some(item_schema)) => {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{loc}.{i}"), out);
                }
            }
            (Value::Array(_), None) => {}
            _ => bad("Input should be a valid list", "list_type", out),
        },
        _ => {}
    }
}

/// pydantic's errors for one parameter: an optional (`X | None`) parameter is checked as `X`;
/// a union of several types reports every alternative's failure under its type's name.
fn check_param(name: &str, schema: &Value, v: &Value, out: &mut Vec<String>) {
    let alts = alternatives(schema);
    let nullable = alts.iter().any(|a| type_of(a) == "null");
    if nullable && v.is_null() {
        return;
    }
    let real: Vec<&Value> = alts.into_iter().filter(|a| type_of(a) != "null").collect();
    match real.as_slice() {
        [] => {}
        [one] => check(one, v, name, out),
        many => {
            let mut all = Vec::new();
            for alt in many {
                let mut errs = Vec::new();
                check(alt, v, &format!("{name}.{}", union_label(alt)), &mut errs);
                if errs.is_empty() {
                    return;
                }
                all.extend(errs);
            }
            out.extend(all);
        }
    }
}

/// `obj` with its keys in `declared` order, then the others; `Value` keeps insertion order
/// only with serde_json's `preserve_order`, so the text is built here.
fn ordered(obj: &serde_json::Map<String, Value>, declared: &[&str]) -> OrderedArgs {
    let mut pairs: Vec<(String, Value)> = declared
        .iter()
        .filter_map(|k| obj.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    pairs.extend(
        obj.iter()
            .filter(|(k, _)| !declared.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    OrderedArgs(pairs)
}

/// Arguments in a chosen order, for pydantic's `input_value`.
struct OrderedArgs(Vec<(String, Value)>);

/// pydantic's report for a real tool's arguments, or `None` when they are valid.
pub(crate) fn pydantic_errors(tool: &CatalogTool, args: &Value) -> Option<String> {
    let schema = &tool.input_schema;
    let mut errors = Vec::new();
    let Some(obj) = args.as_object() else {
        return Some(format!(
            "Error executing tool {}: 1 validation error for {}Arguments\n{}",
            tool.name,
            tool.name,
            error_block("", "Input should be a valid dictionary", "dict_type", args)
                .trim_start_matches('\n')
        ));
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let props = schema.get("properties").and_then(Value::as_object);
    let declared: Vec<&str> = match DECLARED.iter().find(|(n, _)| *n == tool.name) {
        Some((_, names)) => names.to_vec(),
        None => props
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default(),
    };
    // pydantic shows the arguments in the order the client sent them; the JSON object has
    // lost that order, so show them in the declared order, which clients built from the
    // schema follow (unknown names last, alphabetically).
    let in_order = ordered(obj, &declared);
    for name in declared {
        let Some(prop) = props.and_then(|p| p.get(name)) else {
            continue;
        };
        match obj.get(name) {
            None if required.contains(&name) => {
                errors.push(error_block(name, "Field required", "missing", &in_order));
            }
            None => {}
            Some(v) => check_param(name, prop, v, &mut errors),
        }
    }
    if errors.is_empty() {
        return None;
    }
    Some(format!(
        "Error executing tool {}: {} validation error{} for {}Arguments\n{}",
        tool.name,
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        tool.name,
        errors.join("\n")
    ))
}

/// A JSON pointer (`/a/0/b~1c`) as a JSON path (`$.a[0]["b/c"]`): array indexes in brackets,
/// names that are not plain identifiers quoted.
pub(crate) fn json_path(pointer: &str) -> String {
    let mut path = String::from("$");
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        let plain = !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !segment.starts_with(|c: char| c.is_ascii_digit());
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else if plain {
            path.push('.');
            path.push_str(&segment);
        } else {
            path.push_str(&format!("[{}]", serde_json::Value::String(segment)));
        }
    }
    path
}

/// A compiled JSON Schema for one extended tool.
pub(crate) struct ArgValidator {
    validator: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for ArgValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgValidator").finish_non_exhaustive()
    }
}

impl ArgValidator {
    pub(crate) fn new(schema: &Value) -> ArgValidator {
        // The catalogue's schemas are tested to compile; one that did not would validate
        // nothing rather than refuse every call.
        ArgValidator {
            validator: jsonschema::validator_for(schema).ok(),
        }
    }

    /// Every failing check as `$.path: message`, or `None` when the arguments are valid.
    pub(crate) fn errors(&self, tool: &str, args: &Value) -> Option<String> {
        let validator = self.validator.as_ref()?;
        // Most calls are valid: checked without collecting errors first.
        if validator.is_valid(args) {
            return None;
        }
        let errors: Vec<String> = validator
            .iter_errors(args)
            .take(10)
            .map(|e| {
                let path = json_path(&e.instance_path().to_string());
                format!("{path}: {e}")
            })
            .collect();
        if errors.is_empty() {
            None
        } else {
            Some(format!(
                "An error occurred (ValidationException) when calling {tool}: {}",
                errors.join("; ")
            ))
        }
    }
}
