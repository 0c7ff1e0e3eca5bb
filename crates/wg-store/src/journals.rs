//! Per-gateway event journals (`gateway_event_journals`): how far each gateway's numbered event
//! stream has been applied, so that events replayed after an outage are applied once.
//!
//! A gateway numbers the events it reports 1, 2, 3… within a journal (a random ID chosen when its
//! on-disk journal is created: a gateway whose journal was wiped starts a new one, and its
//! numbering starts again without being mistaken for a replay). `last_seq` only moves forward:
//! of two control-plane replicas handed the same batch, the later update is a no-op.

use wg_domain::audit::NewAuditEvent;
use wg_domain::time::now_millis;

use crate::chain::append_in;
use crate::{Result, Store};

/// Moves `last_seq` of (gateway, journal) to `seq` unless it is already there or beyond.
/// Returns whether it moved. `$1` gateway, `$2` journal, `$3` seq, `$4` now (ms).
const ADVANCE: &str = "INSERT INTO gateway_event_journals (gateway, journal, last_seq, updated_ms) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (gateway, journal) DO UPDATE SET last_seq = excluded.last_seq, \
     updated_ms = excluded.updated_ms \
     WHERE gateway_event_journals.last_seq < excluded.last_seq";

impl Store {
    /// The highest event sequence number applied from `gateway`'s journal `journal` (0 when
    /// none was).
    ///
    /// # Errors
    /// Database failures.
    pub async fn journal_position(&self, gateway: &str, journal: &str) -> Result<u64> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT last_seq FROM gateway_event_journals WHERE gateway = $1 AND journal = $2",
        )
        .bind(gateway)
        .bind(journal)
        .fetch_optional(&self.pool)
        .await?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }

    /// Records that the events of `gateway`'s journal up to `seq` are applied (never moves
    /// backwards).
    ///
    /// # Errors
    /// Database failures; a `seq` beyond `i64::MAX` is a corrupt request.
    pub async fn advance_journal(&self, gateway: &str, journal: &str, seq: u64) -> Result<()> {
        let seq = seq_value(seq)?;
        sqlx::query(ADVANCE)
            .bind(gateway)
            .bind(journal)
            .bind(seq)
            .bind(now_millis())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Appends `event` to the audit chain as event `seq` of `gateway`'s journal, exactly once:
    /// the journal's position moves to `seq` in the same transaction, and an event at or below
    /// the position (a replay) appends nothing. Returns whether it was appended.
    ///
    /// # Errors
    /// Database failures.
    pub async fn append_journal_audit(
        &self,
        gateway: &str,
        journal: &str,
        seq: u64,
        event: &NewAuditEvent,
    ) -> Result<bool> {
        let seq = seq_value(seq)?;
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(ADVANCE)
            .bind(gateway)
            .bind(journal)
            .bind(seq)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        append_in(&mut tx, &self.chain, event).await?;
        tx.commit().await?;
        Ok(true)
    }
}

fn seq_value(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| {
        crate::corrupt(
            "gateway_event_journals",
            format!("event sequence number {seq} is too large"),
        )
    })
}
