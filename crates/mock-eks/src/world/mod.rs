//! The simulated AWS and Kubernetes world behind the mock EKS server: clusters, nodegroups,
//! Kubernetes objects, pod logs, events, insights, CloudWatch logs, CloudFormation stacks, IAM
//! roles with inline policies, HealthOmics run batches and runs. Seeded from a [`Fixture`];
//! tool calls read and change it. Deterministic: no clock (timestamps come from the fixture's
//! base time plus a logical counter), no randomness, ordered maps. README.md next to this file
//! describes the fixture and every tool's behaviour for users.
//!
//! Flags, as the real server has them:
//! - without `allow_write`, every call that would change the world is refused: with the real
//!   server's texts for its tools, and with `Operation NAME is not allowed without write
//!   access` for the extended tools whose class is not `read` (the catalogue's class decides,
//!   so a policy author sees the same line between reads and writes as the gateway does);
//! - without `allow_sensitive_data_access`, pod logs, Kubernetes events, CloudWatch logs and
//!   reading Kubernetes Secrets are refused with the real server's texts, and so are the
//!   extended operations that return log contents or credentials (`aws::is_sensitive`).

mod aws;
mod compact;
mod pyjson;
mod real;
mod validate;

pub use validate::{PyValue, pydantic_reads};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_catalog::CatalogTool;

/// The real server's flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    pub allow_write: bool,
    pub allow_sensitive_data_access: bool,
}

/// What a tool call returns: MCP text content items (the real server sends a summary line and,
/// for data, a second item with a JSON body), whether it is an error, and `structuredContent`.
/// The real tools send none (the real server declares no output schemas and sends none); the
/// extended tools send their JSON body there too.
///
/// A data answer's body text is written when something reads it (its message, [`texts`],
/// [`text`]), not when the answer is made: an in-process caller that reads only the summary
/// (the scenario runner's direct path) never pays for it. The answers a replay makes most
/// (HealthOmics batches and runs) keep their body as compact JSON text, written with no tree,
/// with its size bounds counted as it was written.
///
/// [`texts`]: ToolOutput::texts
/// [`text`]: ToolOutput::text
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// The texts written so far: the summary, and the body's text once it is written.
    content: Vec<String>,
    pub is_error: bool,
    body: Option<Body>,
    /// The body's text is not in `content` yet.
    body_unwritten: bool,
}

/// How deep a tool result's body sits in the message that carries it, for its size bounds
/// (`result.structuredContent`, or the text of `result.content[1]`).
const BODY_DEPTH: usize = 3;

/// A data answer's JSON body.
#[derive(Debug, Clone)]
enum Body {
    /// As a tree. A real tool's is written at once by [`World::call`], in its models' key order.
    Tree(Value),
    /// As compact JSON text with every object's keys in order, as serde_json writes a
    /// [`Value`], and its bounds at [`BODY_DEPTH`] (see [`compact::Compact::finish`]).
    Compact {
        text: String,
        bounds: Option<tollgate_mcp::TextBounds>,
        /// Its top-level keys' bits (see [`compact::key_bit`]).
        top_keys: u64,
    },
}

impl Body {
    fn value(&self) -> Value {
        match self {
            Body::Tree(v) => v.clone(),
            // The text was written by serde_json, so it parses.
            Body::Compact { text, .. } => serde_json::from_str(text).unwrap_or(Value::Null),
        }
    }

    fn into_value(self) -> Value {
        match self {
            Body::Tree(v) => v,
            c @ Body::Compact { .. } => c.value(),
        }
    }

    /// `json.dumps` of the body, as Python writes it.
    fn python_text(&self) -> String {
        match self {
            Body::Tree(v) => pyjson::dumps(v),
            Body::Compact { text, .. } => pyjson::respace(text),
        }
    }

    fn is_object(&self) -> bool {
        match self {
            Body::Tree(v) => v.is_object(),
            Body::Compact { text, .. } => text.starts_with('{'),
        }
    }
}

