//! Argument validation. The real tools answer bad arguments the way the real server does
//! (pydantic's messages, in an `isError` result); the extended tools validate against their
//! JSON Schema (the `jsonschema` crate) and name each failing JSON path.

use serde_json::Value;
use tollgate_catalog::CatalogTool;

/// Python's `repr` of a JSON value, as pydantic quotes inputs.
pub(crate) fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
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

/// The JSON types a property's schema admits (`anyOf` flattened).
fn admitted_types(schema: &Value) -> Vec<&str> {
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        return vec![t];
    }
    schema
        .get("anyOf")
        .and_then(Value::as_array)
        .map(|alts| {
            alts.iter()
                .filter_map(|a| a.get("type").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether pydantic (lax mode) accepts `v` for a JSON Schema type.
fn accepts(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => {
            v.is_i64()
                || v.is_u64()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
                || v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok())
        }
        "number" => v.is_number() || v.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok()),
        "boolean" => {
            v.is_boolean()
                || v.as_i64().is_some_and(|i| i == 0 || i == 1)
                || v.as_str().is_some_and(|s| {
                    matches!(
                        s.to_ascii_lowercase().as_str(),
                        "true" | "false" | "1" | "0" | "yes" | "no" | "on" | "off"
                    )
                })
        }
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn type_error(ty: &str) -> (&'static str, &'static str) {
    match ty {
        "string" => ("Input should be a valid string", "string_type"),
        "integer" => ("Input should be a valid integer", "int_type"),
        "number" => ("Input should be a valid number", "float_type"),
        "boolean" => ("Input should be a valid boolean", "bool_type"),
        "object" => ("Input should be a valid dictionary", "dict_type"),
        "array" => ("Input should be a valid list", "list_type"),
        _ => ("Input should be a valid value", "value_error"),
    }
}

/// pydantic's report for a real tool's arguments, or `None` when they are valid.
pub(crate) fn pydantic_errors(tool: &CatalogTool, args: &Value) -> Option<String> {
    let schema = &tool.input_schema;
    let mut errors = Vec::new();
    let Some(obj) = args.as_object() else {
        return Some(format!(
            "Error executing tool {}: 1 validation error for {}Arguments\n  Input should be a valid dictionary [type=dict_type, input_value={}, input_type={}]\n    For further information visit https://errors.pydantic.dev/2.14/v/dict_type",
            tool.name,
            tool.name,
            py_repr(args),
            py_type(args)
        ));
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        // pydantic reports in declaration order; the schema keeps it only in `required` (the
        // required parameters come first in the real server's signatures), so required
        // fields go first, in that order, then the optional ones.
        let ordered = required
            .iter()
            .filter_map(|r| props.get_key_value(*r))
            .chain(
                props
                    .iter()
                    .filter(|(k, _)| !required.contains(&k.as_str())),
            );
        for (name, prop) in ordered {
            match obj.get(name) {
                None if required.contains(&name.as_str()) => errors.push(format!(
                    "{name}\n  Field required [type=missing, input_value={}, input_type=dict]\n    For further information visit https://errors.pydantic.dev/2.14/v/missing",
                    py_repr(args)
                )),
                None => {}
                Some(v) => {
                    let types = admitted_types(prop);
                    if !types.is_empty() && !types.iter().any(|t| accepts(t, v)) {
                        let main = types.iter().find(|t| **t != "null").copied().unwrap_or("null");
                        let (msg, kind) = type_error(main);
                        errors.push(format!(
                            "{name}\n  {msg} [type={kind}, input_value={}, input_type={}]\n    For further information visit https://errors.pydantic.dev/2.14/v/{kind}",
                            py_repr(v),
                            py_type(v)
                        ));
                    }
                }
            }
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
        let errors: Vec<String> = validator
            .iter_errors(args)
            .take(10)
            .map(|e| {
                let pointer = e.instance_path().to_string();
                let path = if pointer.is_empty() {
                    "$".to_owned()
                } else {
                    format!("${}", pointer.replace('/', "."))
                };
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
