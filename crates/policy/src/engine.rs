//! The decision engine: `decide(call, now)` for one tool call, and `explain`, which walks the
//! same path without taking from any counter.
//!
//! Order of evaluation for one call (docs/policy.md, "Evaluation order"):
//! 1. select the rule (exact, pattern, class, annotation, default);
//! 2. the rule's argument checks, then its branch on one argument (a missing value, or one no
//!    case names without `otherwise`, is an invalid argument), then the case's own checks;
//! 3. every violation found → `invalid_arguments` (no counter is touched);
//! 4. `deny` → `deny`;
//! 5. limits, all or nothing → `rate_limited` with the exact time to retry (`error_limited`
//!    when a limit that counts upstream errors is among those that refuse); a counter store
//!    that cannot answer → `store_unavailable` (fail closed), or on as if admitted and
//!    recorded in `store_unavailable` (fail open, the operator's explicit choice);
//! 6. `require_approval` → `approval_required`: the call's limits are *checked* when it is
//!    held (a call that could not be admitted now is rate limited at once, without asking
//!    anybody) and *taken* only when it is approved, by [`Engine::admit_approved`] at the
//!    instant of the approval: a denied or expired call was refused, and a refused call
//!    consumes nothing. (The gateway bounds how many calls one grant may hold at once.)
//! 7. `allow`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::lax;
use crate::limiter::{
    Acquire, CounterKey, CounterState, CounterStore, Counts, FailMode, LimitSpec, Scope,
};
use crate::model::{Action, ApprovalVia, TimeoutOutcome};
use crate::policy::{ArgCheck, Branch, Policy, RuleBody, case_key, scope_name};
use crate::selector::{Tier, ToolMeta};

/// One tool call as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Call {
    /// Shared with the caller (a replayed step's tool name is one string for all its calls).
    pub tool: Arc<str>,
    /// Shared with the caller: deciding a call copies no arguments.
    pub arguments: Arc<Value>,
    /// The agent's credential, as the gateway mapped it.
    pub grant: Arc<str>,
    /// The MCP session.
    pub session: Arc<str>,
    #[serde(default)]
    pub meta: ToolMeta,
}

/// A pointer to the rule that decided, for messages and audit records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// The selector (`CancelAHORunBatch`, `Delete*`, `default`).
    pub selector: Arc<str>,
    /// JSON pointer into the policy: `/tools/Delete*`, `/tools/x/when/cases/delete`, `/default`.
    pub pointer: Arc<str>,
    /// Where that rule is written (1-based).
    pub line: usize,
    pub column: usize,
}

/// One failed argument check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON path of the argument: `$.operation`.
    pub path: String,
    pub message: String,
}

/// An argument the tool cannot read as the type its input schema gives it, found by the
/// gateway when it brought the call's arguments to the values the tool reads. The engine knows
/// no schema: it is told. A rule that checks the argument (or branches on it) refuses the call
/// as `invalid_arguments`; a rule that does not leaves it to the tool, which refuses it itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeMismatch {
    /// The argument's name: a top-level key of the call's arguments.
    pub argument: String,
    /// What the schema takes, for people: `an integer`, `a string or null`.
    pub expected: Arc<str>,
}

/// What the policy says about a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DecisionKind {
    Allow,
    Deny,
    RateLimited {
        #[serde(rename = "retry_after_seconds", serialize_with = "secs")]
        retry_after: Duration,
    },
    /// A limit that counts upstream errors (`counts: errors`) holds `max` errors in its
    /// window: the tool keeps failing, so the call is refused until the oldest counted error
    /// leaves the window (the latest such instant over every limit that refused).
    ErrorLimited {
        #[serde(rename = "retry_after_seconds", serialize_with = "secs")]
        retry_after: Duration,
    },
    ApprovalRequired {
        #[serde(rename = "timeout_seconds", serialize_with = "secs")]
        timeout: Duration,
        on_timeout: TimeoutOutcome,
        /// Who is asked; omitted when it is the operators.
        #[serde(skip_serializing_if = "ApprovalVia::is_operators")]
        via: ApprovalVia,
    },
    InvalidArguments {
        violations: Vec<Violation>,
    },
    /// The counter store could not answer and fails closed: the call's limits cannot be
    /// checked, so it is refused (`Decision::store_unavailable` says which store and why).
    StoreUnavailable,
}

/// A counter store that could not answer, as a decision records it (fail closed or open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreFailure {
    pub store: Arc<str>,
    pub reason: String,
    /// `fail_closed` (the call was refused) or `fail_open` (it went on, uncounted).
    pub outcome: FailMode,
}

