//! Where things are in a policy file: a map from JSON pointers (`/tools/Delete*/limits/0/max`)
//! to byte ranges, built from a spanned JSON syntax tree, so that a semantic error found on the
//! typed model can point at the exact text that caused it. Also finds duplicate object keys,
//! which serde would silently collapse into one.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use jsonc_parser::ast::{ObjectPropName, Value};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, CommentCollectionStrategy, ParseOptions, parse_to_ast};

/// The deepest nesting the span map walks. serde_json refuses anything deeper than 128 levels
/// on its own; this guard keeps the (recursive) syntax-tree parser away from hostile nesting
/// even when serde stopped reading before the deep part.
const MAX_DEPTH: usize = 128;

/// A policy file's text with its pointer → span map.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name diagnostics show (a path, or `<inline>`).
    pub name: Arc<str>,
    /// The whole text.
    pub text: Arc<str>,
    spans: HashMap<String, NodeSpan>,
    /// Keys that appear twice in one object: (pointer of the object member, first key, second key).
    pub duplicates: Vec<(String, Range<usize>, Range<usize>)>,
    /// Byte offset of the start of every line, for positions in O(log n).
    line_starts: Vec<usize>,
}

/// The key (for object members) and the value of one node.
#[derive(Debug, Clone)]
struct NodeSpan {
    key: Option<Range<usize>>,
    value: Range<usize>,
}

impl SourceFile {
    /// Indexes `text`. When the text is not valid JSON or nests too deeply the map is empty
    /// and only line/column positions from the JSON parser are available.
    pub fn new(name: &str, text: &str) -> SourceFile {
        let mut file = SourceFile {
            name: Arc::from(name),
            text: Arc::from(text),
            spans: HashMap::new(),
            duplicates: Vec::new(),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        };
        if nesting_depth(text) > MAX_DEPTH {
            return file;
        }
        let strict = ParseOptions {
            allow_comments: false,
            allow_loose_object_property_names: false,
            allow_trailing_commas: false,
            allow_missing_commas: false,
            allow_single_quoted_strings: false,
            allow_hexadecimal_numbers: false,
            allow_unary_plus_numbers: false,
            allow_bare_decimal_point_numbers: false,
            allow_non_finite_numbers: false,
            allow_extended_string_escapes: false,
        };
        let collect = CollectOptions {
            comments: CommentCollectionStrategy::Off,
            tokens: false,
        };
        if let Ok(parsed) = parse_to_ast(text, &collect, &strict)
            && let Some(value) = parsed.value
        {
            file.index(&value, String::new(), None);
        }
        file
    }

    fn index(&mut self, value: &Value<'_>, pointer: String, key: Option<Range<usize>>) {
        let range = value.range();
        match value {
            Value::Object(object) => {
                let mut seen: HashMap<String, Range<usize>> = HashMap::new();
                for prop in &object.properties {
                    let name = match &prop.name {
                        ObjectPropName::String(lit) => lit.value.to_string(),
                        ObjectPropName::Word(lit) => lit.value.to_string(),
                    };
                    let key_range = to_range(prop.name.range());
                    let child = format!("{pointer}/{}", escape_pointer(&name));
                    if let Some(first) = seen.get(&name) {
                        self.duplicates
                            .push((child.clone(), first.clone(), key_range.clone()));
                        // The first occurrence keeps its span; serde reads the last one, and
                        // the duplicate is an error of its own anyway.
                        continue;
                    }
                    seen.insert(name, key_range.clone());
                    self.index(&prop.value, child, Some(key_range));
                }
            }
            Value::Array(array) => {
                for (i, element) in array.elements.iter().enumerate() {
                    self.index(element, format!("{pointer}/{i}"), None);
                }
            }
            _ => {}
        }
        self.spans.insert(
            pointer,
            NodeSpan {
                key,
                value: to_range(range),
            },
        );
    }

    /// The span of the value at `pointer`, if the file has one there.
    pub fn value_span(&self, pointer: &str) -> Option<Range<usize>> {
        self.spans.get(pointer).map(|s| s.value.clone())
    }

    /// The span of the key of the member at `pointer` (its value's span for array elements).
    pub fn key_span(&self, pointer: &str) -> Option<Range<usize>> {
        self.spans
            .get(pointer)
            .map(|s| s.key.clone().unwrap_or_else(|| s.value.clone()))
    }

    /// The best span for `pointer`: the node itself, or else its nearest ancestor that exists
    /// (a missing field is reported on the object that lacks it).
    pub fn nearest_span(&self, pointer: &str) -> Option<Range<usize>> {
        let mut p = pointer;
        loop {
            if let Some(span) = self.value_span(p) {
                return Some(span);
            }
            let (parent, _) = p.rsplit_once('/')?;
            p = parent;
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self
            .line_starts
            .get(line.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line.max(1), column)
    }

    /// The byte offset of a 1-based line and column (in characters), clamped to the text.
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let mut offset = 0;
        for (i, l) in self.text.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                let within = l
                    .char_indices()
                    .nth(column.saturating_sub(1))
                    .map_or(l.len(), |(b, _)| b);
                return offset + within;
            }
            offset += l.len();
        }
        self.text.len()
    }
}

/// 1-based line and column (in characters) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn to_range(r: jsonc_parser::common::Range) -> Range<usize> {
    r.start..r.end
}

/// Escapes one JSON-pointer reference token (RFC 6901).
pub fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The deepest bracket nesting of `text`, ignoring brackets inside strings. Cheap enough to
/// run on every file before building the syntax tree.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    #[test]
    fn pointers_map_to_the_text_they_name() {
        let text = "{\n  \"tools\": {\n    \"a/b\": {\"max\": 10}\n  }\n}";
        let file = SourceFile::new("p.json", text);
        let span = file.value_span("/tools/a~1b/max").unwrap();
        assert_eq!(&text[span.clone()], "10");
        assert_eq!(file.line_col(span.start), (3, 20));
        let key = file.key_span("/tools/a~1b").unwrap();
        assert_eq!(&text[key], "\"a/b\"");
        assert_eq!(
            &text[file.nearest_span("/tools/a~1b/missing").unwrap()],
            "{\"max\": 10}"
        );
    }

    #[test]
    fn duplicate_keys_are_found() {
        let file = SourceFile::new("p.json", r#"{"tools": {"x": 1, "x": 2}}"#);
        assert_eq!(file.duplicates.len(), 1);
        assert_eq!(file.duplicates[0].0, "/tools/x");
    }

    #[test]
    fn hostile_nesting_is_not_walked() {
        let text = "[".repeat(100_000);
        let file = SourceFile::new("p.json", &text);
        assert!(file.value_span("").is_none());
        assert_eq!(nesting_depth(r#"{"a": "[[[["}"#), 1);
    }

    #[test]
    fn offsets_and_line_columns_round_trip() {
        let file = SourceFile::new("p.json", "{\n  \"é\": 1\n}");
        let offset = file.offset_of(2, 8);
        assert_eq!(file.line_col(offset), (2, 8));
        for offset in 0..=file.text.len() {
            if file.text.is_char_boundary(offset) {
                assert_eq!(
                    file.line_col(offset),
                    line_col(&file.text, offset),
                    "{offset}"
                );
            }
        }
    }
}
