//! Operator actions on sessions: list, show, terminate.

use serde_json::json;
use wg_domain::SessionId;
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::time::now_millis;

use super::*;
use crate::ControlError;
use crate::views::handoff_view;
use wg_store::Transition;

impl ControlPlane {
    // ------------------------------------------------------------------ operator actions

    /// Lists sessions (cluster-wide), newest first, a page at a time: when more match than
    /// `q.limit`, the answer's `next_cursor` continues after its last session (keyset paging on
    /// creation time and ID, so sessions that start or end meanwhile shift nothing).
    ///
    /// # Errors
    /// `bad_request` for a page size outside 1 to [`MAX_PAGE`] or a malformed cursor; store
    /// failures.
    pub async fn list_sessions(
        &self,
        q: &SessionQuery,
    ) -> Result<wg_domain::api::SessionList, ControlError> {
        let limit = q.limit.unwrap_or(MAX_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ControlError::bad_request(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
        let now = now_millis();
        let filter = SessionFilter {
            states: q.state.into_iter().collect(),
            actor: q.actor.clone(),
            target: q.target.clone(),
            protocol: q.protocol.clone(),
            gateway: q.gateway.clone(),
            last_input_before_ms: q
                .idle_gt
                .map(|d| now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            // One more than the page: whether another page follows is then known, not guessed.
            limit: Some(limit + 1),
            after,
        };
        let mut records = self.inner.store.list_sessions(&filter).await?;
        let more = records.len() > limit as usize;
        records.truncate(limit as usize);
        let next_cursor = match records.last() {
            Some(last) if more => Some(format!("{}.{}", last.created_ms, last.id)),
            _ => None,
        };
        let mut pending = self.pending_handoffs(None).await?;
        let sessions = records
            .iter()
            .map(|r| {
                let mut view = session_view(r, now);
                if let Some(i) = pending.iter().position(|h| h.session == r.id) {
                    view.handoff = Some(handoff_view(&pending.swap_remove(i)));
                }
                view
            })
            .collect();
        Ok(wg_domain::api::SessionList {
            sessions,
            next_cursor,
        })
    }

    /// One session.
    ///
    /// # Errors
    /// `bad_request` for a malformed ID, `not_found`.
    pub async fn get_session(&self, id: &str) -> Result<SessionView, ControlError> {
        let id = parse_session_id(id)?;
        let r = self
            .inner
            .store
            .get_session(id)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no session {id}")))?;
        let mut view = session_view(&r, now_millis());
        view.handoff = self
            .pending_handoffs(Some(id))
            .await?
            .first()
            .map(handoff_view);
        Ok(view)
    }

    /// Forcibly terminates a session: a `session.terminated` event with the operator and reason,
    /// then a targeted close to the owning gateway, which flushes and seals the recording and then
    /// severs both legs. Of concurrent terminations exactly one transitions the session; the others
    /// return its state. Terminating a closed session changes nothing and says so.
    ///
    /// # Errors
    /// `bad_request` without a reason or with a malformed ID, `not_found`, `unavailable` when the
    /// owning gateway cannot be reached.
    pub async fn terminate(
        &self,
        id: &str,
        reason: &str,
        operator: &str,
    ) -> Result<TerminateResponse, ControlError> {
        self.terminate_one(id, reason, operator, None).await
    }

    /// Terminates every live session matching all the given selectors (at least one), each as
    /// [`ControlPlane::terminate`] does, concurrently. Every `session.terminated` event carries
    /// the same bulk-operation ID. Sessions that ended on their own meanwhile are not counted.
    ///
    /// # Errors
    /// `bad_request` without a reason, without a selector, or with a malformed tag.
    pub async fn terminate_matching(
        &self,
        req: &wg_domain::api::BulkTerminateRequest,
        operator: &str,
    ) -> Result<wg_domain::api::BulkTerminateResponse, ControlError> {
        let reason = validate_reason(&req.reason, "a forced termination")?;
        // A selector that is given but blank is refused, never dropped: dropping it would
        // widen the termination to whatever the other selectors match.
        let given = |v: &Option<String>, flag: &str| match v.as_deref().map(str::trim) {
            None => Ok(None),
            Some("") => Err(ControlError::bad_request(format!(
                "{flag} is empty; give a value or leave the selector out"
            ))),
            Some(s) => Ok(Some(s.to_owned())),
        };
        let (actor, target, tag, protocol) = (
            given(&req.actor, "--actor")?,
            given(&req.target, "--target")?,
            given(&req.target_tag, "--target-tag")?,
            given(&req.protocol, "--protocol")?,
        );
        if actor.is_none() && target.is_none() && tag.is_none() && protocol.is_none() {
            return Err(ControlError::bad_request(
                "name at least one selector: --actor, --target, --target-tag or --protocol",
            ));
        }
        let tag = match tag {
            Some(t) => Some(wg_domain::resources::parse_tag_selector(&t).ok_or_else(|| {
                ControlError::bad_request(format!(
                    "--target-tag {t:?} must be key=value, both non-empty"
                ))
            })?),
            None => None,
        };
        let tagged: Option<Vec<String>> = match &tag {
            Some((k, v)) => Some(
                self.inner
                    .store
                    .list_resources(wg_domain::resources::Kind::Target)
                    .await?
                    .into_iter()
                    .filter_map(|r| match r {
                        wg_domain::resources::Resource::Target(t)
                            if t.tags.get(k).is_some_and(|x| x == v) =>
                        {
                            Some(t.name)
                        }
                        _ => None,
                    })
                    .collect(),
            ),
            None => None,
        };
        let started = std::time::Instant::now();
        let sessions = self
            .inner
            .store
            .list_sessions(&SessionFilter {
                actor,
                target,
                protocol,
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        // A tag selects a session whose target carried it when the session was requested, or
        // carries it now: a target deleted or re-tagged since keeps its sessions selectable, and
        // one tagged since (or sessions from before tags were kept) are found by its current tags.
        let matching: Vec<SessionRecord> = sessions
            .into_iter()
            .filter(|s| match (&tag, &tagged) {
                (Some((k, v)), Some(names)) => {
                    s.target_tags.get(k).is_some_and(|x| x == v) || names.contains(&s.target)
                }
                _ => true,
            })
            .collect();
        let bulk = format!(
            "bulk_{}",
            wg_domain::ids::random_hex(6).map_err(|e| ControlError::internal(e.to_string()))?
        );
        // Every running session moves to `closing` in one transaction (a commit per session
        // would make the last one wait for a thousand before it); those that changed state
        // meanwhile, or were never admitted, take the one-by-one path.
        let moves: Vec<Transition> = matching
            .iter()
            .filter(|r| {
                !matches!(
                    r.state,
                    SessionState::Closed | SessionState::Closing | SessionState::Requested
                )
            })
            .map(|r| Transition {
                id: r.id,
                from: r.state,
                to: SessionState::Closing,
                patch: terminate_patch(reason),
                audit: vec![terminated_event(r.id, reason, operator, Some(&bulk))],
            })
            .collect();
        let listed_ms = started.elapsed().as_millis();
        let moved = self.inner.store.transition_sessions(&moves).await?;
        tracing::info!(
            bulk_operation = %bulk,
            matched = matching.len(),
            closing = moved.iter().filter(|m| **m).count(),
            listed_ms,
            moved_ms = started.elapsed().as_millis(),
            "mass termination: sessions moved to closing; sending targeted closes"
        );
        let moved: std::collections::HashSet<SessionId> = moves
            .iter()
            .zip(moved)
            .filter_map(|(m, ok)| ok.then_some(m.id))
            .collect();
        // Sessions this call moved are closed from their gateways' answers in batches, one
        // transaction per batch of answers that arrived together (group commit: a thousand
        // separate commits would queue behind each other while the gateway is severing
        // connections); the rest take the one-by-one path.
        let bulk_ref = bulk.as_str();
        let mut ours = Vec::new();
        let mut others = Vec::new();
        for r in matching {
            if moved.contains(&r.id) {
                ours.push(r);
            } else {
                others.push(r.id.to_string());
            }
        }
        let one_by_one = futures::future::join_all(others.iter().map(|id| async move {
            (
                id.clone(),
                self.terminate_one(id, reason, operator, Some(bulk_ref))
                    .await,
            )
        }));
        let (mut results, one_by_one) =
            futures::future::join(self.close_terminated(ours, reason, operator), one_by_one).await;
        results.extend(one_by_one);
        let mut terminated = Vec::new();
        let mut failed = Vec::new();
        let mut already_ended = 0u32;
        for (id, r) in results {
            match r {
                Ok(resp) if !resp.already_closed => terminated.push(resp),
                Ok(_) => already_ended = already_ended.saturating_add(1),
                Err(e) => failed.push(wg_domain::api::BulkFailure {
                    session: id,
                    error: e.0.message,
                }),
            }
        }
        tracing::info!(
            bulk_operation = %bulk,
            terminated = terminated.len(),
            failed = failed.len(),
            already_ended,
            total_ms = started.elapsed().as_millis(),
            "mass termination done"
        );
        Ok(wg_domain::api::BulkTerminateResponse {
            bulk_operation: bulk,
            terminated,
            failed,
            already_ended,
        })
    }

    /// The second half of every termination, of one session or many, once the caller has moved
    /// them to `closing` (`sessions` are their records from before that move): a targeted close
    /// to each owning gateway, concurrently, then each session closed from its gateway's answer
    /// (sealed, both legs severed). Answers that arrived together are closed in one transaction
    /// while the next ones arrive. A session the batch cannot close (the gateway's own journaled
    /// `closed` report won the compare-and-set, or the gateway no longer ran it) is awaited
    /// until that report has closed it, up to the terminate timeout. Returns one outcome per
    /// session, in no particular order.
    async fn close_terminated(
        &self,
        sessions: Vec<SessionRecord>,
        reason: &str,
        operator: &str,
    ) -> Vec<(String, Result<TerminateResponse, ControlError>)> {
        use futures::StreamExt;
        let mut pending: futures::stream::FuturesUnordered<_> = sessions
            .into_iter()
            .map(|rec| async move {
                let answer = self
                    .send_terminate(rec.id, &rec.gateway, reason, operator)
                    .await;
                (rec, answer)
            })
            .collect();
        let mut results = Vec::new();
        let mut settle = Vec::new();
        while let Some(first) = pending.next().await {
            // Group commit: the answers that are ready, and those that come within a few
            // milliseconds while others are still pending, are closed in one transaction (a
            // lone termination has nothing pending and does not wait).
            let mut batch = vec![first];
            let gather = tokio::time::Instant::now() + CLOSE_GATHER;
            while batch.len() < CLOSE_BATCH {
                match tokio::time::timeout_at(gather, pending.next()).await {
                    Ok(Some(more)) => batch.push(more),
                    Ok(None) | Err(_) => break,
                }
            }
            let mut moves = Vec::new();
            let mut closed = Vec::new();
            for (mut rec, answer) in batch {
                match answer {
                    // The session ended on its own (its command exited, idle timeout, …) before
                    // the targeted close took effect: the gateway's journaled `closed` report
                    // carries that end, with its exit status and detail; it settles the
                    // session, not the termination.
                    Ok(r) if r.ok && !ended_by_termination(&r) => {
                        tracing::info!(session = %rec.id, end_reason = %r.end_reason, "the session ended on its own before the termination took effect");
                        settle.push(rec.id);
                    }
                    Ok(r) if r.ok => {
                        rec.state = SessionState::Closing;
                        rec.end_detail.get_or_insert_with(|| reason.to_owned());
                        let report = closed_report(rec.id, reason, r);
                        match self.step_effects(&rec, SessionState::Closed, &report).await {
                            Ok((patch, audit)) => {
                                moves.push(Transition {
                                    id: rec.id,
                                    from: SessionState::Closing,
                                    to: SessionState::Closed,
                                    patch: patch.clone(),
                                    audit,
                                });
                                patch.apply_to(&mut rec);
                                rec.state = SessionState::Closed;
                                closed.push(rec);
                            }
                            Err(e) => {
                                tracing::warn!(session = %rec.id, error = %e, "cannot close a terminated session; waiting for its gateway's report");
                                settle.push(rec.id);
                            }
                        }
                    }
                    Ok(r) => {
                        // The gateway no longer runs it (it ended on its own meanwhile): its
                        // closed report is on the way or already applied.
                        tracing::info!(session = %rec.id, error = %r.error, "gateway did not find the session to terminate");
                        settle.push(rec.id);
                    }
                    Err(e) => results.push((rec.id.to_string(), Err(e))),
                }
            }
            if moves.is_empty() {
                continue;
            }
            tracing::debug!(
                sessions = moves.len(),
                "closing a batch of terminated sessions"
            );
            let moved = match self.inner.store.transition_sessions(&moves).await {
                Ok(moved) => moved,
                Err(e) => {
                    // Nothing of the batch was applied: each waits for its gateway's report.
                    tracing::warn!(error = %e, "cannot close a batch of terminated sessions; waiting for their gateways' reports");
                    vec![false; moves.len()]
                }
            };
            for (rec, ok) in closed.into_iter().zip(moved) {
                if ok {
                    // Closed by this batch: the record as the batch left it is the answer.
                    let mut resp = already_closed(&rec);
                    resp.already_closed = false;
                    results.push((rec.id.to_string(), Ok(resp)));
                } else {
                    // The gateway's own journaled report won the compare-and-set.
                    settle.push(rec.id);
                }
            }
        }
        let settled = futures::future::join_all(
            settle
                .into_iter()
                .map(|id| async move { (id.to_string(), self.await_closed(id, true).await) }),
        )
        .await;
        results.extend(settled);
        results
    }

    pub(super) async fn terminate_one(
        &self,
        id: &str,
        reason: &str,
        operator: &str,
        bulk: Option<&str>,
    ) -> Result<TerminateResponse, ControlError> {
        let reason = validate_reason(reason, "a forced termination")?;
        let id = parse_session_id(id)?;
        let store = &self.inner.store;
        let patch = terminate_patch(reason);
        let record = loop {
            let Some(cur) = store.get_session(id).await? else {
                return Err(ControlError::not_found(format!("no session {id}")));
            };
            match cur.state {
                SessionState::Closed => return Ok(already_closed(&cur)),
                SessionState::Closing => {
                    // Someone else is closing it: report the outcome once it is closed.
                    return self.await_closed(id, false).await;
                }
                SessionState::Requested => {
                    let mut p = patch.clone();
                    p.ended_ms = Some(now_millis());
                    let closed = NewAuditEvent::new(kinds::SESSION_CLOSED)
                        .actor(cur.actor.clone())
                        .session(id)
                        .details(json!({"end_reason": "terminated"}));
                    if store
                        .transition_session(
                            id,
                            cur.state,
                            SessionState::Closed,
                            &p,
                            &[terminated_event(id, reason, operator, bulk), closed],
                        )
                        .await?
                    {
                        return self.await_closed(id, true).await;
                    }
                }
                from => {
                    if store
                        .transition_session(
                            id,
                            from,
                            SessionState::Closing,
                            &patch,
                            &[terminated_event(id, reason, operator, bulk)],
                        )
                        .await?
                    {
                        break cur;
                    }
                }
            }
        };
        match self
            .close_terminated(vec![record], reason, operator)
            .await
            .pop()
        {
            Some((_, result)) => result,
            None => Err(ControlError::internal(format!(
                "termination of {id} produced no outcome"
            ))),
        }
    }

    /// The targeted close of a `closing` session, sent to its gateway: the gateway's answer
    /// (sealed and severed, or not found there).
    async fn send_terminate(
        &self,
        id: SessionId,
        gateway: &str,
        reason: &str,
        operator: &str,
    ) -> Result<wg_proto::v1::CommandResult, ControlError> {
        self.inner
            .gateways
            .send(
                gateway,
                gateway_command::Command::Terminate(wg_proto::v1::Terminate {
                    session_id: id.to_string(),
                    reason: reason.to_owned(),
                    operator: operator.to_owned(),
                    end_reason: String::new(),
                }),
                self.inner.config.terminate_timeout,
            )
            .await
    }

    /// Waits (up to the terminate timeout) for a closing session to be reported closed.
    pub(super) async fn await_closed(
        &self,
        id: SessionId,
        won: bool,
    ) -> Result<TerminateResponse, ControlError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.terminate_timeout;
        loop {
            if let Some(r) = self.inner.store.get_session(id).await?
                && r.state.is_closed()
            {
                let mut resp = already_closed(&r);
                // Not terminated by this call when another one moved it to `closing`, or when
                // it ended on its own meanwhile (its end reason then says how).
                resp.already_closed = !won || r.end_reason != Some(EndReason::Terminated);
                return Ok(resp);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::unavailable(format!(
                    "session {id} is closing but its gateway has not confirmed within {} s",
                    self.inner.config.terminate_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads a list cursor, `CREATED_MS.SESSION_ID` (as [`ControlPlane::list_sessions`] writes it).
fn parse_cursor(cursor: &str) -> Result<(i64, String), ControlError> {
    let bad = || ControlError::bad_request(format!("malformed cursor {cursor:?}"));
    let (created, id) = cursor.split_once('.').ok_or_else(bad)?;
    let created: i64 = created.parse().map_err(|_| bad())?;
    let id: SessionId = id.parse().map_err(|_| bad())?;
    Ok((created, id.to_string()))
}

/// Whether a gateway's answer to a targeted close says the close ended the session (older
/// gateways do not say: their answer is taken as the termination's).
fn ended_by_termination(answer: &wg_proto::v1::CommandResult) -> bool {
    answer.end_reason.is_empty() || answer.end_reason == EndReason::Terminated.as_str()
}

/// The `closed` report that a gateway's answer to a targeted close stands for.
fn closed_report(id: SessionId, reason: &str, answer: wg_proto::v1::CommandResult) -> Report {
    Report {
        session: id.to_string(),
        state: SessionState::Closed.as_str().into(),
        time_ms: if answer.time_ms > 0 {
            answer.time_ms
        } else {
            now_millis()
        },
        end_reason: Some(EndReason::Terminated),
        end_detail: Some(reason.to_owned()),
        recording: crate::grpc::seal_of(answer.seal),
        ..Default::default()
    }
}

/// How long the close of a termination waits for more gateway answers to close in the same
/// transaction, while others are still pending.
const CLOSE_GATHER: Duration = Duration::from_millis(5);

/// Most sessions closed in one transaction.
const CLOSE_BATCH: usize = 500;

/// What a termination records on the session.
fn terminate_patch(reason: &str) -> SessionPatch {
    SessionPatch {
        end_reason: Some(EndReason::Terminated),
        end_detail: Some(reason.to_owned()),
        ..Default::default()
    }
}

/// The `session.terminated` event (with the bulk-operation ID of a mass termination).
fn terminated_event(
    id: SessionId,
    reason: &str,
    operator: &str,
    bulk: Option<&str>,
) -> NewAuditEvent {
    NewAuditEvent::new(kinds::SESSION_TERMINATED)
        .actor(operator)
        .session(id)
        .reason(reason)
        .details(match bulk {
            Some(b) => json!({"bulk_operation": b}),
            None => json!({}),
        })
}

/// Longest reason accepted, in characters.
const MAX_REASON_CHARS: usize = 1024;

/// The reason of an operator action (a termination, a handoff): required, at most 1024
/// characters, no control characters (it is shown on users' terminals and stored in the audit
/// log). `action` names the action in the error, e.g. `a forced termination`.
pub(super) fn validate_reason<'a>(reason: &'a str, action: &str) -> Result<&'a str, ControlError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ControlError::bad_request(format!(
            "a reason is required for {action}"
        )));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ControlError::bad_request(format!(
            "the reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(ControlError::bad_request(
            "the reason must not contain control characters",
        ));
    }
    Ok(reason)
}