impl DecisionKind {
    /// The decision's name as transcripts and the audit log print it.
    pub fn name(&self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Deny => "deny",
            DecisionKind::RateLimited { .. } => "rate_limited",
            DecisionKind::ErrorLimited { .. } => "error_limited",
            DecisionKind::ApprovalRequired { .. } => "approval_required",
            DecisionKind::InvalidArguments { .. } => "invalid_arguments",
            DecisionKind::StoreUnavailable => "store_unavailable",
        }
    }
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A decision with what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    #[serde(flatten)]
    pub kind: DecisionKind,
    pub rule: RuleRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Arc<str>>,
    /// The counters the call was measured against, after the decision.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<CounterState>,
    /// Set when the counter store could not answer: which store, why, and whether the call
    /// was refused (fail closed) or let through uncounted (fail open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_unavailable: Option<StoreFailure>,
    /// The limits that count errors (`counts: errors`) of the rule that decided, with the
    /// keys this call is counted under: what [`Engine::record_error`] charges if the call's
    /// answer is an upstream error. Empty when the rule has none; not serialised (`limits`
    /// shows their states).
    #[serde(skip)]
    pub on_error: Vec<(CounterKey, LimitSpec)>,
}

impl Decision {
    /// Whether the call may go on to the upstream (now, or after an approval).
    pub fn admits(&self) -> bool {
        matches!(self.kind, DecisionKind::Allow)
    }

    /// The counters that are full, for a refusal: `c 3/3 per minute`, `e 2/2 errors per 10m`.
    fn full_counters(&self) -> String {
        self.limits
            .iter()
            .filter(|s| s.used >= s.max)
            .map(|s| {
                format!(
                    "{} {}/{}{} per {}",
                    s.counter,
                    s.used,
                    s.max,
                    if s.counts.is_calls() { "" } else { " errors" },
                    window_text(s.window)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line for an agent or a transcript: what was decided, by which rule, why.
    pub fn summary(&self, tool: &str) -> String {
        let rule = format!("rule `{}` ({})", self.rule.selector, self.rule.pointer);
        let reason = self
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        match &self.kind {
            DecisionKind::Allow => format!("`{tool}` allowed by {rule}"),
            DecisionKind::Deny => format!("`{tool}` denied by {rule}{reason}"),
            DecisionKind::RateLimited { retry_after } => {
                let counters = self.full_counters();
                format!(
                    "`{tool}` rate limited by {rule}{reason} ({counters}); retry in {}",
                    duration_text(*retry_after)
                )
            }
            DecisionKind::ErrorLimited { retry_after } => {
                let counters = self.full_counters();
                format!(
                    "`{tool}` stopped by {rule}{reason}: too many upstream errors ({counters}); stop retrying, the call is refused until the oldest error leaves the window: retry in {}",
                    duration_text(*retry_after)
                )
            }
            DecisionKind::ApprovalRequired {
                timeout,
                on_timeout,
                ..
            } => format!(
                "`{tool}` requires approval under {rule}{reason}; held for up to {}, then {}",
                duration_text(*timeout),
                match on_timeout {
                    TimeoutOutcome::Deny => "denied",
                    TimeoutOutcome::Allow => "allowed",
                }
            ),
            DecisionKind::InvalidArguments { violations } => {
                let list = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.path, v.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                format!("`{tool}` has invalid arguments under {rule}{reason}: {list}")
            }
            DecisionKind::StoreUnavailable => {
                let (store, why) = self
                    .store_unavailable
                    .as_ref()
                    .map(|f| (&*f.store, f.reason.as_str()))
                    .unwrap_or(("the counter store", "unknown"));
                format!(
                    "`{tool}` refused under {rule}: its limits cannot be checked, the counter store {store} is unavailable ({why})"
                )
            }
        }
    }
}

/// A duration for people: `48s`, `1.5s`, `2m30s`.
pub fn duration_text(d: Duration) -> String {
    let mut text = String::with_capacity(16);
    push_duration_text(&mut text, d);
    text
}

/// Appends [`duration_text`]`(d)` to `out`.
pub fn push_duration_text(out: &mut String, d: Duration) {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        seconds_3(out, d);
        out.push('s');
        return;
    }
    let s = d.as_secs();
    let mut digits = itoa::Buffer::new();
    let mut unit = |n: u64, u: char| {
        out.push_str(digits.format(n));
        out.push(u);
    };
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => unit(s, 's'),
        (0, m, 0) => unit(m, 'm'),
        (0, m, s) => {
            unit(m, 'm');
            unit(s, 's');
        }
        (h, 0, 0) => unit(h, 'h'),
        (h, m, s) => {
            unit(h, 'h');
            unit(m, 'm');
            unit(s, 's');
        }
    }
}

/// Writes `d` in seconds with three decimals: what `{:.3}` writes of `d.as_secs_f64()`. A
/// whole number of milliseconds below 2^32 seconds is written from its integers (the float's
/// error there is far below half a millisecond, so the digits are the same); anything else
/// through the float.
pub fn seconds_3(out: &mut String, d: Duration) {
    use std::fmt::Write as _;
    if d.subsec_nanos().is_multiple_of(1_000_000) && d.as_secs() < 1 << 32 {
        let millis = d.subsec_millis();
        out.push_str(itoa::Buffer::new().format(d.as_secs()));
        out.push('.');
        out.push(char::from(b'0' + (millis / 100) as u8));
        out.push(char::from(b'0' + (millis / 10 % 10) as u8));
        out.push(char::from(b'0' + (millis % 10) as u8));
    } else {
        let _ = write!(out, "{:.3}", d.as_secs_f64());
    }
}

/// A window for people: `minute`, `hour`, or a duration.
pub fn window_text(d: Duration) -> String {
    match d.as_secs() {
        1 => "second".into(),
        60 => "minute".into(),
        3600 => "hour".into(),
        86_400 => "day".into(),
        _ => duration_text(d),
    }
}

/// Why `evaluate` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new call: take from the counters if it is admitted now.
    Decide,
    /// `explain`: take nothing.
    Explain,
    /// A held call was approved: take from the counters now.
    Approved,
}

/// The engine: a compiled policy and a counter store.
#[derive(Debug, Clone)]
pub struct Engine {
    policy: Arc<Policy>,
    store: Arc<dyn CounterStore>,
    /// Whether any rule checks an argument or branches on one (see [`Engine::reads_arguments`]).
    reads_arguments: bool,
    /// The scope value of a `global` limit (`*`), made once.
    global: Arc<str>,
}

/// The path one call took through the policy, for `tollgate explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub tool: String,
    /// Every selector that matches the tool, in precedence order; the first one decides.
    pub candidates: Vec<Candidate>,
    /// Every other rule, and why it does not apply.
    pub not_matching: Vec<NotMatching>,
    /// The branch taken, if the rule branches: `operation = "delete"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The decision, with counters as they would be (nothing is taken).
    pub decision: Decision,
    /// The limits that apply, with their keys.
    pub limits: Vec<LimitLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub selector: Arc<str>,
    pub tier: Tier,
    pub pointer: Arc<str>,
}

