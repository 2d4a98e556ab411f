//! Text for humans: the one escaping of client-chosen strings (tool names, grants, arguments,
//! reasons) wherever a person reads them, in a terminal (`tollgate audit tail|query`) or in a
//! refusal's text (what an agent and its user read).
//!
//! A client chooses these strings, and a raw one can lie to its reader: a line feed forges a
//! table row, an escape sequence (ESC, or the C1 control CSI) drives the operator's terminal, a
//! bidi override reorders what is shown, and a zero-width or look-alike character makes a
//! refused name read as an allowed one (`Delete\u{200b}Cluster`, a Cyrillic `а`).
//! [`escape_into`] shows each such character as an escape instead:
//!
//! | character | shown as |
//! |---|---|
//! | `\` | `\\` |
//! | line feed, carriage return, tab | `\n`, `\r`, `\t` |
//! | any other control (C0, DEL, C1), format character (Unicode category Cf: zero-width, bidi controls, soft hyphen, tags), line or paragraph separator, private-use or unassigned code point | `\u{…}`, its code point in hex (`\u{1b}`, `\u{200b}`) |
//! | in an [`Kind::Identifier`]: anything but printable ASCII, and space and `` ` `` too | `\u{…}` (`\u{430}`, `\u{20}`, `\u{60}`) |
//!
//! The escaping is reversible (a backslash is always the start of an escape), so two different
//! strings never read alike. JSON outputs are not escaped this way: JSON's own escaping keeps
//! them exact.

use std::borrow::Cow;
use std::fmt;

use unicode_general_category::{GeneralCategory, get_general_category};

/// What a string is to its reader, which decides the characters shown as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A name the reader compares with another name: a tool, a grant, a rule's selector, a
    /// counter's key, an approver. Only printable ASCII other than space, `\` and `` ` `` is
    /// shown as it is: every other character could pass for another one, or for nothing.
    Identifier,
    /// Prose: a reason, an error message, arguments. Letters of every script are shown as they
    /// are; controls, format characters, separators and unassigned code points are escaped.
    Text,
}

/// Writes `s` for a human to read, escaping what [`Kind`] does not show as it is (the module's
/// table says how). Every escape starts with `\`, and a `\` of `s` is written `\\`.
pub fn escape_into(out: &mut impl fmt::Write, s: &str, kind: Kind) -> fmt::Result {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if shown_as_is(c, kind) {
            continue;
        }
        out.write_str(&s[start..i])?;
        match c {
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            other => write!(out, "{}", other.escape_unicode())?,
        }
        start = i + c.len_utf8();
    }
    out.write_str(&s[start..])
}

/// `s` as [`escape_into`] writes it; borrowed when nothing needs escaping.
pub fn escape(s: &str, kind: Kind) -> Cow<'_, str> {
    if s.chars().all(|c| shown_as_is(c, kind)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    // Writing to a String cannot fail.
    let _ = escape_into(&mut out, s, kind);
    Cow::Owned(out)
}

/// Whether `c` is shown as it is in a string of this kind.
fn shown_as_is(c: char, kind: Kind) -> bool {
    if c.is_ascii() {
        return match kind {
            Kind::Identifier => c.is_ascii_graphic() && c != '\\' && c != '`',
            Kind::Text => (c.is_ascii_graphic() || c == ' ') && c != '\\',
        };
    }
    kind == Kind::Text
        && !matches!(
            get_general_category(c),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::PrivateUse
                | GeneralCategory::Surrogate
                | GeneralCategory::Unassigned
        )
}

/// A string to be shown to a human, escaped as its [`Kind`] says when it is formatted.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a> {
    s: &'a str,
    kind: Kind,
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Padding (`{:<22}`) applies to the escaped text, as a table needs.
        if f.width().is_some() {
            return f.pad(&escape(self.s, self.kind));
        }
        escape_into(f, self.s, self.kind)
    }
}

/// `s` as an identifier (a tool name, a grant, a selector, a key): see [`Kind::Identifier`].
pub fn ident(s: &str) -> Escaped<'_> {
    Escaped {
        s,
        kind: Kind::Identifier,
    }
}

