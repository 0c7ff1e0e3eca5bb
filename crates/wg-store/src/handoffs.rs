//! Ownership handoff offers (`session_handoffs`): request, accept, expire, list.
//!
//! Every change runs in one transaction that first locks the session's row with a no-op update
//! conditioned on the session being live (active, idle or detached), so that handoff operations
//! on one session are serialised, in this process or another, and a session that is closing is
//! never handed off. At most one offer per session is pending (a partial unique index backs the
//! check). An offer past its window is marked `expired` — with one `session.handoff.expired`
//! event — by whichever call finds it first ([`Store::expire_handoffs`], a new request, or the
//! late accept itself).

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use wg_domain::SessionId;
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::handoff::{HANDOFF_STATES, HandoffState};
use wg_domain::time::{UnixMillis, rfc3339};

use crate::chain::append_in;
use crate::slots::{self, SlotClaim, SlotsFull};
use crate::sql::Args;
use crate::{Result, Store, corrupt, json_error};

/// Every column of `session_handoffs`, in [`HandoffRecord`] field order.
const HANDOFF_COLUMNS: &str = "id, session_id, from_actor, to_principal, requested_by, reason, \
     requested_ms, expires_ms, state, decided_ms, accepted_policy";

/// One handoff offer as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffRecord {
    /// The offer's ID (`hof_` + 16 hex).
    pub id: String,
    /// The session offered.
    pub session: SessionId,
    /// The owner when the offer was made.
    pub from_actor: String,
    /// The incoming owner.
    pub to_principal: String,
    /// Who made the offer (the owner or an operator).
    pub requested_by: String,
    /// Why.
    pub reason: String,
    /// When the offer was made.
    pub requested_ms: UnixMillis,
    /// The end of the window to accept.
    pub expires_ms: UnixMillis,
    /// `pending`, `accepted`, `expired` or `cancelled`.
    pub state: HandoffState,
    /// When it was accepted, expired or cancelled.
    pub decided_ms: Option<UnixMillis>,
    /// Once accepted: the new owner's permitting policy.
    pub accepted_policy: Option<String>,
}

/// A new offer for [`Store::request_handoff`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHandoff {
    /// The session offered.
    pub session: SessionId,
    /// The owner the caller saw (compare-and-set: the offer is refused if the owner changed).
    pub from_actor: String,
    /// The incoming owner.
    pub to_principal: String,
    /// Who makes the offer.
    pub requested_by: String,
    /// Why.
    pub reason: String,
    /// Now.
    pub requested_ms: UnixMillis,
    /// The end of the window to accept.
    pub expires_ms: UnixMillis,
}

/// What [`Store::request_handoff`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoffRequestOutcome {
    /// The offer is recorded (pending) with its audit events.
    Requested(HandoffRecord),
    /// The session does not exist or is not live (active, idle or detached).
    NotLive,
    /// The session's owner is no longer the one the caller saw; it is this one.
    OwnerChanged(String),
    /// Another offer for the session is pending and within its window.
    AlreadyPending(HandoffRecord),
}

/// An acceptance for [`Store::accept_handoff`].
#[derive(Clone, Debug, PartialEq)]
pub struct HandoffAcceptance {
    /// The offer's ID, as the caller read it (compare-and-set: it must still be pending).
    pub handoff_id: String,
    /// The session.
    pub session: SessionId,
    /// The accepting principal: must be the offer's incoming owner.
    pub to_principal: String,
    /// Its groups, recorded as the session's `actor_groups`.
    pub to_groups: Vec<String>,
    /// Its permitting policy, recorded as the session's `policy`.
    pub policy: String,
    /// The slots to move to the new owner: its `actor` claim and, when the policy changes, the
    /// new policy's `policy` claim, in that order.
    pub claims: Vec<SlotClaim>,
    /// Now (the window is checked against it).
    pub now: UnixMillis,
    /// Events appended with the change (e.g. `session.handoff.accepted`).
    pub audit: Vec<NewAuditEvent>,
}

/// What [`Store::accept_handoff`] did. Every outcome but `Accepted` leaves the owner, the
/// policy and the slots unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoffAcceptOutcome {
    /// The owner changed; the offer as now stored (`accepted`).
    Accepted(HandoffRecord),
    /// The window had closed: the offer is now `expired` (its `session.handoff.expired` event
    /// was appended by this call or an earlier one).
    Expired(HandoffRecord),
    /// The offer is not pending (accepted, expired, cancelled or unknown) or is not to this
    /// principal.
    NotPending,
    /// The session does not exist or is not live.
    NotLive,
    /// The new owner's scope is at its limit.
    SlotsFull(SlotsFull),
}

