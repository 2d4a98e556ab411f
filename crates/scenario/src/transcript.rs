//! The transcript: one line per call (or reload, decision, switch) in the order the calls were
//! made, written as their answers come, and how each answer is described.

use super::*;

/// The transcript's entries not yet written, addressed by their index in the whole run (the
/// answer to call 7 finds its entry after entries 0 to 5 have been written and dropped).
#[derive(Debug, Default)]
pub(super) struct Entries {
    pub(super) items: VecDeque<Entry>,
    /// The run-wide index of `items[0]`.
    pub(super) first: usize,
}

impl Entries {
    /// Adds an entry; its run-wide index.
    pub(super) fn push(&mut self, entry: Entry) -> usize {
        self.items.push_back(entry);
        self.first + self.items.len() - 1
    }

    /// Entry `i` if it is not written yet.
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Entry> {
        i.checked_sub(self.first)
            .and_then(|k| self.items.get_mut(k))
    }

    pub(super) fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.items.pop_front()?;
        self.first += 1;
        Some(entry)
    }

    /// The first entry, if it is complete: a note, or a call with its answer.
    pub(super) fn pop_ready(&mut self) -> Option<Entry> {
        match self.items.front()? {
            Entry::Call(r) if r.answer.is_none() => None,
            _ => self.pop_front(),
        }
    }
}

/// The transcript written so far, with what its lines counted.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) transcript: String,
    /// Calls by decision (the keys are shared by the decisions' records).
    pub(super) totals: Vec<(Arc<str>, u64)>,
    pub(super) decisions: Vec<CallDecision>,
    /// Expectations of written calls that did not hold, in transcript order.
    pub(super) failures: Vec<String>,
}

impl Written {
    /// The transcript's header, with room for the lines of `actions` calls (the transcript of
    /// a long replay is tens of megabytes, and growing it by doubling copies it over and over;
    /// room that is never written is never touched).
    pub(super) fn start(scenario: &Scenario, actions: u64) -> Written {
        let room = usize::try_from(actions)
            .unwrap_or(usize::MAX)
            .saturating_mul(LINE_ROOM)
            .min(MAX_ROOM);
        let mut transcript = String::with_capacity(256 + room);
        let _ = writeln!(transcript, "scenario: {}", scenario.name);
        if let Some(d) = &scenario.description {
            let _ = writeln!(transcript, "  {}", d.trim());
        }
        transcript.push('\n');
        Written {
            transcript,
            decisions: Vec::with_capacity(usize::try_from(actions).unwrap_or(0).min(1 << 24)),
            ..Written::default()
        }
    }
}

/// Room reserved per call for its transcript lines: a refusal's line and message run to about
/// 300 bytes, an allowed call's to about 150.
pub(super) const LINE_ROOM: usize = 320;
/// At most this much is reserved up front (1 GiB); beyond it the transcript grows as it must.
pub(super) const MAX_ROOM: usize = 1 << 30;

/// One line of the transcript.
#[derive(Debug)]
pub(super) enum Entry {
    Call(CallRecord),
    Note {
        at: Duration,
        text: String,
        more: Vec<String>,
    },
}

#[derive(Debug)]
pub(super) struct CallRecord {
    pub(super) at: Duration,
    /// The request's id, if it has one.
    pub(super) id: Option<IdText>,
    pub(super) agent: Arc<str>,
    pub(super) label: Arc<str>,
    pub(super) tool: Arc<str>,
    pub(super) in_batch: bool,
    pub(super) expect: Option<Arc<StepExpect>>,
    /// When the answer came, and what it said (described as it arrives, so the run keeps a
    /// few strings per call instead of the answer's JSON).
    pub(super) answer: Option<(Duration, Described)>,
    /// Held for approval (this id): the line says `held`, and the outcome is a record of its
    /// own at the instant it comes.
    pub(super) held: Option<u64>,
    /// How the held call this record answers was decided (`approval 1 approved by alice`).
    pub(super) approval: Option<String>,
}

