//! Conversion of stored records to the API's JSON shapes.

use wg_domain::api::{AuditEventView, HandoffView, PtyInfo, RecordingInfo, SessionView};
use wg_domain::audit::AuditEvent;
use wg_domain::time::{UnixMillis, rfc3339, rfc3339_millis};
use wg_store::{HandoffRecord, SessionRecord};

/// The API view of a session at instant `now`, without its pending handoff (which
/// `ControlPlane::list_sessions` and `get_session` add).
pub(crate) fn session_view(r: &SessionRecord, now: UnixMillis) -> SessionView {
    let end = r.ended_ms.unwrap_or(now);
    let pty = match (&r.pty_term, r.pty_cols, r.pty_rows) {
        (Some(term), Some(cols), Some(rows)) => Some(PtyInfo {
            term: term.clone(),
            cols,
            rows,
        }),
        _ => None,
    };
    let recording =
        (r.recording_mode != "off" && r.recording_status != "none").then(|| RecordingInfo {
            mode: r.recording_mode.clone(),
            chunks: r.recording_chunks,
            bytes: r.recording_bytes,
            status: r.recording_status.clone(),
            sha256: r.recording_sha256.clone(),
        });
    let recording = recording.or_else(|| {
        (!r.recording_mode.is_empty()).then(|| RecordingInfo {
            mode: r.recording_mode.clone(),
            chunks: 0,
            bytes: 0,
            status: "none".into(),
            sha256: None,
        })
    });
    SessionView {
        id: r.id.to_string(),
        state: r.state,
        actor: r.actor.clone(),
        actor_groups: r.actor_groups.clone(),
        target: r.target.clone(),
        target_address: r.target_address.clone(),
        protocol: r.protocol.clone(),
        account: r.account.clone(),
        vault_path: r.vault_path.clone(),
        policy: r.policy.clone(),
        mfa: r.mfa.clone(),
        gateway: r.gateway.clone(),
        gateway_address: r.gateway_address.clone(),
        client_ip: r.client_ip.clone(),
        client_geo: r.client_geo.clone(),
        client_software: r.client_software.clone(),
        pty,
        recording,
        started_at: rfc3339(r.created_ms),
        age_seconds: (end - r.created_ms).max(0) / 1000,
        idle_seconds: (end - r.last_input_ms).max(0) / 1000,
        ended_at: r.ended_ms.map(rfc3339),
        end_reason: r.end_reason,
        end_detail: r.end_detail.clone().filter(|d| !d.is_empty()),
        exit_status: r.exit_status,
        handoff: None,
    }
}

/// The API view of a handoff offer.
pub(crate) fn handoff_view(h: &HandoffRecord) -> HandoffView {
    HandoffView {
        session: h.session.to_string(),
        from: h.from_actor.clone(),
        to: h.to_principal.clone(),
        requested_by: h.requested_by.clone(),
        reason: h.reason.clone(),
        state: h.state,
        requested_at: rfc3339(h.requested_ms),
        expires_at: rfc3339(h.expires_ms),
        ttl_seconds: u64::try_from((h.expires_ms - h.requested_ms).max(0) / 1000).unwrap_or(0),
        decided_at: h.decided_ms.map(rfc3339),
        policy: h.accepted_policy.clone(),
    }
}

/// The API view of an audit event.
pub(crate) fn audit_view(e: &AuditEvent) -> AuditEventView {
    AuditEventView {
        seq: e.seq,
        time: rfc3339_millis(e.time_ms),
        kind: e.kind.clone(),
        actor: e.actor.clone(),
        session: e.session.clone(),
        reason: e.reason.clone(),
        details: serde_json::from_str(&e.details_json)
            .unwrap_or(serde_json::Value::String(e.details_json.clone())),
        prev: e.prev.clone(),
        hash: e.hash.clone(),
    }
}
