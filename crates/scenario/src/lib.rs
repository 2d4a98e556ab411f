//! The scenario runner: replays agent sessions, written as a scenario file, through the
//! gateway's session core and the in-process mock EKS server, in virtual time (nothing sleeps:
//! a day-long scenario runs in milliseconds), checks its expectations, and writes a
//! deterministic transcript for snapshot tests.
//!
//! # Layout
//! - [`format`]: the file format (YAML), its checks and its JSON Schema;
//! - this module: loading, and the discrete-event run: calls, upstream answers (delayed by the
//!   mock's latency faults), the gateway's timeouts, reloads and fault switches, each at its
//!   virtual instant.
//!
//! # Order of events
//! Everything happens at a virtual instant. At one instant, upstream answers due then are
//! delivered first (in the order they were sent), then the gateway's timeouts fire, then the
//! scenario's steps run in their order. An upstream answer with no latency is delivered at the
//! instant of its call, before the next step: a burst at one instant is a burst of complete
//! round trips, as over a fast transport.
//!
//! # Approvals
//! A scenario with `approvers` has operators: a call that requires approval is held (its line
//! says `held`), decided by `approve` and `deny` steps through the gateway's approvals API, or
//! ended by its timeout at exactly its deadline (a session deadline like any other); its
//! outcome is printed when it comes. Without approvers nobody could approve, and such a call
//! is refused at once, as by a gateway without `--admin-tokens`.

pub mod format;
pub mod fuzz;
pub mod recording;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::core::{Direct, DirectAnswer, Gateway, GatewayOptions, Out, SessionCore};
use tollgate_gateway::refusal::DecisionTexts;
use tollgate_mcp::ProtocolVersion;
use tollgate_mcp::protocol::{META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_PROTOCOL_VERSION};
use tollgate_mock_eks::faults::FaultEffect;
use tollgate_mock_eks::world::{Flags, ToolOutput};
use tollgate_mock_eks::{DirectHandled, Handled, MockConfig, MockEks};
use tollgate_policy::{CounterStore, Decision, DecisionKind, Engine, MemoryStore, Policy};

pub use format::Scenario;
use format::{Decide, PolicySource, ReloadExpect, StepExpect, StepKind, Switch};

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
    let spec = scenario.upstream.tools.spec();
    tollgate_catalog::Catalog::embedded()
        .select(&spec)
        .map_err(|e| ScenarioError::Bad {
            path: name.clone(),
            message: format!("upstream.tools `{spec}`: {e}"),
        })?;
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
fn compile(scenario: &Path, source: &PolicySource, inline_name: &str) -> Result<Policy, String> {
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

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub transcript: String,
    /// Expectations that did not hold.
    pub failures: Vec<String>,
    pub calls: u64,
    /// Every call's decision, in the order the calls were made.
    pub decisions: Vec<CallDecision>,
}

/// What one call was decided as (what a live run must agree with).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallDecision {
    pub at_ms: u64,
    /// The request's id, if it has one: a live run's answers are matched to these calls by it
    /// (a held call's outcome comes later than the calls after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<IdText>,
    pub agent: Arc<str>,
    pub tool: Arc<str>,
    pub decision: Arc<str>,
}

/// A request's id as its JSON text (`7`, `"a"`): an integer's is kept as the number, with no
/// text made (a replay gives every call an id, and keeps each call's). Written out, and
/// serialized, as the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdText {
    Number(u64),
    /// Any other id's JSON text.
    Text(Box<str>),
}

impl IdText {
    /// The id whose JSON text is `text`: the number when `text` is an integer's own digits
    /// (`7`, not `07` or `7.0`).
    pub fn from_text(text: &str) -> IdText {
        let digits = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        match digits.then(|| text.parse::<u64>().ok()).flatten() {
            Some(n) => IdText::Number(n),
            None => IdText::Text(text.into()),
        }
    }

    /// The id `v` as [`IdText`] of its JSON text.
    pub fn of(v: &Value) -> IdText {
        match v.as_u64() {
            Some(n) => IdText::Number(n),
            None => IdText::Text(v.to_string().into()),
        }
    }
}

impl std::fmt::Display for IdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdText::Number(n) => f.write_str(itoa::Buffer::new().format(*n)),
            IdText::Text(t) => f.write_str(t),
        }
    }
}

impl serde::Serialize for IdText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a step expands to, at one instant: its repetition's instant, and the step's label and
/// kind, which every repetition shares (a long replay makes one per call, and copies nothing).
#[derive(Debug, Clone, Copy)]
struct Action<'s> {
    at: Duration,
    /// `3` for the third step, `3.2` for the second member of the third step's group.
    label: &'s Arc<str>,
    kind: &'s ActionKind,
}

#[derive(Debug, Clone)]
enum ActionKind {
    /// A step's parts are shared by its repetitions, not copied into each.
    Call {
        agent: Arc<str>,
        tool: Arc<str>,
        args: Arc<Value>,
        expect: Option<Arc<StepExpect>>,
    },
    Raw {
        agent: String,
        tool: String,
        raw: String,
        expect: Option<StepExpect>,
    },
    Batch {
        agent: String,
        items: Vec<(String, Value, Option<StepExpect>)>,
    },
    Reload {
        source: PolicySource,
        expect: Option<ReloadExpect>,
    },
    Faults(Switch),
    /// An `approve` (true) or `deny` (false) step.
    Decide {
        approve: bool,
        decide: Decide,
    },
}

/// The action a call step (or a group's member) repeats, with its timing.
fn call_generator(step: &format::Step, start: Duration, label: &str) -> Generator {
    let agent = step.agent.clone().unwrap_or_default();
    let kind = match step.kind {
        StepKind::Batch => ActionKind::Batch {
            agent,
            items: step
                .batch
                .iter()
                .flatten()
                .map(|i| {
                    (
                        i.call.clone(),
                        i.args.clone().unwrap_or_else(|| json!({})),
                        i.expect.clone(),
                    )
                })
                .collect(),
        },
        StepKind::Raw => ActionKind::Raw {
            agent,
            tool: step.call.clone().unwrap_or_default(),
            raw: step.raw.clone().unwrap_or_default(),
            expect: step.expect.clone(),
        },
        _ => ActionKind::Call {
            agent: Arc::from(agent.as_str()),
            tool: Arc::from(step.call.as_deref().unwrap_or_default()),
            args: Arc::new(step.args.clone().unwrap_or_else(|| json!({}))),
            expect: step.expect.clone().map(Arc::new),
        },
    };
    Generator {
        start,
        every: step.every.unwrap_or(Duration::ZERO),
        repeat: step.repeat.unwrap_or(1),
        label: Arc::from(label),
        kind,
    }
}

/// One step's (or group member's) actions: `repeat` copies of `kind`, `every` apart from
/// `start`. A plain call's copies share its agent, tool, arguments and expectations.
struct Generator {
    start: Duration,
    every: Duration,
    repeat: u32,
    /// `3` for the third step, `3.2` for the second member of the third step's group.
    label: Arc<str>,
    kind: ActionKind,
}

impl Generator {
    /// When its repetition `k` happens.
    fn at(&self, k: u32) -> Duration {
        self.start + self.every * k
    }
}

/// (instant, step, repetition, member, generator) of a generator's next action: the order of
/// the first four is the runner's.
type NextAction = (Duration, usize, u32, usize, usize);

/// A scenario's actions in the order the runner takes them, by (instant, step, repetition,
/// member), made one at a time as the runner reaches them: a merge of the steps' generators,
/// so a step repeated 400,000 times never holds 400,000 actions at once. Every key is
/// distinct (a step's repetitions differ in `k`, a group's members in `member`), so the order
/// is the one a full sort of every action would give.
struct Schedule {
    generators: Vec<Generator>,
    next: BinaryHeap<Reverse<NextAction>>,
    remaining: u64,
}