impl PartialEq for ToolOutput {
    fn eq(&self, other: &ToolOutput) -> bool {
        self.is_error == other.is_error
            && self.structured() == other.structured()
            && self.all_texts() == other.all_texts()
    }
}

impl ToolOutput {
    pub(crate) fn error(text: impl Into<String>) -> Self {
        ToolOutput {
            content: vec![text.into()],
            is_error: true,
            body: None,
            body_unwritten: false,
        }
    }

    /// A data answer whose body is a tree (see [`Body::Tree`]): a real tool's, or an extended
    /// tool's not written by a [`compact::Compact`].
    pub(crate) fn data(summary: impl Into<String>, body: Value) -> Self {
        ToolOutput {
            content: vec![summary.into()],
            is_error: false,
            body: Some(Body::Tree(body)),
            body_unwritten: true,
        }
    }

    /// A data answer whose body was written by a [`compact::Compact`], its keys in order;
    /// the tests check that order on every answer they make.
    pub(crate) fn compact(summary: impl Into<String>, body: compact::Compact) -> Self {
        let (body, bounds, top_keys) = body.finish(BODY_DEPTH);
        debug_assert_eq!(
            serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string(&v).ok())
                .as_deref(),
            Some(body.as_str()),
            "a body's text must be serde_json's of its value, keys in order"
        );
        ToolOutput {
            content: vec![summary.into()],
            is_error: false,
            body: Some(Body::Compact {
                text: body,
                bounds,
                top_keys,
            }),
            body_unwritten: true,
        }
    }

    /// The first content item's text (the summary line, or the error).
    pub fn first_text(&self) -> &str {
        self.content.first().map_or("", String::as_str)
    }

    /// `structuredContent`'s value: the body of an extended tool's data answer.
    pub fn structured(&self) -> Option<Value> {
        self.body.as_ref().map(Body::value)
    }

    /// Whether the body is an object with `key` among its own keys.
    pub fn structured_has_key(&self, key: &str) -> bool {
        match &self.body {
            None => false,
            Some(Body::Tree(v)) => v.get(key).is_some(),
            // Only a body that may have written the key at its top, and whose text holds it,
            // is read.
            Some(b @ Body::Compact { text, top_keys, .. }) => {
                top_keys & compact::key_bit(key) != 0
                    && text.contains(key)
                    && b.value().get(key).is_some()
            }
        }
    }

    /// Every content item's text, the body's written first if it is not yet.
    pub fn texts(&mut self) -> &[String] {
        self.write_body();
        &self.content
    }

    /// An upper bound of the length of [`ToolOutput::into_result`]'s JSON text, without writing
    /// the body's Python text: `None` when the body holds a floating-point number or nests too
    /// deep.
    pub fn result_text_bound(&self) -> Option<usize> {
        let body = match &self.body {
            Some(Body::Tree(v)) => Some(tollgate_mcp::text_bounds(v, BODY_DEPTH)?),
            Some(Body::Compact { bounds, .. }) => Some((*bounds)?),
            None => None,
        };
        let mut texts: usize = self.content.iter().map(String::len).sum();
        if self.body_unwritten {
            texts = texts.saturating_add(body.map_or(0, |b| b.spaced));
        }
        // Each text item's envelope at most 64 bytes (a data answer has two), its text escaped
        // at most six bytes per byte; `structuredContent` as an object's compact text.
        let mut bound = texts.saturating_mul(6).saturating_add(2 * 64);
        if let (Some(s), Some(b)) = (&self.body, body)
            && s.is_object()
        {
            bound = bound.saturating_add(b.compact + 64);
        }
        Some(bound)
    }

    fn write_body(&mut self) {
        if std::mem::take(&mut self.body_unwritten)
            && let Some(body) = &self.body
        {
            self.content.push(body.python_text());
        }
    }

    /// The texts, the body's included, without changing `self`.
    fn all_texts(&self) -> std::borrow::Cow<'_, [String]> {
        match (&self.body, self.body_unwritten) {
            (Some(body), true) => {
                let mut all = self.content.clone();
                all.push(body.python_text());
                std::borrow::Cow::Owned(all)
            }
            _ => std::borrow::Cow::Borrowed(&self.content),
        }
    }

    /// The JSON body of a data answer (the last content item), whatever `structured` holds.
    pub fn body(&self) -> Option<Value> {
        let texts = self.all_texts();
        texts
            .last()
            .and_then(|t| serde_json::from_str(t).ok())
            .filter(|_| texts.len() > 1)
    }

    /// Every content item, one per line.
    pub fn text(&self) -> String {
        self.all_texts().join("\n")
    }

    /// [`ToolOutput::to_result`], moving the texts and the body instead of copying them.
    pub fn into_result(mut self) -> Value {
        self.write_body();
        let content: Vec<Value> = self
            .content
            .into_iter()
            .map(|t| {
                Value::Object(serde_json::Map::from_iter([
                    ("type".to_owned(), Value::from("text")),
                    ("text".to_owned(), Value::from(t)),
                ]))
            })
            .collect();
        let mut result = serde_json::Map::from_iter([
            ("content".to_owned(), Value::Array(content)),
            ("isError".to_owned(), Value::Bool(self.is_error)),
        ]);
        if let Some(s) = self.body
            && s.is_object()
        {
            result.insert("structuredContent".to_owned(), s.into_value());
        }
        Value::Object(result)
    }

    /// The MCP `CallToolResult`.
    pub fn to_result(&self) -> Value {
        let content: Vec<Value> = self
            .all_texts()
            .iter()
            .map(|t| serde_json::json!({"type": "text", "text": t}))
            .collect();
        let mut result = serde_json::json!({"content": content, "isError": self.is_error});
        if let Some(s) = &self.body
            && s.is_object()
        {
            result["structuredContent"] = s.value();
        }
        result
    }
}

