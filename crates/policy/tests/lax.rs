//! The lax readers' value comparisons at the edges of `f64`: integers beyond 2^53, which a
//! float cannot hold, compare exactly (as Python's `int` does), never through a rounded float.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use serde_json::json;
use tollgate_policy::lax::{may_read_as, same_value};

/// -(2^53 + 1) and its neighbour -2^53 round to the same `f64`; as integers they differ.
#[test]
fn negative_integers_beyond_two_to_the_53_are_the_same_value_only_as_themselves() {
    let a = json!(-9_007_199_254_740_993_i64);
    let b = json!(-9_007_199_254_740_992_i64);
    assert!(same_value(&a, &a));
    assert!(same_value(&b, &b));
    assert!(!same_value(&a, &b));
    assert!(!same_value(&b, &a));
    let big = json!(9_007_199_254_740_993_u64);
    assert!(same_value(&big, &big));
    assert!(!same_value(&big, &json!(9_007_199_254_740_992_u64)));
}

/// A string holding such an integer is read as that integer, not as its rounded float.
#[test]
fn an_integer_string_beyond_two_to_the_53_reads_as_exactly_that_integer() {
    assert!(may_read_as(
        &json!("-9007199254740993"),
        &json!(-9_007_199_254_740_993_i64)
    ));
    assert!(may_read_as(
        &json!(" 9007199254740993 "),
        &json!(9_007_199_254_740_993_u64)
    ));
}
