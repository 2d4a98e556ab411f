//! The in-memory counter store: sharded maps of timestamp rings.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;
use smallvec::SmallVec;

use super::{Acquire, CounterKey, CounterState, CounterStore, LimitSpec};

/// Per-call scratch lists: a call has a few limits, so they live on the stack.
type Few<T> = SmallVec<[T; 4]>;

/// How many acquires a shard serves between two sweeps of its idle keys.
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug)]
struct Entry {
    /// Admitted timestamps in nanoseconds, oldest first: the newest `keep_max` admissions
    /// since the key was last idle (8 bytes each: half a `Duration`, which matters at a
    /// million keys).
    ring: VecDeque<u64>,
    /// The longest window (nanoseconds) of the limits this key was taken under since it was
    /// last idle: the key is idle once its newest admission is this old.
    keep_window: u64,
    /// The largest `max` of those limits: how many admissions the ring keeps.
    keep_max: u32,
}

impl Entry {
    fn new(spec: &LimitSpec) -> Entry {
        Entry {
            // Exactly `max` slots (capped so a huge max does not allocate up front).
            ring: VecDeque::with_capacity((spec.max as usize).min(64)),
            keep_window: nanos(spec.window),
            keep_max: spec.max,
        }
    }

    /// Counts one admitted call at `now`. A key that was idle starts afresh under `spec`;
    /// otherwise it keeps the longest window and largest `max` it has served (so a reload
    /// that lengthens a window or raises `max` still counts what the key remembers), and the
    /// ring keeps the newest `keep_max` admissions, whatever their age: the ones outside
    /// today's window still count if a reload lengthens it.
    fn take(&mut self, spec: &LimitSpec, now: Duration) {
        if self.is_idle(now) {
            self.ring.clear();
            self.keep_window = nanos(spec.window);
            self.keep_max = spec.max;
        } else {
            self.keep_window = self.keep_window.max(nanos(spec.window));
            self.keep_max = self.keep_max.max(spec.max);
        }
        self.ring.push_back(nanos(now));
        while self.ring.len() > self.keep_max as usize {
            self.ring.pop_front();
        }
    }

    fn newest(&self) -> Option<Duration> {
        self.ring.back().copied().map(Duration::from_nanos)
    }

    /// The instant the key becomes idle: its newest admission plus the longest window.
    fn idle_at(&self) -> Option<Duration> {
        self.newest()
            .map(|t| t.saturating_add(Duration::from_nanos(self.keep_window)))
    }

    /// Idle: every admission has left the longest window the key served, so it remembers
    /// nothing and forgetting the key changes nothing.
    fn is_idle(&self, now: Duration) -> bool {
        self.idle_at().is_none_or(|t| t <= now)
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Keyed by the store's `spread` hash of the key (seeded at random per store: the scope
    /// values in the keys come from callers), the one hash that also picked this shard.
    keys: HashTable<(CounterKey, Entry)>,
    ops: u32,
}

impl Shard {
    fn get(&self, hash: u64, key: &CounterKey) -> Option<&Entry> {
        self.keys.find(hash, |(k, _)| k == key).map(|(_, e)| e)
    }

    /// Counts one admitted call of `key` at `now`, adding the key if it is new.
    fn take(
        &mut self,
        hash: u64,
        key: &CounterKey,
        spec: &LimitSpec,
        now: Duration,
        spread: &foldhash::fast::RandomState,
    ) {
        let slot = self
            .keys
            .entry(hash, |(k, _)| k == key, |(k, _)| spread.hash_one(k));
        let entry = match slot {
            Slot::Occupied(o) => &mut o.into_mut().1,
            Slot::Vacant(v) => &mut v.insert((key.clone(), Entry::new(spec))).into_mut().1,
        };
        entry.take(spec, now);
    }

    /// Counts one acquire, and forgets the idle keys every [`SWEEP_EVERY`] of them.
    fn tick(&mut self, now: Duration) {
        self.ops = self.ops.wrapping_add(1);
        if self.ops.is_multiple_of(SWEEP_EVERY) {
            self.keys.retain(|(_, e)| !e.is_idle(now));
        }
    }
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

/// What one limit's counter reads after the call: `used` counts the call if it was admitted.
fn state(
    key: &CounterKey,
    spec: &LimitSpec,
    v: &Verdict,
    admitted: bool,
    now: Duration,
) -> CounterState {
    // A limit that counts errors takes nothing when a call is admitted.
    let counted = if admitted && spec.counts.is_calls() {
        v.in_window + 1
    } else {
        v.in_window
    };
    CounterState {
        counter: key.counter.clone(),
        key: key.scope_value.clone(),
        used: u32::try_from(counted).unwrap_or(u32::MAX),
        max: spec.max,
        window: spec.window,
        oldest_leaves_at: v
            .oldest
            .or((admitted && spec.counts.is_calls()).then(|| now.saturating_add(spec.window))),
        counts: spec.counts,
    }
}

/// Judges one limit at `now`, which is already clamped to the store's high-water mark (so it
/// is at least every stored timestamp).
fn judge(entry: Option<&Entry>, spec: &LimitSpec, now: Duration) -> Verdict {
    // The ring is in time order (the store's clock never goes back), so the calls still in
    // the half-open window (now - window, now] are a suffix of it: find where it starts by
    // binary search rather than walking every call.
    // An idle key remembers nothing, even under a window longer than the ones it served.
    let entry = entry.filter(|e| !e.is_idle(now));
    let ring = entry.map(|e| &e.ring);
    let len = ring.map_or(0, VecDeque::len);
    let left = |t: &u64| Duration::from_nanos(*t).saturating_add(spec.window) <= now;
    let first = ring.map_or(0, |r| {
        // Under steady traffic none or a few of the kept calls have left the window: look at
        // the oldest few first, and search only beyond them.
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
        // Admitted again when the max-th newest admission leaves the window, or sooner if
        // the whole key goes idle first (a window lengthened by a reload, not yet served).
        let leaves = at(first + (count - max)).unwrap_or(now);
        Some(
            entry
                .and_then(Entry::idle_at)
                .map_or(leaves, |idle| leaves.min(idle)),
        )
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

    /// The shard of a key whose `spread` hash is `hash`. It takes the hash's middle bits:
    /// the shard's table uses the low bits for the bucket and the top seven as the tag, so
    /// the keys of one shard still spread over its whole table.
    fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 32) % self.shards.len() as u64) as usize
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
            self.lock(i).keys.retain(|(_, e)| !e.is_idle(now));
        }
    }
}

