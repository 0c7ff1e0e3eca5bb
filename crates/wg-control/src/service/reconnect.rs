//! Reconnects and take-overs (seed, "Reconnect behavior" and "Ownership and handoff"): which
//! live session a new client connection joins instead of opening a new one.
//!
//! - `resume`: the owner reconnecting to the same target (and account, when named) on the same
//!   gateway within the grace re-attaches the detached session: same ID, same PTY.
//! - `reauth`: the owner must pass the full decision again (MFA included); the new session is
//!   opened and the detached one is closed as `superseded` before the new one takes its slots.
//! - `strict`: nothing to do here; the gateway closes a session whose client leg drops.
//! - attach by ID (`ACTOR:sess_…`): the session's current owner — after a handoff, the new
//!   one — takes over its terminal; the gateway detaches the previous leg with a message.
//!
//! Every take-over re-evaluates the owner's policy: an owner no longer permitted cannot come back.

use serde_json::json;
use wg_domain::SessionId;
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::handoff::HandoffState;
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::resources::{Kind, Protocol, Reconnect, ReconnectMode, Resource};
use wg_domain::{ErrorCode, policy};
use wg_proto::v1::gateway_command;
use wg_store::{HandoffFilter, SessionFilter, SessionPatch, SessionRecord};

use super::{Admitted, ControlPlane, Denied, SessionAsk};
use crate::ControlError;

impl ControlPlane {
    /// The newest detached session of the asking actor on the asked target (and account, when
    /// one is named), protocol and gateway.
    pub(super) async fn detached_for(
        &self,
        ask: &SessionAsk,
        protocol: Protocol,
    ) -> Result<Option<SessionRecord>, ControlError> {
        let found = self
            .inner
            .store
            .list_sessions(&SessionFilter {
                states: vec![SessionState::Detached],
                actor: Some(ask.actor.clone()),
                target: Some(ask.target.clone()),
                protocol: Some(protocol.as_str().to_owned()),
                gateway: Some(ask.gateway.clone()),
                limit: Some(100),
                ..Default::default()
            })
            .await?;
        Ok(found
            .into_iter()
            .find(|s| ask.account.is_none() || ask.account == s.account))
    }

    /// Whether a connection for `ask` could join a live session instead of opening one: its
    /// login names a session, or a detached session of the actor waits on that target. The
    /// gateway then defers the decision until it knows whether the client wants a shell.
    ///
    /// # Errors
    /// Store failures.
    pub async fn could_join(&self, ask: &SessionAsk) -> Result<bool, ControlError> {
        if ask.target.parse::<SessionId>().is_ok() {
            return Ok(true);
        }
        let Ok(protocol) = ask.protocol.parse::<Protocol>() else {
            return Ok(false);
        };
        Ok(self.detached_for(ask, protocol).await?.is_some())
    }

    /// The reconnect behaviour of a session's policy as it is now (strict if the policy is gone).
    pub(super) async fn reconnect_of(&self, s: &SessionRecord) -> Result<Reconnect, ControlError> {
        let Some(name) = &s.policy else {
            return Ok(Reconnect::strict());
        };
        Ok(
            match self.inner.store.get_resource(Kind::Policy, name).await? {
                Some(Resource::Policy(p)) => p.reconnect,
                _ => Reconnect::strict(),
            },
        )
    }

    /// Re-attaches a detached session to its returning owner. `Ok(None)` when the session is no
    /// longer detached (it expired or was terminated meanwhile) or the owner is no longer
    /// permitted: the caller then decides a new session, which the policy may deny.
    pub(super) async fn resume(
        &self,
        prev: &SessionRecord,
        ask: &SessionAsk,
        protocol: Protocol,
    ) -> Result<Option<Admitted>, Denied> {
        let Ok(admission) = self.owner_admission(prev, &ask.actor, protocol).await else {
            return Ok(None);
        };
        let resumed = NewAuditEvent::new(kinds::SESSION_RESUMED)
            .actor(&ask.actor)
            .session(prev.id)
            .details(json!({
                "client_ip": ask.client_ip, "client_software": ask.client_software,
                "gateway": ask.gateway,
            }));
        let moved = self
            .inner
            .store
            .transition_session(
                prev.id,
                SessionState::Detached,
                SessionState::Active,
                &SessionPatch::default(),
                &[resumed],
            )
            .await
            .map_err(|e| Denied {
                session: None,
                error: e.into(),
            })?;
        Ok(moved.then(|| attached(prev, &ask.actor, admission)))
    }

