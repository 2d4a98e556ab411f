//! `tollgate gateway --store redis://… --replica NAME`: the held calls of this replica shared
//! with the other replicas through the Redis store (docs/approvals.md, "Several replicas"). This
//! joins the gateway's [`SharedApprovals`] to `tollgate-store-redis`'s approvals.

use std::sync::Arc;
use std::time::Duration;

use tollgate_gateway::approvals::replicas::{Listed, Sent, SharedApprovals};
use tollgate_store_redis::RedisStore;
use tollgate_store_redis::approvals::{self as redis_approvals, RedisApprovals};

/// The Redis side of one replica's shared approvals.
pub struct Shared(pub RedisApprovals);

impl Shared {
    /// Replica `name` (or, by default, `HOSTNAME-PID`) over `store`.
    pub fn new(store: Arc<RedisStore>, name: Option<&str>) -> anyhow::Result<Shared> {
        let name = name.map_or_else(default_name, str::to_owned);
        RedisApprovals::new(store, &name)
            .map(Shared)
            .map_err(|e| anyhow::anyhow!("--replica: {e}"))
    }
}

/// `HOSTNAME-PID`, with the characters a replica's name cannot hold left out.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "gateway".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

impl SharedApprovals for Shared {
    fn replica(&self) -> &str {
        self.0.replica()
    }
    fn store(&self) -> &str {
        self.0.store_name()
    }
    fn publish(&self, id: u64, entry: &str, ttl: Duration) -> Result<(), String> {
        self.0.publish(id, entry, ttl)
    }
    fn unpublish(&self, id: u64, what: &str) -> Result<(), String> {
        self.0.unpublish(id, what)
    }
    fn heartbeat(&self) -> Result<(), String> {
        self.0.heartbeat()
    }
    fn leave(&self) -> Result<(), String> {
        self.0.leave()
    }
    fn list(&self) -> Result<Vec<Listed>, String> {
        Ok(self
            .0
            .list()?
            .into_iter()
            .map(|l| Listed {
                replica: l.replica,
                id: l.id,
                entry: l.entry,
                remaining: l.remaining,
            })
            .collect())
    }
    fn send(&self, replica: &str, id: u64, request: &str) -> Result<Sent, String> {
        Ok(match self.0.send(replica, id, request)? {
            redis_approvals::Sent::Queued(n) => Sent::Queued(n),
            redis_approvals::Sent::Ended(what) => Sent::Ended(what),
            redis_approvals::Sent::Gone => Sent::Gone,
            redis_approvals::Sent::Down => Sent::Down,
            redis_approvals::Sent::Full => Sent::Full,
        })
    }
    fn cancel(&self, n: &str) -> Result<bool, String> {
        self.0.cancel(n)
    }
    fn answer_of(&self, n: &str) -> Result<Option<String>, String> {
        self.0.answer_of(n)
    }
    fn take(&self) -> Result<Vec<(String, String)>, String> {
        self.0.take()
    }
    fn answer(&self, n: &str, answer: &str) -> Result<(), String> {
        self.0.answer(n, answer)
    }
}
