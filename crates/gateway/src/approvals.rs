//! Pending approvals, shared by every session of one [`Gateway`](crate::core::Gateway)
//! (docs/approvals.md).
//!
//! A session core that holds a call for a human registers it here; operators list, approve
//! and deny through the gateway's in-process API (which the admin HTTP API, the CLI, the
//! console and the scenario runner all use); the owning session is woken, takes the verdict
//! and acts on it (forwards, or answers with a refusal). The registry only keeps state and
//! order: it never reads a clock (every method takes `now`), never forwards anything, and
//! writes no audit record itself: the gateway passes it a closure that does, called under the
//! registry's lock so that the audit log's order is the order of the transitions.
//!
//! Ids come from a counter (1, 2, ...), so an id below the next one that is not pending was
//! decided (or withdrawn) already: such ids answer "no longer pending", others "unknown".
//! Expiry by time is the owning session's job (its `tick`, on its clock), so virtual-time runs
//! expire approvals at exactly their deadline; an operator deciding at or after the deadline is
//! told the approval expired.

pub mod replicas;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tollgate_policy::{RuleRef, TimeoutOutcome};

/// How many decided approvals the registry remembers for the console and the feed.
pub const RECENT: usize = 50;

/// One call waiting for a human.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingApproval {
    pub id: u64,
    pub tool: String,
    /// The call's arguments with the rule's `redact` values replaced by `"[redacted]"`.
    pub arguments: Value,
    pub grant: String,
    pub session: String,
    /// The agent's JSON-RPC request id.
    pub request_id: Value,
    /// The rule that asked for approval.
    pub rule: RuleRef,
    /// The rule's reason, if it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_reason: Option<String>,
    /// `operators` or `elicitation` (the client's user decides; operators cannot).
    pub via: &'static str,
    pub on_timeout: TimeoutOutcome,
    /// Milliseconds on the gateway's clock (since it started; virtual time in scenarios).
    pub created_at_ms: u64,
    pub deadline_ms: u64,
    /// The `seq` of the audit record of the decision that held the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_seq: Option<u64>,
}

/// How a held call was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Approved,
    Denied,
    /// Nobody decided in time; the policy's `on_timeout` says what follows.
    Expired,
    /// The agent cancelled the call, or its session ended, before anybody decided.
    Withdrawn,
}

impl VerdictKind {
    pub fn name(self) -> &'static str {
        match self {
            VerdictKind::Approved => "approved",
            VerdictKind::Denied => "denied",
            VerdictKind::Expired => "expired",
            VerdictKind::Withdrawn => "withdrawn",
        }
    }
}

/// A verdict: what, who, why, when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub verdict: VerdictKind,
    /// The approver's name (from `--admin-tokens`), `elicitation` when the client's user
    /// answered, `None` for an expiry.
    pub approver: Option<String>,
    /// The approver's reason, if they gave one.
    pub reason: Option<String>,
    pub decided_at_ms: u64,
    /// With approvals shared across replicas: the replica whose API took the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// A decided approval, as the console and the feed show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecidedApproval {
    #[serde(flatten)]
    pub approval: PendingApproval,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Why an operator's decision was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval has the id `{id}`: list the pending ones with `tollgate approvals list`")]
    NotFound { id: u64 },
    #[error("approval {id} is no longer pending: {what}")]
    NotPending { id: u64, what: String },
    #[error(
        "approval {id} is waiting for the client's own user (the policy asks through elicitation): operators cannot decide it"
    )]
    Elicitation { id: u64 },
    #[error("approval {id} was not recorded: the audit log cannot be written ({error})")]
    Audit { id: u64, error: String },
}

impl ApprovalError {
    /// The HTTP status the admin API answers with.
    pub fn status(&self) -> u16 {
        match self {
            ApprovalError::NotFound { .. } => 404,
            ApprovalError::NotPending { .. } | ApprovalError::Elicitation { .. } => 409,
            ApprovalError::Audit { .. } => 503,
        }
    }
}

/// Who decides: an operator through the API, or the client's user through elicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    Operator,
    Elicitation,
}

#[derive(Debug)]
struct Entry {
    approval: PendingApproval,
    core: u64,
    verdict: Option<Verdict>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    recent: VecDeque<DecidedApproval>,
    wakers: HashMap<u64, Arc<Notify>>,
    /// The ids published to the other replicas (at most `replicas::MAX_PUBLISHED`).
    published: HashSet<u64>,
}

/// The registry of one gateway.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Value>,
    pending: Gauge<i64, AtomicI64>,
    /// Set once when approvals are shared across replicas (`replicas.rs`).
    sharing: OnceLock<replicas::Sharing>,
}