    /// Lets `ask.actor` take over the terminal of live session `sid` on the asking gateway: it
    /// must be the session's owner (after a handoff, the new owner) and still be permitted.
    pub(super) async fn attach(
        &self,
        sid: SessionId,
        ask: &SessionAsk,
        protocol: Protocol,
    ) -> Result<Admitted, Denied> {
        match self.try_attach(sid, ask, protocol).await {
            Ok(a) => Ok(a),
            Err(error) => {
                let denied = NewAuditEvent::new(kinds::SESSION_DENIED)
                    .actor(&ask.actor)
                    .session(sid)
                    .reason(error.0.message.clone())
                    .details(json!({
                        "attach": true, "error": error.code().as_str(),
                        "client_ip": ask.client_ip, "gateway": ask.gateway,
                    }));
                if let Err(e) = self.inner.store.append_audit(&denied).await {
                    tracing::error!(session = %sid, error = %e, "cannot record a refused attach");
                }
                Err(Denied {
                    session: None,
                    error,
                })
            }
        }
    }

    async fn try_attach(
        &self,
        sid: SessionId,
        ask: &SessionAsk,
        protocol: Protocol,
    ) -> Result<Admitted, ControlError> {
        if !ask.interactive {
            return Err(ControlError::bad_request(format!(
                "attaching to {sid} needs an interactive shell on a terminal (ssh -t, no command)"
            )));
        }
        let Some(cur) = self.inner.store.get_session(sid).await? else {
            return Err(ControlError::not_found(format!("no session {sid}")));
        };
        if !matches!(
            cur.state,
            SessionState::Active | SessionState::Idle | SessionState::Detached
        ) {
            return Err(ControlError::new(
                ErrorCode::Conflict,
                format!("session {sid} is {} and cannot be attached", cur.state),
            ));
        }
        if cur.actor != ask.actor {
            return Err(ControlError::new(
                ErrorCode::Forbidden,
                format!(
                    "session {sid} is owned by {}; only its owner may attach (a handoff must be accepted first)",
                    cur.actor
                ),
            ));
        }
        if cur.protocol != protocol.as_str() {
            return Err(ControlError::bad_request(format!(
                "session {sid} is a {} session",
                cur.protocol
            )));
        }
        if cur.gateway != ask.gateway {
            return Err(ControlError::new(
                ErrorCode::Conflict,
                format!(
                    "session {sid} runs on gateway {}; connect through that gateway to attach",
                    cur.gateway
                ),
            ));
        }
        // A session whose client never had a terminal (exec, sftp, forwards) has no console.
        // (`ssh -tt` without a terminal of its own sends an empty TERM and a 0x0 size.)
        if cur.pty_term.is_none() && cur.pty_cols.is_none() {
            return Err(ControlError::new(
                ErrorCode::Conflict,
                format!("session {sid} has no interactive terminal to attach to"),
            ));
        }
        let admission = self
            .owner_admission(&cur, &ask.actor, protocol)
            .await
            .map_err(|mut e| {
                e.0.message = format!("{} (attach to {sid})", e.0.message);
                e
            })?;
        // Taking a session over is a reconnect: only `resume` allows it to the owner; under
        // `reauth` or `strict` only the new owner of an accepted handoff may attach.
        if admission.reconnect.mode != ReconnectMode::Resume {
            let handed_over = self
                .inner
                .store
                .list_handoffs(&HandoffFilter {
                    session: Some(sid),
                    to_principal: Some(ask.actor.clone()),
                    state: Some(HandoffState::Accepted),
                })
                .await?;
            if handed_over.is_empty() {
                return Err(ControlError::new(
                    ErrorCode::PolicyDenied,
                    format!(
                        "policy {} does not allow reconnecting to a session (reconnect: {}); connect with ACTOR:TARGET for a new session",
                        admission.policy,
                        admission.reconnect.mode.as_str()
                    ),
                ));
            }
        }
        let event = NewAuditEvent::new(kinds::SESSION_ATTACHED)
            .actor(&ask.actor)
            .session(sid)
            .details(json!({
                "previous_state": cur.state.as_str(), "client_ip": ask.client_ip,
                "client_software": ask.client_software, "gateway": ask.gateway,
            }));
        let store = &self.inner.store;
        if cur.state == SessionState::Detached {
            let moved = store
                .transition_session(
                    sid,
                    SessionState::Detached,
                    SessionState::Active,
                    &SessionPatch::default(),
                    std::slice::from_ref(&event),
                )
                .await?;
            if !moved {
                return Err(ControlError::new(
                    ErrorCode::Conflict,
                    format!("session {sid} changed state while being attached; try again"),
                ));
            }
        } else {
            store.append_audit(&event).await?;
        }
        Ok(attached(&cur, &ask.actor, admission))
    }

