//! Mapping between rows and the store's types: column lists, decoding with range checks, and the
//! assignments of a [`SessionPatch`].

use sqlx::Row;
use sqlx::any::AnyRow;
use wg_domain::SessionId;
use wg_domain::audit::AuditEvent;
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::resources::{Kind, Resource};

use crate::sql::{self, Args};
use crate::{Result, SealedSecret, SessionPatch, SessionRecord, corrupt, encode_error, json_error};

/// Every column of `sessions`, in [`SessionRecord`] field order (exported for tools that load
/// rows in bulk, e.g. `bench/`).
pub const SESSION_COLUMNS: [&str; 32] = [
    "id",
    "state",
    "actor",
    "actor_groups",
    "target",
    "target_tags",
    "target_address",
    "protocol",
    "account",
    "vault_path",
    "policy",
    "mfa",
    "gateway",
    "gateway_address",
    "client_ip",
    "client_geo",
    "client_software",
    "pty_term",
    "pty_cols",
    "pty_rows",
    "recording_mode",
    "recording_chunks",
    "recording_bytes",
    "recording_status",
    "recording_sha256",
    "created_ms",
    "opened_ms",
    "last_input_ms",
    "ended_ms",
    "end_reason",
    "end_detail",
    "exit_status",
];

/// Every column of `audit_events`, in [`AuditEvent`] field order.
pub(crate) const AUDIT_COLUMNS: &str =
    "seq, time_ms, kind, actor, session, reason, details_json, prev, hash";

fn u64_to_i64(v: u64, column: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| encode_error(format!("{column} = {v} is out of range")))
}

fn get_u32(row: &AnyRow, column: &str) -> Result<u32> {
    let v: i64 = row.try_get(column)?;
    u32::try_from(v).map_err(|_| corrupt("sessions", format!("{column} = {v} is out of range")))
}

fn get_opt_u32(row: &AnyRow, column: &str) -> Result<Option<u32>> {
    let v: Option<i64> = row.try_get(column)?;
    v.map(|v| {
        u32::try_from(v).map_err(|_| corrupt("sessions", format!("{column} = {v} is out of range")))
    })
    .transpose()
}

pub(crate) fn session_from_row(row: &AnyRow) -> Result<SessionRecord> {
    let id: String = row.try_get("id")?;
    let id: SessionId = id.parse().map_err(|e| corrupt("sessions", e))?;
    let state: String = row.try_get("state")?;
    let state: SessionState = state
        .parse()
        .map_err(|e| corrupt("sessions", format!("{id}: {e}")))?;
    let groups: String = row.try_get("actor_groups")?;
    let actor_groups: Vec<String> = serde_json::from_str(&groups)
        .map_err(|e| corrupt("sessions", format!("{id}: actor_groups: {e}")))?;
    let tags: String = row.try_get("target_tags")?;
    let target_tags = serde_json::from_str(&tags)
        .map_err(|e| corrupt("sessions", format!("{id}: target_tags: {e}")))?;
    let recording_bytes: i64 = row.try_get("recording_bytes")?;
    let recording_bytes = u64::try_from(recording_bytes).map_err(|_| {
        corrupt(
            "sessions",
            format!("{id}: recording_bytes = {recording_bytes} is negative"),
        )
    })?;
    let end_reason: Option<String> = row.try_get("end_reason")?;
    let end_reason = end_reason
        .map(|r| r.parse::<EndReason>())
        .transpose()
        .map_err(|e| corrupt("sessions", format!("{id}: {e}")))?;
    let exit_status: Option<i64> = row.try_get("exit_status")?;
    let exit_status = exit_status
        .map(i32::try_from)
        .transpose()
        .map_err(|_| corrupt("sessions", format!("{id}: exit_status is out of range")))?;
    Ok(SessionRecord {
        id,
        state,
        actor: row.try_get("actor")?,
        actor_groups,
        target: row.try_get("target")?,
        target_tags,
        target_address: row.try_get("target_address")?,
        protocol: row.try_get("protocol")?,
        account: row.try_get("account")?,
        vault_path: row.try_get("vault_path")?,
        policy: row.try_get("policy")?,
        mfa: row.try_get("mfa")?,
        gateway: row.try_get("gateway")?,
        gateway_address: row.try_get("gateway_address")?,
        client_ip: row.try_get("client_ip")?,
        client_geo: row.try_get("client_geo")?,
        client_software: row.try_get("client_software")?,
        pty_term: row.try_get("pty_term")?,
        pty_cols: get_opt_u32(row, "pty_cols")?,
        pty_rows: get_opt_u32(row, "pty_rows")?,
        recording_mode: row.try_get("recording_mode")?,
        recording_chunks: get_u32(row, "recording_chunks")?,
        recording_bytes,
        recording_status: row.try_get("recording_status")?,
        recording_sha256: row.try_get("recording_sha256")?,
        created_ms: row.try_get("created_ms")?,
        opened_ms: row.try_get("opened_ms")?,
        last_input_ms: row.try_get("last_input_ms")?,
        ended_ms: row.try_get("ended_ms")?,
        end_reason,
        end_detail: row.try_get("end_detail")?,
        exit_status,
    })
}

