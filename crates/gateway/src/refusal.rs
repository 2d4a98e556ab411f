//! What a refused call looks like to the agent (docs/errors.md).
//!
//! A refusal is a successful JSON-RPC response carrying a tool result with `isError: true`, so
//! the model sees it (JSON-RPC errors are often swallowed by clients before the model does):
//! - `content`: one text item saying what was refused, by which rule, why, and what to do
//!   (for rate limits: when to retry);
//! - `structuredContent.tollgate` and `_meta["dev.tollgate/decision"]`: the same, for machines:
//!   `decision`, `tool`, `grant`, `rule` (selector, JSON pointer, line, column), `reason`,
//!   `retry_after_seconds`, `violations` (JSON path and message each), `limits` (counter
//!   states), `store_unavailable` (the counter store that could not answer, and why).

use serde_json::{Value, json};
use tollgate_policy::engine::duration_text;
use tollgate_policy::{Decision, DecisionKind};

/// The `_meta` key of the machine-readable refusal.
pub const META_KEY: &str = "dev.tollgate/decision";

fn result(text: String, detail: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "structuredContent": {"tollgate": detail},
        "_meta": {META_KEY: detail},
    })
}

/// The tool result for a call the policy refused.
pub fn from_decision(tool: &str, grant: &str, d: &Decision) -> Value {
    let rule = format!("rule `{}` ({})", d.rule.selector, d.rule.pointer);
    let reason = d
        .reason
        .as_deref()
        .map(|r| format!(" Reason: {r}."))
        .unwrap_or_default();
    let text = match &d.kind {
        DecisionKind::Deny => format!(
            "Tollgate denied the call to `{tool}` under {rule}.{reason} Do not retry: this call will be refused again."
        ),
        DecisionKind::RateLimited { retry_after } => {
            let full: Vec<String> = d
                .limits
                .iter()
                .filter(|s| s.used >= s.max)
                .map(|s| {
                    format!(
                        "counter `{}` allows {} call{} per {} for `{}`",
                        s.counter,
                        s.max,
                        if s.max == 1 { "" } else { "s" },
                        tollgate_policy::engine::window_text(s.window),
                        s.key
                    )
                })
                .collect();
            format!(
                "Tollgate rate-limited the call to `{tool}` under {rule}: {}.{reason} Retry in {}.",
                full.join("; "),
                duration_text(*retry_after)
            )
        }
        DecisionKind::InvalidArguments { violations } => {
            let list: Vec<String> = violations
                .iter()
                .map(|v| format!("{} {}", v.path, v.message))
                .collect();
            format!(
                "Tollgate refused the call to `{tool}`: its arguments break {rule}: {}.{reason} Fix the arguments and call again.",
                list.join("; ")
            )
        }
        DecisionKind::ApprovalRequired { .. } => format!(
            "Tollgate refused the call to `{tool}`: {rule} requires a human's approval, and this gateway has no approval channel configured.{reason} Ask an operator to run the call, or to enable approvals."
        ),
        DecisionKind::StoreUnavailable => {
            let (store, why) = d
                .store_unavailable
                .as_ref()
                .map(|f| (&*f.store, f.reason.as_str()))
                .unwrap_or(("the counter store", "unknown"));
            format!(
                "Tollgate refused the call to `{tool}`: {rule} limits it, and the counter store that enforces the limit ({store}) is unavailable ({why}), so the gateway fails closed. The call was not run. Retry in a few seconds; if this persists, tell the gateway's operator that {store} is unreachable."
            )
        }
        DecisionKind::Allow => format!("Tollgate allowed `{tool}`."),
    };
    let mut detail = serde_json::to_value(d).unwrap_or(Value::Null);
    detail["tool"] = json!(tool);
    detail["grant"] = json!(grant);
    result(text, detail)
}

/// The tool result for a call the gateway refused before the policy: not advertised by the
/// upstream, duplicate keys, the audit log unavailable.
pub fn gateway(tool: &str, grant: &str, decision: &str, text: String) -> Value {
    let detail = json!({"decision": decision, "tool": tool, "grant": grant, "reason": text});
    result(text, detail)
}
