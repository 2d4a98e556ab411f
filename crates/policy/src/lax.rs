//! How a lax reader reads one JSON value as each scalar type: the rules of pydantic v2 in lax
//! mode reading JSON, which the real Amazon EKS MCP server (like most Python MCP servers)
//! applies to every tool argument before the tool sees it.
//!
//! The engine uses the readers where it does not know an argument's type: a `not_enum` refuses
//! any value a reader may take for a refused one, and a `when` refuses a value a reader may
//! take for a case it does not spell exactly (docs/policy.md, "How values are compared"). The
//! gateway uses them, with the tool's input schema, to bring an argument to the value the tool
//! will read before the policy decides.
//!
//! | read as | from |
//! |---|---|
//! | string | a JSON string only |
//! | integer | an integer; a whole float strictly between -2^63 and 2^63 (`0.0`, `-0.0`, `1e5`); a boolean (`true` is 1); a string holding a decimal integer after trimming white space, with a sign, leading zeros, `_` between digits or a fraction of zeros (`" +007 "`, `"1_000"`, `"-0.00"`) |
//! | number | a number; a boolean; a string a float parses from after trimming (`"1e5"`, `" .5"`, `"nan"`, `"-inf"`), or with `_` between digits |
//! | boolean | a boolean; `0` and `1` (also as floats: `0.0`, `1.0`); the strings `"0"`, `"1"` and, in any case, `"f"`, `"n"`, `"no"`, `"off"`, `"false"`, `"t"`, `"y"`, `"yes"`, `"on"`, `"true"` |
//!
//! Each reading has an [`Exactness`], which picks the member of a union (`int | str`) a value
//! is read as: the first exact one, else the most exact, the first of those on a tie.

use serde_json::{Number, Value};

/// How directly a value is read as a type, ordered from least to most exact: what a union of
/// several types uses to choose the member that reads a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Exactness {
    /// Converted: a string read as a number, a boolean as an integer, a whole float as an
    /// integer, `"yes"` as `true`.
    Lax,
    /// Taken as it is, but not of the type's own JSON kind: an integer read as a float, and
    /// any JSON string read as a string (JSON strings also spell dates, UUIDs and the like).
    Strict,
    /// The type's own JSON kind: an integer as an integer, a float as a float, a boolean as a
    /// boolean.
    Exact,
}

/// `v` read as a string: JSON strings only.
pub fn as_string(v: &Value) -> Option<(&str, Exactness)> {
    v.as_str().map(|s| (s, Exactness::Strict))
}

/// `v` read as an integer (see the module's table); `None` when it is not one, or is one
/// beyond 128 bits (never a value a policy can name exactly).
pub fn as_integer(v: &Value) -> Option<(i128, Exactness)> {
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Some((i.into(), Exactness::Exact)),
            (_, Some(u)) => Some((u.into(), Exactness::Exact)),
            _ => whole_float(n.as_f64()?).map(|i| (i.into(), Exactness::Lax)),
        },
        Value::Bool(b) => Some((i128::from(*b), Exactness::Lax)),
        Value::String(s) => integer_text(s).map(|i| (i, Exactness::Lax)),
        _ => None,
    }
}

/// `v` read as a float (see the module's table). The float may be infinite or NaN (`"inf"`,
/// `"nan"`): a lax reader takes those.
pub fn as_number(v: &Value) -> Option<(f64, Exactness)> {
    match v {
        Value::Number(n) if n.is_f64() => n.as_f64().map(|f| (f, Exactness::Exact)),
        // An integer is taken as the nearest float.
        Value::Number(n) => n.as_f64().map(|f| (f, Exactness::Strict)),
        Value::Bool(b) => Some((if *b { 1.0 } else { 0.0 }, Exactness::Lax)),
        Value::String(s) => number_text(s).map(|f| (f, Exactness::Lax)),
        _ => None,
    }
}

