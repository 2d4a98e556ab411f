//! Bringing a call's arguments to the values the tool will read, before the policy decides.
//!
//! The upstream's `tools/list` gives each tool an `inputSchema`. A Python MCP server (the real
//! Amazon EKS server among them) validates arguments with pydantic v2 in lax mode: an `integer`
//! parameter reads `"7"`, `7.0` and `true`; a `boolean` one reads `"yes"`, `"off"` and `1`. A
//! policy comparing the JSON as sent would refuse `0` and let `"0"` through, which the tool
//! reads as 0. So every argument whose schema gives a scalar type (`string`, `integer`,
//! `number`, `boolean`, their `anyOf` / `type: [..]` unions and nullable forms) is read the way
//! the tool reads it ([`tollgate_policy::lax`]; a union takes the first exact reading, else the
//! most exact, the first on a tie), the policy decides on that value, and that value is
//! forwarded: the tool reads exactly what the policy checked.
//!
//! Before pydantic, FastMCP (the Python SDK's server) replaces a string argument holding JSON
//! `null`, an array or an object by that value, for every parameter not declared plain `str`:
//! `" null "` is `None` to an optional parameter.
//!
//! A value its type cannot take is left as it is (the tool refuses it itself) and reported as a
//! [`TypeMismatch`]: the engine refuses the call when a rule checks that argument. `null` is
//! left alone (the policy treats it as absent; a nullable parameter takes it). Arguments the
//! schema does not describe, or describes with an object, array, `$ref` or anything but scalar
//! types, are left to the engine's comparisons for values of unknown type.
//!
//! Cost: a call whose arguments already have their schema's types (nearly every call) is only
//! looked at: nothing is cloned or allocated. The parameter types are read from the schema once,
//! when the tool is listed. Under a policy that checks no argument and branches on none, no
//! decision depends on argument values, and the gateway skips the reading altogether
//! (`Engine::reads_arguments`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::{Number, Value};
use tollgate_policy::TypeMismatch;
use tollgate_policy::lax::{self, Exactness};

/// A scalar type of JSON Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    String,
    Integer,
    Number,
    Boolean,
}

impl Scalar {
    fn parse(name: &str) -> Option<Scalar> {
        match name {
            "string" => Some(Scalar::String),
            "integer" => Some(Scalar::Integer),
            "number" => Some(Scalar::Number),
            "boolean" => Some(Scalar::Boolean),
            _ => None,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Scalar::String => "a string",
            Scalar::Integer => "an integer",
            Scalar::Number => "a number",
            Scalar::Boolean => "a boolean",
        }
    }

    /// Whether the tool reads `v` as it is under this type: a value of the type's own JSON
    /// kind (for `number`, an integer the nearest float is exactly).
    fn holds(self, v: &Value) -> bool {
        match self {
            Scalar::String => v.is_string(),
            Scalar::Boolean => v.is_boolean(),
            Scalar::Integer => v.as_number().is_some_and(|n| n.is_i64() || n.is_u64()),
            Scalar::Number => v.as_number().is_some_and(float_holds),
        }
    }

    /// How the tool reads `v` under this type, and how exactly; `None` when it cannot.
    fn read(self, v: &Value) -> Option<(Exactness, Read)> {
        if self.holds(v) {
            let exactness = match self {
                Scalar::String => Exactness::Strict,
                Scalar::Number if !v.is_f64() => Exactness::Strict,
                _ => Exactness::Exact,
            };
            return Some((exactness, Read::Same));
        }
        let (exactness, value) = match self {
            Scalar::String => return None,
            Scalar::Integer => {
                let (i, e) = lax::as_integer(v)?;
                let n = i64::try_from(i)
                    .map(Number::from)
                    .or_else(|_| u64::try_from(i).map(Number::from))
                    .ok()?;
                (e, Value::Number(n))
            }
            Scalar::Number => {
                let (f, e) = lax::as_number(v)?;
                // NaN and the infinities have no JSON: such a value cannot be forwarded as read.
                (e, Value::Number(Number::from_f64(f)?))
            }
            Scalar::Boolean => {
                let (b, e) = lax::as_boolean(v)?;
                (e, Value::Bool(b))
            }
        };
        Some((exactness, Read::Changed(value)))
    }
}

