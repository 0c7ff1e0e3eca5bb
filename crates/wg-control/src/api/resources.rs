//! Resource and vault routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use wg_domain::api::{ApplyRequest, ApplyResponse, VaultEntry, VaultPutRequest};
use wg_domain::resources::Kind;

use super::auth::{Admin, Auditor, Caller};
use super::{ApiError, ApiResult, ApiState, json_body};
use crate::ControlError;

fn kind(text: &str) -> Result<Kind, ApiError> {
    Kind::parse(text).map_err(|e| ApiError(ControlError::bad_request(e.to_string())))
}

/// Apply a resource file (YAML, several documents): all or nothing.
#[utoipa::path(post, path = "/api/v1/apply", request_body = ApplyRequest,
    responses((status = 200, body = ApplyResponse), (status = 400, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn apply(
    caller: Caller<Admin>,
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<ApplyResponse>> {
    let req: ApplyRequest = json_body(&body, "apply")?;
    Ok(Json(ApplyResponse {
        applied: st.control.apply(&req.yaml, &caller.principal).await?,
    }))
}

/// A list of resources.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResourceList {
    /// Resources with their `kind`.
    #[schema(value_type = Vec<Object>)]
    items: Vec<wg_domain::resources::Resource>,
}

/// Every resource of a kind.
#[utoipa::path(get, path = "/api/v1/resources/{kind}", params(("kind" = String, Path)),
    responses((status = 200, body = ResourceList)), security(("bearer" = [])))]
pub(crate) async fn list(
    _caller: Caller<Auditor>,
    State(st): State<ApiState>,
    Path(k): Path<String>,
) -> ApiResult<Json<ResourceList>> {
    Ok(Json(ResourceList {
        items: st.control.list_resources(kind(&k)?).await?,
    }))
}

/// One resource.
#[utoipa::path(get, path = "/api/v1/resources/{kind}/{name}",
    params(("kind" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    _caller: Caller<Auditor>,
    State(st): State<ApiState>,
    Path((k, name)): Path<(String, String)>,
) -> ApiResult<Json<wg_domain::resources::Resource>> {
    Ok(Json(st.control.get_resource(kind(&k)?, &name).await?))
}

/// Delete a resource.
#[utoipa::path(delete, path = "/api/v1/resources/{kind}/{name}",
    params(("kind" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    caller: Caller<Admin>,
    State(st): State<ApiState>,
    Path((k, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    st.control
        .delete_resource(kind(&k)?, &name, &caller.principal)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Vault entries (metadata only; secrets are never returned).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VaultList {
    entries: Vec<VaultEntry>,
}

/// List vault entries.
#[utoipa::path(get, path = "/api/v1/vault",
    responses((status = 200, body = VaultList)), security(("bearer" = [])))]
pub(crate) async fn vault_list(
    _caller: Caller<Admin>,
    State(st): State<ApiState>,
) -> ApiResult<Json<VaultList>> {
    Ok(Json(VaultList {
        entries: st.control.vault_list().await?,
    }))
}

/// Store a secret, encrypted at rest.
#[utoipa::path(put, path = "/api/v1/vault/{path}", request_body = VaultPutRequest,
    params(("path" = String, Path, description = "vault path, e.g. vault/ssh/deploy-prod")),
    responses((status = 200, body = VaultEntry), (status = 400, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn vault_put(
    caller: Caller<Admin>,
    State(st): State<ApiState>,
    Path(path): Path<String>,
    body: Bytes,
) -> ApiResult<Json<VaultEntry>> {
    let req: VaultPutRequest = json_body(&body, "vault")?;
    Ok(Json(
        st.control
            .vault_put(&path, &req.kind, &req.secret, &caller.principal)
            .await?,
    ))
}

/// Query parameters of `GET /api/v1/limits/usage` (at most one).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub(crate) struct UsageParams {
    /// One actor.
    actor: Option<String>,
    /// One target.
    target: Option<String>,
    /// One policy.
    policy: Option<String>,
}

/// Concurrency use against limits.
#[utoipa::path(get, path = "/api/v1/limits/usage", params(UsageParams),
    responses((status = 200, body = wg_domain::api::LimitsUsage), (status = 400, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn limits_usage(
    _caller: Caller<Auditor>,
    State(st): State<ApiState>,
    axum::extract::Query(p): axum::extract::Query<UsageParams>,
) -> ApiResult<Json<wg_domain::api::LimitsUsage>> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (actor, target, policy) = (nonempty(p.actor), nonempty(p.target), nonempty(p.policy));
    Ok(Json(wg_domain::api::LimitsUsage {
        usage: st
            .control
            .limits_usage(actor.as_deref(), target.as_deref(), policy.as_deref())
            .await?,
    }))
}