impl Schedule {
    fn new(scenario: &Scenario) -> Schedule {
        let mut schedule = Schedule {
            generators: Vec::new(),
            next: BinaryHeap::new(),
            remaining: 0,
        };
        let mut cursor = Duration::ZERO;
        for (i, step) in scenario.steps.iter().enumerate() {
            let label = (i + 1).to_string();
            let start = step.at.unwrap_or(cursor);
            let once = |kind| Generator {
                start,
                every: Duration::ZERO,
                repeat: 1,
                label: Arc::from(label.as_str()),
                kind,
            };
            match step.kind {
                StepKind::Advance => {
                    cursor += step.advance.unwrap_or_default();
                }
                StepKind::Reload | StepKind::Faults => {
                    let kind = match (&step.reload, step.faults) {
                        (Some(source), _) => ActionKind::Reload {
                            source: source.clone(),
                            expect: step.expect.as_ref().and_then(|e| e.reload),
                        },
                        (None, Some(s)) => ActionKind::Faults(s),
                        (None, None) => continue,
                    };
                    schedule.add(i, 0, once(kind));
                    cursor = cursor.max(start);
                }
                StepKind::Approve | StepKind::Deny => {
                    let (approve, decide) = match (&step.approve, &step.deny) {
                        (Some(d), _) => (true, d.clone()),
                        (None, Some(d)) => (false, d.clone()),
                        (None, None) => continue,
                    };
                    schedule.add(i, 0, once(ActionKind::Decide { approve, decide }));
                    cursor = cursor.max(start);
                }
                StepKind::Call | StepKind::Raw | StepKind::Batch => {
                    let g = call_generator(step, start, &label);
                    if let Some(last) = g.repeat.checked_sub(1) {
                        cursor = cursor.max(g.at(last));
                    }
                    schedule.add(i, 0, g);
                }
                StepKind::Concurrent => {
                    for (j, member) in step.concurrent.iter().flatten().enumerate() {
                        let offset = member.at.unwrap_or(Duration::ZERO);
                        let label = format!("{}.{}", i + 1, j + 1);
                        let g = call_generator(member, start + offset, &label);
                        if let Some(last) = g.repeat.checked_sub(1) {
                            cursor = cursor.max(g.at(last));
                        }
                        schedule.add(i, j, g);
                    }
                }
            }
        }
        schedule
    }

    fn add(&mut self, step: usize, member: usize, g: Generator) {
        if g.repeat > 0 {
            self.remaining += u64::from(g.repeat);
            self.next
                .push(Reverse((g.at(0), step, 0, member, self.generators.len())));
            self.generators.push(g);
        }
    }

    /// How many actions are still to come.
    fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The instant of the next action.
    fn peek_at(&self) -> Option<Duration> {
        self.next.peek().map(|Reverse((at, ..))| *at)
    }
}

impl Schedule {
    /// The next action, borrowed from its step's generator.
    fn next_action(&mut self) -> Option<Action<'_>> {
        // The generator's next repetition takes its place at the top of the heap (one sift
        // down, where a pop and a push would sift twice).
        let mut top = self.next.peek_mut()?;
        let Reverse((at, step, k, member, g)) = *top;
        let generator = self.generators.get(g)?;
        if k + 1 < generator.repeat {
            *top = Reverse((generator.at(k + 1), step, k + 1, member, g));
        } else {
            std::collections::binary_heap::PeekMut::pop(top);
        }
        self.remaining -= 1;
        Some(Action {
            at,
            label: &generator.label,
            kind: &generator.kind,
        })
    }
}

/// One plain call of a scenario at its instant, for drivers outside the runner (`tollgate demo`).
#[derive(Debug, Clone)]
pub struct TimedCall {
    pub at: Duration,
    pub agent: String,
    pub tool: String,
    pub args: Value,
}

/// A scenario's calls in the order the runner makes them; `Err` names the first step that is
/// not a plain call (a raw message, a batch, a reload, a fault switch, an approval).
pub fn plain_calls(scenario: &Scenario) -> Result<Vec<TimedCall>, String> {
    let mut schedule = Schedule::new(scenario);
    let mut calls = Vec::new();
    while let Some(a) = schedule.next_action() {
        match a.kind {
            ActionKind::Call {
                agent, tool, args, ..
            } => calls.push(TimedCall {
                at: a.at,
                agent: agent.to_string(),
                tool: tool.to_string(),
                args: Value::clone(args),
            }),
            _ => return Err(format!("step {} is not a plain call", a.label)),
        }
    }
    Ok(calls)
}

/// The transcript's entries not yet written, addressed by their index in the whole run (the
/// answer to call 7 finds its entry after entries 0 to 5 have been written and dropped).
#[derive(Debug, Default)]
struct Entries {
    items: VecDeque<Entry>,
    /// The run-wide index of `items[0]`.
    first: usize,
}

impl Entries {
    /// Adds an entry; its run-wide index.
    fn push(&mut self, entry: Entry) -> usize {
        self.items.push_back(entry);
        self.first + self.items.len() - 1
    }

    /// Entry `i` if it is not written yet.
    fn get_mut(&mut self, i: usize) -> Option<&mut Entry> {
        i.checked_sub(self.first)
            .and_then(|k| self.items.get_mut(k))
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.items.pop_front()?;
        self.first += 1;
        Some(entry)
    }

    /// The first entry, if it is complete: a note, or a call with its answer.
    fn pop_ready(&mut self) -> Option<Entry> {
        match self.items.front()? {
            Entry::Call(r) if r.answer.is_none() => None,
            _ => self.pop_front(),
        }
    }
}

/// The transcript written so far, with what its lines counted.
#[derive(Debug, Default)]
struct Written {
    transcript: String,
    /// Calls by decision (the keys are shared by the decisions' records).
    totals: Vec<(Arc<str>, u64)>,
    decisions: Vec<CallDecision>,
    /// Expectations of written calls that did not hold, in transcript order.
    failures: Vec<String>,
}

impl Written {
    /// The transcript's header, with room for the lines of `actions` calls (the transcript of
    /// a long replay is tens of megabytes, and growing it by doubling copies it over and over;
    /// room that is never written is never touched).
    fn start(scenario: &Scenario, actions: u64) -> Written {
        let room = usize::try_from(actions)
            .unwrap_or(usize::MAX)
            .saturating_mul(LINE_ROOM)
            .min(MAX_ROOM);
        let mut transcript = String::with_capacity(256 + room);
        let _ = writeln!(transcript, "scenario: {}", scenario.name);
        if let Some(d) = &scenario.description {
            let _ = writeln!(transcript, "  {}", d.trim());
        }
        transcript.push('\n');
        Written {
            transcript,
            decisions: Vec::with_capacity(usize::try_from(actions).unwrap_or(0).min(1 << 24)),
            ..Written::default()
        }
    }
}

/// Room reserved per call for its transcript lines: a refusal's line and message run to about
/// 300 bytes, an allowed call's to about 150.
const LINE_ROOM: usize = 320;
/// At most this much is reserved up front (1 GiB); beyond it the transcript grows as it must.
const MAX_ROOM: usize = 1 << 30;

/// One line of the transcript.
#[derive(Debug)]
enum Entry {
    Call(CallRecord),
    Note {
        at: Duration,
        text: String,
        more: Vec<String>,
    },
}

#[derive(Debug)]
struct CallRecord {
    at: Duration,
    /// The request's id, if it has one.
    id: Option<IdText>,
    agent: Arc<str>,
    label: Arc<str>,
    tool: Arc<str>,
    in_batch: bool,
    expect: Option<Arc<StepExpect>>,
    /// When the answer came, and what it said (described as it arrives, so the run keeps a
    /// few strings per call instead of the answer's JSON).
    answer: Option<(Duration, Described)>,
    /// Held for approval (this id): the line says `held`, and the outcome is a record of its
    /// own at the instant it comes.
    held: Option<u64>,
    /// How the held call this record answers was decided (`approval 1 approved by alice`).
    approval: Option<String>,
}

impl CallRecord {
    /// The record of a call action `a` makes, not answered yet.
    fn new(
        a: &Action,
        agent: &Arc<str>,
        id: Option<IdText>,
        tool: Arc<str>,
        in_batch: bool,
        expect: Option<Arc<StepExpect>>,
    ) -> CallRecord {
        CallRecord {
            at: a.at,
            id,
            agent: Arc::clone(agent),
            label: Arc::clone(a.label),
            tool,
            in_batch,
            expect,
            answer: None,
            held: None,
            approval: None,
        }
    }
}

/// A delivery due at `at`, the `seq`th scheduled: the run's heap of them pops the earliest,
/// and of those due at the same instant the first scheduled.
#[derive(Debug)]
struct Scheduled {
    at: Duration,
    seq: u64,
    agent: Arc<str>,
    what: Delivery,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so the max-heap `BinaryHeap` pops the earliest.
    fn cmp(&self, other: &Scheduled) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug)]
enum Delivery {
    Bytes(Vec<u8>),
    /// A parsed answer (the value path: no text between the mock and the core).
    Value(Value),
    /// The tool output answering call `id` (the direct path: no message between the mock and
    /// the core, see `Run::call_direct`).
    Direct {
        id: u64,
        output: ToolOutput,
    },
    Crash,
}

