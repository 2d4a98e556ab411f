//! Compact JSON text written value by value, with no tree: the bodies of the answers a replay
//! makes most (HealthOmics batches and runs). The writer counts, as it writes, what bounds the
//! same body's Python-style text (a space after every `,` and `:`, `\uXXXX` beyond ASCII), so
//! the body's size is known without reading it again.
//!
//! The caller writes every object's keys in order, as serde_json writes a `Value`'s;
//! [`ToolOutput::compact`](super::ToolOutput::compact) checks that order in the tests.

use tollgate_mcp::TextBounds;

/// The bytes a JSON string must escape: the control characters, `"` and `\\`.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// A place in a body's text, from [`Compact::mark`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    len: usize,
    separators: usize,
    wide: usize,
    top_keys: u64,
}

/// Text written after a [`Mark`], from [`Compact::tail_since`]: a writer holding only that
/// text and what it counted, in the state the whole body's writer was in after it (its depths
/// are the whole body's, as the text before the mark is the same).
#[derive(Debug)]
pub(crate) struct Tail(Compact);

/// A body's compact JSON text being written.
#[derive(Debug)]
pub(crate) struct Compact {
    text: String,
    /// The `,` and `:` written outside strings.
    separators: usize,
    /// The bytes beyond ASCII written inside strings.
    wide: usize,
    depth: usize,
    deepest: usize,
    /// No value yet in the innermost object or array (no `,` before the next).
    first: bool,
    /// A key was just written (no `,` before its value).
    after_key: bool,
    /// The top-level keys written, as a set of [`key_bit`]s (a key whose bit is not set is
    /// not among them).
    top_keys: u64,
}

/// A key's bit in a [`Compact`]'s set of top-level keys: from its first byte and its length.
pub(crate) fn key_bit(key: &str) -> u64 {
    let first = key.as_bytes().first().copied().unwrap_or(0);
    1 << ((usize::from(first) * 31 + key.len()) % 64)
}

impl Compact {
    pub(crate) fn new() -> Compact {
        Compact {
            text: String::with_capacity(256),
            separators: 0,
            wide: 0,
            depth: 0,
            deepest: 0,
            first: true,
            after_key: false,
            top_keys: 0,
        }
    }

    fn value_start(&mut self) {
        if self.after_key {
            self.after_key = false;
        } else if !self.first {
            self.text.push(',');
            self.separators += 1;
        }
        self.first = false;
    }

