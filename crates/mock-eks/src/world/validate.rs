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
    let bad =
        |msg: &str, kind: &str, out: &mut Vec<String>| out.push(error_block(loc, msg, kind, v));
    match type_of(schema) {
        "string" if !v.is_string() => bad("Input should be a valid string", "string_type", out),
        // The scalar types accept what the reader reads (`read_member`, checked against
        // pydantic itself) and refuse with its error type.
        t @ ("integer" | "number" | "boolean") => {
            if let Err(kind) = read_member(t, v) {
                let message = match kind {
                    "int_parsing" => {
                        "Input should be a valid integer, unable to parse string as an integer"
                    }
                    "int_from_float" => {
                        "Input should be a valid integer, got a number with a fractional part"
                    }
                    "int_parsing_size" => {
                        "Unable to parse input string as an integer, exceeded maximum size"
                    }
                    "finite_number" => "Input should be a finite number",
                    "float_parsing" => {
                        "Input should be a valid number, unable to parse string as a number"
                    }
                    "float_type" => "Input should be a valid number",
                    "bool_parsing" => "Input should be a valid boolean, unable to interpret input",
                    "bool_type" => "Input should be a valid boolean",
                    _ => "Input should be a valid integer",
                };
                bad(message, kind, out);
            }
        }
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
    let parsed = pre_parsed(schema, v);
    let v = parsed.as_ref().unwrap_or(v);
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

/// A value as the tool function receives it, in Python's types.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    /// Python's `int` (beyond 128 bits is refused here as too large).
    Int(i128),
    Float(f64),
    Str(String),
}

/// What the real server's tool function receives for the argument `v` of a parameter whose
/// schema is `schema`, or the pydantic error type it refuses it with (for a union, its first
/// member's). The real server is FastMCP over pydantic 2.14: first FastMCP's pre-parse (for a
/// parameter not declared plain `str`, a string holding JSON `null`, an array or an object is
/// replaced by it; one holding a number, a string or a boolean is not), then pydantic's model
/// validation in lax mode, a union choosing its first exact member, else its most exact one
/// (strict before lax), the first on a tie.
///
/// This is the test oracle for the gateway's reading of arguments (`tollgate_gateway::coerce`),
/// written apart from it on purpose and checked against pydantic itself
/// (tests/fixtures/reference/pydantic-reads.json).
pub fn pydantic_reads(schema: &Value, v: &Value) -> Result<PyValue, &'static str> {
    let parsed = pre_parsed(schema, v);
    let v = parsed.as_ref().unwrap_or(v);
    let alts = alternatives(schema);
    let members: Vec<&str> = alts
        .iter()
        .map(|a| type_of(a))
        .filter(|t| *t != "null")
        .collect();
    if v.is_null() && members.len() < alts.len() {
        return Ok(PyValue::None);
    }
    let mut first_error = None;
    let mut best: Option<(u8, PyValue)> = None;
    for member in members {
        match read_member(member, v) {
            Ok((rank, read)) if rank == EXACT => return Ok(read),
            Ok((rank, read)) => {
                if best.as_ref().is_none_or(|(b, _)| *b < rank) {
                    best = Some((rank, read));
                }
            }
            Err(kind) => {
                first_error.get_or_insert(kind);
            }
        }
    }
    match best {
        Some((_, read)) => Ok(read),
        None => Err(first_error.unwrap_or("no_such_type")),
    }
}

/// FastMCP's pre-parse of one argument: for a parameter not declared plain `str`, a string
/// holding JSON `null`, an array or an object is replaced by it (one holding a number, a string
/// or a boolean is not: Python's `bool` is an `int`).
fn pre_parsed(schema: &Value, v: &Value) -> Option<Value> {
    let plain_str = schema.get("anyOf").is_none() && type_of(schema) == "string";
    match v {
        Value::String(text) if !plain_str => match serde_json::from_str::<Value>(text) {
            Ok(p @ (Value::Null | Value::Array(_) | Value::Object(_))) => Some(p),
            _ => None,
        },
        _ => None,
    }
}

/// How exactly a union member reads a value (pydantic's exactness): higher wins.
const LAX: u8 = 0;
const STRICT: u8 = 1;
const EXACT: u8 = 2;