/// Whether an integer's nearest float is exactly that integer (a float always is itself).
fn float_holds(n: &Number) -> bool {
    // Converted back only inside the range, where `as` is exact (and a single instruction).
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => {
            let f = i as f64;
            f < TWO_63 && f as i64 == i
        }
        (_, Some(u)) => {
            let f = u as f64;
            f < 2.0 * TWO_63 && f as u64 == u
        }
        _ => true,
    }
}

/// What the tool makes of one value.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    /// The value as it is.
    Same,
    /// Another spelling of this value.
    Changed(Value),
}

/// The scalar types one parameter takes, in the schema's order (a union's ties go to the
/// first), and whether it takes `null`.
#[derive(Debug, Clone)]
struct Shape {
    types: Box<[Scalar]>,
    nullable: bool,
    /// Declared plain `str` (`{"type": "string"}`): FastMCP does not pre-parse its strings.
    plain_string: bool,
    /// What the parameter takes, for messages: `an integer or null`.
    expected: Arc<str>,
}

impl Shape {
    /// The shape of one property's schema: `{"type": T}`, `{"type": [T, "null"]}`, `{"anyOf":
    /// [..]}` of those (nested), `nullable: true`; `None` for anything else.
    fn of(schema: &Value) -> Option<Shape> {
        let mut types = Vec::new();
        let mut nullable = false;
        collect(schema, &mut types, &mut nullable, 0)?;
        if types.is_empty() {
            return None;
        }
        let mut expected: Vec<&str> = types.iter().map(|t| t.text()).collect();
        if nullable {
            expected.push("null");
        }
        Some(Shape {
            plain_string: types == [Scalar::String] && !nullable,
            nullable,
            types: types.into(),
            expected: Arc::from(expected.join(" or ")),
        })
    }

    /// Whether the tool reads `v` as it is (the fast path's question): `null`, or a value one
    /// of the types holds. Such a value's reading is always [`Read::Same`]: the type holding
    /// it reads it exactly, or strictly where no other type can read it exactly.
    fn holds(&self, v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => {
                self.types.contains(&Scalar::String)
                    && (self.plain_string || pre_parse(s).is_none())
            }
            _ => self.types.iter().any(|t| t.holds(v)),
        }
    }

    /// How the tool reads `v`: the first exact reading, else the most exact one (the first of
    /// those); `None` when no type takes it.
    fn read(&self, v: &Value) -> Option<Read> {
        if v.is_null() {
            return Some(Read::Same);
        }
        if let Value::String(s) = v
            && !self.plain_string
        {
            match pre_parse(s) {
                Some(PreParsed::Null) => {
                    return self.nullable.then_some(Read::Changed(Value::Null));
                }
                Some(PreParsed::Structure) => return None,
                None => {}
            }
        }
        let mut best: Option<(Exactness, Read)> = None;
        for t in &self.types {
            let Some((exactness, read)) = t.read(v) else {
                continue;
            };
            if exactness == Exactness::Exact {
                return Some(read);
            }
            if best.as_ref().is_none_or(|(b, _)| *b < exactness) {
                best = Some((exactness, read));
            }
        }
        best.map(|(_, read)| read)
    }
}

/// What FastMCP's pre-parse makes of a string argument of a parameter not declared plain
/// `str`, before pydantic sees it, when it changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreParsed {
    /// JSON `null` (white space around it allowed): the parameter receives `None`.
    Null,
    /// A JSON array or object: no scalar type takes it.
    Structure,
}

/// FastMCP replaces a string holding JSON `null`, an array or an object by that value (one
/// holding a number, a string or a boolean is left: Python's `bool` is an `int`).
fn pre_parse(s: &str) -> Option<PreParsed> {
    let t = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    match t.as_bytes().first() {
        Some(b'n') if t == "null" => Some(PreParsed::Null),
        Some(b'[' | b'{') if serde_json::from_str::<Value>(t).is_ok() => Some(PreParsed::Structure),
        _ => None,
    }
}

/// Adds the scalar types `schema` names to `types` (once each, in order); `None` when it names
/// anything else. Bounded: unions nest at most four deep.
fn collect(schema: &Value, types: &mut Vec<Scalar>, nullable: &mut bool, depth: u8) -> Option<()> {
    let object = schema.as_object()?;
    if depth > 4 {
        return None;
    }
    if object.get("nullable") == Some(&Value::Bool(true)) {
        *nullable = true;
    }
    let mut add = |name: &str| {
        if name == "null" {
            *nullable = true;
            return Some(());
        }
        let t = Scalar::parse(name)?;
        if !types.contains(&t) {
            types.push(t);
        }
        Some(())
    };
    let union = object.get("anyOf").or_else(|| object.get("oneOf"));
    match (object.get("type"), union) {
        (Some(Value::String(name)), None) => add(name),
        (Some(Value::Array(names)), None) => names.iter().try_for_each(|n| add(n.as_str()?)),
        (None, Some(Value::Array(alternatives))) => alternatives
            .iter()
            .try_for_each(|a| collect(a, types, nullable, depth + 1)),
        _ => None,
    }
}