    fn push_quoted(&mut self, s: &str) {
        // Most strings need no escape and are ASCII: written whole.
        if !s.is_ascii() {
            self.wide += s.bytes().filter(|&b| b >= 0x80).count();
        }
        if s.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)]) {
            // serde_json's escapes, which the rest of the body's text uses.
            let quoted = serde_json::to_string(s).unwrap_or_default();
            self.text.push_str(&quoted);
        } else {
            self.text.push('"');
            self.text.push_str(s);
            self.text.push('"');
        }
    }

    /// Opens an object (`{`) or an array (`[`) as the next value.
    fn open_with(&mut self, bracket: char) -> &mut Compact {
        self.value_start();
        self.text.push(bracket);
        self.depth += 1;
        self.deepest = self.deepest.max(self.depth);
        self.first = true;
        self
    }

    /// Closes the innermost object (`}`) or array (`]`).
    fn close_with(&mut self, bracket: char) -> &mut Compact {
        self.text.push(bracket);
        self.depth = self.depth.saturating_sub(1);
        self.first = false;
        self
    }

    /// Opens an object as the next value.
    pub(crate) fn open(&mut self) -> &mut Compact {
        self.open_with('{')
    }

    /// Opens an array as the next value.
    pub(crate) fn open_array(&mut self) -> &mut Compact {
        self.open_with('[')
    }

    /// Closes the innermost object.
    pub(crate) fn close(&mut self) -> &mut Compact {
        self.close_with('}')
    }

    /// Closes the innermost array.
    pub(crate) fn close_array(&mut self) -> &mut Compact {
        self.close_with(']')
    }

    /// The next key of the innermost object: a name written in the code, which needs no
    /// escape and is ASCII.
    pub(crate) fn key(&mut self, key: &'static str) -> &mut Compact {
        debug_assert!(
            key.bytes()
                .all(|b| b.is_ascii() && b >= 0x20 && b != b'"' && b != b'\\'),
            "a key written with no escape: {key:?}"
        );
        self.value_start();
        if self.depth == 1 {
            self.top_keys |= key_bit(key);
        }
        self.text.push('"');
        self.text.push_str(key);
        self.text.push('"');
        self.text.push(':');
        self.separators += 1;
        self.after_key = true;
        self
    }

    pub(crate) fn str(&mut self, value: &str) -> &mut Compact {
        self.value_start();
        self.push_quoted(value);
        self
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Compact {
        self.value_start();
        self.text.push_str(itoa::Buffer::new().format(value));
        self
    }

    /// A string that `write` writes to the text, which needs no escape and is ASCII (a
    /// request id, from digits).
    pub(crate) fn plain_str(&mut self, write: impl FnOnce(&mut String)) -> &mut Compact {
        self.value_start();
        self.text.push('"');
        let start = self.text.len();
        write(&mut self.text);
        debug_assert!(
            self.text.as_bytes()[start..]
                .iter()
                .all(|&b| b.is_ascii() && b >= 0x20 && b != b'"' && b != b'\\'),
            "a plain string needs no escape"
        );
        self.text.push('"');
        self
    }

    /// A string, or `null` for none.
    pub(crate) fn opt_str(&mut self, value: Option<&str>) -> &mut Compact {
        match value {
            Some(v) => self.str(v),
            None => {
                self.value_start();
                self.text.push_str("null");
                self
            }
        }
    }

    /// Where the writer is, for [`Compact::tail_since`].
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            len: self.text.len(),
            separators: self.separators,
            wide: self.wide,
            top_keys: self.top_keys,
        }
    }

    /// What was written since `mark`, with what it counted and where it left the writer, for
    /// [`Compact::append`] to write again after the same text before the mark.
    pub(crate) fn tail_since(&self, mark: Mark) -> Tail {
        Tail(Compact {
            text: self.text[mark.len..].to_owned(),
            separators: self.separators - mark.separators,
            wide: self.wide - mark.wide,
            depth: self.depth,
            deepest: self.deepest,
            first: self.first,
            after_key: self.after_key,
            top_keys: self.top_keys & !mark.top_keys,
        })
    }

    /// Writes `tail` again, as the writer wrote it after the same text.
    pub(crate) fn append(&mut self, Tail(tail): &Tail) {
        self.text.push_str(&tail.text);
        self.separators += tail.separators;
        self.wide += tail.wide;
        self.depth = tail.depth;
        self.deepest = self.deepest.max(tail.deepest);
        self.first = tail.first;
        self.after_key = tail.after_key;
        self.top_keys |= tail.top_keys;
    }

    /// The text, the bounds [`tollgate_mcp::text_bounds`] gives its value nested `depth` levels
    /// deep in a message (the compact length exactly, the spaced one from the counts; `None`
    /// past the same sixty-four levels, and the writer writes no floating-point number), and
    /// its top-level keys' bits.
    pub(crate) fn finish(self, depth: usize) -> (String, Option<TextBounds>, u64) {
        let bounds = (depth + self.deepest <= 64).then(|| TextBounds {
            compact: self.text.len(),
            spaced: self.text.len() + self.separators + 2 * self.wide,
        });
        (self.text, bounds, self.top_keys)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::Compact;

    /// Writes `{"a": [s, n, null], "b": {"c": s}, "d": n}` with the writer.
    fn written(s: &str, n: u64) -> Compact {
        let mut w = Compact::new();
        w.open()
            .key("a")
            .open_array()
            .str(s)
            .u64(n)
            .opt_str(None)
            .close_array();
        w.key("b").open().key("c").str(s).close();
        w.key("d").u64(n).close();
        w
    }

    proptest! {
        /// The writer's text is serde_json's of the same value, and its bounds hold the
        /// Python-style text `dumps` writes of it.
        #[test]
        fn the_text_is_serde_jsons_and_the_spaced_bound_holds(
            s in "[a-z\"\\\\\u{0}-\u{1f}\u{7f}éü€😀]{0,12}",
            n in any::<u64>(),
        ) {
            let (text, bounds, top_keys) = written(&s, n).finish(3);
            for key in ["a", "b", "d"] {
                prop_assert!(top_keys & super::key_bit(key) != 0);
            }
            let value = json!({"a": [s, n, null], "b": {"c": s}, "d": n});
            prop_assert_eq!(&text, &serde_json::to_string(&value).unwrap());
            let bounds = bounds.unwrap();
            prop_assert_eq!(bounds.compact, text.len());
            prop_assert!(bounds.spaced >= super::super::pyjson::dumps(&value).len());
            prop_assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        }
    }

    #[test]
    fn too_deep_has_no_bounds() {
        let mut w = Compact::new();
        for _ in 0..62 {
            w.open_array();
        }
        for _ in 0..62 {
            w.close_array();
        }
        assert!(w.finish(2).1.is_some());
        let mut w = Compact::new();
        w.open_array().open_array().close_array().close_array();
        assert!(w.finish(63).1.is_none());
    }
}
