//! Loading a scenario file: its format's checks, and the policies it names compiled.

use super::*;

/// A scenario that cannot be run: where and what.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Bad { path: String, message: String },
    #[error("{path}: the policy is not valid:\n{diagnostics}")]
    Policy { path: String, diagnostics: String },
}

/// A loaded scenario with its compiled policy.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub scenario: Scenario,
    pub policy: Policy,
}

/// Reads and checks a scenario file and its policy.
pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: name.clone(),
        source,
    })?;
    load_text(path, &text)
}

/// Checks a scenario given as text; `path` names it and anchors its relative paths.
pub fn load_text(path: &Path, text: &str) -> Result<Loaded, ScenarioError> {
    let name = path.display().to_string();
    let scenario = format::parse(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The parser's message ends with its own " at line L column C": the prefix says it.
        let message = e.to_string();
        let message = match message.rfind(" at line ") {
            Some(i) if line > 0 => message[..i].to_owned(),
            _ => message,
        };
        ScenarioError::Invalid {
            path: name.clone(),
            line,
            column,
            message,
        }
    })?;
    let several = scenario.several_upstreams();
    for m in scenario.mocks() {
        let spec = m.upstream.tools.spec();
        tollgate_catalog::Catalog::embedded()
            .select(&spec)
            .map_err(|e| ScenarioError::Bad {
                path: name.clone(),
                message: if several {
                    format!("upstreams `{}` tools `{spec}`: {e}", m.name)
                } else {
                    format!("upstream.tools `{spec}`: {e}")
                },
            })?;
    }
    let policy = compile(path, &scenario.policy, "the scenario's policy").map_err(|d| {
        ScenarioError::Policy {
            path: name.clone(),
            diagnostics: d,
        }
    })?;
    Ok(Loaded {
        path: path.to_owned(),
        scenario,
        policy,
    })
}

/// Compiles a policy source; the error is the rendered diagnostics. A path is read relative to
/// the scenario file and named in diagnostics as the scenario writes it, so a transcript does
/// not depend on the directory the runner started in.
pub(super) fn compile(
    scenario: &Path,
    source: &PolicySource,
    inline_name: &str,
) -> Result<Policy, String> {
    match source {
        PolicySource::Path(p) => {
            let full = scenario.parent().unwrap_or(Path::new(".")).join(p);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| format!("cannot read policy file `{p}`: {e}"))?;
            Policy::parse(p, &text)
        }
        PolicySource::Inline(v) => {
            let text = serde_json::to_string_pretty(v).unwrap_or_default();
            Policy::parse(inline_name, &text)
        }
    }
    .map_err(|d| d.render_plain())
}
