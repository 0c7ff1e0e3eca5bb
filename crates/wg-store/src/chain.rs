//! The audit hash chain in the database: appends inside the caller's transaction, serialised by
//! the single `audit_head` row.

use sqlx::{AnyConnection, Row};
use wg_domain::audit::{AuditEvent, ChainHasher, NewAuditEvent};
use wg_domain::time::now_millis;

use crate::{Result, corrupt, json_error};

/// Takes the chain-head row lock without changing it.
///
/// Lock order: transactions that change resources take the head first (serialising concurrent
/// applies, which read then write); every other writer takes it last, when appending. No writer
/// that takes the head last touches resource rows, so the two orders cannot deadlock.
pub(crate) async fn lock_chain_head(conn: &mut AnyConnection) -> Result<()> {
    sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one event inside the caller's transaction.
///
/// The head update takes the head row's write lock (PostgreSQL) or runs under the database
/// writer lock (SQLite), so concurrent appenders, in this process or another, queue here and each
/// sees the hash its predecessor committed.
pub(crate) async fn append_in(
    conn: &mut AnyConnection,
    hasher: &ChainHasher,
    event: &NewAuditEvent,
) -> Result<AuditEvent> {
    let details_json = serde_json::to_string(&event.details).map_err(json_error)?;
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| corrupt("audit_head", "the chain head row is missing"))?;
    let seq: i64 = head.try_get("seq")?;
    let prev: String = head.try_get("hash")?;
    let time_ms = now_millis();
    let hash = hasher.hash(
        seq,
        time_ms,
        &event.kind,
        event.actor.as_deref(),
        event.session.as_deref(),
        event.reason.as_deref(),
        &details_json,
        &prev,
    );
    let stored = AuditEvent {
        seq,
        time_ms,
        kind: event.kind.clone(),
        actor: event.actor.clone(),
        session: event.session.clone(),
        reason: event.reason.clone(),
        details_json,
        prev,
        hash,
    };
    sqlx::query(
        "INSERT INTO audit_events (seq, time_ms, kind, actor, session, reason, details_json, prev, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(stored.seq)
    .bind(stored.time_ms)
    .bind(&stored.kind)
    .bind(&stored.actor)
    .bind(&stored.session)
    .bind(&stored.reason)
    .bind(&stored.details_json)
    .bind(&stored.prev)
    .bind(&stored.hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&stored.hash)
        .execute(&mut *conn)
        .await?;
    Ok(stored)
}