impl CallRecord {
    /// The record of a call action `a` makes, not answered yet.
    pub(super) fn new(
        a: &Action,
        agent: &Arc<str>,
        id: Option<IdText>,
        tool: Arc<str>,
        in_batch: bool,
        expect: Option<Arc<StepExpect>>,
    ) -> CallRecord {
        CallRecord {
            at: a.at,
            id,
            agent: Arc::clone(agent),
            label: Arc::clone(a.label),
            tool,
            in_batch,
            expect,
            answer: None,
            held: None,
            approval: None,
        }
    }
}

impl Run {
    /// Writes the transcript's lines of the entries at the front that are complete (a note,
    /// or a call with its answer): the transcript is written as the run goes, and a long
    /// replay keeps only the calls still waiting for an answer, not one record per call.
    pub(super) fn write_ready(&mut self) {
        while let Some(entry) = self.entries.pop_ready() {
            self.write(entry);
        }
    }

    /// The transcript's line(s) for one entry; counts its decision and checks its expectations.
    pub(super) fn write(&mut self, entry: Entry) {
        let w = &mut self.written;
        let mut record = match entry {
            Entry::Note { at, text, more } => {
                push_instant(&mut w.transcript, at);
                let _ = writeln!(w.transcript, " {text}");
                for m in more {
                    let _ = writeln!(w.transcript, "    {m}");
                }
                return;
            }
            Entry::Call(r) => r,
        };
        let (grant, session) = self
            .agents
            .get(&*record.agent)
            .map(|s| (s.grant.as_str(), s.session.as_str()))
            .unwrap_or_default();
        // With several upstreams, the upstream the call's name routes to (none for a name no
        // upstream's prefix starts).
        let upstream =
            tollgate_gateway::multi::upstream_of(&self.gateway.options().upstreams, &record.tool)
                .map(|u| u.name.as_str());
        let on = upstream
            .map(|u| format!(" upstream={u}"))
            .unwrap_or_default();
        if let Some(approval) = record.held {
            // Held for a human: the outcome is its own line when it comes.
            push_instant(&mut w.transcript, record.at);
            let _ = writeln!(
                w.transcript,
                " grant={grant} session={session}{on} {}{} -> held (approval {approval})",
                if record.in_batch { "[batch] " } else { "" },
                record.tool,
            );
            if record.answer.is_none() {
                w.failures.push(format!(
                    "step {}: `{}` (approval {approval}) was never answered",
                    record.label, record.tool
                ));
            }
            return;
        }
        let answered = record.answer.as_ref().map(|(when, _)| *when);
        let (decision, mut detail, message) = match record.answer.take() {
            Some((_, d)) => d,
            None => (
                Cow::Borrowed("unanswered"),
                "no answer when the run ended".to_owned(),
                None,
            ),
        };
        if let Some(when) = answered
            && when > record.at
        {
            let after = format!("answered after {}", seconds(when.saturating_sub(record.at)));
            detail = if detail.is_empty() {
                after
            } else {
                format!("{detail}, {after}")
            };
        }
        if let Some(a) = &record.approval {
            detail = if detail.is_empty() {
                a.clone()
            } else {
                format!("{a}; {detail}")
            };
        }
        // The decision's name is kept once, in the totals, and shared by every call's record.
        // A run has a handful of decision kinds: a list, found by one short scan.
        let decision: Arc<str> = match w.totals.iter_mut().find(|(k, _)| **k == *decision) {
            Some((k, n)) => {
                *n += 1;
                Arc::clone(k)
            }
            None => {
                let k: Arc<str> = Arc::from(&*decision);
                w.totals.push((Arc::clone(&k), 1));
                k
            }
        };
        // Written piece by piece: a long replay writes this line for every call.
        let t = &mut w.transcript;
        push_instant(t, record.at);
        for piece in [
            " grant=",
            grant,
            " session=",
            session,
            if upstream.is_some() { " upstream=" } else { "" },
            upstream.unwrap_or_default(),
            " ",
            if record.in_batch { "[batch] " } else { "" },
            &record.tool,
            " -> ",
            &decision,
        ] {
            t.push_str(piece);
        }
        if !detail.is_empty() {
            t.push_str(" (");
            t.push_str(&detail);
            t.push(')');
        }
        t.push('\n');
        if let Some(m) = &message {
            t.push_str("    ");
            t.push_str(m);
            t.push('\n');
        }
        if let Some(x) = &record.expect {
            if let Some(want) = &x.decision
                && want.as_str() != &*decision
            {
                w.failures.push(format!(
                    "step {} at {:.3}s: `{}` was {decision}, expected {want}",
                    record.label,
                    record.at.as_secs_f64(),
                    record.tool
                ));
            }
            if let Some(want) = &x.message_contains
                && !message
                    .as_deref()
                    .unwrap_or_default()
                    .contains(want.as_str())
            {
                w.failures.push(format!(
                    "step {} at {:.3}s: the message of `{}` does not contain {want:?}",
                    record.label,
                    record.at.as_secs_f64(),
                    record.tool
                ));
            }
        }
        w.decisions.push(CallDecision {
            at_ms: u64::try_from(record.at.as_millis()).unwrap_or(u64::MAX),
            id: record.id,
            agent: record.agent,
            tool: record.tool,
            upstream: upstream.map(Arc::from),
            decision,
        });
    }

