//! The Wardengate store: SQLite (embedded, the default) and PostgreSQL (for several control-plane
//! replicas) behind one interface, [`Store`], with versioned migrations applied on connect.
//!
//! Built on sqlx's `Any` driver so that one set of queries serves both engines; the only
//! per-engine code is the DDL in `migrations/{sqlite,postgres}` and connection set-up.
//! Times are `i64` milliseconds since the Unix epoch; JSON documents are stored as text.
//!
//! Invariants:
//! - A session changes state only through [`Store::transition_session`], a compare-and-set on the
//!   state the caller saw, validated by [`wg_domain::SessionState::check_transition`].
//! - Audit appends are serialised in the database (a single chain-head row updated inside the
//!   appending transaction), never in one process's memory, so several replicas extend one chain.
//! - Multi-row changes (apply, transition + audit event, handoff acceptance + slot transfer)
//!   commit together or not at all.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod ca;
mod chain;
mod connect;
mod gateways;
mod handoffs;
mod journals;
mod migrate;
mod rows;
mod slots;
mod sql;

pub use ca::StoredCa;
pub use gateways::{
    GatewayCertificate, GatewayRecord, JoinOutcome, JoinTokenRecord, RevokeTokenOutcome,
};
pub use handoffs::{
    HandoffAcceptOutcome, HandoffAcceptance, HandoffFilter, HandoffRecord, HandoffRequestOutcome,
    NewHandoff,
};
pub use rows::SESSION_COLUMNS;
pub use slots::{SlotClaim, SlotUsage, SlotsFull};

use std::collections::BTreeMap;

use sqlx::{Any, AnyPool, Row, Transaction};
use wg_domain::SessionId;
use wg_domain::api::AppliedResource;
use wg_domain::audit::{AuditEvent, NewAuditEvent, kinds};
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::resources::{Kind, Resource};
use wg_domain::time::{UnixMillis, now_millis};

use crate::chain::{append_in, lock_chain_head};
use crate::connect::Engine;
use crate::rows::{
    AUDIT_COLUMNS, audit_from_row, patch_assignments, resource_from_spec, secret_from_row,
    session_args, session_from_row,
};
use crate::sql::{Args, placeholders};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration {version} failed: {message}")]
    Migration {
        /// Migration version.
        version: i64,
        /// What failed.
        message: String,
    },
    /// Stored data could not be decoded (a bug or manual tampering).
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The URL names an engine other than sqlite or postgres.
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// An illegal session transition was asked for.
    #[error(transparent)]
    IllegalTransition(#[from] wg_domain::lifecycle::IllegalTransition),
}

impl StoreError {
    /// Whether the database refused a row because a unique constraint or primary key already
    /// holds its value (a racing insert won).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The persisted record of a session (one row of `sessions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session ID (primary key).
    pub id: SessionId,
    /// Lifecycle state; changed only by [`Store::transition_session`].
    pub state: SessionState,
    /// The owning actor (user or service principal name).
    pub actor: String,
    /// The actor's groups at decision time.
    pub actor_groups: Vec<String>,
    /// Target name.
    pub target: String,
    /// The target's tags when the session was requested (`--target-tag` selects on these as
    /// well as on the target's current tags).
    pub target_tags: BTreeMap<String, String>,
    /// Target address `host:port`.
    pub target_address: String,
    /// `ssh`, `pg` or `rdp`.
    pub protocol: String,
    /// The injected account, once decided.
    pub account: Option<String>,
    /// The vault path of the account's credential.
    pub vault_path: Option<String>,
    /// The admitting policy.
    pub policy: Option<String>,
    /// The MFA method used, if any.
    pub mfa: Option<String>,
    /// Name of the owning gateway.
    pub gateway: String,
    /// Address of the owning gateway.
    pub gateway_address: Option<String>,
    /// Client IP address.
    pub client_ip: Option<String>,
    /// Client geolocation (`City, CC`).
    pub client_geo: Option<String>,
    /// Client software (SSH ident, libpq application name).
    pub client_software: Option<String>,
    /// PTY `TERM`, if a PTY was requested.
    pub pty_term: Option<String>,
    /// PTY columns.
    pub pty_cols: Option<u32>,
    /// PTY rows.
    pub pty_rows: Option<u32>,
    /// `full`, `metadata`, `off`.
    pub recording_mode: String,
    /// Recording chunks written so far.
    pub recording_chunks: u32,
    /// Recording stream bytes written so far.
    pub recording_bytes: u64,
    /// `none`, `recording`, `sealed`, `partial`.
    pub recording_status: String,
    /// The recording's seal (hex SHA-256), once sealed.
    pub recording_sha256: Option<String>,
    /// When the session was requested.
    pub created_ms: UnixMillis,
    /// When the target leg was established.
    pub opened_ms: Option<UnixMillis>,
    /// The last meaningful user input (initially the creation time).
    pub last_input_ms: UnixMillis,
    /// When the session closed.
    pub ended_ms: Option<UnixMillis>,
    /// Why the session closed.
    pub end_reason: Option<EndReason>,
    /// The reason text of a termination or denial.
    pub end_detail: Option<String>,
    /// Exit status of the remote command, when there was one.
    pub exit_status: Option<i32>,
}

