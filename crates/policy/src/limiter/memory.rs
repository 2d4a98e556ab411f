//! The in-memory counter store: sharded tables of compact, exact timestamp rings.
//!
//! # What a key costs
//! A shard keeps its keys in a slab (`Vec<Slot>`, 104 bytes a key) and finds them through a
//! hash table of slab indexes (`HashTable<u32>`, 5 bytes a bucket), so the table's spare
//! buckets (it is between 44% and 88% full) cost 5 bytes each rather than a whole key. A slot
//! holds the key's scope value (the caller's `Arc<str>`, shared), its counter as an id into the
//! shard's interned counter names, and its admissions ([`Ring`]): packed as offsets in
//! nanoseconds from a base, as many bytes each as the largest offset needs (5 bytes span 18
//! minutes), in 54 bytes inside the slot; or, when they do not fit there (more than 10
//! admissions at 5 bytes, or a span wider than the width that fits allows), as `u64`
//! nanoseconds in a ring on the heap. Both forms hold every timestamp to the nanosecond: the
//! packing changes what a key costs, never a decision.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::{Acquire, CounterKey, CounterState, CounterStore, LimitSpec};

/// Per-call scratch lists: a call has a few limits, so they live on the stack.
type Few<T> = SmallVec<[T; 4]>;

/// How many acquires a shard serves between two sweeps of its idle keys.
const SWEEP_EVERY: u32 = 1024;

/// Bytes inside a slot for packed timestamps: what is left of a 104-byte slot.
const PACKED: usize = 54;

/// The bytes a packed offset needs (at least one).
fn width_of(offset: u64) -> usize {
    (64 - offset.leading_zeros() as usize).div_ceil(8).max(1)
}

/// A key's admitted timestamps in nanoseconds, oldest first, exact either way they are kept.
#[derive(Debug)]
struct Ring {
    /// What packed offsets are relative to: at most the oldest timestamp held.
    base: u64,
    /// The timestamps, when they do not fit packed (then `len` is 0 and `bytes` unused).
    /// Boxed: 8 bytes in every slot rather than the 32 of a `VecDeque` that most keys never
    /// use.
    #[expect(
        clippy::box_collection,
        reason = "a slot holds a pointer, not a 32-byte deque header"
    )]
    wide: Option<Box<VecDeque<u64>>>,
    /// Bytes per packed offset, 1 to 8, little-endian.
    width: u8,
    /// How many packed offsets `bytes` holds.
    len: u8,
    bytes: [u8; PACKED],
}

impl Ring {
    const fn new() -> Ring {
        Ring {
            base: 0,
            wide: None,
            width: 1,
            len: 0,
            bytes: [0; PACKED],
        }
    }

    #[inline(always)]
    fn len(&self) -> usize {
        match &self.wide {
            Some(wide) => wide.len(),
            None => usize::from(self.len),
        }
    }

    fn is_wide(&self) -> bool {
        self.wide.is_some()
    }

    /// The `i`th oldest timestamp (`i < len`).
    #[inline(always)]
    fn at(&self, i: usize) -> u64 {
        match &self.wide {
            Some(wide) => wide[i],
            None => self.base + self.offset(i),
        }
    }

    fn newest(&self) -> Option<u64> {
        self.len().checked_sub(1).map(|i| self.at(i))
    }

    #[inline(always)]
    fn offset(&self, i: usize) -> u64 {
        let w = usize::from(self.width);
        let start = i * w;
        let mut le = [0u8; 8];
        if start + 8 <= PACKED {
            // One 8-byte load and a mask, rather than a copy of `w` bytes.
            le.copy_from_slice(&self.bytes[start..start + 8]);
            let mask = u64::MAX >> (64 - 8 * w);
            u64::from_le_bytes(le) & mask
        } else {
            le[..w].copy_from_slice(&self.bytes[start..start + w]);
            u64::from_le_bytes(le)
        }
    }