/// One scalar type's reading of `v` (Python mode: what FastMCP validates).
fn read_member(member: &str, v: &Value) -> Result<(u8, PyValue), &'static str> {
    match member {
        "string" => match v {
            Value::String(s) => Ok((EXACT, PyValue::Str(s.clone()))),
            _ => Err("string_type"),
        },
        "integer" => match v {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok((EXACT, PyValue::Int(i.into())))
                } else if let Some(u) = n.as_u64() {
                    Ok((EXACT, PyValue::Int(u.into())))
                } else {
                    float_to_int(n.as_f64().unwrap_or(f64::NAN)).map(|i| (LAX, PyValue::Int(i)))
                }
            }
            Value::Bool(b) => Ok((LAX, PyValue::Int(i128::from(*b)))),
            Value::String(s) => int_from_text(s).map(|i| (LAX, PyValue::Int(i))),
            _ => Err("int_type"),
        },
        "number" => match v {
            Value::Number(n) if n.is_f64() => {
                Ok((EXACT, PyValue::Float(n.as_f64().unwrap_or(0.0))))
            }
            Value::Number(n) => Ok((STRICT, PyValue::Float(n.as_f64().unwrap_or(0.0)))),
            Value::Bool(b) => Ok((LAX, PyValue::Float(if *b { 1.0 } else { 0.0 }))),
            Value::String(s) => float_from_text(s).map(|f| (LAX, PyValue::Float(f))),
            _ => Err("float_type"),
        },
        "boolean" => match v {
            Value::Bool(b) => Ok((EXACT, PyValue::Bool(*b))),
            Value::Number(n) => {
                let as_int = match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => Ok(i128::from(i)),
                    (None, _) if n.is_u64() => Err("bool_type"),
                    (None, Some(f)) => float_to_int(f).map_err(|_| "bool_type"),
                    (None, None) => Err("bool_type"),
                };
                match as_int? {
                    0 => Ok((LAX, PyValue::Bool(false))),
                    1 => Ok((LAX, PyValue::Bool(true))),
                    _ => Err("bool_parsing"),
                }
            }
            Value::String(s) => {
                let word = s.to_ascii_lowercase();
                if s == "1" || ["t", "y", "on", "yes", "true"].contains(&word.as_str()) {
                    Ok((LAX, PyValue::Bool(true)))
                } else if s == "0" || ["f", "n", "no", "off", "false"].contains(&word.as_str()) {
                    Ok((LAX, PyValue::Bool(false)))
                } else {
                    Err("bool_parsing")
                }
            }
            _ => Err("bool_type"),
        },
        _ => Err("no_such_type"),
    }
}

/// pydantic's `float_as_int`: finite, whole, strictly inside the 64-bit range.
fn float_to_int(f: f64) -> Result<i128, &'static str> {
    if !f.is_finite() {
        Err("finite_number")
    } else if f.fract() != 0.0 {
        Err("int_from_float")
    } else if f <= -9_223_372_036_854_775_808.0 || f >= 9_223_372_036_854_775_808.0 {
        Err("int_parsing_size")
    } else {
        Ok(f as i128)
    }
}

/// A JSON integer literal's value (the whole text): `-?(0|[1-9][0-9]*)`.
fn json_int_literal(t: &str) -> Option<Result<i128, &'static str>> {
    let body = t.strip_prefix('-').unwrap_or(t);
    let well_formed = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit())
        && (body == "0" || !body.starts_with('0'));
    if !well_formed {
        return None;
    }
    if body.len() > 4300 {
        return Some(Err("int_parsing_size"));
    }
    Some(t.parse::<i128>().map_err(|_| "int_parsing_size"))
}

