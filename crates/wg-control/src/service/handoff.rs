//! Ownership handoff (seed, "Ownership and handoff"): the owner of a live session — or an
//! operator — offers it to another principal, who accepts within a window; accepting makes that
//! principal the session's owner (the actor evaluated by policy from then on).
//!
//! Decisions (ARCHITECTURE.md, "Handoff"):
//! - who may offer: the session's owner, or a principal with role `operator` or `admin`;
//! - to whom: an existing user or service principal, other than the owner, holding a policy that
//!   permits the session's target, account and protocol — checked when offering and again when
//!   accepting, with the very evaluation a connection attempt gets ([`policy::evaluate`]);
//! - one pending offer per session: a second offer is refused (`conflict`) until the first is
//!   accepted or expires; an expired offer is replaced;
//! - the window: 5 minutes by default, 1 second to 1 hour; an accept at or after its end is
//!   refused (`handoff_expired`) and writes `session.handoff.expired` once;
//! - accepting moves the `actor` concurrency slot (and the `policy` slot when the new owner's
//!   policy differs) within the new owner's limits, in the transaction that changes the owner; a
//!   full scope refuses the accept with the structured `concurrency_limit` error.
//!
//! Every refusal leaves the owner, the policy and the slots unchanged.

use std::time::Duration;

use serde_json::json;
use wg_domain::ErrorCode;
use wg_domain::api::{HandoffRequest, HandoffView};
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::handoff::{self, HandoffState};
use wg_domain::time::{now_millis, rfc3339};
use wg_store::{
    HandoffAcceptOutcome, HandoffAcceptance, HandoffFilter, HandoffRecord, HandoffRequestOutcome,
    NewHandoff, SlotClaim,
};

use super::access::concurrency_error;
use super::operate::validate_reason;
use super::*;
use crate::ControlError;
use crate::views::handoff_view;

/// Who owns a session now: what a gateway needs to authorise an attach to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    /// The session.
    pub session: SessionId,
    /// Its lifecycle state.
    pub state: SessionState,
    /// The owner (after an accepted handoff, the new owner).
    pub actor: String,
    /// The owner's groups as recorded when it became the owner.
    pub actor_groups: Vec<String>,
    /// The policy under which the owner holds the session.
    pub policy: Option<String>,
    /// The gateway that runs the session.
    pub gateway: String,
}

/// How often [`ControlPlane::spawn_handoff_sweeper`] looks for offers past their window.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The acting principal of `session.handoff.expired` events written by the sweeper.
const SWEEPER: &str = "system";