    fn set_offset(&mut self, i: usize, offset: u64) {
        let w = usize::from(self.width);
        self.bytes[i * w..(i + 1) * w].copy_from_slice(&offset.to_le_bytes()[..w]);
    }

    /// How many timestamps are at most `cutoff` (they are in time order). A few are scanned;
    /// for more, the place is guessed by interpolating between the oldest and the newest (the
    /// admissions of steady traffic are about evenly spaced), bracketed by galloping from the
    /// guess and found by binary search in the bracket: a few probes where a plain binary
    /// search of a large ring takes log2(len), and never more than about twice that.
    fn count_at_most(&self, cutoff: u64) -> usize {
        let len = self.len();
        if len <= 8 {
            return (0..len).position(|i| self.at(i) > cutoff).unwrap_or(len);
        }
        let (oldest, newest) = (self.at(0), self.at(len - 1));
        if cutoff < oldest {
            return 0;
        }
        if newest <= cutoff {
            return len;
        }
        // Now at(0) <= cutoff < at(len - 1): the answer p is in 1..len, and any guess in
        // 0..len serves (a poor one costs probes, never the answer).
        let share = (cutoff - oldest) as f64 / (newest - oldest) as f64;
        let guess = ((share * (len - 1) as f64) as usize).min(len - 1);
        let (mut lo, mut hi);
        let mut step = 1;
        if self.at(guess) <= cutoff {
            lo = guess + 1;
            loop {
                let probe = guess + step;
                if probe >= len - 1 {
                    hi = len - 1;
                    break;
                }
                if self.at(probe) > cutoff {
                    hi = probe;
                    break;
                }
                lo = probe + 1;
                step *= 2;
            }
        } else {
            hi = guess;
            loop {
                if step >= guess {
                    lo = 1;
                    break;
                }
                let probe = guess - step;
                if self.at(probe) <= cutoff {
                    lo = probe + 1;
                    break;
                }
                hi = probe;
                step *= 2;
            }
        }
        // p is in lo..=hi.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.at(mid) <= cutoff {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn clear(&mut self) {
        *self = Ring::new();
    }

    fn pop_front(&mut self) {
        match &mut self.wide {
            Some(wide) => {
                wide.pop_front();
            }
            None if self.len > 0 => {
                let w = usize::from(self.width);
                self.bytes.copy_within(w..usize::from(self.len) * w, 0);
                self.len -= 1;
            }
            None => {}
        }
    }

    /// Appends `t`, at least every timestamp held (the store's clock never goes back).
    /// `keep` is how many the key keeps, the heap ring's capacity if it spills there.
    fn push_back(&mut self, t: u64, keep: usize) {
        if let Some(wide) = &mut self.wide {
            wide.push_back(t);
            return;
        }
        let len = usize::from(self.len);
        if len == 0 {
            self.base = t;
            self.width = 1;
            self.set_offset(0, 0);
            self.len = 1;
            return;
        }
        let w = usize::from(self.width);
        if let Some(offset) = t.checked_sub(self.base)
            && width_of(offset) <= w
            && (len + 1) * w <= PACKED
        {
            self.set_offset(len, offset);
            self.len += 1;
            return;
        }
        // Pack again from the oldest timestamp, as wide as the new span needs; or keep them
        // all as they are on the heap when that does not fit.
        let mut all: SmallVec<[u64; 64]> = (0..len).map(|i| self.at(i)).collect();
        all.push(t);
        let oldest = all[0];
        let width = t
            .checked_sub(oldest)
            .map_or(usize::MAX, width_of)
            .min(usize::MAX / PACKED);
        if all.len() * width <= PACKED && all.iter().all(|&x| x >= oldest) {
            self.base = oldest;
            self.width = u8::try_from(width).unwrap_or(8);
            for (i, &x) in all.iter().enumerate() {
                self.set_offset(i, x - oldest);
            }
            self.len = u8::try_from(all.len()).unwrap_or(u8::MAX);
        } else {
            let mut wide = VecDeque::with_capacity(keep.min(64).max(all.len()));
            wide.extend(all);
            self.wide = Some(Box::new(wide));
            self.len = 0;
        }
    }
}