/// What an upstream answer is, as the runner passes it on.
enum Reply {
    Value(Value),
    Direct { id: u64, output: ToolOutput },
}

impl Reply {
    fn into_value(self) -> Value {
        match self {
            Reply::Value(v) => v,
            Reply::Direct { id, output } => {
                tollgate_mcp::result_response(&Value::from(id), output.into_result())
            }
        }
    }
}

struct AgentState {
    core: SessionCore,
    session: String,
    grant: String,
    protocol: ProtocolVersion,
    initialize: Option<Value>,
    /// The approvals of this session's held calls seen so far.
    held_seen: BTreeSet<u64>,
}

/// An agent's open calls: id text → the call entry waiting for that answer.
type OpenIds = HashMap<IdText, usize, foldhash::fast::RandomState>;

struct Run {
    gateway: Arc<Gateway>,
    mock: MockEks,
    base: PathBuf,
    /// By name; the names are shared with the deliveries on their way to them.
    agents: BTreeMap<Arc<str>, AgentState>,
    /// Answers on their way, by when they arrive (a heap: a long replay schedules and takes
    /// one per forwarded call, and its storage is kept between them).
    deliveries: std::collections::BinaryHeap<Scheduled>,
    next_seq: u64,
    next_id: u64,
    entries: Entries,
    /// What has been written of the transcript so far, and what it has counted.
    written: Written,
    /// (agent, id text) → the call entry waiting for that answer.
    open: HashMap<String, OpenIds, foldhash::fast::RandomState>,
    /// Agent → its raw message waiting for an answer without a usable id.
    open_raw: HashMap<String, usize>,
    failures: Vec<String>,
    /// Answers from a recording instead of the mock (`tollgate replay --against recorded`).
    recorded: Option<recording::RecordedAnswers>,
    /// Whether plain calls take the direct path (no messages as values between the runner,
    /// the core and the mock, where the core and the mock allow it); off, every call takes
    /// the value path. The transcript is the same either way (the differential tests).
    direct: bool,
    /// The refusal texts of the direct path's decisions.
    texts: DecisionTexts,
}

/// Runs a loaded scenario in virtual time.
pub fn run(loaded: Loaded) -> Outcome {
    run_with_store(loaded, Arc::new(MemoryStore::new()))
}

/// Runs a loaded scenario with a given counter store (a test seam: the fuzzer's tests inject a
/// faulty store to prove that the checks catch it).
pub fn run_with_store(loaded: Loaded, store: Arc<dyn CounterStore>) -> Outcome {
    run_inner(loaded, Setup::new(store)).0
}

/// Runs a loaded scenario with every message built and passed as a value (no direct path):
/// the reference the direct path is checked against.
pub fn run_on_value_path(loaded: Loaded) -> Outcome {
    let setup = Setup {
        direct: false,
        ..Setup::new(Arc::new(MemoryStore::new()))
    };
    run_inner(loaded, setup).0
}

/// Runs a loaded scenario on the direct path (`direct`, as [`run`] does) or the value path (as
/// [`run_on_value_path`] does), with the gateway writing its audit log to `audit`; returns the
/// outcome and the gateway's metrics at the end (Prometheus text). A test seam: what the two
/// paths leave behind besides the transcript is compared with it.
pub fn run_observed(
    loaded: Loaded,
    direct: bool,
    audit: &Path,
) -> Result<(Outcome, String), String> {
    let log = tollgate_gateway::audit::AuditLog::open(audit, false).map_err(|e| e.to_string())?;
    let setup = Setup {
        direct,
        audit: Some(log),
        ..Setup::new(Arc::new(MemoryStore::new()))
    };
    Ok(run_inner(loaded, setup))
}

/// How a run is set up besides its scenario.
struct Setup {
    store: Arc<dyn CounterStore>,
    /// Answers from a recording instead of the mock.
    recorded: Option<recording::RecordedAnswers>,
    /// See `Run::direct`.
    direct: bool,
    audit: Option<tollgate_gateway::audit::AuditLog>,
}

impl Setup {
    fn new(store: Arc<dyn CounterStore>) -> Setup {
        Setup {
            store,
            recorded: None,
            direct: true,
            audit: None,
        }
    }
}

/// Runs a scenario made from a recording; with `answers`, the upstream's answers come from the
/// recording instead of the mock.
pub fn run_replay(loaded: Loaded, answers: Option<recording::RecordedAnswers>) -> Outcome {
    let setup = Setup {
        recorded: answers,
        ..Setup::new(Arc::new(MemoryStore::new()))
    };
    run_inner(loaded, setup).0
}

/// The run, and the gateway's metrics at its end.
fn run_inner(loaded: Loaded, setup: Setup) -> (Outcome, String) {
    let Setup {
        store,
        recorded,
        direct,
        audit,
    } = setup;
    let Loaded {
        path,
        scenario,
        policy,
    } = loaded;
    let engine = Engine::new(Arc::new(policy), store);
    let options = GatewayOptions {
        call_timeout: scenario
            .gateway
            .timeout
            .unwrap_or(GatewayOptions::default().call_timeout),
        tool_timeouts: scenario
            .gateway
            .tool_timeouts
            .iter()
            .map(|(k, v)| (k.clone(), v.0))
            .collect(),
        approvals: !scenario.approvers.is_empty(),
        max_held_per_grant: scenario
            .gateway
            .max_held_per_grant
            .map_or(GatewayOptions::default().max_held_per_grant, |n| n.get()),
        limits: tollgate_mcp::strict::Limits {
            max_bytes: scenario
                .gateway
                .max_message_bytes
                .map_or(GatewayOptions::default().limits.max_bytes, |n| n.get()),
        },
        ..GatewayOptions::default()
    };
    let gateway = Gateway::new(engine, audit, options);
    let mut mock = match MockEks::new(MockConfig {
        tools: scenario.upstream.tools.spec(),
        page_size: scenario.upstream.page_size,
        flags: Flags {
            allow_write: scenario.upstream.allow_write,
            allow_sensitive_data_access: scenario.upstream.allow_sensitive_data_access,
        },
        faults: scenario.upstream.faults.clone().unwrap_or_default(),
        ..MockConfig::default()
    }) {
        Ok(m) => m,
        Err(e) => {
            let outcome = Outcome {
                transcript: String::new(),
                failures: vec![format!("upstream.tools: {e}")],
                calls: 0,
                decisions: Vec::new(),
            };
            return (outcome, String::new());
        }
    };
    let mut actions = Schedule::new(&scenario);
    // The run reads only how many calls reached each tool.
    mock.keep_only_counts();
    let mut run = Run {
        gateway,
        mock,
        base: path,
        agents: BTreeMap::new(),
        deliveries: std::collections::BinaryHeap::new(),
        next_seq: 0,
        next_id: 0,
        entries: Entries::default(),
        written: Written::start(&scenario, actions.remaining()),
        open: HashMap::default(),
        open_raw: HashMap::new(),
        failures: Vec::new(),
        recorded,
        direct,
        texts: DecisionTexts::new(),
    };
    // Bounded: every loop turn consumes an action, a delivery or a deadline, and each action
    // causes a bounded number of the others.
    let budget = (actions.remaining() + 16).saturating_mul(64);
    for _ in 0..budget {
        let delivery = run.deliveries.peek().map(|d| d.at);
        let deadline = run
            .agents
            .values()
            .filter_map(|a| a.core.next_deadline())
            .filter(|d| *d != Duration::MAX)
            .min();
        let action = actions.peek_at();
        let Some(now) = [delivery, deadline, action].into_iter().flatten().min() else {
            break;
        };
        if delivery == Some(now) {
            run.deliver(now);
        } else if deadline == Some(now) {
            run.tick(now);
        } else if let Some(a) = actions.next_action() {
            run.act(&scenario, &a);
        }
        run.write_ready();
    }
    let gateway = Arc::clone(&run.gateway);
    // The sessions end with the run (their cores write their last records).
    let outcome = run.finish(&scenario);
    gateway.flush_audit();
    (outcome, gateway.metrics.encode())
}