/// A rule whose selector does not match the call's tool, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotMatching {
    pub selector: Arc<str>,
    pub tier: Tier,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitLine {
    pub counter: Arc<str>,
    pub scope: &'static str,
    pub key: Arc<str>,
    pub max: u32,
    pub window_seconds: u64,
    /// `errors` for a limit that counts upstream errors; omitted for calls.
    #[serde(skip_serializing_if = "Counts::is_calls")]
    pub counts: Counts,
}

impl Engine {
    pub fn new(policy: Arc<Policy>, store: Arc<dyn CounterStore>) -> Engine {
        let reads = |b: &RuleBody| {
            !b.arguments.is_empty()
                || b.when.is_some()
                || b.limit_by.iter().any(|by| !by.is_empty())
        };
        let reads_arguments = reads(&policy.default) || policy.rules.iter().any(|r| reads(&r.body));
        Engine {
            policy,
            store,
            reads_arguments,
            global: Arc::from("*"),
        }
    }

    /// Whether any rule of the policy checks an argument or branches on one. When none does,
    /// no decision depends on argument values (a tool's class depends only on its `operation`
    /// string), so the gateway need not read them as the tool will first.
    pub fn reads_arguments(&self) -> bool {
        self.reads_arguments
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn store(&self) -> &Arc<dyn CounterStore> {
        &self.store
    }

    /// Decides one call at virtual time `now`, taking from the counters when it admits. A
    /// call that requires approval has its limits checked, not taken (see
    /// [`Engine::admit_approved`]).
    pub fn decide(&self, call: &Call, now: Duration) -> Decision {
        self.evaluate(call, now, Mode::Decide, &[]).0
    }

    /// [`Engine::decide`] for a call whose arguments the gateway has brought to the values
    /// the tool reads (by the tool's input schema), with the arguments it could not bring
    /// there: a rule that checks one of those refuses the call, naming the type expected.
    pub fn decide_coerced(
        &self,
        call: &Call,
        now: Duration,
        unreadable: &[TypeMismatch],
    ) -> Decision {
        self.evaluate(call, now, Mode::Decide, unreadable).0
    }

    /// A call that `decide` held for approval has been approved (or has timed out with
    /// `on_timeout: allow`) at `now`: its limits are taken now, all or nothing. The answer is
    /// `allow` (with the counters after taking) or `rate_limited` (the budget filled up while
    /// the call waited; nothing is taken). The rule is the one `decide` chose: the same
    /// policy selects the same rule for the same call.
    pub fn admit_approved(&self, call: &Call, now: Duration) -> Decision {
        self.evaluate(call, now, Mode::Approved, &[]).0
    }

    /// The answer of a call `decide` (or `admit_approved`) allowed was an upstream error at
    /// `now` (the answer's arrival; docs/limits.md, "Limits that count errors", says what is
    /// an error): counts one error on every key of `on_error` (the decision's
    /// [`Decision::on_error`]), whatever they hold. Returns the counters after counting (empty
    /// when there is nothing to count), or the store's failure (the error is then not
    /// counted; the caller records that).
    pub fn record_error(
        &self,
        on_error: &[(CounterKey, LimitSpec)],
        now: Duration,
    ) -> Result<Vec<CounterState>, StoreFailure> {
        if on_error.is_empty() {
            return Ok(Vec::new());
        }
        match self.store.record(on_error, now) {
            Acquire::Admitted { states } | Acquire::Refused { states, .. } => Ok(states),
            Acquire::Unavailable {
                store,
                reason,
                mode,
            } => Err(StoreFailure {
                store,
                reason,
                outcome: mode,
            }),
        }
    }

    /// What `decide` would say now, without taking from any counter, and the path it took.
    pub fn explain(&self, call: &Call, now: Duration) -> Explanation {
        self.explain_coerced(call, now, &[])
    }

    /// What [`Engine::decide_coerced`] would say now, without taking from any counter, and
    /// the path it took.
    pub fn explain_coerced(
        &self,
        call: &Call,
        now: Duration,
        unreadable: &[TypeMismatch],
    ) -> Explanation {
        let (decision, branch, body) = self.evaluate(call, now, Mode::Explain, unreadable);
        let candidates = self
            .policy
            .candidates(&call.tool, &call.meta)
            .into_iter()
            .map(|(r, tier)| Candidate {
                selector: Arc::clone(&r.text),
                tier,
                pointer: Arc::clone(&r.body.pointer),
            })
            .collect();
        let limits = body
            .limits
            .iter()
            .zip(&body.limit_by)
            .map(|(l, by)| LimitLine {
                counter: Arc::clone(&l.counter),
                scope: scope_name(l.scope),
                key: key_value(l.scope, by, call, &self.global),
                max: l.max,
                window_seconds: l.window.as_secs(),
                counts: l.counts,
            })
            .collect();
        let not_matching = self
            .policy
            .rules
            .iter()
            .filter(|r| !r.selector.matches(&call.tool, &call.meta))
            .map(|r| NotMatching {
                selector: Arc::clone(&r.text),
                tier: r.selector.tier(),
                why: why_not(&r.selector, &call.tool, &call.meta),
            })
            .collect();
        Explanation {
            tool: call.tool.to_string(),
            candidates,
            not_matching,
            branch,
            decision,
            limits,
        }
    }

    // Inlined into `decide` and its siblings, so the decision is built where it is returned
    // rather than moved out of a tuple.
    #[inline]
    fn evaluate(
        &self,
        call: &Call,
        now: Duration,
        mode: Mode,
        unreadable: &[TypeMismatch],
    ) -> (Decision, Option<String>, &RuleBody) {
        let policy = &*self.policy;
        let rule = policy.select(&call.tool, &call.meta);
        // The selected rule before any branch: its redactions (its cases' too) hide values
        // from every message.
        let top: &RuleBody = rule.map_or(&*policy.default, |r| &*r.body);
        let context = ArgContext {
            top,
            unreadable,
            defaults: call.meta.defaults.as_deref(),
        };
        // Borrowed from the policy: no reference count moves on the way.
        let mut body: &RuleBody = top;
        let mut violations = Vec::new();
        check_arguments(&body.arguments, &call.arguments, &context, &mut violations);
        let mut branch_text = None;
        if let Some(branch) = &body.when {
            // An argument left out branches as its default, the value the tool acts on.
            let value = call
                .arguments
                .get(&branch.argument)
                .filter(|v| !v.is_null())
                .or_else(|| context.default(&branch.argument));
            let shown_value = || match value {
                Some(v) => shown(v, context.hidden(&branch.argument)),
                None => json_text(None),
            };
            match pick_case(branch, value, &context) {
                Pick::Case(case) => {
                    branch_text = Some(format!("{} = {}", branch.argument, shown_value()));
                    let case: &RuleBody = case;
                    check_arguments(&case.arguments, &call.arguments, &context, &mut violations);
                    body = case;
                }
                Pick::Otherwise(case) => {
                    branch_text = Some(format!(
                        "{} = {} (otherwise)",
                        branch.argument,
                        shown_value()
                    ));
                    let case: &RuleBody = case;
                    check_arguments(&case.arguments, &call.arguments, &context, &mut violations);
                    body = case;
                }
                Pick::Refused(message) => push_once(
                    &mut violations,
                    Violation {
                        path: json_path(&branch.argument),
                        message,
                    },
                ),
            }
        }
        let rule_ref = self.rule_ref(body);
        let reason = body.reason.clone().or_else(|| {
            (rule.is_none() && body.action != Action::Allow).then(|| {
                Arc::from(format!(
                    "no rule names `{}` and the policy's default is {}",
                    call.tool,
                    action_name(body.action)
                ))
            })
        });
        // Made once on every path, so it takes the rule and the reason (no reference count
        // moves for them).
        let decision = move |kind, limits| Decision {
            kind,
            rule: rule_ref,
            reason,
            limits,
            store_unavailable: None,
            on_error: Vec::new(),
        };
        if !violations.is_empty() {
            return (
                decision(DecisionKind::InvalidArguments { violations }, Vec::new()),
                branch_text,
                body,
            );
        }
        if body.action == Action::Deny {
            return (decision(DecisionKind::Deny, Vec::new()), branch_text, body);
        }
        let mut states = Vec::new();
        let mut on_error = Vec::new();
        let mut failed_open = None;
        if !body.limits.is_empty() {
            // A call about to be held is measured, not counted: it is counted when approved.
            let dry_run = match mode {
                Mode::Explain => true,
                Mode::Decide => body.action == Action::RequireApproval,
                Mode::Approved => false,
            };
            // On the stack: a rule has a limit or two. Left empty for a rule with one limit on
            // calls and no `by` (most rules): its key is the call's own scope value, borrowed,
            // and there is no error to count later.
            let mut keys: smallvec::SmallVec<[(CounterKey, LimitSpec); 2]> =
                smallvec::SmallVec::new();
            let answer = match (&body.limits[..], &body.limit_by[..]) {
                ([limit], [by]) if by.is_empty() && limit.counts.is_calls() => {
                    let scope_value = scope_value(limit.scope, call, &self.global);
                    self.store
                        .acquire_one(&limit.counter, scope_value, limit, now, dry_run)
                }
                _ => {
                    keys = body
                        .limits
                        .iter()
                        .zip(&body.limit_by)
                        .map(|(l, by)| {
                            (
                                CounterKey {
                                    counter: Arc::clone(&l.counter),
                                    scope_value: key_value(l.scope, by, call, &self.global),
                                },
                                l.clone(),
                            )
                        })
                        .collect();
                    self.store.acquire(&keys, now, dry_run)
                }
            };
            match answer {
                Acquire::Admitted { states: s } => {
                    states = s;
                    if keys.iter().any(|(_, spec)| !spec.counts.is_calls()) {
                        on_error = keys
                            .into_iter()
                            .filter(|(_, spec)| !spec.counts.is_calls())
                            .collect();
                    }
                }
                Acquire::Refused {
                    retry_after,
                    states,
                    refused_by,
                } => {
                    // A counter of errors that refuses names the cause: the tool keeps failing.
                    let errors = refused_by
                        .iter()
                        .any(|&i| keys.get(i).is_some_and(|(_, s)| !s.counts.is_calls()));
                    let kind = if errors {
                        DecisionKind::ErrorLimited { retry_after }
                    } else {
                        DecisionKind::RateLimited { retry_after }
                    };
                    return (decision(kind, states), branch_text, body);
                }
                Acquire::Unavailable {
                    store,
                    reason,
                    mode,
                } => {
                    let failure = StoreFailure {
                        store,
                        reason,
                        outcome: mode,
                    };
                    if mode == FailMode::Closed {
                        let mut d = decision(DecisionKind::StoreUnavailable, Vec::new());
                        d.store_unavailable = Some(failure);
                        return (d, branch_text, body);
                    }
                    failed_open = Some(failure);
                }
            }
        }
        let kind = match body.action {
            Action::RequireApproval if mode != Mode::Approved => DecisionKind::ApprovalRequired {
                timeout: body.approval.0,
                on_timeout: body.approval.1,
                via: body.approval.2,
            },
            Action::RequireApproval => DecisionKind::Allow,
            Action::Allow | Action::Deny => DecisionKind::Allow,
        };
        let mut d = decision(kind, states);
        d.store_unavailable = failed_open;
        d.on_error = on_error;
        (d, branch_text, body)
    }

    fn rule_ref(&self, body: &RuleBody) -> RuleRef {
        RuleRef {
            selector: Arc::clone(&body.selector),
            pointer: Arc::clone(&body.pointer),
            line: body.position.0,
            column: body.position.1,
        }
    }
}

/// Why a selector does not match a tool, for `explain`.
fn why_not(selector: &crate::selector::Selector, tool: &str, meta: &ToolMeta) -> String {
    use crate::selector::Selector;
    match selector {
        Selector::Exact(name) if name.eq_ignore_ascii_case(tool) => {
            format!(
                "names `{name}`, which differs from `{tool}` in case (names are case-sensitive)"
            )
        }
        Selector::Exact(name) => format!("names `{name}`, not `{tool}`"),
        Selector::Glob(g) => format!("the pattern `{}` does not match `{tool}`", g.text),
        Selector::Class(c) => match meta.class {
            Some(have) => format!("`{tool}` is class {have}, not {c}"),
            None => format!("the class of `{tool}` is unknown (not in the catalogue)"),
        },
        Selector::Annotation(a) => format!("`{tool}` does not carry {a}"),
        Selector::Upstream(u) => match meta.upstream.as_deref() {
            Some(have) => format!("`{tool}` belongs to the upstream `{have}`, not `{u}`"),
            None => format!("`{tool}` belongs to no named upstream (the gateway fronts one)"),
        },
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::RequireApproval => "require_approval",
    }
}

/// The longest argument value, in bytes of its JSON text, a counter key holds (`by`); a longer
/// one is cut there and keyed with its length, so two long values that share their first
/// bytes and their length share a budget (stricter, never looser) and a key stays small.
pub const MAX_BY_VALUE: usize = 256;

/// A counter's key value: its scope's value, then (for a limit with `by`) the JSON text of
/// each argument it names, as the tool reads it (a top-level argument left out: its default;
/// otherwise `null`), each after a `|`. Without `by`, the scope's value alone.
fn key_value(scope: Scope, by: &[String], call: &Call, global: &Arc<str>) -> Arc<str> {
    let base = scope_value(scope, call, global);
    if by.is_empty() {
        return Arc::clone(base);
    }
    let mut key = String::from(&**base);
    for pointer in by {
        let value = call.arguments.pointer(pointer).or_else(|| {
            let name = pointer.strip_prefix('/')?;
            if name.contains('/') {
                return None;
            }
            let name = name.replace("~1", "/").replace("~0", "~");
            call.meta.defaults.as_ref()?.get(&name)
        });
        let text = value.map_or_else(|| "null".to_owned(), Value::to_string);
        key.push('|');
        if text.len() <= MAX_BY_VALUE {
            key.push_str(&text);
        } else {
            let mut cut = MAX_BY_VALUE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            key.push_str(&text[..cut]);
            key.push_str(&format!("…({} bytes)", text.len()));
        }
    }
    Arc::from(key)
}

fn scope_value<'a>(scope: Scope, call: &'a Call, global: &'a Arc<str>) -> &'a Arc<str> {
    match scope {
        Scope::Grant => &call.grant,
        Scope::Session => &call.session,
        Scope::Global => global,
    }
}

/// `$.name`, or `$["odd name"]` when the name is not a plain identifier.
fn json_path(name: &str) -> String {
    let plain = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        format!("$.{name}")
    } else {
        format!("$[{}]", Value::String(name.to_owned()))
    }
}

