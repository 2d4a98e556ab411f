//! The policy document, version "1", as serde types: what a policy file says, before any
//! compilation. Every struct refuses unknown fields, so a misspelt key is an error rather than
//! a silently ignored rule.
//!
//! This is the document layer only: source spans, diagnostics, selectors and `decide` build on
//! it (issue 2).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limiter::{Counts, Scope};

/// What a rule (or `default`) does with a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    RequireApproval,
}

/// A policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// The JSON Schema this file follows (for editors; ignored by Tollgate).
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The policy language version: "1".
    pub version: Version,
    /// What happens to a tool no rule selects.
    pub default: Action,
    /// How long a held call waits for a human, and what happens then, for every rule that
    /// requires approval and does not say otherwise (default: 5 minutes, then deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Hide from `tools/list` the tools this policy always refuses (a gateway option).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hide_from_list: bool,
    /// Selector → rule. A selector is an exact tool name, a glob (`Delete*`), an upstream
    /// (`upstream:eks`), a risk class (`class:destructive`) or an MCP tool annotation
    /// (`annotation:destructiveHint`).
    #[serde(default)]
    pub tools: BTreeMap<String, Rule>,
}

/// The policy language version; only "1" exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Version {
    #[serde(rename = "1")]
    V1,
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct VersionVisitor;
        impl Visitor<'_> for VersionVisitor {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the string \"1\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Version, E> {
                match v {
                    "1" => Ok(Version::V1),
                    other => Err(E::custom(format!(
                        "unknown policy version `{other}`: this Tollgate reads version \"1\""
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Version, E> {
                Err(E::custom(format!(
                    "the version is a string: write \"{v}\", not {v}"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Version, E> {
                Err(E::custom(format!(
                    "the version is a string: write \"{v}\", not {v}"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Version, E> {
                Err(E::custom(format!(
                    "the version is a string: write \"1\", not {v}"
                )))
            }
        }
        d.deserialize_any(VersionVisitor)
    }
}

/// One rule: the action for the tools its selector matches, its limits, its argument checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `allow` when omitted (except in a rule with `when`, whose cases decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Why: shown to the agent on a refusal and recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Named limits; a counter named in several rules is one shared budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitDecl>,
    /// The `{max, window}` shorthand: one limit on a counter of this rule's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// For `require_approval`: the timeout and the outcome when nobody answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Checks on argument values, by argument name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, ArgRule>,
    /// Branches on one argument's value; each case is a rule of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Box<When>>,
    /// Arguments whose values the audit log and recordings replace with `"[redacted]"`; no
    /// violation message, refusal or explanation quotes them either (`(redacted)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
}

/// A branch on the value of one argument: `{"argument": "operation", "cases": {"read": {..},
/// "delete": {..}}, "otherwise": {..}}`. A value no case names takes `otherwise`; without
/// `otherwise` it is an invalid argument.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// The argument whose value picks the case.
    pub argument: String,
    /// Argument value (as a string; a number or boolean is written as its JSON text) → rule.
    /// A value picks a case only when it is written exactly so; one a lax reader may take for
    /// a case it does not spell (`"TRUE"` for `true`, `0.0` for `0`) is an invalid argument.
    pub cases: BTreeMap<String, Rule>,
    /// The rule for any other value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<Rule>,
}

/// How a held call ends when nobody answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutOutcome {
    #[default]
    Deny,
    Allow,
}

/// Approval settings: `{"timeout": "5m", "on_timeout": "deny"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// How long the call is held; a window-like duration (`"5m"`, `300`). Default 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Window>,
    /// `deny` (the default) or `allow`.
    #[serde(default)]
    pub on_timeout: TimeoutOutcome,
    /// Who is asked: `operators` (the gateway's admin API, CLI and console; the default), or
    /// `elicitation`: the client's own user, through MCP `elicitation/create`, when the client
    /// declared that capability (the operators otherwise). A rule without `via` takes the
    /// policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<ApprovalVia>,
}

/// Who approves a held call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalVia {
    /// The gateway's operators: `tollgate approvals`, the admin API, the console.
    #[default]
    Operators,
    /// The client's user, through MCP elicitation, when the client supports it. This trusts
    /// the client application to show the question to a person: use it only for clients
    /// where a human answers (a desktop assistant), never for unattended agents.
    Elicitation,
}

impl ApprovalVia {
    pub fn is_operators(&self) -> bool {
        *self == ApprovalVia::Operators
    }
}

/// Checks on one argument. Every check given must pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArgRule {
    /// The value must be one of these: of the listed value's own JSON kind, numbers compared
    /// by value (`1` and `1.0` are equal; `"1"` and `true` are not `1`).
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// The value must be none of these, in any spelling a lax reader (pydantic) may take for
    /// one: `not_enum: [0]` also refuses `0.0`, `"0"` and `false`; `[true]` refuses `"yes"`,
    /// `1` and `"TRUE"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_enum: Option<Vec<serde_json::Value>>,
    /// A string value must match this regular expression (unanchored: use `^...$` for a
    /// whole-value match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A string value must start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A number must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// A number must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A string (in characters) or array (in elements) must be at most this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// The argument must be present (and not null).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The argument must be absent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forbidden: bool,
}

/// A named limit: at most `max` calls per `window`, per value of `scope`; or, with
/// `counts: errors`, no call once `max` upstream errors of the calls it admitted lie in the
/// window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitDecl {
    /// The counter's name; rules naming the same counter share one budget.
    pub counter: String,
    pub window: Window,
    pub max: Max,
    /// `grant` (the default), `session` or `global`.
    #[serde(default)]
    pub scope: Scope,
    /// Arguments whose values key the counter as well as its scope, as JSON pointers into the
    /// call's arguments (`["/cluster_name"]`): one budget per distinct value (per scope value),
    /// the value as the tool reads it (an argument left out counts as its default, or `null`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<String>,
    /// What the counter counts: `calls` (the default: admitted calls) or `errors` (upstream
    /// errors of admitted calls: a JSON-RPC error, an `isError: true` result, a timeout, or
    /// the upstream gone mid-call; never the gateway's own refusals). An errors counter
    /// refuses further calls while `max` errors lie in its window (docs/limits.md).
    #[serde(default, skip_serializing_if = "Counts::is_calls")]
    pub counts: Counts,
}

/// The shorthand `rate_limit: {max, window}`. Its counter belongs to the rule alone and, as
/// the seed's documentation says, is tracked per agent session unless `scope` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: Max,
    pub window: Window,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// A limit's `max`: a whole number of calls (of errors, with `counts: errors`), at least 1 (`max: 0` would be a deny written as
/// a limit: say `action: deny` instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Max(pub u32);

impl<'de> Deserialize<'de> for Max {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MaxVisitor;
        impl Visitor<'_> for MaxVisitor {
            type Value = Max;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a whole number of calls (of errors, with `counts: errors`), at least 1",
                )
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Max, E> {
                match u32::try_from(n) {
                    Ok(0) => Err(E::custom(
                        "`max` must be at least 1; to refuse every call use `action: \"deny\"`",
                    )),
                    Ok(n) => Ok(Max(n)),
                    Err(_) => Err(E::custom(format!(
                        "`max` must be a whole number from 1 to {}, not `{n}`",
                        u32::MAX
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Max, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "`max` must be a whole number from 1 to {}, not `{n}`",
                        u32::MAX
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Max, E> {
                Err(E::custom(format!("`max` is a whole number, not `{n}`")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Max, E> {
                Err(E::custom(format!(
                    "`max` is a number, not the string \"{v}\": write it without quotes"
                )))
            }
        }
        d.deserialize_any(MaxVisitor)
    }
}

/// A window length: `second`, `minute`, `hour`, `day`, a whole number of seconds, or a
/// duration string of a whole number and one unit (`90s`, `5m`, `1h`, `1d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(pub Duration);

impl Window {
    /// Parses the string forms; the error says what is accepted.
    pub fn parse(text: &str) -> Result<Window, String> {
        let secs = match text {
            "second" => Some(1),
            "minute" => Some(60),
            "hour" => Some(3_600),
            "day" => Some(86_400),
            _ => {
                // The unit is the last character; everything before it must be digits.
                let (number, unit) = text
                    .char_indices()
                    .last()
                    .map_or(("", ""), |(i, _)| text.split_at(i));
                let factor = match unit {
                    "s" => Some(1u64),
                    "m" => Some(60),
                    "h" => Some(3_600),
                    "d" => Some(86_400),
                    _ => None,
                };
                match (number.parse::<u64>(), factor) {
                    (Ok(n), Some(f)) if number.bytes().all(|b| b.is_ascii_digit()) => {
                        n.checked_mul(f)
                    }
                    _ => None,
                }
            }
        };
        match secs {
            Some(0) => Err(format!(
                "window `{text}` is empty: a window must be at least 1 second"
            )),
            Some(s) => Ok(Window(Duration::from_secs(s))),
            None => Err(format!(
                "`{text}` is not a window: use `second`, `minute`, `hour`, `day`, a number of seconds, or a duration such as `90s`, `5m`, `1h`, `1d`"
            )),
        }
    }
}

impl JsonSchema for Max {
    fn schema_name() -> Cow<'static, str> {
        "Max".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A whole number of calls (of errors, with `counts: errors`), at least 1.",
            "type": "integer",
            "minimum": 1,
            "maximum": u32::MAX,
        })
    }
}

impl JsonSchema for Window {
    fn schema_name() -> Cow<'static, str> {
        "Window".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`second`, `minute`, `hour`, `day`, a whole number of seconds, or a whole number and a unit (`90s`, `5m`, `1h`, `1d`).",
            "oneOf": [
                { "type": "string", "enum": ["second", "minute", "hour", "day"] },
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^[0-9]+[smhd]$" },
            ],
        })
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.as_secs())
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WindowVisitor;
        impl Visitor<'_> for WindowVisitor {
            type Value = Window;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a window: `minute`, a number of seconds, or a duration such as `5m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Window, E> {
                Window::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Window, E> {
                if v == 0 {
                    return Err(E::custom("a window must be at least 1 second, not `0`"));
                }
                Ok(Window(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Window, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("a window cannot be negative, not `{v}`"))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Window, E> {
                Err(E::custom(format!(
                    "a window is a whole number of seconds, not `{v}`"
                )))
            }
        }
        d.deserialize_any(WindowVisitor)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyDoc, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The seed's policy (shared/seed/policy.json) is accepted verbatim.
    #[test]
    fn seed_policy_is_accepted_verbatim() {
        let doc = parse(include_str!("../../../examples/policies/seed.json")).unwrap();
        assert_eq!(doc.default, Action::Deny);
        let rule = &doc.tools["CancelAHORunBatch"];
        assert_eq!(rule.action, None, "action is omitted: allow");
        let limit = &rule.limits[0];
        assert_eq!(limit.counter, "cancelahorunbatch_rate");
        assert_eq!(limit.window, Window(Duration::from_secs(60)));
        assert_eq!(limit.max, Max(10));
        assert_eq!(limit.scope, Scope::Grant);
    }

    #[test]
    fn every_window_form_parses_to_seconds() {
        for (text, secs) in [
            ("second", 1),
            ("minute", 60),
            ("hour", 3_600),
            ("day", 86_400),
            ("90s", 90),
            ("5m", 300),
            ("1h", 3_600),
            ("2d", 172_800),
        ] {
            assert_eq!(
                Window::parse(text),
                Ok(Window(Duration::from_secs(secs))),
                "{text}"
            );
        }
        let w: Window = serde_json::from_str("45").unwrap();
        assert_eq!(w, Window(Duration::from_secs(45)));
    }

    #[test]
    fn bad_windows_are_refused_with_what_is_accepted() {
        for text in [
            "\"fortnight\"",
            "\"5x\"",
            "\"m\"",
            "\"-5m\"",
            "\"\"",
            "\"1.5h\"",
            "\"é\"",
        ] {
            let err = serde_json::from_str::<Window>(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not a window"), "{text}: {err}");
        }
        for (text, says) in [
            ("0", "at least 1 second"),
            ("\"0s\"", "at least 1 second"),
            ("-3", "negative"),
            ("1.5", "whole number"),
        ] {
            let err = serde_json::from_str::<Window>(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn max_zero_and_negative_max_are_refused() {
        let limit = |max: &str| format!(r#"{{"counter":"c","window":"minute","max":{max}}}"#);
        let err = serde_json::from_str::<LimitDecl>(&limit("0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1") && err.contains("deny"), "{err}");
        let err = serde_json::from_str::<LimitDecl>(&limit("-1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("whole number from 1"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse(r#"{"version":"1","default":"deny","tools":{"x":{"acton":"deny"}}}"#)
            .unwrap_err();
        assert!(err.contains("unknown field `acton`"), "{err}");
        let err = parse(r#"{"version":"2","default":"deny"}"#).unwrap_err();
        assert!(err.contains("unknown policy version `2`"), "{err}");
    }

    #[test]
    fn rate_limit_shorthand_and_scopes_parse() {
        let doc = parse(
            r#"{"version":"1","default":"allow","tools":{
                "Delete*":{"action":"require_approval","reason":"destructive",
                           "limits":[{"counter":"destructive_budget","window":"1h","max":5,"scope":"global"}]},
                "list_k8s_resources":{"rate_limit":{"max":100,"window":60}}}}"#,
        )
        .unwrap();
        assert_eq!(doc.tools["Delete*"].limits[0].scope, Scope::Global);
        assert_eq!(doc.tools["Delete*"].action, Some(Action::RequireApproval));
        let rl = doc.tools["list_k8s_resources"].rate_limit.as_ref().unwrap();
        assert_eq!(
            (rl.max, rl.window),
            (Max(100), Window(Duration::from_secs(60)))
        );
    }
}