/// `v` read as a boolean (see the module's table).
pub fn as_boolean(v: &Value) -> Option<(bool, Exactness)> {
    let bit = |i: i64| match i {
        0 => Some((false, Exactness::Lax)),
        1 => Some((true, Exactness::Lax)),
        _ => None,
    };
    match v {
        Value::Bool(b) => Some((*b, Exactness::Exact)),
        Value::Number(n) if n.is_f64() => bit(whole_float(n.as_f64()?)?),
        // An integer beyond i64 is a big integer to the reader, never a boolean.
        Value::Number(n) => bit(n.as_i64()?),
        Value::String(s) => boolean_text(s).map(|b| (b, Exactness::Lax)),
        _ => None,
    }
}

/// A float read as an integer: finite, whole and strictly between -2^63 and 2^63.
fn whole_float(f: f64) -> Option<i64> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && -TWO_63 < f && f < TWO_63).then_some(f as i64)
}

/// A string read as a boolean: `"0"`, `"1"`, and the words in any ASCII case. No trimming.
pub fn boolean_text(s: &str) -> Option<bool> {
    const FALSE: [&str; 5] = ["f", "n", "no", "off", "false"];
    const TRUE: [&str; 5] = ["t", "y", "yes", "on", "true"];
    if s == "0" || FALSE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(false)
    } else if s == "1" || TRUE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(true)
    } else {
        None
    }
}

/// A string read as a float: a float's text after trimming white space, or with the `_`
/// between its digits removed.
pub fn number_text(s: &str) -> Option<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .or_else(|| without_underscores(s)?.parse().ok())
}

/// A string read as an integer: a JSON integer as written, or one once white space, a `+`,
/// leading zeros, a fraction of zeros and `_` between digits are taken away.
pub fn integer_text(s: &str) -> Option<i128> {
    if is_json_integer(s) {
        return s.parse().ok();
    }
    let cleaned = cleaned_integer(s)?;
    if is_json_integer(&cleaned) {
        cleaned.parse().ok()
    } else {
        None
    }
}

/// `-?(0|[1-9][0-9]*)`, the whole text, at most 4300 digits (a longer one is refused).
fn is_json_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s).as_bytes();
    match digits {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => digits.len() <= 4300 && digits.iter().all(u8::is_ascii_digit),
    }
}

/// The text an integer reader tries when `s` is not a JSON integer as written; `None` when
/// nothing could be taken away (then it is not an integer).
fn cleaned_integer(s: &str) -> Option<String> {
    let before = s.len();
    let mut t = s.trim();
    if let Some(rest) = t.strip_prefix('+') {
        if rest.starts_with('-') {
            return None;
        }
        t = rest;
    }
    let negative = match t.strip_prefix('-') {
        Some(rest) if rest.starts_with(['-', '+']) => return None,
        Some(rest) => {
            t = rest;
            true
        }
        None => false,
    };
    t = without_leading_zeros(t)?;
    if let Some(dot) = t.find('.') {
        let fraction = &t[dot + 1..];
        if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') {
            t = &t[..dot];
        }
    }
    let body = match without_underscores(t) {
        Some(joined) => joined,
        None if t.len() == before => return None,
        None => t.to_owned(),
    };
    Some(if negative { format!("-{body}") } else { body })
}

/// `t` without its leading zeros (and `_` among them), keeping one zero before a `.` or when
/// the text is all zeros; `None` when it does not start with a digit or `-`.
fn without_leading_zeros(t: &str) -> Option<&str> {
    let mut chars = t.char_indices();
    match chars.next() {
        Some((_, '0')) => {}
        Some((_, c)) if c.is_ascii_digit() || c == '-' => return Some(t),
        _ => return None,
    }
    for (i, c) in chars {
        match c {
            '0' | '_' => {}
            '1'..='9' | '-' => return Some(&t[i..]),
            // Everything before is ASCII: `i - 1` is the previous character.
            '.' => return Some(&t[i - 1..]),
            _ => return None,
        }
    }
    Some(&t[t.len() - 1..])
}

