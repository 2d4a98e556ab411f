//! The run's upstreams: one in-process mock, or several behind an in-process model of the
//! gateway's router (`tollgate_gateway::multi`), in virtual time.
//!
//! With one mock every message goes to it as it is. With several, what the core sends is
//! routed as the router routes it (docs/gateway.md, "Several upstreams"), with the exposed
//! names made by the gateway's own rule (`tollgate_gateway::config::exposed_prefix`, checked
//! by `overlapping_prefixes`):
//! - `initialize` goes to every upstream that is up; the first answer (in the order of
//!   `upstreams`) is the answer, with `capabilities.tools.listChanged` set, after the slowest;
//! - `tools/list` goes to every upstream that is up, each one's pages followed (at most
//!   `multi::MAX_PAGES`), merged in the order of `upstreams` with each name prefixed (a name
//!   the spec does not allow, or one listed twice, is left out, as the router leaves it out);
//! - `tools/call` goes to the upstream that listed the exposed name, with its own name; an
//!   exposed name nobody listed gets the router's error; `ping` is answered here; notifications
//!   go to every upstream that is up; any other request gets the router's "not routed" error.
//!
//! An upstream that is `down` never answers: none of its tools is listed. The ids need no
//! mapping here: each mock answers with the id it was given, which is the core's own, as the
//! router's mapping gives it back.

use super::*;

use format::MockSpec;
use tollgate_gateway::multi::{MAX_PAGES, valid_tool_name};
use tollgate_mcp::{ErrorCode, error_response, result_response};
use tollgate_mock_eks::DirectHandled;

/// One upstream of the run.
pub(super) struct Part {
    pub(super) prefix: String,
    /// `None`: down for the whole run.
    pub(super) mock: Option<MockEks>,
}

/// The run's upstreams.
pub(super) struct Mocks {
    pub(super) parts: Vec<Part>,
    /// Exposed tool name → (part, its own name), from the last merged `tools/list` (several
    /// upstreams only).
    tools: HashMap<String, (usize, String)>,
    /// Calls received by exposed tool name, over every upstream (several upstreams only; one
    /// mock's own counts are its names).
    counts: BTreeMap<Arc<str>, u64>,
    /// Every call routed, by exposed name, in order (several upstreams, when the mocks keep
    /// their journals: the fuzzer's check of what reached the upstreams).
    log: Option<Vec<Arc<str>>>,
}

impl Mocks {
    /// The mocks of `specs`, each keeping only its counts of calls (the run reads no more).
    pub(super) fn new(specs: &[MockSpec]) -> Result<Mocks, String> {
        Mocks::build(specs, false)
    }

    /// The mocks of `specs` keeping every request (the fuzzer's, which checks them call by
    /// call), with every routed call logged by exposed name.
    pub(super) fn with_journals(specs: &[MockSpec]) -> Result<Mocks, String> {
        Mocks::build(specs, true)
    }

    fn build(specs: &[MockSpec], journals: bool) -> Result<Mocks, String> {
        let several = specs.len() > 1;
        let mut parts = Vec::with_capacity(specs.len());
        for spec in specs {
            let mock = if spec.down {
                None
            } else {
                let u = &spec.upstream;
                let mut mock = MockEks::new(MockConfig {
                    tools: u.tools.spec(),
                    page_size: u.page_size,
                    flags: Flags {
                        allow_write: u.allow_write,
                        allow_sensitive_data_access: u.allow_sensitive_data_access,
                    },
                    faults: u.faults.clone().unwrap_or_default(),
                    ..MockConfig::default()
                })
                .map_err(|e| {
                    if several {
                        format!("upstreams `{}` tools: {e}", spec.name)
                    } else {
                        format!("upstream.tools: {e}")
                    }
                })?;
                if !journals {
                    mock.keep_only_counts();
                }
                Some(mock)
            };
            parts.push(Part {
                prefix: spec.prefix.clone(),
                mock,
            });
        }
        Ok(Mocks {
            parts,
            tools: HashMap::new(),
            counts: BTreeMap::new(),
            log: (journals && specs.len() > 1).then(Vec::new),
        })
    }

    /// The same mocks started afresh ([`MockEks::fresh`]): nothing listed, nothing received.
    pub(super) fn fresh(&self) -> Mocks {
        Mocks {
            parts: self
                .parts
                .iter()
                .map(|p| Part {
                    prefix: p.prefix.clone(),
                    mock: p.mock.as_ref().map(MockEks::fresh),
                })
                .collect(),
            tools: HashMap::new(),
            counts: BTreeMap::new(),
            log: self.log.as_ref().map(|_| Vec::new()),
        }
    }

