//! Loading a policy: parse the JSON (serde, with the path of any type error), map every error
//! to a span of the file, validate what the types cannot express (selectors, shared counters,
//! branches, argument checks), and compile the result into the form `decide` runs on: exact
//! names in a hash map, every pattern in one glob set, regexes compiled once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics};
use crate::limiter::{Counts, LimitSpec, Scope};
use crate::model::{Action, ApprovalVia, ArgRule, PolicyDoc, Rule, TimeoutOutcome};
use crate::selector::{Annotation, RiskClass, Selector, Specificity, Tier, ToolMeta, closest};
use crate::source::{SourceFile, escape_pointer};

/// The largest policy file Tollgate reads. Policies are hand-written: a file this big is a
/// mistake (or an attack), and refusing it before reading it whole keeps memory bounded.
pub const MAX_POLICY_BYTES: u64 = 16 * 1024 * 1024;

/// How long a held call waits when the policy does not say.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// The prefix of the counters `rate_limit` shorthands create; user counters may not use it.
pub const RATE_LIMIT_PREFIX: &str = "rate_limit:";

/// A validated, compiled policy.
#[derive(Debug)]
pub struct Policy {
    pub source: SourceFile,
    pub doc: PolicyDoc,
    pub(crate) default: Arc<RuleBody>,
    pub(crate) rules: Vec<SelectedRule>,
    exact: HashMap<String, usize, foldhash::quality::RandomState>,
    /// Glob rules' indices into `rules`, most specific first.
    globs: Vec<usize>,
    glob_set: globset::GlobSet,
    /// `upstream:NAME` rules: the upstream's name and the rule's index.
    upstreams: Vec<(String, usize)>,
    classes: Vec<(RiskClass, usize)>,
    annotations: Vec<(Annotation, usize)>,
    /// Warnings found while loading (e.g. an approval block on a rule that never asks).
    pub warnings: Vec<Diagnostic>,
}

/// A rule and the selector that picks it.
#[derive(Debug)]
pub(crate) struct SelectedRule {
    pub selector: Selector,
    pub text: Arc<str>,
    pub body: Arc<RuleBody>,
}

/// What a rule (or one case of a branch) does, compiled.
#[derive(Debug)]
pub(crate) struct RuleBody {
    /// The selector this body belongs to (`default` for the default).
    pub selector: Arc<str>,
    /// JSON pointer of the body: `/tools/X`, `/tools/X/when/cases/delete`, `/default`.
    pub pointer: Arc<str>,
    pub action: Action,
    pub reason: Option<Arc<str>>,
    pub limits: Vec<LimitSpec>,
    /// For each of `limits`, the argument pointers (`by`) that key it besides its scope; empty
    /// for most.
    pub limit_by: Vec<Arc<[String]>>,
    pub approval: (Duration, TimeoutOutcome, ApprovalVia),
    pub arguments: Vec<ArgCheck>,
    pub when: Option<Branch>,
    pub redact: Vec<String>,
    /// Where the body is written (1-based line and column of its key), computed once: a
    /// decision names it on every call.
    pub position: (usize, usize),
}

#[derive(Debug)]
pub(crate) struct Branch {
    pub argument: String,
    pub cases: BTreeMap<String, Arc<RuleBody>>,
    pub otherwise: Option<Arc<RuleBody>>,
}

/// The checks on one argument.
#[derive(Debug)]
pub(crate) struct ArgCheck {
    pub name: String,
    pub rule: ArgRule,
    pub regex: Option<Regex>,
}