impl CounterStore for MemoryStore {
    fn reloaded(
        &self,
        previous: &[LimitSpec],
        next: &[LimitSpec],
        now: Duration,
    ) -> Result<(), String> {
        let now = self.advance(now);
        let by_name: std::collections::HashMap<&str, &LimitSpec> =
            next.iter().map(|s| (&*s.counter, s)).collect();
        // A counter whose `counts` changed (calls ↔ errors) starts afresh: what it remembers
        // are events of the other kind.
        let recounted = |name: &str, spec: &LimitSpec| {
            previous
                .iter()
                .any(|p| &*p.counter == name && p.counts != spec.counts)
        };
        for i in 0..self.shards.len() {
            self.lock(i).keys.retain(|(key, entry)| {
                let Some(spec) = by_name.get(&*key.counter) else {
                    return true;
                };
                if entry.is_idle(now) || recounted(&key.counter, spec) {
                    // It remembers nothing: forgetting it now is what a later take would do.
                    return false;
                }
                entry.keep_window = entry.keep_window.max(nanos(spec.window));
                entry.keep_max = entry.keep_max.max(spec.max);
                true
            });
        }
        Ok(())
    }

    fn record(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> Acquire {
        let now = self.advance(now);
        let mut states = Vec::with_capacity(limits.len());
        for (idx, (key, spec)) in limits.iter().enumerate() {
            let hash = self.spread.hash_one(key);
            let mut shard = self.lock(self.shard_of(hash));
            if limits[..idx].iter().all(|(k, _)| k != key) {
                shard.take(hash, key, spec, now, &self.spread);
            }
            // What the counter reads after recording: the event is in it.
            let v = judge(shard.get(hash, key), spec, now);
            shard.tick(now);
            drop(shard);
            states.push(CounterState {
                counter: key.counter.clone(),
                key: key.scope_value.clone(),
                used: u32::try_from(v.in_window).unwrap_or(u32::MAX),
                max: spec.max,
                window: spec.window,
                oldest_leaves_at: v.oldest,
                counts: spec.counts,
            });
        }
        Acquire::Admitted { states }
    }

    fn acquire(&self, limits: &[(CounterKey, LimitSpec)], now: Duration, dry_run: bool) -> Acquire {
        let asked = now;
        let now = self.advance(now);
        if let [(key, spec)] = limits {
            return self.acquire_one(key, spec, asked, now, dry_run);
        }
        // Hash each key once, for its shard and its place in the shard's table; lock every
        // shard involved in ascending order, so two acquires never deadlock.
        let hashes: Few<u64> = limits
            .iter()
            .map(|(k, _)| self.spread.hash_one(k))
            .collect();
        let shard_of_limit: Few<usize> = hashes.iter().map(|&h| self.shard_of(h)).collect();
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

        // The same key named twice in one call counts once (a limit that counts errors takes
        // nothing here).
        let first_of = |idx: usize| {
            limits
                .iter()
                .position(|(k, s)| s.counts.is_calls() && *k == limits[idx].0)
        };
        let verdicts: Few<Verdict> = limits
            .iter()
            .zip(&slots)
            .zip(&hashes)
            .map(|(((key, spec), &slot), &hash)| judge(guards[slot].1.get(hash, key), spec, now))
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
        for (idx, (((key, spec), v), (&slot, &hash))) in limits
            .iter()
            .zip(&verdicts)
            .zip(slots.iter().zip(&hashes))
            .enumerate()
        {
            if take && spec.counts.is_calls() && first_of(idx) == Some(idx) {
                guards[slot].1.take(hash, key, spec, now, &self.spread);
            }
            states.push(state(key, spec, v, admitted, now));
        }
        for (_, shard) in &mut guards {
            shard.tick(now);
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

impl MemoryStore {
    /// [`CounterStore::acquire`] of a call under one limit (most calls): one hash, one lock,
    /// one look-up, and no scratch lists.
    fn acquire_one(
        &self,
        key: &CounterKey,
        spec: &LimitSpec,
        asked: Duration,
        now: Duration,
        dry_run: bool,
    ) -> Acquire {
        let hash = self.spread.hash_one(key);
        let mut shard = self.lock(self.shard_of(hash));
        let verdict = judge(shard.get(hash, key), spec, now);
        let admitted = verdict.retry_at.is_none();
        if admitted && !dry_run && spec.counts.is_calls() {
            shard.take(hash, key, spec, now, &self.spread);
        }
        shard.tick(now);
        drop(shard);
        let states = vec![state(key, spec, &verdict, admitted, now)];
        match verdict.retry_at {
            None => Acquire::Admitted { states },
            Some(retry_at) => Acquire::Refused {
                retry_after: retry_at.saturating_sub(asked),
                states,
                refused_by: vec![0],
            },
        }
    }
}