/// A value as JSON text, shortened for messages.
fn json_text(value: Option<&Value>) -> String {
    let text = value.map_or_else(|| "nothing".to_owned(), Value::to_string);
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What argument checks need besides the checks and the arguments.
struct ArgContext<'a> {
    /// The selected rule before any branch (whose redactions, and its cases', hide values).
    top: &'a RuleBody,
    /// The arguments the tool cannot read as its schema's type (from the gateway).
    unreadable: &'a [TypeMismatch],
    /// The tool's values for arguments left out ([`ToolMeta::defaults`]).
    defaults: Option<&'a serde_json::Map<String, Value>>,
}

impl ArgContext<'_> {
    /// Whether the policy redacts `name` for this tool: then no message quotes its value.
    fn hidden(&self, name: &str) -> bool {
        let names = |b: &RuleBody| b.redact.iter().any(|n| n == name);
        names(self.top)
            || self
                .top
                .when
                .as_ref()
                .is_some_and(|w| w.cases.values().chain(w.otherwise.iter()).any(|b| names(b)))
    }

    /// The value the tool takes for `name` when a call leaves it out (a `null` is left out).
    fn default(&self, name: &str) -> Option<&Value> {
        self.defaults?.get(name).filter(|v| !v.is_null())
    }

    fn mismatch(&self, name: &str) -> Option<&TypeMismatch> {
        self.unreadable.iter().find(|m| m.argument == name)
    }
}

