//! Identity routes: who the caller is, and API tokens for principals.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use wg_domain::api::{TokenCreateRequest, TokenCreated, WhoAmI};

use super::auth::{Admin, Authenticated, Caller};
use super::{ApiResult, ApiState, json_body};

/// The principal the bearer token acts as, and its role (`null` for a plain user).
#[utoipa::path(get, path = "/api/v1/whoami",
    responses((status = 200, body = WhoAmI), (status = 401, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn whoami(caller: Authenticated) -> Json<WhoAmI> {
    Json(WhoAmI {
        principal: caller.principal,
        role: caller.role,
    })
}

/// Issue an API token for an existing user or service principal (admins only). The token is
/// returned once; only its SHA-256 is stored.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = TokenCreateRequest,
    responses((status = 200, body = TokenCreated), (status = 400, body = wg_domain::ErrorBody),
        (status = 403, body = wg_domain::ErrorBody), (status = 404, body = wg_domain::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_token(
    caller: Caller<Admin>,
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<TokenCreated>> {
    let req: TokenCreateRequest = json_body(&body, "token")?;
    Ok(Json(
        st.control
            .create_token(&req.principal, &caller.principal)
            .await?,
    ))
}