/// The world's starting state. `Fixture::default()` is the built-in world
/// (crates/mock-eks/fixtures/default.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// RFC 3339 instant the world's logical clock starts at.
    pub base_time: String,
    pub region: String,
    pub account: String,
    #[serde(default)]
    pub clusters: Vec<ClusterFx>,
    #[serde(default)]
    pub stacks: Vec<StackFx>,
    #[serde(default)]
    pub roles: Vec<RoleFx>,
    #[serde(default)]
    pub run_batches: Vec<BatchFx>,
    /// HealthOmics runs; batches without listed runs get generated ones (see [`BatchFx`]).
    #[serde(default)]
    pub runs: Vec<RunFx>,
    /// Files `apply_yaml` can read, by path; `generate_app_manifest` adds to them. The mock
    /// touches no disk.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFx {
    pub name: String,
    pub version: String,
    pub status: String,
    pub vpc_id: String,
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub nodegroups: Vec<NodegroupFx>,
    /// Kubernetes objects as JSON (apiVersion, kind, metadata.name, metadata.namespace...).
    #[serde(default)]
    pub resources: Vec<Value>,
    /// `namespace/pod` → log lines.
    #[serde(default)]
    pub pod_logs: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub events: Vec<EventFx>,
    #[serde(default)]
    pub insights: Vec<Value>,
    /// CloudWatch log type (`application`, `control-plane`, ...) → lines.
    #[serde(default)]
    pub log_groups: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodegroupFx {
    pub name: String,
    pub instance_types: Vec<String>,
    pub desired_size: u32,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFx {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub reason: String,
    pub message: String,
    pub count: u32,
    /// When the event was first and last seen; the fixture's base time when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
    /// The component that reported it (`kubelet`, `deployment-controller`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_component: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackFx {
    pub name: String,
    pub cluster: String,
    pub status: String,
    /// Stack tags. `manage_eks_stacks` deploys, describes and deletes only the stacks tagged
    /// `CreatedBy: EksMcpServer`, as the real server does.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// When the stack was created; the fixture's base time when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
}

impl StackFx {
    /// A stack as a deploy creates it, at `now`.
    pub(crate) fn new(name: String, cluster: String, status: &str, now: String) -> StackFx {
        StackFx {
            name,
            cluster,
            status: status.to_owned(),
            tags: BTreeMap::new(),
            creation_time: Some(now),
            outputs: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFx {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The trust policy; an EC2 trust when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role_policy: Option<Value>,
    #[serde(default)]
    pub managed_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, Value>,
}

/// A HealthOmics run batch. Its runs are the fixture's `runs` that name it, or, when the
/// fixture lists none, `runs` generated ones (`{id}-r001`, ...) in the state matching the
/// batch's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFx {
    pub id: String,
    pub name: String,
    pub status: BatchStatus,
    /// How many runs the batch started.
    pub runs: u32,
}

/// HealthOmics' run-batch states, as its API names them (`INPROGRESS` is a running batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStatus {
    Creating,
    Pending,
    Submitting,
    Inprogress,
    Stopping,
    Cancelled,
    Failed,
    Processed,
    RunsDeleting,
    RunsDeleteFailed,
    RunsDeleted,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Creating => "CREATING",
            BatchStatus::Pending => "PENDING",
            BatchStatus::Submitting => "SUBMITTING",
            BatchStatus::Inprogress => "INPROGRESS",
            BatchStatus::Stopping => "STOPPING",
            BatchStatus::Cancelled => "CANCELLED",
            BatchStatus::Failed => "FAILED",
            BatchStatus::Processed => "PROCESSED",
            BatchStatus::RunsDeleting => "RUNS_DELETING",
            BatchStatus::RunsDeleteFailed => "RUNS_DELETE_FAILED",
            BatchStatus::RunsDeleted => "RUNS_DELETED",
        }
    }

    /// Whether the batch is still starting or running runs (and so can be cancelled).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            BatchStatus::Creating
                | BatchStatus::Pending
                | BatchStatus::Submitting
                | BatchStatus::Inprogress
        )
    }
}

