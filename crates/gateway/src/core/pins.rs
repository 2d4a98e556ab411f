//! The session core's side of pinned tool definitions (`--lock`, docs/pinning.md): every tool
//! of every `tools/list` answer (the client's and the gateway's own, each page) is checked
//! against the gateway's pins ([`crate::pin::Pins`]). A drift is audited (`pin_drift`) and
//! counted the first time the gateway sees it; in `refuse` mode the tool is hidden from the
//! list, dropped from what the session knows the upstream offers, and a call to it is refused
//! (`pin_drift`) before the policy is asked, never forwarded.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_mcp::result_response;

use super::SessionCore;
use crate::pin::LockMode;
use crate::refusal;

impl SessionCore {
    /// Checks one listed tool against the pins: whether it stays in the listing (always,
    /// without pins or in `warn` mode). A drift seen for the first time is audited and counted.
    pub(super) fn pin_keep(&mut self, tool: &Value, now: Duration) -> bool {
        let Some(pins) = self.gateway.options.pins.clone() else {
            return true;
        };
        let Some(drifted) = pins.check(tool) else {
            // It matches (again, perhaps): callable.
            if let Some(name) = tool.get("name").and_then(Value::as_str) {
                self.drifted.remove(name);
            }
            return true;
        };
        if drifted.first {
            let mut fields = drifted.audit_fields(&drifted.upstream, pins.mode());
            fields["session"] = json!(self.session);
            if let Err(e) = self.gateway.audit(now, "pin_drift", fields) {
                tracing::error!(
                    "the drift of tool `{}` from the lock file cannot be audited: {e}",
                    drifted.tool
                );
            }
            self.gateway.metrics.observe_pin_drift(
                &drifted.upstream,
                &drifted.tool,
                drifted.kind.name(),
            );
            tracing::warn!(
                "tool `{}` of upstream `{}` does not match the lock file ({}: listed {}); {}",
                tollgate_mcp::display::ident(&drifted.tool),
                drifted.upstream,
                drifted.kind.name(),
                drifted.listed,
                match pins.mode() {
                    LockMode::Refuse => "hidden, and its calls refused",
                    LockMode::Warn => "listed and forwarded (--lock-mode warn)",
                }
            );
        }
        if pins.mode() == LockMode::Warn {
            return true;
        }
        if let Some(advertised) = self.advertised.as_mut() {
            advertised.remove(&drifted.tool);
        }
        // Bounded as the tool list is: what one listing can name.
        if self.drifted.len() < super::MAX_LISTED_TOOLS || self.drifted.contains_key(&drifted.tool)
        {
            self.drifted.insert(drifted.tool.clone(), drifted);
        }
        false
    }

    /// Checks the tools of a `tools/list` answer on its way to the client: in `refuse` mode the
    /// drifted ones are taken out of it.
    pub(super) fn pin_screen(&mut self, v: &mut Value, now: Duration) {
        if self.gateway.options.pins.is_none() {
            return;
        }
        if let Some(tools) = v
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(Value::as_array_mut)
        {
            tools.retain(|t| self.pin_keep(t, now));
        }
    }

    /// The refusal of a call to a tool hidden because it drifted from the lock (audited as a
    /// `refusal`), or `None` when `name` did not drift.
    pub(super) fn pin_refusal(&self, id: &Value, name: &str, now: Duration) -> Option<Value> {
        let drifted = self.drifted.get(name)?;
        let text = drifted.refusal_text();
        self.gateway.metrics.observe_refused_message("pin_drift");
        let pinned = match &drifted.kind {
            crate::pin::DriftKind::Changed { pinned, .. } => Value::from(pinned.as_str()),
            crate::pin::DriftKind::Added => Value::Null,
        };
        Some(
            match self.gateway.audit(now, "refusal", json!({"session": self.session, "grant": self.grant, "id": id, "tool": name, "decision": "pin_drift", "pinned": pinned, "listed": drifted.listed})) {
                Ok(_) => result_response(id, refusal::gateway(name, &self.grant, "pin_drift", text)),
                Err(e) => self.audit_failure(id, name, &e),
            },
        )
    }
}
