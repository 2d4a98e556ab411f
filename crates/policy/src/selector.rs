//! Selectors: which tools a rule applies to, and which rule wins when several match.
//!
//! Precedence, highest first (documented in docs/policy.md):
//! 1. an exact tool name (case-sensitive);
//! 2. a glob pattern, the most specific first: more literal characters, then more
//!    single-character wildcards (`?`, `[..]`), then fewer `*`;
//! 3. an upstream (`upstream:eks`: every tool of that upstream, when the gateway fronts
//!    several);
//! 4. a risk class (`class:destructive`), then an MCP tool annotation
//!    (`annotation:destructiveHint`, in the order readOnlyHint, destructiveHint,
//!    idempotentHint, openWorldHint);
//! 5. the policy's `default`.
//!
//! Two selectors of equal precedence that can match the same tool and carry different rules
//! are a validation error: for globs, "can match the same tool" is decided exactly on the
//! patterns (an automaton product), treating a character class `[..]` as any character, which
//! errs on the side of reporting.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The risk class of a tool, as the catalogue classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskClass {
    Read,
    Write,
    Execute,
    Destructive,
}

impl RiskClass {
    pub const ALL: [RiskClass; 4] = [
        RiskClass::Read,
        RiskClass::Write,
        RiskClass::Execute,
        RiskClass::Destructive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskClass::Read => "read",
            RiskClass::Write => "write",
            RiskClass::Execute => "execute",
            RiskClass::Destructive => "destructive",
        }
    }

    pub fn parse(text: &str) -> Option<RiskClass> {
        RiskClass::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for RiskClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An MCP tool annotation hint that is true for a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Annotation {
    #[serde(rename = "readOnlyHint")]
    ReadOnly,
    #[serde(rename = "destructiveHint")]
    Destructive,
    #[serde(rename = "idempotentHint")]
    Idempotent,
    #[serde(rename = "openWorldHint")]
    OpenWorld,
}

impl Annotation {
    pub const ALL: [Annotation; 4] = [
        Annotation::ReadOnly,
        Annotation::Destructive,
        Annotation::Idempotent,
        Annotation::OpenWorld,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Annotation::ReadOnly => "readOnlyHint",
            Annotation::Destructive => "destructiveHint",
            Annotation::Idempotent => "idempotentHint",
            Annotation::OpenWorld => "openWorldHint",
        }
    }

    pub fn parse(text: &str) -> Option<Annotation> {
        Annotation::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// Whether one tool can carry both hints. The MCP specification gives `destructiveHint`
    /// meaning only when `readOnlyHint` is false, so those two never apply together.
    pub fn can_cooccur(self, other: Annotation) -> bool {
        !matches!(
            (self, other),
            (Annotation::ReadOnly, Annotation::Destructive)
                | (Annotation::Destructive, Annotation::ReadOnly)
        )
    }
}

impl fmt::Display for Annotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy knows about a tool besides its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolMeta {
    /// The tool's risk class for this call, when a classifier knows it (the catalogue's, or
    /// the one its MCP annotations give: the gateway's `classify`).
    pub class: Option<RiskClass>,
    /// The annotation hints that are true for the tool: shared (the gateway makes the set once
    /// per listed tool, not once per call).
    pub annotations: Arc<BTreeSet<Annotation>>,
    /// The values the tool takes for arguments a call leaves out (its input schema's
    /// `default`s, as the tool reads them): value checks and `when` branches on an argument
    /// left out apply to its default, since that is what the tool acts on. Shared: made once
    /// per listed tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The upstream the tool belongs to, when the gateway fronts several (its name in the
    /// config file); `None` with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Arc<str>>,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Exact(String),
    Glob(Glob),
    /// Every tool of one upstream (`upstream:NAME`).
    Upstream(String),
    Class(RiskClass),
    Annotation(Annotation),
}

/// The tiers of precedence, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Exact,
    Glob,
    Upstream,
    Class,
    Annotation,
    Default,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Exact => "exact name",
            Tier::Glob => "pattern",
            Tier::Upstream => "upstream",
            Tier::Class => "risk class",
            Tier::Annotation => "annotation",
            Tier::Default => "default",
        })
    }
}