/// One key of a shard (or a free slot of its slab: `scope` is `None`).
#[derive(Debug)]
struct Slot {
    /// The key's scope value; `None` marks a free slot.
    scope: Option<Arc<str>>,
    /// The longest window (nanoseconds) of the limits this key was taken under since it was
    /// last idle: the key is idle once its newest admission is this old.
    keep_window: u64,
    /// The newest `keep_max` admissions since the key was last idle.
    ring: Ring,
    /// The largest `max` of those limits: how many admissions the ring keeps.
    keep_max: u32,
    /// The key's counter name, as an id into the shard's [`Counters`].
    counter: u32,
}

impl Slot {
    fn new(scope: Arc<str>, counter: u32, spec: &LimitSpec) -> Slot {
        Slot {
            scope: Some(scope),
            keep_window: nanos(spec.window),
            ring: Ring::new(),
            keep_max: spec.max,
            counter,
        }
    }

    const fn vacant() -> Slot {
        Slot {
            scope: None,
            keep_window: 0,
            ring: Ring::new(),
            keep_max: 0,
            counter: 0,
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
        // Drop the oldest first, so a full packed ring takes the new one in place.
        let keep = self.keep_max as usize;
        while self.ring.len() >= keep.max(1) {
            self.ring.pop_front();
        }
        self.ring.push_back(nanos(now), keep);
        if keep == 0 {
            self.ring.clear();
        }
    }

    /// The instant the key becomes idle: its newest admission plus the longest window.
    fn idle_at(&self) -> Option<Duration> {
        self.ring
            .newest()
            .map(|t| Duration::from_nanos(t).saturating_add(Duration::from_nanos(self.keep_window)))
    }

    /// Idle: every admission has left the longest window the key served, so it remembers
    /// nothing and forgetting the key changes nothing. (The sum is exact in `u128`
    /// nanoseconds, as [`Slot::idle_at`] is in `Duration`.)
    fn is_idle(&self, now: Duration) -> bool {
        self.ring
            .newest()
            .is_none_or(|t| u128::from(t) + u128::from(self.keep_window) <= now.as_nanos())
    }
}

/// The counter names of a shard's keys, interned: a slot holds a 4-byte id instead of a
/// 16-byte `Arc<str>`. A name is forgotten with the last key that uses it.
#[derive(Debug, Default)]
struct Counters {
    /// By id: the name and how many keys of the shard use it; `None` is a free id.
    names: Vec<Option<(Arc<str>, u32)>>,
    ids: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl Counters {
    fn name(&self, id: u32) -> &str {
        self.arc(id).map_or("", |name| name)
    }

    fn arc(&self, id: u32) -> Option<&Arc<str>> {
        match self.names.get(id as usize) {
            Some(Some((name, _))) => Some(name),
            _ => None,
        }
    }

    /// The id of `name`, counting one more key that uses it.
    fn add_key(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.ids.get(&**name)
            && let Some(Some((_, keys))) = self.names.get_mut(id as usize)
        {
            *keys += 1;
            return id;
        }
        let entry = Some((Arc::clone(name), 1));
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = entry;
                id
            }
            None => {
                self.names.push(entry);
                // A shard holds far fewer than 2^32 counter names.
                u32::try_from(self.names.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.ids.insert(Arc::clone(name), id);
        id
    }

    /// One key fewer uses `id`; the last one frees it.
    fn remove_key(&mut self, id: u32) {
        let Some(entry) = self.names.get_mut(id as usize) else {
            return;
        };
        if let Some((name, keys)) = entry {
            *keys -= 1;
            if *keys == 0 {
                self.ids.remove(&**name);
                *entry = None;
                self.free.push(id);
            }
        }
    }
}

/// A counter key by its parts, borrowed: what the store looks up, without owning a key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key<'a> {
    pub(super) counter: &'a Arc<str>,
    pub(super) scope: &'a Arc<str>,
}

impl<'a> From<&'a CounterKey> for Key<'a> {
    fn from(key: &'a CounterKey) -> Key<'a> {
        Key {
            counter: &key.counter,
            scope: &key.scope_value,
        }
    }
}

/// Two names are the same: the caller's are usually the very `Arc`s a slot holds, so the
/// pointers are compared before the text.
#[inline]
fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// The store's hash of a key: picks its shard and its bucket in the shard's table.
fn key_hash(spread: &foldhash::fast::RandomState, counter: &str, scope: &str) -> u64 {
    spread.hash_one((counter, scope))
}

#[derive(Debug, Default)]
struct Shard {
    /// Indexes into `slots`, by the store's `spread` hash of the key (seeded at random per
    /// store: the scope values in the keys come from callers), the one hash that also
    /// picked this shard.
    table: HashTable<u32>,
    slots: Vec<Slot>,
    /// Free slots of `slots`, reused before it grows.
    free: Vec<u32>,
    counters: Counters,
    ops: u32,
}

impl Shard {
    fn find(&self, hash: u64, key: Key<'_>) -> Option<usize> {
        let (slots, counters) = (&self.slots, &self.counters);
        self.table
            .find(hash, |&i| {
                slots.get(i as usize).is_some_and(|s| {
                    s.scope.as_ref().is_some_and(|scope| same(scope, key.scope))
                        && counters
                            .arc(s.counter)
                            .is_some_and(|counter| same(counter, key.counter))
                })
            })
            .map(|&i| i as usize)
    }