/// A value for a message: its JSON text, shortened, or `(redacted)` when the policy redacts it.
fn shown(value: &Value, hidden: bool) -> String {
    if hidden {
        "(redacted)".to_owned()
    } else {
        json_text(Some(value))
    }
}

/// The message for an argument the tool cannot read as its schema's type.
fn type_message(mismatch: &TypeMismatch, value: &Value, hidden: bool) -> String {
    format!(
        "must be {} (the tool's input schema), not {}",
        mismatch.expected,
        shown(value, hidden)
    )
}

/// What `body`'s checks and branch make of the argument `name` alone, in `arguments` (read
/// as the tool reads them, with the arguments it cannot read): whether a check on it fails,
/// and which case it picks. A read-only hook for `diff`, which keeps one value of each kind.
pub(crate) fn argument_signature(
    body: &RuleBody,
    name: &str,
    arguments: &Value,
    unreadable: &[TypeMismatch],
    defaults: Option<&serde_json::Map<String, Value>>,
) -> String {
    let context = ArgContext {
        top: body,
        unreadable,
        defaults,
    };
    let mut out = Vec::new();
    let mut sig = String::new();
    for check in body.arguments.iter().filter(|c| c.name == name) {
        check_arguments(std::slice::from_ref(check), arguments, &context, &mut out);
        sig.push(if out.is_empty() { 'p' } else { 'f' });
        out.clear();
    }
    if let Some(branch) = body.when.as_ref().filter(|w| w.argument == name) {
        let value = arguments
            .get(name)
            .filter(|v| !v.is_null())
            .or_else(|| context.default(name));
        match pick_case(branch, value, &context) {
            Pick::Case(case) => {
                sig.push_str("|case:");
                sig.push_str(&case.pointer);
            }
            Pick::Otherwise(_) => sig.push_str("|otherwise"),
            Pick::Refused(_) => sig.push_str("|refused"),
        }
    }
    sig
}

