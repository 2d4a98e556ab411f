//! Tool-name globs as the policy's overlap checks and `diff` see them: equality by their text,
//! and where a character class ends (a `!` or `]` can be a member).

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use tollgate_policy::selector::Glob;

#[test]
fn globs_are_equal_exactly_when_their_texts_are() {
    assert!(Glob::parse("delete_*").unwrap() == Glob::parse("delete_*").unwrap());
    assert!(Glob::parse("delete_*").unwrap() != Glob::parse("drop_*").unwrap());
}

/// A character class, whatever members it lists (`!` first negates; `!` elsewhere and a `]`
/// right after `[` or `[!` are members), stands for exactly one character of the name: the
/// shortest name a glob shares with itself is as long as its non-star tokens.
#[test]
fn a_character_class_stands_for_exactly_one_character() {
    for (text, shortest) in [
        ("x[a!]y", "xXy"),
        ("x[!a]y", "xXy"),
        ("x[]a]y", "xXy"),
        ("x[!]a]y", "xXy"),
        ("get_[lm]ogs*", "get_Xogs"),
        ("[!!]z?", "XzX"),
    ] {
        let g = Glob::parse(text).unwrap();
        assert_eq!(g.witness(&g).as_deref(), Some(shortest), "{text}");
    }
}