    /// Every tool the upstreams offer as the gateway lists it: by exposed name, its `tools/list`
    /// entry with that name.
    pub(super) fn offered(&self) -> HashMap<String, Value> {
        let mut out = HashMap::new();
        for p in &self.parts {
            let Some(mock) = &p.mock else { continue };
            for t in mock.tools() {
                let exposed = format!("{}{}", p.prefix, t.name);
                if !valid_tool_name(&exposed) || out.contains_key(&exposed) {
                    continue;
                }
                let mut listed = t.to_mcp();
                listed["name"] = Value::from(exposed.as_str());
                out.insert(exposed, listed);
            }
        }
        out
    }

    /// How many calls the upstreams have received so far (a mark for [`Mocks::calls_since`]).
    pub(super) fn received(&self) -> usize {
        match (&self.log, self.parts.as_slice()) {
            (Some(log), _) => log.len(),
            (None, [Part { mock: Some(m), .. }]) => m.journal().len(),
            _ => 0,
        }
    }

    /// The `tools/call` requests received since mark `from`: how many, and the last one's tool
    /// (its exposed name behind several upstreams).
    pub(super) fn calls_since(&self, from: usize) -> (usize, Option<&str>) {
        match (&self.log, self.parts.as_slice()) {
            (Some(log), _) => {
                let new = log.get(from..).unwrap_or_default();
                (new.len(), new.last().map(|t| &**t))
            }
            (None, [Part { mock: Some(m), .. }]) => {
                let calls = m.journal().get(from..).unwrap_or_default();
                let mut calls = calls.iter().filter(|e| e.method == "tools/call");
                let last = calls
                    .next_back()
                    .map(|e| e.tool.as_deref().unwrap_or_default());
                (calls.count() + usize::from(last.is_some()), last)
            }
            _ => (0, None),
        }
    }

    /// The one mock of a run with one upstream (`None` with several; a lone upstream is never
    /// `down`, the format refuses it).
    pub(super) fn single(&mut self) -> Option<&mut MockEks> {
        match self.parts.as_mut_slice() {
            [one] => one.mock.as_mut(),
            _ => None,
        }
    }