/// Adds `violation` unless the same one is there (a rule and its case may check one argument).
fn push_once(out: &mut Vec<Violation>, violation: Violation) {
    if !out.contains(&violation) {
        out.push(violation);
    }
}

/// What a `when` makes of a call.
enum Pick<'a> {
    Case(&'a Arc<RuleBody>),
    Otherwise(&'a Arc<RuleBody>),
    /// No body: the value is missing, names no case (without `otherwise`), cannot be read as
    /// the tool's type, or may be read as a case it does not spell exactly.
    Refused(String),
}

/// The case `value` picks. A value picks a case only when it spells it exactly (a string as
/// the case key is written; a number or boolean whose JSON text is the key). A value that a
/// lax reader may take for a case it does not spell (`"TRUE"` for `true`, `0.0` for `0`), or
/// for another case than the one it spells, is refused, saying how to write it: sending it to
/// `otherwise`, or to the case it spells, could run the rule of one case while the tool reads
/// the value of another.
fn pick_case<'a>(branch: &'a Branch, value: Option<&Value>, context: &ArgContext<'_>) -> Pick<'a> {
    let cases = || {
        branch
            .cases
            .keys()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let value = match value {
        None | Some(Value::Null) => {
            return match &branch.otherwise {
                Some(o) => Pick::Otherwise(o),
                None => Pick::Refused(format!("is required: one of {}", cases())),
            };
        }
        Some(v) => v,
    };
    let hidden = || context.hidden(&branch.argument);
    if let Some(m) = context.mismatch(&branch.argument) {
        return Pick::Refused(type_message(m, value, hidden()));
    }
    let exact = case_key(value).and_then(|k| branch.cases.get_key_value(&k));
    let exact_key = exact.map(|(k, _)| k.as_str());
    let mut lax = branch
        .cases
        .keys()
        .filter(|k| Some(k.as_str()) != exact_key && case_may_read(value, k))
        .peekable();
    if lax.peek().is_none() {
        return match (exact, &branch.otherwise) {
            (Some((_, case)), _) => Pick::Case(case),
            (None, Some(o)) => Pick::Otherwise(o),
            (None, None) => Pick::Refused(format!(
                "must be one of {}, not {}",
                cases(),
                shown(value, hidden())
            )),
        };
    }
    let named: Vec<&str> = exact_key
        .into_iter()
        .chain(lax.map(String::as_str))
        .collect();
    let value = shown(value, hidden());
    Pick::Refused(match named.as_slice() {
        [one] => format!(
            "{value} may be read as case `{one}` but is not written as that case is: write {}",
            spellings(one)
        ),
        several => format!(
            "{value} may be read as case {}, and the tool's reading would decide which: write one case's value as it is written ({})",
            several
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" or "),
            several
                .iter()
                .map(|k| spellings(k))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })
}

/// The number or boolean a case key names besides its string: `3` for `"3"`, `true` for
/// `"true"`, `1000.0` for `"1e3"` (the key is that value's JSON text, as written).
fn case_scalar(key: &str) -> Option<Value> {
    match key {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        _ if key.starts_with(|c: char| c.is_ascii_digit() || c == '-') && key.trim() == key => {
            serde_json::from_str::<serde_json::Number>(key)
                .ok()
                .map(Value::Number)
        }
        _ => None,
    }
}

/// Whether a lax reader may take `value` for the case `key`: its string, or the number or
/// boolean the key names.
fn case_may_read(value: &Value, key: &str) -> bool {
    value.as_str() == Some(key) || case_scalar(key).is_some_and(|s| lax::may_read_as(value, &s))
}

/// How to write a value that picks the case `key`, for messages.
fn spellings(key: &str) -> String {
    let string = Value::String(key.to_owned());
    match case_scalar(key) {
        Some(s) if serde_json::to_string(&s).is_ok_and(|text| text == key) => {
            format!("`{key}` or `{string}`")
        }
        _ => format!("`{string}`"),
    }
}

/// Runs every argument check; arguments that are not an object count as having no argument.
fn check_arguments(
    checks: &[ArgCheck],
    arguments: &Value,
    context: &ArgContext<'_>,
    out: &mut Vec<Violation>,
) {
    for check in checks {
        let path = json_path(&check.name);
        let given = arguments.get(&check.name).filter(|v| !v.is_null());
        let rule = &check.rule;
        let hidden = || context.hidden(&check.name);
        let value = match given {
            Some(v) => v,
            None if rule.required => {
                out.push(Violation {
                    path: path.clone(),
                    message: "is required".into(),
                });
                continue;
            }
            // Left out: checked as its default, the value the tool acts on (a forbidden
            // argument left out is fine).
            None => match context.default(&check.name) {
                Some(d) if !rule.forbidden => d,
                _ => continue,
            },
        };
        let defaulted = given.is_none();
        let mut fail = |message: String| {
            let message = if defaulted {
                format!(
                    "{message} (it was left out, and the tool takes its default; send the argument with an allowed value)"
                )
            } else {
                message
            };
            out.push(Violation {
                path: path.clone(),
                message,
            });
        };
        // A value the tool cannot read as its type fails every check on it in one message.
        if let Some(m) = context.mismatch(&check.name) {
            let message = type_message(m, value, hidden());
            push_once(out, Violation { path, message });
            continue;
        }
        if rule.forbidden {
            fail("must not be given".into());
            continue;
        }
        // Admitting checks pass only for a value of the listed value's own JSON kind.
        if let Some(allowed) = &rule.one_of
            && !allowed.iter().any(|a| lax::same_value(a, value))
        {
            let list = allowed
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            fail(format!(
                "must be one of {list}, not {}",
                shown(value, hidden())
            ));
        }
        // A refusing check refuses any value a lax reader may take for a refused one.
        if let Some(refused) = &rule.not_enum
            && let Some(r) = refused.iter().find(|r| lax::may_read_as(value, r))
        {
            fail(if hidden() {
                "must not be (redacted)".to_owned()
            } else if value == r {
                format!("must not be {}", json_text(Some(value)))
            } else {
                format!(
                    "must not be {}, and a tool may read {} as it",
                    json_text(Some(r)),
                    json_text(Some(value))
                )
            });
        }
        if rule.pattern.is_some() || rule.prefix.is_some() {
            match value.as_str() {
                None => fail(format!("must be a string, not {}", type_name(value))),
                Some(s) => {
                    if let (Some(re), Some(p)) = (&check.regex, &rule.pattern)
                        && !re.is_match(s)
                    {
                        fail(format!(
                            "{} does not match the pattern `{p}`",
                            shown(value, hidden())
                        ));
                    }
                    if let Some(prefix) = &rule.prefix
                        && !s.starts_with(prefix.as_str())
                    {
                        fail(format!(
                            "must start with `{prefix}`, not {}",
                            shown(value, hidden())
                        ));
                    }
                }
            }
        }
        if rule.min.is_some() || rule.max.is_some() {
            match value.as_f64() {
                None => fail(format!("must be a number, not {}", type_name(value))),
                Some(n) => {
                    let n_text = || {
                        if hidden() {
                            "(redacted)".to_owned()
                        } else {
                            n.to_string()
                        }
                    };
                    if let Some(min) = rule.min
                        && n < min
                    {
                        fail(format!("must be at least {min}, not {}", n_text()));
                    }
                    if let Some(max) = rule.max
                        && n > max
                    {
                        fail(format!("must be at most {max}, not {}", n_text()));
                    }
                }
            }
        }
        if let Some(limit) = rule.max_length {
            let len = match value {
                Value::String(s) => Some(s.chars().count() as u64),
                Value::Array(a) => Some(a.len() as u64),
                _ => None,
            };
            match len {
                None => fail(format!(
                    "must be a string or an array, not {}",
                    type_name(value)
                )),
                Some(len) if len > limit && hidden() => {
                    fail(format!("is longer than the maximum of {limit}"))
                }
                Some(len) if len > limit => {
                    fail(format!("is {len} long, over the maximum of {limit}"))
                }
                Some(_) => {}
            }
        }
    }
}

impl Explanation {
    /// The explanation as a person reads it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let d = &self.decision;
        out.push_str(&format!("tool: {}\n", self.tool));
        out.push_str("matching selectors, highest precedence first:\n");
        if self.candidates.is_empty() {
            out.push_str("  (none: the policy's default applies)\n");
        }
        for (i, c) in self.candidates.iter().enumerate() {
            let (mark, note) = if i == 0 {
                ("->", "decides")
            } else {
                ("  ", "matches, but a rule above takes precedence")
            };
            out.push_str(&format!(
                "  {mark} {} [{}] at {}: {note}\n",
                c.selector, c.tier, c.pointer
            ));
        }
        if !self.not_matching.is_empty() {
            out.push_str("other rules:\n");
            for n in &self.not_matching {
                out.push_str(&format!("     {} [{}]: {}\n", n.selector, n.tier, n.why));
            }
        }
        if let Some(branch) = &self.branch {
            out.push_str(&format!("branch: {branch}\n"));
        }
        out.push_str(&format!(
            "rule: {} at {} (line {}, column {})\n",
            d.rule.selector, d.rule.pointer, d.rule.line, d.rule.column
        ));
        for l in &self.limits {
            let state = d.limits.iter().find(|s| s.counter == l.counter);
            let used = state.map_or(0, |s| s.used);
            match l.counts {
                Counts::Calls => out.push_str(&format!(
                    "limit: {} scope={} key={}: {used}/{} per {} counting this call\n",
                    l.counter,
                    l.scope,
                    l.key,
                    l.max,
                    window_text(Duration::from_secs(l.window_seconds))
                )),
                Counts::Errors => out.push_str(&format!(
                    "limit: {} scope={} key={}: {used}/{} upstream errors per {} (counts errors: the call is refused once {} lie in the window; its own error would count when it is answered)\n",
                    l.counter,
                    l.scope,
                    l.key,
                    l.max,
                    window_text(Duration::from_secs(l.window_seconds)),
                    l.max
                )),
            }
        }
        out.push_str(&format!("decision: {}\n", d.kind.name()));
        if let Some(reason) = &d.reason {
            out.push_str(&format!("reason: {reason}\n"));
        }
        match &d.kind {
            DecisionKind::RateLimited { retry_after }
            | DecisionKind::ErrorLimited { retry_after } => {
                out.push_str(&format!("retry in: {}\n", duration_text(*retry_after)));
            }
            DecisionKind::ApprovalRequired {
                timeout,
                on_timeout,
                ..
            } => {
                out.push_str(&format!(
                    "approval: held up to {}, then {}\n",
                    duration_text(*timeout),
                    match on_timeout {
                        TimeoutOutcome::Deny => "deny",
                        TimeoutOutcome::Allow => "allow",
                    }
                ));
            }
            DecisionKind::InvalidArguments { violations } => {
                for v in violations {
                    out.push_str(&format!("violation: {} {}\n", v.path, v.message));
                }
            }
            DecisionKind::StoreUnavailable | DecisionKind::Allow | DecisionKind::Deny => {}
        }
        if let Some(f) = &d.store_unavailable {
            out.push_str(&format!(
                "counter store: {} unavailable ({}): {}\n",
                f.store,
                f.reason,
                match f.outcome {
                    FailMode::Closed => "fail closed, the call is refused",
                    FailMode::Open => "fail open, the call goes on uncounted",
                }
            ));
        }
        out
    }
}
