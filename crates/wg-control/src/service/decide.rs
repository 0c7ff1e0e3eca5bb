//! Access decisions (PRODUCT.md §4): requested → approved, or closed as denied.

use serde_json::json;
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::time::now_millis;
use wg_domain::{ErrorCode, SessionId};

use super::*;
use wg_domain::resources::{Kind, ReconnectMode, Resource};
use wg_store::SlotClaim;

use super::access::concurrency_error;

use crate::ControlError;

impl ControlPlane {
    // ------------------------------------------------------------------ access decision

    /// Decides an access attempt (PRODUCT.md §4). Creates the session in `requested`; a denial
    /// closes it as `denied` with a `session.denied` event before any vault access; an admission
    /// moves it to `approved` and releases the account credential to the asking gateway.
    pub async fn request_session(&self, ask: SessionAsk) -> Result<Admitted, Denied> {
        let deny = |error| Denied {
            session: None,
            error,
        };
        let protocol: Protocol =
            ask.protocol
                .parse()
                .map_err(|e: wg_domain::lifecycle::UnknownName| {
                    deny(ControlError::bad_request(e.to_string()))
                })?;
        // `ACTOR:sess_…`: the owner takes over the terminal of a live session (after a handoff).
        if let Ok(sid) = ask.target.parse::<SessionId>() {
            return self.attach(sid, &ask, protocol).await;
        }
        // A session of this actor that lost its client leg waits for it (seed, "Reconnect
        // behavior"): `resume` re-attaches it; `reauth` supersedes it with a new session.
        let mut superseded = None;
        let detached = if ask.interactive {
            self.detached_for(&ask, protocol).await.map_err(deny)?
        } else {
            // A command, a file transfer or a forward is a new session beside the detached one.
            None
        };
        if let Some(prev) = detached {
            match self.reconnect_of(&prev).await.map_err(deny)?.mode {
                ReconnectMode::Resume => {
                    if let Some(admitted) = self.resume(&prev, &ask, protocol).await? {
                        return Ok(admitted);
                    }
                }
                ReconnectMode::Reauth => superseded = Some(prev),
                ReconnectMode::Strict => {}
            }
        }
        let id = SessionId::generate().map_err(|e| deny(ControlError::internal(e.to_string())))?;
        let groups = self.actor_groups(&ask.actor).await.map_err(deny)?;
        let now = now_millis();
        let target = self
            .inner
            .store
            .get_resource(Kind::Target, &ask.target)
            .await
            .map_err(|e| deny(e.into()))?;
        let (target_address, target_tags) = match &target {
            Some(Resource::Target(t)) => (t.address.clone(), t.tags.clone()),
            _ => (String::new(), Default::default()),
        };
        let record = SessionRecord {
            id,
            state: SessionState::Requested,
            actor: ask.actor.clone(),
            actor_groups: groups.clone(),
            target: ask.target.clone(),
            target_tags,
            target_address,
            protocol: protocol.as_str().into(),
            account: ask.account.clone(),
            vault_path: None,
            policy: None,
            mfa: None,
            gateway: ask.gateway.clone(),
            gateway_address: ask.gateway_address.clone(),
            client_ip: ask.client_ip.clone(),
            client_geo: None,
            client_software: ask.client_software.clone(),
            pty_term: None,
            pty_cols: None,
            pty_rows: None,
            recording_mode: String::new(),
            recording_chunks: 0,
            recording_bytes: 0,
            recording_status: "none".into(),
            recording_sha256: None,
            created_ms: now,
            opened_ms: None,
            last_input_ms: now,
            ended_ms: None,
            end_reason: None,
            end_detail: None,
            exit_status: None,
        };
        let requested = NewAuditEvent::new(kinds::SESSION_REQUESTED)
            .actor(&ask.actor)
            .session(id)
            .details(json!({
                "target": ask.target, "account": ask.account, "protocol": protocol.as_str(),
                "gateway": ask.gateway, "client_ip": ask.client_ip,
                "client_software": ask.client_software,
            }));
        self.inner
            .store
            .insert_session(&record, Some(&requested))
            .await
            .map_err(|e| deny(e.into()))?;

        match self.decide(&ask, &groups, target, protocol).await {
            Ok((admission, t)) => {
                // Every policy condition (MFA included) held for the new session: the detached
                // one it replaces is sealed and closed first, which frees its slots.
                if let Some(prev) = superseded {
                    self.supersede(&prev, id).await;
                }
                self.approve(id, &ask, admission, t).await
            }
            Err(error) => {
                self.close_denied(id, SessionState::Requested, &ask.actor, &error)
                    .await;
                Err(Denied {
                    session: Some(id),
                    error,
                })
            }
        }
    }

