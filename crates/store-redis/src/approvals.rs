//! Pending approvals shared by gateway replicas (docs/approvals.md, "Several replicas"): the
//! Redis side. The gateway keeps a held call in the memory of the replica whose session holds
//! it; this publishes a description of it, lists every replica's, and carries a verdict from
//! the replica whose admin API took it to the replica holding the call, and that replica's
//! answer back. It knows nothing of approvals beyond ids and JSON text: the gateway decides.
//!
//! # Keys (after the store's prefix, `{tollgate}` by default)
//! - `:ap:e:REPLICA:ID`: one pending entry (JSON), `PX` its time left to its deadline;
//! - `:ap:x:REPLICA:ID`: how an entry ended (`alice approved it at 12.000s`), kept
//!   [`ENDED_TTL`] after it left, so a late verdict hears what happened;
//! - `:ap:idx`: the set of `REPLICA:ID` of the entries (pruned of expired ones by every list);
//! - `:ap:alive:REPLICA`: the replica's heartbeat, `PX` [`HEARTBEAT_TTL`]; a replica without one
//!   is gone (its entries are not listed, a verdict for them is refused at once);
//! - `:ap:in:REPLICA`: the replica's inbox, a list of request numbers (at most [`MAX_INBOX`]);
//! - `:ap:rq:N`: request N (JSON) until its replica takes it (or it is cancelled, or expires);
//! - `:ap:an:N`: the holding replica's answer to request N (JSON), kept [`REQUEST_TTL`];
//! - `:ap:n`: the counter request numbers come from.
//!
//! # Delivery: a polled inbox, not pub/sub
//! Redis pub/sub is fire-and-forget: a message published while the subscriber's connection is
//! being replaced is lost, and nothing tells the sender. The inbox is a list the holding
//! replica polls ([`RedisApprovals::take`], every 50 ms in the gateway): a request waits there
//! until it is taken, and the sender can withdraw it atomically ([`RedisApprovals::cancel`])
//! when it stops waiting, so a request is either taken exactly once or never: a verdict the
//! sender reported as not taken cannot be applied later. The cost is one round trip per poll.

use std::sync::Arc;
use std::time::Duration;

use crate::RedisStore;

/// How long a replica's heartbeat lasts: it is refreshed every second, so a replica is taken
/// as gone within 3 s of its last refresh.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// The longest an inbox may get: more requests for one replica are refused (it is not taking
/// them).
pub const MAX_INBOX: usize = 1024;

/// How long a request and its answer are kept.
pub const REQUEST_TTL: Duration = Duration::from_secs(30);

/// How long the note of how an entry ended is kept.
pub const ENDED_TTL: Duration = Duration::from_secs(60);

/// The most entries one list returns.
pub const MAX_LISTED: usize = 4096;

/// The most requests one take returns.
pub const MAX_TAKEN: usize = 64;

const PUBLISH: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1";

const UNPUBLISH: &str = r"
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return 1";

// ARGV: prefix (`P:ap:`), max. Answers flat triples: member, entry, time left (ms).
const LIST: &str = r"
local P = ARGV[1]
local idx = P .. 'idx'
local out = {}
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', idx)) do
  local ttl = redis.call('PTTL', P .. 'e:' .. m)
  if ttl < 0 then
    redis.call('SREM', idx, m)
  else
    local replica = string.match(m, '^(.*):[0-9]+$')
    if replica and n < tonumber(ARGV[2]) and redis.call('EXISTS', P .. 'alive:' .. replica) == 1 then
      local entry = redis.call('GET', P .. 'e:' .. m)
      if entry then
        table.insert(out, m)
        table.insert(out, entry)
        table.insert(out, tostring(ttl))
        n = n + 1
      end
    end
  end
end
return out";

// ARGV: prefix, replica, id, request, ttl ms, max inbox. Answers {status, number}.
const SEND: &str = r"
local P = ARGV[1]
local member = ARGV[2] .. ':' .. ARGV[3]
if redis.call('EXISTS', P .. 'e:' .. member) == 0 then
  local ended = redis.call('GET', P .. 'x:' .. member)
  if ended then return {'ended', ended} end
  if redis.call('EXISTS', P .. 'alive:' .. ARGV[2]) == 0 then return {'down', ''} end
  return {'gone', ''}