    fn get(&self, hash: u64, key: Key<'_>) -> Option<&Slot> {
        self.find(hash, key).map(|i| &self.slots[i])
    }

    /// Counts one admitted call of `key` at `now`, adding the key if it is new.
    fn take(
        &mut self,
        hash: u64,
        key: Key<'_>,
        spec: &LimitSpec,
        now: Duration,
        spread: &foldhash::fast::RandomState,
    ) {
        let found = self.find(hash, key);
        self.take_found(found, hash, key, spec, now, spread);
    }

    /// [`Shard::take`] of a key already looked up: `found` is its slot, if it has one.
    fn take_found(
        &mut self,
        found: Option<usize>,
        hash: u64,
        key: Key<'_>,
        spec: &LimitSpec,
        now: Duration,
        spread: &foldhash::fast::RandomState,
    ) {
        let i = match found {
            Some(i) => i,
            None => {
                let counter = self.counters.add_key(key.counter);
                let slot = Slot::new(Arc::clone(key.scope), counter, spec);
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = slot;
                        i
                    }
                    None => {
                        self.slots.push(slot);
                        // A shard holds far fewer than 2^32 keys (that would be 446 GB).
                        u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                    }
                };
                let Shard {
                    table,
                    slots,
                    counters,
                    ..
                } = self;
                table.insert_unique(hash, i, |&j| slot_hash(spread, slots, counters, j));
                i as usize
            }
        };
        self.slots[i].take(spec, now);
    }

    /// Forgets every key `keep` says no to (given the key's counter name), and gives memory
    /// back once fewer than a quarter of the slab's slots hold a key.
    fn retain(
        &mut self,
        spread: &foldhash::fast::RandomState,
        mut keep: impl FnMut(&str, &mut Slot) -> bool,
    ) {
        let Shard {
            table,
            slots,
            free,
            counters,
            ..
        } = self;
        table.retain(|&mut i| {
            let Some(slot) = slots.get_mut(i as usize) else {
                return false;
            };
            if keep(counters.name(slot.counter), slot) {
                return true;
            }
            counters.remove_key(slot.counter);
            *slot = Slot::vacant();
            free.push(i);
            false
        });
        if self.table.len() * 4 < self.slots.len() {
            self.compact(spread);
        }
    }