/// `s` with the `_` between its characters removed; `None` when it has none, or has one at
/// either end or two in a row (as Python's `int` and `float` refuse).
fn without_underscores(s: &str) -> Option<String> {
    let usable = s.contains('_') && !s.starts_with('_') && !s.ends_with('_') && !s.contains("__");
    usable.then(|| s.replace('_', ""))
}

/// Whether two JSON values are the same value: of the same JSON kind, numbers compared by
/// value (`1`, `1.0` and `1e0` are the same), arrays and objects member by member.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Whether a lax reader may read `v` as the value `r`, reading it as any scalar type: a string
/// only as itself; as a number when its integer or float reading equals `r` by value; as a
/// boolean when its boolean reading is `r`; arrays and objects member by member.
pub fn may_read_as(v: &Value, r: &Value) -> bool {
    match r {
        Value::String(s) => v.as_str() == Some(s.as_str()),
        Value::Number(n) => {
            as_integer(v).is_some_and(|(i, _)| integer_equals(n, i))
                // The float reading is compared with the float `r` is read as (both round).
                || as_number(v).is_some_and(|(f, _)| n.as_f64() == Some(f))
        }
        Value::Bool(b) => as_boolean(v).is_some_and(|(x, _)| x == *b),
        Value::Null => v.is_null(),
        Value::Array(rs) => v.as_array().is_some_and(|vs| {
            vs.len() == rs.len() && vs.iter().zip(rs).all(|(v, r)| may_read_as(v, r))
        }),
        Value::Object(rs) => v.as_object().is_some_and(|vs| {
            vs.len() == rs.len()
                && rs
                    .iter()
                    .all(|(k, r)| vs.get(k).is_some_and(|v| may_read_as(v, r)))
        }),
    }
}

/// Whether the number `n` is exactly the integer `i`.
fn integer_equals(n: &Number, i: i128) -> bool {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(x), _, _) => i128::from(x) == i,
        (_, Some(x), _) => i128::from(x) == i,
        (_, _, Some(f)) => float_is_integer(f, i),
        _ => false,
    }
}

/// Whether the float `f` is exactly the integer `i`.
fn float_is_integer(f: f64, i: i128) -> bool {
    const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    f.is_finite() && f.fract() == 0.0 && (-TWO_127..TWO_127).contains(&f) && f as i128 == i
}