    pub(super) fn finish(mut self, scenario: &Scenario) -> Outcome {
        // What is still waiting (a call never answered, and everything after it) is written
        // as it stands.
        while let Some(entry) = self.entries.pop_front() {
            self.write(entry);
        }
        let Written {
            mut transcript,
            totals: counted,
            decisions,
            failures: per_call,
        } = std::mem::take(&mut self.written);
        let totals: BTreeMap<Arc<str>, u64> = counted.into_iter().collect();
        // The run's own failures first, then each call's in the order of the transcript.
        self.failures.extend(per_call);
        let journal = self.mocks.calls_by_tool();
        transcript.push_str("\ntotals:\n");
        for (k, v) in &totals {
            let _ = writeln!(transcript, "  {k:<18} {v}");
        }
        transcript.push_str("journal (calls that reached the upstream):\n");
        if journal.is_empty() {
            transcript.push_str("  (none)\n");
        }
        for (k, v) in journal {
            let _ = writeln!(transcript, "  {k:<24} {v}");
        }
        if let Some(expect) = &scenario.expect {
            for (k, want) in &expect.totals {
                let got = totals.get(k.as_str()).copied().unwrap_or(0);
                if got != *want {
                    self.failures
                        .push(format!("expected {want} calls decided {k}, got {got}"));
                }
            }
            for (k, want) in &expect.journal {
                let got = journal.get(k.as_str()).copied().unwrap_or(0);
                if got != *want {
                    self.failures.push(format!(
                        "expected {want} calls of {k} to reach the upstream, got {got}"
                    ));
                }
            }
        }
        Outcome {
            transcript,
            failures: self.failures,
            calls: decisions.len() as u64,
            decisions,
        }
    }
}

pub(super) fn reload_word(r: ReloadExpect) -> &'static str {
    match r {
        ReloadExpect::Applied => "applied",
        ReloadExpect::Refused => "refused",
    }
}

/// Writes a transcript line's instant, `+{:>10.3}s` of the seconds.
pub(super) fn push_instant(out: &mut String, at: Duration) {
    out.push('+');
    let start = out.len();
    tollgate_policy::engine::seconds_3(out, at);
    let width = out.len() - start;
    if width < 10 {
        out.insert_str(start, &"          "[..10 - width]);
    }
    out.push('s');
}

/// `1.5s`, `250ms`, `60s`.
pub(super) fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}s")
    }
}