/// A listed tool's parameter types: the embedded catalogue's own, read once per process, when
/// the upstream lists a catalogued tool with the catalogue's schema (no reference count moves
/// when a call copies them), or the upstream's.
#[derive(Debug, Clone)]
pub enum ToolTypes {
    Catalogued(&'static ArgTypes),
    Listed(Arc<ArgTypes>),
}

impl std::ops::Deref for ToolTypes {
    type Target = ArgTypes;

    fn deref(&self) -> &ArgTypes {
        match self {
            ToolTypes::Catalogued(t) => t,
            ToolTypes::Listed(t) => t,
        }
    }
}

impl ToolTypes {
    /// The types of a tool the upstream listed with `schema`; `catalogued` is its entry in the
    /// embedded catalogue, if it has one. `None` when the schema has no scalar parameter.
    pub fn of_listed(
        schema: Option<&Value>,
        catalogued: Option<&'static tollgate_catalog::CatalogTool>,
    ) -> Option<ToolTypes> {
        if let (Some(tool), Some(schema)) = (catalogued, schema)
            && tool.input_schema == *schema
            && let Some(types) = catalogued_types(tool)
        {
            return types.map(ToolTypes::Catalogued);
        }
        ArgTypes::of_schema(schema).map(|t| ToolTypes::Listed(Arc::new(t)))
    }
}

/// The parameter types of an embedded catalogue tool, read from its schema the first time;
/// `None` for a tool that is not the embedded catalogue's.
fn catalogued_types(
    tool: &'static tollgate_catalog::CatalogTool,
) -> Option<Option<&'static ArgTypes>> {
    type Cache = HashMap<&'static str, OnceLock<Option<ArgTypes>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        tollgate_catalog::Catalog::embedded()
            .tools()
            .iter()
            .map(|t| (t.name.as_str(), OnceLock::new()))
            .collect()
    });
    let is_embedded = tollgate_catalog::Catalog::embedded()
        .get(&tool.name)
        .is_some_and(|t| std::ptr::eq(t, tool));
    if !is_embedded {
        return None;
    }
    let types = cache
        .get(tool.name.as_str())?
        .get_or_init(|| ArgTypes::of_schema(Some(&tool.input_schema)));
    Some(types.as_ref())
}

/// Whether `a` sorts before `b` (as `str` does), deciding on the first bytes when they differ.
fn before(a: &str, b: &str) -> bool {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x < y,
        _ => a < b,
    }
}

/// The scalar parameter types of one tool, read from its `inputSchema` once, when it is listed.
#[derive(Debug, Clone)]
pub struct ArgTypes {
    /// By parameter name, sorted.
    params: Box<[(Box<str>, Shape)]>,
    /// The schema's `default` of each scalar parameter that has one (not `null`): what the
    /// tool acts on when a call leaves it out. As declared: pydantic does not validate a
    /// default, so the tool receives it as it is.
    defaults: Option<Arc<serde_json::Map<String, Value>>>,
}

