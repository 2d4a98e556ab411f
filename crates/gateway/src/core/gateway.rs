//! What every session shares: the engine and its reloads, the audit log, the recorder, the
//! approvals registry and the approvals API.

use super::*;

impl Gateway {
    pub fn new(engine: Engine, audit: Option<AuditLog>, options: GatewayOptions) -> Arc<Gateway> {
        Arc::new(Gateway::build(engine, audit, options, None))
    }

    pub(super) fn build(
        engine: Engine,
        audit: Option<AuditLog>,
        options: GatewayOptions,
        recorder: Option<Recorder>,
    ) -> Gateway {
        let metrics = crate::metrics::Metrics::default();
        let approvals = Registry::new(metrics.approvals_pending.clone());
        let mut audit = audit;
        if let Some(log) = audit.as_mut() {
            log.set_metrics(metrics.audit.clone());
        }
        Gateway {
            engine: std::sync::RwLock::new(Arc::new(engine)),
            audit: audit.map(Mutex::new),
            options,
            recorder: recorder.map(Mutex::new),
            metrics,
            policy_generation: tokio::sync::watch::Sender::new(0),
            approvals,
            next_core: AtomicU64::new(1),
            telemetry: std::sync::OnceLock::new(),
        }
    }

    /// Exports a span per request of every session opened from now on (crate::telemetry).
    /// Set once, before serving; a second call changes nothing.
    pub fn set_telemetry(&self, telemetry: crate::telemetry::Telemetry) {
        let _ = self.telemetry.set(telemetry);
    }

    /// The same gateway, recording every message to `recorder`.
    pub fn new_recording(
        engine: Engine,
        audit: Option<AuditLog>,
        options: GatewayOptions,
        recorder: Recorder,
    ) -> Arc<Gateway> {
        Arc::new(Gateway::build(engine, audit, options, Some(recorder)))
    }

    pub(super) fn record(
        &self,
        now: Duration,
        session: &str,
        grant: &str,
        dir: &str,
        message: Value,
    ) {
        if let Some(r) = &self.recorder {
            let mut line = json!({"t_ms": ms(now), "session": session, "grant": grant, "dir": dir, "message": message});
            // With several upstreams, a call's line names the upstream its name routes to (as
            // its audit record does), so a replay can be held to the same routing.
            if line["message"]["method"] == "tools/call"
                && let Some(name) = line["message"]["params"]["name"].as_str()
                && let Some(u) = crate::multi::upstream_of(&self.options.upstreams, name)
            {
                line["upstream"] = json!(u.name);
            }
            r.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write(&line);
        }
    }

    /// The engine deciding now.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the policy with a validated one, keeping the counter store: counters the new
    /// policy keeps go on counting. The reload is audited with the policy's hash. (A policy that
    /// failed validation never gets here: `Policy::load` refused it.)
    pub fn reload(
        &self,
        policy: tollgate_policy::Policy,
        now: Duration,
        fields: Value,
    ) -> Result<(), String> {
        let old = self.engine();
        let store = Arc::clone(old.store());
        // The counters keep what they remember under the longest window and largest `max` of
        // the old and new limits (docs/limits.md, "Reloads"); a store that could not be told
        // keeps deciding, and the audit record says so.
        let mut fields = fields;
        if let Err(why) = store.reloaded(&old.policy().counters(), &policy.counters(), now)
            && let Some(map) = fields.as_object_mut()
        {
            map.insert("counter_store_error".into(), Value::String(why));
        }
        let engine = Arc::new(Engine::new(Arc::new(policy), store));
        // Audit first: a reload that cannot be recorded does not happen.
        self.audit(now, "reload", fields)?;
        *self.engine.write().unwrap_or_else(PoisonError::into_inner) = engine;
        self.policy_generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Changes with every reload: a session loop waits on it and then calls
    /// [`SessionCore::policy_changed`].
    pub fn policy_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.policy_generation.subscribe()
    }

    /// Records a reload that was refused (the old policy keeps running).
    pub fn reload_refused(&self, now: Duration, fields: Value) -> Result<(), String> {
        self.audit(now, "reload_refused", fields).map(|_| ())
    }

    /// Records a request refused for its bearer token (docs/auth.md; never the token).
    pub fn auth_refused(&self, now: Duration, fields: Value) -> Result<(), String> {
        self.audit(now, "auth_refused", fields).map(|_| ())
    }

    /// A new session for one client (its grant and session id).
    pub fn session(self: &Arc<Self>, grant: &str, session: &str) -> SessionCore {
        let core_id = self.next_core.fetch_add(1, Ordering::Relaxed);
        SessionCore {
            gateway: Arc::clone(self),
            core_id,
            waker: self.approvals.waker(core_id),
            awaiting: BTreeMap::new(),
            elicits: HashMap::default(),
            elicitation: None,
            protocol: None,
            stateless: false,
            last_now: Duration::ZERO,
            grant: Arc::from(grant),
            session: Arc::from(session),
            advertised: None,
            drifted: HashMap::default(),
            listing: None,
            waiting_for_list: Vec::new(),
            pending: HashMap::default(),
            batches: HashMap::default(),
            next_internal: 0,
            next_batch: 0,
            expired: HashSet::default(),
            listed_under: None,
            handshake_ids: HashSet::default(),
            metric_handles: MetricHandles::default(),
            reparse_checked: tollgate_mcp::CheckedCalls::new(self.options.limits),
            traces: self
                .telemetry
                .get()
                .map(|t| Box::new(crate::telemetry::SessionTraces::new(t.clone()))),
        }
    }