impl ControlPlane {
    /// Offers the live session `session` to `req.to` for `req.ttl_seconds` (default 5 min, at
    /// most 1 h). Writes `session.handoff.requested` (actor = `caller`; details: from, to, by,
    /// expires_at, ttl_seconds and the policy that permits `to`).
    ///
    /// # Errors
    /// `bad_request` (malformed ID, blank reason, bad TTL, `to` already the owner), `not_found`
    /// (no such session, no such principal), `forbidden` (`caller` is neither the owner nor an
    /// operator), `conflict` (session not live, or another offer pending), `policy_denied` (`to`
    /// holds no policy permitting the session's target, account and protocol).
    pub async fn request_handoff(
        &self,
        caller: &str,
        caller_role: Option<Role>,
        session: &str,
        req: &HandoffRequest,
    ) -> Result<HandoffView, ControlError> {
        let id = parse_session_id(session)?;
        let reason = validate_reason(&req.reason, "a handoff")?;
        let ttl = match req.ttl_seconds {
            None => handoff::DEFAULT_TTL,
            Some(s) => handoff::check_ttl(Duration::from_secs(s))
                .map_err(|e| ControlError::bad_request(e.to_string()))?,
        };
        let to = req.to.trim();
        if to.is_empty() {
            return Err(ControlError::bad_request(
                "name the incoming owner: {\"to\": \"dan@corp\", …}",
            ));
        }
        let store = &self.inner.store;
        let rec = store
            .get_session(id)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no session {id}")))?;
        let operator = caller_role.is_some_and(|r| r >= Role::Operator);
        if rec.actor != caller && !operator {
            return Err(ControlError::new(
                ErrorCode::Forbidden,
                format!("{caller} may not hand off {id}: only its owner or an operator may"),
            ));
        }
        if !handoff::can_hand_off(rec.state) {
            return Err(not_live(id, rec.state));
        }
        if rec.actor == to {
            return Err(ControlError::bad_request(format!("{to} already owns {id}")));
        }
        if rec.pty_term.is_none() && rec.pty_cols.is_none() {
            return Err(ControlError::new(
                ErrorCode::Conflict,
                format!(
                    "session {id} has no interactive terminal: only a shell on a terminal can be handed off"
                ),
            ));
        }
        let groups = self.principal_groups(to).await?.ok_or_else(|| {
            ControlError::not_found(format!("no user or service principal named {to:?}"))
        })?;
        let admission = self.permits_session(to, &groups, &rec).await?;
        let now = now_millis();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let new = NewHandoff {
            session: id,
            from_actor: rec.actor.clone(),
            to_principal: to.to_owned(),
            requested_by: caller.to_owned(),
            reason: reason.to_owned(),
            requested_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
        };
        let event = NewAuditEvent::new(kinds::SESSION_HANDOFF_REQUESTED)
            .actor(caller)
            .session(id)
            .reason(reason)
            .details(json!({
                "from": rec.actor, "to": to, "by": caller,
                "expires_at": rfc3339(new.expires_ms), "ttl_seconds": ttl.as_secs(),
                "to_policy": admission.policy,
            }));
        match store.request_handoff(&new, &[event]).await? {
            HandoffRequestOutcome::Requested(h) => Ok(handoff_view(&h)),
            HandoffRequestOutcome::NotLive => Err(ControlError::new(
                ErrorCode::Conflict,
                format!("session {id} is no longer live"),
            )),
            HandoffRequestOutcome::OwnerChanged(owner) => Err(ControlError::new(
                ErrorCode::Conflict,
                format!("session {id} changed owner meanwhile (now {owner})"),
            )),
            HandoffRequestOutcome::AlreadyPending(p) => Err(ControlError::new(
                ErrorCode::Conflict,
                format!(
                    "a handoff of {id} to {} is already pending until {}; it must be accepted \
                     or expire first",
                    p.to_principal,
                    rfc3339(p.expires_ms)
                ),
            )),
        }
    }