/// Fields to change alongside a transition or a progress update; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionPatch {
    /// Sets the injected account.
    pub account: Option<String>,
    /// Sets the credential's vault path.
    pub vault_path: Option<String>,
    /// Sets the admitting policy.
    pub policy: Option<String>,
    /// Sets the recording mode.
    pub recording_mode: Option<String>,
    /// Sets the PTY `TERM`.
    pub pty_term: Option<String>,
    /// Sets the PTY columns.
    pub pty_cols: Option<u32>,
    /// Sets the PTY rows.
    pub pty_rows: Option<u32>,
    /// Sets the number of recording chunks.
    pub recording_chunks: Option<u32>,
    /// Sets the number of recording bytes.
    pub recording_bytes: Option<u64>,
    /// Sets the recording status.
    pub recording_status: Option<String>,
    /// Sets the recording seal.
    pub recording_sha256: Option<String>,
    /// Sets when the target leg was established.
    pub opened_ms: Option<UnixMillis>,
    /// Sets the last meaningful input time.
    pub last_input_ms: Option<UnixMillis>,
    /// Sets when the session ended.
    pub ended_ms: Option<UnixMillis>,
    /// Sets why the session ended.
    pub end_reason: Option<EndReason>,
    /// Sets the termination or denial reason text.
    pub end_detail: Option<String>,
    /// Sets the remote command's exit status.
    pub exit_status: Option<i32>,
}

impl SessionPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &SessionPatch::default()
    }

    /// Applies the patch to a record in memory, as the UPDATE of a transition applies it to the
    /// row (set fields replace, unset ones stay): for a caller planning several transitions of
    /// one session in one batch, whose later steps depend on the earlier steps' fields.
    pub fn apply_to(&self, rec: &mut SessionRecord) {
        // Destructured, so that a new field cannot be forgotten here.
        let SessionPatch {
            account,
            vault_path,
            policy,
            recording_mode,
            pty_term,
            pty_cols,
            pty_rows,
            recording_chunks,
            recording_bytes,
            recording_status,
            recording_sha256,
            opened_ms,
            last_input_ms,
            ended_ms,
            end_reason,
            end_detail,
            exit_status,
        } = self.clone();
        fn set<T>(field: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *field = v;
            }
        }
        fn set_opt<T>(field: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *field = v;
            }
        }
        set_opt(&mut rec.account, account);
        set_opt(&mut rec.vault_path, vault_path);
        set_opt(&mut rec.policy, policy);
        set(&mut rec.recording_mode, recording_mode);
        set_opt(&mut rec.pty_term, pty_term);
        set_opt(&mut rec.pty_cols, pty_cols);
        set_opt(&mut rec.pty_rows, pty_rows);
        set(&mut rec.recording_chunks, recording_chunks);
        set(&mut rec.recording_bytes, recording_bytes);
        set(&mut rec.recording_status, recording_status);
        set_opt(&mut rec.recording_sha256, recording_sha256);
        set_opt(&mut rec.opened_ms, opened_ms);
        set(&mut rec.last_input_ms, last_input_ms);
        set_opt(&mut rec.ended_ms, ended_ms);
        set_opt(&mut rec.end_reason, end_reason);
        set_opt(&mut rec.end_detail, end_detail);
        set_opt(&mut rec.exit_status, exit_status);
    }
}

/// One move of [`Store::transition_sessions`].
#[derive(Clone, Debug)]
pub struct Transition {
    /// The session.
    pub id: SessionId,
    /// The state it must still be in.
    pub from: SessionState,
    /// The state it moves to.
    pub to: SessionState,
    /// Fields changed with it.
    pub patch: SessionPatch,
    /// Audit events appended with it, in order.
    pub audit: Vec<NewAuditEvent>,
}