    pub(super) async fn decide(
        &self,
        ask: &SessionAsk,
        groups: &[String],
        target: Option<Resource>,
        protocol: Protocol,
    ) -> Result<(policy::Admission, wg_domain::resources::Target), ControlError> {
        let Some(Resource::Target(target)) = target else {
            return Err(ControlError::new(
                ErrorCode::NotFound,
                format!("unknown target {:?}", ask.target),
            ));
        };
        let admission = self
            .permitting_policy(
                &ask.actor,
                groups,
                &target,
                protocol,
                ask.account.as_deref(),
            )
            .await?;
        Ok((admission, target))
    }

    async fn close_denied(
        &self,
        id: SessionId,
        from: SessionState,
        actor: &str,
        error: &ControlError,
    ) {
        let patch = SessionPatch {
            ended_ms: Some(now_millis()),
            end_reason: Some(EndReason::Denied),
            end_detail: Some(error.0.message.clone()),
            ..Default::default()
        };
        let mut details = json!({"error": error.code().as_str(), "message": error.0.message});
        if let Some(scope) = &error.0.scope {
            details["scope"] = json!(scope);
            details["limit"] = json!(error.0.limit);
        }
        if let Some(target) = &error.0.target {
            details["target"] = json!(target);
        }
        let denied = NewAuditEvent::new(kinds::SESSION_DENIED)
            .actor(actor)
            .session(id)
            .reason(error.0.message.clone())
            .details(details);
        let closed = NewAuditEvent::new(kinds::SESSION_CLOSED)
            .actor(actor)
            .session(id)
            .details(json!({"end_reason": "denied"}));
        if let Err(e) = self
            .inner
            .store
            .transition_session(id, from, SessionState::Closed, &patch, &[denied, closed])
            .await
        {
            tracing::error!(session = %id, error = %e, "cannot record denial");
        }
    }

    async fn approve(
        &self,
        id: SessionId,
        ask: &SessionAsk,
        admission: policy::Admission,
        target: wg_domain::resources::Target,
    ) -> Result<Admitted, Denied> {
        let store = &self.inner.store;
        let fail = |error: ControlError| Denied {
            session: Some(id),
            error,
        };
        let patch = SessionPatch {
            account: Some(admission.account.clone()),
            vault_path: Some(admission.credential.clone()),
            policy: Some(admission.policy.clone()),
            recording_mode: Some(admission.recording.as_str().into()),
            ..Default::default()
        };
        let approved = NewAuditEvent::new(kinds::SESSION_APPROVED)
            .actor(&ask.actor)
            .session(id)
            .details(json!({
                "policy": admission.policy, "account": admission.account,
                "vault_path": admission.credential, "recording": admission.recording.as_str(),
            }));
        // Concurrency at four scopes, in this fixed order (PRODUCT.md §4), taken atomically with
        // the approval — before the vault is touched.
        let claims = self
            .slot_claims(ask, &admission, &target)
            .await
            .map_err(fail)?;
        // A slot held by a session whose client has just gone (its end is being recorded) is
        // waited for briefly, so that a client reconnecting right after its previous session is
        // not refused by that session's bookkeeping.
        let deadline = tokio::time::Instant::now() + SLOT_WAIT;
        loop {
            match store
                .approve_session(id, &patch, std::slice::from_ref(&approved), &claims)
                .await
                .map_err(|e| fail(e.into()))?
            {
                Ok(true) => break,
                Ok(false) => return Err(fail(self.terminated_while_deciding(id).await)),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(full) => {
                    let e = concurrency_error(&full, &target.name);
                    self.close_denied(id, SessionState::Requested, &ask.actor, &e)
                        .await;
                    return Err(fail(e));
                }
            }
        }
        let credential = match store.get_secret(&admission.credential).await {
            Ok(Some(s)) => {
                match self
                    .inner
                    .vault
                    .open_secret(&s.path, &s.kind, &s.nonce, &s.ciphertext)
                {
                    Ok(c) => c,
                    Err(e) => {
                        self.close_denied(id, SessionState::Approved, &ask.actor, &e)
                            .await;
                        return Err(fail(e));
                    }
                }
            }
            Ok(None) => {
                let e = ControlError::unavailable(format!(
                    "the credential {} of account {} is not in the vault (wgctl vault put)",
                    admission.credential, admission.account
                ));
                self.close_denied(id, SessionState::Approved, &ask.actor, &e)
                    .await;
                return Err(fail(e));
            }
            Err(e) => {
                let e: ControlError = e.into();
                self.close_denied(id, SessionState::Approved, &ask.actor, &e)
                    .await;
                return Err(fail(e));
            }
        };
        Ok(Admitted {
            session: id,
            target: target.name.clone(),
            target_address: target.address.clone(),
            host_key: target.host_key.clone(),
            account: admission.account,
            credential: Some(credential),
            recording_mode: admission.recording.as_str().into(),
            idle_timeout: admission.idle_timeout,
            idle_grace: admission.idle_grace,
            policy: admission.policy,
            forward_local: admission.forward_local,
            attach: false,
            reconnect: admission.reconnect,
            owner: ask.actor.clone(),
        })
    }

