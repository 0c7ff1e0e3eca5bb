//! The audit hash chain in the database: appends inside the caller's transaction, serialised by
//! the single `audit_head` row.

use sqlx::{AnyConnection, Row};
use wg_domain::audit::{AuditEvent, ChainHasher, NewAuditEvent};
use wg_domain::time::now_millis;

use crate::sql::Args;
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

/// Appends one event inside the caller's transaction (see [`append_many`]).
pub(crate) async fn append_in(
    conn: &mut AnyConnection,
    hasher: &ChainHasher,
    event: &NewAuditEvent,
) -> Result<AuditEvent> {
    append_many(conn, hasher, std::slice::from_ref(event))
        .await?
        .pop()
        .ok_or_else(|| corrupt("audit_head", "an append stored no event"))
}

/// Rows per INSERT statement of [`append_many`]: 9 parameters each, far below SQLite's 32,766
/// and PostgreSQL's 65,535 bound parameters.
const INSERT_ROWS: usize = 200;

/// Appends `events`, in order, inside the caller's transaction; returns them as stored (with
/// their sequence numbers and hashes). Nothing is written for an empty slice.
///
/// The chain head is taken once for the whole batch: `seq` moves forward by `events.len()` in one
/// UPDATE, which takes the head row's write lock (PostgreSQL) or runs under the database writer
/// lock (SQLite), so concurrent appenders, in this process or another, queue there and each
/// sees the hash its predecessor committed. The hashes are then chained in memory, the rows go
/// in multi-row INSERTs, and the head's hash is set to the last one: a thousand events of a mass
/// termination cost a handful of statements instead of three each.
pub(crate) async fn append_many(
    conn: &mut AnyConnection,
    hasher: &ChainHasher,
    events: &[NewAuditEvent],
) -> Result<Vec<AuditEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = i64::try_from(events.len()).map_err(|_| corrupt("audit_head", "batch too large"))?;
    let mut details = Vec::with_capacity(events.len());
    for e in events {
        details.push(serde_json::to_string(&e.details).map_err(json_error)?);
    }
    let head = sqlx::query("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash")
        .bind(n)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| corrupt("audit_head", "the chain head row is missing"))?;
    let last_seq: i64 = head.try_get("seq")?;
    let mut prev: String = head.try_get("hash")?;
    let time_ms = now_millis();
    let mut stored = Vec::with_capacity(events.len());
    for (i, (event, details_json)) in events.iter().zip(details).enumerate() {
        // i < n, so this neither overflows nor goes below the head's old value.
        let seq = last_seq - n + 1 + i as i64;
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
        let row = AuditEvent {
            seq,
            time_ms,
            kind: event.kind.clone(),
            actor: event.actor.clone(),
            session: event.session.clone(),
            reason: event.reason.clone(),
            details_json,
            prev,
            hash: hash.clone(),
        };
        prev = hash;
        stored.push(row);
    }
    for rows in stored.chunks(INSERT_ROWS) {
        let mut args = Args::default();
        let values: Vec<String> = rows
            .iter()
            .map(|e| {
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {})",
                    args.push(e.seq),
                    args.push(e.time_ms),
                    args.push(e.kind.as_str()),
                    args.push(e.actor.clone()),
                    args.push(e.session.clone()),
                    args.push(e.reason.clone()),
                    args.push(e.details_json.as_str()),
                    args.push(e.prev.as_str()),
                    args.push(e.hash.as_str()),
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_events (seq, time_ms, kind, actor, session, reason, details_json, prev, hash) VALUES {}",
            values.join(", ")
        );
        args.bind(&sql).execute(&mut *conn).await?;
    }
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&prev)
        .execute(&mut *conn)
        .await?;
    Ok(stored)
}