/// Filters of [`Store::list_sessions`]; all given filters must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Exact states; empty means "every state but closed".
    pub states: Vec<SessionState>,
    /// Only sessions of this actor.
    pub actor: Option<String>,
    /// Only sessions to this target (by name).
    pub target: Option<String>,
    /// Only sessions of this protocol (`ssh`, `pg`, `rdp`).
    pub protocol: Option<String>,
    /// Only sessions owned by this gateway.
    pub gateway: Option<String>,
    /// Only sessions whose `last_input_ms` is older than this instant.
    pub last_input_before_ms: Option<UnixMillis>,
    /// At most this many rows (newest first); `None` = 1000.
    pub limit: Option<u32>,
    /// Keyset paging: only sessions listed after this one, given as its `(created_ms, id)` (the
    /// last row of the previous page).
    pub after: Option<(UnixMillis, String)>,
}

/// Filters of [`Store::list_audit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events concerning this session ID.
    pub session: Option<String>,
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Only events with `seq` greater than this (paging).
    pub after_seq: Option<i64>,
    /// At most this many events in `seq` order; `None` = 10 000.
    pub limit: Option<u32>,
}

/// An encrypted vault entry as stored (the store never sees plaintext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSecret {
    /// Vault path, e.g. `vault/ssh/deploy-prod` (primary key).
    pub path: String,
    /// `password` or `private_key`.
    pub kind: String,
    /// AEAD nonce.
    pub nonce: Vec<u8>,
    /// AEAD ciphertext with tag.
    pub ciphertext: Vec<u8>,
    /// When the entry was last written.
    pub updated_ms: UnixMillis,
}

/// An API token as stored: only the SHA-256 of the token, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: String,
    /// The principal the token acts as (e.g. `admin@local`).
    pub principal: String,
    /// When the token was created.
    pub created_ms: UnixMillis,
}

/// Defaults of the list limits.
const DEFAULT_SESSION_LIMIT: u32 = 1000;
const DEFAULT_AUDIT_LIMIT: u32 = 10_000;

/// A [`StoreError::Corrupt`] for `table`.
pub(crate) fn corrupt(table: &'static str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        message: message.to_string(),
    }
}

/// A value that cannot be written (out of the column's range, unserialisable).
pub(crate) fn encode_error(message: impl Into<String>) -> StoreError {
    StoreError::Database(sqlx::Error::Encode(message.into().into()))
}

/// A JSON document that cannot be written.
pub(crate) fn json_error(e: serde_json::Error) -> StoreError {
    encode_error(e.to_string())
}

/// The store handle: cheap to clone (a connection pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads.
    pool: AnyPool,
    /// Writes: on SQLite one connection, so that writers queue here in order (see
    /// `connect::open_sqlite`); on PostgreSQL the same pool as `pool`.
    writer: AnyPool,
    engine: Engine,
    chain: std::sync::Arc<wg_domain::audit::ChainHasher>,
}

impl Store {
    /// Connects to `sqlite://PATH` (created if missing, WAL mode) or `postgres://…`, and applies
    /// pending migrations (under an advisory lock on PostgreSQL, so replicas may start together).
    pub async fn connect(url: &str) -> Result<Store> {
        let (pools, engine) = connect::open(url).await?;
        Ok(Store {
            pool: pools.reader,
            writer: pools.writer,
            engine,
            chain: std::sync::Arc::new(wg_domain::audit::ChainHasher::Plain),
        })
    }

    /// The same store, appending audit events hashed with `hasher` (e.g. keyed with
    /// [`wg_domain::audit::ChainHasher::keyed`]). Every process writing one database must use
    /// the same hasher.
    pub fn with_chain_hasher(mut self, hasher: wg_domain::audit::ChainHasher) -> Store {
        self.chain = std::sync::Arc::new(hasher);
        self
    }

    /// The hasher audit events are appended with.
    pub fn chain_hasher(&self) -> &wg_domain::audit::ChainHasher {
        &self.chain
    }

