//! Approvals across replicas (docs/approvals.md, "Several replicas"): with a shared store
//! (`--store redis://…`), every replica publishes its pending approvals, lists every replica's,
//! and passes a verdict taken by its admin API to the replica holding the call.
//!
//! The replica holding a call stays the one arbiter of its approval: a verdict from another
//! replica is carried to it (a request in its inbox, which it polls every [`POLL`]) and decided
//! there by the same [`Registry::decide`](super::Registry::decide) as a local one, audited in
//! its log with the replica that took the verdict and the operator. So the race rules are the
//! local ones: the first verdict wins and the second gets 409, a verdict at or after the
//! deadline gets 409 (expired); the holding replica notes how each entry ended for a minute,
//! so a verdict that arrives after the entry left the store gets the same 409. What is new:
//! - the holding replica is gone (its heartbeat expired, [`SharedApprovals::heartbeat`]): its
//!   entries are not listed, and a verdict for one gets 410 at once;
//! - the holding replica does not take the request within [`RELAY_WAIT`]: the request is
//!   withdrawn (it can then never be taken) and the operator gets 504, nothing decided;
//! - the store cannot answer: lists show this replica's own calls and say the store is down;
//!   verdicts for other replicas' calls get 503 (fail closed); verdicts for this replica's own
//!   calls are decided here as always.
//!
//! The store side is behind [`SharedApprovals`] (the Redis one is `tollgate-store-redis`'s
//! `approvals` module; the CLI joins the two), so the gateway does not depend on Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::core::Gateway;

use super::{Decider, VerdictKind};

/// How often a replica polls its inbox (and publishes what changed).
pub const POLL: Duration = Duration::from_millis(50);

/// How often a replica refreshes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// The longest the replica that took a verdict waits for the holding replica to take it.
pub const RELAY_WAIT: Duration = Duration::from_secs(3);

/// Once taken, the longest it waits for the holding replica's answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The most approvals one replica publishes at once (beyond, a held call is decided on its own
/// replica only, and the log says so). The per-grant cap (`--max-held-per-grant`) comes first.
pub const MAX_PUBLISHED: usize = 1024;

/// Publications waiting for the replica's thread (more are dropped, and said in the log).
const OPS_QUEUE: usize = 4096;

/// One replica's pending entry as the store lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub replica: String,
    pub id: u64,
    /// The entry as published (JSON text).
    pub entry: String,
    /// Time left before its deadline, on the store's clock.
    pub remaining: Duration,
}

/// What became of a verdict sent to another replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Waiting in the replica's inbox under this number.
    Queued(String),
    /// The entry ended (decided, expired, withdrawn): how, as its replica said.
    Ended(String),
    /// The replica publishes no such entry (it ended long ago, or was never there).
    Gone,
    /// The replica's heartbeat expired.
    Down,
    /// The replica's inbox is full.
    Full,
}

/// The shared store's side (blocking calls, each bounded by the store's timeouts).
pub trait SharedApprovals: Send + Sync {
    /// This replica's name.
    fn replica(&self) -> &str;
    /// The store as people name it (`redis://127.0.0.1:6379/0`).
    fn store(&self) -> &str;
    fn publish(&self, id: u64, entry: &str, ttl: Duration) -> Result<(), String>;
    /// Removes entry `id`, noting how it ended (`what`, as a 409 says it) for a while.
    fn unpublish(&self, id: u64, what: &str) -> Result<(), String>;
    fn heartbeat(&self) -> Result<(), String>;
    /// This replica stops: its heartbeat goes.
    fn leave(&self) -> Result<(), String>;
    fn list(&self) -> Result<Vec<Listed>, String>;
    fn send(&self, replica: &str, id: u64, request: &str) -> Result<Sent, String>;
    /// `true` when the request was withdrawn before it was taken.
    fn cancel(&self, n: &str) -> Result<bool, String>;
    fn answer_of(&self, n: &str) -> Result<Option<String>, String>;
    /// The requests waiting for this replica (each taken once).
    fn take(&self) -> Result<Vec<(String, String)>, String>;
    fn answer(&self, n: &str, answer: &str) -> Result<(), String>;
}