/// What [`describe`] makes of an answer: the decision, a short detail, the refusal message.
pub type Described = (Cow<'static, str>, String, Option<String>);

/// The decision, a short detail and the refusal message of a client answer.
pub fn describe(answer: &Value) -> Described {
    if let Some(err) = answer.get("error") {
        return (
            "error".into(),
            err["message"].as_str().unwrap_or_default().to_owned(),
            None,
        );
    }
    let result = &answer["result"];
    let Some(t) = result
        .get("_meta")
        .and_then(|s| s.get(tollgate_gateway::refusal::META_KEY))
    else {
        let text = result["content"][0]["text"].as_str().unwrap_or_default();
        return described_upstream(text, result["isError"] == true);
    };
    let decision = Cow::Owned(t["decision"].as_str().unwrap_or("?").to_owned());
    let mut detail = Vec::new();
    for l in t["limits"].as_array().into_iter().flatten() {
        if l["used"].as_u64() >= l["max"].as_u64() {
            detail.push(format!(
                "{} {}/{}",
                l["counter"].as_str().unwrap_or_default(),
                l["used"],
                l["max"]
            ));
        }
    }
    if let Some(r) = t["retry_after_seconds"].as_f64() {
        detail.push(format!(
            "retry in {}",
            tollgate_policy::engine::duration_text(Duration::from_secs_f64(r))
        ));
    }
    if detail.is_empty()
        && let Some(rule) = t["rule"]["selector"].as_str()
    {
        detail.push(format!("rule {rule}"));
    }
    let message = result["content"][0]["text"].as_str().map(str::to_owned);
    (decision, detail.join(", "), message)
}

/// What [`describe`] makes of the refusal `refusal::from_decision(tool, grant, decision)`,
/// read from the decision itself (its text through `texts`, which reuses the text of a run of
/// alike rate limits).
pub fn describe_decision(texts: &mut DecisionTexts, tool: &str, d: &Decision) -> Described {
    // `c 10/10, retry in 40s`, written piece by piece (a runaway agent's replay writes one per
    // call).
    let mut detail = String::with_capacity(48);
    let mut digits = itoa::Buffer::new();
    for l in d.limits.iter().filter(|l| l.used >= l.max) {
        if !detail.is_empty() {
            detail.push_str(", ");
        }
        detail.push_str(&l.counter);
        detail.push(' ');
        detail.push_str(digits.format(l.used));
        detail.push('/');
        detail.push_str(digits.format(l.max));
    }
    if let DecisionKind::RateLimited { retry_after } | DecisionKind::ErrorLimited { retry_after } =
        d.kind
    {
        // Through seconds as a float, as the refusal's JSON carries it.
        let r = Duration::from_secs_f64(retry_after.as_secs_f64());
        if !detail.is_empty() {
            detail.push_str(", ");
        }
        detail.push_str("retry in ");
        tollgate_policy::engine::push_duration_text(&mut detail, r);
    }
    if detail.is_empty() {
        detail.push_str("rule ");
        detail.push_str(&d.rule.selector);
    }
    let message = texts.text(tool, d);
    (Cow::Borrowed(d.kind.name()), detail, Some(message))
}

/// What [`describe`] makes of the answer `result_response(id, output.into_result())`, read
/// from the output itself.
pub(super) fn describe_output(id: u64, output: ToolOutput) -> Described {
    // A body that looks like a refusal's is read as the value path reads it.
    if output.structured_has_key("tollgate") {
        return describe(&Reply::Direct { id, output }.into_value());
    }
    described_upstream(output.first_text(), output.is_error)
}

/// What [`describe`] makes of an upstream's tool result whose first text is `text`.
pub(super) fn described_upstream(text: &str, is_error: bool) -> Described {
    let first = text.lines().next().unwrap_or_default();
    let lead = if is_error {
        "upstream isError: "
    } else {
        "upstream: "
    };
    let mut detail = String::with_capacity(lead.len() + first.len());
    detail.push_str(lead);
    detail.push_str(first);
    ("allow".into(), detail, None)
}

/// An upper bound of the length of `result_response(id, output.into_result())`'s text, when
/// it parses back to the same value: the result's, and the response's envelope around it.
pub(super) fn output_bound(output: &ToolOutput) -> Option<usize> {
    output.result_text_bound().map(|b| b.saturating_add(256))
}