/// Filters of [`Store::list_handoffs`]; all given filters must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandoffFilter {
    /// Only offers of this session.
    pub session: Option<SessionId>,
    /// Only offers to this principal.
    pub to_principal: Option<String>,
    /// Only offers in this state.
    pub state: Option<HandoffState>,
}

fn handoff_from_row(row: &AnyRow) -> Result<HandoffRecord> {
    let id: String = row.try_get("id")?;
    let session: String = row.try_get("session_id")?;
    let session: SessionId = session
        .parse()
        .map_err(|e| corrupt("session_handoffs", format!("{id}: {e}")))?;
    let state: String = row.try_get("state")?;
    let state: HandoffState = state
        .parse()
        .map_err(|e| corrupt("session_handoffs", format!("{id}: {e}")))?;
    Ok(HandoffRecord {
        session,
        from_actor: row.try_get("from_actor")?,
        to_principal: row.try_get("to_principal")?,
        requested_by: row.try_get("requested_by")?,
        reason: row.try_get("reason")?,
        requested_ms: row.try_get("requested_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        state,
        decided_ms: row.try_get("decided_ms")?,
        accepted_policy: row.try_get("accepted_policy")?,
        id,
    })
}

/// Locks the session's row if the session is live; returns its owner then, `None` otherwise.
async fn lock_live_session(
    tx: &mut Transaction<'static, Any>,
    session: &str,
) -> Result<Option<String>> {
    let mut args = Args::default();
    let id = args.push(session);
    let states: Vec<String> = HANDOFF_STATES
        .iter()
        .map(|s| args.push(s.as_str()))
        .collect();
    let sql = format!(
        "UPDATE sessions SET actor = actor WHERE id = {id} AND state IN ({})",
        states.join(", ")
    );
    if args.bind(&sql).execute(&mut **tx).await?.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT actor FROM sessions WHERE id = $1")
        .bind(session)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(row.try_get("actor")?))
}

/// The pending offer of a session, if any (expired or not).
async fn pending_of(
    tx: &mut Transaction<'static, Any>,
    session: &str,
) -> Result<Option<HandoffRecord>> {
    let sql = format!(
        "SELECT {HANDOFF_COLUMNS} FROM session_handoffs WHERE session_id = $1 AND state = $2"
    );
    sqlx::query(&sql)
        .bind(session)
        .bind(HandoffState::Pending.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| handoff_from_row(&row))
        .transpose()
}

/// Marks pending offers past their window (of one session, or all) `expired`, each with one
/// `session.handoff.expired` event whose actor is `noticed_by`. Returns the offers it expired.
async fn expire_in(
    tx: &mut Transaction<'static, Any>,
    chain: &wg_domain::audit::ChainHasher,
    session: Option<&str>,
    now: UnixMillis,
    noticed_by: &str,
) -> Result<Vec<HandoffRecord>> {
    let mut args = Args::default();
    let mut sql = format!(
        "SELECT {HANDOFF_COLUMNS} FROM session_handoffs WHERE state = {} AND expires_ms <= {}",
        args.push(HandoffState::Pending.as_str()),
        args.push(now)
    );
    if let Some(s) = session {
        sql.push_str(&format!(" AND session_id = {}", args.push(s)));
    }
    sql.push_str(" ORDER BY expires_ms, id");
    let rows = args.bind(&sql).fetch_all(&mut **tx).await?;
    let mut expired = Vec::new();
    for row in &rows {
        let mut h = handoff_from_row(row)?;
        let flipped = sqlx::query(
            "UPDATE session_handoffs SET state = $1, decided_ms = $2 WHERE id = $3 AND state = $4",
        )
        .bind(HandoffState::Expired.as_str())
        .bind(now)
        .bind(&h.id)
        .bind(HandoffState::Pending.as_str())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if flipped == 0 {
            continue; // another caller expired it first, and wrote its event
        }
        h.state = HandoffState::Expired;
        h.decided_ms = Some(now);
        let event = NewAuditEvent::new(kinds::SESSION_HANDOFF_EXPIRED)
            .actor(noticed_by)
            .session(h.session)
            .reason(h.reason.clone())
            .details(serde_json::json!({
                "from": h.from_actor, "to": h.to_principal, "requested_by": h.requested_by,
                "requested_at": rfc3339(h.requested_ms), "expires_at": rfc3339(h.expires_ms),
            }));
        append_in(tx, chain, &event).await?;
        expired.push(h);
    }
    Ok(expired)
}