/// `s` as prose (a reason, an error, arguments): see [`Kind::Text`].
pub fn text(s: &str) -> Escaped<'_> {
    Escaped {
        s,
        kind: Kind::Text,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Reads an escaped string back (the inverse of [`escape_into`]), or `None` when `s` is not
    /// something it writes.
    fn unescape(s: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// Characters an attacker reaches for: controls, format characters, separators,
    /// look-alikes, and plain text around them.
    fn hostile() -> impl Strategy<Value = String> {
        let pick = prop::sample::select(vec![
            'a',
            'Z',
            '0',
            ' ',
            '`',
            '\\',
            '"',
            '\n',
            '\r',
            '\t',
            '\u{0}',
            '\u{1b}',
            '\u{7f}',
            '\u{85}',
            '\u{9b}',
            '\u{ad}',
            '\u{200b}',
            '\u{200d}',
            '\u{200e}',
            '\u{202e}',
            '\u{2066}',
            '\u{2028}',
            '\u{2029}',
            '\u{feff}',
            '\u{e0041}',
            '\u{430}',
            '\u{3000}',
            'é',
            '日',
            '\u{301}',
            '\u{f8ff}',
            '\u{10ffff}',
            '😀',
        ]);
        prop_oneof![
            prop::collection::vec(pick, 0..24).prop_map(|v| v.into_iter().collect()),
            any::<String>(),
        ]
    }

    proptest! {
        /// The escaping is reversible, so two different strings never read alike; what it
        /// writes holds no control, format, separator, private-use or unassigned character,
        /// and an identifier's is printable ASCII without space or backtick.
        #[test]
        fn escaping_is_reversible_and_shows_no_hidden_character(s in hostile()) {
            for kind in [Kind::Identifier, Kind::Text] {
                let shown = escape(&s, kind);
                let back = unescape(&shown);
                prop_assert_eq!(back.as_deref(), Some(s.as_str()));
                for c in shown.chars() {
                    prop_assert!(shown_as_is(c, kind) || c == '\\', "{:?} in {:?}", c, shown);
                    prop_assert!(!matches!(
                        get_general_category(c),
                        GeneralCategory::Control
                            | GeneralCategory::Format
                            | GeneralCategory::LineSeparator
                            | GeneralCategory::ParagraphSeparator
                            | GeneralCategory::PrivateUse
                            | GeneralCategory::Unassigned
                    ));
                    if kind == Kind::Identifier {
                        prop_assert!(c.is_ascii_graphic() && c != '`', "{:?}", c);
                    }
                }
                prop_assert_eq!(ident_or_text(&s, kind), shown.into_owned());
            }
        }
    }

    fn ident_or_text(s: &str, kind: Kind) -> String {
        match kind {
            Kind::Identifier => ident(s).to_string(),
            Kind::Text => text(s).to_string(),
        }
    }

    /// What a reader sees of hostile strings, each as an identifier and as text.
    #[test]
    fn escaped_examples() {
        let cases = [
            ("plain", "CancelAHORunBatch"),
            ("zero-width space", "Delete\u{200b}Cluster"),
            ("Cyrillic a", "Cre\u{430}teCluster"),
            (
                "line feed forging a row",
                "ok\n     9  1000  decision  admin  DeleteCluster  allow",
            ),
            ("CRLF", "a\r\nb"),
            ("ESC: a terminal colour", "\u{1b}[31mred\u{1b}[0m"),
            (
                "OSC 8: a terminal hyperlink",
                "\u{1b}]8;;https://x.invalid\u{7}click\u{1b}]8;;\u{7}",
            ),
            ("C1 CSI", "\u{9b}2J"),
            ("DEL and NUL", "a\u{7f}b\u{0}c"),
            ("bidi override", "file\u{202e}txt.exe"),
            ("bidi isolate", "\u{2066}admin\u{2069}"),
            ("line and paragraph separators", "a\u{2028}b\u{2029}c"),
            ("byte order mark", "\u{feff}tool"),
            ("tag characters", "x\u{e0041}\u{e007f}"),
            ("soft hyphen", "Del\u{ad}ete"),
            ("private use", "\u{f8ff}"),
            ("backslash, backtick, space", "a\\u{41} `b` c"),
            ("accents and CJK", "café 日本"),
            ("combining accent", "e\u{301}"),
            ("emoji", "ok 😀"),
        ];
        let mut shown = String::new();
        for (name, s) in cases {
            shown.push_str(&format!(
                "{name}\n  identifier: {}\n  text:       {}\n",
                ident(s),
                text(s)
            ));
        }
        insta::assert_snapshot!(shown);
    }

    #[test]
    fn nothing_to_escape_borrows_and_padding_applies_to_the_escaped_text() {
        assert!(matches!(
            escape("CancelAHORunBatch", Kind::Identifier),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            escape("a reason, é", Kind::Text),
            Cow::Borrowed(_)
        ));
        assert_eq!(format!("[{:<8}]", ident("a\nb")), "[a\\nb    ]");
        assert_eq!(format!("[{:>6}]", ident("ab")), "[    ab]");
        assert!(unescape("\\q").is_none());
        let Some(back) = unescape("\\u{200b}") else {
            panic!("an escape reads back")
        };
        assert_eq!(back, "\u{200b}");
        assert_eq!(unescape("x").unwrap(), "x");
    }
}
