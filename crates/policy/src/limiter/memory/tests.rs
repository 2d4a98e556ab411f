#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use std::collections::VecDeque;

use proptest::prelude::*;

use super::{PACKED, Ring, Slot, width_of};

/// What a key costs in its shard's slab is what docs/PERFORMANCE.md accounts for.
#[cfg(target_pointer_width = "64")]
#[test]
fn a_key_slot_is_104_bytes() {
    assert_eq!(std::mem::size_of::<Ring>(), 72);
    assert_eq!(std::mem::size_of::<Slot>(), 104);
}

#[test]
fn packed_offsets_take_the_bytes_their_value_needs() {
    assert_eq!(width_of(0), 1);
    assert_eq!(width_of(255), 1);
    assert_eq!(width_of(256), 2);
    assert_eq!(width_of((1 << 32) - 1), 4);
    assert_eq!(width_of(1 << 32), 5);
    assert_eq!(width_of((1 << 40) - 1), 5);
    assert_eq!(width_of(1 << 40), 6);
    assert_eq!(width_of(u64::MAX), 8);
}

/// Ten admissions a minute, at arbitrary nanoseconds, stay packed in the slot (5 bytes each):
/// the case docs/PERFORMANCE.md measures.
#[test]
fn ten_admissions_within_a_minute_stay_packed() {
    let mut ring = Ring::new();
    let start = 1_234_567_890_123_u64;
    for i in 0..100u64 {
        if ring.len() == 10 {
            ring.pop_front();
        }
        ring.push_back(start + i * 5_999_999_999 + i % 7, 10);
        assert!(!ring.is_wide(), "call {i}");
    }
    assert_eq!(ring.len(), 10);
    assert_eq!(ring.at(9), start + 99 * 5_999_999_999 + 99 % 7);
}

#[derive(Debug, Clone)]
enum Op {
    /// Append the newest plus this many nanoseconds.
    Push(u64),
    PopFront,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    // Steps cluster at the widths' edges: offsets of 2^(8k) - 1 and 2^(8k) nanoseconds.
    let edge = prop_oneof![
        Just(0u64),
        Just(1),
        Just(255),
        Just(256),
        Just((1 << 32) - 1),
        Just(1 << 32),
        Just((1 << 40) - 1),
        Just(1 << 40),
        Just(1 << 48),
        Just(1 << 56),
        0u64..1_000_000_000,
        0u64..120_000_000_000,
    ];
    prop_oneof![
        6 => edge.prop_map(Op::Push),
        3 => Just(Op::PopFront),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The packed ring holds exactly what a `VecDeque<u64>` of the same timestamps holds,
    /// through every width change, every re-packing from a new base, spills to the heap when
    /// the span or the count does not fit, and clears back to packed; the timestamps can be
    /// anywhere in `u64` nanoseconds (a start near the end of the range included).
    #[test]
    fn packed_ring_holds_exactly_the_timestamps_pushed(
        start in prop_oneof![Just(0u64), 0u64..(1 << 62), Just(u64::MAX - (1 << 60))],
        keep in 1usize..80,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut ring = Ring::new();
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut newest = start;
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Push(step) => {
                    newest = newest.saturating_add(step);
                    while model.len() >= keep {
                        model.pop_front();
                        ring.pop_front();
                    }
                    model.push_back(newest);
                    ring.push_back(newest, keep);
                }
                Op::PopFront => {
                    model.pop_front();
                    ring.pop_front();
                }
                Op::Clear => {
                    model.clear();
                    ring.clear();
                    prop_assert!(!ring.is_wide(), "op {}: a cleared ring is packed", i);
                }
            }
            prop_assert_eq!(ring.len(), model.len(), "op {}", i);
            for (j, &t) in model.iter().enumerate() {
                prop_assert_eq!(ring.at(j), t, "op {}: timestamp {}", i, j);
            }
            prop_assert_eq!(ring.newest(), model.back().copied(), "op {}", i);
            if let (false, Some(&oldest), Some(&last)) = (ring.is_wide(), model.front(), model.back()) {
                // Packed means every offset fits the width and the count fits the slot.
                prop_assert!(usize::from(ring.width) >= width_of(last - ring.base));
                prop_assert!(ring.base <= oldest);
                prop_assert!(model.len() * usize::from(ring.width) <= PACKED);
            }
            // Every cutoff where the count changes, and one either side.
            for &t in &model {
                for cutoff in [t.saturating_sub(1), t, t.saturating_add(1)] {
                    prop_assert_eq!(
                        ring.count_at_most(cutoff),
                        model.partition_point(|&x| x <= cutoff),
                        "op {}: cutoff {}", i, cutoff
                    );
                }
            }
        }
    }
}