/// Cancels the pending handoff offers of `sessions` (they are ending) at `now`, inside the
/// caller's transaction, and returns them as cancelled (for their `session.handoff.cancelled`
/// events); sessions without one are no-ops.
pub(crate) async fn cancel_pending(
    tx: &mut Transaction<'static, Any>,
    sessions: &[String],
    now: UnixMillis,
) -> Result<Vec<HandoffRecord>> {
    let mut cancelled = Vec::new();
    for ids in sessions.chunks(crate::slots::IN_LIST) {
        // RETURNING: PostgreSQL, and SQLite since 3.35 (sqlx bundles a newer one).
        let sql = format!(
            "UPDATE session_handoffs SET state = $1, decided_ms = $2 WHERE state = $3 AND session_id IN ({}) \
             RETURNING {HANDOFF_COLUMNS}",
            crate::sql::placeholders_from(4, ids.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(HandoffState::Cancelled.as_str())
            .bind(now)
            .bind(HandoffState::Pending.as_str());
        for id in ids {
            q = q.bind(id);
        }
        for row in q.fetch_all(&mut **tx).await? {
            cancelled.push(handoff_from_row(&row)?);
        }
    }
    Ok(cancelled)
}

/// The `session.handoff.cancelled` event of an offer voided because its session ended; `actor`
/// is whoever ended the session, or its owner when it ended on its own.
pub(crate) fn cancelled_event(h: &HandoffRecord, actor: &str) -> NewAuditEvent {
    NewAuditEvent::new(kinds::SESSION_HANDOFF_CANCELLED)
        .actor(actor)
        .session(h.session)
        .reason(h.reason.clone())
        .details(serde_json::json!({
            "from": h.from_actor, "to": h.to_principal, "requested_by": h.requested_by,
            "requested_at": rfc3339(h.requested_ms), "why": "the session ended",
        }))
}

impl Store {
    /// Records a handoff offer, with `audit` (e.g. `session.handoff.requested`), in one
    /// transaction: the session must be live and still owned by `new.from_actor`, and no other
    /// offer for it may be pending within its window. A pending offer whose window has closed is
    /// marked `expired` first (with its event, actor `new.requested_by`), and the new offer
    /// takes its place.
    pub async fn request_handoff(
        &self,
        new: &NewHandoff,
        audit: &[NewAuditEvent],
    ) -> Result<HandoffRequestOutcome> {
        let session = new.session.to_string();
        let mut tx = self.begin_write().await?;
        let Some(owner) = lock_live_session(&mut tx, &session).await? else {
            tx.rollback().await?;
            return Ok(HandoffRequestOutcome::NotLive);
        };
        if owner != new.from_actor {
            tx.rollback().await?;
            return Ok(HandoffRequestOutcome::OwnerChanged(owner));
        }
        expire_in(
            &mut tx,
            &self.chain,
            Some(&session),
            new.requested_ms,
            &new.requested_by,
        )
        .await?;
        if let Some(pending) = pending_of(&mut tx, &session).await? {
            // Nothing was expired (there is one pending offer at most, and it is this one).
            tx.rollback().await?;
            return Ok(HandoffRequestOutcome::AlreadyPending(pending));
        }
        let id = format!(
            "hof_{}",
            wg_domain::ids::random_hex(8).map_err(|e| crate::encode_error(e.to_string()))?
        );
        let record = HandoffRecord {
            id,
            session: new.session,
            from_actor: new.from_actor.clone(),
            to_principal: new.to_principal.clone(),
            requested_by: new.requested_by.clone(),
            reason: new.reason.clone(),
            requested_ms: new.requested_ms,
            expires_ms: new.expires_ms,
            state: HandoffState::Pending,
            decided_ms: None,
            accepted_policy: None,
        };
        sqlx::query(&format!(
            "INSERT INTO session_handoffs ({HANDOFF_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&record.id)
        .bind(&session)
        .bind(&record.from_actor)
        .bind(&record.to_principal)
        .bind(&record.requested_by)
        .bind(&record.reason)
        .bind(record.requested_ms)
        .bind(record.expires_ms)
        .bind(record.state.as_str())
        .bind(record.decided_ms)
        .bind(record.accepted_policy.clone())
        .execute(&mut *tx)
        .await?;
        for event in audit {
            append_in(&mut tx, &self.chain, event).await?;
        }
        tx.commit().await?;
        Ok(HandoffRequestOutcome::Requested(record))
    }

    /// Accepts a handoff offer in one transaction: checks that the session is live, that the
    /// offer is still pending, addressed to `a.to_principal` and within its window, and that the
    /// session is still owned by the offer's `from_actor`; then moves the concurrency slots
    /// ([`SlotClaim`]s: the old owner's `actor` slot is released and the new owner's taken within
    /// its limit; likewise for the `policy` scope when the policy changes), sets the session's
    /// `actor`, `actor_groups` and `policy`, marks the offer `accepted` and appends `a.audit`.
    ///
    /// A full scope refuses the accept and changes nothing. An offer past its window is marked
    /// `expired` (one `session.handoff.expired` event, actor `a.to_principal`) and the accept is
    /// refused. Of concurrent accepts exactly one changes the owner.
    pub async fn accept_handoff(&self, a: &HandoffAcceptance) -> Result<HandoffAcceptOutcome> {
        let session = a.session.to_string();
        let mut tx = self.begin_write().await?;
        let Some(owner) = lock_live_session(&mut tx, &session).await? else {
            tx.rollback().await?;
            return Ok(HandoffAcceptOutcome::NotLive);
        };
        let offer = pending_of(&mut tx, &session)
            .await?
            .filter(|h| h.id == a.handoff_id && h.to_principal == a.to_principal);
        let Some(mut offer) = offer else {
            tx.rollback().await?;
            return Ok(HandoffAcceptOutcome::NotPending);
        };
        if offer.expires_ms <= a.now {
            let expired = expire_in(&mut tx, &self.chain, Some(&session), a.now, &a.to_principal)
                .await?
                .into_iter()
                .find(|h| h.id == offer.id);
            tx.commit().await?;
            return Ok(match expired {
                Some(h) => HandoffAcceptOutcome::Expired(h),
                None => HandoffAcceptOutcome::NotPending,
            });
        }
        if owner != offer.from_actor {
            tx.rollback().await?;
            return Ok(HandoffAcceptOutcome::NotPending);
        }
        for claim in &a.claims {
            if let Some(full) = slots::transfer(&mut tx, &session, claim).await? {
                tx.rollback().await?;
                return Ok(HandoffAcceptOutcome::SlotsFull(full));
            }
        }
        let groups = serde_json::to_string(&a.to_groups).map_err(json_error)?;
        sqlx::query("UPDATE sessions SET actor = $1, actor_groups = $2, policy = $3 WHERE id = $4")
            .bind(&a.to_principal)
            .bind(&groups)
            .bind(&a.policy)
            .bind(&session)
            .execute(&mut *tx)
            .await?;
        let accepted = sqlx::query(
            "UPDATE session_handoffs SET state = $1, decided_ms = $2, accepted_policy = $3 \
             WHERE id = $4 AND state = $5",
        )
        .bind(HandoffState::Accepted.as_str())
        .bind(a.now)
        .bind(&a.policy)
        .bind(&offer.id)
        .bind(HandoffState::Pending.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if accepted != 1 {
            // Unreachable while the session row is locked; refuse rather than guess.
            tx.rollback().await?;
            return Ok(HandoffAcceptOutcome::NotPending);
        }
        for event in &a.audit {
            append_in(&mut tx, &self.chain, event).await?;
        }
        tx.commit().await?;
        offer.state = HandoffState::Accepted;
        offer.decided_ms = Some(a.now);
        offer.accepted_policy = Some(a.policy.clone());
        Ok(HandoffAcceptOutcome::Accepted(offer))
    }

    /// Marks every pending offer (of `session`, or of all sessions) whose window closed at or
    /// before `now` as `expired`, each with one `session.handoff.expired` event whose actor is
    /// `noticed_by`. Returns the offers this call expired (each is expired exactly once, also
    /// when several callers race).
    pub async fn expire_handoffs(
        &self,
        session: Option<SessionId>,
        now: UnixMillis,
        noticed_by: &str,
    ) -> Result<Vec<HandoffRecord>> {
        let session = session.map(|s| s.to_string());
        let mut tx = self.begin_write().await?;
        let expired = expire_in(&mut tx, &self.chain, session.as_deref(), now, noticed_by).await?;
        tx.commit().await?;
        Ok(expired)
    }

    /// Offers matching `filter`, oldest first.
    pub async fn list_handoffs(&self, filter: &HandoffFilter) -> Result<Vec<HandoffRecord>> {
        let mut args = Args::default();
        let mut conds = Vec::new();
        if let Some(s) = filter.session {
            conds.push(format!("session_id = {}", args.push(s.to_string())));
        }
        if let Some(to) = &filter.to_principal {
            conds.push(format!("to_principal = {}", args.push(to.clone())));
        }
        if let Some(state) = filter.state {
            conds.push(format!("state = {}", args.push(state.as_str())));
        }
        let cond = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM session_handoffs{cond} ORDER BY requested_ms, id"
        );
        let rows = args.bind(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(handoff_from_row).collect()
    }
}