impl Run {
    fn schedule(&mut self, agent: &str, at: Duration, what: Delivery) {
        self.next_seq += 1;
        let agent = match self.agents.get_key_value(agent) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(agent),
        };
        self.deliveries.push(Scheduled {
            at,
            seq: self.next_seq,
            agent,
            what,
        });
    }

    fn deliver(&mut self, now: Duration) {
        let Some(Scheduled { agent, what, .. }) = self.deliveries.pop() else {
            return;
        };
        let Some(state) = self.agents.get_mut(&agent) else {
            return;
        };
        let outs = match what {
            Delivery::Bytes(bytes) => state.core.from_upstream(&bytes, now),
            Delivery::Value(v) => state.core.from_upstream_value(v, now),
            Delivery::Direct { id, output } => {
                self.answer_direct(&agent, id, output, None, now);
                return;
            }
            Delivery::Crash => {
                let outs = state
                    .core
                    .upstream_closed(now, "the upstream process exited");
                // The gateway restarts a crashed child upstream and initializes it again with
                // the client's own `initialize`; in virtual time the restart is immediate.
                self.mock.end_session(&state.session);
                if let Some(init) = &state.initialize {
                    let mut again = init.clone();
                    again["id"] = json!("tollgate-reinit");
                    let _ = self
                        .mock
                        .handle(&state.session, again.to_string().as_bytes(), now);
                    let _ = self.mock.handle(
                        &state.session,
                        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                        now,
                    );
                }
                self.entries.push(Entry::Note {
                    at: now,
                    text: format!(
                        "upstream of session {} crashed; the gateway restarts it",
                        state.session
                    ),
                    more: Vec::new(),
                });
                outs
            }
        };
        self.route(&agent, outs, now);
    }

    fn tick(&mut self, now: Duration) {
        let due: Vec<Arc<str>> = self
            .agents
            .iter()
            .filter(|(_, a)| a.core.next_deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for agent in due {
            if let Some(state) = self.agents.get_mut(&*agent) {
                let outs = state.core.tick(now);
                self.route(&agent, outs, now);
            }
        }
    }

    /// Sends what the core produced: to the mock (whose answer is scheduled after its
    /// latency) or to the agent.
    fn route(&mut self, agent: &str, outs: Vec<Out>, now: Duration) {
        self.mark_held(agent, now);
        let mut queue: VecDeque<Out> = outs.into();
        while let Some(out) = queue.pop_front() {
            match out {
                Out::Client(v) => self.answer(agent, v, now),
                Out::Upstream(v) => {
                    let Some(session) = self.agents.get(agent).map(|a| a.session.clone()) else {
                        continue;
                    };
                    if let Some(answers) = self.recorded.as_mut() {
                        let replies: Vec<Value> = match &v {
                            Value::Array(items) => items
                                .iter()
                                .filter_map(|m| answers.answer(&session, m))
                                .collect(),
                            m => answers.answer(&session, m).into_iter().collect(),
                        };
                        let reply = match (&v, replies.len()) {
                            (_, 0) => None,
                            (Value::Array(_), _) => Some(Value::Array(replies)),
                            (_, _) => replies.into_iter().next(),
                        };
                        if let Some(r) = reply {
                            self.schedule(agent, now, Delivery::Value(r));
                        }
                        continue;
                    }
                    // Values, not text, between the core and the mock: each hop skips the
                    // text exactly when it would parse back to the same value.
                    let Handled {
                        response,
                        latency,
                        effect,
                    } = self.mock.handle_value(&session, v, now);
                    self.upstream_answer(agent, response.map(Reply::Value), latency, effect, now);
                }
            }
        }
    }

    fn upstream_answer(
        &mut self,
        agent: &str,
        response: Option<Reply>,
        latency: Duration,
        effect: Option<FaultEffect>,
        now: Duration,
    ) {
        let at = now.saturating_add(latency);
        match effect {
            None => match response {
                Some(Reply::Value(r)) => self.schedule(agent, at, Delivery::Value(r)),
                Some(Reply::Direct { id, output }) => {
                    self.schedule(agent, at, Delivery::Direct { id, output });
                }
                None => {}
            },
            Some(FaultEffect::Malformed) => {
                self.schedule(
                    agent,
                    at,
                    Delivery::Bytes(b"this is not JSON {\"jsonrpc\": 2.0".to_vec()),
                );
            }
            Some(FaultEffect::Hang) => {}
            Some(FaultEffect::Crash) => self.schedule(agent, at, Delivery::Crash),
            Some(FaultEffect::Trickle { bytes_per_second }) => {
                if let Some(r) = response {
                    let bytes = r.into_value().to_string().into_bytes();
                    let slow = Duration::from_secs_f64(
                        bytes.len() as f64 / bytes_per_second.max(1) as f64,
                    );
                    self.schedule(agent, at.saturating_add(slow), Delivery::Bytes(bytes));
                }
            }
        }
    }

    fn answer(&mut self, agent: &str, v: Value, now: Duration) {
        if let Value::Array(items) = v {
            for item in items {
                self.answer(agent, item, now);
            }
            return;
        }
        let is_response = v.get("result").is_some() || v.get("error").is_some();
        if !is_response {
            return;
        }
        let id = v.get("id").filter(|id| !id.is_null()).map(IdText::of);
        self.answer_with(agent, id, now, || describe(&v));
    }

    /// Gives the answer to request `id` (its JSON text; `None` when it has none) to the call
    /// waiting for it; `described` says what it was.
    fn answer_with(
        &mut self,
        agent: &str,
        id: Option<IdText>,
        now: Duration,
        described: impl FnOnce() -> Described,
    ) {
        let has_id = id.is_some();
        let index = id.and_then(|id| self.open.get_mut(agent)?.remove(&id));
        let index = match index {
            Some(i) => {
                if self.open_raw.get(agent) == Some(&i) {
                    self.open_raw.remove(agent);
                }
                Some(i)
            }
            None if !has_id => self.open_raw.remove(agent),
            None => None,
        };
        if let Some(i) = index {
            self.answer_entry(i, now, described);
        }
    }

    /// Gives call entry `i` its answer (see [`Run::answer_with`]).
    fn answer_entry(&mut self, i: usize, now: Duration, described: impl FnOnce() -> Described) {
        let Some(Entry::Call(record)) = self.entries.get_mut(i) else {
            return;
        };
        if record.answer.is_some() {
            return;
        }
        let Some(approval) = record.held else {
            record.answer = Some((now, described()));
            return;
        };
        // A held call's outcome: a line of its own, at the instant it comes.
        record.answer = Some((now, Described::default()));
        let outcome = CallRecord {
            at: now,
            id: record.id.clone(),
            agent: record.agent.clone(),
            label: Arc::clone(&record.label),
            tool: record.tool.clone(),
            in_batch: record.in_batch,
            expect: record.expect.take(),
            answer: Some((now, described())),
            held: None,
            approval: Some(self.verdict(approval, now)),
        };
        self.entries.push(Entry::Call(outcome));
    }

    /// How approval `id` was decided, for the outcome's line.
    fn verdict(&self, id: u64, now: Duration) -> String {
        let decided = self
            .gateway
            .list_approvals(now)
            .1
            .into_iter()
            .find(|d| d.approval.id == id);
        let Some(d) = decided else {
            return format!("approval {id}");
        };
        let Some(who) = d.verdict.approver.as_deref() else {
            let then = match d.approval.on_timeout {
                tollgate_policy::TimeoutOutcome::Allow => "allow",
                tollgate_policy::TimeoutOutcome::Deny => "deny",
            };
            return format!(
                "approval {id} {}, on timeout: {then}",
                d.verdict.verdict.name()
            );
        };
        let why = d
            .verdict
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        format!("approval {id} {} by {who}{why}", d.verdict.verdict.name())
    }

    /// An `approve` or `deny` step: finds the held call and decides it through the gateway's
    /// approvals API, then lets the session holding it act at once.
    fn decide(&mut self, a: &Action, approve: bool, d: &Decide) {
        let now = a.at;
        let (pending, _) = self.gateway.list_approvals(now);
        let found = pending.iter().find(|p| match (&d.tool, d.held) {
            (Some(tool), _) => &p.tool == tool,
            (None, Some(n)) => p.id == n,
            (None, None) => false,
        });
        let what = d.tool.as_ref().map_or_else(
            || format!("held call {}", d.held.unwrap_or(0)),
            |t| format!("`{t}`"),
        );
        let verb = if approve { "approve" } else { "deny" };
        let Some(p) = found else {
            self.entries.push(Entry::Note {
                at: now,
                text: format!("{verb} {what} by {}: nothing pending matches", d.by),
                more: Vec::new(),
            });
            self.failures.push(format!(
                "step {} at {:.3}s: no pending approval matches {what}",
                a.label,
                now.as_secs_f64()
            ));
            return;
        };
        let (id, session, tool) = (p.id, p.session.clone(), p.tool.clone());
        let result = if approve {
            self.gateway.approve(id, &d.by, d.reason.as_deref(), now)
        } else {
            self.gateway.deny(id, &d.by, d.reason.as_deref(), now)
        };
        let why = d
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let text = match result {
            Ok(_) => format!("{verb} approval {id} ({tool}) by {}{why}", d.by),
            Err(err) => {
                self.failures.push(format!("step {}: {err}", a.label));
                format!("{verb} approval {id} by {}: {err}", d.by)
            }
        };
        self.entries.push(Entry::Note {
            at: now,
            text,
            more: Vec::new(),
        });
        let agent = self
            .agents
            .iter()
            .find(|(_, s)| s.session == session)
            .map(|(k, _)| k.clone());
        if let Some(agent) = agent
            && let Some(state) = self.agents.get_mut(&agent)
        {
            let outs = state.core.tick(now);
            self.route(&agent, outs, now);
        }
    }

    /// The agent's session, opened (initialized through the gateway) on first use.
    fn ensure_agent(&mut self, scenario: &Scenario, agent: &str, now: Duration) {
        if self.agents.contains_key(agent) {
            return;
        }
        let Some(spec) = scenario.agents.get(agent) else {
            return;
        };
        let session = spec.session.clone().unwrap_or_else(|| agent.to_owned());
        let protocol = spec.protocol.unwrap_or(ProtocolVersion::V2025_11_25);
        let core = self
            .gateway
            .session(&spec.grant, &session_identity(scenario, agent));
        let initialize = initialize_request(agent, protocol);
        self.agents.insert(
            Arc::from(agent),
            AgentState {
                core,
                session,
                grant: spec.grant.clone(),
                protocol,
                initialize: initialize.clone(),
                held_seen: BTreeSet::new(),
            },
        );
        if let Some(init) = initialize {
            self.send_value(agent, init, now);
            self.send(
                agent,
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                now,
            );
        }
    }

    fn send(&mut self, agent: &str, bytes: &[u8], now: Duration) {
        let Some(state) = self.agents.get_mut(agent) else {
            return;
        };
        let outs = state.core.from_client(bytes, now);
        self.route(agent, outs, now);
    }

    /// Sends a message the runner built (the value path: the core skips the text exactly
    /// when it would parse back to the same value, so the transcript is the same).
    fn send_value(&mut self, agent: &str, msg: Value, now: Duration) {
        let Some(state) = self.agents.get_mut(agent) else {
            return;
        };
        let outs = state.core.from_client_value(msg, now);
        self.route(agent, outs, now);
    }

    /// Marks the calls the agent's core has held for approval since it last looked (found by
    /// their request ids in the gateway's pending list). A call may be held when its message
    /// arrives or later (after the upstream's tool list, for a session's first call).
    fn mark_held(&mut self, agent: &str, now: Duration) {
        let Some(state) = self.agents.get_mut(agent) else {
            return;
        };
        let new: Vec<u64> = state
            .core
            .held_approvals()
            .into_iter()
            .filter(|a| !state.held_seen.contains(a))
            .collect();
        if new.is_empty() {
            return;
        }
        state.held_seen.extend(new.iter().copied());
        let (pending, _) = self.gateway.list_approvals(now);
        for p in pending.iter().filter(|p| new.contains(&p.id)) {
            let id = IdText::of(&p.request_id);
            let index = self
                .open
                .get(agent)
                .and_then(|ids| ids.get(&id))
                .copied()
                .or_else(|| self.open_raw.get(agent).copied());
            if let Some(Entry::Call(record)) = index.and_then(|i| self.entries.get_mut(i)) {
                record.held = Some(p.id);
            }
        }
    }

    /// A `tools/call` request with the next id (and the stateless envelope when the agent
    /// speaks 2026-07-28).
    fn request(&mut self, agent: &str, tool: &str, args: &Value) -> Value {
        self.next_id += 1;
        let protocol = self
            .agents
            .get(agent)
            .map_or(ProtocolVersion::V2025_11_25, |a| a.protocol);
        call_request(self.next_id, agent, protocol, tool, args)
    }

    /// A call's transcript entry, waiting for the answer to request `id` (if it has one);
    /// returns the entry's index.
    fn open_call(
        &mut self,
        a: &Action,
        (agent, id): (&Arc<str>, Option<IdText>),
        tool: Arc<str>,
        in_batch: bool,
        expect: Option<Arc<StepExpect>>,
    ) -> usize {
        let key = id.clone();
        let record = CallRecord::new(a, agent, id, tool, in_batch, expect);
        let i = self.entries.push(Entry::Call(record));
        if let Some(key) = key {
            self.await_answer(agent, key, i);
        }
        i
    }

    /// Says that call entry `i` of `agent` waits for the answer to request `id`.
    fn await_answer(&mut self, agent: &str, id: IdText, i: usize) {
        let ids = match self.open.get_mut(agent) {
            Some(ids) => ids,
            None => self.open.entry(agent.to_owned()).or_default(),
        };
        ids.insert(id, i);
    }

    /// A call's transcript entry with its answer already there (a refusal on the direct path:
    /// nothing waits for it).
    fn answered_call(
        &mut self,
        a: &Action,
        (agent, id): (&Arc<str>, IdText),
        tool: Arc<str>,
        expect: Option<Arc<StepExpect>>,
        answer: Described,
    ) {
        let mut record = CallRecord::new(a, agent, Some(id), tool, false, expect);
        record.answer = Some((a.at, answer));
        self.entries.push(Entry::Call(record));
    }

    fn act(&mut self, scenario: &Scenario, a: &Action) {
        let now = a.at;
        match &a.kind {
            ActionKind::Call {
                agent,
                tool,
                args,
                expect,
            } => {
                self.ensure_agent(scenario, agent, now);
                if self.direct
                    && self.recorded.is_none()
                    && self.call_direct(a, agent, tool, args, expect)
                {
                    return;
                }
                let msg = self.request(agent, tool, args);
                let id = IdText::of(&msg["id"]);
                self.open_call(
                    a,
                    (agent, Some(id)),
                    Arc::clone(tool),
                    false,
                    expect.clone(),
                );
                self.send_value(agent, msg, now);
            }
            ActionKind::Raw {
                agent,
                tool,
                raw,
                expect,
            } => {
                self.ensure_agent(scenario, agent, now);
                // The raw bytes may not parse: a lenient reading finds the id if there is one;
                // an answer without an id goes to this call.
                let id = raw_message_id(raw).map(|id| IdText::of(&id));
                let (who, what) = (Arc::from(agent.as_str()), Arc::from(tool.as_str()));
                let i = self.open_call(a, (&who, id), what, false, expect.clone().map(Arc::new));
                self.open_raw.insert(agent.clone(), i);
                self.send(agent, raw.as_bytes(), now);
            }
            ActionKind::Batch { agent, items } => {
                self.ensure_agent(scenario, agent, now);
                let who: Arc<str> = Arc::from(agent.as_str());
                let mut batch = Vec::new();
                for (tool, args, expect) in items {
                    let msg = self.request(agent, tool, args);
                    let id = IdText::of(&msg["id"]);
                    self.open_call(
                        a,
                        (&who, Some(id)),
                        Arc::from(tool.as_str()),
                        true,
                        expect.clone().map(Arc::new),
                    );
                    batch.push(msg);
                }
                self.send_value(agent, Value::Array(batch), now);
            }
            ActionKind::Reload { source, expect } => self.reload(a, source, *expect),
            ActionKind::Decide { approve, decide } => self.decide(a, *approve, decide),
            ActionKind::Faults(switch) => {
                let on = *switch == Switch::On;
                self.mock.set_faults_enabled(on);
                self.entries.push(Entry::Note {
                    at: now,
                    text: format!("upstream faults {}", if on { "on" } else { "off" }),
                    more: Vec::new(),
                });
            }
        }
    }

    /// A plain call on the direct path: the core decides it from its parts
    /// ([`SessionCore::call_direct`]), the mock runs an admitted one from its parts too
    /// ([`MockEks::call_direct`]), and the transcript is written from the decision or the tool's
    /// output, without a message built, walked and dropped at each hop. Returns false, having
    /// done nothing, when the core declines (the caller then takes the value path).
    fn call_direct(
        &mut self,
        a: &Action,
        agent: &Arc<str>,
        tool: &Arc<str>,
        args: &Arc<Value>,
        expect: &Option<Arc<StepExpect>>,
    ) -> bool {
        let now = a.at;
        let Some(state) = self.agents.get_mut(&**agent) else {
            return false;
        };
        if state.protocol.is_stateless() {
            return false;
        }
        let (id, protocol) = (self.next_id + 1, state.protocol);
        let message = || call_request(id, agent, protocol, tool, args);
        let direct = state.core.call_direct(id, tool, args, message, now);
        if matches!(direct, Direct::Declined) {
            return false;
        }
        self.next_id = id;
        let id_text = IdText::Number(id);
        if let Direct::Refused(decision) = &direct {
            // Answered at once: the entry is written with its answer, and nothing waits.
            let described = describe_decision(&mut self.texts, tool, decision);
            let what = (agent, id_text);
            self.answered_call(a, what, Arc::clone(tool), expect.clone(), described);
            return true;
        }
        let Direct::Forward(arguments) = direct else {
            let what = (agent, Some(id_text));
            self.open_call(a, what, Arc::clone(tool), false, expect.clone());
            if let Direct::Outs(outs) = direct {
                self.route(agent, outs, now);
            }
            return true;
        };
        let session = self.agents.get(&**agent).map_or("", |s| s.session.as_str());
        let handled = self.mock.call_direct(session, id, tool, &arguments, now);
        // An answer with no latency and no fault, when no other answer is due by now, is the
        // next thing the run would deliver (deliveries come before actions and deadlines at
        // the same instant): it is given at once, with no trip through the heap, and the call
        // waits under its id only if the answer has to take the value path.
        let at_once = self.deliveries.peek().is_none_or(|d| d.at > now);
        let what = (agent, Some(id_text));
        match handled {
            Some(DirectHandled {
                answer: Ok(output),
                latency,
                effect: None,
            }) if at_once && latency.is_zero() => {
                let (agent, id_text) = what;
                let record =
                    CallRecord::new(a, agent, id_text, Arc::clone(tool), false, expect.clone());
                let i = self.entries.push(Entry::Call(record));
                self.answer_direct(agent, id, output, Some(i), now);
            }
            Some(DirectHandled {
                answer,
                latency,
                effect,
            }) => {
                self.open_call(a, what, Arc::clone(tool), false, expect.clone());
                let reply = match answer {
                    Ok(output) => Reply::Direct { id, output },
                    Err(response) => Reply::Value(response),
                };
                self.upstream_answer(agent, Some(reply), latency, effect, now);
            }
            None => {
                self.open_call(a, what, Arc::clone(tool), false, expect.clone());
                let forwarded = call_request(id, agent, protocol, tool, &arguments);
                self.route(agent, vec![Out::Upstream(forwarded)], now);
            }
        }
        true
    }

    /// The mock's output answering call `id` of `agent` (a [`Delivery::Direct`]), given to
    /// the core. `entry` is the call's entry when it does not wait under its id (an answer
    /// given at once); it is made to wait there only if the answer takes the value path.
    fn answer_direct(
        &mut self,
        agent: &Arc<str>,
        id: u64,
        output: ToolOutput,
        entry: Option<usize>,
        now: Duration,
    ) {
        let max_bytes = self.gateway.options().limits.max_bytes;
        let Some(state) = self.agents.get_mut(&**agent) else {
            return;
        };
        // The value path drops an answer whose text might pass the size limit.
        let fits = output_bound(&output).is_some_and(|b| b <= max_bytes);
        let taken = if fits {
            state.core.answer_direct(id, output.is_error, now)
        } else {
            DirectAnswer::Declined
        };
        match (taken, entry) {
            (DirectAnswer::Client, Some(i)) => {
                self.answer_entry(i, now, || describe_output(id, output));
            }
            (DirectAnswer::Client, None) => {
                let described = || describe_output(id, output);
                self.answer_with(agent, Some(IdText::Number(id)), now, described);
            }
            (DirectAnswer::Dropped, _) => {}
            (DirectAnswer::Declined, _) => {
                if let Some(i) = entry {
                    // The value path finds the call by its id.
                    self.await_answer(agent, IdText::Number(id), i);
                }
                let v = Reply::Direct { id, output }.into_value();
                let Some(state) = self.agents.get_mut(&**agent) else {
                    return;
                };
                let outs = state.core.from_upstream_value(v, now);
                self.route(agent, outs, now);
            }
        }
    }

    fn reload(&mut self, a: &Action, source: &PolicySource, expect: Option<ReloadExpect>) {
        let now = a.at;
        let what = match source {
            PolicySource::Path(p) => format!("reload {p}"),
            PolicySource::Inline(_) => "reload (inline policy)".to_owned(),
        };
        let inline_name = format!("step {} (inline policy)", a.label);
        let (got, text, more) = match compile(&self.base, source, &inline_name) {
            Ok(policy) => {
                match self
                    .gateway
                    .reload(policy, now, json!({"source": what, "step": a.label}))
                {
                    Ok(()) => (ReloadExpect::Applied, format!("{what} -> applied"), vec![]),
                    Err(e) => (
                        ReloadExpect::Refused,
                        format!("{what} -> refused (audit: {e})"),
                        vec![],
                    ),
                }
            }
            Err(diagnostics) => {
                let _ = self
                    .gateway
                    .reload_refused(now, json!({"source": what, "step": a.label}));
                (
                    ReloadExpect::Refused,
                    format!(
                        "{what} -> refused: the policy is not valid; the old policy keeps running"
                    ),
                    diagnostics
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
        };
        if let Some(want) = expect
            && want != got
        {
            self.failures.push(format!(
                "step {} at {:.3}s: the reload was {}, expected {}",
                a.label,
                now.as_secs_f64(),
                reload_word(got),
                reload_word(want)
            ));
        }
        self.entries.push(Entry::Note {
            at: now,
            text,
            more,
        });
    }

    /// Writes the transcript's lines of the entries at the front that are complete (a note,
    /// or a call with its answer): the transcript is written as the run goes, and a long
    /// replay keeps only the calls still waiting for an answer, not one record per call.
    fn write_ready(&mut self) {
        while let Some(entry) = self.entries.pop_ready() {
            self.write(entry);
        }
    }

    /// The transcript's line(s) for one entry; counts its decision and checks its expectations.
    fn write(&mut self, entry: Entry) {
        let w = &mut self.written;
        let mut record = match entry {
            Entry::Note { at, text, more } => {
                push_instant(&mut w.transcript, at);
                let _ = writeln!(w.transcript, " {text}");
                for m in more {
                    let _ = writeln!(w.transcript, "    {m}");
                }
                return;
            }
            Entry::Call(r) => r,
        };
        let (grant, session) = self
            .agents
            .get(&*record.agent)
            .map(|s| (s.grant.as_str(), s.session.as_str()))
            .unwrap_or_default();
        if let Some(approval) = record.held {
            // Held for a human: the outcome is its own line when it comes.
            push_instant(&mut w.transcript, record.at);
            let _ = writeln!(
                w.transcript,
                " grant={grant} session={session} {}{} -> held (approval {approval})",
                if record.in_batch { "[batch] " } else { "" },
                record.tool,
            );
            if record.answer.is_none() {
                w.failures.push(format!(
                    "step {}: `{}` (approval {approval}) was never answered",
                    record.label, record.tool
                ));
            }
            return;
        }
        let answered = record.answer.as_ref().map(|(when, _)| *when);
        let (decision, mut detail, message) = match record.answer.take() {
            Some((_, d)) => d,
            None => (
                Cow::Borrowed("unanswered"),
                "no answer when the run ended".to_owned(),
                None,
            ),
        };
        if let Some(when) = answered
            && when > record.at
        {
            let after = format!("answered after {}", seconds(when.saturating_sub(record.at)));
            detail = if detail.is_empty() {
                after
            } else {
                format!("{detail}, {after}")
            };
        }
        if let Some(a) = &record.approval {
            detail = if detail.is_empty() {
                a.clone()
            } else {
                format!("{a}; {detail}")
            };
        }
        // The decision's name is kept once, in the totals, and shared by every call's record.
        // A run has a handful of decision kinds: a list, found by one short scan.
        let decision: Arc<str> = match w.totals.iter_mut().find(|(k, _)| **k == *decision) {
            Some((k, n)) => {
                *n += 1;
                Arc::clone(k)
            }
            None => {
                let k: Arc<str> = Arc::from(&*decision);
                w.totals.push((Arc::clone(&k), 1));
                k
            }
        };
        // Written piece by piece: a long replay writes this line for every call.
        let t = &mut w.transcript;
        push_instant(t, record.at);
        for piece in [
            " grant=",
            grant,
            " session=",
            session,
            " ",
            if record.in_batch { "[batch] " } else { "" },
            &record.tool,
            " -> ",
            &decision,
        ] {
            t.push_str(piece);
        }
        if !detail.is_empty() {
            t.push_str(" (");
            t.push_str(&detail);
            t.push(')');
        }
        t.push('\n');
        if let Some(m) = &message {
            t.push_str("    ");
            t.push_str(m);
            t.push('\n');
        }
        if let Some(x) = &record.expect {
            if let Some(want) = &x.decision
                && want.as_str() != &*decision
            {
                w.failures.push(format!(
                    "step {} at {:.3}s: `{}` was {decision}, expected {want}",
                    record.label,
                    record.at.as_secs_f64(),
                    record.tool
                ));
            }
            if let Some(want) = &x.message_contains
                && !message
                    .as_deref()
                    .unwrap_or_default()
                    .contains(want.as_str())
            {
                w.failures.push(format!(
                    "step {} at {:.3}s: the message of `{}` does not contain {want:?}",
                    record.label,
                    record.at.as_secs_f64(),
                    record.tool
                ));
            }
        }
        w.decisions.push(CallDecision {
            at_ms: u64::try_from(record.at.as_millis()).unwrap_or(u64::MAX),
            id: record.id,
            agent: record.agent,
            tool: record.tool,
            decision,
        });
    }

    fn finish(mut self, scenario: &Scenario) -> Outcome {
        // What is still waiting (a call never answered, and everything after it) is written
        // as it stands.
        while let Some(entry) = self.entries.pop_front() {
            self.write(entry);
        }
        let Written {
            mut transcript,
            totals: counted,
            decisions,
            failures: per_call,
        } = std::mem::take(&mut self.written);
        let totals: BTreeMap<Arc<str>, u64> = counted.into_iter().collect();
        // The run's own failures first, then each call's in the order of the transcript.
        self.failures.extend(per_call);
        let journal = self.mock.calls_by_tool();
        transcript.push_str("\ntotals:\n");
        for (k, v) in &totals {
            let _ = writeln!(transcript, "  {k:<18} {v}");
        }
        transcript.push_str("journal (calls that reached the upstream):\n");
        if journal.is_empty() {
            transcript.push_str("  (none)\n");
        }
        for (k, v) in journal {
            let _ = writeln!(transcript, "  {k:<24} {v}");
        }
        if let Some(expect) = &scenario.expect {
            for (k, want) in &expect.totals {
                let got = totals.get(k.as_str()).copied().unwrap_or(0);
                if got != *want {
                    self.failures
                        .push(format!("expected {want} calls decided {k}, got {got}"));
                }
            }
            for (k, want) in &expect.journal {
                let got = journal.get(k.as_str()).copied().unwrap_or(0);
                if got != *want {
                    self.failures.push(format!(
                        "expected {want} calls of {k} to reach the upstream, got {got}"
                    ));
                }
            }
        }
        Outcome {
            transcript,
            failures: self.failures,
            calls: decisions.len() as u64,
            decisions,
        }
    }
}

fn reload_word(r: ReloadExpect) -> &'static str {
    match r {
        ReloadExpect::Applied => "applied",
        ReloadExpect::Refused => "refused",
    }
}

/// Writes a transcript line's instant, `+{:>10.3}s` of the seconds.
fn push_instant(out: &mut String, at: Duration) {
    out.push('+');
    let start = out.len();
    tollgate_policy::engine::seconds_3(out, at);
    let width = out.len() - start;
    if width < 10 {
        out.insert_str(start, &"          "[..10 - width]);
    }
    out.push('s');
}

/// `1.5s`, `250ms`, `60s`.
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}s")
    }
}

