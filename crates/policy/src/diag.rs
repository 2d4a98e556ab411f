//! Diagnostics: what is wrong with a policy, where (file:line:col, JSON pointer) and what to do.
//! They are miette diagnostics, rendered like a compiler's: the line, a caret under the
//! offending text, a label, and a `help:` line. A plain renderer (no colour, fixed width) keeps
//! snapshots stable; a JSON renderer serves editors and CI.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

use crate::source::{SourceFile, line_col};

/// How bad a finding is: errors make a policy unusable, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// A label: a span of the file and what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Range<usize>,
    pub text: String,
}

/// One finding about a policy file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable identifier, e.g. `policy::unknown_field`.
    pub code: &'static str,
    /// What is wrong: lowercase, no final period, user input in backticks.
    pub message: String,
    /// Where in the document, as a JSON pointer (`/tools/Delete*/limits/0/max`).
    pub pointer: Option<String>,
    /// Where in the text; the first label is the primary location.
    pub labels: Vec<Label>,
    /// What to do about it.
    pub help: Option<String>,
    source: Option<NamedSource<Arc<str>>>,
    file: Arc<str>,
    text: Option<Arc<str>>,
}

impl Diagnostic {
    /// An error about `file`, with no location yet.
    pub fn error(file: &SourceFile, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, file, code, message)
    }

    /// A warning about `file`, with no location yet.
    pub fn warning(file: &SourceFile, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, file, code, message)
    }

    fn new(
        severity: Severity,
        file: &SourceFile,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            pointer: None,
            labels: Vec::new(),
            help: None,
            source: Some(
                NamedSource::new(&*file.name, Arc::clone(&file.text)).with_language("json"),
            ),
            file: Arc::clone(&file.name),
            text: Some(Arc::clone(&file.text)),
        }
    }

    /// An error about a file whose text could not be read or was refused before parsing.
    pub fn about_file(file: &str, code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            pointer: None,
            labels: Vec::new(),
            help: None,
            source: None,
            file: Arc::from(file),
            text: None,
        }
    }

    /// Points at the node `pointer` names (its nearest existing ancestor if it has none).
    pub fn at(mut self, file: &SourceFile, pointer: &str, label: impl Into<String>) -> Self {
        if let Some(span) = file.nearest_span(pointer) {
            self.labels.push(Label {
                span,
                text: label.into(),
            });
        }
        self.pointer = Some(pointer.to_owned());
        self
    }

    /// Points at the key of the member `pointer` names (for selectors and field names).
    pub fn at_key(mut self, file: &SourceFile, pointer: &str, label: impl Into<String>) -> Self {
        if let Some(span) = file
            .key_span(pointer)
            .or_else(|| file.nearest_span(pointer))
        {
            self.labels.push(Label {
                span,
                text: label.into(),
            });
        }
        self.pointer = Some(pointer.to_owned());
        self
    }

    /// Adds a label at a raw span.
    pub fn with_label(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: label.into(),
        });
        self
    }

    /// Sets the pointer without adding a label.
    pub fn with_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The file this diagnostic is about.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// 1-based line and column of the primary label, if there is one.
    pub fn location(&self) -> Option<(usize, usize)> {
        let text = self.text.as_ref()?;
        let label = self.labels.first()?;
        Some(line_col(text, label.span.start))
    }

    /// Renders the diagnostic like a compiler, without colour, at a fixed width: stable text
    /// for snapshots and logs.
    pub fn render_plain(&self) -> String {
        self.render(GraphicalTheme::unicode_nocolor())
    }

    /// Renders with colour (for a terminal).
    pub fn render_color(&self) -> String {
        self.render(GraphicalTheme::unicode())
    }

    fn render(&self, theme: GraphicalTheme) -> String {
        if self.has_long_lines() {
            return self.render_compact();
        }
        let mut out = String::new();
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        if handler.render_report(&mut out, self).is_err() {
            out = format!("{}: {}", self.file, self.message);
        }
        if self.labels.is_empty() {
            // Without a source excerpt the report would not say which file: say it.
            out = format!("{out}  --> {}\n", self.file);
        }
        out
    }

    /// Whether a labelled line is too long to quote (a minified or hostile file): such a
    /// line would flood the terminal, so the report names the position instead.
    fn has_long_lines(&self) -> bool {
        const MAX_QUOTED_LINE: usize = 200;
        let Some(text) = &self.text else {
            return false;
        };
        self.labels.iter().any(|l| {
            let start = text
                .get(..l.span.start)
                .and_then(|t| t.rfind('\n'))
                .map_or(0, |i| i + 1);
            let end = text
                .get(l.span.start..)
                .and_then(|t| t.find('\n'))
                .map_or(text.len(), |i| l.span.start + i);
            end.saturating_sub(start) > MAX_QUOTED_LINE
        })
    }

    /// The report without source excerpts: message, each position as file:line:col with its
    /// label, and the help line.
    fn render_compact(&self) -> String {
        let mark = match self.severity {
            Severity::Error => "×",
            Severity::Warning => "⚠",
        };
        let mut out = format!("{}\n\n  {mark} {}\n", self.code, self.message);
        for l in &self.labels {
            let (line, col) = self
                .text
                .as_ref()
                .map_or((0, 0), |t| line_col(t, l.span.start));
            out.push_str(&format!("  --> {}:{line}:{col}: {}\n", self.file, l.text));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("  help: {help}\n"));
        }
        out
    }

    /// A JSON object for machines: severity, code, message, file, line, column, pointer, help,
    /// and every label with its position.
    pub fn to_json(&self) -> serde_json::Value {
        let (line, column) = self.location().unzip();
        let labels: Vec<_> = self
            .labels
            .iter()
            .map(|l| {
                let (line, column) = self
                    .text
                    .as_ref()
                    .map(|t| line_col(t, l.span.start))
                    .unzip();
                serde_json::json!({
                    "line": line, "column": column,
                    "start": l.span.start, "end": l.span.end, "text": l.text,
                })
            })
            .collect();
        serde_json::json!({
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": &*self.file,
            "line": line,
            "column": column,
            "pointer": self.pointer,
            "help": self.help,
            "labels": labels,
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        if self.labels.is_empty() {
            return None;
        }
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().enumerate().map(|(i, l)| {
            let len = l.span.end.saturating_sub(l.span.start);
            if i == 0 {
                LabeledSpan::new_primary_with_span(Some(l.text.clone()), (l.span.start, len))
            } else {
                LabeledSpan::new_with_span(Some(l.text.clone()), (l.span.start, len))
            }
        })))
    }
}

/// Every finding about one policy file, errors first, each in file order.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// Sorts errors before warnings, then by position in the file.
    pub fn sort(&mut self) {
        self.0.sort_by_key(|d| {
            (
                d.severity,
                d.labels.first().map_or(usize::MAX, |l| l.span.start),
            )
        });
    }

    /// Every diagnostic rendered plainly, separated by blank lines.
    pub fn render_plain(&self) -> String {
        self.0
            .iter()
            .map(Diagnostic::render_plain)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_plain())
    }
}

impl std::error::Error for Diagnostics {}