impl ArgTypes {
    /// The scalar parameters of a tool's `inputSchema`; `None` when it has none (then there is
    /// nothing to do for its calls).
    pub fn of_schema(schema: Option<&Value>) -> Option<ArgTypes> {
        let properties = schema?.get("properties")?.as_object()?;
        let mut params: Vec<(Box<str>, Shape)> = properties
            .iter()
            .filter_map(|(name, p)| Some((Box::from(name.as_str()), Shape::of(p)?)))
            .collect();
        if params.is_empty() {
            return None;
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let defaults: serde_json::Map<String, Value> = params
            .iter()
            .filter_map(|(name, _)| {
                let d = properties.get(&**name)?.get("default")?;
                (!d.is_null()).then(|| (name.to_string(), d.clone()))
            })
            .collect();
        Some(ArgTypes {
            params: params.into(),
            defaults: (!defaults.is_empty()).then(|| Arc::new(defaults)),
        })
    }

    /// The values the tool takes for scalar arguments a call leaves out (see
    /// [`tollgate_policy::ToolMeta::defaults`]).
    pub fn defaults(&self) -> Option<&Arc<serde_json::Map<String, Value>>> {
        self.defaults.as_ref()
    }

    /// Whether every argument of `map` the schema describes already has its type. With no
    /// more parameters than arguments, each parameter is looked up (walking a map costs more
    /// than a few lookups in it); otherwise, the arguments and the parameters being both sorted
    /// by name, one walk over both finds each argument's parameter (most names differ in their
    /// first byte, compared first).
    fn all_hold(&self, map: &serde_json::Map<String, Value>) -> bool {
        if self.params.len() <= map.len() {
            return self
                .params
                .iter()
                .all(|(k, shape)| map.get(&**k).is_none_or(|v| shape.holds(v)));
        }
        let mut params = self.params.iter().peekable();
        for (name, v) in map {
            while let Some((k, _)) = params.next_if(|(k, _)| before(k, name)) {
                let _ = k;
            }
            if let Some((k, shape)) = params.peek()
                && **k == **name
                && !shape.holds(v)
            {
                return false;
            }
        }
        true
    }

    fn shape(&self, name: &str) -> Option<&Shape> {
        self.params
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .and_then(|i| self.params.get(i))
            .map(|(_, s)| s)
    }

    /// Brings `arguments` to the values the tool reads, in place (copied first only if they
    /// are shared and something changes), and returns the arguments the tool cannot read as
    /// their type, which are left as they are. Arguments that are not an object are left
    /// alone. When every argument already has its type, nothing is copied or allocated.
    pub fn coerce(&self, arguments: &mut Arc<Value>) -> Vec<TypeMismatch> {
        let Some(map) = arguments.as_object() else {
            return Vec::new();
        };
        if self.all_hold(map) {
            return Vec::new();
        }
        let mut unreadable = Vec::new();
        if let Value::Object(map) = Arc::make_mut(arguments) {
            for (name, value) in map.iter_mut() {
                let Some(shape) = self.shape(name) else {
                    continue;
                };
                match shape.read(value) {
                    Some(Read::Same) => {}
                    Some(Read::Changed(read)) => *value = read,
                    None => unreadable.push(TypeMismatch {
                        argument: name.clone(),
                        expected: Arc::clone(&shape.expected),
                    }),
                }
            }
        }
        unreadable
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

    use serde_json::json;

    use super::*;

    fn types(properties: Value) -> ArgTypes {
        ArgTypes::of_schema(Some(&json!({ "type": "object", "properties": properties })))
            .unwrap_or_else(|| ArgTypes {
                params: Box::new([]),
                defaults: None,
            })
    }

    /// `(coerced arguments, unreadable names)` of `args` under `properties`.
    fn coerced(properties: Value, args: Value) -> (Value, Vec<String>) {
        let mut arguments = Arc::new(args);
        let unreadable = types(properties).coerce(&mut arguments);
        (
            Arc::unwrap_or_clone(arguments),
            unreadable.into_iter().map(|m| m.argument).collect(),
        )
    }

    /// Each scalar type reads the spellings pydantic's lax mode reads, and forwards the value.
    #[test]
    fn scalar_parameters_read_as_the_tool_reads_them() {
        let props = json!({
            "i": {"type": "integer"}, "n": {"type": "number"}, "b": {"type": "boolean"},
            "s": {"type": "string"}
        });
        for (args, want) in [
            (json!({"i": 0.0}), json!({"i": 0})),
            (json!({"i": -0.0}), json!({"i": 0})),
            (json!({"i": 0e5}), json!({"i": 0})),
            (json!({"i": " 7 "}), json!({"i": 7})),
            (json!({"i": "-0"}), json!({"i": 0})),
            (json!({"i": "1_000"}), json!({"i": 1000})),
            (json!({"i": true}), json!({"i": 1})),
            (json!({"n": "1e3"}), json!({"n": 1000.0})),
            (json!({"n": false}), json!({"n": 0.0})),
            (json!({"n": " .5"}), json!({"n": 0.5})),
            (json!({"b": "YES"}), json!({"b": true})),
            (json!({"b": "off"}), json!({"b": false})),
            (json!({"b": 1}), json!({"b": true})),
            (json!({"b": 0.0}), json!({"b": false})),
            (
                json!({"b": "t", "i": "2", "s": "x"}),
                json!({"b": true, "i": 2, "s": "x"}),
            ),
        ] {
            let (got, unreadable) = coerced(props.clone(), args.clone());
            assert_eq!(got, want, "{args}");
            assert!(unreadable.is_empty(), "{args}");
        }
        // What a type cannot take is left as it is and reported.
        for args in [
            json!({"i": 0.5}),
            json!({"i": "1e3"}),
            json!({"i": [1]}),
            json!({"n": "nan"}),
            json!({"n": "one"}),
            json!({"b": 2}),
            json!({"b": " yes"}),
            json!({"s": 7}),
            json!({"s": true}),
        ] {
            let (got, unreadable) = coerced(props.clone(), args.clone());
            assert_eq!(got, args);
            assert_eq!(unreadable.len(), 1, "{args}");
        }
    }

    /// Unions read a value as their first exact member, else their most exact one (a JSON
    /// string is read strictly by `string`, laxly by the others), the first on a tie; nullable
    /// forms take `null`.
    #[test]
    fn unions_pick_the_member_pydantic_picks() {
        let props = json!({
            "is": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "si": {"type": ["string", "integer"]},
            "in": {"anyOf": [{"type": "integer"}, {"type": "number"}]},
            "ni": {"anyOf": [{"type": "number"}, {"type": "integer"}]},
            "bi": {"anyOf": [{"type": "boolean"}, {"type": "integer"}]},
            "on": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "ob": {"type": "boolean", "nullable": true}
        });
        for (args, want) in [
            (json!({"is": "7"}), json!({"is": "7"})),
            (json!({"is": 7.0}), json!({"is": 7})),
            (json!({"si": "7"}), json!({"si": "7"})),
            (json!({"in": 7.5}), json!({"in": 7.5})),
            (json!({"in": "7"}), json!({"in": 7})),
            (json!({"ni": "7"}), json!({"ni": 7.0})),
            (json!({"ni": 7}), json!({"ni": 7})),
            (json!({"bi": 1}), json!({"bi": 1})),
            (json!({"bi": "1"}), json!({"bi": true})),
            (json!({"bi": 2.0}), json!({"bi": 2})),
            (json!({"on": null}), json!({"on": null})),
            (json!({"on": "3"}), json!({"on": 3})),
            (json!({"ob": "no"}), json!({"ob": false})),
            (json!({"ob": null}), json!({"ob": null})),
        ] {
            let (got, unreadable) = coerced(props.clone(), args.clone());
            assert_eq!(got, want, "{args}");
            assert!(unreadable.is_empty(), "{args}");
        }
        let t = types(props);
        let expected = |name: &str| t.shape(name).map(|s| s.expected.to_string());
        assert_eq!(expected("is").as_deref(), Some("an integer or a string"));
        assert_eq!(expected("on").as_deref(), Some("an integer or null"));
        assert_eq!(expected("ob").as_deref(), Some("a boolean or null"));
    }

    /// Parameters that are not scalar (or not described) are left to the engine.
    #[test]
    fn non_scalar_parameters_are_left_alone() {
        let props = json!({
            "o": {"type": "object"}, "a": {"type": "array", "items": {"type": "integer"}},
            "r": {"$ref": "#/$defs/Mode"}, "e": {"enum": [1, 2]},
            "m": {"anyOf": [{"type": "integer"}, {"type": "object"}]}
        });
        assert!(ArgTypes::of_schema(Some(&json!({"properties": props.clone()}))).is_none());
        let args = json!({"o": "1", "a": ["1"], "r": "1", "e": "1", "m": "1", "x": "1"});
        assert_eq!(coerced(props, args.clone()), (args, Vec::new()));
    }

    /// Arguments that already have their types are not copied: the shared value is kept.
    #[test]
    fn arguments_of_their_types_are_not_copied() {
        let t = types(json!({"i": {"type": "integer"}, "s": {"type": "string"},
            "n": {"type": ["number", "null"]}}));
        let original = Arc::new(json!({"i": 7, "s": "x", "n": null, "other": "1"}));
        let mut arguments = Arc::clone(&original);
        assert!(t.coerce(&mut arguments).is_empty());
        assert!(Arc::ptr_eq(&original, &arguments));
        // A changed value is written into a copy; the shared original is untouched.
        let original = Arc::new(json!({"i": "7"}));
        let mut arguments = Arc::clone(&original);
        t.coerce(&mut arguments);
        assert_eq!(*arguments, json!({"i": 7}));
        assert_eq!(*original, json!({"i": "7"}));
    }

    /// Against the reference recorded from FastMCP and pydantic themselves
    /// (tests/fixtures/reference/pydantic-reads.json): every value pydantic reads is read as
    /// the same value (numbers by value), and every value it refuses is reported unreadable.
    /// Only values JSON cannot carry (NaN, the infinities, integers beyond 64 bits) may be
    /// reported unreadable though pydantic reads them, and `null` is left alone.
    #[test]
    fn readings_match_the_recorded_reference() {
        let data: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/reference/pydantic-reads.json"
        ))
        .unwrap_or_default();
        let mut checked = 0;
        let mut wrong = Vec::new();
        for case in data["cases"].as_array().into_iter().flatten() {
            let Some(shape) = Shape::of(&case["schema"]) else {
                wrong.push(format!("{}: no shape", case["type"]));
                continue;
            };
            for r in case["reads"].as_array().into_iter().flatten() {
                let text = r["input"].as_str().unwrap_or_default();
                let Ok(input) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                let got = match shape.read(&input) {
                    Some(Read::Same) => Some(input.clone()),
                    Some(Read::Changed(v)) => Some(v),
                    None => None,
                };
                let want = &r["read"];
                let number = |v: &Value| v.as_f64();
                let ok = match (&got, want.as_object().and_then(|o| o.iter().next())) {
                    // `null` is left alone by design (the policy treats it as absent).
                    (Some(Value::Null), _) if input.is_null() => true,
                    (None, Some((k, _))) if k == "error" => true,
                    (None, Some((k, v))) if k == "float" => v.is_string(),
                    (None, Some((k, v))) if k == "int" => v
                        .as_str()
                        .is_some_and(|t| t.parse::<i64>().is_err() && t.parse::<u64>().is_err()),
                    (Some(g), Some((k, v))) => match k.as_str() {
                        "none" => g.is_null(),
                        "bool" => g == v,
                        "str" => g == v,
                        "int" => v
                            .as_str()
                            .and_then(|t| t.parse::<i128>().ok())
                            .is_some_and(|i| {
                                g.as_i64().map(i128::from).or(g.as_u64().map(i128::from)) == Some(i)
                            }),
                        "float" => number(g).is_some() && number(g) == number(v),
                        _ => false,
                    },
                    _ => false,
                };
                if !ok {
                    wrong.push(format!(
                        "{} {text}: got {got:?}, pydantic {want}",
                        case["type"]
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

    /// A catalogued tool listed with the catalogue's schema shares the types read once per
    /// process; listed with another schema, the listed one's are read.
    #[test]
    fn catalogued_tools_share_their_types_when_listed_as_catalogued() {
        let tool = tollgate_catalog::Catalog::embedded()
            .get("get_pod_logs")
            .unwrap_or_else(|| panic!("get_pod_logs is catalogued"));
        let same = ToolTypes::of_listed(Some(&tool.input_schema), Some(tool));
        let again = ToolTypes::of_listed(Some(&tool.input_schema), Some(tool));
        match (&same, &again) {
            (Some(ToolTypes::Catalogued(a)), Some(ToolTypes::Catalogued(b))) => {
                assert!(std::ptr::eq(*a, *b));
            }
            other => panic!("{other:?}"),
        }
        let mut other = tool.input_schema.clone();
        other["properties"]["tail_lines"] = json!({"type": "string"});
        let listed = ToolTypes::of_listed(Some(&other), Some(tool));
        assert!(matches!(listed, Some(ToolTypes::Listed(_))));
        let (mut a, mut b) = (
            Arc::new(json!({"tail_lines": 7})),
            Arc::new(json!({"tail_lines": 7})),
        );
        assert!(same.unwrap().coerce(&mut a).is_empty());
        assert_eq!(listed.unwrap().coerce(&mut b).len(), 1);
    }

    /// A large integer read as a float is forwarded as the float the tool reads.
    #[test]
    fn integers_a_float_cannot_hold_are_forwarded_as_the_float() {
        let (got, _) = coerced(
            json!({"n": {"type": "number"}}),
            json!({"n": 9_007_199_254_740_993_u64}),
        );
        assert_eq!(got, json!({"n": 9_007_199_254_740_992.0}));
    }
}