/// What [`describe`] makes of an answer: the decision, a short detail, the refusal message.
pub type Described = (Cow<'static, str>, String, Option<String>);

/// The decision, a short detail and the refusal message of a client answer.
pub fn describe(answer: &Value) -> Described {
    if let Some(err) = answer.get("error") {
        return (
            "error".into(),
            err["message"].as_str().unwrap_or_default().to_owned(),
            None,
        );
    }
    let result = &answer["result"];
    let Some(t) = result
        .get("_meta")
        .and_then(|s| s.get(tollgate_gateway::refusal::META_KEY))
    else {
        let text = result["content"][0]["text"].as_str().unwrap_or_default();
        return described_upstream(text, result["isError"] == true);
    };
    let decision = Cow::Owned(t["decision"].as_str().unwrap_or("?").to_owned());
    let mut detail = Vec::new();
    for l in t["limits"].as_array().into_iter().flatten() {
        if l["used"].as_u64() >= l["max"].as_u64() {
            detail.push(format!(
                "{} {}/{}",
                l["counter"].as_str().unwrap_or_default(),
                l["used"],
                l["max"]
            ));
        }
    }
    if let Some(r) = t["retry_after_seconds"].as_f64() {
        detail.push(format!(
            "retry in {}",
            tollgate_policy::engine::duration_text(Duration::from_secs_f64(r))
        ));
    }
    if detail.is_empty()
        && let Some(rule) = t["rule"]["selector"].as_str()
    {
        detail.push(format!("rule {rule}"));
    }
    let message = result["content"][0]["text"].as_str().map(str::to_owned);
    (decision, detail.join(", "), message)
}

/// What [`describe`] makes of the refusal `refusal::from_decision(tool, grant, decision)`,
/// read from the decision itself (its text through `texts`, which reuses the text of a run of
/// alike rate limits).
pub fn describe_decision(texts: &mut DecisionTexts, tool: &str, d: &Decision) -> Described {
    // `c 10/10, retry in 40s`, written piece by piece (a runaway agent's replay writes one per
    // call).
    let mut detail = String::with_capacity(48);
    let mut digits = itoa::Buffer::new();
    for l in d.limits.iter().filter(|l| l.used >= l.max) {
        if !detail.is_empty() {
            detail.push_str(", ");
        }
        detail.push_str(&l.counter);
        detail.push(' ');
        detail.push_str(digits.format(l.used));
        detail.push('/');
        detail.push_str(digits.format(l.max));
    }
    if let DecisionKind::RateLimited { retry_after } = d.kind {
        // Through seconds as a float, as the refusal's JSON carries it.
        let r = Duration::from_secs_f64(retry_after.as_secs_f64());
        if !detail.is_empty() {
            detail.push_str(", ");
        }
        detail.push_str("retry in ");
        tollgate_policy::engine::push_duration_text(&mut detail, r);
    }
    if detail.is_empty() {
        detail.push_str("rule ");
        detail.push_str(&d.rule.selector);
    }
    let message = texts.text(tool, d);
    (Cow::Borrowed(d.kind.name()), detail, Some(message))
}

/// What [`describe`] makes of the answer `result_response(id, output.into_result())`, read
/// from the output itself.
fn describe_output(id: u64, output: ToolOutput) -> Described {
    // A body that looks like a refusal's is read as the value path reads it.
    if output.structured_has_key("tollgate") {
        return describe(&Reply::Direct { id, output }.into_value());
    }
    described_upstream(output.first_text(), output.is_error)
}

/// What [`describe`] makes of an upstream's tool result whose first text is `text`.
fn described_upstream(text: &str, is_error: bool) -> Described {
    let first = text.lines().next().unwrap_or_default();
    let lead = if is_error {
        "upstream isError: "
    } else {
        "upstream: "
    };
    let mut detail = String::with_capacity(lead.len() + first.len());
    detail.push_str(lead);
    detail.push_str(first);
    ("allow".into(), detail, None)
}

/// An upper bound of the length of `result_response(id, output.into_result())`'s text, when
/// it parses back to the same value: the result's, and the response's envelope around it.
fn output_bound(output: &ToolOutput) -> Option<usize> {
    output.result_text_bound().map(|b| b.saturating_add(256))
}

/// The session the gateway counts an agent's calls in (`scope: session` counters are keyed by
/// it), by the live gateway's rules (docs/gateway.md): the stateless protocol (2026-07-28) has
/// no sessions, and the HTTP front gives every grant's stateless requests one shared session,
/// `stateless:GRANT`; every other agent is an MCP session of its own, even when two agents
/// declare the same session name (the live gateway gives each `initialize` its own id), so a
/// name another session-ful agent also declares becomes `SESSION/AGENT`.
pub fn session_identity(scenario: &Scenario, agent: &str) -> String {
    let Some(spec) = scenario.agents.get(agent) else {
        return agent.to_owned();
    };
    let protocol = spec.protocol.unwrap_or(ProtocolVersion::V2025_11_25);
    if protocol.is_stateless() {
        return format!("stateless:{}", spec.grant);
    }
    let declared = |name: &str, a: &format::Agent| a.session.as_deref().unwrap_or(name).to_owned();
    let session = declared(agent, spec);
    let shared = scenario.agents.iter().any(|(other, a)| {
        other != agent
            && !a.protocol.is_some_and(|p| p.is_stateless())
            && declared(other, a) == session
    });
    if shared {
        format!("{session}/{agent}")
    } else {
        session
    }
}

/// An agent's `initialize` (none for the stateless protocol, which has no handshake): the same
/// in virtual time and in live runs.
fn initialize_request(agent: &str, protocol: ProtocolVersion) -> Option<Value> {
    (!protocol.is_stateless()).then(|| {
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": protocol.as_str(), "capabilities": {}, "clientInfo": {"name": agent, "version": "scenario"}}})
    })
}

/// A `tools/call` as an agent speaking `protocol` sends it (with the stateless `_meta`
/// envelope for 2026-07-28): the same in virtual time and in live runs.
fn call_request(
    id: u64,
    agent: &str,
    protocol: ProtocolVersion,
    tool: &str,
    args: &Value,
) -> Value {
    let mut params = json!({"name": tool, "arguments": args});
    if protocol.is_stateless() {
        params["_meta"] = json!({
            META_PROTOCOL_VERSION: protocol.as_str(),
            META_CLIENT_INFO: {"name": agent, "version": "scenario"},
            META_CLIENT_CAPABILITIES: {},
        });
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// The id of a raw message, read leniently (the bytes may not parse): none when it has no
/// usable one. The same in virtual time and in live runs.
fn raw_message_id(raw: &str) -> Option<Value> {
    serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| v.get("id").filter(|id| !id.is_null()).cloned())
}

/// One message an agent sends in a live run (`tollgate test --live`).
#[derive(Debug, Clone)]
pub struct WireSend {
    pub at: Duration,
    /// The agent that sends it (a key of the scenario's `agents`).
    pub agent: String,
    pub message: String,
    /// The ids of the calls in the message, in order (`null` for a raw message without one).
    pub ids: Vec<Value>,
}

/// One step of a live run.
#[derive(Debug, Clone)]
pub enum WireStep {
    Send(WireSend),
    /// A policy reload at `at`: the new policy's text (which may be invalid: the gateway must
    /// refuse it then).
    Reload {
        at: Duration,
        policy: String,
    },
    /// An `approve` or `deny` step at `at`, made by an operator on the gateway's admin API.
    Decide {
        at: Duration,
        approve: bool,
        decide: Decide,
    },
    /// A `faults: on|off` step at `at`, made through the mock's switch file.
    Faults {
        at: Duration,
        on: bool,
    },
}

/// One agent of a live run.
#[derive(Debug, Clone)]
pub struct WireAgent {
    pub name: String,
    pub grant: String,
    /// Its `initialize` (none for the stateless protocol, which has no handshake).
    pub init: Option<String>,
}

/// A scenario as wire messages, for a live run against real processes.
#[derive(Debug, Clone)]
pub struct WirePlan {
    pub agents: Vec<WireAgent>,
    /// The scenario's approvers: a live run gives each an admin token (none: the gateway has no
    /// approval channel, as in the virtual-time run).
    pub approvers: Vec<String>,
    /// Every agent's messages and the policy reloads, in the order the virtual-time run takes
    /// them.
    pub steps: Vec<WireStep>,
}

impl WirePlan {
    /// Whether the plan needs the HTTP gateway: several agents, a reload (the stdio gateway's
    /// stderr is the client's to ignore, so a live run cannot see it reload) or approvers (the
    /// admin API is served on the HTTP listener).
    pub fn needs_http(&self) -> bool {
        self.agents.len() > 1
            || !self.approvers.is_empty()
            || self
                .steps
                .iter()
                .any(|s| matches!(s, WireStep::Reload { .. } | WireStep::Decide { .. }))
    }

    /// Whether the plan switches the mock's faults.
    pub fn switches_faults(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, WireStep::Faults { .. }))
    }

    /// The messages, without the reloads and decisions.
    pub fn sends(&self) -> impl Iterator<Item = &WireSend> {
        self.steps.iter().filter_map(|s| match s {
            WireStep::Send(send) => Some(send),
            WireStep::Reload { .. } | WireStep::Decide { .. } | WireStep::Faults { .. } => None,
        })
    }
}