end
if redis.call('EXISTS', P .. 'alive:' .. ARGV[2]) == 0 then return {'down', ''} end
local inbox = P .. 'in:' .. ARGV[2]
if redis.call('LLEN', inbox) >= tonumber(ARGV[6]) then return {'full', ''} end
local n = tostring(redis.call('INCR', P .. 'n'))
redis.call('SET', P .. 'rq:' .. n, ARGV[4], 'PX', ARGV[5])
redis.call('RPUSH', inbox, n)
redis.call('PEXPIRE', inbox, ARGV[5])
return {'queued', n}";

// ARGV: prefix, replica, max. Answers flat pairs: number, request.
const TAKE: &str = r"
local P = ARGV[1]
local inbox = P .. 'in:' .. ARGV[2]
local out = {}
for _ = 1, tonumber(ARGV[3]) do
  local n = redis.call('LPOP', inbox)
  if not n then break end
  local rq = redis.call('GET', P .. 'rq:' .. n)
  if rq then
    redis.call('DEL', P .. 'rq:' .. n)
    table.insert(out, n)
    table.insert(out, rq)
  end
end
return out";

/// One replica's pending entry, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub replica: String,
    pub id: u64,
    /// The entry as published (JSON text).
    pub entry: String,
    /// Time left before the entry expires (its deadline), on Redis's clock.
    pub remaining: Duration,
}

/// What became of a request sent to another replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Waiting in the replica's inbox, under this number.
    Queued(String),
    /// The entry ended (decided, expired, withdrawn): how, as its replica said.
    Ended(String),
    /// The replica has no such entry (it ended long ago, or was never published).
    Gone,
    /// The replica's heartbeat expired: it is not running.
    Down,
    /// The replica's inbox is full: it is not taking requests.
    Full,
}

/// The shared approvals of one replica (module docs).
#[derive(Debug)]
pub struct RedisApprovals {
    store: Arc<RedisStore>,
    replica: String,
    prefix: String,
    publish: redis::Script,
    unpublish: redis::Script,
    list: redis::Script,
    send: redis::Script,
    take: redis::Script,
}

