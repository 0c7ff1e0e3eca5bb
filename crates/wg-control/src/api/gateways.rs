//! Gateway routes: the gateway list, join tokens, revocation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use wg_domain::api::{GatewayList, JoinTokenCreated, JoinTokenList, JoinTokenRequest};

use super::auth::{Admin, Auditor, Caller};
use super::{ApiResult, ApiState, json_body};

/// Default join-token lifetime.
const DEFAULT_TTL_SECONDS: u64 = 3600;

/// Every gateway: pool, address, version, live sessions, last heartbeat, state.
#[utoipa::path(get, path = "/api/v1/gateways",
    responses((status = 200, body = GatewayList), (status = 401, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    _caller: Caller<Auditor>,
    State(st): State<ApiState>,
) -> ApiResult<Json<GatewayList>> {
    Ok(Json(GatewayList {
        gateways: st.control.list_gateways().await?,
    }))
}

/// Create a one-time join token for a gateway pool (admins only); shown once.
#[utoipa::path(post, path = "/api/v1/gateways/tokens", request_body = JoinTokenRequest,
    responses((status = 200, body = JoinTokenCreated), (status = 400, body = wg_domain::ErrorBody),
        (status = 403, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_token(
    caller: Caller<Admin>,
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<JoinTokenCreated>> {
    let req: JoinTokenRequest = json_body(&body, "join token")?;
    let ttl = std::time::Duration::from_secs(req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS));
    Ok(Json(
        st.control
            .create_join_token(&req.pool, ttl, &caller.principal)
            .await?,
    ))
}

/// Every join token (never the token itself; admins only).
#[utoipa::path(get, path = "/api/v1/gateways/tokens",
    responses((status = 200, body = JoinTokenList), (status = 403, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_tokens(
    _caller: Caller<Admin>,
    State(st): State<ApiState>,
) -> ApiResult<Json<JoinTokenList>> {
    Ok(Json(JoinTokenList {
        tokens: st.control.list_join_tokens().await?,
    }))
}

/// Revoke an unused join token by its ID (admins only): a gateway presenting it is refused.
#[utoipa::path(post, path = "/api/v1/gateways/tokens/{id}/revoke",
    params(("id" = String, Path, description = "the token's ID: the first 12 hex digits of its SHA-256")),
    responses((status = 200, body = wg_domain::api::JoinTokenRevoked),
        (status = 404, body = wg_domain::ErrorBody), (status = 409, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn revoke_token(
    caller: Caller<Admin>,
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<wg_domain::api::JoinTokenRevoked>> {
    Ok(Json(
        st.control.revoke_join_token(&id, &caller.principal).await?,
    ))
}

/// Revoke a gateway (admins only): its credential is refused and its stream cut.
#[utoipa::path(delete, path = "/api/v1/gateways/{name}",
    params(("name" = String, Path, description = "gateway name")),
    responses((status = 204), (status = 404, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn remove(
    caller: Caller<Admin>,
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    st.control.remove_gateway(&name, &caller.principal).await?;
    Ok(StatusCode::NO_CONTENT)
}
