//! The REST API (`/api/v1`), with its OpenAPI document at `/api/v1/openapi.json`.
//!
//! Every route is authenticated with a bearer token, and its authorisation is part of its type:
//! a handler takes a [`Caller<R>`] whose role marker `R` says the least role allowed, or an
//! [`Authenticated`] principal of any role when the handler decides itself (see [`auth`]), so a
//! route without an authorisation decision does not compile. Errors are returned
//! as [`wg_domain::ErrorBody`] JSON with the status of [`wg_domain::ErrorCode::http_status`].

mod auth;
mod gateways;
mod identity;
mod openapi;
mod resources;
mod sessions;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::{ControlError, ControlPlane};

pub use auth::{Admin, Auditor, Authenticated, Caller, MinRole, Operator};
pub use openapi::spec;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The control plane.
    pub control: ControlPlane,
}

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError(pub ControlError);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0.0)).into_response()
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

/// The `/api/v1` router.
pub fn router(control: ControlPlane) -> Router {
    let state = ApiState { control };
    Router::new()
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/sessions", get(sessions::list))
        .route(
            "/api/v1/sessions/terminate",
            post(sessions::terminate_matching),
        )
        .route("/api/v1/sessions/{id}", get(sessions::show))
        .route("/api/v1/sessions/{id}/terminate", post(sessions::terminate))
        .route("/api/v1/sessions/{id}/handoff", post(sessions::handoff))
        .route("/api/v1/sessions/{id}/accept", post(sessions::accept))
        .route("/api/v1/whoami", get(identity::whoami))
        .route("/api/v1/gateways", get(gateways::list))
        .route(
            "/api/v1/gateways/tokens",
            get(gateways::list_tokens).post(gateways::create_token),
        )
        .route(
            "/api/v1/gateways/tokens/{id}/revoke",
            post(gateways::revoke_token),
        )
        .route("/api/v1/gateways/{name}", delete(gateways::remove))
        .route("/api/v1/tokens", post(identity::create_token))
        .route(
            "/api/v1/recordings/{id}/verify",
            get(sessions::recording_verify),
        )
        .route(
            "/api/v1/recordings/{id}/stream",
            get(sessions::recording_stream),
        )
        .route("/api/v1/audit", get(sessions::audit_list))
        .route("/api/v1/audit/verify", get(sessions::audit_verify))
        .route("/api/v1/apply", post(resources::apply))
        .route("/api/v1/resources/{kind}", get(resources::list))
        .route(
            "/api/v1/resources/{kind}/{name}",
            get(resources::show).delete(resources::delete),
        )
        .route("/api/v1/limits/usage", get(resources::limits_usage))
        .route("/api/v1/vault", get(resources::vault_list))
        .route("/api/v1/vault/{*path}", put(resources::vault_put))
        .fallback(|| async { ApiError(ControlError::not_found("no such API route")) })
        .method_not_allowed_fallback(|| async {
            ApiError(ControlError::bad_request(
                "this API route does not take that HTTP method",
            ))
        })
        .with_state(state)
}

/// Parses a JSON body ourselves so that a malformed or missing body gets our error shape.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(ControlError::bad_request(format!(
            "invalid {what} body: {e}"
        )))
    })
}