    /// [`Gateway::audit`] with the record built only when there is a log to write it to (a
    /// replay without an audit log skips building it).
    pub(super) fn audit_with(
        &self,
        now: Duration,
        kind: &str,
        fields: impl FnOnce() -> Value,
    ) -> Result<Option<u64>, String> {
        match &self.audit {
            None => Ok(None),
            Some(_) => self.audit(now, kind, fields()),
        }
    }

    /// The options this gateway runs with.
    pub fn options(&self) -> &GatewayOptions {
        &self.options
    }

    /// The registry of held calls (for the live feed and the scenario runner).
    pub fn approvals(&self) -> &Registry {
        &self.approvals
    }

    /// The calls waiting for approval at `now`, oldest first, and the latest decisions,
    /// newest first.
    pub fn list_approvals(&self, now: Duration) -> (Vec<PendingApproval>, Vec<DecidedApproval>) {
        self.approvals.list(ms(now))
    }

    /// An operator approves held call `id`: it is audited (who, when, why), then the session
    /// holding it forwards it, taking its limits at `now`.
    pub fn approve(
        &self,
        id: u64,
        approver: &str,
        reason: Option<&str>,
        now: Duration,
    ) -> Result<DecidedApproval, ApprovalError> {
        self.decide_approval(
            id,
            VerdictKind::Approved,
            approver,
            reason,
            now,
            Decider::Operator,
        )
    }

    /// An operator denies held call `id`: audited, then the agent gets a refusal naming the
    /// approver and their reason.
    pub fn deny(
        &self,
        id: u64,
        approver: &str,
        reason: Option<&str>,
        now: Duration,
    ) -> Result<DecidedApproval, ApprovalError> {
        self.decide_approval(
            id,
            VerdictKind::Denied,
            approver,
            reason,
            now,
            Decider::Operator,
        )
    }

    pub(super) fn decide_approval(
        &self,
        id: u64,
        verdict: VerdictKind,
        approver: &str,
        reason: Option<&str>,
        now: Duration,
        decider: Decider,
    ) -> Result<DecidedApproval, ApprovalError> {
        self.decide_approval_at(id, verdict, approver, reason, now, decider, None)
    }

    /// [`Gateway::decide_approval`] of a verdict taken by replica `from`'s API (`None`: this
    /// replica's). With approvals shared across replicas, the record names that replica.
    #[expect(
        clippy::too_many_arguments,
        reason = "a verdict's parts, as the admin API and the replicas' inbox give them"
    )]
    pub(crate) fn decide_approval_at(
        &self,
        id: u64,
        verdict: VerdictKind,
        approver: &str,
        reason: Option<&str>,
        now: Duration,
        decider: Decider,
        from: Option<&str>,
    ) -> Result<DecidedApproval, ApprovalError> {
        let replica = from
            .or_else(|| self.approvals.replica_name())
            .map(str::to_owned);
        let verdict = Verdict {
            verdict,
            approver: Some(approver.to_owned()),
            reason: reason
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            decided_at_ms: ms(now),
            replica,
        };
        self.approvals.decide(id, verdict, decider, |a, v| {
            self.approval_record(now, a, v).map(|_| ())
        })
    }

    /// The audit record of a verdict.
    pub(super) fn approval_record(
        &self,
        now: Duration,
        a: &PendingApproval,
        v: &Verdict,
    ) -> Result<Option<u64>, String> {
        let mut record = json!({
            "approval_id": a.id, "verdict": v.verdict.name(), "approver": v.approver,
            "session": a.session, "grant": a.grant, "id": a.request_id, "tool": a.tool,
            "decision_seq": a.decision_seq, "via": a.via,
            "waited_ms": ms(now).saturating_sub(a.created_at_ms),
        });
        if let Some(r) = &v.reason {
            record["reason"] = json!(r);
        }
        if let Some(r) = &v.replica {
            record["replica"] = json!(r);
        }
        if v.verdict == VerdictKind::Expired {
            record["on_timeout"] = json!(a.on_timeout);
        }
        self.audit(now, "approval", record)
    }

    /// Appends an audit record; `None` when there is no audit log.
    pub(super) fn audit(
        &self,
        now: Duration,
        kind: &str,
        fields: Value,
    ) -> Result<Option<u64>, String> {
        let Some(log) = &self.audit else {
            return Ok(None);
        };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.append(ms(now), kind, fields)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// A record nothing waits for (a call's outcome): chained now, written with the next
    /// durable record or by [`Gateway::flush_audit`] (see `audit.rs`, "Durability").
    pub(super) fn audit_deferred(&self, now: Duration, kind: &str, fields: impl FnOnce() -> Value) {
        let Some(log) = &self.audit else {
            return;
        };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = log.append_deferred(ms(now), kind, fields()) {
            tracing::error!("{e}");
        }
    }

    /// Writes the audit records deferred so far (the gateway process calls it every 20 ms).
    pub fn flush_audit(&self) {
        let Some(log) = &self.audit else {
            return;
        };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        // A failure is said once by the log itself (and the records wait for the next flush).
        let _ = log.flush();
    }

    /// Writes the closing record of a clean shutdown, and waits for the log's background work
    /// (compressing and removing rotated files).
    pub fn close(&self, now: Duration) -> Result<(), String> {
        let closed = self.audit(now, "close", json!({})).map(|_| ());
        if let Some(log) = &self.audit {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .finish_housekeeping();
        }
        closed
    }

    /// Writes an opening record (gateway start, with the policy's hash).
    pub fn open(&self, now: Duration, fields: Value) -> Result<(), String> {
        self.audit(now, "open", fields).map(|_| ())
    }
}