/// A publication for the replica's thread.
#[derive(Debug)]
pub(crate) enum Op {
    Publish {
        id: u64,
        entry: String,
        ttl: Duration,
    },
    Unpublish {
        id: u64,
        what: String,
    },
}

/// The registry's link to the store.
pub(crate) struct Sharing {
    pub(crate) bus: Arc<dyn SharedApprovals>,
    pub(crate) ops: SyncSender<Op>,
    /// The gateway clock's scale: a deadline in its time is `ttl / scale` of real time.
    pub(crate) scale: f64,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("replica", &self.bus.replica())
            .finish_non_exhaustive()
    }
}

/// The running replica thread; [`Replica::stop`] (or dropping it) ends it.
#[derive(Debug)]
pub struct Replica {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    /// Stops the thread: the last publications are made and the heartbeat removed.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.halt();
    }
}

/// An approval's reference in a replica's API: `ID` (this replica's) or `ID@REPLICA`.
pub fn parse_ref(text: &str) -> Option<(u64, Option<&str>)> {
    match text.split_once('@') {
        None => text.parse().ok().map(|id| (id, None)),
        Some((id, replica)) if !replica.is_empty() => id.parse().ok().map(|id| (id, Some(replica))),
        Some(_) => None,
    }
}

/// Starts sharing `gateway`'s approvals through `bus`: the registry publishes from now on and
/// a thread polls the inbox, publishes and keeps the heartbeat. `clock` is the gateway's.
pub fn start(gateway: &Arc<Gateway>, bus: Arc<dyn SharedApprovals>, clock: Clock) -> Replica {
    let (ops, rx) = std::sync::mpsc::sync_channel(OPS_QUEUE);
    gateway.approvals().share(Sharing {
        bus: Arc::clone(&bus),
        ops,
        scale: clock.scale(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (gateway, stop) = (Arc::clone(gateway), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("tollgate-replica".into())
            .spawn(move || run(&gateway, &*bus, &rx, clock, &stop))
            .ok()
    };
    if thread.is_none() {
        tracing::error!(
            "cannot start the thread that shares approvals with the other replicas: this replica's held calls can be decided here only"
        );
    }
    Replica { stop, thread }
}

fn run(
    gateway: &Gateway,
    bus: &dyn SharedApprovals,
    rx: &Receiver<Op>,
    clock: Clock,
    stop: &AtomicBool,
) {
    let mut last_beat: Option<Instant> = None;
    let mut store_down = false;
    let recovered = std::cell::Cell::new(false);
    let mut report = |result: Result<(), String>| match result {
        Ok(()) if store_down => {
            store_down = false;
            recovered.set(true);
            tracing::warn!(
                "shared approvals: the store {} answers again; this replica's held calls are published again",
                bus.store()
            );
        }
        Err(e) if !store_down => {
            store_down = true;
            tracing::error!(
                "shared approvals: the store cannot answer ({e}): other replicas cannot see or decide this replica's held calls until it does; decide them here"
            );
        }
        _ => {}
    };
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY) && !stopping {
            report(bus.heartbeat());
            last_beat = Some(Instant::now());
        }
        // Publications, in their order (bounded by the queue).
        let mut first = if stopping {
            rx.try_recv().ok()
        } else {
            match rx.recv_timeout(POLL) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        while let Some(op) = first.take().or_else(|| rx.try_recv().ok()) {
            report(match op {
                Op::Publish { id, entry, ttl } => bus.publish(id, &entry, ttl),
                Op::Unpublish { id, what } => bus.unpublish(id, &what),
            });
        }
        if stopping {
            report(bus.leave());
            return;
        }
        if recovered.replace(false) {
            // What was published before may be lost (a Redis restarted without persistence),
            // and what was held meanwhile never was: publish every pending call again. Later
            // removals are queued behind this, so none is undone.
            republish(gateway, bus, clock);
        }
        match bus.take() {
            Ok(requests) => {
                for (n, request) in requests {
                    let answer = take_verdict(gateway, &request, clock.now());
                    report(bus.answer(&n, &answer.to_string()));
                }
            }
            Err(e) => report(Err(e)),
        }
    }
}

/// Publishes every call this replica holds now (after the store came back).
fn republish(gateway: &Gateway, bus: &dyn SharedApprovals, clock: Clock) {
    let now = ms(clock.now());
    let (pending, _) = gateway.approvals().list(now);
    let registry = gateway.approvals();
    for a in pending.iter().filter(|a| registry.is_published(a.id)) {
        let ttl = ttl_of(a.deadline_ms.saturating_sub(now), clock.scale());
        if let Err(e) = bus.publish(a.id, &entry_text(a, bus.replica()), ttl) {
            tracing::warn!(
                "shared approvals: approval {} not published again: {e}",
                a.id
            );
            return;
        }
    }
}

/// What a replica publishes of a held call: what its own API shows (the arguments redacted by
/// the rule's `redact` list), its name, and the time it may wait in all.
pub(crate) fn entry_text(a: &super::PendingApproval, replica: &str) -> String {
    let mut entry = json!(a);
    entry["replica"] = json!(replica);
    entry["timeout_ms"] = json!(a.deadline_ms.saturating_sub(a.created_at_ms));
    entry.to_string()
}

/// The real time `ms` of the gateway's clock (scaled by `scale`) take.
pub(crate) fn ttl_of(ms: u64, scale: f64) -> Duration {
    Duration::from_millis(ms).div_f64(scale)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Decides one verdict another replica took (its request), here: the answer as the admin API
/// gives it, `{"status": …, "body": …}`.
fn take_verdict(gateway: &Gateway, request: &str, now: Duration) -> Value {
    let bad = |why: &str| json!({"status": 400, "body": {"error": why}});
    let Ok(r) = serde_json::from_str::<Value>(request) else {
        return bad("the request is not JSON");
    };
    let (Some(id), Some(approver), Some(from)) =
        (r["id"].as_u64(), r["approver"].as_str(), r["from"].as_str())
    else {
        return bad("the request lacks `id`, `approver` or `from`");
    };
    let kind = match r["verdict"].as_str() {
        Some("approved") => VerdictKind::Approved,
        Some("denied") => VerdictKind::Denied,
        _ => return bad("the request's `verdict` is neither `approved` nor `denied`"),
    };
    match gateway.decide_approval_at(
        id,
        kind,
        approver,
        r["reason"].as_str(),
        now,
        Decider::Operator,
        Some(from),
    ) {
        Ok(decided) => {
            // `replica` (the verdict's) is the replica that took it; `held_by` this one.
            let mut body = json!(decided);
            body["held_by"] = json!(gateway.approvals().replica_name());
            json!({"status": 200, "body": body})
        }
        Err(e) => json!({"status": e.status(), "body": {"error": e.to_string()}}),
    }
}

/// Carries an operator's verdict on approval `id` of replica `replica` there and waits
/// (bounded) for its answer: `(status, body)` as the admin API answers.
pub fn relay(
    bus: &dyn SharedApprovals,
    replica: &str,
    id: u64,
    kind: VerdictKind,
    approver: &str,
    reason: Option<&str>,
) -> (u16, Value) {
    let err = |status: u16, message: String| (status, json!({"error": message}));
    let unavailable = |e: String| {
        err(
            503,
            format!(
                "approval {id}@{replica} is held by replica `{replica}` and the shared store cannot carry the verdict there ({e}); nothing was decided. Decide it on replica `{replica}` itself, or again once the store answers"
            ),
        )
    };
    let request = json!({"id": id, "verdict": kind.name(), "approver": approver,
        "reason": reason, "from": bus.replica()});
    let n = match bus.send(replica, id, &request.to_string()) {
        Ok(Sent::Queued(n)) => n,
        Ok(Sent::Ended(what)) => {
            return err(
                409,
                super::ApprovalError::NotPending { id, what }.to_string(),
            );
        }
        Ok(Sent::Gone) => {
            return err(
                410,
                format!(
                    "approval {id}@{replica} is gone: replica `{replica}` no longer holds it (decided, expired or withdrawn); list the pending ones again"
                ),
            );
        }
        Ok(Sent::Down) => {
            return err(
                410,
                format!(
                    "approval {id}@{replica} is gone: replica `{replica}` stopped answering (its heartbeat expired), and the calls it held ended with it; nothing was forwarded"
                ),
            );
        }
        Ok(Sent::Full) => {
            return err(
                503,
                format!(
                    "replica `{replica}` is not taking verdicts (its inbox is full); nothing was decided. Decide approval {id} on replica `{replica}` itself"
                ),
            );
        }
        Err(e) => return unavailable(e),
    };
    let started = Instant::now();
    let mut taken = false;
    loop {
        match bus.answer_of(&n) {
            Ok(Some(text)) => {
                let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let status = answer["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(502);
                return (status, answer["body"].clone());
            }
            Ok(None) => {}
            Err(e) if !taken => {
                // Withdraw it if we can: then it is certain nothing was decided.
                if bus.cancel(&n).unwrap_or(false) {
                    return unavailable(e);
                }
                taken = true;
            }
            Err(_) => {}
        }
        if !taken && started.elapsed() >= RELAY_WAIT {
            match bus.cancel(&n) {
                Ok(true) => {
                    return err(
                        504,
                        format!(
                            "replica `{replica}` did not take the verdict on approval {id} within {} s; it was withdrawn and nothing was decided. The replica may be overloaded or stopping: try again, or decide on it directly",
                            RELAY_WAIT.as_secs()
                        ),
                    );
                }
                // Taken meanwhile: its answer is on its way.
                Ok(false) => taken = true,
                Err(e) => return unavailable(e),
            }
        }
        if started.elapsed() >= RELAY_WAIT + ANSWER_WAIT {
            return err(
                504,
                format!(
                    "no answer from replica `{replica}` within {} s about the verdict on approval {id}, which it took (or which could not be withdrawn: the store stopped answering): whether it was recorded is unknown here; see `GET /admin/approvals/{id}@{replica}` or the replica's audit log",
                    (RELAY_WAIT + ANSWER_WAIT).as_secs()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Another replica's entry as this replica's API lists it: `id` becomes `ID@REPLICA`, and its
/// instants move to this replica's clock (`now_ms`) by the time it has left on the store's.
pub fn listed_entry(l: &Listed, now_ms: u64) -> Option<Value> {
    let mut entry: Value = serde_json::from_str(&l.entry).ok()?;
    let timeout = entry["timeout_ms"].as_u64().unwrap_or(0);
    let deadline = now_ms.saturating_add(u64::try_from(l.remaining.as_millis()).unwrap_or(0));
    let map = entry.as_object_mut()?;
    map.remove("timeout_ms");
    map.insert("id".into(), json!(format!("{}@{}", l.id, l.replica)));
    map.insert("replica".into(), json!(l.replica));
    map.insert("deadline_ms".into(), json!(deadline));
    map.insert(
        "created_at_ms".into(),
        json!(deadline.saturating_sub(timeout)),
    );
    Some(entry)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    #[test]
    fn refs_are_an_id_or_an_id_at_a_replica() {
        assert_eq!(parse_ref("7"), Some((7, None)));
        assert_eq!(parse_ref("7@gw-b"), Some((7, Some("gw-b"))));
        assert_eq!(parse_ref("7@"), None);
        assert_eq!(parse_ref("x@gw-b"), None);
        assert_eq!(parse_ref("-1"), None);
    }

    #[test]
    fn a_listed_entry_takes_this_replicas_clock_and_a_replica_qualified_id() {
        let l = Listed {
            replica: "gw-a".into(),
            id: 3,
            entry: json!({"id": 3, "tool": "t", "created_at_ms": 10, "deadline_ms": 610, "timeout_ms": 600}).to_string(),
            remaining: Duration::from_millis(500),
        };
        let v = listed_entry(&l, 1000).unwrap();
        assert_eq!(v["id"], "3@gw-a");
        assert_eq!(v["replica"], "gw-a");
        assert_eq!(v["deadline_ms"], 1500);
        assert_eq!(v["created_at_ms"], 900);
        assert!(v.get("timeout_ms").is_none());
    }
}