    /// `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        self.engine.name()
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Starts a writing transaction. On SQLite it takes the writer lock at once (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before writing cannot deadlock with another.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.engine {
            Engine::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.writer.begin().await?,
        })
    }

    // ---- resources ----

    /// Upserts every resource in one transaction and appends one `policy.applied` audit event
    /// (actor = `actor`, details = the list of kinds/names/actions) in the same transaction.
    /// Returns `created`, `configured` or `unchanged` per resource, in input order.
    pub async fn apply_resources(
        &self,
        resources: &[Resource],
        actor: &str,
    ) -> Result<Vec<AppliedResource>> {
        let mut tx = self.begin_write().await?;
        lock_chain_head(&mut tx).await?;
        let now = now_millis();
        let mut applied = Vec::with_capacity(resources.len());
        for r in resources {
            let kind = r.kind().as_str();
            let name = r.name();
            let spec = serde_json::to_string(r).map_err(json_error)?;
            let existing: Option<String> =
                sqlx::query("SELECT spec FROM resources WHERE kind = $1 AND name = $2")
                    .bind(kind)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get("spec"))
                    .transpose()?;
            let action = match existing {
                None => {
                    sqlx::query(
                        "INSERT INTO resources (kind, name, spec, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $4)",
                    )
                    .bind(kind)
                    .bind(name)
                    .bind(&spec)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    "created"
                }
                // Compared as values, so that a stored spec written by an older build (fields in
                // another order, defaults spelled out or not) counts as unchanged when it is.
                Some(old) if serde_json::from_str::<Resource>(&old).is_ok_and(|old| &old == r) => {
                    "unchanged"
                }
                Some(_) => {
                    sqlx::query("UPDATE resources SET spec = $1, updated_ms = $2 WHERE kind = $3 AND name = $4")
                        .bind(&spec)
                        .bind(now)
                        .bind(kind)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    "configured"
                }
            };
            applied.push(AppliedResource {
                kind: kind.to_owned(),
                name: name.to_owned(),
                action: action.to_owned(),
            });
        }
        let event = NewAuditEvent::new(kinds::POLICY_APPLIED)
            .actor(actor)
            .details(serde_json::json!({ "resources": applied }));
        append_in(&mut tx, &self.chain, &event).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// One resource by kind and name.
    pub async fn get_resource(&self, kind: Kind, name: &str) -> Result<Option<Resource>> {
        let row = sqlx::query("SELECT spec FROM resources WHERE kind = $1 AND name = $2")
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let spec: String = row.try_get("spec")?;
                resource_from_spec(&spec, kind, name).map(Some)
            }
        }
    }

    /// Every resource of a kind, ordered by name.
    pub async fn list_resources(&self, kind: Kind) -> Result<Vec<Resource>> {
        let rows = sqlx::query("SELECT name, spec FROM resources WHERE kind = $1")
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get("name")?;
            let spec: String = row.try_get("spec")?;
            out.push(resource_from_spec(&spec, kind, &name)?);
        }
        // Sorted here (byte order) rather than by the database, whose collation differs by engine.
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }

    /// Deletes a resource and appends a `resource.deleted` audit event in the same transaction.
    /// Returns whether it existed (nothing is appended when it did not).
    pub async fn delete_resource(&self, kind: Kind, name: &str, actor: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        lock_chain_head(&mut tx).await?;
        let deleted = sqlx::query("DELETE FROM resources WHERE kind = $1 AND name = $2")
            .bind(kind.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let event = NewAuditEvent::new(kinds::RESOURCE_DELETED)
            .actor(actor)
            .details(serde_json::json!({ "resources": [{ "kind": kind.as_str(), "name": name }] }));
        append_in(&mut tx, &self.chain, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- vault ----

    /// Inserts or replaces an encrypted secret and appends a `vault.written` audit event
    /// (path and kind only) in the same transaction.
    pub async fn put_secret(&self, secret: &SealedSecret, actor: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO vault_secrets (path, kind, nonce, ciphertext, updated_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (path) DO UPDATE SET kind = excluded.kind, nonce = excluded.nonce, \
             ciphertext = excluded.ciphertext, updated_ms = excluded.updated_ms",
        )
        .bind(&secret.path)
        .bind(&secret.kind)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .bind(secret.updated_ms)
        .execute(&mut *tx)
        .await?;
        let event = NewAuditEvent::new(kinds::VAULT_WRITTEN)
            .actor(actor)
            .details(serde_json::json!({ "path": secret.path, "kind": secret.kind }));
        append_in(&mut tx, &self.chain, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One encrypted secret.
    pub async fn get_secret(&self, path: &str) -> Result<Option<SealedSecret>> {
        sqlx::query(
            "SELECT path, kind, nonce, ciphertext, updated_ms FROM vault_secrets WHERE path = $1",
        )
        .bind(path)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| secret_from_row(&row))
        .transpose()
    }

    /// Every secret's metadata (ciphertext included; callers must not expose it), ordered by path.
    pub async fn list_secrets(&self) -> Result<Vec<SealedSecret>> {
        let rows =
            sqlx::query("SELECT path, kind, nonce, ciphertext, updated_ms FROM vault_secrets")
                .fetch_all(&self.pool)
                .await?;
        let mut out = rows
            .iter()
            .map(secret_from_row)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    // ---- API tokens ----

    /// Stores a token hash for a principal (replacing the record of the same hash, if any).
    pub async fn put_token(&self, token: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (token_sha256, principal, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (token_sha256) DO UPDATE SET principal = excluded.principal, created_ms = excluded.created_ms",
        )
        .bind(&token.token_sha256)
        .bind(&token.principal)
        .bind(token.created_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Stores a new token hash for a principal and appends a `token.created` event (actor =
    /// `actor`, details = the principal; never the token or its hash), in one transaction.
    pub async fn issue_token(&self, token: &TokenRecord, actor: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_tokens (token_sha256, principal, created_ms) VALUES ($1, $2, $3)",
        )
        .bind(&token.token_sha256)
        .bind(&token.principal)
        .bind(token.created_ms)
        .execute(&mut *tx)
        .await?;
        let event = NewAuditEvent::new(kinds::TOKEN_CREATED)
            .actor(actor)
            .details(serde_json::json!({ "principal": token.principal }));
        append_in(&mut tx, &self.chain, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Looks a token up by its hash.
    pub async fn get_token(&self, token_sha256: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT token_sha256, principal, created_ms FROM api_tokens WHERE token_sha256 = $1",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(TokenRecord {
                token_sha256: row.try_get("token_sha256")?,
                principal: row.try_get("principal")?,
                created_ms: row.try_get("created_ms")?,
            })
        })
        .transpose()
    }

    // ---- sessions ----

    /// Inserts a new session record, with an optional audit event in the same transaction.
    pub async fn insert_session(
        &self,
        record: &SessionRecord,
        audit: Option<&NewAuditEvent>,
    ) -> Result<()> {
        let args = session_args(record)?;
        let sql = format!(
            "INSERT INTO sessions ({}) VALUES ({})",
            SESSION_COLUMNS.join(", "),
            placeholders(SESSION_COLUMNS.len())
        );
        let mut tx = self.begin_write().await?;
        args.bind(&sql).execute(&mut *tx).await?;
        if let Some(event) = audit {
            append_in(&mut tx, &self.chain, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One session.
    pub async fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE id = $1",
            SESSION_COLUMNS.join(", ")
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| session_from_row(&row))
            .transpose()
    }

    /// The sessions among `ids` that exist, in no particular order (unknown IDs are left out).
    pub async fn get_sessions(&self, ids: &[SessionId]) -> Result<Vec<SessionRecord>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(slots::IN_LIST) {
            let sql = format!(
                "SELECT {} FROM sessions WHERE id IN ({})",
                SESSION_COLUMNS.join(", "),
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(session_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Sessions matching `filter`, newest first.
    pub async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRecord>> {
        let mut args = Args::default();
        let mut conds = Vec::new();
        // A literal, not a bound parameter: it must match the predicate of the partial indexes
        // over live sessions (migration 5), which SQLite compares with literal terms only and a
        // PostgreSQL generic plan cannot prove for a parameter. (A constant; no input reaches it.)
        let live = format!("state <> '{}'", SessionState::Closed.as_str());
        if filter.states.is_empty() {
            conds.push(live);
        } else {
            let list: Vec<String> = filter
                .states
                .iter()
                .map(|s| args.push(s.as_str()))
                .collect();
            conds.push(format!("state IN ({})", list.join(", ")));
            if !filter.states.contains(&SessionState::Closed) {
                // Implied by the list; stated so that live states use the live indexes too.
                conds.push(live);
            }
        }
        for (column, value) in [
            ("actor", &filter.actor),
            ("target", &filter.target),
            ("protocol", &filter.protocol),
            ("gateway", &filter.gateway),
        ] {
            if let Some(v) = value {
                conds.push(format!("{column} = {}", args.push(v.clone())));
            }
        }
        if let Some(before) = filter.last_input_before_ms {
            conds.push(format!("last_input_ms < {}", args.push(before)));
        }
        if let Some((created, id)) = &filter.after {
            let (c1, c2, i) = (
                args.push(*created),
                args.push(*created),
                args.push(id.clone()),
            );
            conds.push(format!(
                "(created_ms < {c1} OR (created_ms = {c2} AND id < {i}))"
            ));
        }
        let limit = args.push(i64::from(filter.limit.unwrap_or(DEFAULT_SESSION_LIMIT)));
        let sql = format!(
            "SELECT {} FROM sessions WHERE {} ORDER BY created_ms DESC, id DESC LIMIT {limit}",
            SESSION_COLUMNS.join(", "),
            conds.join(" AND ")
        );
        let rows = args.bind(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Compare-and-set transition: moves the session from `from` to `to` only if it is still in
    /// `from`, applies `patch`, and appends the `audit` events in order, all in one transaction.
    /// Returns `Ok(false)` (and changes nothing) when the session is not in `from` or does not
    /// exist. Errors with [`StoreError::IllegalTransition`] before touching the database when
    /// `from -> to` is not a lifecycle edge.
    pub async fn transition_session(
        &self,
        id: SessionId,
        from: SessionState,
        to: SessionState,
        patch: &SessionPatch,
        audit: &[NewAuditEvent],
    ) -> Result<bool> {
        let moved = self
            .transition_sessions(&[Transition {
                id,
                from,
                to,
                patch: patch.clone(),
                audit: audit.to_vec(),
            }])
            .await?;
        Ok(moved.first().copied().unwrap_or(false))
    }

    /// Many [`Store::transition_session`]s in one transaction (e.g. a mass termination: one
    /// commit instead of one per session). Each is a compare-and-set of its own: the result says,
    /// in order, which ones moved; one that finds its session elsewhere changes nothing and does
    /// not hold the others back. Several moves of one session form a chain, applied in order:
    /// after one of them fails, the session's later moves are not attempted (`false`), since they
    /// were planned from a state it is not in. Errors (and changes nothing) when any is not a
    /// lifecycle edge.
    pub async fn transition_sessions(&self, moves: &[Transition]) -> Result<Vec<bool>> {
        for m in moves {
            m.from.check_transition(m.to)?;
        }
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let moved = transitions_in(&mut tx, &self.chain, moves).await?;
        if moved.iter().any(|m| *m) {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(moved)
    }

    /// Approves a session: moves it from `requested` to `approved` (compare-and-set), applies
    /// `patch`, takes one concurrency slot per claim (in claim order) and appends `audit`, all in
    /// one transaction. Returns `Ok(Err(full))` — and changes nothing — when a scope is at its
    /// limit, `Ok(Ok(false))` when the session is no longer `requested`.
    pub async fn approve_session(
        &self,
        id: SessionId,
        patch: &SessionPatch,
        audit: &[NewAuditEvent],
        claims: &[SlotClaim],
    ) -> Result<std::result::Result<bool, SlotsFull>> {
        let mut tx = self.begin_write().await?;
        let moved = update_in_state(
            &mut tx,
            id,
            SessionState::Requested,
            Some(SessionState::Approved),
            patch,
            "",
        )
        .await?;
        if !moved {
            tx.rollback().await?;
            return Ok(Ok(false));
        }
        if let Some(full) = slots::take(&mut tx, &id.to_string(), claims).await? {
            tx.rollback().await?;
            return Ok(Err(full));
        }
        for event in audit {
            append_in(&mut tx, &self.chain, event).await?;
        }
        tx.commit().await?;
        Ok(Ok(true))
    }

    /// Current slot use (only keys with at least one live session), optionally for one scope
    /// and key, ordered by scope and key.
    pub async fn slot_usage(
        &self,
        scope: Option<&str>,
        key: Option<&str>,
    ) -> Result<Vec<SlotUsage>> {
        let rows = sqlx::query(
            "SELECT scope, key, used FROM slot_counters WHERE used > 0              AND ($1 = '' OR scope = $1) AND ($2 = '' OR key = $2)",
        )
        .bind(scope.unwrap_or(""))
        .bind(key.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(SlotUsage {
                scope: r.try_get("scope")?,
                key: r.try_get("key")?,
                used: r.try_get("used")?,
            });
        }
        out.sort_by(|a, b| (&a.scope, &a.key).cmp(&(&b.scope, &b.key)));
        Ok(out)
    }

    /// Applies `patch` without a state change (activity, PTY size, recording progress). Returns
    /// whether the session exists and is not closed (closed sessions are never updated).
    pub async fn update_session(&self, id: SessionId, patch: &SessionPatch) -> Result<bool> {
        let Some((sql, args)) = rows::update_statement(id, patch)? else {
            let live = sqlx::query("SELECT id FROM sessions WHERE id = $1 AND state <> $2")
                .bind(id.to_string())
                .bind(SessionState::Closed.as_str())
                .fetch_optional(&self.pool)
                .await?
                .is_some();
            return Ok(live);
        };
        // One statement: atomic on its own, and on SQLite it takes the writer lock directly.
        let changed = args.bind(&sql).execute(&self.writer).await?.rows_affected();
        Ok(changed > 0)
    }

    /// Many [`Store::update_session`]s in one transaction: a gateway's progress report for all
    /// its live sessions costs one commit, not one per session (on SQLite, a thousand separate
    /// commits a second would queue every other writer behind them). Returns, in order, whether
    /// each session was updated (exists and is not closed); an empty patch changes nothing and
    /// reports `false`. All or nothing on errors.
    pub async fn update_sessions(
        &self,
        updates: &[(SessionId, SessionPatch)],
    ) -> Result<Vec<bool>> {
        let mut statements = Vec::with_capacity(updates.len());
        for (id, patch) in updates {
            statements.push(rows::update_statement(*id, patch)?);
        }
        if statements.iter().all(Option::is_none) {
            return Ok(vec![false; updates.len()]);
        }
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(updates.len());
        for st in statements {
            out.push(match st {
                Some((sql, args)) => args.bind(&sql).execute(&mut *tx).await?.rows_affected() > 0,
                None => false,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records the seal of a closed session's recording that was closed without one (its
    /// gateway was lost while the recording was still being written): sets the recording's
    /// status, chunks, bytes and SHA-256 and appends `audit` in one transaction. Returns
    /// `Ok(false)` (and changes nothing) unless the session is closed and still unsealed, so a
    /// seal is never replaced.
    pub async fn seal_closed_recording(
        &self,
        id: SessionId,
        patch: &SessionPatch,
        audit: &[NewAuditEvent],
    ) -> Result<bool> {
        if patch.is_empty() {
            return Ok(false);
        }
        let mut tx = self.begin_write().await?;
        let sealed = update_in_state(
            &mut tx,
            id,
            SessionState::Closed,
            None,
            patch,
            "AND recording_sha256 IS NULL",
        )
        .await?;
        if !sealed {
            tx.rollback().await?;
            return Ok(false);
        }
        for event in audit {
            append_in(&mut tx, &self.chain, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Closed sessions of `gateway` with a full recording that has no seal yet (closed as
    /// `gateway_lost` while the gateway might still have been writing), oldest first.
    pub async fn unsealed_closed_recordings(&self, gateway: &str) -> Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE gateway = $1 AND state = $2 AND recording_mode = 'full' \
             AND recording_sha256 IS NULL ORDER BY created_ms, id",
            SESSION_COLUMNS.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(gateway)
            .bind(SessionState::Closed.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    // ---- audit ----

    /// Appends one event to the chain; returns it with `seq`, `time_ms`, `prev` and `hash`.
    pub async fn append_audit(&self, event: &NewAuditEvent) -> Result<AuditEvent> {
        let mut tx = self.begin_write().await?;
        let stored = append_in(&mut tx, &self.chain, event).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Events matching `filter`, in `seq` order.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let mut args = Args::default();
        let mut conds = Vec::new();
        if let Some(session) = &filter.session {
            conds.push(format!("session = {}", args.push(session.clone())));
        }
        if let Some(kind) = &filter.kind {
            conds.push(format!("kind = {}", args.push(kind.clone())));
        }
        if let Some(after) = filter.after_seq {
            conds.push(format!("seq > {}", args.push(after)));
        }
        let cond = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let limit = args.push(i64::from(filter.limit.unwrap_or(DEFAULT_AUDIT_LIMIT)));
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_events{cond} ORDER BY seq LIMIT {limit}");
        let rows = args.bind(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// The chain head: `(seq, hash)` of the last appended event (`(0, GENESIS)` when empty).
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| corrupt("audit_head", "the chain head row is missing"))?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }
}

/// The compare-and-set every session change is made of: `UPDATE sessions SET [state = to,]
/// PATCH WHERE id = id AND state = from EXTRA` inside `tx` (`extra` is a constant condition such
/// as `AND recording_sha256 IS NULL`, never input). Returns whether the row matched.
async fn update_in_state(
    tx: &mut Transaction<'static, Any>,
    id: SessionId,
    from: SessionState,
    to: Option<SessionState>,
    patch: &SessionPatch,
    extra: &str,
) -> Result<bool> {
    let mut args = Args::default();
    let mut sets: Vec<String> = to
        .map(|to| format!("state = {}", args.push(to.as_str())))
        .into_iter()
        .collect();
    sets.extend(patch_assignments(patch, &mut args)?);
    let sql = format!(
        "UPDATE sessions SET {} WHERE id = {} AND state = {} {extra}",
        sets.join(", "),
        args.push(id.to_string()),
        args.push(from.as_str())
    );
    Ok(args.bind(&sql).execute(&mut **tx).await?.rows_affected() > 0)
}

/// The compare-and-set transitions of [`Store::transition_sessions`] inside `tx`; returns, in
/// order, which ones moved. Set-oriented after the per-session compare-and-set UPDATEs: the
/// sessions that moved to `closing` or `closed` free their concurrency slots (exactly once: the
/// slot rows go in this same transaction) and void their pending handoff offers together, and the
/// audit events of the moves that happened are appended in one batch, in the order given.
async fn transitions_in(
    tx: &mut Transaction<'static, Any>,
    chain: &wg_domain::audit::ChainHasher,
    moves: &[Transition],
) -> Result<Vec<bool>> {
    let mut moved = Vec::with_capacity(moves.len());
    let mut broken: std::collections::HashSet<SessionId> = Default::default();
    for m in moves {
        let ok = !broken.contains(&m.id)
            && update_in_state(tx, m.id, m.from, Some(m.to), &m.patch, "").await?;
        if !ok {
            broken.insert(m.id);
        }
        moved.push(ok);
    }
    let ending: Vec<String> = moves
        .iter()
        .zip(&moved)
        .filter(|(m, ok)| **ok && matches!(m.to, SessionState::Closing | SessionState::Closed))
        .map(|(m, _)| m.id.to_string())
        .collect();
    let mut cancelled = Vec::new();
    if !ending.is_empty() {
        slots::release(tx, &ending).await?;
        cancelled = handoffs::cancel_pending(tx, &ending, now_millis()).await?;
    }
    let mut audit: Vec<NewAuditEvent> = moves
        .iter()
        .zip(&moved)
        .filter(|(_, ok)| **ok)
        .flat_map(|(m, _)| m.audit.iter().cloned())
        .collect();
    // A voided offer is told after the events of the move that ended its session, attributed
    // to whoever ended it (an operator's termination), else to the session's owner, whose
    // session it was (an end of its own: the client left, the command exited).
    for h in &cancelled {
        let actor = moves
            .iter()
            .find(|m| m.id == h.session)
            .and_then(|m| m.audit.first())
            .and_then(|e| e.actor.as_deref())
            .unwrap_or(&h.from_actor);
        audit.push(handoffs::cancelled_event(h, actor));
    }
    chain::append_many(tx, chain, &audit).await?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_seed_the_genesis_head() {
        for sql in [
            include_str!("../migrations/sqlite/0001_initial.sql"),
            include_str!("../migrations/postgres/0001_initial.sql"),
        ] {
            assert!(sql.contains(&format!("(1, 0, '{}')", wg_domain::audit::GENESIS)));
        }
        assert_eq!(
            migrate::latest_version(Engine::Sqlite),
            migrate::latest_version(Engine::Postgres)
        );
    }

    #[test]
    fn patch_assignments_cover_set_fields_only() {
        let mut args = Args::default();
        assert!(
            patch_assignments(&SessionPatch::default(), &mut args)
                .unwrap()
                .is_empty()
        );
        let patch = SessionPatch {
            pty_cols: Some(80),
            end_reason: Some(EndReason::Terminated),
            ..SessionPatch::default()
        };
        let sets = patch_assignments(&patch, &mut args).unwrap();
        assert_eq!(
            sets,
            vec!["pty_cols = $1".to_owned(), "end_reason = $2".to_owned()]
        );
        assert!(!patch.is_empty());
    }
}