impl Policy {
    /// Parses and validates a policy. `source_name` is what diagnostics call the file.
    pub fn parse(source_name: &str, text: &str) -> Result<Policy, Diagnostics> {
        let file = SourceFile::new(source_name, text);
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(Diagnostics(vec![too_big(source_name, text.len() as u64)]));
        }
        let doc = parse_doc(&file)?;
        compile(file, doc)
    }

    /// Reads and parses a policy file, refusing files over [`MAX_POLICY_BYTES`] before reading
    /// them whole.
    pub fn load(path: &std::path::Path) -> Result<Policy, Diagnostics> {
        let name = path.display().to_string();
        let read_error = |e: std::io::Error| {
            Diagnostics(vec![Diagnostic::about_file(
                &name,
                "policy::unreadable",
                format!("cannot read policy file `{name}`: {e}"),
            )])
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if meta.len() > MAX_POLICY_BYTES {
            return Err(Diagnostics(vec![too_big(&name, meta.len())]));
        }
        let bytes = std::fs::read(path).map_err(read_error)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let valid = String::from_utf8_lossy(&e.as_bytes()[..offset]).into_owned();
            let (line, column) = crate::source::line_col(&valid, offset);
            Diagnostics(vec![Diagnostic::about_file(
                &name,
                "policy::not_utf8",
                format!(
                    "policy file `{name}` is not UTF-8: invalid byte at line {line}, column {column} (byte {offset})"
                ),
            )
            .with_help("save the file as UTF-8 (tool names are ASCII; reasons may use any Unicode)")])
        })?;
        Policy::parse(&name, &text)
    }

    /// The rule that applies to `tool`, by precedence; `None` means the default.
    pub(crate) fn select(&self, tool: &str, meta: &ToolMeta) -> Option<&SelectedRule> {
        if let Some(&i) = self.exact.get(tool) {
            return self.rules.get(i);
        }
        if !self.globs.is_empty() {
            // The glob set reports matches by position in `globs`, which is in precedence
            // order: the smallest position wins.
            if let Some(&first) = self.glob_set.matches(tool).iter().min() {
                return self.globs.get(first).and_then(|&i| self.rules.get(i));
            }
        }
        if let Some(upstream) = meta.upstream.as_deref()
            && let Some((_, i)) = self.upstreams.iter().find(|(u, _)| u == upstream)
        {
            return self.rules.get(*i);
        }
        if let Some(class) = meta.class
            && let Some(&(_, i)) = self.classes.iter().find(|(c, _)| *c == class)
        {
            return self.rules.get(i);
        }
        self.annotations
            .iter()
            .find(|(a, _)| meta.annotations.contains(a))
            .and_then(|&(_, i)| self.rules.get(i))
    }

    /// Every rule whose selector matches, in precedence order, with its tier.
    pub(crate) fn candidates(&self, tool: &str, meta: &ToolMeta) -> Vec<(&SelectedRule, Tier)> {
        let mut out: Vec<(&SelectedRule, Tier)> = self
            .rules
            .iter()
            .filter(|r| r.selector.matches(tool, meta))
            .map(|r| (r, r.selector.tier()))
            .collect();
        out.sort_by_key(|(r, tier)| {
            (
                *tier,
                std::cmp::Reverse(glob_rank(&r.selector)),
                r.text.clone(),
            )
        });
        out
    }

    /// The selector strings of the policy, in file order.
    pub fn selectors(&self) -> impl Iterator<Item = (&str, Tier)> {
        self.rules.iter().map(|r| (&*r.text, r.selector.tier()))
    }

    /// One line for `tollgate check`: the rules by kind, the counters, what `default` does.
    pub fn summary(&self) -> String {
        let count = |t: Tier| self.rules.iter().filter(|r| r.selector.tier() == t).count();
        let mut kinds = Vec::new();
        for (t, word) in [
            (Tier::Exact, "exact"),
            (Tier::Glob, "pattern"),
            (Tier::Upstream, "upstream"),
            (Tier::Class, "class"),
            (Tier::Annotation, "annotation"),
        ] {
            let n = count(t);
            if n > 0 {
                kinds.push(format!("{n} {word}"));
            }
        }
        let mut counters = std::collections::BTreeSet::new();
        fn walk<'a>(b: &'a RuleBody, out: &mut std::collections::BTreeSet<&'a str>) {
            for l in &b.limits {
                out.insert(&l.counter);
            }
            if let Some(w) = &b.when {
                for c in w.cases.values().chain(w.otherwise.iter()) {
                    walk(c, out);
                }
            }
        }
        for r in &self.rules {
            walk(&r.body, &mut counters);
        }
        let rules = self.rules.len();
        format!(
            "{rules} rule{}{}, {} counter{}, default {}",
            if rules == 1 { "" } else { "s" },
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            counters.len(),
            if counters.len() == 1 { "" } else { "s" },
            match self.default.action {
                Action::Allow => "allow",
                Action::Deny => "deny",
                Action::RequireApproval => "require_approval",
            }
        )
    }

    /// The default action.
    pub fn default_action(&self) -> Action {
        self.default.action
    }

    /// Argument names whose values must be redacted for `tool` (every branch's, merged).
    pub fn redactions(&self, tool: &str, meta: &ToolMeta) -> Vec<String> {
        let Some(rule) = self.select(tool, meta) else {
            return Vec::new();
        };
        let mut names = rule.body.redact.clone();
        if let Some(branch) = &rule.body.when {
            for body in branch.cases.values().chain(branch.otherwise.iter()) {
                names.extend(body.redact.iter().cloned());
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Whether any rule (or case of a branch) redacts an argument: a message the gateway
    /// cannot read (to find the arguments to redact) is then not written out verbatim.
    pub fn redacts_anything(&self) -> bool {
        let bodies = std::iter::once(&self.default).chain(self.rules.iter().map(|r| &r.body));
        bodies.into_iter().any(|body| {
            !body.redact.is_empty()
                || body.when.iter().any(|b| {
                    b.cases
                        .values()
                        .chain(b.otherwise.iter())
                        .any(|c| !c.redact.is_empty())
                })
        })
    }

    /// The longest time any rule of this policy may hold a call for approval (zero when no
    /// rule asks): how long a transport must be ready to wait for an answer.
    pub fn longest_approval(&self) -> Duration {
        let bodies = std::iter::once(&self.default).chain(self.rules.iter().map(|r| &r.body));
        let mut longest = Duration::ZERO;
        for body in bodies {
            let cases = body
                .when
                .iter()
                .flat_map(|b| b.cases.values().chain(b.otherwise.iter()));
            for b in std::iter::once(body).chain(cases) {
                if b.action == Action::RequireApproval {
                    longest = longest.max(b.approval.0);
                }
            }
        }
        longest
    }

    /// Every limit window the policy names, shortest first, without repeats (for fuzzing
    /// timings at the edges of the windows).
    pub fn windows(&self) -> Vec<std::time::Duration> {
        let mut all: Vec<std::time::Duration> = std::iter::once(&self.default)
            .chain(self.rules.iter().map(|r| &r.body))
            .flat_map(|b| {
                let own = b.limits.iter().map(|l| l.window);
                let cases = b.when.iter().flat_map(|w| {
                    w.cases
                        .values()
                        .chain(w.otherwise.iter())
                        .flat_map(|c| c.limits.iter().map(|l| l.window))
                });
                own.chain(cases).collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Every counter the policy declares, one spec per name, in name order (what a counter
    /// store is told on a reload).
    pub fn counters(&self) -> Vec<crate::limiter::LimitSpec> {
        let mut all: Vec<crate::limiter::LimitSpec> = std::iter::once(&self.default)
            .chain(self.rules.iter().map(|r| &r.body))
            .flat_map(|b| {
                let cases = b
                    .when
                    .iter()
                    .flat_map(|w| w.cases.values().chain(w.otherwise.iter()));
                std::iter::once(b)
                    .chain(cases)
                    .flat_map(|c| c.limits.iter().cloned())
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| a.counter.cmp(&b.counter));
        all.dedup_by(|a, b| a.counter == b.counter);
        all
    }

    /// Whether `tool` is refused whatever its arguments (a deny rule with no branch, or the
    /// default deny): what `hide_from_list` hides.
    pub fn always_denies(&self, tool: &str, meta: &ToolMeta) -> bool {
        let body = self.select(tool, meta).map_or(&self.default, |r| &r.body);
        match &body.when {
            None => body.action == Action::Deny,
            Some(branch) => {
                branch
                    .otherwise
                    .as_ref()
                    .is_some_and(|o| o.action == Action::Deny)
                    && branch.cases.values().all(|c| c.action == Action::Deny)
            }
        }
    }
}

/// The 1-based line and column of the key at `pointer` (0, 0 when it has no span).
fn position_of(file: &SourceFile, pointer: &str) -> (usize, usize) {
    file.key_span(pointer)
        .map_or((0, 0), |s| file.line_col(s.start))
}

fn glob_rank(selector: &Selector) -> Option<Specificity> {
    match selector {
        Selector::Glob(g) => Some(g.specificity()),
        _ => None,
    }
}

fn too_big(name: &str, len: u64) -> Diagnostic {
    Diagnostic::about_file(
        name,
        "policy::too_large",
        format!(
            "policy file `{name}` is {len} bytes, over the limit of {MAX_POLICY_BYTES} bytes (16 MiB)"
        ),
    )
    .with_help("a policy is a hand-written file: split generated rules into patterns or classes")
}

/// Deserializes the document, turning serde's error into a diagnostic at the right span.
fn parse_doc(file: &SourceFile) -> Result<PolicyDoc, Diagnostics> {
    let text = &*file.text;
    if text.trim().is_empty() {
        return Err(Diagnostics(vec![
            Diagnostic::error(
                file,
                "policy::empty",
                format!("policy file `{}` is empty", file.name),
            )
            .with_help(r#"a minimal policy is {"version": "1", "default": "deny", "tools": {}}"#),
        ]));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let mut diags = Vec::new();
    let doc = match serde_path_to_error::deserialize::<_, PolicyDoc>(&mut de) {
        Ok(doc) => match de.end() {
            Ok(()) => Some(doc),
            Err(e) => {
                diags.push(syntax_diagnostic(file, &e, &message_of(&e)));
                None
            }
        },
        Err(err) => {
            diags.push(serde_diagnostic(file, err));
            None
        }
    };
    // Duplicate keys: serde keeps one of the two silently; a policy must say one thing.
    for (pointer, first, second) in &file.duplicates {
        let key = pointer.rsplit('/').next().unwrap_or_default();
        diags.push(
            Diagnostic::error(
                file,
                "policy::duplicate_key",
                format!("duplicate key `{}`", unescape(key)),
            )
            .with_label(second.clone(), "written again here")
            .with_label(first.clone(), "first written here")
            .with_pointer(pointer.clone())
            .with_help("a JSON object keeps only one value per key: merge the two or delete one"),
        );
    }
    match doc {
        Some(doc) if diags.is_empty() => Ok(doc),
        _ => {
            let mut d = Diagnostics(diags);
            d.sort();
            Err(d)
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Maps a serde error to a diagnostic: the JSON path serde was at, the span of that node (or
/// serde's line/column), and a cleaned-up message with a "did you mean" where one helps.
fn serde_diagnostic(
    file: &SourceFile,
    err: serde_path_to_error::Error<serde_json::Error>,
) -> Diagnostic {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in err.path().iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => pointer.push_str(&format!("/{}", escape_pointer(key))),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    let inner = err.into_inner();
    let message = message_of(&inner);
    let offset = file.offset_of(inner.line(), inner.column());
    if matches!(
        inner.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    ) {
        return syntax_diagnostic(file, &inner, &message);
    }
    // Unknown fields and variants: list what is valid, suggest the closest.
    if let Some((bad, expected)) = parse_unknown(&message) {
        let names: Vec<&str> = expected.iter().map(String::as_str).collect();
        let is_field = message.starts_with("unknown field");
        let (head, code) = if is_field {
            (format!("unknown field `{bad}`"), "policy::unknown_field")
        } else {
            (format!("unknown value `{bad}`"), "policy::unknown_value")
        };
        let intro = if is_field {
            "the fields here are"
        } else {
            "the values here are"
        };
        let help = crate::selector::suggest_help(&bad, &names, intro);
        let d = Diagnostic::error(file, code, head).with_help(help);
        // serde's path may or may not end at the unknown field itself.
        let field_pointer = if pointer.rsplit('/').next() == Some(escape_pointer(&bad).as_str()) {
            pointer.clone()
        } else {
            format!("{pointer}/{}", escape_pointer(&bad))
        };
        return if is_field && file.key_span(&field_pointer).is_some() {
            d.at_key(file, &field_pointer, "not a field of this object")
        } else if file.value_span(&pointer).is_some() {
            d.at(file, &pointer, "not a valid value")
        } else {
            d.with_label(point(file, offset), "here")
                .with_pointer(pointer)
        };
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        let help = match field {
            "version" => r#"add `"version": "1"`"#.to_owned(),
            "default" => r#"add `"default": "deny"` (or "allow", "require_approval"): what happens to tools no rule names"#.to_owned(),
            other => format!("add the field `{other}`"),
        };
        let span = file.value_span(&pointer).map(|s| s.start..s.start + 1);
        let d = Diagnostic::error(
            file,
            "policy::missing_field",
            format!("missing field `{field}`"),
        )
        .with_help(help)
        .with_pointer(pointer);
        return match span {
            Some(span) => d.with_label(span, "in this object"),
            None => d.with_label(point(file, offset), "here"),
        };
    }
    let help = value_help(&pointer, &message);
    let d = Diagnostic::error(file, "policy::invalid_value", message).with_help(help);
    if file.value_span(&pointer).is_some() && !pointer.is_empty() {
        d.at(file, &pointer, "this value")
    } else {
        d.with_label(point(file, offset), "here")
            .with_pointer(pointer)
    }
}

/// serde_json's message without its trailing " at line L column C": the span says it better.
fn message_of(err: &serde_json::Error) -> String {
    let raw = err.to_string();
    match raw.rfind(" at line ") {
        Some(i) => raw[..i].to_owned(),
        None => raw,
    }
}

fn syntax_diagnostic(file: &SourceFile, err: &serde_json::Error, message: &str) -> Diagnostic {
    let offset = file.offset_of(err.line(), err.column());
    let at = offset.saturating_sub(1).min(file.text.len());
    let end = (at + 1).min(file.text.len()).max(at);
    let help = if err.classify() == serde_json::error::Category::Eof {
        "the file ends before the JSON does: close every `{` and `[`"
    } else if message.contains("recursion limit") {
        "a policy nests a few levels deep: this file nests far deeper than any policy can"
    } else if message.contains("trailing characters") {
        "the file holds one JSON object: remove what follows its closing `}`"
    } else {
        "a policy is strict JSON: no comments, no trailing commas, keys in double quotes"
    };
    Diagnostic::error(file, "policy::syntax", format!("invalid JSON: {message}"))
        .with_label(at..end, "here")
        .with_help(help)
}

/// A one-character span just before `offset` (serde's positions point past the token).
fn point(file: &SourceFile, offset: usize) -> std::ops::Range<usize> {
    let at = offset.saturating_sub(1).min(file.text.len());
    at..(at + 1).min(file.text.len())
}

/// What a field expects, by the last segment of its pointer.
fn value_help(pointer: &str, message: &str) -> String {
    let last = pointer.rsplit('/').next().unwrap_or_default();
    match last {
        "window" | "timeout" => "a window is `second`, `minute`, `hour`, `day`, a whole number of seconds, or a duration such as `90s`, `5m`, `1h`".into(),
        "max" if pointer.contains("/limits/") || pointer.contains("/rate_limit") => {
            "`max` is a whole number of calls (of errors, with `counts: errors`), at least 1".into()
        }
        "scope" => "a scope is `grant`, `session` or `global`".into(),
        "action" | "default" => "an action is `allow`, `deny` or `require_approval`".into(),
        "version" => r#"the only policy version is "1": write `"version": "1"` (a string)"#.into(),
        _ if message.contains("invalid type") => format!(
            "see docs/policy.md for what `{}` takes",
            if last.is_empty() { "the document" } else { last }
        ),
        _ => "see docs/policy.md".into(),
    }
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown variant").
fn parse_unknown(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (bad, tail) = rest.split_once('`')?;
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((bad.to_owned(), expected))
}

/// Validation and compilation: everything the types cannot say.
struct Compiler<'a> {
    file: &'a SourceFile,
    default_approval: (Duration, TimeoutOutcome, ApprovalVia),
    diags: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Counter name → (its spec, the pointer of its first declaration).
    counters: BTreeMap<String, (LimitSpec, Vec<String>, String)>,
}

fn compile(file: SourceFile, doc: PolicyDoc) -> Result<Policy, Diagnostics> {
    let default_approval = doc.approval.map_or(
        (
            DEFAULT_APPROVAL_TIMEOUT,
            TimeoutOutcome::Deny,
            ApprovalVia::Operators,
        ),
        |a| {
            (
                a.timeout.map_or(DEFAULT_APPROVAL_TIMEOUT, |w| w.0),
                a.on_timeout,
                a.via.unwrap_or_default(),
            )
        },
    );
    let mut c = Compiler {
        file: &file,
        default_approval,
        diags: Vec::new(),
        warnings: Vec::new(),
        counters: BTreeMap::new(),
    };
    let default = Arc::new(RuleBody {
        selector: Arc::from("default"),
        pointer: Arc::from("/default"),
        action: doc.default,
        reason: None,
        limits: Vec::new(),
        limit_by: Vec::new(),
        approval: default_approval,
        arguments: Vec::new(),
        when: None,
        redact: Vec::new(),
        position: position_of(&file, "/default"),
    });
    let mut rules = Vec::new();
    for (text, rule) in &doc.tools {
        let pointer = format!("/tools/{}", escape_pointer(text));
        let selector = match Selector::parse(text) {
            Ok(s) => s,
            Err(e) => {
                c.diags.push(
                    Diagnostic::error(c.file, "policy::bad_selector", e.message)
                        .at_key(c.file, &pointer, "this selector")
                        .with_help(e.help),
                );
                continue;
            }
        };
        let text: Arc<str> = Arc::from(text.as_str());
        if let Some(body) = c.body(&text, &pointer, rule, None) {
            rules.push(SelectedRule {
                selector,
                text,
                body: Arc::new(body),
            });
        }
    }
    c.conflicts(&doc, &rules);
    let Compiler {
        diags, warnings, ..
    } = c;
    if !diags.is_empty() {
        let mut d = Diagnostics(diags);
        d.sort();
        return Err(d);
    }
    let mut exact = HashMap::default();
    let mut globs = Vec::new();
    let mut classes = Vec::new();
    let mut upstreams = Vec::new();
    let mut annotations = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        match &rule.selector {
            Selector::Exact(name) => {
                exact.insert(name.clone(), i);
            }
            Selector::Glob(_) => globs.push(i),
            Selector::Upstream(u) => upstreams.push((u.clone(), i)),
            Selector::Class(class) => classes.push((*class, i)),
            Selector::Annotation(a) => annotations.push((*a, i)),
        }
    }
    // Precedence order: most specific glob first, ties by selector text (they agree, or the
    // conflict check refused the policy).
    globs.sort_by_key(|&i| {
        let r = &rules[i];
        (std::cmp::Reverse(glob_rank(&r.selector)), r.text.clone())
    });
    annotations.sort_by_key(|(a, _)| *a);
    let mut builder = globset::GlobSetBuilder::new();
    for &i in &globs {
        if let Selector::Glob(g) = &rules[i].selector
            && let Some(glob) = g.globset_glob()
        {
            builder.add(glob);
        }
    }
    let glob_set = builder.build().map_err(|e| {
        Diagnostics(vec![Diagnostic::error(
            &file,
            "policy::bad_selector",
            format!("the patterns cannot be compiled together: {e}"),
        )])
    })?;
    Ok(Policy {
        source: file,
        doc,
        default,
        rules,
        exact,
        globs,
        glob_set,
        upstreams,
        classes,
        annotations,
        warnings,
    })
}

impl Compiler<'_> {
    /// Validates and compiles one rule body. `case` is `(argument, value)` for a branch case.
    fn body(
        &mut self,
        selector: &Arc<str>,
        pointer: &str,
        rule: &Rule,
        case: Option<(&str, &str)>,
    ) -> Option<RuleBody> {
        let before = self.diags.len();
        if let Some(when) = &rule.when {
            if case.is_some() {
                self.diags.push(
                    Diagnostic::error(
                        self.file,
                        "policy::nested_when",
                        "a case cannot branch again",
                    )
                    .at_key(
                        self.file,
                        &format!("{pointer}/when"),
                        "a `when` inside a case",
                    )
                    .with_help(
                        "branch on one argument per rule; check further arguments with `arguments`",
                    ),
                );
            }
            for (field, present) in [
                ("action", rule.action.is_some()),
                ("reason", rule.reason.is_some()),
                ("limits", !rule.limits.is_empty()),
                ("rate_limit", rule.rate_limit.is_some()),
                ("approval", rule.approval.is_some()),
            ] {
                if present {
                    self.diags.push(
                        Diagnostic::error(
                            self.file,
                            "policy::when_with_action",
                            format!("a rule with `when` cannot have `{field}`"),
                        )
                        .at_key(self.file, &format!("{pointer}/{field}"), "here")
                        .with_help(format!(
                            "the cases decide: move `{field}` into each case, or into `otherwise`"
                        )),
                    );
                }
            }
            if when.argument.is_empty() {
                self.diags.push(
                    Diagnostic::error(self.file, "policy::bad_when", "`when.argument` is empty")
                        .at(
                            self.file,
                            &format!("{pointer}/when/argument"),
                            "name an argument",
                        )
                        .with_help(
                            "name the argument whose value picks the case, e.g. `operation`",
                        ),
                );
            }
            if when.cases.is_empty() {
                self.diags.push(
                    Diagnostic::error(self.file, "policy::bad_when", "`when` has no cases")
                        .at(self.file, &format!("{pointer}/when/cases"), "no cases")
                        .with_help(
                            r#"add cases by value, e.g. "cases": {"read": {"action": "allow"}}"#,
                        ),
                );
            }
        }
        let action = rule.action.unwrap_or_default();
        if rule.approval.is_some() && action != Action::RequireApproval && rule.when.is_none() {
            self.warnings.push(
                Diagnostic::warning(
                    self.file,
                    "policy::unused_approval",
                    "`approval` has no effect on a rule that does not require approval",
                )
                .at_key(self.file, &format!("{pointer}/approval"), "ignored")
                .with_help(r#"set `"action": "require_approval"` or remove `approval`"#),
            );
        }
        let mut limits = Vec::new();
        let mut limit_by: Vec<Arc<[String]>> = Vec::new();
        for (i, decl) in rule.limits.iter().enumerate() {
            let lp = format!("{pointer}/limits/{i}");
            if decl.counter.is_empty() {
                self.diags.push(
                    Diagnostic::error(self.file, "policy::bad_counter", "empty counter name")
                        .at(self.file, &format!("{lp}/counter"), "name the counter")
                        .with_help("rules that name the same counter share one budget"),
                );
                continue;
            }
            if decl.counter.starts_with(RATE_LIMIT_PREFIX) {
                self.diags.push(
                    Diagnostic::error(
                        self.file,
                        "policy::bad_counter",
                        format!("counter names starting with `{RATE_LIMIT_PREFIX}` are reserved"),
                    )
                    .at(self.file, &format!("{lp}/counter"), "reserved")
                    .with_help("`rate_limit` shorthands name their counters so: pick another name"),
                );
                continue;
            }
            let spec = LimitSpec {
                counter: Arc::from(decl.counter.as_str()),
                window: decl.window.0,
                max: decl.max.0,
                scope: decl.scope,
                counts: decl.counts,
            };
            for (j, pointer) in decl.by.iter().enumerate() {
                if !pointer.starts_with('/') || pointer.len() < 2 {
                    self.diags.push(
                        Diagnostic::error(
                            self.file,
                            "policy::bad_by",
                            format!("`{pointer}` is not a JSON pointer into the arguments"),
                        )
                        .at(self.file, &format!("{lp}/by/{j}"), "here")
                        .with_help("write the argument as a JSON pointer: `/cluster_name`"),
                    );
                }
            }
            self.counter(spec.clone(), &decl.by, &lp);
            limits.push(spec);
            limit_by.push(Arc::from(decl.by.as_slice()));
        }
        if let Some(rl) = &rule.rate_limit {
            let name = match case {
                None => format!("{RATE_LIMIT_PREFIX}{selector}"),
                Some((arg, value)) => format!("{RATE_LIMIT_PREFIX}{selector}[{arg}={value}]"),
            };
            limits.push(LimitSpec {
                counter: Arc::from(name.as_str()),
                window: rl.window.0,
                max: rl.max.0,
                scope: rl.scope.unwrap_or(Scope::Session),
                counts: Counts::Calls,
            });
            limit_by.push(Arc::from(Vec::new()));
        }
        let mut arguments = Vec::new();
        for (name, arg) in &rule.arguments {
            let ap = format!("{pointer}/arguments/{}", escape_pointer(name));
            arguments.push(self.arg_check(name, arg, &ap));
        }
        let approval = rule.approval.map_or(self.default_approval, |a| {
            (
                a.timeout.map_or(self.default_approval.0, |w| w.0),
                a.on_timeout,
                a.via.unwrap_or(self.default_approval.2),
            )
        });
        let when = match &rule.when {
            None => None,
            Some(when) => {
                let mut cases = BTreeMap::new();
                for (value, case_rule) in &when.cases {
                    let cp = format!("{pointer}/when/cases/{}", escape_pointer(value));
                    if let Some(b) =
                        self.body(selector, &cp, case_rule, Some((&when.argument, value)))
                    {
                        cases.insert(value.clone(), Arc::new(b));
                    }
                }
                let otherwise = when.otherwise.as_ref().and_then(|o| {
                    let op = format!("{pointer}/when/otherwise");
                    self.body(selector, &op, o, Some((&when.argument, "*")))
                        .map(Arc::new)
                });
                Some(Branch {
                    argument: when.argument.clone(),
                    cases,
                    otherwise,
                })
            }
        };
        if self.diags.len() > before {
            return None;
        }
        Some(RuleBody {
            selector: Arc::clone(selector),
            pointer: Arc::from(pointer),
            action,
            reason: rule.reason.as_deref().map(Arc::from),
            limits,
            limit_by,
            approval,
            arguments,
            when,
            redact: rule.redact.clone(),
            position: position_of(self.file, pointer),
        })
    }

    /// Records a counter declaration; the same name with another window, max or scope is an
    /// error naming both places.
    fn counter(&mut self, spec: LimitSpec, by: &[String], pointer: &str) {
        let name = spec.counter.to_string();
        match self.counters.get(&name) {
            None => {
                self.counters
                    .insert(name, (spec, by.to_vec(), pointer.to_owned()));
            }
            Some((first, first_by, first_pointer)) if *first != spec || first_by != by => {
                let describe = |s: &LimitSpec, by: &[String]| {
                    let by = if by.is_empty() {
                        String::new()
                    } else {
                        format!(", by {}", by.join(", "))
                    };
                    let what = match s.counts {
                        Counts::Calls => "",
                        Counts::Errors => " errors",
                    };
                    format!(
                        "max {}{what} per {}, scope {}{by}",
                        s.max,
                        crate::engine::window_text(s.window),
                        scope_name(s.scope)
                    )
                };
                let first_span = self.file.nearest_span(first_pointer);
                let mut d = Diagnostic::error(
                    self.file,
                    "policy::counter_conflict",
                    format!("counter `{name}` is declared twice with different limits"),
                )
                .at(self.file, pointer, format!("here: {}", describe(&spec, by)));
                if let Some(span) = first_span {
                    d = d.with_label(
                        span,
                        format!("first declared here: {}", describe(first, first_by)),
                    );
                }
                self.diags.push(d.with_help(format!(
                    "a counter is one shared budget: give both declarations the same window, max, scope, `by` and `counts`, or rename one (first declared at {first_pointer})"
                )));
            }
            Some(_) => {}
        }
    }

    fn arg_check(&mut self, name: &str, arg: &ArgRule, pointer: &str) -> ArgCheck {
        let regex = arg.pattern.as_ref().and_then(|p| {
            // A bounded compiled size keeps a hostile pattern from eating memory.
            match regex::RegexBuilder::new(p).size_limit(1 << 20).build() {
                Ok(r) => Some(r),
                Err(e) => {
                    let detail = e.to_string();
                    let last = detail.lines().last().unwrap_or_default().trim();
                    let last = last.strip_prefix("error: ").unwrap_or(last).to_owned();
                    self.diags.push(
                        Diagnostic::error(
                            self.file,
                            "policy::bad_pattern",
                            format!("`{p}` is not a valid regular expression: {last}"),
                        )
                        .at(self.file, &format!("{pointer}/pattern"), "this pattern")
                        .with_help(
                            "patterns use Rust `regex` syntax (no look-around, no backreferences)",
                        ),
                    );
                    None
                }
            }
        });
        if arg.required && arg.forbidden {
            self.diags.push(
                Diagnostic::error(
                    self.file,
                    "policy::bad_argument_rule",
                    format!("argument `{name}` is both required and forbidden"),
                )
                .at_key(self.file, pointer, "no call can pass this")
                .with_help("keep one of `required` and `forbidden`; to refuse the tool use `action: \"deny\"`"),
            );
        }
        if let (Some(min), Some(max)) = (arg.min, arg.max)
            && min > max
        {
            self.diags.push(
                Diagnostic::error(
                    self.file,
                    "policy::bad_argument_rule",
                    format!("argument `{name}` has `min` {min} greater than `max` {max}"),
                )
                .at(self.file, &format!("{pointer}/min"), "min")
                .with_help("swap them, or drop one"),
            );
        }
        if let Some(values) = &arg.one_of
            && values.is_empty()
        {
            self.diags.push(
                Diagnostic::error(
                    self.file,
                    "policy::bad_argument_rule",
                    format!("argument `{name}` has an empty `enum`: no value can pass"),
                )
                .at(self.file, &format!("{pointer}/enum"), "empty")
                .with_help("list the allowed values, or remove `enum`"),
            );
        }
        ArgCheck {
            name: name.to_owned(),
            rule: arg.clone(),
            regex,
        }
    }

    /// Equal-precedence selectors that can match the same tool and carry different rules.
    fn conflicts(&mut self, doc: &PolicyDoc, rules: &[SelectedRule]) {
        let mut found = Vec::new();
        for (i, a) in rules.iter().enumerate() {
            for b in &rules[i + 1..] {
                let overlap = match (&a.selector, &b.selector) {
                    (Selector::Glob(x), Selector::Glob(y)) => {
                        x.specificity() == y.specificity() && x.overlaps(y)
                    }
                    (Selector::Annotation(x), Selector::Annotation(y)) => x.can_cooccur(*y),
                    _ => false,
                };
                if overlap && doc.tools.get(&*a.text) != doc.tools.get(&*b.text) {
                    found.push((Arc::clone(&a.text), Arc::clone(&b.text), a.selector.tier()));
                }
            }
        }
        for (a, b, tier) in found {
            let pa = format!("/tools/{}", escape_pointer(&a));
            let pb = format!("/tools/{}", escape_pointer(&b));
            let mut d = Diagnostic::error(
                self.file,
                "policy::selector_conflict",
                format!("selectors `{a}` and `{b}` can match the same tool with different rules"),
            )
            .at_key(self.file, &pb, "this selector");
            if let Some(span) = self.file.key_span(&pa) {
                d = d.with_label(span, "and this one, of equal precedence");
            }
            let help = if tier == Tier::Glob {
                format!(
                    "both match a tool such as `{}` and neither is more specific (same number of literal characters and wildcards): add an exact rule for such tools, make one pattern more specific, or give both the same rule",
                    example_overlap(&a, &b)
                )
            } else {
                "a tool can carry both annotations: give both the same rule, or select by exact name or class instead".to_owned()
            };
            self.diags.push(d.with_help(help));
        }
    }
}

/// A name both patterns match, for the conflict message.
fn example_overlap(a: &str, b: &str) -> String {
    match (
        crate::selector::Glob::parse(a),
        crate::selector::Glob::parse(b),
    ) {
        (Ok(ga), Ok(gb)) => ga.witness(&gb).unwrap_or_default(),
        _ => String::new(),
    }
}

pub(crate) fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Grant => "grant",
        Scope::Session => "session",
        Scope::Global => "global",
    }
}

/// Suggests the closest known name to `name`, for warnings about unknown tools.
pub fn suggest_tool<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    closest(name, known)
}

/// A value's text as a branch case key: strings as they are, other scalars as their JSON.
pub(crate) fn case_key(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