    fn up(&mut self) -> impl Iterator<Item = (usize, &mut MockEks)> {
        self.parts
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.mock.as_mut().map(|m| (i, m)))
    }

    /// Switches every mock's faults on or off.
    pub(super) fn set_faults_enabled(&mut self, on: bool) {
        for (_, m) in self.up() {
            m.set_faults_enabled(on);
        }
    }

    /// How many calls reached each tool: one mock's own names, or the exposed names over
    /// several upstreams.
    pub(super) fn calls_by_tool(&self) -> &BTreeMap<Arc<str>, u64> {
        match self.parts.as_slice() {
            [Part { mock: Some(m), .. }] => m.calls_by_tool(),
            _ => &self.counts,
        }
    }

    /// The upstream answers to one message of the core (each with its latency and effect).
    pub(super) fn handle_value(&mut self, session: &str, v: Value, now: Duration) -> Vec<Handled> {
        if let Some(one) = self.single() {
            return vec![one.handle_value(session, v, now)];
        }
        match v {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|item| self.route(session, item, now))
                .collect(),
            v => self.route(session, v, now).into_iter().collect(),
        }
    }

    /// One message through the router model (several upstreams).
    fn route(&mut self, session: &str, mut v: Value, now: Duration) -> Option<Handled> {
        let method = v.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = v.get("id").cloned();
        let (method, id) = match (method, id) {
            (Some(m), Some(id)) => (m, id),
            (Some(_), None) => {
                for (_, m) in self.up() {
                    let _ = m.handle_value(session, v.clone(), now);
                }
                return None;
            }
            // An answer to a request of an upstream: the mocks make none.
            (None, _) => return None,
        };
        let answer = |response: Value| Handled {
            response: Some(response),
            latency: Duration::ZERO,
            effect: None,
        };
        match method.as_str() {
            "initialize" => Some(self.initialize(session, &v, &id, now)),
            "tools/list" => Some(self.list(session, &v, &id, now)),
            "ping" => Some(answer(result_response(&id, json!({})))),
            "tools/call" => {
                let name = v
                    .get("params")
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some((part, own)) = self.tools.get(name).cloned() else {
                    return Some(answer(unlisted(&id, name)));
                };
                if let Some(p) = v.get_mut("params") {
                    p["name"] = Value::from(own.as_str());
                }
                let mock = self.parts[part].mock.as_mut()?;
                let handled = mock.handle_value(session, v, now);
                self.count(part, &own);
                Some(handled)
            }
            other => Some(answer(error_response(
                Some(&id),
                ErrorCode::MethodNotFound,
                &format!(
                    "`{}` is not routed by a gateway of several upstreams (tools, prompts and resources are)",
                    tollgate_mcp::display::ident(other)
                ),
                None,
            ))),
        }
    }

    fn count(&mut self, part: usize, own: &str) {
        let exposed: Arc<str> = Arc::from(format!("{}{own}", self.parts[part].prefix));
        if let Some(log) = self.log.as_mut() {
            log.push(Arc::clone(&exposed));
        }
        *self.counts.entry(exposed).or_insert(0) += 1;
    }

    fn initialize(&mut self, session: &str, v: &Value, id: &Value, now: Duration) -> Handled {
        let mut first = None;
        let mut latency = Duration::ZERO;
        for (_, m) in self.up() {
            let h = m.handle_value(session, v.clone(), now);
            latency = latency.max(h.latency);
            if first.is_none()
                && let Some(result) = h.response.and_then(|r| r.get("result").cloned())
            {
                first = Some(result);
            }
        }
        let response = match first {
            Some(mut result) => {
                // Every upstream may change its tools: the client hears of it.
                result["capabilities"]["tools"]["listChanged"] = Value::Bool(true);
                result_response(id, result)
            }
            None => error_response(
                Some(id),
                ErrorCode::InternalError,
                "no upstream answered `initialize`",
                None,
            ),
        };
        Handled {
            response: Some(response),
            latency,
            effect: None,
        }
    }

    fn list(&mut self, session: &str, v: &Value, id: &Value, now: Duration) -> Handled {
        let mut merged = Vec::new();
        let mut tools = HashMap::new();
        let mut latency = Duration::ZERO;
        for i in 0..self.parts.len() {
            let prefix = self.parts[i].prefix.clone();
            let Some(mock) = self.parts[i].mock.as_mut() else {
                continue;
            };
            let mut params = v.get("params").cloned().unwrap_or_else(|| json!({}));
            if let Some(o) = params.as_object_mut() {
                o.remove("cursor");
            }
            for page in 1..=MAX_PAGES {
                let request =
                    json!({"jsonrpc": "2.0", "id": page, "method": "tools/list", "params": params});
                let h = mock.handle_value(session, request, now);
                latency = latency.max(h.latency);
                let Some(result) = h.response.and_then(|r| r.get("result").cloned()) else {
                    break;
                };
                for mut item in result["tools"].as_array().cloned().unwrap_or_default() {
                    let Some(own) = item.get("name").and_then(Value::as_str).map(str::to_owned)
                    else {
                        continue;
                    };
                    let exposed = format!("{prefix}{own}");
                    if !valid_tool_name(&exposed) || tools.contains_key(&exposed) {
                        continue;
                    }
                    item["name"] = Value::from(exposed.as_str());
                    tools.insert(exposed, (i, own));
                    merged.push(item);
                }
                match result.get("nextCursor").and_then(Value::as_str) {
                    Some(c) => params["cursor"] = Value::from(c),
                    None => break,
                }
            }
        }
        self.tools = tools;
        Handled {
            response: Some(result_response(id, json!({"tools": merged}))),
            latency,
            effect: None,
        }
    }

    /// A call from its parts (the direct path): to the one mock, or routed by its exposed name.
    pub(super) fn call_direct(
        &mut self,
        session: &str,
        id: u64,
        tool: &str,
        arguments: &Arc<Value>,
        now: Duration,
    ) -> Option<DirectHandled> {
        if let Some(one) = self.single() {
            return one.call_direct(session, id, tool, arguments, now);
        }
        let Some((part, own)) = self.tools.get(tool).cloned() else {
            return Some(DirectHandled {
                answer: Err(unlisted(&Value::from(id), tool)),
                latency: Duration::ZERO,
                effect: None,
            });
        };
        let handled = self.parts[part]
            .mock
            .as_mut()?
            .call_direct(session, id, &own, arguments, now);
        if handled.is_some() {
            self.count(part, &own);
        }
        handled
    }
}

/// The router's answer to a call of a name no upstream lists.
fn unlisted(id: &Value, name: &str) -> Value {
    error_response(
        Some(id),
        ErrorCode::InvalidParams,
        &format!(
            "no upstream lists the tool `{}` now (it may have gone away): list the tools again",
            tollgate_mcp::display::ident(name)
        ),
        None,
    )
}