/// A scenario as the wire messages of its agents, for a live run against real processes: each
/// agent's `initialize` (if its protocol has one), then each call at its instant, with the same
/// ids the virtual-time run uses, each policy reload and each approval decision at its
/// instant, and each fault switch at its instant. Live runs take every kind of step.
pub fn wire_plan(loaded: &Loaded) -> Result<WirePlan, String> {
    let scenario = &loaded.scenario;
    if scenario.agents.is_empty() {
        return Err("a live run needs at least one agent".into());
    }
    let base = loaded
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let protocol_of = |agent: &str| {
        scenario
            .agents
            .get(agent)
            .and_then(|s| s.protocol)
            .unwrap_or(ProtocolVersion::V2025_11_25)
    };
    let agents = scenario
        .agents
        .iter()
        .map(|(name, spec)| WireAgent {
            name: name.clone(),
            grant: spec.grant.clone(),
            init: initialize_request(name, protocol_of(name)).map(|v| v.to_string()),
        })
        .collect();
    // The ids run across agents, as in the virtual-time run.
    let mut next_id = 0u64;
    let mut request = |agent: &str, tool: &str, args: &Value| {
        next_id += 1;
        call_request(next_id, agent, protocol_of(agent), tool, args)
    };
    let mut steps = Vec::new();
    let mut schedule = Schedule::new(scenario);
    while let Some(a) = schedule.next_action() {
        let send = match a.kind {
            ActionKind::Call {
                agent, tool, args, ..
            } => {
                let m = request(agent, tool, args);
                WireSend {
                    at: a.at,
                    agent: agent.to_string(),
                    ids: vec![m["id"].clone()],
                    message: m.to_string(),
                }
            }
            ActionKind::Raw { agent, raw, .. } => WireSend {
                at: a.at,
                agent: agent.clone(),
                ids: vec![raw_message_id(raw).unwrap_or(Value::Null)],
                message: raw.clone(),
            },
            ActionKind::Batch { agent, items } => {
                let msgs: Vec<Value> = items
                    .iter()
                    .map(|(t, args, _)| request(agent, t, args))
                    .collect();
                WireSend {
                    at: a.at,
                    agent: agent.clone(),
                    ids: msgs.iter().map(|m| m["id"].clone()).collect(),
                    message: Value::Array(msgs).to_string(),
                }
            }
            ActionKind::Reload { source, .. } => {
                let text = source
                    .text(&base)
                    .map_err(|e| format!("step {}: {e}", a.label))?;
                steps.push(WireStep::Reload {
                    at: a.at,
                    policy: text,
                });
                continue;
            }
            ActionKind::Decide { approve, decide } => {
                steps.push(WireStep::Decide {
                    at: a.at,
                    approve: *approve,
                    decide: decide.clone(),
                });
                continue;
            }
            ActionKind::Faults(switch) => {
                steps.push(WireStep::Faults {
                    at: a.at,
                    on: *switch == Switch::On,
                });
                continue;
            }
        };
        steps.push(WireStep::Send(send));
    }
    Ok(WirePlan {
        agents,
        approvers: scenario.approvers.clone(),
        steps,
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::IdText;

    fn id_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[0-9a-z\"\\\\ -]{0,8}".prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    proptest! {
        /// An id kept as `IdText` is written (and serialized) as its JSON text, and an id read
        /// from a value and one read from that value's text are the same key: the runner's
        /// calls and a live run's answers meet under it.
        #[test]
        fn id_text_is_the_json_text_and_the_same_key_from_value_or_text(v in id_value()) {
            let text = v.to_string();
            let id = IdText::of(&v);
            prop_assert_eq!(id.to_string(), text.clone());
            prop_assert_eq!(&id, &IdText::from_text(&text));
            prop_assert_eq!(serde_json::to_value(&id).unwrap(), Value::from(text));
            prop_assert_eq!(matches!(id, IdText::Number(_)), v.is_u64());
        }
    }

    #[test]
    fn only_an_integers_own_digits_are_a_number() {
        assert_eq!(IdText::from_text("7"), IdText::Number(7));
        assert_eq!(IdText::from_text("0"), IdText::Number(0));
        for text in ["07", "7.0", "-7", "\"7\"", "", "18446744073709551616"] {
            assert_eq!(IdText::from_text(text), IdText::Text(text.into()), "{text}");
        }
    }
}