/// A HealthOmics workflow run, possibly part of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFx {
    pub id: String,
    pub name: String,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
}

/// HealthOmics' run states, as its API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Pending,
    Starting,
    Running,
    Stopping,
    Completed,
    Deleted,
    Cancelled,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "PENDING",
            RunStatus::Starting => "STARTING",
            RunStatus::Running => "RUNNING",
            RunStatus::Stopping => "STOPPING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Deleted => "DELETED",
            RunStatus::Cancelled => "CANCELLED",
            RunStatus::Failed => "FAILED",
        }
    }

    /// Every state, in the order of [`RunStatus::as_lower`].
    pub const BY_LOWER_NAME: [RunStatus; 8] = [
        RunStatus::Cancelled,
        RunStatus::Completed,
        RunStatus::Deleted,
        RunStatus::Failed,
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Starting,
        RunStatus::Stopping,
    ];

    /// [`RunStatus::as_str`] in lower case, as a batch's run summary counts it.
    pub fn as_lower(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Starting => "starting",
            RunStatus::Running => "running",
            RunStatus::Stopping => "stopping",
            RunStatus::Completed => "completed",
            RunStatus::Deleted => "deleted",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Failed => "failed",
        }
    }

    /// Whether the run has not finished yet (and so can be cancelled).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Pending | RunStatus::Starting | RunStatus::Running
        )
    }

    /// The state a generated run of a batch in `status` is in.
    fn for_batch(status: BatchStatus) -> RunStatus {
        match status {
            BatchStatus::Creating | BatchStatus::Pending | BatchStatus::Submitting => {
                RunStatus::Pending
            }
            BatchStatus::Inprogress => RunStatus::Running,
            BatchStatus::Stopping | BatchStatus::Cancelled => RunStatus::Cancelled,
            BatchStatus::Failed => RunStatus::Failed,
            BatchStatus::Processed => RunStatus::Completed,
            BatchStatus::RunsDeleting
            | BatchStatus::RunsDeleteFailed
            | BatchStatus::RunsDeleted => RunStatus::Deleted,
        }
    }
}

/// A fixture that cannot be used, with where and what.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("fixture `{path}`, line {line} column {column}, at `{at}`: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        at: String,
        message: String,
    },
}

const DEFAULT_FIXTURE: &str = include_str!("../../fixtures/default.json");

