//! Session, recording and audit routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use wg_domain::api::{
    AuditList, AuditVerify, HandoffRequest, HandoffView, RecordingVerify, SessionList, SessionView,
    TerminateRequest, TerminateResponse,
};
use wg_domain::lifecycle::SessionState;
use wg_domain::resources::Role;

use super::auth::{Auditor, Authenticated, Caller, Operator};
use super::{ApiError, ApiResult, ApiState, json_body};
use crate::{ControlError, SessionQuery};

/// Query parameters of `GET /api/v1/sessions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListParams {
    /// Exact state (default: every state but `closed`).
    state: Option<String>,
    /// Actor name.
    actor: Option<String>,
    /// Target name.
    target: Option<String>,
    /// Protocol (`ssh`, `pg`, `rdp`).
    protocol: Option<String>,
    /// Owning gateway.
    gateway: Option<String>,
    /// Only sessions idle longer than this duration, e.g. `5m`.
    idle_gt: Option<String>,
    /// Page size, 1 to 1000 (default 1000).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// Continue after the previous page: its `next_cursor`.
    cursor: Option<String>,
}

/// Whether `caller` sees every session (auditor, operator, admin); plain users and service
/// principals see the sessions they own (PRODUCT.md §9).
fn sees_all(caller: &Authenticated) -> bool {
    caller.role.is_some_and(|r| r >= Role::Auditor)
}

/// List sessions, cluster-wide (a plain user: the sessions they own).
#[utoipa::path(get, path = "/api/v1/sessions", params(ListParams),
    responses((status = 200, body = SessionList), (status = 400, body = wg_domain::ErrorBody),
        (status = 403, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    caller: Authenticated,
    State(st): State<ApiState>,
    Query(mut p): Query<ListParams>,
) -> ApiResult<Json<SessionList>> {
    if !sees_all(&caller) {
        match p.actor.as_deref().filter(|a| !a.is_empty()) {
            Some(a) if a != caller.principal => {
                return Err(ApiError(ControlError::new(
                    wg_domain::ErrorCode::Forbidden,
                    format!(
                        "{} may list only their own sessions (actor {})",
                        caller.principal, caller.principal
                    ),
                )));
            }
            _ => p.actor = Some(caller.principal.clone()),
        }
    }
    let state = p
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<SessionState>())
        .transpose()
        .map_err(|e| ApiError(ControlError::bad_request(e.to_string())))?;
    let idle_gt = p
        .idle_gt
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(wg_domain::time::parse_duration)
        .transpose()
        .map_err(|e| ApiError(ControlError::bad_request(e.to_string())))?;
    let q = SessionQuery {
        state,
        actor: p.actor.filter(|s| !s.is_empty()),
        target: p.target.filter(|s| !s.is_empty()),
        protocol: p.protocol.filter(|s| !s.is_empty()),
        gateway: p.gateway.filter(|s| !s.is_empty()),
        idle_gt,
        limit: p
            .limit
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u32>().map_err(|_| {
                    ApiError(ControlError::bad_request(format!(
                        "limit must be a whole number between 1 and 1000, not {s:?}"
                    )))
                })
            })
            .transpose()?,
        cursor: p.cursor.filter(|s| !s.is_empty()),
    };
    Ok(Json(st.control.list_sessions(&q).await?))
}

