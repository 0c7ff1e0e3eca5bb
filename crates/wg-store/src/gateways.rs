//! Standalone gateways (`gateways`) and their one-time join tokens (`gateway_join_tokens`).
//!
//! A join token is redeemed once, in the transaction that creates the gateway's row: its
//! conditional `UPDATE … WHERE used_ms IS NULL AND expires_ms > now` lets exactly one of two
//! racing joins through, on either engine. The gateway's name is `gw-POOL-N`, N one more than
//! the pool's gateways so far (the primary key rejects a racing duplicate; the caller retries).
//! A gateway is declared lost with a compare-and-set on its last heartbeat, so that of several
//! control-plane replicas sweeping leases exactly one records the loss.

use sqlx::Row;
use sqlx::any::AnyRow;
use wg_domain::audit::NewAuditEvent;
use wg_domain::time::UnixMillis;

use crate::chain::append_in;
use crate::{Result, Store, corrupt};

/// A gateway as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRecord {
    /// Its name, e.g. `gw-us-1`.
    pub name: String,
    /// Its pool, e.g. `us`.
    pub pool: String,
    /// The address clients reach it on (`host:port`), as it last announced.
    pub address: String,
    /// Its software version, as it last announced.
    pub version: String,
    /// When it joined.
    pub joined_ms: UnixMillis,
    /// Its last heartbeat.
    pub last_seen_ms: UnixMillis,
    /// `live`, `lost` or `removed`.
    pub state: String,
}

/// A join token as stored (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// SHA-256 of the token, hex.
    pub token_sha256: String,
    /// The pool a gateway joining with it enters.
    pub pool: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_ms: UnixMillis,
    /// When it stops being accepted.
    pub expires_ms: UnixMillis,
    /// When it was redeemed, if it was.
    pub used_ms: Option<UnixMillis>,
    /// The gateway that redeemed it.
    pub used_by: Option<String>,
}

/// The outcome of [`Store::join_gateway`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The gateway exists now.
    Joined(GatewayRecord),
    /// No such token.
    Unknown,
    /// The token was redeemed already.
    Used,
    /// The token expired.
    Expired,
}

const GATEWAY_COLUMNS: &str =
    "name, pool, address, version, joined_ms, last_seen_ms, state, credential_sha256";

fn gateway_row(r: &AnyRow) -> Result<GatewayRecord> {
    let get = |c: &str| -> Result<String> {
        r.try_get::<String, _>(c)
            .map_err(|e| corrupt("gateways", e))
    };
    let num =
        |c: &str| -> Result<i64> { r.try_get::<i64, _>(c).map_err(|e| corrupt("gateways", e)) };
    Ok(GatewayRecord {
        name: get("name")?,
        pool: get("pool")?,
        address: get("address")?,
        version: get("version")?,
        joined_ms: num("joined_ms")?,
        last_seen_ms: num("last_seen_ms")?,
        state: get("state")?,
    })
}

