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

/// Makes every operationId unique, as OpenAPI requires: utoipa names an operation after its
/// handler, and two resources may both have a `list` or a `read`. In path order, a repeated
/// id gets its first tag as prefix (`dlq_list`).
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut seen = std::collections::HashSet::new();
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                let Some(id) = op.operation_id.clone() else {
                    continue;
                };
                if seen.insert(id.clone()) {
                    continue;
                }
                let prefix = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .map_or("op", String::as_str);
                let mut unique = format!("{prefix}_{id}");
                let mut n = 2;
                while !seen.insert(unique.clone()) {
                    unique = format!("{prefix}_{id}_{n}");
                    n += 1;
                }
                op.operation_id = Some(unique);
            }
        }
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "wald", description = "Write-ahead-log service: durable writes over a segmented, group-committed log."),
    paths(
        super::wal::write, super::wal::write_batch, super::read::get_message, super::txn::transaction_status, super::wal::namespace_status, super::read::read_messages,
        super::ns_metrics::namespace_metrics,
        super::namespaces::create, super::namespaces::list, super::namespaces::read, super::namespaces::replace, super::namespaces::remove,
        super::dlq::list, super::dlq::read, super::dlq::discard, super::dlq::replay_one, super::dlq::replay_all, super::dlq::replay_log, super::dlq::task,
        super::keys::create, super::keys::list, super::keys::revoke,
        super::health::health, super::health::liveness, super::health::readiness, super::health::metrics,
    ),
    components(schemas(super::error::ErrorEnvelope, super::error::ErrorBody, super::error::ErrorMetadata, super::error::ErrorCode,
        crate::model::validate::FieldError)),
    modifiers(&Security, &UniqueOperationIds),
    tags((name = "wal", description = "Writes and reads"), (name = "namespaces", description = "Namespace administration (admin key)"),
        (name = "health", description = "Health and metrics"),
        (name = "keys", description = "API keys created and revoked at run time (admin key)"),
        (name = "dlq", description = "Dead-letter queue, replays and tasks (admin key)"))
)]
pub struct ApiDoc;

/// `/api/docs` (Swagger UI) and `/api/docs/openapi.json`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .merge(SwaggerUi::new("/api/docs").url("/api/docs/openapi.json", ApiDoc::openapi()))
}