/// One session with its access-decision trail (a plain user: only a session they own; another's
/// is "not found", so that its existence is not disclosed).
#[utoipa::path(get, path = "/api/v1/sessions/{id}", params(("id" = String, Path, description = "sess_ ID")),
    responses((status = 200, body = SessionView), (status = 404, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    caller: Authenticated,
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let view = st.control.get_session(&id).await?;
    if !sees_all(&caller) && view.actor != caller.principal {
        return Err(ApiError(ControlError::not_found(format!(
            "no session {id}"
        ))));
    }
    Ok(Json(view))
}

/// Force-terminate a session: flush and seal its recording, then sever both legs.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/terminate", request_body = TerminateRequest,
    params(("id" = String, Path, description = "sess_ ID")),
    responses((status = 200, body = TerminateResponse), (status = 400, body = wg_domain::ErrorBody),
        (status = 404, body = wg_domain::ErrorBody), (status = 503, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn terminate(
    caller: Caller<Operator>,
    State(st): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<TerminateResponse>> {
    if body.is_empty() {
        return Err(ApiError(ControlError::bad_request(
            "a reason is required: {\"reason\": \"...\"}",
        )));
    }
    let req: TerminateRequest = json_body(&body, "terminate")?;
    Ok(Json(
        st.control
            .terminate(&id, &req.reason, &caller.principal)
            .await?,
    ))
}

/// Offer a live session to another principal, who must accept within the TTL (default 5 min,
/// at most 1 h). Allowed to the session's owner and to operators; the incoming owner must hold a
/// policy permitting the session's target, account and protocol. One offer per session is
/// pending at a time (409 while one is).
#[utoipa::path(post, path = "/api/v1/sessions/{id}/handoff", request_body = HandoffRequest,
    params(("id" = String, Path, description = "sess_ ID")),
    responses((status = 200, body = HandoffView), (status = 400, body = wg_domain::ErrorBody),
        (status = 403, body = wg_domain::ErrorBody), (status = 404, body = wg_domain::ErrorBody),
        (status = 409, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn handoff(
    caller: Authenticated,
    State(st): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<HandoffView>> {
    let req: HandoffRequest = json_body(&body, "handoff")?;
    Ok(Json(
        st.control
            .request_handoff(&caller.principal, caller.role, &id, &req)
            .await?,
    ))
}

/// Accept the pending handoff of a session to the calling principal, which becomes the owner.
/// Refused with 410 `handoff_expired` after the window, 403 `policy_denied` when the caller no
/// longer holds a permitting policy, 429 `concurrency_limit` when one of its scopes is full; the
/// owner is unchanged then. No request body.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/accept",
    params(("id" = String, Path, description = "sess_ ID")),
    responses((status = 200, body = HandoffView), (status = 403, body = wg_domain::ErrorBody),
        (status = 404, body = wg_domain::ErrorBody), (status = 409, body = wg_domain::ErrorBody),
        (status = 410, body = wg_domain::ErrorBody), (status = 429, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn accept(
    caller: Authenticated,
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<HandoffView>> {
    Ok(Json(
        st.control.accept_handoff(&caller.principal, &id).await?,
    ))
}

/// Re-hash a recording against its manifest and seal.
#[utoipa::path(get, path = "/api/v1/recordings/{id}/verify", params(("id" = String, Path)),
    responses((status = 200, body = RecordingVerify), (status = 404, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn recording_verify(
    caller: Caller<Auditor>,
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingVerify>> {
    Ok(Json(
        st.control.recording_verify(&id, &caller.principal).await?,
    ))
}

/// The recording stream (asciicast v2).
#[utoipa::path(get, path = "/api/v1/recordings/{id}/stream", params(("id" = String, Path)),
    responses((status = 200, content_type = "application/x-asciicast", body = String),
        (status = 404, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn recording_stream(
    caller: Caller<Auditor>,
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let bytes = st.control.recording_stream(&id, &caller.principal).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-asciicast")], bytes))
}

/// Query parameters of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct AuditParams {
    /// Only events of this session.
    session: Option<String>,
    /// Only events of this kind.
    kind: Option<String>,
}

/// Audit events in chain order.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditParams),
    responses((status = 200, body = AuditList)), security(("bearer" = [])))]
pub(crate) async fn audit_list(
    _caller: Caller<Auditor>,
    State(st): State<ApiState>,
    Query(p): Query<AuditParams>,
) -> ApiResult<Json<AuditList>> {
    Ok(Json(AuditList {
        events: st
            .control
            .audit_list(
                p.session.filter(|s| !s.is_empty()),
                p.kind.filter(|s| !s.is_empty()),
            )
            .await?,
    }))
}

/// Verify the audit hash chain.
#[utoipa::path(get, path = "/api/v1/audit/verify",
    responses((status = 200, body = AuditVerify)), security(("bearer" = [])))]
pub(crate) async fn audit_verify(
    _caller: Caller<Auditor>,
    State(st): State<ApiState>,
) -> ApiResult<Json<AuditVerify>> {
    Ok(Json(st.control.audit_verify().await?))
}

/// Terminate every live session matching the selectors (at least one), each flushed and sealed
/// first; every event shares one bulk-operation ID.
#[utoipa::path(post, path = "/api/v1/sessions/terminate", request_body = wg_domain::api::BulkTerminateRequest,
    responses((status = 200, body = wg_domain::api::BulkTerminateResponse), (status = 400, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn terminate_matching(
    caller: Caller<Operator>,
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<wg_domain::api::BulkTerminateResponse>> {
    let req: wg_domain::api::BulkTerminateRequest = json_body(&body, "bulk terminate")?;
    Ok(Json(
        st.control
            .terminate_matching(&req, &caller.principal)
            .await?,
    ))
}