    /// Moves the keys to a slab just large enough and indexes them again.
    fn compact(&mut self, spread: &foldhash::fast::RandomState) {
        let live: Vec<Slot> = std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|s| s.scope.is_some())
            .collect();
        self.slots = live;
        self.free = Vec::new();
        let Shard {
            table,
            slots,
            counters,
            ..
        } = self;
        *table = HashTable::with_capacity(slots.len());
        for j in 0..slots.len() {
            let j = u32::try_from(j).unwrap_or(u32::MAX);
            let hash = slot_hash(spread, slots, counters, j);
            table.insert_unique(hash, j, |&k| slot_hash(spread, slots, counters, k));
        }
    }

    /// Counts one acquire, and forgets the idle keys every [`SWEEP_EVERY`] of them.
    fn tick(&mut self, now: Duration, spread: &foldhash::fast::RandomState) {
        self.ops = self.ops.wrapping_add(1);
        if self.ops.is_multiple_of(SWEEP_EVERY) {
            self.retain(spread, |_, s| !s.is_idle(now));
        }
    }
}

/// The hash of the key in slot `j` (for the table to move it when it grows).
fn slot_hash(
    spread: &foldhash::fast::RandomState,
    slots: &[Slot],
    counters: &Counters,
    j: u32,
) -> u64 {
    slots.get(j as usize).map_or(0, |s| {
        key_hash(
            spread,
            counters.name(s.counter),
            s.scope.as_deref().unwrap_or(""),
        )
    })
}