/// Whether `name` can name a replica: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_replica_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisApprovals {
    /// The approvals of replica `replica` (a name [`valid_replica_name`] accepts), over the
    /// store's connections and under its prefix.
    pub fn new(store: Arc<RedisStore>, replica: &str) -> Result<RedisApprovals, String> {
        if !valid_replica_name(replica) {
            return Err(format!(
                "`{replica}` cannot name a replica: use 1 to 64 letters, digits, `.`, `_` or `-`"
            ));
        }
        let prefix = format!("{}:ap:", store.options.prefix);
        Ok(RedisApprovals {
            store,
            replica: replica.to_owned(),
            prefix,
            publish: redis::Script::new(PUBLISH),
            unpublish: redis::Script::new(UNPUBLISH),
            list: redis::Script::new(LIST),
            send: redis::Script::new(SEND),
            take: redis::Script::new(TAKE),
        })
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The store, as people name it.
    pub fn store_name(&self) -> &str {
        self.store.name()
    }

    fn run<T: redis::FromRedisValue>(
        &self,
        f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        self.store
            .with_connection(|con| f(con).map_err(|e| crate::classify(&e, &self.store.options)))
            .map_err(|f| format!("{}: {}", self.store.name(), f.reason))
    }

    /// Publishes this replica's pending approval `id` (`entry`, JSON text) for `ttl`.
    pub fn publish(&self, id: u64, entry: &str, ttl: Duration) -> Result<(), String> {
        let member = format!("{}:{id}", self.replica);
        let key = format!("{}e:{member}", self.prefix);
        let idx = format!("{}idx", self.prefix);
        self.run(|con| {
            self.publish
                .key(&key)
                .key(&idx)
                .arg(entry)
                .arg(ms(ttl))
                .arg(&member)
                .invoke::<i64>(con)
        })
        .map(|_| ())
    }

    /// Removes this replica's entry `id` (decided, expired or withdrawn), noting how it ended
    /// (`what`) for [`ENDED_TTL`].
    pub fn unpublish(&self, id: u64, what: &str) -> Result<(), String> {
        let member = format!("{}:{id}", self.replica);
        let key = format!("{}e:{member}", self.prefix);
        let idx = format!("{}idx", self.prefix);
        let ended = format!("{}x:{member}", self.prefix);
        self.run(|con| {
            self.unpublish
                .key(&key)
                .key(&idx)
                .key(&ended)
                .arg(&member)
                .arg(what)
                .arg(ms(ENDED_TTL))
                .invoke::<i64>(con)
        })
        .map(|_| ())
    }

    /// Says this replica is running, for [`HEARTBEAT_TTL`].
    pub fn heartbeat(&self) -> Result<(), String> {
        let key = format!("{}alive:{}", self.prefix, self.replica);
        self.run(|con| {
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(ms(HEARTBEAT_TTL))
                .query::<()>(con)
        })
    }

    /// This replica stops: its heartbeat goes at once.
    pub fn leave(&self) -> Result<(), String> {
        let key = format!("{}alive:{}", self.prefix, self.replica);
        self.run(|con| redis::cmd("DEL").arg(&key).query::<i64>(con))
            .map(|_| ())
    }

    /// Every running replica's pending entries (at most [`MAX_LISTED`]), this one's included.
    pub fn list(&self) -> Result<Vec<Listed>, String> {
        let flat: Vec<String> = self.run(|con| {
            self.list
                .prepare_invoke()
                .arg(&self.prefix)
                .arg(MAX_LISTED)
                .invoke(con)
        })?;
        Ok(flat
            .chunks_exact(3)
            .filter_map(|c| {
                let (replica, id) = c[0].rsplit_once(':')?;
                Some(Listed {
                    replica: replica.to_owned(),
                    id: id.parse().ok()?,
                    entry: c[1].clone(),
                    remaining: Duration::from_millis(c[2].parse().ok()?),
                })
            })
            .collect())
    }

    /// Puts `request` (JSON text) about entry `id` in replica `replica`'s inbox, if that
    /// replica runs and still publishes the entry.
    pub fn send(&self, replica: &str, id: u64, request: &str) -> Result<Sent, String> {
        let (status, n): (String, String) = self.run(|con| {
            self.send
                .prepare_invoke()
                .arg(&self.prefix)
                .arg(replica)
                .arg(id)
                .arg(request)
                .arg(ms(REQUEST_TTL))
                .arg(MAX_INBOX)
                .invoke(con)
        })?;
        Ok(match status.as_str() {
            "queued" => Sent::Queued(n),
            "down" => Sent::Down,
            "full" => Sent::Full,
            "ended" => Sent::Ended(n),
            _ => Sent::Gone,
        })
    }

    /// Withdraws request `n` if its replica has not taken it: `true` when withdrawn (it will
    /// never be taken), `false` when it was taken already (its answer will come).
    pub fn cancel(&self, n: &str) -> Result<bool, String> {
        let key = format!("{}rq:{n}", self.prefix);
        self.run(|con| redis::cmd("DEL").arg(&key).query::<i64>(con))
            .map(|d| d == 1)
    }

    /// The answer to request `n`, once its replica wrote it.
    pub fn answer_of(&self, n: &str) -> Result<Option<String>, String> {
        let key = format!("{}an:{n}", self.prefix);
        self.run(|con| redis::cmd("GET").arg(&key).query(con))
    }

    /// Takes the requests waiting in this replica's inbox (at most [`MAX_TAKEN`]): each is
    /// taken once, here, and no longer cancellable.
    pub fn take(&self) -> Result<Vec<(String, String)>, String> {
        let flat: Vec<String> = self.run(|con| {
            self.take
                .prepare_invoke()
                .arg(&self.prefix)
                .arg(&self.replica)
                .arg(MAX_TAKEN)
                .invoke(con)
        })?;
        Ok(flat
            .chunks_exact(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect())
    }

    /// Answers request `n` (JSON text), for its sender to read.
    pub fn answer(&self, n: &str, answer: &str) -> Result<(), String> {
        let key = format!("{}an:{n}", self.prefix);
        self.run(|con| {
            redis::cmd("SET")
                .arg(&key)
                .arg(answer)
                .arg("PX")
                .arg(ms(REQUEST_TTL))
                .query::<()>(con)
        })
    }
}