fn numbers_equal(x: &Number, y: &Number) -> bool {
    match (x.as_i64(), x.as_u64(), x.as_f64()) {
        (Some(i), _, _) => integer_equals(y, i.into()),
        (_, Some(u), _) => integer_equals(y, u.into()),
        (_, _, Some(f)) => match (y.as_i64(), y.as_u64(), y.as_f64()) {
            (Some(i), _, _) => float_is_integer(f, i.into()),
            (_, Some(u), _) => float_is_integer(f, u.into()),
            (_, _, Some(g)) => f == g,
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn int(text: &str) -> Option<i128> {
        integer_text(text)
    }

    /// The integer texts pydantic's `int` accepts and refuses (its `str_as_int`).
    #[test]
    fn integer_texts_read_as_pydantic_reads_them() {
        for (text, want) in [
            ("7", Some(7)),
            ("-0", Some(0)),
            (" 7 ", Some(7)),
            ("\t-7\n", Some(-7)),
            ("+7", Some(7)),
            ("007", Some(7)),
            ("-007", Some(-7)),
            ("1_000", Some(1000)),
            ("0_0", Some(0)),
            ("1.0", Some(1)),
            ("-0.000", Some(0)),
            ("00.0", Some(0)),
            ("18446744073709551616", Some(18_446_744_073_709_551_616)),
            ("1.", None),
            (".0", None),
            ("1.5", None),
            ("1e3", None),
            ("0x10", None),
            ("1__0", None),
            ("_1", None),
            ("1_", None),
            ("+-1", None),
            ("--1", None),
            ("-+1", None),
            ("", None),
            ("-", None),
            ("one", None),
            ("\u{664}", None),
        ] {
            assert_eq!(int(text), want, "{text:?}");
        }
    }

    /// Readings of whole floats, booleans and strings as integers, floats and booleans.
    #[test]
    fn scalar_readings() {
        let i = |v: Value| as_integer(&v).map(|r| r.0);
        assert_eq!(i(json!(0.0)), Some(0));
        assert_eq!(i(json!(-0.0)), Some(0));
        assert_eq!(i(json!(1e5)), Some(100_000));
        assert_eq!(i(json!(0.5)), None);
        assert_eq!(i(json!(9.3e18)), None);
        assert_eq!(i(json!(true)), Some(1));
        assert_eq!(i(json!(null)), None);
        let f = |v: Value| as_number(&v).map(|r| r.0);
        assert_eq!(f(json!("0e5")), Some(0.0));
        assert_eq!(f(json!(" .5 ")), Some(0.5));
        assert_eq!(f(json!("1_0.5")), Some(10.5));
        assert_eq!(f(json!("-inf")), Some(f64::NEG_INFINITY));
        assert!(f(json!("NaN")).is_some_and(f64::is_nan));
        assert_eq!(f(json!(false)), Some(0.0));
        assert_eq!(f(json!("x")), None);
        let b = |v: Value| as_boolean(&v).map(|r| r.0);
        for t in ["yes", "YES", "On", "t", "Y", "1", "true", "TRUE", "tRuE"] {
            assert_eq!(b(json!(t)), Some(true), "{t}");
        }
        for t in ["no", "OFF", "f", "N", "0", "false", "False"] {
            assert_eq!(b(json!(t)), Some(false), "{t}");
        }
        for t in [" yes", "2", "1.0", "", "ja"] {
            assert_eq!(b(json!(t)), None, "{t}");
        }
        assert_eq!(b(json!(1)), Some(true));
        assert_eq!(b(json!(0.0)), Some(false));
        assert_eq!(b(json!(2)), None);
        assert_eq!(b(json!(u64::MAX)), None);
    }

    /// Numbers are the same value whatever their spelling; other kinds are never equal.
    #[test]
    fn same_value_compares_numbers_by_value() {
        assert!(same_value(&json!(1), &json!(1.0)));
        assert!(same_value(&json!(0), &json!(-0.0)));
        assert!(same_value(&json!([1, {"a": 2.0}]), &json!([1.0, {"a": 2}])));
        assert!(!same_value(&json!(1), &json!("1")));
        assert!(!same_value(&json!(1), &json!(true)));
        assert!(!same_value(&json!(u64::MAX), &json!(1.8446744073709552e19)));
    }

    /// The attacker review's spellings: each may be read as the refused value.
    #[test]
    fn odd_spellings_may_be_read_as_the_refused_value() {
        for v in [
            json!(0.0),
            json!(-0.0),
            json!(0e5),
            json!("0"),
            json!(" 0 "),
            json!("0.0"),
            json!("0e5"),
            json!("-0"),
            json!(false),
        ] {
            assert!(may_read_as(&v, &json!(0)), "{v}");
        }
        for v in [
            json!("yes"),
            json!(1),
            json!(1.0),
            json!("TRUE"),
            json!("on"),
            json!("1"),
        ] {
            assert!(may_read_as(&v, &json!(true)), "{v}");
        }
        for v in [json!(1), json!("no"), json!("0.5"), json!(null), json!([0])] {
            assert!(!may_read_as(&v, &json!(0)), "{v}");
        }
        assert!(!may_read_as(&json!("Kube-System"), &json!("kube-system")));
        assert!(!may_read_as(&json!(0), &json!("0")));
        assert!(may_read_as(&json!(["1", 0.0]), &json!([1, false])));
    }
}
