//! The discrete-event run: agents' sessions through the gateway's core and the in-process mock,
//! upstream answers delayed by the mock's latency faults, the gateway's timeouts, reloads and
//! fault switches, each at its virtual instant.

use super::*;

/// A delivery due at `at`, the `seq`th scheduled: the run's heap of them pops the earliest,
/// and of those due at the same instant the first scheduled.
#[derive(Debug)]
pub(super) struct Scheduled {
    pub(super) at: Duration,
    pub(super) seq: u64,
    pub(super) agent: Arc<str>,
    pub(super) what: Delivery,
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
pub(super) enum Delivery {
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
pub(super) enum Reply {
    Value(Value),
    Direct { id: u64, output: ToolOutput },
}

impl Reply {
    pub(super) fn into_value(self) -> Value {
        match self {
            Reply::Value(v) => v,
            Reply::Direct { id, output } => {
                tollgate_mcp::result_response(&Value::from(id), output.into_result())
            }
        }
    }
}

pub(super) struct AgentState {
    pub(super) core: SessionCore,
    pub(super) session: String,
    pub(super) grant: String,
    pub(super) protocol: ProtocolVersion,
    pub(super) initialize: Option<Value>,
    /// The approvals of this session's held calls seen so far.
    pub(super) held_seen: BTreeSet<u64>,
}

/// An agent's open calls: id text → the call entry waiting for that answer.
pub(super) type OpenIds = HashMap<IdText, usize, foldhash::fast::RandomState>;

pub(super) struct Run {
    pub(super) gateway: Arc<Gateway>,
    /// The upstream mock, or several behind the router's model.
    pub(super) mocks: Mocks,
    pub(super) base: PathBuf,
    /// By name; the names are shared with the deliveries on their way to them.
    pub(super) agents: BTreeMap<Arc<str>, AgentState>,
    /// Answers on their way, by when they arrive (a heap: a long replay schedules and takes
    /// one per forwarded call, and its storage is kept between them).
    pub(super) deliveries: std::collections::BinaryHeap<Scheduled>,
    pub(super) next_seq: u64,
    pub(super) next_id: u64,
    pub(super) entries: Entries,
    /// What has been written of the transcript so far, and what it has counted.
    pub(super) written: Written,
    /// (agent, id text) → the call entry waiting for that answer.
    pub(super) open: HashMap<String, OpenIds, foldhash::fast::RandomState>,
    /// Agent → its raw message waiting for an answer without a usable id.
    pub(super) open_raw: HashMap<String, usize>,
    pub(super) failures: Vec<String>,
    /// Answers from a recording instead of the mock (`tollgate replay --against recorded`).
    pub(super) recorded: Option<recording::RecordedAnswers>,
    /// Whether plain calls take the direct path (no messages as values between the runner,
    /// the core and the mock, where the core and the mock allow it); off, every call takes
    /// the value path. The transcript is the same either way (the differential tests).
    pub(super) direct: bool,
    /// The refusal texts of the direct path's decisions.
    pub(super) texts: DecisionTexts,
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
pub(super) struct Setup {
    pub(super) store: Arc<dyn CounterStore>,
    /// Answers from a recording instead of the mock.
    pub(super) recorded: Option<recording::RecordedAnswers>,
    /// See `Run::direct`.
    pub(super) direct: bool,
    pub(super) audit: Option<tollgate_gateway::audit::AuditLog>,
}

impl Setup {
    pub(super) fn new(store: Arc<dyn CounterStore>) -> Setup {
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
pub(super) fn run_inner(loaded: Loaded, setup: Setup) -> (Outcome, String) {
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
    let specs = scenario.mocks();
    let options = GatewayOptions {
        upstreams: Arc::new(named_upstreams(&scenario, &specs)),
        ..options
    };
    let gateway = Gateway::new(engine, audit, options);
    let mocks = match Mocks::new(&specs) {
        Ok(m) => m,
        Err(e) => {
            let outcome = Outcome {
                transcript: String::new(),
                failures: vec![e],
                calls: 0,
                decisions: Vec::new(),
            };
            return (outcome, String::new());
        }
    };
    let mut actions = Schedule::new(&scenario);
    let mut run = Run {
        gateway,
        mocks,
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

/// The upstreams the gateway is told of (their names and prefixes, for `upstream:` selectors
/// and the audit log's `upstream`): none with one upstream, as the gateway is.
fn named_upstreams(
    scenario: &Scenario,
    specs: &[format::MockSpec],
) -> Vec<tollgate_gateway::upstream::NamedUpstream> {
    if !scenario.several_upstreams() {
        return Vec::new();
    }
    named_mocks(specs)
}

/// Mock upstreams as the gateway's [`tollgate_gateway::upstream::NamedUpstream`]s.
pub(super) fn named_mocks(
    specs: &[format::MockSpec],
) -> Vec<tollgate_gateway::upstream::NamedUpstream> {
    specs
        .iter()
        .map(|m| tollgate_gateway::upstream::NamedUpstream {
            name: m.name.clone(),
            prefix: m.prefix.clone(),
            // In-process: never started; a live run starts `tollgate mock-eks` for it.
            spec: tollgate_gateway::upstream::UpstreamSpec::Command {
                program: "tollgate".into(),
                args: vec!["mock-eks".into()],
            },
        })
        .collect()
}

impl Run {
    pub(super) fn schedule(&mut self, agent: &str, at: Duration, what: Delivery) {
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

    pub(super) fn deliver(&mut self, now: Duration) {
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
                // (A crash is a fault of a scenario's only upstream: `upstreams` refuses it.)
                if let Some(mock) = self.mocks.single() {
                    mock.end_session(&state.session);
                }
                if let Some(init) = &state.initialize
                    && let Some(mock) = self.mocks.single()
                {
                    let mut again = init.clone();
                    again["id"] = json!("tollgate-reinit");
                    let _ = mock.handle(&state.session, again.to_string().as_bytes(), now);
                    let _ = mock.handle(
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

    pub(super) fn tick(&mut self, now: Duration) {
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
    pub(super) fn route(&mut self, agent: &str, outs: Vec<Out>, now: Duration) {
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
                    for Handled {
                        response,
                        latency,
                        effect,
                    } in self.mocks.handle_value(&session, v, now)
                    {
                        let reply = response.map(Reply::Value);
                        self.upstream_answer(agent, reply, latency, effect, now);
                    }
                }
            }
        }
    }

    pub(super) fn upstream_answer(
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

    pub(super) fn answer(&mut self, agent: &str, v: Value, now: Duration) {
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
    pub(super) fn answer_with(
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
    pub(super) fn answer_entry(
        &mut self,
        i: usize,
        now: Duration,
        described: impl FnOnce() -> Described,
    ) {
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
    pub(super) fn verdict(&self, id: u64, now: Duration) -> String {
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
    pub(super) fn decide(&mut self, a: &Action, approve: bool, d: &Decide) {
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
    pub(super) fn ensure_agent(&mut self, scenario: &Scenario, agent: &str, now: Duration) {
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

    pub(super) fn send(&mut self, agent: &str, bytes: &[u8], now: Duration) {
        let Some(state) = self.agents.get_mut(agent) else {
            return;
        };
        let outs = state.core.from_client(bytes, now);
        self.route(agent, outs, now);
    }

    /// Sends a message the runner built (the value path: the core skips the text exactly
    /// when it would parse back to the same value, so the transcript is the same).
    pub(super) fn send_value(&mut self, agent: &str, msg: Value, now: Duration) {
        let Some(state) = self.agents.get_mut(agent) else {
            return;
        };
        let outs = state.core.from_client_value(msg, now);
        self.route(agent, outs, now);
    }

    /// Marks the calls the agent's core has held for approval since it last looked (found by
    /// their request ids in the gateway's pending list). A call may be held when its message
    /// arrives or later (after the upstream's tool list, for a session's first call).
    pub(super) fn mark_held(&mut self, agent: &str, now: Duration) {
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
    pub(super) fn request(&mut self, agent: &str, tool: &str, args: &Value) -> Value {
        self.next_id += 1;
        let protocol = self
            .agents
            .get(agent)
            .map_or(ProtocolVersion::V2025_11_25, |a| a.protocol);
        call_request(self.next_id, agent, protocol, tool, args)
    }

    /// A call's transcript entry, waiting for the answer to request `id` (if it has one);
    /// returns the entry's index.
    pub(super) fn open_call(
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
    pub(super) fn await_answer(&mut self, agent: &str, id: IdText, i: usize) {
        let ids = match self.open.get_mut(agent) {
            Some(ids) => ids,
            None => self.open.entry(agent.to_owned()).or_default(),
        };
        ids.insert(id, i);
    }

    /// A call's transcript entry with its answer already there (a refusal on the direct path:
    /// nothing waits for it).
    pub(super) fn answered_call(
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

    pub(super) fn act(&mut self, scenario: &Scenario, a: &Action) {
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
                self.mocks.set_faults_enabled(on);
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
    pub(super) fn call_direct(
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
        let handled = self.mocks.call_direct(session, id, tool, &arguments, now);
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
    pub(super) fn answer_direct(
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

    pub(super) fn reload(
        &mut self,
        a: &Action,
        source: &PolicySource,
        expect: Option<ReloadExpect>,
    ) {
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
}