    /// The owner's policy admission for a live session's target, account and protocol.
    async fn owner_admission(
        &self,
        s: &SessionRecord,
        owner: &str,
        protocol: Protocol,
    ) -> Result<policy::Admission, ControlError> {
        let groups = self.actor_groups(owner).await?;
        let target = self
            .inner
            .store
            .get_resource(Kind::Target, &s.target)
            .await?;
        let ask = SessionAsk {
            gateway: s.gateway.clone(),
            gateway_address: None,
            actor: owner.to_owned(),
            target: s.target.clone(),
            account: s.account.clone(),
            protocol: protocol.as_str().to_owned(),
            client_ip: None,
            client_software: None,
            gateway_max_active: None,
            interactive: false,
        };
        Ok(self.decide(&ask, &groups, target, protocol).await?.0)
    }

    /// Closes a detached session that a reauthenticated one replaces (end reason `superseded`),
    /// waiting for its gateway to seal the recording. Failures are logged: the new session's
    /// slot claims then wait or are refused as usual.
    pub(super) async fn supersede(&self, prev: &SessionRecord, by: SessionId) {
        let detail = format!("superseded by {by} after reauthentication");
        let patch = SessionPatch {
            end_reason: Some(EndReason::Superseded),
            end_detail: Some(detail.clone()),
            ..Default::default()
        };
        match self
            .inner
            .store
            .transition_session(
                prev.id,
                SessionState::Detached,
                SessionState::Closing,
                &patch,
                &[],
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(session = %prev.id, error = %e, "cannot supersede a detached session");
                return;
            }
        }
        let sent = self
            .inner
            .gateways
            .send(
                &prev.gateway,
                gateway_command::Command::Terminate(wg_proto::v1::Terminate {
                    session_id: prev.id.to_string(),
                    reason: detail,
                    operator: String::new(),
                    end_reason: EndReason::Superseded.as_str().to_owned(),
                }),
                self.inner.config.terminate_timeout,
            )
            .await;
        if let Err(e) = sent {
            tracing::warn!(session = %prev.id, error = %e, "cannot reach the gateway of a superseded session");
            return;
        }
        if let Err(e) = self.await_closed(prev.id, true).await {
            tracing::warn!(session = %prev.id, error = %e, "superseded session not confirmed closed");
        }
    }
}

/// The admission of a take-over: the live session's target leg is reused, so no credential.
fn attached(s: &SessionRecord, owner: &str, admission: policy::Admission) -> Admitted {
    Admitted {
        session: s.id,
        target: s.target.clone(),
        target_address: s.target_address.clone(),
        host_key: None,
        account: s.account.clone().unwrap_or_default(),
        credential: None,
        recording_mode: s.recording_mode.clone(),
        idle_timeout: admission.idle_timeout,
        idle_grace: admission.idle_grace,
        policy: admission.policy,
        forward_local: admission.forward_local,
        attach: true,
        reconnect: admission.reconnect,
        owner: owner.to_owned(),
    }
}
