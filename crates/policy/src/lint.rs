//! Warnings that need to know which tools exist: selectors naming no known tool (with the
//! near miss they probably meant: a case slip, a look-alike Unicode character, a typo),
//! patterns that match nothing, and rules that never apply because a higher-precedence
//! selector takes every tool they match.

use crate::diag::Diagnostic;
use crate::policy::Policy;
use crate::selector::{Annotation, RiskClass, Selector, Tier, ToolMeta};
use crate::source::escape_pointer;

/// A tool the policy may be checked against (from the catalogue or an upstream's list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownTool {
    pub name: String,
    pub meta: ToolMeta,
}

impl KnownTool {
    pub fn new(
        name: impl Into<String>,
        class: Option<RiskClass>,
        annotations: &[Annotation],
    ) -> Self {
        KnownTool {
            name: name.into(),
            meta: ToolMeta {
                class,
                annotations: std::sync::Arc::new(annotations.iter().copied().collect()),
                defaults: None,
                upstream: None,
            },
        }
    }
}

impl Policy {
    /// Warnings about this policy against the tools that exist. Loading warnings (which need no
    /// catalogue) come first.
    pub fn lint(&self, known: &[KnownTool]) -> Vec<Diagnostic> {
        let file = &self.source;
        let mut out = self.warnings.clone();
        if known.is_empty() {
            return out;
        }
        // Lower-cased once: suggestions compare every unknown name with every known one.
        let lowered: Vec<(String, &str)> = known
            .iter()
            .map(|k| (k.name.to_lowercase(), k.name.as_str()))
            .collect();
        for rule in &self.rules {
            let pointer = format!("/tools/{}", escape_pointer(&rule.text));
            match &rule.selector {
                Selector::Exact(name) => {
                    if known.iter().any(|k| &k.name == name) {
                        continue;
                    }
                    let (message, help) = near_miss(name, known, &lowered);
                    out.push(
                        Diagnostic::warning(file, "policy::unknown_tool", message)
                            .at_key(file, &pointer, "no such tool")
                            .with_help(help),
                    );
                }
                // Known tools come from the catalogue, which has no upstreams: whether an
                // upstream exists is the gateway config's to say.
                Selector::Upstream(_) => {}
                selector => {
                    let matched: Vec<&KnownTool> = known
                        .iter()
                        .filter(|k| selector.matches(&k.name, &k.meta))
                        .collect();
                    if matched.is_empty() {
                        let what = match selector.tier() {
                            Tier::Glob => "pattern",
                            _ => "selector",
                        };
                        let mut d = Diagnostic::warning(
                            file,
                            "policy::matches_nothing",
                            format!("{what} `{}` matches no known tool", rule.text),
                        )
                        .at_key(file, &pointer, "matches nothing");
                        if let Selector::Glob(_) = selector {
                            let lowered = globset::GlobBuilder::new(&rule.text.to_lowercase())
                                .literal_separator(false)
                                .build()
                                .ok()
                                .map(|g| g.compile_matcher());
                            let case_hit = lowered.and_then(|m| {
                                known.iter().find(|k| m.is_match(k.name.to_lowercase()))
                            });
                            d = d.with_help(match case_hit {
                                Some(k) => format!(
                                    "patterns are case-sensitive: `{}` would match if the case agreed",
                                    k.name
                                ),
                                None => "check the pattern against `tollgate catalog --match PATTERN`".into(),
                            });
                        }
                        out.push(d);
                        continue;
                    }
                    let shadowed = matched.iter().all(|k| {
                        self.select(&k.name, &k.meta)
                            .is_some_and(|winner| !std::ptr::eq(winner, rule))
                    });
                    if shadowed {
                        let first = matched
                            .first()
                            .and_then(|k| self.select(&k.name, &k.meta))
                            .map(|w| w.text.to_string())
                            .unwrap_or_default();
                        out.push(
                            Diagnostic::warning(
                                file,
                                "policy::shadowed_rule",
                                format!(
                                    "rule `{}` never applies: every tool it matches is taken by a rule of higher precedence",
                                    rule.text
                                ),
                            )
                            .at_key(file, &pointer, "never decides")
                            .with_help(format!(
                                "for example `{}` is decided by `{first}`; see the precedence order in docs/policy.md",
                                matched.first().map(|k| k.name.as_str()).unwrap_or_default()
                            )),
                        );
                    }
                }
            }
        }
        out
    }
}

