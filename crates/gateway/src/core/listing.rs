//! The upstream's tool list: the gateway's own `tools/list` (paged, bounded, with a deadline),
//! what it keeps of each tool, which tools a grant may see, and `list_changed` after a reload.

use super::*;

/// What the upstream said about one tool in `tools/list`.
#[derive(Debug, Clone)]
pub(super) struct ToolInfo {
    /// Shared: every call of the tool copies its `ToolInfo` out of the session's list, and
    /// gives the set to its policy `ToolMeta`.
    pub(super) annotations: Arc<BTreeSet<Annotation>>,
    /// The tool's catalogue entry, looked up once when it is listed.
    pub(super) catalogued: Option<&'static tollgate_catalog::CatalogTool>,
    /// The scalar parameter types of its `inputSchema`, read once when it is listed: a call's
    /// arguments are brought to the values the tool reads before the policy decides.
    pub(super) types: Option<crate::coerce::ToolTypes>,
}

#[derive(Debug)]
pub(super) struct Listing {
    /// The id of the gateway's own `tools/list` request in flight.
    pub(super) id: String,
    pub(super) tools: HashMap<String, ToolInfo, Hasher>,
    pub(super) meta: Option<Value>,
    /// Pages asked for so far (at most [`MAX_LIST_PAGES`]).
    pub(super) pages: u32,
    /// When the gateway stops waiting for the page asked for.
    pub(super) deadline: Duration,
}

impl SessionCore {
    pub(super) fn start_listing(
        &mut self,
        cursor: Option<&str>,
        meta: Option<Value>,
        now: Duration,
    ) -> Value {
        self.next_internal += 1;
        let id = format!("tollgate-internal-{}", self.next_internal);
        let mut params = json!({});
        if let Some(c) = cursor {
            params["cursor"] = json!(c);
        }
        if let Some(m) = &meta {
            params["_meta"] = m.clone();
        }
        let (tools, pages) = self
            .listing
            .take()
            .map(|l| (l.tools, l.pages))
            .unwrap_or_default();
        self.listing = Some(Listing {
            id: id.clone(),
            tools,
            meta,
            pages: pages + 1,
            deadline: now.saturating_add(self.list_timeout()),
        });
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
    }

    /// Records the tools a client-visible `tools/list` answer names (pages accumulate).
    pub(super) fn absorb_listing(&mut self, v: &Value) {
        let tools = v["result"]["tools"].as_array().map(Vec::as_slice);
        let map = self.advertised.get_or_insert_with(HashMap::default);
        for t in tools.unwrap_or_default() {
            if let Some(name) = t.get("name").and_then(Value::as_str) {
                map.insert(name.to_owned(), tool_info(t));
            }
        }
    }

    /// After a reload: if the client has listed the tools and the set it may see changed
    /// (`hide_from_list` hides a different set), it is told with
    /// `notifications/tools/list_changed`, so it lists them again.
    pub fn policy_changed(&mut self, now: Duration) -> Vec<Out> {
        let Some(before) = self.listed_under.clone() else {
            return Vec::new();
        };
        let Some(advertised) = &self.advertised else {
            return Vec::new();
        };
        let after = self.gateway.engine();
        if Arc::ptr_eq(&before, &after) {
            return Vec::new();
        }
        let changed = visible_tools(advertised, &before) != visible_tools(advertised, &after);
        self.listed_under = Some(after);
        if !changed {
            return Vec::new();
        }
        let mut outs = vec![Out::Client(json!({
            "jsonrpc": "2.0",
            "method": "notifications/tools/list_changed",
        }))];
        self.record_out(&mut outs, now);
        outs
    }

    /// With `hide_from_list`, removes the tools the policy refuses whatever the arguments.
    pub(super) fn hide_tools(&self, v: &mut Value) {
        let engine = self.gateway.engine();
        let policy = engine.policy();
        if !policy.doc.hide_from_list {
            return;
        }
        if let Some(tools) = v["result"]["tools"].as_array_mut() {
            tools.retain(|t| {
                let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
                tool_visible(&engine, name, &tool_info(t))
            });
        }
    }

