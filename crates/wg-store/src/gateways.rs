//! Standalone gateways (`gateways`) and their one-time join tokens (`gateway_join_tokens`).
//!
//! A gateway is known by the SHA-256 of its current certificate (issued by the control plane's
//! CA when it joined; see `wg-control`'s `ca` module): [`Store::gateway_by_certificate`].
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
    /// When its current certificate expires (`None` for a gateway that joined before mutual TLS).
    pub cert_expires_ms: Option<UnixMillis>,
    /// SHA-256 of the certificate it renewed its current one with, while that one is still
    /// accepted (until the gateway first shows the new one: see
    /// [`Store::forget_previous_certificate`]).
    pub prev_cert_sha256: Option<String>,
}

/// The certificate a gateway is issued when it joins, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayCertificate {
    /// SHA-256 of the certificate (DER), hex: the only certificate accepted from the gateway.
    pub sha256: String,
    /// When it expires.
    pub expires_ms: UnixMillis,
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
    /// When it was revoked, if it was (an unused token only).
    pub revoked_ms: Option<UnixMillis>,
}

/// The outcome of [`Store::revoke_join_token`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeTokenOutcome {
    /// The token is refused from now on (it is returned as it was before).
    Revoked(JoinTokenRecord),
    /// It was revoked before (nothing changed).
    AlreadyRevoked(JoinTokenRecord),
    /// A gateway joined with it already: revoking the token would not cut that gateway off.
    Used(JoinTokenRecord),
    /// No token has this ID.
    Unknown,
    /// More than one token starts with this ID (nothing changed).
    Ambiguous,
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
    /// The token was revoked.
    Revoked,
    /// The certificate for the new gateway could not be issued (nothing was changed).
    NotCertified(String),
}

const JOIN_TOKEN_COLUMNS: &str =
    "token_sha256, pool, created_by, created_ms, expires_ms, used_ms, used_by, revoked_ms";

fn join_token_row(r: &AnyRow) -> Result<JoinTokenRecord> {
    let c = |e| corrupt("gateway_join_tokens", e);
    Ok(JoinTokenRecord {
        token_sha256: r.try_get("token_sha256").map_err(c)?,
        pool: r.try_get("pool").map_err(c)?,
        created_by: r.try_get("created_by").map_err(c)?,
        created_ms: r.try_get("created_ms").map_err(c)?,
        expires_ms: r.try_get("expires_ms").map_err(c)?,
        used_ms: r.try_get("used_ms").map_err(c)?,
        used_by: r.try_get("used_by").map_err(c)?,
        revoked_ms: r.try_get("revoked_ms").map_err(c)?,
    })
}