impl Default for Fixture {
    fn default() -> Self {
        // Parsed once per process: servers and tests build many worlds from it.
        static BUILT_IN: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        BUILT_IN.get_or_init(Fixture::parse_built_in).clone()
    }
}

impl Fixture {
    fn parse_built_in() -> Fixture {
        // The built-in fixture is checked by the tests; an empty world is the safe fallback.
        Fixture::parse("<built-in>", DEFAULT_FIXTURE).unwrap_or_else(|_| Fixture {
            base_time: "2026-11-01T00:00:00Z".into(),
            region: "us-east-1".into(),
            account: "000000000000".into(),
            clusters: Vec::new(),
            stacks: Vec::new(),
            roles: Vec::new(),
            run_batches: Vec::new(),
            runs: Vec::new(),
            files: BTreeMap::new(),
        })
    }
}

impl Fixture {
    /// Parses a fixture (JSON); the error names the JSON path, line and column.
    pub fn parse(name: &str, text: &str) -> Result<Fixture, FixtureError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fixture: Fixture = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            let message = message
                .rfind(" at line ")
                .map_or(message.clone(), |i| message[..i].to_owned());
            FixtureError::Invalid {
                path: name.to_owned(),
                line: inner.line(),
                column: inner.column(),
                at,
                message,
            }
        })?;
        fixture.checked(name, text)
    }

    pub fn from_path(path: &Path) -> Result<Fixture, FixtureError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: name.clone(),
            source,
        })?;
        let yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if yaml {
            Fixture::parse_yaml(&name, &text)
        } else {
            Fixture::parse(&name, &text)
        }
    }

    /// Parses a fixture written in YAML (the same fields as the JSON form); the error names the
    /// path, line and column.
    pub fn parse_yaml(name: &str, text: &str) -> Result<Fixture, FixtureError> {
        let de = serde_norway::Deserializer::from_str(text);
        let fixture: Fixture = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = inner.to_string();
            let message = message
                .rfind(" at line ")
                .map_or(message.clone(), |i| message[..i].to_owned());
            FixtureError::Invalid {
                path: name.to_owned(),
                line,
                column,
                at,
                message,
            }
        })?;
        fixture.checked(name, text)
    }

    /// Checks what serde cannot: the base time's format.
    fn checked(self, name: &str, text: &str) -> Result<Fixture, FixtureError> {
        if !is_utc_timestamp(&self.base_time) {
            // The key as JSON writes it, else as YAML does.
            let (line, column) = position_of(text, "\"base_time\"")
                .or_else(|| position_of(text, "base_time"))
                .unwrap_or((1, 1));
            return Err(FixtureError::Invalid {
                path: name.to_owned(),
                line,
                column,
                at: "base_time".into(),
                message: format!(
                    "`{}` is not a UTC time like `2026-11-01T08:00:00Z`",
                    self.base_time
                ),
            });
        }
        Ok(self)
    }
}

/// A fixture shared until first written (copy on write): a world that only reads never copies
/// it, and [`World::restarted`] costs a reference count. It counts the times it was borrowed
/// to be written (every change goes through [`DerefMut`](std::ops::DerefMut)), so what was
/// written from it can be kept until it changes.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    fixture: Arc<Fixture>,
    generation: u64,
}

impl Shared {
    fn new(fixture: &Arc<Fixture>) -> Shared {
        Shared {
            fixture: Arc::clone(fixture),
            generation: 0,
        }
    }

