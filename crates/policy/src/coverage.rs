//! What `tollgate test --coverage` counts in a policy: every rule, `when` case, argument
//! check, limit, approval outcome and the `default`, each with the JSON pointer a decision
//! names (docs/ci.md, "Coverage", defines when each is covered). The items only: which
//! decisions exercised them is read by the caller from the decisions themselves (the audit
//! records a scenario run writes), so the engine keeps no coverage state.

use std::sync::Arc;

use serde::Serialize;

use crate::limiter::Counts;
use crate::model::Action;
use crate::policy::{Policy, RuleBody};
use crate::source::escape_pointer;

/// What kind of thing an item is, and so when it is covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A rule (its selector): some call was decided by it or by one of its cases.
    Rule,
    /// The policy's `default`: some call no rule selects was decided.
    Default,
    /// One case of a `when`, or its `otherwise`: some call took it.
    Branch,
    /// The checks on one argument of one rule body: a call passed them and a call failed them.
    Check,
    /// One limit of one rule body: a call was admitted under it and a call refused by it (for
    /// a limit that counts errors: an error was counted on it and a call refused by it).
    Limit,
    /// One outcome of a rule body that requires approval: `approved`, or `refused` (denied or
    /// timed out with `on_timeout: deny`).
    Approval,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Rule => "rule",
            ItemKind::Default => "default",
            ItemKind::Branch => "branch",
            ItemKind::Check => "check",
            ItemKind::Limit => "limit",
            ItemKind::Approval => "approval",
        }
    }
}

/// One thing a scenario can exercise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub kind: ItemKind,
    /// The rule body it belongs to, as decisions name it (`/tools/X`,
    /// `/tools/X/when/cases/delete`, `/default`).
    pub pointer: Arc<str>,
    /// The argument (a check), the counter (a limit), the outcome (`approved`, `refused`), or
    /// the case (`operation = delete`, `operation: otherwise`); none for a rule or the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it is written (1-based; 0 when the file has no span for it).
    pub line: usize,
    pub column: usize,
    /// For a limit: what it counts (written only for `errors`).
    #[serde(skip_serializing_if = "Counts::is_calls")]
    pub counts: Counts,
}

impl Policy {
    /// Every coverage item of the policy, in file order of the rules (as the policy's map
    /// orders them), each rule followed by its own items.
    pub fn coverage_items(&self) -> Vec<Item> {
        let mut out = Vec::new();
        let at = |pointer: &str| {
            self.source
                .key_span(pointer)
                .map_or((0, 0), |s| self.source.line_col(s.start))
        };
        let (line, column) = at("/default");
        out.push(Item {
            kind: ItemKind::Default,
            pointer: Arc::clone(&self.default.pointer),
            name: None,
            line,
            column,
            counts: Counts::Calls,
        });
        for rule in &self.rules {
            let (line, column) = rule.body.position;
            out.push(Item {
                kind: ItemKind::Rule,
                pointer: Arc::clone(&rule.body.pointer),
                name: None,
                line,
                column,
                counts: Counts::Calls,
            });
            body_items(&rule.body, &at, &mut out);
        }
        out
    }
}

/// The items of one body and of its cases.
fn body_items(body: &RuleBody, at: &dyn Fn(&str) -> (usize, usize), out: &mut Vec<Item>) {
    let pointer = &body.pointer;
    let mut checked: Vec<&str> = Vec::new();
    for check in &body.arguments {
        if checked.contains(&check.name.as_str()) {
            continue;
        }
        checked.push(&check.name);
        let (line, column) = at(&format!(
            "{pointer}/arguments/{}",
            escape_pointer(&check.name)
        ));
        out.push(Item {
            kind: ItemKind::Check,
            pointer: Arc::clone(pointer),
            name: Some(check.name.clone()),
            line,
            column,
            counts: Counts::Calls,
        });
    }
    if let Some(branch) = &body.when {
        // A body with `when` decides nothing itself: its cases do (their limits, their
        // approvals).
        let cases = branch
            .cases
            .iter()
            .map(|(k, c)| (format!("{} = {k}", branch.argument), c))
            .chain(
                branch
                    .otherwise
                    .iter()
                    .map(|c| (format!("{}: otherwise", branch.argument), c)),
            );
        for (name, case) in cases {
            let (line, column) = case.position;
            out.push(Item {
                kind: ItemKind::Branch,
                pointer: Arc::clone(&case.pointer),
                name: Some(name),
                line,
                column,
                counts: Counts::Calls,
            });
            body_items(case, at, out);
        }
        return;
    }
    if body.action == Action::Deny {
        return;
    }
    for limit in &body.limits {
        let (line, column) = body.position;
        out.push(Item {
            kind: ItemKind::Limit,
            pointer: Arc::clone(pointer),
            name: Some(limit.counter.to_string()),
            line,
            column,
            counts: limit.counts,
        });
    }
    if body.action == Action::RequireApproval {
        for outcome in ["approved", "refused"] {
            let (line, column) = body.position;
            out.push(Item {
                kind: ItemKind::Approval,
                pointer: Arc::clone(pointer),
                name: Some(outcome.to_owned()),
                line,
                column,
                counts: Counts::Calls,
            });
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// Every kind of item is found once, with the pointer a decision names.
    #[test]
    fn items_of_a_policy_with_every_kind() {
        let policy = Policy::parse(
            "p.json",
            r#"{"version":"1","default":"deny","tools":{
  "manage_k8s_resource":{"arguments":{"cluster_name":{"prefix":"dev-"}},
    "when":{"argument":"operation","cases":{
      "read":{"rate_limit":{"max":5,"window":"minute"}},
      "delete":{"action":"require_approval"}},
      "otherwise":{"action":"deny"}}},
  "Delete*":{"action":"deny"}}}"#,
        )
        .unwrap();
        let items: Vec<String> = policy
            .coverage_items()
            .iter()
            .map(|i| {
                format!(
                    "{} {} {}",
                    i.kind.as_str(),
                    i.pointer,
                    i.name.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert_eq!(
            items,
            [
                "default /default -",
                "rule /tools/Delete* -",
                "rule /tools/manage_k8s_resource -",
                "check /tools/manage_k8s_resource cluster_name",
                "branch /tools/manage_k8s_resource/when/cases/delete operation = delete",
                "approval /tools/manage_k8s_resource/when/cases/delete approved",
                "approval /tools/manage_k8s_resource/when/cases/delete refused",
                "branch /tools/manage_k8s_resource/when/cases/read operation = read",
                "limit /tools/manage_k8s_resource/when/cases/read rate_limit:manage_k8s_resource[operation=read]",
                "branch /tools/manage_k8s_resource/when/otherwise operation: otherwise",
            ]
        );
    }
}
