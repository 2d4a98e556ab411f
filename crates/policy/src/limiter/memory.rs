//! The in-memory counter store: sharded maps of timestamp rings.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use smallvec::SmallVec;

use super::{Acquire, CounterKey, CounterState, CounterStore, LimitSpec};

/// Per-call scratch lists: a call has a few limits, so they live on the stack.
type Few<T> = SmallVec<[T; 4]>;

/// How many acquires a shard serves between two sweeps of its idle keys.
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug)]
struct Entry {
    /// Admitted timestamps in nanoseconds, oldest first, at most `max` of them (8 bytes each:
    /// half a `Duration`, which matters at a million keys).
    ring: VecDeque<u64>,
    /// The window this key was last used with, for eviction.
    window: Duration,
}

impl Entry {
    fn newest(&self) -> Option<Duration> {
        self.ring.back().copied().map(Duration::from_nanos)
    }

    /// Idle: every admitted call has left the window, so forgetting the key changes nothing.
    fn is_idle(&self, now: Duration) -> bool {
        self.newest()
            .is_none_or(|t| t.saturating_add(self.window) <= now)
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Seeded at random per shard: the scope values in the keys come from callers.
    keys: HashMap<CounterKey, Entry, foldhash::fast::RandomState>,
    ops: u32,
}

/// Strict sliding-window counters in memory, shared by every session of one gateway.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    /// Picks a key's shard.
    spread: foldhash::fast::RandomState,
    /// The latest instant this store has seen, in nanoseconds. Time never goes backwards
    /// inside the store: an earlier `now` is evaluated at this instant, so evicting a key
    /// idle at this instant can never change a later decision.
    high_water: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn nanos(t: Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

/// The per-limit verdict computed before anything is taken.
struct Verdict {
    in_window: usize,
    oldest: Option<Duration>,
    retry_at: Option<Duration>,
}

/// Judges one limit at `now`, which is already clamped to the store's high-water mark (so it
/// is at least every stored timestamp).
fn judge(entry: Option<&Entry>, spec: &LimitSpec, now: Duration) -> Verdict {
    // The ring is in time order (the store's clock never goes back), so the calls still in
    // the half-open window (now - window, now] are a suffix of it: find where it starts by
    // binary search rather than walking every call.
    let ring = entry.map(|e| &e.ring);
    let len = ring.map_or(0, VecDeque::len);
    let left = |t: &u64| Duration::from_nanos(*t).saturating_add(spec.window) <= now;
    let first = ring.map_or(0, |r| {
        // Every take trims the ring to its window, so usually none or a few calls have left
        // it since: look at the oldest few first, and search only beyond them.
        match r.iter().take(8).position(|t| !left(t)) {
            Some(i) => i,
            None => r.partition_point(left),
        }
    });
    let at = |i: usize| {
        ring.and_then(|r| r.get(i))
            .map(|&t| Duration::from_nanos(t).saturating_add(spec.window))
    };
    let count = len - first;
    let max = spec.max as usize;
    let retry_at = if max == 0 {
        Some(Duration::MAX)
    } else if count >= max {
        Some(at(first + (count - max)).unwrap_or(now))
    } else {
        None
    };
    Verdict {
        in_window: count,
        oldest: if count > 0 { at(first) } else { None },
        retry_at,
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_shards(64)
    }

    pub fn with_shards(n: usize) -> Self {
        Self {
            shards: (0..n.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            spread: foldhash::fast::RandomState::default(),
            high_water: AtomicU64::new(0),
        }
    }

    /// Moves the high-water mark to `now` if it is later, and returns the instant to evaluate at.
    fn advance(&self, now: Duration) -> Duration {
        let now = nanos(now);
        let previous = self.high_water.fetch_max(now, Ordering::AcqRel);
        Duration::from_nanos(previous.max(now))
    }

    fn shard_of(&self, key: &CounterKey) -> usize {
        (self.spread.hash_one(key) % self.shards.len() as u64) as usize
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic elsewhere cannot leave a ring half-updated in a way that breaks the bound,
        // so a poisoned lock is still safe to use.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of keys held (idle ones included until they are swept).
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).keys.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every idle key. Changes no decision.
    pub fn evict_idle(&self, now: Duration) {
        let now = self.advance(now);
        for i in 0..self.shards.len() {
            self.lock(i).keys.retain(|_, e| !e.is_idle(now));
        }
    }
}

impl CounterStore for MemoryStore {
    fn acquire(&self, limits: &[(CounterKey, LimitSpec)], now: Duration, dry_run: bool) -> Acquire {
        let asked = now;
        let now = self.advance(now);
        // Hash each key once; lock every shard involved in ascending order, so two acquires
        // never deadlock.
        let shard_of_limit: Few<usize> = limits.iter().map(|(k, _)| self.shard_of(k)).collect();
        let mut shard_ids = shard_of_limit.clone();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        let mut guards: Few<(usize, MutexGuard<'_, Shard>)> =
            shard_ids.iter().map(|&i| (i, self.lock(i))).collect();
        // Each limit's index into `guards` (the sorted, deduplicated shard list).
        let slots: Few<usize> = shard_of_limit
            .iter()
            .map(|s| shard_ids.binary_search(s).unwrap_or(0))
            .collect();

        // The same key named twice in one call counts once.
        let first_of = |idx: usize| limits.iter().position(|(k, _)| *k == limits[idx].0);
        let verdicts: Few<Verdict> = limits
            .iter()
            .zip(&slots)
            .map(|((key, spec), &slot)| judge(guards[slot].1.keys.get(key), spec, now))
            .collect();
        let refused_by: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.retry_at.is_some())
            .map(|(i, _)| i)
            .collect();
        let admitted = refused_by.is_empty();
        let take = admitted && !dry_run;

        let mut states = Vec::with_capacity(limits.len());
        for (idx, (((key, spec), v), &slot)) in limits.iter().zip(&verdicts).zip(&slots).enumerate()
        {
            let shard = &mut guards[slot].1;
            if take && first_of(idx) == Some(idx) {
                let entry = shard.keys.entry(key.clone()).or_insert_with(|| Entry {
                    // Exactly `max` slots (capped so a huge max does not allocate up front).
                    ring: VecDeque::with_capacity((spec.max as usize).min(64)),
                    window: spec.window,
                });
                entry.window = spec.window;
                // Calls that have left the window are dropped as new ones arrive, so a ring
                // holds at most `max` calls and at most one window's worth.
                while entry
                    .ring
                    .front()
                    .is_some_and(|&t| Duration::from_nanos(t).saturating_add(spec.window) <= now)
                {
                    entry.ring.pop_front();
                }
                entry.ring.push_back(nanos(now));
                while entry.ring.len() > spec.max as usize {
                    entry.ring.pop_front();
                }
            }
            let counted = if admitted {
                v.in_window + 1
            } else {
                v.in_window
            };
            states.push(CounterState {
                counter: key.counter.clone(),
                key: key.scope_value.clone(),
                used: u32::try_from(counted).unwrap_or(u32::MAX),
                max: spec.max,
                window: spec.window,
                oldest_leaves_at: v
                    .oldest
                    .or(admitted.then(|| now.saturating_add(spec.window))),
            });
        }
        for (_, shard) in &mut guards {
            shard.ops = shard.ops.wrapping_add(1);
            if shard.ops % SWEEP_EVERY == 0 {
                shard.keys.retain(|_, e| !e.is_idle(now));
            }
        }
        if admitted {
            Acquire::Admitted { states }
        } else {
            let retry_at = verdicts
                .iter()
                .filter_map(|v| v.retry_at)
                .max()
                .unwrap_or(now);
            Acquire::Refused {
                retry_after: retry_at.saturating_sub(asked),
                states,
                refused_by,
            }
        }
    }
}
