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

/// Adds to every operation the answers any route may give besides its own — so that a
/// client generated from the document, or a conformance checker, knows every status — and
/// the headers every answer carries:
///
/// - every answer: `X-Request-ID`;
/// - every operation: 431 (header section too large), 503 (shutting down, overloaded, too
///   many connections; `Retry-After` where it applies), 504 (request timeout);
/// - an operation with a body: 400, 413, 415;
/// - an operation behind a key: 401, 403, 429 (failed-authentication throttle, rate limits;
///   `Retry-After`);
/// - an operation with path parameters: 404;
/// - an operation on one namespace (a write, or a path naming `{namespace}`): 307 to the
///   namespace's owner in a cluster (`Location`).
///
/// A status the handler documents itself keeps its own description.
struct CommonResponses;

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    let mut h = utoipa::openapi::header::Header::new(
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .build(),
    );
    h.description = Some(description.to_owned());
    h
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::content::Content::new(Some(utoipa::openapi::Ref::from_schema_name(
                "ErrorEnvelope",
            ))),
        )
        .build()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::RefOr;
        for (path, item) in &mut openapi.paths.paths {
            let namespaced = path.contains("{namespace}") || path.starts_with("/api/v1/wal/write");
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let mut add: Vec<(&str, &str)> = vec![
                    ("431", "A request header is too large"),
                    (
                        "503",
                        "Shutting down, overloaded, or too many connections (Retry-After when retrying helps)",
                    ),
                    ("504", "The request took longer than the request timeout"),
                ];
                if op.request_body.is_some() {
                    add.push(("400", "Invalid; details name every failing field"));
                    add.push(("413", "The body is larger than the limit"));
                    add.push(("415", "The body is not application/json"));
                }
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add.push(("401", "No key, or an unknown one"));
                    add.push(("403", "The key may not do this"));
                    add.push((
                        "429",
                        "Rate limited, or too many failed authentications (Retry-After)",
                    ));
                }
                let path_params = op
                    .parameters
                    .as_ref()
                    .is_some_and(|ps| ps.iter().any(|p| p.parameter_in == ParameterIn::Path));
                if path_params {
                    add.push(("404", "Not found"));
                }
                if namespaced {
                    add.push((
                        "307",
                        "Another instance of the cluster owns the namespace: Location names it",
                    ));
                }
                for (status, description) in add {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::T(error_response(description)));
                }
                for (status, resp) in &mut op.responses.responses {
                    let RefOr::T(resp) = resp else { continue };
                    resp.headers.entry("X-Request-ID".to_owned()).or_insert_with(|| {
                        string_header("The request's id: the client's usable X-Request-ID, else a generated one")
                    });
                    if status == "429" || status == "503" {
                        resp.headers
                            .entry("Retry-After".to_owned())
                            .or_insert_with(|| {
                                string_header(
                                    "Seconds to wait before retrying (when retrying helps)",
                                )
                            });
                    }
                    if status == "307" {
                        resp.headers
                            .entry("Location".to_owned())
                            .or_insert_with(|| {
                                string_header("The same request at the namespace's owner")
                            });
                    }
                }
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
        crate::model::validate::FieldError,
        crate::model::target::HttpTargetConfig, crate::model::target::CacheTargetConfig,
        crate::model::target::DatabaseTargetConfig, crate::model::target::FileTargetConfig,
        crate::mirror::config::RedisSettings, crate::mirror::config::KafkaSettings,
        crate::mirror::config::SqsSettings)),
    modifiers(&Security, &UniqueOperationIds, &CommonResponses),
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