impl Store {
    /// Stores a join token's hash with its audit event, in one transaction.
    pub async fn create_join_token(
        &self,
        token: &JoinTokenRecord,
        event: &NewAuditEvent,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO gateway_join_tokens (token_sha256, pool, created_by, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.token_sha256)
        .bind(&token.pool)
        .bind(&token.created_by)
        .bind(token.created_ms)
        .bind(token.expires_ms)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, &self.chain, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every join token, newest first.
    pub async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        let rows = sqlx::query(
            "SELECT token_sha256, pool, created_by, created_ms, expires_ms, used_ms, used_by \
             FROM gateway_join_tokens ORDER BY created_ms DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let c = |e| corrupt("gateway_join_tokens", e);
                Ok(JoinTokenRecord {
                    token_sha256: r.try_get("token_sha256").map_err(c)?,
                    pool: r.try_get("pool").map_err(c)?,
                    created_by: r.try_get("created_by").map_err(c)?,
                    created_ms: r.try_get("created_ms").map_err(c)?,
                    expires_ms: r.try_get("expires_ms").map_err(c)?,
                    used_ms: r.try_get("used_ms").map_err(c)?,
                    used_by: r.try_get("used_by").map_err(c)?,
                })
            })
            .collect()
    }

    /// Redeems a join token and creates the gateway (`gw-POOL-N`) with the credential hash, in
    /// one transaction with the audit event `event` makes for the new gateway (`gateway.joined`).
    pub async fn join_gateway(
        &self,
        token_sha256: &str,
        credential_sha256: &str,
        address: &str,
        version: &str,
        now: UnixMillis,
        event: impl Fn(&GatewayRecord) -> NewAuditEvent,
    ) -> Result<JoinOutcome> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT pool, expires_ms, used_ms FROM gateway_join_tokens WHERE token_sha256 = $1",
        )
        .bind(token_sha256)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(JoinOutcome::Unknown);
        };
        let c = |e| corrupt("gateway_join_tokens", e);
        let pool: String = row.try_get("pool").map_err(c)?;
        let expires_ms: i64 = row.try_get("expires_ms").map_err(c)?;
        let used_ms: Option<i64> = row.try_get("used_ms").map_err(c)?;
        if used_ms.is_some() {
            return Ok(JoinOutcome::Used);
        }
        if expires_ms <= now {
            return Ok(JoinOutcome::Expired);
        }
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM gateways WHERE pool = $1")
            .bind(&pool)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")
            .map_err(|e| corrupt("gateways", e))?;
        let name = format!("gw-{pool}-{}", count + 1);
        let redeemed = sqlx::query(
            "UPDATE gateway_join_tokens SET used_ms = $1, used_by = $2 \
             WHERE token_sha256 = $3 AND used_ms IS NULL AND expires_ms > $1",
        )
        .bind(now)
        .bind(&name)
        .bind(token_sha256)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if redeemed != 1 {
            return Ok(JoinOutcome::Used);
        }
        sqlx::query(
            "INSERT INTO gateways (name, pool, credential_sha256, address, version, joined_ms, \
             last_seen_ms, state) VALUES ($1, $2, $3, $4, $5, $6, $6, 'live')",
        )
        .bind(&name)
        .bind(&pool)
        .bind(credential_sha256)
        .bind(address)
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let record = GatewayRecord {
            name,
            pool,
            address: address.to_owned(),
            version: version.to_owned(),
            joined_ms: now,
            last_seen_ms: now,
            state: "live".into(),
        };
        append_in(&mut tx, &self.chain, &event(&record)).await?;
        tx.commit().await?;
        Ok(JoinOutcome::Joined(record))
    }

    /// The gateway holding a credential (by its SHA-256), whatever its state.
    pub async fn gateway_by_credential(
        &self,
        credential_sha256: &str,
    ) -> Result<Option<GatewayRecord>> {
        let sql = format!("SELECT {GATEWAY_COLUMNS} FROM gateways WHERE credential_sha256 = $1");
        sqlx::query(&sql)
            .bind(credential_sha256)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(gateway_row)
            .transpose()
    }

    /// A gateway by name.
    pub async fn get_gateway(&self, name: &str) -> Result<Option<GatewayRecord>> {
        let sql = format!("SELECT {GATEWAY_COLUMNS} FROM gateways WHERE name = $1");
        sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(gateway_row)
            .transpose()
    }

    /// Every gateway, by name.
    pub async fn list_gateways(&self) -> Result<Vec<GatewayRecord>> {
        let sql = format!("SELECT {GATEWAY_COLUMNS} FROM gateways ORDER BY name");
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(gateway_row)
            .collect()
    }

    /// Records a heartbeat (and the announced address and version) of a gateway that is not
    /// removed; a lost gateway becomes live again. Returns the state it had, `None` when it is
    /// unknown or removed.
    pub async fn touch_gateway(
        &self,
        name: &str,
        address: Option<&str>,
        version: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<String>> {
        let mut tx = self.begin_write().await?;
        let prev: Option<String> =
            sqlx::query("SELECT state FROM gateways WHERE name = $1 AND state <> 'removed'")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("state"))
                .transpose()
                .map_err(|e| corrupt("gateways", e))?;
        if prev.is_none() {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE gateways SET last_seen_ms = $1, state = 'live', \
             address = COALESCE($2, address), version = COALESCE($3, version) WHERE name = $4",
        )
        .bind(now)
        .bind(address)
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(prev)
    }

    /// Declares a live gateway lost if its last heartbeat is still `seen_ms` (compare and set:
    /// exactly one of several sweepers wins), appending `event` in the same transaction.
    pub async fn mark_gateway_lost(
        &self,
        name: &str,
        seen_ms: UnixMillis,
        event: &NewAuditEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE gateways SET state = 'lost' WHERE name = $1 AND state = 'live' AND last_seen_ms = $2",
        )
        .bind(name)
        .bind(seen_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        append_in(&mut tx, &self.chain, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes a gateway (its credential is refused from now on), appending `event`. Returns
    /// `false` when there is no such gateway or it was removed already.
    pub async fn remove_gateway(&self, name: &str, event: &NewAuditEvent) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE gateways SET state = 'removed' WHERE name = $1 AND state <> 'removed'",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        append_in(&mut tx, &self.chain, event).await?;
        tx.commit().await?;
        Ok(true)
    }
}
