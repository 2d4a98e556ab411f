//! JSON text the way the real server writes its answer bodies: Python's `json.dumps` with its
//! default settings (`", "` and `": "` separators, every non-ASCII character escaped as
//! `\uXXXX`). Clients that compare bodies byte for byte, or show them to a model, see the same
//! text from the mock as from the real server.

use std::io;

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CharEscape, Formatter, Serializer};

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // `ensure_ascii=True`: characters outside ASCII become `\uXXXX`, as UTF-16 code units
        // (surrogate pairs beyond the Basic Multilingual Plane). Runs of ASCII are written
        // whole.
        let mut units = [0u16; 2];
        let mut rest = fragment;
        while !rest.is_empty() {
            let ascii = rest
                .bytes()
                .position(|b| !b.is_ascii())
                .unwrap_or(rest.len());
            w.write_all(&rest.as_bytes()[..ascii])?;
            rest = &rest[ascii..];
            let Some(c) = rest.chars().next() else {
                break;
            };
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            rest = &rest[c.len_utf8()..];
        }
        Ok(())
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // Python writes control characters as `\u00XX` in lower case, like serde_json, and
        // uses the short forms for the usual ones; the default formatter agrees.
        serde_json::ser::CompactFormatter.write_char_escape(w, escape)
    }
}

/// `json.dumps(value)` as Python writes it.
pub(crate) fn dumps(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = Serializer::with_formatter(&mut out, PythonFormatter);
    // Serialising a `Value` into memory cannot fail; an empty body would be the fallback.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// [`dumps`] of the value whose compact JSON text (as serde_json writes it, with the same
/// escapes) is `compact`, written from the text: a space after every `,` and `:` outside
/// strings, and every character beyond ASCII inside them as `\uXXXX`.
pub(crate) fn respace(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() + compact.len() / 4);
    let (mut in_string, mut escaped) = (false, false);
    let mut units = [0u16; 2];
    let mut digits = [0u8; 4];
    for c in compact.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else if !c.is_ascii() {
                for unit in c.encode_utf16(&mut units) {
                    out.push_str("\\u");
                    for (i, d) in digits.iter_mut().enumerate() {
                        *d = b"0123456789abcdef"[usize::from((*unit >> (12 - 4 * i)) & 0xf)];
                    }
                    out.push_str(std::str::from_utf8(&digits).unwrap_or("0000"));
                }
                continue;
            }
            out.push(c);
            continue;
        }
        out.push(c);
        match c {
            '"' => in_string = true,
            ',' | ':' => out.push(' '),
            _ => {}
        }
    }
    out
}

/// `json.dumps` of a Python object whose dictionaries were built in a known order: keys in
/// `order` come first, in that order, the others after them alphabetically. The real server
/// dumps pydantic models, whose keys follow their fields' declaration order; one list per tool
/// covers its models, nested ones included.
pub(crate) fn dumps_ordered(value: &Value, order: &[&str]) -> String {
    let mut out = String::new();
    write_ordered(value, order, &mut out);
    out
}

fn write_ordered(value: &Value, order: &[&str], out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            let rank = |k: &str| order.iter().position(|o| *o == k).unwrap_or(usize::MAX);
            entries.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then_with(|| a.0.cmp(b.0)));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&dumps(&Value::String(k.clone())));
                out.push_str(": ");
                write_ordered(v, order, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_ordered(v, order, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&dumps(scalar)),
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use serde_json::json;

    use super::dumps;

    #[test]
    fn writes_like_python_json_dumps() {
        // What `python3 -c 'import json; print(json.dumps({"a": [1, "é😀\n"], "b": {}}))'` prints.
        assert_eq!(
            dumps(&json!({"a": [1, "é😀\n"], "b": {}, "c": null, "d": 1.5})),
            r#"{"a": [1, "\u00e9\ud83d\ude00\n"], "b": {}, "c": null, "d": 1.5}"#
        );
        // ASCII runs between escaped characters, at either end and in the middle.
        assert_eq!(
            dumps(&json!("ab é cd 😀ü ef")),
            r#""ab \u00e9 cd \ud83d\ude00\u00fc ef""#
        );
        // The text is still JSON and reads back to the same value.
        let v = json!({"k": ["x", {"y": true}]});
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&dumps(&v)).unwrap(),
            v
        );
    }

    /// JSON values without floats: strings from ASCII, control characters, accented letters
    /// and characters beyond the Basic Multilingual Plane.
    fn value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let text = "[a-z\"\\\\\u{0}-\u{1f}éü€😀]{0,12}";
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            text.prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(text, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// `text_bounds(..).spaced` is an upper bound of the text `dumps` writes, for any value
        /// without floats (the scenario runner's size check relies on it instead of writing the
        /// text).
        #[test]
        fn the_spaced_bound_is_at_least_the_text_length(v in value()) {
            let bound = tollgate_mcp::text_bounds(&v, 0);
            proptest::prop_assert!(bound.is_some());
            proptest::prop_assert!(bound.unwrap().spaced >= dumps(&v).len());
        }
    }

    proptest::proptest! {
        /// The Python text written from a value's compact text is the one written from the
        /// value, floating-point numbers included.
        #[test]
        fn respace_of_the_compact_text_is_dumps(v in value_or_float()) {
            let compact = serde_json::to_string(&v).unwrap();
            proptest::prop_assert_eq!(super::respace(&compact), dumps(&v));
        }
    }

    /// [`value`]'s, with floating-point numbers among the leaves.
    fn value_or_float() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            4 => value(),
            1 => (value(), any::<f64>()).prop_map(|(v, f)| serde_json::json!([v, {"f": f}])),
        ]
    }

    #[test]
    fn the_bounds_refuse_floats() {
        assert_eq!(tollgate_mcp::text_bounds(&json!({"a": [1.5]}), 0), None);
    }

    #[test]
    fn ordered_keys_come_first_then_the_rest_alphabetically() {
        let v =
            json!({"b": 1, "count": 2, "kind": "Pod", "items": [{"z": 1, "name": "p", "a": "é"}]});
        assert_eq!(
            super::dumps_ordered(&v, &["kind", "name", "count", "items"]),
            r#"{"kind": "Pod", "count": 2, "items": [{"name": "p", "a": "\u00e9", "z": 1}], "b": 1}"#
        );
    }
}