impl Registry {
    pub fn new(pending: Gauge<i64, AtomicI64>) -> Registry {
        let (events, _) = broadcast::channel(256);
        Registry {
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            events,
            pending,
            sharing: OnceLock::new(),
        }
    }

    /// Shares this registry's approvals with the other replicas from now on.
    pub(crate) fn share(&self, sharing: replicas::Sharing) {
        let _ = self.sharing.set(sharing);
    }

    pub(crate) fn sharing(&self) -> Option<&replicas::Sharing> {
        self.sharing.get()
    }

    /// Whether approval `id` is published to the other replicas.
    pub(crate) fn is_published(&self, id: u64) -> bool {
        self.lock().published.contains(&id)
    }

    /// This replica's name, when approvals are shared across replicas.
    pub fn replica_name(&self) -> Option<&str> {
        self.sharing.get().map(|s| s.bus.replica())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The waker of session core `core`: notified whenever one of its held calls is decided.
    pub fn waker(&self, core: u64) -> Arc<Notify> {
        Arc::clone(self.lock().wakers.entry(core).or_default())
    }

    /// Reserves the next id (before the decision that holds the call is audited).
    pub fn allocate(&self) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        id
    }

    /// How many calls of `grant` are waiting now.
    pub fn held_by(&self, grant: &str) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.verdict.is_none() && e.approval.grant == grant)
            .count()
    }

    /// Registers a held call of session core `core`.
    pub fn insert(&self, core: u64, approval: PendingApproval) {
        let event = json!({"type": "held", "approval": approval});
        let mut inner = self.lock();
        if let Some(sharing) = self.sharing.get() {
            self.publish(&mut inner, sharing, &approval);
        }
        inner.entries.insert(
            approval.id,
            Entry {
                approval,
                core,
                verdict: None,
            },
        );
        drop(inner);
        self.pending.inc();
        let _ = self.events.send(event);
    }

    /// The calls waiting at `now` (oldest first) and the latest decisions (newest first).
    pub fn list(&self, now_ms: u64) -> (Vec<PendingApproval>, Vec<DecidedApproval>) {
        let inner = self.lock();
        let pending = inner
            .entries
            .values()
            .filter(|e| e.verdict.is_none() && e.approval.deadline_ms > now_ms)
            .map(|e| e.approval.clone())
            .collect();
        let recent = inner.recent.iter().rev().cloned().collect();
        (pending, recent)
    }

    /// One approval, pending or recently decided.
    pub fn get(&self, id: u64) -> Option<Value> {
        let inner = self.lock();
        if let Some(e) = inner.entries.get(&id) {
            return serde_json::to_value(&e.approval).ok();
        }
        inner
            .recent
            .iter()
            .find(|d| d.approval.id == id)
            .and_then(|d| serde_json::to_value(d).ok())
    }

    /// Decides approval `id` (approve or deny) at `now_ms`. `audit` writes the record and is
    /// called under the registry's lock; when it fails an approval is not taken (nothing is
    /// forwarded unaudited) while a denial still is (refusing is always safe).
    pub fn decide(
        &self,
        id: u64,
        verdict: Verdict,
        decider: Decider,
        audit: impl FnOnce(&PendingApproval, &Verdict) -> Result<(), String>,
    ) -> Result<DecidedApproval, ApprovalError> {
        let mut inner = self.lock();
        let next_id = inner.next_id;
        let Some(entry) = inner.entries.get_mut(&id) else {
            if let Some(d) = inner.recent.iter().find(|d| d.approval.id == id) {
                return Err(ApprovalError::NotPending {
                    id,
                    what: describe(&d.verdict),
                });
            }
            if id > 0 && id < next_id {
                return Err(ApprovalError::NotPending {
                    id,
                    what: "it was decided, withdrawn or expired some time ago".into(),
                });
            }
            return Err(ApprovalError::NotFound { id });
        };
        if let Some(v) = &entry.verdict {
            return Err(ApprovalError::NotPending {
                id,
                what: describe(v),
            });
        }
        if verdict.decided_at_ms >= entry.approval.deadline_ms {
            return Err(ApprovalError::NotPending {
                id,
                what: format!(
                    "it expired at {:.3}s (on timeout: {})",
                    entry.approval.deadline_ms as f64 / 1000.0,
                    outcome_name(entry.approval.on_timeout)
                ),
            });
        }
        let from_elicitation = entry.approval.via == "elicitation";
        if decider == Decider::Operator && from_elicitation {
            return Err(ApprovalError::Elicitation { id });
        }
        if let Err(error) = audit(&entry.approval, &verdict)
            && verdict.verdict == VerdictKind::Approved
        {
            return Err(ApprovalError::Audit { id, error });
        }
        entry.verdict = Some(verdict.clone());
        let decided = DecidedApproval {
            approval: entry.approval.clone(),
            verdict,
        };
        let core = entry.core;
        self.finish(&mut inner, &decided);
        if let Some(w) = inner.wakers.get(&core) {
            w.notify_one();
        }
        Ok(decided)
    }

    /// Ends approval `id` without an operator: an expiry or a withdrawal, if it is still
    /// undecided (then `audit` is called). Either way the entry leaves the registry and its
    /// verdict is returned (a decision that came first wins).
    pub fn conclude(
        &self,
        id: u64,
        verdict: Verdict,
        audit: impl FnOnce(&PendingApproval, &Verdict),
    ) -> Option<Verdict> {
        let mut inner = self.lock();
        let entry = inner.entries.remove(&id)?;
        if let Some(v) = entry.verdict {
            return Some(v);
        }
        audit(&entry.approval, &verdict);
        let decided = DecidedApproval {
            approval: entry.approval,
            verdict: verdict.clone(),
        };
        self.finish(&mut inner, &decided);
        Some(verdict)
    }

    /// Takes the decided approvals of session core `core` (they leave the registry).
    pub fn take_decided(&self, core: u64) -> Vec<(u64, Verdict)> {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.core == core && e.verdict.is_some())
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let e = inner.entries.remove(&id)?;
                e.verdict.map(|v| (id, v))
            })
            .collect()
    }

    /// Session core `core` is gone: forget its waker.
    pub fn forget_core(&self, core: u64) {
        self.lock().wakers.remove(&core);
    }

    /// The live feed: `{"type": "held", "approval": …}` and `{"type": "decided", "approval": …}`.
    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.events.subscribe()
    }

    /// Queues the publication of a held call for the other replicas (its redacted arguments,
    /// as this API shows them, and no more), for as long as it may wait.
    fn publish(&self, inner: &mut Inner, sharing: &replicas::Sharing, a: &PendingApproval) {
        if inner.published.len() >= replicas::MAX_PUBLISHED {
            tracing::warn!(
                "approval {} is not shared with the other replicas: this replica already shares {} (the most); decide it here",
                a.id,
                replicas::MAX_PUBLISHED
            );
            return;
        }
        let timeout = a.deadline_ms.saturating_sub(a.created_at_ms);
        let op = replicas::Op::Publish {
            id: a.id,
            entry: replicas::entry_text(a, sharing.bus.replica()),
            ttl: replicas::ttl_of(timeout, sharing.scale),
        };
        match sharing.ops.try_send(op) {
            Ok(()) => {
                inner.published.insert(a.id);
            }
            Err(_) => tracing::warn!(
                "approval {} is not shared with the other replicas: the queue to the shared store is full; decide it here",
                a.id
            ),
        }
    }

    fn finish(&self, inner: &mut Inner, decided: &DecidedApproval) {
        let id = decided.approval.id;
        if inner.published.remove(&id)
            && let Some(sharing) = self.sharing.get()
            && sharing
                .ops
                .try_send(replicas::Op::Unpublish {
                    id,
                    what: describe(&decided.verdict),
                })
                .is_err()
        {
            // Its entry expires at its deadline anyway; a verdict sent meanwhile gets 409 here.
            tracing::warn!(
                "approval {id} stays listed on the other replicas until its deadline: the queue to the shared store is full"
            );
        }
        self.pending.dec();
        inner.recent.push_back(decided.clone());
        while inner.recent.len() > RECENT {
            inner.recent.pop_front();
        }
        let _ = self
            .events
            .send(json!({"type": "decided", "approval": decided}));
    }
}

fn outcome_name(o: TimeoutOutcome) -> &'static str {
    match o {
        TimeoutOutcome::Deny => "deny",
        TimeoutOutcome::Allow => "allow",
    }
}

fn describe(v: &Verdict) -> String {
    let at = v.decided_at_ms as f64 / 1000.0;
    match (v.verdict, &v.approver) {
        (VerdictKind::Expired, _) => format!("it expired at {at:.3}s"),
        (VerdictKind::Withdrawn, _) => format!("it was withdrawn at {at:.3}s"),
        (k, Some(who)) => format!("{who} {} it at {at:.3}s", k.name()),
        (k, None) => format!("it was {} at {at:.3}s", k.name()),
    }
}