    /// Accepts the pending handoff of `session` to `caller`: re-checks that `caller` holds a
    /// permitting policy, then makes it the owner under that policy, moving the concurrency slots
    /// (one transaction). Writes `session.handoff.accepted` (actor = `caller`; reason = the
    /// offer's; details: from, to, requested_by, policy, previous_policy).
    ///
    /// # Errors
    /// `handoff_expired` (the window closed: `session.handoff.expired` is written once),
    /// `not_found` (no offer of this session to `caller`), `conflict` (already accepted,
    /// cancelled, or the session is no longer live), `policy_denied` (no longer permitted),
    /// `concurrency_limit` (a scope of the new owner is full). The owner is unchanged in each.
    pub async fn accept_handoff(
        &self,
        caller: &str,
        session: &str,
    ) -> Result<HandoffView, ControlError> {
        let id = parse_session_id(session)?;
        let store = &self.inner.store;
        let offers = store
            .list_handoffs(&HandoffFilter {
                session: Some(id),
                to_principal: Some(caller.to_owned()),
                state: None,
            })
            .await?;
        let Some(offer) = offers.last() else {
            return Err(ControlError::not_found(format!(
                "no handoff of {id} is offered to {caller}"
            )));
        };
        match offer.state {
            HandoffState::Pending => {}
            HandoffState::Expired => return Err(expired(offer)),
            HandoffState::Accepted => {
                return Err(ControlError::new(
                    ErrorCode::Conflict,
                    format!("the handoff of {id} to {caller} was already accepted"),
                ));
            }
            HandoffState::Cancelled => {
                return Err(ControlError::new(
                    ErrorCode::Conflict,
                    format!("the handoff of {id} to {caller} was cancelled: the session ended"),
                ));
            }
        }
        let now = now_millis();
        if offer.expires_ms <= now {
            store.expire_handoffs(Some(id), now, caller).await?;
            return Err(expired(offer));
        }
        let rec = store
            .get_session(id)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no session {id}")))?;
        if !handoff::can_hand_off(rec.state) {
            return Err(not_live(id, rec.state));
        }
        let groups = self.principal_groups(caller).await?.ok_or_else(|| {
            ControlError::new(
                ErrorCode::PolicyDenied,
                format!("{caller} is no longer a user or service principal"),
            )
        })?;
        let admission = self.permits_session(caller, &groups, &rec).await?;
        let mut claims = vec![SlotClaim {
            scope: "actor".into(),
            key: caller.to_owned(),
            limit: self.actor_session_limit(caller).await?,
        }];
        if rec.policy.as_deref() != Some(admission.policy.as_str()) {
            claims.push(SlotClaim {
                scope: "policy".into(),
                key: admission.policy.clone(),
                limit: admission.concurrency_max,
            });
        }
        let event = NewAuditEvent::new(kinds::SESSION_HANDOFF_ACCEPTED)
            .actor(caller)
            .session(id)
            .reason(offer.reason.clone())
            .details(json!({
                "from": offer.from_actor, "to": caller, "requested_by": offer.requested_by,
                "policy": admission.policy, "previous_policy": rec.policy,
            }));
        let acceptance = HandoffAcceptance {
            handoff_id: offer.id.clone(),
            session: id,
            to_principal: caller.to_owned(),
            to_groups: groups,
            policy: admission.policy.clone(),
            claims,
            now,
            audit: vec![event],
        };
        match store.accept_handoff(&acceptance).await? {
            HandoffAcceptOutcome::Accepted(h) => {
                // From now on the previous owner's input must not reach the session: its
                // gateway detaches that client at once and keeps the session for the new owner.
                let notice = format!(
                    "wardengate: this session was handed off to {caller} ({}); this terminal is detached",
                    h.reason
                );
                let sent = self
                    .inner
                    .gateways
                    .send(
                        &rec.gateway,
                        wg_proto::v1::gateway_command::Command::HandOff(wg_proto::v1::HandOff {
                            session_id: id.to_string(),
                            new_owner: caller.to_owned(),
                            notice,
                        }),
                        self.inner.config.terminate_timeout,
                    )
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(session = %id, error = %e, "cannot detach the previous owner's client");
                }
                Ok(handoff_view(&h))
            }
            HandoffAcceptOutcome::Expired(h) => Err(expired(&h)),
            HandoffAcceptOutcome::NotPending => Err(ControlError::new(
                ErrorCode::Conflict,
                format!("the handoff of {id} to {caller} is no longer pending"),
            )),
            HandoffAcceptOutcome::NotLive => Err(ControlError::new(
                ErrorCode::Conflict,
                format!("session {id} is no longer live"),
            )),
            HandoffAcceptOutcome::SlotsFull(full) => Err(concurrency_error(&full, &rec.target)),
        }
    }

    /// Marks every pending offer past its window `expired` (one `session.handoff.expired` event
    /// each, actor `system`). Returns how many it expired. Cheap when there is nothing to do: it
    /// writes only when a pending offer is due.
    ///
    /// # Errors
    /// Store failures.
    pub async fn expire_handoffs(&self) -> Result<usize, ControlError> {
        let store = &self.inner.store;
        let now = now_millis();
        let due = store
            .list_handoffs(&HandoffFilter {
                state: Some(HandoffState::Pending),
                ..HandoffFilter::default()
            })
            .await?
            .iter()
            .any(|h| h.expires_ms <= now);
        if !due {
            return Ok(0);
        }
        Ok(store.expire_handoffs(None, now, SWEEPER).await?.len())
    }

    /// Runs [`ControlPlane::expire_handoffs`] every few seconds until `shutdown`, so that an
    /// offer nobody accepts is recorded as expired close to its deadline.
    pub fn spawn_handoff_sweeper(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let control = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = control.expire_handoffs().await {
                    tracing::warn!(error = %e, "cannot expire handoffs");
                }
            }
        })
    }

    /// Who owns `session` now (after any accepted handoff) and under which policy; `None` for an
    /// unknown session. A gateway asked to attach `ACTOR:SESSION_ID` admits `ACTOR` only if it is
    /// this owner and the session is live ([`wg_domain::handoff::can_hand_off`]).
    ///
    /// # Errors
    /// Store failures.
    pub async fn session_owner(
        &self,
        session: SessionId,
    ) -> Result<Option<SessionOwner>, ControlError> {
        Ok(self
            .inner
            .store
            .get_session(session)
            .await?
            .map(|r| SessionOwner {
                session: r.id,
                state: r.state,
                actor: r.actor,
                actor_groups: r.actor_groups,
                policy: r.policy,
                gateway: r.gateway,
            }))
    }

    /// The pending offers (of `session`, or of every session) still within their window.
    pub(super) async fn pending_handoffs(
        &self,
        session: Option<SessionId>,
    ) -> Result<Vec<HandoffRecord>, ControlError> {
        let now = now_millis();
        Ok(self
            .inner
            .store
            .list_handoffs(&HandoffFilter {
                session,
                state: Some(HandoffState::Pending),
                ..HandoffFilter::default()
            })
            .await?
            .into_iter()
            .filter(|h| h.expires_ms > now)
            .collect())
    }

    /// The policy that permits `name` to hold the session `rec` (its target, account and
    /// protocol).
    async fn permits_session(
        &self,
        name: &str,
        groups: &[String],
        rec: &SessionRecord,
    ) -> Result<policy::Admission, ControlError> {
        let Some(Resource::Target(target)) = self
            .inner
            .store
            .get_resource(Kind::Target, &rec.target)
            .await?
        else {
            let mut e = ControlError::new(
                ErrorCode::PolicyDenied,
                format!(
                    "the target {} of session {} is no longer configured",
                    rec.target, rec.id
                ),
            );
            e.0.target = Some(rec.target.clone());
            return Err(e);
        };
        let protocol: Protocol =
            rec.protocol
                .parse()
                .map_err(|e: wg_domain::lifecycle::UnknownName| {
                    ControlError::internal(e.to_string())
                })?;
        let admission = self
            .permitting_policy(name, groups, &target, protocol, rec.account.as_deref())
            .await?;
        // The incoming owner's policy applies from the acceptance on; a session cannot start
        // being recorded half-way, so a policy that demands more recording than the session has
        // refuses the handoff (fail closed) rather than letting the new owner work unrecorded.
        let rank = |m: &str| match m {
            "full" => 2,
            "metadata" => 1,
            _ => 0,
        };
        let wanted = admission.recording.as_str();
        if rank(wanted) > rank(&rec.recording_mode) {
            let mut e = ControlError::new(
                ErrorCode::PolicyDenied,
                format!(
                    "{name}'s policy {} requires recording {wanted}, but session {} is recorded as {}; \
                     open a new session instead",
                    admission.policy,
                    rec.id,
                    if rec.recording_mode.is_empty() {
                        "off"
                    } else {
                        &rec.recording_mode
                    }
                ),
            );
            e.0.target = Some(rec.target.clone());
            return Err(e);
        }
        Ok(admission)
    }
}

/// The refusal of a session that is not live.
fn not_live(id: SessionId, state: SessionState) -> ControlError {
    ControlError::new(
        ErrorCode::Conflict,
        format!(
            "session {id} is {state}: only a live session (active, idle or detached) can be \
             handed off"
        ),
    )
}

/// The refusal of an accept after the window.
fn expired(h: &HandoffRecord) -> ControlError {
    ControlError::new(
        ErrorCode::HandoffExpired,
        format!(
            "the handoff of {} to {} expired at {}; {} keeps the session (ask for a new handoff)",
            h.session,
            h.to_principal,
            rfc3339(h.expires_ms),
            h.from_actor
        ),
    )
}