/// Why a selector string is not a selector: the message and a help line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub message: String,
    pub help: String,
}

impl Selector {
    /// Parses a selector: `class:C`, `annotation:A`, a glob if it has `*`, `?` or `[`, an exact
    /// name otherwise.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.is_empty() {
            return Err(SelectorError {
                message: "empty selector".into(),
                help: "write a tool name, a pattern such as `Delete*`, `class:destructive` or `annotation:destructiveHint`".into(),
            });
        }
        if let Some(class) = text.strip_prefix("class:") {
            return RiskClass::parse(class).map(Selector::Class).ok_or_else(|| {
                let names: Vec<_> = RiskClass::ALL.iter().map(|c| c.as_str()).collect();
                SelectorError {
                    message: format!("unknown risk class `{class}`"),
                    help: suggest_help(class, &names, "the risk classes are"),
                }
            });
        }
        if let Some(name) = text.strip_prefix("upstream:") {
            let valid = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
            if !valid {
                return Err(SelectorError {
                    message: format!("`{name}` is not an upstream name"),
                    help: "write `upstream:NAME` with the `name` of an `[[upstream]]` of the gateway's config file (letters, digits, `_`, `-`)".into(),
                });
            }
            return Ok(Selector::Upstream(name.to_owned()));
        }
        if let Some(hint) = text.strip_prefix("annotation:") {
            return Annotation::parse(hint)
                .map(Selector::Annotation)
                .ok_or_else(|| {
                    let names: Vec<_> = Annotation::ALL.iter().map(|a| a.as_str()).collect();
                    SelectorError {
                        message: format!("unknown tool annotation `{hint}`"),
                        help: suggest_help(hint, &names, "the annotations are"),
                    }
                });
        }
        if text.contains(['*', '?', '[', ']', '{', '}']) {
            return Glob::parse(text).map(Selector::Glob);
        }
        Ok(Selector::Exact(text.to_owned()))
    }

    pub fn tier(&self) -> Tier {
        match self {
            Selector::Exact(_) => Tier::Exact,
            Selector::Glob(_) => Tier::Glob,
            Selector::Upstream(_) => Tier::Upstream,
            Selector::Class(_) => Tier::Class,
            Selector::Annotation(_) => Tier::Annotation,
        }
    }

    /// Whether this selector matches a tool (the glob through its compiled matcher).
    pub fn matches(&self, name: &str, meta: &ToolMeta) -> bool {
        match self {
            Selector::Exact(exact) => exact == name,
            Selector::Glob(glob) => glob.matcher.is_match(name),
            Selector::Upstream(u) => meta.upstream.as_deref() == Some(u.as_str()),
            Selector::Class(class) => meta.class == Some(*class),
            Selector::Annotation(a) => meta.annotations.contains(a),
        }
    }
}

/// "did you mean `x`? <intro> `a`, `b`, `c`".
pub fn suggest_help(input: &str, names: &[&str], intro: &str) -> String {
    let listed = names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(input, names.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? {intro} {listed}"),
        None => format!("{intro} {listed}"),
    }
}

/// The closest name by Jaro-Winkler similarity (case-insensitive), if it is close enough to be
/// a plausible typo.
pub(crate) fn closest<'a>(input: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = input.to_lowercase();
    names
        .map(|n| (strsim::jaro_winkler(&lowered, &n.to_lowercase()), n))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n)
}

/// A position in each of two patterns, for the product search.
type State = (usize, usize);

/// One element of a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?` or a character class: exactly one character.
    One,
    /// `*`: any run of characters.
    Any,
}

