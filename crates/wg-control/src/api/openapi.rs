//! The OpenAPI 3.1 document, assembled from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{gateways, identity, resources, sessions};

#[derive(OpenApi)]
#[openapi(
    info(title = "Wardengate API", description = "Sessions, resources, vault, recordings and audit."),
    paths(
        sessions::list, sessions::show, sessions::terminate, sessions::terminate_matching,
        sessions::handoff, sessions::accept, identity::whoami, identity::create_token,
        sessions::recording_verify,
        sessions::recording_stream, sessions::audit_list, sessions::audit_verify,
        resources::apply, resources::list, resources::show, resources::delete,
        resources::vault_list, resources::vault_put, resources::limits_usage,
        gateways::list, gateways::create_token, gateways::list_tokens, gateways::revoke_token, gateways::remove,
    ),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of `/api/v1`.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json` (unauthenticated, like any API description).
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(spec())
}
