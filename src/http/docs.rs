//! The OpenAPI document (generated from the handlers' annotations) and Swagger UI, whose
//! assets are compiled into the binary (no CDN).

use std::sync::Arc;

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::app::App;

/// Adds the two ways of presenting a key.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "wald", description = "Write-ahead-log service: durable writes over a segmented, group-committed log."),
    paths(
        super::wal::write, super::wal::get_message, super::wal::namespace_status, super::wal::read_messages,
        super::namespaces::create, super::namespaces::list, super::namespaces::read, super::namespaces::replace, super::namespaces::remove,
        super::health::health, super::health::liveness, super::health::readiness, super::health::metrics,
    ),
    components(schemas(super::error::ErrorEnvelope, super::error::ErrorBody, super::error::ErrorMetadata, super::error::ErrorCode,
        crate::model::validate::FieldError)),
    modifiers(&Security),
    tags((name = "wal", description = "Writes and reads"), (name = "namespaces", description = "Namespace administration (admin key)"),
        (name = "health", description = "Health and metrics"))
)]
pub struct ApiDoc;

/// `/api/docs` (Swagger UI) and `/api/docs/openapi.json`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .merge(SwaggerUi::new("/api/docs").url("/api/docs/openapi.json", ApiDoc::openapi()))
}
