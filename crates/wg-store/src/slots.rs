//! Concurrency slots: one counter row per `(scope, key)` (e.g. `("actor", "alice@corp")`).
//!
//! A slot is taken with a conditional `UPDATE … SET used = used + 1 WHERE used < limit` inside the
//! transaction that approves the session: on PostgreSQL the row lock serialises concurrent takers
//! across processes and the condition is re-checked after a competitor commits; on SQLite the
//! writer lock does the same. Scopes are always taken in the same order, so two transactions never
//! wait on each other's counters in opposite orders. Which slots a session holds is kept in
//! `session_slots`, so the release (in the transaction that moves the session to closing or
//! closed) happens exactly once. An accepted handoff moves a live session's slot from the previous
//! owner to the new one ([`transfer`]) in the accepting transaction.

use sqlx::{Any, Transaction};

use crate::Result;
use crate::sql::placeholders;

/// One scope's claim on a concurrency slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotClaim {
    /// `actor`, `target`, `policy` or `gateway`.
    pub scope: String,
    /// The actor, target, policy or gateway name.
    pub key: String,
    /// The limit; `None` counts without limiting.
    pub limit: Option<u32>,
}

/// A scope whose limit is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotsFull {
    /// The offending scope.
    pub scope: String,
    /// Its key.
    pub key: String,
    /// The limit reached.
    pub limit: u32,
}

/// Current use of one scope key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotUsage {
    /// Scope.
    pub scope: String,
    /// Key.
    pub key: String,
    /// Live sessions holding a slot.
    pub used: i64,
}

/// Locks the counter rows of `keys` (scope, key) in sorted order — the one order every
/// transaction that touches several counters follows, so that two of them on PostgreSQL never
/// wait for each other in a cycle (SQLite serialises writers anyway).
async fn lock_counters(
    tx: &mut Transaction<'static, Any>,
    mut keys: Vec<(String, String)>,
) -> Result<()> {
    keys.sort();
    keys.dedup();
    for (scope, key) in keys {
        sqlx::query("UPDATE slot_counters SET used = used WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Takes one slot per claim, in order; stops at the first full scope (the caller rolls back).
pub(crate) async fn take(
    tx: &mut Transaction<'static, Any>,
    session: &str,
    claims: &[SlotClaim],
) -> Result<Option<SlotsFull>> {
    for c in claims {
        sqlx::query(
            "INSERT INTO slot_counters (scope, key, used) VALUES ($1, $2, 0) \
             ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(&c.scope)
        .bind(&c.key)
        .execute(&mut **tx)
        .await?;
    }
    lock_counters(
        tx,
        claims
            .iter()
            .map(|c| (c.scope.clone(), c.key.clone()))
            .collect(),
    )
    .await?;
    for c in claims {
        let limit = c.limit.map_or(i64::MAX, i64::from);
        let taken = sqlx::query(
            "UPDATE slot_counters SET used = used + 1 WHERE scope = $1 AND key = $2 AND used < $3",
        )
        .bind(&c.scope)
        .bind(&c.key)
        .bind(limit)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if taken == 0 {
            return Ok(Some(SlotsFull {
                scope: c.scope.clone(),
                key: c.key.clone(),
                limit: c.limit.unwrap_or(0),
            }));
        }
        sqlx::query("INSERT INTO session_slots (session_id, scope, key) VALUES ($1, $2, $3)")
            .bind(session)
            .bind(&c.scope)
            .bind(&c.key)
            .execute(&mut **tx)
            .await?;
    }
    Ok(None)
}

/// Frees every slot the `sessions` hold (they are ending), inside the caller's transaction.
/// Each counter is decremented once by the number of slots the batch holds under it, the
/// counters in the sorted order of `lock_counters` (a single UPDATE over several rows would
/// lock them in the table's physical order); then the slot rows go. Sessions holding none are
/// no-ops.
pub(crate) async fn release(tx: &mut Transaction<'static, Any>, sessions: &[String]) -> Result<()> {
    let mut held: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for ids in sessions.chunks(IN_LIST) {
        let sql = format!(
            "SELECT scope, key, COUNT(*) AS n FROM session_slots WHERE session_id IN ({}) \
             GROUP BY scope, key",
            placeholders(ids.len())
        );
        let mut q = sqlx::query_as::<_, (String, String, i64)>(&sql);
        for id in ids {
            q = q.bind(id);
        }
        for (scope, key, n) in q.fetch_all(&mut **tx).await? {
            *held.entry((scope, key)).or_default() += n;
        }
    }
    // Sorted over the whole batch, not per IN list: one order for every transaction.
    for ((scope, key), n) in held {
        sqlx::query("UPDATE slot_counters SET used = used - $1 WHERE scope = $2 AND key = $3")
            .bind(n)
            .bind(scope)
            .bind(key)
            .execute(&mut **tx)
            .await?;
    }
    for ids in sessions.chunks(IN_LIST) {
        let sql = format!(
            "DELETE FROM session_slots WHERE session_id IN ({})",
            placeholders(ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Session IDs per `IN (…)` list: well below both engines' bound-parameter limits.
pub(crate) const IN_LIST: usize = 500;

/// Moves the slot `session` holds in `claim.scope` to `claim.key` (e.g. the `actor` slot from the
/// previous owner to the new one): releases the slot held in that scope, if any, and takes one
/// under `claim.key` within `claim.limit`. Nothing moves when the session already holds its slot
/// under `claim.key`. Returns the full scope when the new key is at its limit (the caller rolls
/// back, so the old slot stays taken).
///
/// Both counter rows are locked first, in key order, so that two transfers in opposite
/// directions (alice → dan and dan → alice at once) cannot deadlock on PostgreSQL.
pub(crate) async fn transfer(
    tx: &mut Transaction<'static, Any>,
    session: &str,
    claim: &SlotClaim,
) -> Result<Option<SlotsFull>> {
    let held: Option<String> =
        sqlx::query("SELECT key FROM session_slots WHERE session_id = $1 AND scope = $2")
            .bind(session)
            .bind(&claim.scope)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| sqlx::Row::try_get(&row, "key"))
            .transpose()?;
    if held.as_deref() == Some(claim.key.as_str()) {
        return Ok(None);
    }
    let mut keys: Vec<&str> = held.iter().map(String::as_str).collect();
    keys.push(&claim.key);
    keys.sort_unstable();
    for key in keys {
        sqlx::query(
            "INSERT INTO slot_counters (scope, key, used) VALUES ($1, $2, 0) \
             ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(&claim.scope)
        .bind(key)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE slot_counters SET used = used WHERE scope = $1 AND key = $2")
            .bind(&claim.scope)
            .bind(key)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(old) = &held {
        sqlx::query("UPDATE slot_counters SET used = used - 1 WHERE scope = $1 AND key = $2")
            .bind(&claim.scope)
            .bind(old)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM session_slots WHERE session_id = $1 AND scope = $2")
            .bind(session)
            .bind(&claim.scope)
            .execute(&mut **tx)
            .await?;
    }
    take(tx, session, std::slice::from_ref(claim)).await
}