    /// How many times the state was borrowed to be written: equal generations, equal state.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl std::ops::Deref for Shared {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

impl std::ops::DerefMut for Shared {
    fn deref_mut(&mut self) -> &mut Fixture {
        self.generation += 1;
        Arc::make_mut(&mut self.fixture)
    }
}

/// The world: the fixture's state as calls change it.
#[derive(Debug)]
pub struct World {
    pub(crate) state: Shared,
    /// The state this world started from (what [`World::restarted`] starts again from).
    start: Arc<Fixture>,
    /// A logical clock: one tick per call, for timestamps and request ids.
    pub(crate) tick: u64,
    /// Compiled argument schemas by tool name, built on first use and shared with the worlds
    /// [`World::restarted`] makes (a schema compiles in tens of microseconds).
    validators: Arc<Mutex<Validators>>,
    /// The validators this world has used, taken from `validators` once each: a call finds
    /// its tool's here with no lock and no reference count.
    used_validators:
        hashbrown::HashMap<String, Arc<validate::ArgValidator>, foldhash::quality::RandomState>,
    /// The batch index of `start` (shared with the worlds [`World::restarted`] makes).
    start_batch_runs: BatchRuns,
    /// The batch index of the current state: `None` after a run was added or removed, until
    /// the next lookup rebuilds it.
    batch_runs: Option<BatchRuns>,
    /// Bodies' texts after their request ids, by operation and object, written from the
    /// state of generation `tails_generation` (see [`World::cached_tail`]).
    tails: hashbrown::HashMap<(&'static str, usize), compact::Tail, foldhash::fast::RandomState>,
    tails_generation: u64,
    /// Shared arguments found valid for their tools (see [`World::call_shared`]).
    valid_args: tollgate_mcp::RecentCalls,
}

type Validators = HashMap<String, Arc<validate::ArgValidator>, foldhash::quality::RandomState>;

/// Which runs (indices into `state.runs`, in order) belong to each batch: the batch
/// operations look a batch's runs up here instead of comparing every run's batch id (a scan
/// of 400 runs was a tenth of a replay's time). Every change to `state.runs` that adds,
/// removes or reorders runs calls [`World::runs_changed`].
pub(crate) type BatchRuns = Arc<HashMap<String, Vec<usize>, foldhash::quality::RandomState>>;

fn index_batch_runs(runs: &[RunFx]) -> BatchRuns {
    let mut index: HashMap<String, Vec<usize>, _> = HashMap::default();
    for (i, r) in runs.iter().enumerate() {
        if let Some(b) = &r.batch_id {
            match index.get_mut(b) {
                Some(v) => v.push(i),
                None => {
                    index.insert(b.clone(), vec![i]);
                }
            }
        }
    }
    Arc::new(index)
}

impl World {
    pub fn new(fixture: &Fixture) -> World {
        let mut state = fixture.clone();
        for batch in &fixture.run_batches {
            if fixture
                .runs
                .iter()
                .any(|r| r.batch_id.as_deref() == Some(&batch.id))
            {
                continue;
            }
            state.runs.extend((1..=batch.runs).map(|i| RunFx {
                id: format!("{}-r{i:03}", batch.id),
                name: format!("{}-{i:03}", batch.name),
                status: RunStatus::for_batch(batch.status),
                batch_id: Some(batch.id.clone()),
            }));
        }
        // Objects the fixture gives without a creation time were created at the base time.
        for cluster in &mut state.clusters {
            for obj in &mut cluster.resources {
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.entry("creationTimestamp")
                        .or_insert_with(|| Value::String(fixture.base_time.clone()));
                }
            }
        }
        let start = Arc::new(state);
        let start_batch_runs = index_batch_runs(&start.runs);
        World {
            state: Shared::new(&start),
            start,
            tick: 0,
            validators: Arc::default(),
            used_validators: hashbrown::HashMap::default(),
            batch_runs: Some(Arc::clone(&start_batch_runs)),
            tails: hashbrown::HashMap::default(),
            tails_generation: 0,
            valid_args: tollgate_mcp::RecentCalls::default(),
            start_batch_runs,
        }
    }

    /// The world this one started as, afresh: its starting state (shared until written) and
    /// its compiled argument schemas.
    pub fn restarted(&self) -> World {
        World {
            state: Shared::new(&self.start),
            start: Arc::clone(&self.start),
            tick: 0,
            validators: Arc::clone(&self.validators),
            used_validators: hashbrown::HashMap::default(),
            start_batch_runs: Arc::clone(&self.start_batch_runs),
            batch_runs: Some(Arc::clone(&self.start_batch_runs)),
            tails: hashbrown::HashMap::default(),
            tails_generation: 0,
            valid_args: tollgate_mcp::RecentCalls::default(),
        }
    }