/// What is wrong with an exact name that names no tool, and the likely intended one.
fn near_miss(name: &str, known: &[KnownTool], lowered: &[(String, &str)]) -> (String, String) {
    if let Some(k) = known.iter().find(|k| k.name.eq_ignore_ascii_case(name)) {
        return (
            format!(
                "`{name}` names no known tool; it differs only in case from `{}`",
                k.name
            ),
            format!("tool names are case-sensitive: write `{}`", k.name),
        );
    }
    let odd: Vec<char> = name.chars().filter(|c| !c.is_ascii()).collect();
    if !odd.is_empty() {
        let skeleton: String = name.chars().map(ascii_lookalike).collect();
        let listed = odd
            .iter()
            .map(|c| format!("`{c}` (U+{:04X})", u32::from(*c)))
            .collect::<Vec<_>>()
            .join(", ");
        let target = known
            .iter()
            .find(|k| k.name == skeleton)
            .map(|k| k.name.as_str())
            .or_else(|| closest_lowered(&skeleton, lowered));
        return (
            format!("`{name}` names no known tool; it contains non-ASCII {listed}"),
            match target {
                Some(t) => format!("a look-alike character? did you mean `{t}`?"),
                None => "tool names are ASCII: retype the name".into(),
            },
        );
    }
    match closest_lowered(name, lowered) {
        Some(t) => (
            format!("`{name}` names no known tool"),
            format!("did you mean `{t}`?"),
        ),
        None => (
            format!("`{name}` names no known tool"),
            "list the tools with `tollgate catalog`; a rule for a tool that does not exist never applies".into(),
        ),
    }
}

/// The closest known name (Jaro-Winkler on lower case, at least 0.8), over pre-lowered names.
fn closest_lowered<'a>(input: &str, lowered: &[(String, &'a str)]) -> Option<&'a str> {
    let input = input.to_lowercase();
    lowered
        .iter()
        .map(|(l, n)| (strsim::jaro_winkler(&input, l), *n))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n)
}

/// The ASCII letter a common look-alike stands for (Cyrillic and Greek homoglyphs, fullwidth
/// forms); other characters are kept.
#[rustfmt::skip]
fn ascii_lookalike(c: char) -> char {
    match c {
        'а' => 'a', 'А' => 'A', 'е' => 'e', 'Е' => 'E', 'о' => 'o', 'О' => 'O',
        'р' => 'p', 'Р' => 'P', 'с' => 'c', 'С' => 'C', 'х' => 'x', 'Х' => 'X',
        'у' => 'y', 'У' => 'Y', 'і' => 'i', 'І' => 'I', 'ѕ' => 's', 'Ѕ' => 'S',
        'ј' => 'j', 'Ј' => 'J', 'к' => 'k', 'К' => 'K', 'м' => 'm', 'М' => 'M',
        'н' => 'h', 'Н' => 'H', 'т' => 't', 'Т' => 'T', 'в' => 'b', 'В' => 'B',
        'ο' => 'o', 'Ο' => 'O', 'α' => 'a', 'Α' => 'A', 'ε' => 'e', 'Ε' => 'E',
        'ρ' => 'p', 'Ρ' => 'P', 'ν' => 'v', 'Κ' => 'K', 'Τ' => 'T', 'Η' => 'H',
        'Ι' => 'I', 'Μ' => 'M', 'Ν' => 'N', 'Χ' => 'X', 'Υ' => 'Y', 'Ζ' => 'Z',
        'Β' => 'B',
        c if ('\u{FF01}'..='\u{FF5E}').contains(&c) => {
            char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c)
        }
        c => c,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn known() -> Vec<KnownTool> {
        vec![
            KnownTool::new("CancelAHORunBatch", Some(RiskClass::Execute), &[]),
            KnownTool::new(
                "DeleteEKSCluster",
                Some(RiskClass::Destructive),
                &[Annotation::Destructive],
            ),
            KnownTool::new(
                "list_k8s_resources",
                Some(RiskClass::Read),
                &[Annotation::ReadOnly],
            ),
        ]
    }

    fn lint(tools: &str) -> Vec<(String, String)> {
        let text = format!(r#"{{"version": "1", "default": "deny", "tools": {tools}}}"#);
        let p = Policy::parse("t.json", &text).unwrap();
        p.lint(&known())
            .into_iter()
            .map(|d| (d.message, d.help.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn case_slips_look_alikes_and_typos_get_a_suggestion() {
        let w = lint(r#"{"cancelAHORunBatch": {}}"#);
        assert!(
            w[0].0
                .contains("differs only in case from `CancelAHORunBatch`"),
            "{w:?}"
        );
        // Cyrillic "А" in place of the Latin one.
        let w = lint(r#"{"CancelАHORunBatch": {}}"#);
        assert!(w[0].0.contains("U+0410"), "{w:?}");
        assert!(w[0].1.contains("did you mean `CancelAHORunBatch`"), "{w:?}");
        let w = lint(r#"{"list_k8s_resource": {}}"#);
        assert_eq!(w[0].1, "did you mean `list_k8s_resources`?");
    }

    #[test]
    fn patterns_matching_nothing_and_shadowed_rules_are_reported() {
        let w = lint(r#"{"delete*": {}}"#);
        assert!(w[0].0.contains("matches no known tool"), "{w:?}");
        assert!(w[0].1.contains("case-sensitive"), "{w:?}");
        let w = lint(r#"{"DeleteEKSCluster": {}, "Delete*": {"action": "deny"}}"#);
        assert!(w[0].0.contains("rule `Delete*` never applies"), "{w:?}");
        assert!(lint(r#"{"Delete*": {}, "class:read": {}}"#).is_empty());
    }
}
