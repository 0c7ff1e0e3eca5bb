//! Gateway lifecycle and progress reports, walked through the state machine.

use serde_json::json;
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::time::UnixMillis;
use wg_domain::{ErrorCode, SessionId};

use super::*;
use crate::ControlError;

impl ControlPlane {
    // ------------------------------------------------------------------ gateway reports

    /// Applies a gateway's lifecycle report. A report for a later state walks the lifecycle's
    /// intermediate states in order; a report the lifecycle cannot reach from the current state
    /// (e.g. `active` for a closed session) is rejected and logged, never applied.
    ///
    /// # Errors
    /// `not_found`, `forbidden` (another gateway's session), `conflict` (illegal transition).
    pub async fn report(&self, gateway: &str, report: Report) -> Result<(), ControlError> {
        let (id, to) = parse_report(&report)?;
        for _attempt in 0..5 {
            let Some(mut cur) = self.inner.store.get_session(id).await? else {
                return Err(ControlError::not_found(format!("no session {id}")));
            };
            let moves = match plan(gateway, &cur, to, &report)? {
                Plan::Nothing => return Ok(()),
                Plan::LateSeal(seal) => {
                    self.record_late_seal(&cur, seal).await?;
                    return Ok(());
                }
                Plan::Walk(path) => self.walk(&mut cur, path, &report).await?,
            };
            let moved = self.inner.store.transition_sessions(&moves).await?;
            if moved.iter().all(|m| *m) {
                return Ok(());
            }
            // Raced with another writer: what moved stays, the rest is planned again from
            // the session as it is now.
        }
        Err(ControlError::new(
            ErrorCode::Conflict,
            format!("session {id} kept changing; report not applied"),
        ))
    }