    /// The batch index of the current state (rebuilt if a run was added or removed since).
    pub(crate) fn batch_runs(&mut self) -> BatchRuns {
        match &self.batch_runs {
            Some(index) => Arc::clone(index),
            None => {
                let index = index_batch_runs(&self.state.runs);
                self.batch_runs = Some(Arc::clone(&index));
                index
            }
        }
    }

    /// Writes the rest of a body after its request id (`w` has written up to it) with `write`,
    /// or copies what `write` wrote for the same `key` while the state has not changed since: an
    /// agent polling a batch reads it thousands of times, and writing it counts its hundreds of
    /// runs. `write` must write from the state alone (no tick, no timestamp) and close the body.
    pub(crate) fn cached_tail(
        &mut self,
        w: &mut compact::Compact,
        key: (&'static str, usize),
        write: impl FnOnce(&mut World, &mut compact::Compact),
    ) {
        let generation = self.state.generation();
        if self.tails_generation != generation {
            self.tails.clear();
            self.tails_generation = generation;
        }
        if let Some(tail) = self.tails.get(&key) {
            w.append(tail);
            return;
        }
        let mark = w.mark();
        write(self, w);
        // Whatever `write` read, it did not change (a change would make this tail stale).
        debug_assert_eq!(
            self.state.generation(),
            generation,
            "a tail's writer changed the state"
        );
        if self.state.generation() == generation {
            self.tails.insert(key, w.tail_since(mark));
        }
    }

    /// Forgets the kept tails (a test seam: the same calls with and without them).
    #[cfg(test)]
    pub(crate) fn forget_tails(&mut self) {
        self.tails.clear();
    }

    /// Says that runs were added or removed (the batch index is stale).
    pub(crate) fn runs_changed(&mut self) {
        self.batch_runs = None;
    }

    pub fn default_world() -> World {
        World::new(&Fixture::default())
    }

    /// The current state (for tests and the scenario runner's journal).
    pub fn state(&self) -> &Fixture {
        &self.state
    }

    /// Calls one tool. Never panics: arguments that do not fit the tool's schema are an
    /// `is_error` result saying what is wrong where.
    pub fn call(&mut self, tool: &CatalogTool, args: &Value, flags: &Flags) -> ToolOutput {
        self.call_with(tool, args, None, flags)
    }

    /// [`World::call`] of arguments an in-process caller shares: a replayed step's repetitions
    /// share theirs, and arguments found valid for a tool are not validated again while the
    /// next call brings the same ones (the same allocation, which nothing changes).
    pub fn call_shared(
        &mut self,
        tool: &CatalogTool,
        args: &Arc<Value>,
        flags: &Flags,
    ) -> ToolOutput {
        self.call_with(tool, args, Some(args), flags)
    }

    fn call_with(
        &mut self,
        tool: &CatalogTool,
        args: &Value,
        shared: Option<&Arc<Value>>,
        flags: &Flags,
    ) -> ToolOutput {
        self.tick += 1;
        let empty = Value::Object(serde_json::Map::new());
        let args = if args.is_null() { &empty } else { args };
        if tool.is_real() {
            if let Some(message) = validate::pydantic_errors(tool, args) {
                return ToolOutput::error(message);
            }
            let mut out = real::call(self, &tool.name, args, flags);
            // The body as the real server writes it, its models' key order included; no
            // `structuredContent`, as the real server sends none.
            if out.body_unwritten
                && let Some(body) = out.body.take()
            {
                out.body_unwritten = false;
                let text = match body {
                    Body::Tree(v) => pyjson::dumps_ordered(&v, real::key_order(&tool.name)),
                    Body::Compact { text, .. } => pyjson::respace(&text),
                };
                out.content.push(text);
            }
            return out;
        }
        // The name is copied only the first time (this runs on every call).
        let validator =
            self.used_validators
                .entry_ref(tool.name.as_str())
                .or_insert_with(|| {
                    // A poisoned lock only means another thread panicked while compiling; the map
                    // itself is still whole.
                    let mut cache = self
                        .validators
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    Arc::clone(cache.entry(tool.name.clone()).or_insert_with(|| {
                        Arc::new(validate::ArgValidator::new(&tool.input_schema))
                    }))
                });
        if !shared.is_some_and(|a| self.valid_args.contains(&tool.name, a)) {
            if let Some(message) = validator.errors(&tool.name, args) {
                return ToolOutput::error(message);
            }
            if let Some(a) = shared {
                self.valid_args.insert(&tool.name, a);
            }
        }
        if tool.class != tollgate_catalog::RiskClass::Read && !flags.allow_write {
            return ToolOutput::error(format!(
                "Operation {} is not allowed without write access",
                tool.name
            ));
        }
        if !flags.allow_sensitive_data_access && aws::is_sensitive(tool) {
            return ToolOutput::error(format!(
                "Access to {} requires --allow-sensitive-data-access flag",
                tool.name
            ));
        }
        aws::call(self, tool, args)
    }

    /// An RFC 3339 timestamp `tick` seconds after the fixture's base time.
    pub(crate) fn now(&self) -> String {
        timestamp_after(&self.state.base_time, self.tick)
    }

    /// A deterministic request id.
    pub(crate) fn request_id(&self) -> String {
        let mut id = String::with_capacity(13);
        self.push_request_id(&mut id);
        id
    }

    /// Writes [`World::request_id`] to `out`: `mock-{:08}`, from the integer's digits (one is
    /// made per answer).
    pub(crate) fn push_request_id(&self, out: &mut String) {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(self.tick);
        out.push_str("mock-");
        out.push_str(&"00000000"[digits.len().min(8)..]);
        out.push_str(digits);
    }
}

/// Whether `s` is `YYYY-MM-DDTHH:MM:SSZ` with a plausible date and time.
fn is_utc_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        s.get(r.clone())
            .filter(|p| p.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    b.len() == 20
        && (b[4], b[7], b[10], b[13], b[16], b[19]) == (b'-', b'-', b'T', b':', b':', b'Z')
        && digits(0..4).is_some()
        && digits(5..7).is_some_and(|m| (1..=12).contains(&m))
        && digits(8..10).is_some_and(|d| (1..=31).contains(&d))
        && digits(11..13).is_some_and(|h| h < 24)
        && digits(14..16).is_some_and(|m| m < 60)
        && digits(17..19).is_some_and(|s| s < 60)
}

/// The 1-based line and column where `needle` first occurs in `text`.
fn position_of(text: &str, needle: &str) -> Option<(usize, usize)> {
    let at = text.find(needle)?;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    Some((line, column))
}

/// `base` (RFC 3339, `YYYY-MM-DDTHH:MM:SSZ`, checked when the fixture is parsed) moved by
/// `secs` seconds, forwards or backwards, in the proleptic Gregorian calendar. A stamp that
/// does not parse is returned unchanged.
pub(crate) fn timestamp_offset(base: &str, secs: i64) -> String {
    let parse = |r: std::ops::Range<usize>| base.get(r).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
        parse(0..4),
        parse(5..7),
        parse(8..10),
        parse(11..13),
        parse(14..16),
        parse(17..19),
    ) else {
        return base.to_owned();
    };
    let total = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s + secs;
    let (days, rest) = (total.div_euclid(86_400), total.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// Seconds since 1970-01-01T00:00:00Z of a `YYYY-MM-DDTHH:MM:SSZ` stamp.
pub(crate) fn epoch_of(stamp: &str) -> Option<i64> {
    if !is_utc_timestamp(stamp) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| stamp.get(r).and_then(|s| s.parse::<i64>().ok());
    Some(
        days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?) * 86_400
            + n(11..13)? * 3600
            + n(14..16)? * 60
            + n(17..19)?,
    )
}

/// `base` plus `secs` seconds (see [`timestamp_offset`]).
pub(crate) fn timestamp_after(base: &str, secs: u64) -> String {
    timestamp_offset(base, i64::try_from(secs).unwrap_or(i64::MAX / 2))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests;