/// pydantic's `str_as_int`: a JSON integer as written; else the text trimmed, its `+` and
/// leading zeros dropped, a fraction of zeros dropped and single `_` between digits dropped,
/// when that changed anything and leaves a JSON integer.
fn int_from_text(s: &str) -> Result<i128, &'static str> {
    if let Some(read) = json_int_literal(s) {
        return read;
    }
    let trimmed = s.trim();
    if trimmed.starts_with("+-") {
        return Err("int_parsing");
    }
    let (negative, mut rest) = if let Some(r) = trimmed.strip_prefix('+') {
        (false, r)
    } else if let Some(r) = trimmed.strip_prefix('-') {
        if r.starts_with(['-', '+']) {
            return Err("int_parsing");
        }
        (true, r)
    } else {
        (false, trimmed)
    };
    // Leading zeros (and `_` among them) go, keeping the zero before a `.`, or the last
    // character when nothing else follows.
    if rest.starts_with('0') {
        let stop = rest.find(|c: char| c != '0' && c != '_');
        rest = match stop {
            None => &rest[rest.len() - 1..],
            Some(i) => match rest[i..].chars().next() {
                Some('1'..='9' | '-') => &rest[i..],
                Some('.') => &rest[i - 1..],
                _ => return Err("int_parsing"),
            },
        };
    } else if !rest.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return Err("int_parsing");
    }
    if let Some((whole, fraction)) = rest.split_once('.')
        && !fraction.is_empty()
        && fraction.chars().all(|c| c == '0')
    {
        rest = whole;
    }
    let joined;
    let underscores_ok = rest.contains('_')
        && !rest.starts_with('_')
        && !rest.ends_with('_')
        && !rest.contains("__");
    if underscores_ok {
        joined = rest.replace('_', "");
        rest = &joined;
    } else if rest.len() == s.len() {
        return Err("int_parsing");
    }
    let text = if negative {
        format!("-{rest}")
    } else {
        rest.to_owned()
    };
    json_int_literal(&text).unwrap_or(Err("int_parsing"))
}

/// pydantic's `str_as_float`: Rust's float syntax after trimming (`inf`, `nan`, `.5`, `1.`
/// included), or the untrimmed text with single `_` between characters dropped.
fn float_from_text(s: &str) -> Result<f64, &'static str> {
    if let Ok(f) = s.trim().parse::<f64>() {
        return Ok(f);
    }
    let underscores_ok =
        s.contains('_') && !s.starts_with('_') && !s.ends_with('_') && !s.contains("__");
    if underscores_ok && let Ok(f) = s.replace('_', "").parse::<f64>() {
        return Ok(f);
    }
    Err("float_parsing")
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

    use serde_json::Value;

    use super::{PyValue, pydantic_reads};

    /// A read value in the reference file's tagged form.
    fn tagged(read: &Result<PyValue, &'static str>) -> Value {
        let float = |f: f64| {
            if f.is_nan() {
                serde_json::json!("nan")
            } else if f.is_infinite() {
                serde_json::json!(if f > 0.0 { "inf" } else { "-inf" })
            } else {
                serde_json::json!(f)
            }
        };
        match read {
            Ok(PyValue::None) => serde_json::json!({"none": true}),
            Ok(PyValue::Bool(b)) => serde_json::json!({ "bool": b }),
            Ok(PyValue::Int(i)) => serde_json::json!({"int": i.to_string()}),
            Ok(PyValue::Float(f)) => serde_json::json!({ "float": float(*f) }),
            Ok(PyValue::Str(s)) => serde_json::json!({ "str": s }),
            Err(kind) => serde_json::json!({ "error": kind }),
        }
    }

    /// The mock reads every odd spelling of every scalar parameter type exactly as the real
    /// server's FastMCP and pydantic do (the reference was recorded from them), error types
    /// included.
    #[test]
    fn pydantic_reads_match_the_recorded_reference() {
        let data: Value = serde_json::from_str(include_str!(
            "../../../../tests/fixtures/reference/pydantic-reads.json"
        ))
        .unwrap();
        let mut checked = 0;
        let mut wrong = Vec::new();
        for case in data["cases"].as_array().unwrap() {
            for r in case["reads"].as_array().unwrap() {
                let input: Value = serde_json::from_str(r["input"].as_str().unwrap()).unwrap();
                let got = tagged(&pydantic_reads(&case["schema"], &input));
                let want = &r["read"];
                // Floats compare by value (-0.0 is 0.0 in JSON's equality, too).
                let same = match (got.get("float"), want.get("float")) {
                    (Some(a), Some(b)) => a.as_f64() == b.as_f64() && a.is_f64() == b.is_f64(),
                    _ => got == *want,
                };
                if !same {
                    wrong.push(format!(
                        "{} {}: got {got}, pydantic {want}",
                        case["type"], r["input"]
                    ));
                }
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked}");
        assert!(
            wrong.is_empty(),
            "{} of {checked} differ:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}