    /// The refusal of an attempt whose session left `requested` while it was being decided: an
    /// operator terminated it (the only way out of `requested` but the decision itself).
    /// `terminated` with `session terminated by OPERATOR: REASON`, which the gateway shows as
    /// it shows any termination; the operator comes from the `session.terminated` event.
    async fn terminated_while_deciding(&self, id: SessionId) -> ControlError {
        let store = &self.inner.store;
        let reason = match store.get_session(id).await {
            Ok(Some(r)) => r.end_detail.unwrap_or_default(),
            _ => String::new(),
        };
        let by = store
            .list_audit(&wg_store::AuditFilter {
                session: Some(id.to_string()),
                kind: Some(kinds::SESSION_TERMINATED.into()),
                after_seq: None,
                limit: Some(1),
            })
            .await
            .ok()
            .and_then(|events| events.into_iter().next())
            .and_then(|e| e.actor);
        let message = match by {
            Some(by) => format!("session terminated by {by}: {reason}"),
            None => format!("session terminated: {reason}"),
        };
        ControlError::new(ErrorCode::Terminated, message)
    }

    /// The four concurrency claims of an admitted attempt, each limit taken from the most
    /// specific place it is set: the actor's own `maxSessionsPerUser` over the global default,
    /// the target's `maxSessionsPerTarget` over the global default, the policy's
    /// `concurrency.max`, the gateway's `gateway.maxActive`.
    async fn slot_claims(
        &self,
        ask: &SessionAsk,
        admission: &policy::Admission,
        target: &wg_domain::resources::Target,
    ) -> Result<Vec<SlotClaim>, ControlError> {
        let store = &self.inner.store;
        let defaults = match store.get_resource(Kind::Limits, "default").await? {
            Some(Resource::Limits(l)) => l.max_sessions_per_target,
            _ => None,
        };
        Ok(vec![
            SlotClaim {
                scope: "actor".into(),
                key: ask.actor.clone(),
                limit: self.actor_session_limit(&ask.actor).await?,
            },
            SlotClaim {
                scope: "target".into(),
                key: target.name.clone(),
                limit: target.max_sessions_per_target.or(defaults),
            },
            SlotClaim {
                scope: "policy".into(),
                key: admission.policy.clone(),
                limit: admission.concurrency_max,
            },
            SlotClaim {
                scope: "gateway".into(),
                key: ask.gateway.clone(),
                limit: ask.gateway_max_active,
            },
        ])
    }
}

/// How long an attempt waits for a slot that is being freed before it is refused.
const SLOT_WAIT: Duration = Duration::from_secs(1);