    /// Applies a run of consecutive lifecycle reports of one gateway's journal (in journal
    /// order) and returns one outcome per report, in the same order, each what [`Self::report`]
    /// would return. The sessions are read in one query and every planned transition goes in
    /// one transaction ([`wg_store::Store::transition_sessions`]); a report whose walk raced
    /// with another writer, needs its late seal recorded, or could not be planned, is applied by
    /// [`Self::report`] after the batch, with every later report of its session, in order. (A
    /// mass termination makes a gateway report `closing` and `closed` for a thousand sessions
    /// within a second: one transaction per batch instead of one per report.)
    pub async fn reports(
        &self,
        gateway: &str,
        reports: &[Report],
    ) -> Vec<Result<(), ControlError>> {
        let mut out: Vec<Option<Result<(), ControlError>>> = vec![None; reports.len()];
        let mut parsed = Vec::with_capacity(reports.len());
        for (i, r) in reports.iter().enumerate() {
            match parse_report(r) {
                Ok((id, to)) => parsed.push((i, id, to)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let mut ids: Vec<SessionId> = parsed.iter().map(|p| p.1).collect();
        ids.sort();
        ids.dedup();
        let mut current: std::collections::HashMap<SessionId, SessionRecord> =
            match self.inner.store.get_sessions(&ids).await {
                Ok(records) => records.into_iter().map(|r| (r.id, r)).collect(),
                Err(e) => {
                    let e = ControlError::from(e);
                    return out
                        .into_iter()
                        .map(|o| o.unwrap_or_else(|| Err(e.clone())))
                        .collect();
                }
            };
        // Reports left to the one-by-one path, and the sessions whose later reports follow them.
        let mut one_by_one: Vec<usize> = Vec::new();
        let mut left: std::collections::HashSet<SessionId> = Default::default();
        let mut moves = Vec::new();
        let mut owner = Vec::new();
        for (i, id, to) in parsed {
            if left.contains(&id) {
                one_by_one.push(i);
                continue;
            }
            let Some(cur) = current.get_mut(&id) else {
                out[i] = Some(Err(ControlError::not_found(format!("no session {id}"))));
                continue;
            };
            match plan(gateway, cur, to, &reports[i]) {
                Err(e) => out[i] = Some(Err(e)),
                Ok(Plan::Nothing) => out[i] = Some(Ok(())),
                Ok(Plan::LateSeal(_)) => {
                    left.insert(id);
                    one_by_one.push(i);
                }
                Ok(Plan::Walk(path)) => {
                    // Planned on a copy: a step that cannot be planned leaves the record as
                    // it was, and the report goes the one-by-one way (which reports why).
                    let mut next = cur.clone();
                    match self.walk(&mut next, path, &reports[i]).await {
                        Ok(planned) => {
                            *cur = next;
                            owner.extend(std::iter::repeat_n(i, planned.len()));
                            moves.extend(planned);
                        }
                        Err(_) => {
                            left.insert(id);
                            one_by_one.push(i);
                        }
                    }
                }
            }
        }
        let moved = match self.inner.store.transition_sessions(&moves).await {
            Ok(moved) => moved,
            // Nothing of the batch was applied: each planned report goes one by one.
            Err(e) => {
                tracing::warn!(error = %e, "cannot apply a batch of session reports; applying them one by one");
                vec![false; moves.len()]
            }
        };
        let mut raced = vec![false; reports.len()];
        for (i, ok) in owner.iter().zip(&moved) {
            if !ok {
                raced[*i] = true;
            }
        }
        for &i in owner.iter() {
            if raced[i] {
                one_by_one.push(i);
            } else {
                out[i].get_or_insert(Ok(()));
            }
        }
        one_by_one.sort_unstable();
        one_by_one.dedup();
        for i in one_by_one {
            out[i] = Some(self.report(gateway, reports[i].clone()).await);
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(ControlError::internal("report not applied"))))
            .collect()
    }

    /// The transitions of a walk along `path` from `cur`, each step planned from the record as
    /// the previous steps leave it (`cur` is updated in memory, state and fields).
    async fn walk(
        &self,
        cur: &mut SessionRecord,
        path: Vec<SessionState>,
        report: &Report,
    ) -> Result<Vec<wg_store::Transition>, ControlError> {
        let mut moves = Vec::with_capacity(path.len());
        for step in path {
            let (patch, audit) = self.step_effects(cur, step, report).await?;
            patch.apply_to(cur);
            moves.push(wg_store::Transition {
                id: cur.id,
                from: cur.state,
                to: step,
                patch,
                audit,
            });
            cur.state = step;
        }
        Ok(moves)
    }

    pub(super) async fn step_effects(
        &self,
        cur: &SessionRecord,
        step: SessionState,
        report: &Report,
    ) -> Result<(SessionPatch, Vec<NewAuditEvent>), ControlError> {
        let mut patch = SessionPatch::default();
        let mut events = Vec::new();
        let ev = |kind: &str| {
            NewAuditEvent::new(kind)
                .actor(cur.actor.clone())
                .session(cur.id)
        };
        if let Some((term, cols, rows)) = &report.pty {
            patch.pty_term = Some(term.clone());
            patch.pty_cols = Some(*cols);
            patch.pty_rows = Some(*rows);
        }
        match step {
            SessionState::Opened => {
                patch.opened_ms = Some(report.time_ms);
                patch.last_input_ms = Some(report.time_ms);
                if cur.recording_mode == "full" {
                    patch.recording_status = Some("recording".into());
                    patch.recording_chunks = Some(1);
                }
                let mut details = json!({
                    "target": cur.target, "target_address": cur.target_address,
                    "account": cur.account, "gateway": cur.gateway,
                });
                if let Some(key) = &report.observed_host_key
                    && self.pin_host_key(&cur.target, key).await?
                {
                    details["host_key_pinned"] = json!(key);
                }
                events.push(ev(kinds::SESSION_OPENED).details(details));
            }
            SessionState::Idle => {
                let mut details =
                    json!({"last_input": wg_domain::time::rfc3339(cur.last_input_ms)});
                if let Some(name) = &cur.policy
                    && let Some(wg_domain::resources::Resource::Policy(p)) = self
                        .inner
                        .store
                        .get_resource(wg_domain::resources::Kind::Policy, name)
                        .await?
                {
                    details["idle_timeout"] =
                        json!(wg_domain::time::format_duration(p.idle.timeout));
                    details["idle_grace"] = json!(wg_domain::time::format_duration(p.idle.grace));
                }
                events.push(ev(kinds::SESSION_IDLE_WARNING).details(details));
            }
            SessionState::Closed => {
                patch.ended_ms = Some(report.time_ms);
                let reason = report.end_reason.unwrap_or(EndReason::ClientExit);
                patch.end_reason = Some(reason);
                patch.exit_status = report.exit_status;
                if cur.end_detail.is_none() {
                    patch.end_detail = report.end_detail.clone();
                } else if cur.end_reason == Some(EndReason::Terminated)
                    && reason != EndReason::Terminated
                {
                    // A termination moved it to `closing` (with the operator's reason as the
                    // detail), but the session ended on its own first: the detail is the real
                    // end's, not the operator's (empty when that end has none).
                    patch.end_detail = Some(report.end_detail.clone().unwrap_or_default());
                }
                if report.recording.is_none() && cur.recording_status == "recording" {
                    // Recording was due but nothing was recorded (no channel ever carried
                    // traffic): say so rather than leave it "recording" for ever.
                    patch.recording_status = Some("none".into());
                }
                if let Some(seal) = &report.recording {
                    patch.recording_chunks = Some(seal.chunks);
                    patch.recording_bytes = Some(seal.bytes);
                    patch.recording_status = Some(seal.status.clone());
                    patch.recording_sha256 = Some(seal.sha256.clone());
                    events.push(ev(kinds::RECORDING_SEALED).details(json!({
                        "chunks": seal.chunks, "bytes": seal.bytes,
                        "sha256": seal.sha256, "status": seal.status,
                    })));
                }
                events.push(ev(kinds::SESSION_CLOSED).details(json!({
                    "end_reason": reason.as_str(), "exit_status": report.exit_status,
                    "detail": report.end_detail,
                })));
            }
            SessionState::Detached => {
                let mut details = json!({});
                if let Some(name) = &cur.policy
                    && let Some(wg_domain::resources::Resource::Policy(p)) = self
                        .inner
                        .store
                        .get_resource(wg_domain::resources::Kind::Policy, name)
                        .await?
                {
                    details = json!({
                        "reconnect_mode": p.reconnect.mode.as_str(),
                        "grace": wg_domain::time::format_duration(p.reconnect.grace),
                    });
                }
                events.push(ev(kinds::SESSION_DETACHED).details(details));
            }
            SessionState::Requested
            | SessionState::Approved
            | SessionState::Active
            | SessionState::Closing => {}
        }
        Ok((patch, events))
    }

    /// Pins `key` as the host key of `target` if it has none (trust on first use). Returns whether
    /// it pinned.
    async fn pin_host_key(&self, target: &str, key: &str) -> Result<bool, ControlError> {
        let store = &self.inner.store;
        if let Some(Resource::Target(mut t)) = store.get_resource(Kind::Target, target).await?
            && t.host_key.is_none()
        {
            t.host_key = Some(key.to_owned());
            store
                .apply_resources(&[Resource::Target(t)], "system:trust-on-first-use")
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Applies activity and progress of live sessions (never to a closed one), all in one
    /// transaction. Each item is (session ID, last input, PTY (term, cols, rows), recording
    /// (chunks, bytes)); malformed IDs are skipped (a gateway's report of a session this
    /// control plane cannot parse changes nothing).
    ///
    /// # Errors
    /// Store failures (nothing of the batch is applied).
    pub async fn progress(&self, items: Vec<ProgressItem>) -> Result<(), ControlError> {
        let updates: Vec<(SessionId, SessionPatch)> = items
            .into_iter()
            .filter_map(|item| {
                let id = item.session.parse::<SessionId>().ok()?;
                let mut patch = SessionPatch {
                    last_input_ms: item.last_input_ms,
                    ..Default::default()
                };
                if let Some((term, cols, rows)) = item.pty {
                    patch.pty_term = Some(term);
                    patch.pty_cols = Some(cols);
                    patch.pty_rows = Some(rows);
                }
                if let Some((chunks, bytes)) = item.recording {
                    patch.recording_chunks = Some(chunks);
                    patch.recording_bytes = Some(bytes);
                }
                Some((id, patch))
            })
            .collect();
        if !updates.is_empty() {
            self.inner.store.update_sessions(&updates).await?;
        }
        Ok(())
    }

    /// Closes every session that `gateway` left open when its process stopped: a gateway that
    /// (re)starts holds no live session, so none of them can still be running. Recordings its
    /// previous process left unsealed — of these sessions, and of sessions closed earlier while
    /// it was lost — are sealed as `partial` (never silently dropped); each session is closed
    /// with reason `gateway_lost` through the state machine, with its audit events. Returns how
    /// many sessions were closed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn reconcile_gateway_restart(&self, gateway: &str) -> Result<usize, ControlError> {
        let closed = self.close_gateway_sessions(gateway, true).await?;
        self.seal_lost_recordings(gateway).await?;
        Ok(closed)
    }

    /// Closes `gateway`'s open sessions as `gateway_lost`. With `seal`, their recordings are
    /// sealed as `partial` first — only when the gateway's process is known to be gone (it
    /// restarted): a gateway that missed its lease may merely be stalled and still writing, so
    /// its recordings are left for it to seal when it comes back (or for
    /// [`ControlPlane::seal_lost_recordings`] once it restarts or is removed).
    pub(super) async fn close_gateway_sessions(
        &self,
        gateway: &str,
        seal: bool,
    ) -> Result<usize, ControlError> {
        let open = self
            .inner
            .store
            .list_sessions(&SessionFilter {
                gateway: Some(gateway.to_owned()),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        let mut closed = 0;
        for r in open {
            let seal = if seal && r.recording_mode == "full" {
                self.seal_partial(r.id).await
            } else {
                None
            };
            let report = Report {
                session: r.id.to_string(),
                state: SessionState::Closed.as_str().to_owned(),
                time_ms: wg_domain::time::now_millis(),
                end_reason: Some(EndReason::GatewayLost),
                end_detail: Some(format!(
                    "gateway {gateway} stopped while the session was {}",
                    r.state
                )),
                recording: seal,
                ..Default::default()
            };
            match self.report(gateway, report).await {
                Ok(()) => closed += 1,
                Err(e) => {
                    tracing::warn!(session = %r.id, error = %e, "cannot close a lost session")
                }
            }
        }
        Ok(closed)
    }

    /// Seals as `partial` the recordings of `gateway`'s sessions that were closed while it was
    /// lost and that it never sealed (its process is gone: it restarted, or was removed), and
    /// records each seal. Returns how many were sealed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn seal_lost_recordings(&self, gateway: &str) -> Result<usize, ControlError> {
        let mut sealed = 0;
        for r in self.inner.store.unsealed_closed_recordings(gateway).await? {
            if let Some(seal) = self.seal_partial(r.id).await {
                self.record_late_seal(&r, &seal).await?;
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    /// Seals the recording files of a session whose writer is gone as `partial`; `None` (logged)
    /// when there is nothing to seal or the files are damaged.
    async fn seal_partial(&self, id: SessionId) -> Option<SealInfo> {
        let root = self.inner.config.recordings_root.clone();
        let sid = id.to_string();
        match tokio::task::spawn_blocking(move || wg_recording::seal_partial(&root, &sid)).await {
            Ok(Ok(s)) => Some(SealInfo {
                chunks: s.chunks,
                bytes: s.bytes,
                sha256: s.sha256,
                status: s.status.as_str().to_owned(),
            }),
            Ok(Err(e)) => {
                tracing::warn!(session = %id, error = %e, "no recording to seal for a lost session");
                None
            }
            Err(e) => {
                tracing::error!(session = %id, error = %e, "sealing task failed");
                None
            }
        }
    }

    /// Records the seal of a closed session's recording that was closed unsealed, with its
    /// `recording.sealed` event (once: a recorded seal is never replaced).
    async fn record_late_seal(
        &self,
        cur: &SessionRecord,
        seal: &SealInfo,
    ) -> Result<(), ControlError> {
        let patch = SessionPatch {
            recording_status: Some(seal.status.clone()),
            recording_chunks: Some(seal.chunks),
            recording_bytes: Some(seal.bytes),
            recording_sha256: Some(seal.sha256.clone()),
            ..Default::default()
        };
        let event = NewAuditEvent::new(kinds::RECORDING_SEALED)
            .actor(cur.actor.clone())
            .session(cur.id)
            .details(json!({
                "chunks": seal.chunks, "bytes": seal.bytes,
                "sha256": seal.sha256, "status": seal.status,
            }));
        self.inner
            .store
            .seal_closed_recording(cur.id, &patch, &[event])
            .await?;
        Ok(())
    }

    /// Builds the audit event a gateway decided on its own for one of its sessions. Only the
    /// kinds a gateway may decide (`session.forward.opened`, `session.forward.denied`) are
    /// accepted; the actor is the session's.
    ///
    /// # Errors
    /// `bad_request` for another kind or malformed details (a JSON object is required),
    /// `not_found`, `forbidden` (another gateway's session).
    pub(super) async fn gateway_audit_event(
        &self,
        gateway: &str,
        session: &str,
        kind: &str,
        details_json: &str,
    ) -> Result<NewAuditEvent, ControlError> {
        if ![kinds::SESSION_FORWARD_OPENED, kinds::SESSION_FORWARD_DENIED].contains(&kind) {
            return Err(ControlError::bad_request(format!(
                "a gateway cannot record {kind:?} events"
            )));
        }
        let details: serde_json::Value = serde_json::from_str(details_json)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| ControlError::bad_request("event details must be a JSON object"))?;
        let id: SessionId = session
            .parse()
            .map_err(|e: wg_domain::ids::BadSessionId| ControlError::bad_request(e.to_string()))?;
        let Some(r) = self.inner.store.get_session(id).await? else {
            return Err(ControlError::not_found(format!("no session {id}")));
        };
        if r.gateway != gateway {
            return Err(ControlError::new(
                ErrorCode::Forbidden,
                format!("session {id} belongs to gateway {}", r.gateway),
            ));
        }
        Ok(NewAuditEvent::new(kind)
            .actor(r.actor)
            .session(id)
            .details(details))
    }
}

/// One live session's activity and progress, as a gateway reports it (see
/// [`ControlPlane::progress`]).
#[derive(Clone, Debug, Default)]
pub struct ProgressItem {
    /// The session ID as the gateway sent it.
    pub session: String,
    /// Last meaningful user input, ms since the epoch.
    pub last_input_ms: Option<UnixMillis>,
    /// The client's terminal: (TERM, columns, rows).
    pub pty: Option<(String, u32, u32)>,
    /// Recording progress: (chunks started, stream bytes written).
    pub recording: Option<(u32, u64)>,
}

/// What a report asks of a session as it is.
enum Plan<'a> {
    /// Already there (or a `closing` overtaken by the close itself).
    Nothing,
    /// A lost gateway came back and severed a session the control plane closed while it could
    /// not hear from it: the recording it has just sealed is the session's.
    LateSeal(&'a SealInfo),
    /// The lifecycle's states from the current one to the reported one, in order.
    Walk(Vec<SessionState>),
}

/// The one decision of a lifecycle report, for [`ControlPlane::report`] and
/// [`ControlPlane::reports`].
///
/// # Errors
/// `forbidden` (another gateway's session), `conflict` (the lifecycle cannot reach the state).
fn plan<'a>(
    gateway: &str,
    cur: &SessionRecord,
    to: SessionState,
    report: &'a Report,
) -> Result<Plan<'a>, ControlError> {
    let id = cur.id;
    if cur.gateway != gateway {
        return Err(ControlError::new(
            ErrorCode::Forbidden,
            format!("session {id} belongs to gateway {}", cur.gateway),
        ));
    }
    if cur.state == SessionState::Closed
        && to == SessionState::Closed
        && cur.recording_sha256.is_none()
        && let Some(seal) = &report.recording
    {
        return Ok(Plan::LateSeal(seal));
    }
    // Already there, or a `closing` overtaken by the close itself (a terminate closes the
    // session from the gateway's outcome, before the gateway's own reports arrive).
    if cur.state == to || (cur.state == SessionState::Closed && to == SessionState::Closing) {
        return Ok(Plan::Nothing);
    }
    match cur.state.path_to(to) {
        Some(path) => Ok(Plan::Walk(path)),
        None => {
            tracing::warn!(session = %id, from = %cur.state, to = %to, gateway, "rejected out-of-order session report");
            Err(ControlError::new(
                ErrorCode::Conflict,
                format!("illegal session transition {} -> {to}", cur.state),
            ))
        }
    }
}

/// A report's session ID and state.
///
/// # Errors
/// `bad_request` for a malformed ID or an unknown state name.
fn parse_report(report: &Report) -> Result<(SessionId, SessionState), ControlError> {
    let id: SessionId = report
        .session
        .parse()
        .map_err(|e: wg_domain::ids::BadSessionId| ControlError::bad_request(e.to_string()))?;
    let to: SessionState = report
        .state
        .parse()
        .map_err(|e: wg_domain::lifecycle::UnknownName| ControlError::bad_request(e.to_string()))?;
    Ok((id, to))
}