/// Binds a record's values in [`SESSION_COLUMNS`] order.
pub(crate) fn session_args(r: &SessionRecord) -> Result<Args> {
    let mut a = Args::default();
    a.push(r.id.to_string());
    a.push(r.state.as_str());
    a.push(r.actor.clone());
    a.push(serde_json::to_string(&r.actor_groups).map_err(json_error)?);
    a.push(r.target.clone());
    a.push(serde_json::to_string(&r.target_tags).map_err(json_error)?);
    a.push(r.target_address.clone());
    a.push(r.protocol.clone());
    a.push(r.account.clone());
    a.push(r.vault_path.clone());
    a.push(r.policy.clone());
    a.push(r.mfa.clone());
    a.push(r.gateway.clone());
    a.push(r.gateway_address.clone());
    a.push(r.client_ip.clone());
    a.push(r.client_geo.clone());
    a.push(r.client_software.clone());
    a.push(r.pty_term.clone());
    a.push(r.pty_cols.map(i64::from));
    a.push(r.pty_rows.map(i64::from));
    a.push(r.recording_mode.clone());
    a.push(i64::from(r.recording_chunks));
    a.push(u64_to_i64(r.recording_bytes, "recording_bytes")?);
    a.push(r.recording_status.clone());
    a.push(r.recording_sha256.clone());
    a.push(r.created_ms);
    a.push(r.opened_ms);
    a.push(r.last_input_ms);
    a.push(r.ended_ms);
    a.push(r.end_reason.map(|e| e.as_str().to_owned()));
    a.push(r.end_detail.clone());
    a.push(r.exit_status.map(i64::from));
    Ok(a)
}

/// The `UPDATE` of a live (not closed) session by `patch`, or `None` for an empty patch.
pub(crate) fn update_statement(
    id: SessionId,
    patch: &SessionPatch,
) -> Result<Option<(String, Args)>> {
    let mut args = Args::default();
    let sets = patch_assignments(patch, &mut args)?;
    if sets.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "UPDATE sessions SET {} WHERE id = {} AND state <> {}",
        sets.join(", "),
        args.push(id.to_string()),
        args.push(SessionState::Closed.as_str())
    );
    Ok(Some((sql, args)))
}

/// `column = $n` assignments for every field a patch sets.
pub(crate) fn patch_assignments(p: &SessionPatch, args: &mut Args) -> Result<Vec<String>> {
    let mut sets = Vec::new();
    let mut set = |column: &str, arg: sql::Arg| sets.push(format!("{column} = {}", args.push(arg)));
    let text = |v: &Option<String>| v.clone().map(|v| sql::Arg::Text(Some(v)));
    let int = |v: Option<i64>| v.map(|v| sql::Arg::Int(Some(v)));
    let fields: [(&str, Option<sql::Arg>); 17] = [
        ("account", text(&p.account)),
        ("vault_path", text(&p.vault_path)),
        ("policy", text(&p.policy)),
        ("recording_mode", text(&p.recording_mode)),
        ("pty_term", text(&p.pty_term)),
        ("pty_cols", int(p.pty_cols.map(i64::from))),
        ("pty_rows", int(p.pty_rows.map(i64::from))),
        ("recording_chunks", int(p.recording_chunks.map(i64::from))),
        (
            "recording_bytes",
            int(p
                .recording_bytes
                .map(|b| u64_to_i64(b, "recording_bytes"))
                .transpose()?),
        ),
        ("recording_status", text(&p.recording_status)),
        ("recording_sha256", text(&p.recording_sha256)),
        ("opened_ms", int(p.opened_ms)),
        ("last_input_ms", int(p.last_input_ms)),
        ("ended_ms", int(p.ended_ms)),
        (
            "end_reason",
            p.end_reason.map(|r| sql::Arg::from(r.as_str())),
        ),
        ("end_detail", text(&p.end_detail)),
        ("exit_status", int(p.exit_status.map(i64::from))),
    ];
    for (column, value) in fields {
        if let Some(value) = value {
            set(column, value);
        }
    }
    Ok(sets)
}

pub(crate) fn audit_from_row(row: &AnyRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        seq: row.try_get("seq")?,
        time_ms: row.try_get("time_ms")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        session: row.try_get("session")?,
        reason: row.try_get("reason")?,
        details_json: row.try_get("details_json")?,
        prev: row.try_get("prev")?,
        hash: row.try_get("hash")?,
    })
}

pub(crate) fn secret_from_row(row: &AnyRow) -> Result<SealedSecret> {
    Ok(SealedSecret {
        path: row.try_get("path")?,
        kind: row.try_get("kind")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

pub(crate) fn resource_from_spec(spec: &str, kind: Kind, name: &str) -> Result<Resource> {
    let r: Resource = serde_json::from_str(spec)
        .map_err(|e| corrupt("resources", format!("{} {name}: {e}", kind.as_str())))?;
    if r.kind() != kind || r.name() != name {
        return Err(corrupt(
            "resources",
            format!(
                "row {} {name} holds {} {}",
                kind.as_str(),
                r.kind().as_str(),
                r.name()
            ),
        ));
    }
    Ok(r)
}