/// A glob pattern over tool names: `*` (any run of characters), `?` (one character) and
/// `[...]` classes; matching is done by globset.
#[derive(Debug, Clone)]
pub struct Glob {
    pub text: String,
    tokens: Vec<Token>,
    matcher: globset::GlobMatcher,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Glob {}

/// How specific a glob is; a greater value takes precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    pub literals: usize,
    pub single_wildcards: usize,
    /// The number of `*`, negated so that fewer stars sort higher.
    pub fewer_stars: isize,
}

impl Glob {
    pub fn parse(text: &str) -> Result<Glob, SelectorError> {
        if text.contains(['{', '}']) {
            return Err(SelectorError {
                message: format!("alternatives `{{..}}` are not supported in selector `{text}`"),
                help: "write one selector per pattern, so that each has a clear precedence".into(),
            });
        }
        let glob = globset::GlobBuilder::new(text)
            .literal_separator(false)
            .backslash_escape(false)
            .build()
            .map_err(|e| SelectorError {
                message: format!("`{text}` is not a valid pattern: {}", e.kind()),
                help: "`*` matches any run of characters, `?` one character, `[abc]` one of a set"
                    .into(),
            })?;
        let mut tokens = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                }
                '?' => tokens.push(Token::One),
                '[' => {
                    // globset has validated the class; skip to its closing bracket (one `!`
                    // right after `[` negates; a `]` before any member is a member, not the
                    // end: `[!!]` is "not `!`", `[]a]` and `[!]a]` hold `]`).
                    let (mut negation_allowed, mut members) = (true, 0usize);
                    for d in chars.by_ref() {
                        if d == '!' && negation_allowed {
                            negation_allowed = false;
                            continue;
                        }
                        negation_allowed = false;
                        if d == ']' && members > 0 {
                            break;
                        }
                        members += 1;
                    }
                    tokens.push(Token::One);
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Glob {
            text: text.to_owned(),
            tokens,
            matcher: glob.compile_matcher(),
        })
    }

    /// The globset form, for building a set.
    pub(crate) fn globset_glob(&self) -> Option<globset::Glob> {
        globset::GlobBuilder::new(&self.text)
            .literal_separator(false)
            .backslash_escape(false)
            .build()
            .ok()
    }

    pub fn specificity(&self) -> Specificity {
        let count = |t: Token| self.tokens.iter().filter(|x| **x == t).count();
        let literals = self
            .tokens
            .iter()
            .filter(|t| matches!(t, Token::Literal(_)))
            .count();
        Specificity {
            literals,
            single_wildcards: count(Token::One),
            fewer_stars: -(count(Token::Any) as isize),
        }
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }

    /// Whether some tool name matches both patterns. A character class counts as any
    /// character, so the answer may be "yes" for classes that are in fact disjoint, never "no"
    /// for patterns that overlap.
    pub fn overlaps(&self, other: &Glob) -> bool {
        self.witness(other).is_some()
    }

    /// A shortest name both patterns match, found by a breadth-first search over the product
    /// of the two patterns' automata (classes stand for any character, written `X`).
    pub fn witness(&self, other: &Glob) -> Option<String> {
        let (a, b) = (&self.tokens, &other.tokens);
        // State (i, j): positions in both patterns. Parent links rebuild the name.
        let mut parent: HashMap<State, Option<(State, Option<char>)>> = HashMap::new();
        let mut queue = VecDeque::from([(0usize, 0usize)]);
        parent.insert((0, 0), None);
        while let Some((i, j)) = queue.pop_front() {
            if i == a.len() && j == b.len() {
                let mut name: Vec<char> = Vec::new();
                let mut at = (i, j);
                while let Some(Some((prev, c))) = parent.get(&at) {
                    name.extend(c);
                    at = *prev;
                }
                return Some(name.into_iter().rev().collect());
            }
            let mut next = Vec::new();
            // A star may match the empty string.
            if a.get(i) == Some(&Token::Any) {
                next.push(((i + 1, j), None));
            }
            if b.get(j) == Some(&Token::Any) {
                next.push(((i, j + 1), None));
            }
            if let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
                let c = match (x, y) {
                    (Token::Literal(p), Token::Literal(q)) => (p == q).then_some(p),
                    (Token::Literal(p), _) | (_, Token::Literal(p)) => Some(p),
                    _ => Some('X'),
                };
                if let Some(c) = c {
                    let ni = if x == Token::Any { i } else { i + 1 };
                    let nj = if y == Token::Any { j } else { j + 1 };
                    next.push(((ni, nj), Some(c)));
                }
            }
            for (state, c) in next {
                if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(state) {
                    e.insert(Some(((i, j), c)));
                    queue.push_back(state);
                }
            }
        }
        None
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn glob(text: &str) -> Glob {
        Glob::parse(text).unwrap()
    }

    /// `upstream:NAME` names an upstream of the config file; a bad name is an error with help.
    #[test]
    fn upstream_selectors_parse_and_match_the_tools_upstream() {
        let s = Selector::parse("upstream:eks").unwrap();
        assert_eq!(s, Selector::Upstream("eks".into()));
        assert_eq!(s.tier(), Tier::Upstream);
        let meta = |u: Option<&str>| ToolMeta {
            upstream: u.map(Arc::from),
            ..ToolMeta::default()
        };
        assert!(s.matches("eks__x", &meta(Some("eks"))));
        assert!(!s.matches("eks__x", &meta(Some("omics"))));
        assert!(!s.matches("eks__x", &meta(None)));
        for bad in ["upstream:", "upstream:a b", "upstream:a/b"] {
            let e = Selector::parse(bad).unwrap_err();
            assert!(e.help.contains("[[upstream]]"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn selectors_parse_by_their_form() {
        assert_eq!(
            Selector::parse("CancelAHORunBatch").unwrap(),
            Selector::Exact("CancelAHORunBatch".into())
        );
        assert_eq!(Selector::parse("Delete*").unwrap().tier(), Tier::Glob);
        assert_eq!(
            Selector::parse("class:destructive").unwrap(),
            Selector::Class(RiskClass::Destructive)
        );
        assert_eq!(
            Selector::parse("annotation:readOnlyHint").unwrap(),
            Selector::Annotation(Annotation::ReadOnly)
        );
        let err = Selector::parse("class:destructiv").unwrap_err();
        assert!(
            err.help.starts_with("did you mean `destructive`?"),
            "{err:?}"
        );
        assert!(Selector::parse("{Delete,Remove}*").is_err());
        assert!(Selector::parse("Delete[").is_err());
    }

    #[test]
    fn more_literals_are_more_specific() {
        assert!(glob("DeleteEKS*").specificity() > glob("Delete*").specificity());
        assert!(glob("Delete?").specificity() > glob("Delete*").specificity());
        assert!(glob("*AHO*").specificity() < glob("Cancel*").specificity());
        assert_eq!(glob("A**").specificity(), glob("A*").specificity());
    }

    #[test]
    fn overlap_is_decided_on_the_patterns() {
        assert!(glob("Delete*").overlaps(&glob("*Cluster")));
        assert!(glob("*AHO*").overlaps(&glob("Cancel*")));
        assert!(!glob("Delete*").overlaps(&glob("Create*")));
        assert!(!glob("a?c").overlaps(&glob("a??c")));
        assert!(glob("a*c").overlaps(&glob("a??c")));
        assert!(!glob("*x").overlaps(&glob("*y")));
        assert!(
            glob("[ab]x").overlaps(&glob("cx")),
            "classes count as any character"
        );
    }

    #[test]
    fn globs_match_whole_names_across_any_character() {
        let g = glob("*AHO*");
        assert!(g.is_match("CancelAHORunBatch"));
        assert!(!g.is_match("CancelAhoRunBatch"));
        assert!(glob("Delete*").is_match("Delete/odd name"));
    }
}