/// Strict sliding-window counters in memory, shared by every session of one gateway.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    /// Picks a key's shard and its place in the shard's table.
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
    key: Key<'_>,
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
        counter: Arc::clone(key.counter),
        key: Arc::clone(key.scope),
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
fn judge(slot: Option<&Slot>, spec: &LimitSpec, now: Duration) -> Verdict {
    // The ring is in time order (the store's clock never goes back), so the calls still in
    // the half-open window (now - window, now] are a suffix of it: find where it starts by
    // search ([`Ring::count_at_most`]) rather than walking every call.
    // An idle key remembers nothing, even under a window longer than the ones it served.
    let slot = slot.filter(|s| !s.is_idle(now));
    let ring = slot.map(|s| &s.ring);
    let len = ring.map_or(0, Ring::len);
    // A call at `t` has left iff `t + window <= now`, i.e. `t <= now - window`, in exact
    // `u128` nanoseconds (nothing saturates there): none has left before one window has passed.
    let first = match now.as_nanos().checked_sub(spec.window.as_nanos()) {
        None => 0,
        Some(cutoff) => {
            let cutoff = u64::try_from(cutoff).unwrap_or(u64::MAX);
            ring.map_or(0, |r| r.count_at_most(cutoff))
        }
    };
    let at = |i: usize| {
        ring.filter(|r| i < r.len())
            .map(|r| Duration::from_nanos(r.at(i)).saturating_add(spec.window))
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
            slot.and_then(Slot::idle_at)
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

    fn hash(&self, key: Key<'_>) -> u64 {
        key_hash(&self.spread, key.counter, key.scope)
    }

    /// The shard of a key whose `spread` hash is `hash`. It takes the hash's middle bits:
    /// the shard's table uses the low bits for the bucket and the top seven as the tag, so
    /// the keys of one shard still spread over its whole table.
    fn shard_of(&self, hash: u64) -> usize {
        let n = self.shards.len() as u64;
        if n.is_power_of_two() {
            // The default's 64 shards: a mask, not a division.
            ((hash >> 32) & (n - 1)) as usize
        } else {
            ((hash >> 32) % n) as usize
        }
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
            .map(|i| self.lock(i).table.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every idle key. Changes no decision.
    pub fn evict_idle(&self, now: Duration) {
        let now = self.advance(now);
        for i in 0..self.shards.len() {
            self.lock(i).retain(&self.spread, |_, s| !s.is_idle(now));
        }
    }

    /// How many keys keep their admissions on the heap rather than packed in their slot (for
    /// tests and benchmarks: what the packing does not cover).
    pub fn wide_keys(&self) -> usize {
        (0..self.shards.len())
            .map(|i| {
                let shard = self.lock(i);
                shard
                    .slots
                    .iter()
                    .filter(|s| s.scope.is_some() && s.ring.is_wide())
                    .count()
            })
            .sum()
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
        let by_name: HashMap<&str, &LimitSpec> = next.iter().map(|s| (&*s.counter, s)).collect();
        // A counter whose `counts` changed (calls ↔ errors) starts afresh: what it remembers
        // are events of the other kind.
        let recounted = |name: &str, spec: &LimitSpec| {
            previous
                .iter()
                .any(|p| &*p.counter == name && p.counts != spec.counts)
        };
        for i in 0..self.shards.len() {
            self.lock(i).retain(&self.spread, |name, slot| {
                let Some(&spec) = by_name.get(name) else {
                    return true;
                };
                if slot.is_idle(now) || recounted(name, spec) {
                    // It remembers nothing: forgetting it now is what a later take would do.
                    return false;
                }
                slot.keep_window = slot.keep_window.max(nanos(spec.window));
                slot.keep_max = slot.keep_max.max(spec.max);
                true
            });
        }
        Ok(())
    }

    fn acquire_one(
        &self,
        counter: &Arc<str>,
        scope_value: &Arc<str>,
        spec: &LimitSpec,
        now: Duration,
        dry_run: bool,
    ) -> Acquire {
        let key = Key {
            counter,
            scope: scope_value,
        };
        self.acquire_single(key, spec, now, self.advance(now), dry_run)
    }

    fn record(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> Acquire {
        let now = self.advance(now);
        let mut states = Vec::with_capacity(limits.len());
        for (idx, (counter_key, spec)) in limits.iter().enumerate() {
            let key = Key::from(counter_key);
            let hash = self.hash(key);
            let mut shard = self.lock(self.shard_of(hash));
            if limits[..idx].iter().all(|(k, _)| k != counter_key) {
                shard.take(hash, key, spec, now, &self.spread);
            }
            // What the counter reads after recording: the event is in it.
            let v = judge(shard.get(hash, key), spec, now);
            shard.tick(now, &self.spread);
            drop(shard);
            states.push(CounterState {
                counter: Arc::clone(key.counter),
                key: Arc::clone(key.scope),
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
            return self.acquire_single(key.into(), spec, asked, now, dry_run);
        }
        // Hash each key once, for its shard and its place in the shard's table; lock every
        // shard involved in ascending order, so two acquires never deadlock.
        let hashes: Few<u64> = limits.iter().map(|(k, _)| self.hash(k.into())).collect();
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
            .map(|(((key, spec), &slot), &hash)| {
                judge(guards[slot].1.get(hash, key.into()), spec, now)
            })
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
                guards[slot]
                    .1
                    .take(hash, key.into(), spec, now, &self.spread);
            }
            states.push(state(key.into(), spec, v, admitted, now));
        }
        for (_, shard) in &mut guards {
            shard.tick(now, &self.spread);
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
    /// one look-up, no scratch lists, and no key built (`now` is already clamped).
    fn acquire_single(
        &self,
        key: Key<'_>,
        spec: &LimitSpec,
        asked: Duration,
        now: Duration,
        dry_run: bool,
    ) -> Acquire {
        let hash = self.hash(key);
        let mut shard = self.lock(self.shard_of(hash));
        let found = shard.find(hash, key);
        let verdict = judge(found.map(|i| &shard.slots[i]), spec, now);
        let admitted = verdict.retry_at.is_none();
        if admitted && !dry_run && spec.counts.is_calls() {
            shard.take_found(found, hash, key, spec, now, &self.spread);
        }
        shard.tick(now, &self.spread);
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

#[cfg(test)]
mod tests;