    pub(super) fn internal_listing(&mut self, v: &Value, now: Duration) -> Vec<Out> {
        let mut listing = match self.listing.take() {
            Some(l) => l,
            None => return Vec::new(),
        };
        for t in v["result"]["tools"].as_array().into_iter().flatten() {
            if listing.tools.len() >= MAX_LISTED_TOOLS {
                tracing::warn!(
                    "the upstream lists more than {MAX_LISTED_TOOLS} tools: the rest are unknown"
                );
                break;
            }
            if let Some(name) = t.get("name").and_then(Value::as_str) {
                listing.tools.insert(name.to_owned(), tool_info(t));
            }
        }
        if let Some(cursor) = v["result"]["nextCursor"].as_str() {
            if listing.pages < MAX_LIST_PAGES {
                let cursor = cursor.to_owned();
                let meta = listing.meta.clone();
                self.listing = Some(listing);
                return vec![Out::Upstream(self.start_listing(Some(&cursor), meta, now))];
            }
            tracing::warn!(
                "the upstream's tool list goes on past {MAX_LIST_PAGES} pages: the gateway stops there"
            );
        }
        // An error answer leaves the tool set empty: every held call is refused as unknown,
        // which is safe, and the next call lists again.
        let failed = v.get("error").is_some();
        self.advertised = Some(listing.tools);
        let held = std::mem::take(&mut self.waiting_for_list);
        let mut out = Vec::new();
        // Held messages were parsed (and checked) when they came: they go on as values.
        for msg in held {
            out.extend(self.handle_incoming(Ok(Incoming::Single(msg)), now));
        }
        if failed {
            self.advertised = None;
        }
        out
    }

    /// How long the gateway waits for a page of its own `tools/list`: the call timeout, but at
    /// least [`MIN_LIST_TIMEOUT`] (the first listing also waits for an upstream that is still
    /// starting).
    pub(super) fn list_timeout(&self) -> Duration {
        self.gateway.options.call_timeout.max(MIN_LIST_TIMEOUT)
    }

    /// The upstream did not answer the gateway's own `tools/list` in time: the calls waiting
    /// for it get an error (nothing was decided or forwarded), and the next call lists again.
    pub(super) fn listing_timed_out(&mut self, now: Duration) -> Vec<Out> {
        if self.listing.as_ref().is_none_or(|l| l.deadline > now) {
            return Vec::new();
        }
        self.listing = None;
        let text = format!(
            "the upstream server did not list its tools within {}s, so the call could not be decided; nothing was forwarded. Retry later.",
            self.list_timeout().as_secs()
        );
        std::mem::take(&mut self.waiting_for_list)
            .iter()
            .filter_map(|msg| msg.get("id"))
            .map(|id| {
                Out::Client(error_response(
                    Some(id),
                    ErrorCode::InternalError,
                    &text,
                    None,
                ))
            })
            .collect()
    }
}

/// The names of `advertised` a client may see under `engine` (all of them unless the policy
/// hides the tools it always refuses).
pub(super) fn visible_tools(
    advertised: &HashMap<String, ToolInfo, Hasher>,
    engine: &Engine,
) -> Vec<String> {
    let mut names: Vec<String> = advertised
        .iter()
        .filter(|(name, info)| tool_visible(engine, name, info))
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}

/// Whether a client may see `name` in `tools/list` under `engine`: with `hide_from_list`, the
/// tools the policy refuses whatever the arguments are hidden.
pub(super) fn tool_visible(engine: &Engine, name: &str, info: &ToolInfo) -> bool {
    let policy = engine.policy();
    if !policy.doc.hide_from_list {
        return true;
    }
    let catalogued = tollgate_catalog::Catalog::embedded().get(name);
    let meta = |class: Option<RiskClass>| ToolMeta {
        class,
        annotations: Arc::clone(&info.annotations),
        defaults: info.types.as_ref().and_then(|t| t.defaults().cloned()),
    };
    // A call's class is its operation's (`call_class`): the tool is always refused only if it
    // is under its worst-case class (no or an unknown operation) and under every operation's.
    let classes = std::iter::once(catalogued.map(|c| policy_class(c.class))).chain(
        catalogued
            .into_iter()
            .flat_map(|c| c.operation_classes.values().map(|k| Some(policy_class(*k)))),
    );
    !classes
        .into_iter()
        .all(|class| policy.always_denies(name, &meta(class)))
}

pub(super) fn is_internal(v: &Value) -> bool {
    v.get("id")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("tollgate-internal-"))
}

pub(super) fn tool_info(t: &Value) -> ToolInfo {
    let a = t.get("annotations");
    let catalogued = t
        .get("name")
        .and_then(Value::as_str)
        .and_then(|name| tollgate_catalog::Catalog::embedded().get(name));
    let hint = |k: &str| {
        a.and_then(|a| a.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut annotations = Vec::new();
    if hint("readOnlyHint") {
        annotations.push(Annotation::ReadOnly);
    } else if hint("destructiveHint") {
        // Per the specification destructiveHint means nothing on a read-only tool.
        annotations.push(Annotation::Destructive);
    }
    if hint("idempotentHint") {
        annotations.push(Annotation::Idempotent);
    }
    if hint("openWorldHint") {
        annotations.push(Annotation::OpenWorld);
    }
    ToolInfo {
        annotations: Arc::new(annotations.into_iter().collect()),
        catalogued,
        types: crate::coerce::ToolTypes::of_listed(t.get("inputSchema"), catalogued),
    }
}