const GATEWAY_COLUMNS: &str = "name, pool, address, version, joined_ms, last_seen_ms, state, cert_expires_ms, prev_cert_sha256";

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
        cert_expires_ms: r
            .try_get::<Option<i64>, _>("cert_expires_ms")
            .map_err(|e| corrupt("gateways", e))?,
        prev_cert_sha256: r
            .try_get::<Option<String>, _>("prev_cert_sha256")
            .map_err(|e| corrupt("gateways", e))?,
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
        let rows = sqlx::query(&format!(
            "SELECT {JOIN_TOKEN_COLUMNS} FROM gateway_join_tokens ORDER BY created_ms DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(join_token_row).collect()
    }

    /// Revokes the unused join token whose SHA-256 starts with `id` (the `ID` column of
    /// `wgctl gateway token list`, 12 hex digits), with the audit event `event` makes for it,
    /// in one transaction. A used token is left alone: the gateway it made is removed with
    /// `wgctl gateway remove`.
    pub async fn revoke_join_token(
        &self,
        id: &str,
        by: &str,
        now: UnixMillis,
        event: impl Fn(&JoinTokenRecord) -> NewAuditEvent,
    ) -> Result<RevokeTokenOutcome> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            // Also keeps LIKE's wildcards out of the pattern.
            return Ok(RevokeTokenOutcome::Unknown);
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT {JOIN_TOKEN_COLUMNS} FROM gateway_join_tokens WHERE token_sha256 LIKE $1"
        ))
        .bind(format!("{}%", id.to_ascii_lowercase()))
        .fetch_all(&mut *tx)
        .await?;
        let token = match rows.as_slice() {
            [] => return Ok(RevokeTokenOutcome::Unknown),
            [row] => join_token_row(row)?,
            _ => return Ok(RevokeTokenOutcome::Ambiguous),
        };
        if token.used_ms.is_some() {
            return Ok(RevokeTokenOutcome::Used(token));
        }
        if token.revoked_ms.is_some() {
            return Ok(RevokeTokenOutcome::AlreadyRevoked(token));
        }
        let changed = sqlx::query(
            "UPDATE gateway_join_tokens SET revoked_ms = $1, revoked_by = $2 \
             WHERE token_sha256 = $3 AND used_ms IS NULL AND revoked_ms IS NULL",
        )
        .bind(now)
        .bind(by)
        .bind(&token.token_sha256)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            // Redeemed or revoked by a concurrent transaction since the read (PostgreSQL).
            tx.rollback().await?;
            return Ok(RevokeTokenOutcome::Unknown);
        }
        append_in(&mut tx, &self.chain, &event(&token)).await?;
        tx.commit().await?;
        Ok(RevokeTokenOutcome::Revoked(token))
    }

    /// Redeems a join token and creates the gateway (`gw-POOL-N`), in one transaction with the
    /// audit event `event` makes for the new gateway (`gateway.joined`). `certify` issues the
    /// gateway's certificate once its name is known (inside the transaction, so that a token is
    /// never spent on a gateway without a certificate); its error aborts the join as
    /// [`JoinOutcome::NotCertified`].
    pub async fn join_gateway(
        &self,
        token_sha256: &str,
        address: &str,
        version: &str,
        now: UnixMillis,
        certify: impl FnOnce(&str) -> std::result::Result<GatewayCertificate, String> + Send,
        event: impl Fn(&GatewayRecord) -> NewAuditEvent,
    ) -> Result<JoinOutcome> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT pool, expires_ms, used_ms, revoked_ms FROM gateway_join_tokens WHERE token_sha256 = $1",
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
        let revoked_ms: Option<i64> = row.try_get("revoked_ms").map_err(c)?;
        if used_ms.is_some() {
            return Ok(JoinOutcome::Used);
        }
        if revoked_ms.is_some() {
            return Ok(JoinOutcome::Revoked);
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
             WHERE token_sha256 = $3 AND used_ms IS NULL AND revoked_ms IS NULL AND expires_ms > $1",
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
        let cert = match certify(&name) {
            Ok(c) => c,
            Err(e) => return Ok(JoinOutcome::NotCertified(e)),
        };
        sqlx::query(
            "INSERT INTO gateways (name, pool, cert_sha256, cert_expires_ms, address, version, \
             joined_ms, last_seen_ms, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 'live')",
        )
        .bind(&name)
        .bind(&pool)
        .bind(&cert.sha256)
        .bind(cert.expires_ms)
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
            cert_expires_ms: Some(cert.expires_ms),
            prev_cert_sha256: None,
        };
        append_in(&mut tx, &self.chain, &event(&record)).await?;
        tx.commit().await?;
        Ok(JoinOutcome::Joined(record))
    }

    /// The gateway whose current certificate has this SHA-256 (of its DER), whatever its state.
    pub async fn gateway_by_certificate(&self, cert_sha256: &str) -> Result<Option<GatewayRecord>> {
        // The current certificate, or the one the current one was renewed with (see
        // `renew_gateway_certificate`).
        let sql = format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE cert_sha256 = $1 OR prev_cert_sha256 = $1"
        );
        sqlx::query(&sql)
            .bind(cert_sha256)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(gateway_row)
            .transpose()
    }

    /// Renews gateway `name`'s certificate, authorised by the certificate it presented
    /// (`presented_sha256`, which must be its current or previous one): `cert` becomes the
    /// current one and the presented one the previous one (both accepted from then on), with
    /// `event`, in one transaction. Returns `false`, changing nothing, when the gateway is
    /// removed or the presented certificate is neither of its two.
    pub async fn renew_gateway_certificate(
        &self,
        name: &str,
        presented_sha256: &str,
        cert: &GatewayCertificate,
        event: &NewAuditEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let renewed = sqlx::query(
            "UPDATE gateways SET prev_cert_sha256 = $1, cert_sha256 = $2, cert_expires_ms = $3 \
             WHERE name = $4 AND state <> 'removed' \
             AND (cert_sha256 = $1 OR prev_cert_sha256 = $1)",
        )
        .bind(presented_sha256)
        .bind(&cert.sha256)
        .bind(cert.expires_ms)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if renewed != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        append_in(&mut tx, &self.chain, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stops accepting gateway `name`'s previous certificate once it has shown its current one
    /// (`current_sha256`): from then on a copy of the old key can neither log in nor renew.
    /// Returns whether there was one to forget.
    pub async fn forget_previous_certificate(
        &self,
        name: &str,
        current_sha256: &str,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE gateways SET prev_cert_sha256 = NULL \
             WHERE name = $1 AND cert_sha256 = $2 AND prev_cert_sha256 IS NOT NULL",
        )
        .bind(name)
        .bind(current_sha256)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
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
        // Two conditional updates, each atomic on its own: a removal committed meanwhile is never
        // overwritten (PostgreSQL re-checks the condition after waiting for the row), and of two
        // racing heartbeats of a returning gateway only one sees it `lost`.
        for from in ["lost", "live"] {
            let changed = sqlx::query(
                "UPDATE gateways SET last_seen_ms = $1, state = 'live', \
                 address = COALESCE($2, address), version = COALESCE($3, version) \
                 WHERE name = $4 AND state = $5",
            )
            .bind(now)
            .bind(address)
            .bind(version)
            .bind(name)
            .bind(from)
            .execute(&self.writer)
            .await?
            .rows_affected();
            if changed == 1 {
                return Ok(Some(from.to_owned()));
            }
        }
        Ok(None)
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

    /// Revokes a gateway (its certificate is refused from now on), appending `event`. Returns
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
